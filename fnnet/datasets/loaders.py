"""``load_mnist``, ``load_fashion_mnist`` and ``load_dataset``: find (or download) the four IDX
files, read them, and check that they make an image/label dataset."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fnnet.datasets.download import download_missing
from fnnet.datasets.idx import read_idx
from fnnet.datasets.sources import (
    DatasetNotFoundError,
    cache_dir,
    check_name,
    find_complete,
    mirrors_for,
)

__all__ = ["DatasetError", "load_dataset", "load_fashion_mnist", "load_mnist"]

Split = tuple[np.ndarray, np.ndarray]
Mirrors = Sequence[str] | str | None


class DatasetError(ValueError):
    """IDX files that are well formed but are not a valid image/label dataset."""


def _validate_split(images: np.ndarray, labels: np.ndarray, image_path: Path, label_path: Path):
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetError(
            f"{image_path}: expected uint8 images of shape (N, 28, 28), got {images.dtype} "
            f"array of shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DatasetError(
            f"{label_path}: expected a 1-D uint8 label array, got {labels.dtype} array of shape "
            f"{labels.shape}"
        )
    if len(images) != len(labels):
        raise DatasetError(
            f"count mismatch: {image_path} has {len(images)} images but {label_path} has "
            f"{len(labels)} labels; expected the same number"
        )
    if labels.size and labels.max() > 9:
        bad = np.flatnonzero(labels > 9)
        raise DatasetError(
            f"{label_path}: labels must be in 0..9, found {labels[bad[0]]} at index {bad[0]} "
            f"({len(bad)} labels out of range)"
        )


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

    arrays = [read_idx(p) for p in paths]
    splits = []
    for (images, labels), (image_path, label_path) in zip(
        (arrays[0:2], arrays[2:4]), (paths[0:2], paths[2:4]), strict=True
    ):
        _validate_split(images, labels, image_path, label_path)
        splits.append((images, labels.astype(np.int64)))
    return splits[0], splits[1]


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

    Raises ``DatasetNotFoundError`` (a ``FileNotFoundError``) naming the ``data_dir`` given, or
    listing every folder searched, and how to point fnnet at local files; ``ChecksumError`` when
    a mirror served a file with the wrong SHA-256 or size; ``IDXError`` / ``DatasetError``
    (``ValueError``\\ s) naming the bad file when a file is malformed, images are not
    ``(N, 28, 28)`` uint8, counts differ or a label is > 9 (naming the label and its index).
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
