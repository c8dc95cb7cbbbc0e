"""``load_mnist``, ``load_fashion_mnist`` and ``load_dataset``: find (or download) the four IDX
files, check from their headers alone that they make an image/label dataset of the published
sizes at most, then read them."""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fnnet.datasets.download import download_missing
from fnnet.datasets.idx import read_idx, read_idx_header
from fnnet.datasets.sources import (
    IMAGE_SHAPE,
    SHA256,
    SIZES,
    SPLIT_SIZES,
    DatasetNotFoundError,
    cache_dir,
    check_name,
    find_complete,
    mirrors_for,
)
from fnnet.io import open_regular

__all__ = ["DatasetError", "load_dataset", "load_fashion_mnist", "load_mnist"]

Split = tuple[np.ndarray, np.ndarray]
Mirrors = Sequence[str] | str | None


class DatasetError(ValueError):
    """IDX files that are well formed but are not a valid image/label dataset."""


def _check_headers(name: str, split: str, limit: int, images, labels, image_path: Path,
                   label_path: Path) -> None:
    """Images ``(N, 28, 28)`` and labels ``(N,)``, uint8, ``N`` at most ``limit``: checked from
    the ``(dtype, shape)`` the two headers declare, before any data is read."""
    (image_dtype, image_shape), (label_dtype, label_shape) = images, labels
    if image_dtype != np.uint8 or len(image_shape) != 3 or image_shape[1:] != IMAGE_SHAPE:
        raise DatasetError(
            f"{image_path}: expected uint8 images of shape (N, 28, 28), got {image_dtype} "
            f"array of shape {image_shape}"
        )
    if label_dtype != np.uint8 or len(label_shape) != 1:
        raise DatasetError(
            f"{label_path}: expected a 1-D uint8 label array, got {label_dtype} array of shape "
            f"{label_shape}"
        )
    if image_shape[0] != label_shape[0]:
        raise DatasetError(
            f"count mismatch: {image_path} has {image_shape[0]} images but {label_path} has "
            f"{label_shape[0]} labels; expected the same number"
        )
    if image_shape[0] > limit:
        raise DatasetError(
            f"{image_path}: the headers declare {image_shape[0]:,} images and labels; expected "
            f"at most the {limit:,} of {name}'s {split} set; refused before reading the data"
        )


def _check_labels(labels: np.ndarray, label_path: Path) -> None:
    if labels.size and labels.max() > 9:
        bad = np.flatnonzero(labels > 9)
        raise DatasetError(
            f"{label_path}: labels must be in 0..9, found {labels[bad[0]]} at index {bad[0]} "
            f"({len(bad)} labels out of range)"
        )


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int, limit: int) -> str | None:
    """The SHA-256 of a file of at most ``limit`` bytes (``None`` for a larger one: no published
    file is), cached by path, size and modification time."""
    if size > limit:
        return None
    digest = hashlib.sha256()
    with open_regular(path, "an IDX file", DatasetError) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_identity(name: str, paths: Sequence[Path]) -> None:
    """Check the files found for ``name`` against the published SHA-256 digests of both data
    sets: a file that is the other data set's is refused (``DatasetError``: Fashion-MNIST's
    files under ``--dataset mnist`` would train on clothes and name digits); a file that is
    neither data set's published one (a recompressed or extracted copy, or another data set of
    the same shape) is used with one warning naming it."""
    unknown = []
    for path in paths:
        file = path.name if path.name.endswith(".gz") else path.name + ".gz"
        limit = max(SIZES[dataset].get(file, 0) for dataset in SHA256)
        stat = os.stat(path)
        digest = _digest(str(path), stat.st_size, stat.st_mtime_ns, limit)
        if digest in SHA256[name].get(file, ()):
            continue
        others = [other for other in SHA256 if other != name
                  and digest in SHA256[other].get(file, ())]
        if others:
            raise DatasetError(f"{path}: is {others[0]}'s {file}, not {name}'s (its SHA-256 is "
                               f"the published {others[0]} file's); point the data folder at "
                               f"{name}'s files, or use --dataset {others[0]}")
        unknown.append(path)
    if unknown:
        folders = sorted({str(path.parent) for path in unknown})
        warnings.warn(f"{name}: {', '.join(path.name for path in unknown)} in "
                      f"{', '.join(folders)} match neither data set's published SHA-256; using "
                      f"them as {name} (if they are not {name}, the results are not {name}'s)",
                      UserWarning, stacklevel=3)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, download: bool = True, *,
                 mirrors: Mirrors = None) -> tuple[Split, Split]:
    """Load ``"mnist"`` or ``"fashion-mnist"``; see ``load_mnist`` for the details."""
    check_name(name)
    mirror_list = mirrors_for(name, mirrors)
    paths = find_complete(name, data_dir)
    failures: list[str] = []
    if paths is None and download and data_dir is None:
        failures = download_missing(name, cache_dir() / name, mirror_list)
        paths = find_complete(name, data_dir)
    if paths is None:
        raise DatasetNotFoundError(name, data_dir, download, mirror_list, failures)

    check_identity(name, paths)
    headers = [read_idx_header(p) for p in paths]  # all four checked before any data is read
    for i, (split, limit) in enumerate(zip(("training", "test"), SPLIT_SIZES[name], strict=True)):
        _check_headers(name, split, limit, *headers[2 * i:2 * i + 2], *paths[2 * i:2 * i + 2])
    # Each file must still declare what was checked (a file replaced since is refused).
    x_train, y_train, x_test, y_test = (read_idx(p, dtype=dtype, shape=shape)
                                        for p, (dtype, shape) in zip(paths, headers, strict=True))
    _check_labels(y_train, paths[1])
    _check_labels(y_test, paths[3])
    return (x_train, y_train.astype(np.int64)), (x_test, y_test.astype(np.int64))


def load_mnist(data_dir: str | os.PathLike | None = None, download: bool = True, *,
               mirrors: Mirrors = None) -> tuple[Split, Split]:
    """Load MNIST as ``(x_train, y_train), (x_test, y_test)``.

    Images are uint8 arrays of shape ``(N, 28, 28)`` (60000 and 10000 for the real data);
    labels are **int64** arrays of shape ``(N,)`` with values in ``0..9``.

    A ``data_dir`` given is the only folder looked at: it must hold all four files (nothing is
    downloaded). Without one, files are taken from the first of these folders that holds all
    four (never mixed across folders): ``$FNNET_DATA_DIR/mnist``; ``<cache>/mnist`` with
    ``<cache>`` from ``cache_dir()``. If neither does and ``download`` is true, the missing files
    are downloaded into ``<cache>/mnist`` from ``mirrors`` (default: ``$FNNET_MNIST_MIRROR`` if
    set, else ``MIRRORS["mnist"]``), each checked against ``SHA256["mnist"]`` and ``SIZES`` before
    it is kept.

    The four headers are checked before any data is read: images ``(N, 28, 28)`` uint8, labels
    ``(N,)`` uint8, ``N`` the same in both and at most the published set's (``SPLIT_SIZES``:
    60,000 training, 10,000 test), so no file is read, or inflated, past that size.

    Raises ``DatasetNotFoundError`` (a ``FileNotFoundError``) naming the ``data_dir`` given, or
    listing every folder searched, and how to point fnnet at local files; ``ChecksumError`` when
    a mirror served a file with the wrong SHA-256 or size; ``IDXError`` / ``DatasetError``
    (``ValueError``\\ s) naming the bad file when a file is malformed or no regular file, images
    are not ``(N, 28, 28)`` uint8, counts differ or exceed the published set's, or a label is
    > 9 (naming the label and its index).
    """
    return load_dataset("mnist", data_dir, download, mirrors=mirrors)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, download: bool = True, *,
                       mirrors: Mirrors = None) -> tuple[Split, Split]:
    """Load Fashion-MNIST as ``(x_train, y_train), (x_test, y_test)``.

    Exactly like ``load_mnist`` (uint8 images ``(N, 28, 28)``, **int64** labels in ``0..9``),
    with the folder ``fashion-mnist`` instead of ``mnist`` under ``$FNNET_DATA_DIR`` and the
    cache, ``$FNNET_FASHION_MNIST_MIRROR`` / ``MIRRORS["fashion-mnist"]`` as mirrors and
    ``SHA256["fashion-mnist"]`` as checksums. MNIST's files are never used for Fashion-MNIST.
    """
    return load_dataset("fashion-mnist", data_dir, download, mirrors=mirrors)
