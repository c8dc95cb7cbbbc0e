"""Small learnable stand-in data with MNIST's shapes and dtypes, and writing any such arrays as
the four IDX files, for tests and smoke runs without the real data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fnnet import checks
from fnnet.datasets.idx import write_idx
from fnnet.datasets.sources import FILES

__all__ = ["synthetic_mnist", "write_mnist_files"]

Split = tuple[np.ndarray, np.ndarray]


def _synthetic_split(rng: np.random.Generator, n: int) -> Split:
    labels = rng.permutation(np.arange(n) % 10).astype(np.int64)
    # Class c is a Gaussian blob centred on a circle of radius 8 around the image centre at
    # angle 2*pi*c/10, with class-dependent width; each example jitters the centre, width and
    # brightness and adds pixel noise.
    angle = 2 * np.pi * labels / 10
    cy = 13.5 + 8 * np.sin(angle) + rng.normal(0, 0.7, n)
    cx = 13.5 + 8 * np.cos(angle) + rng.normal(0, 0.7, n)
    sigma = (2.0 + 0.15 * labels) * rng.uniform(0.9, 1.1, n)
    peak = rng.uniform(180, 255, n)
    grid = np.arange(28, dtype=np.float64)
    dy2 = (grid[None, :] - cy[:, None]) ** 2
    dx2 = (grid[None, :] - cx[:, None]) ** 2
    blobs = np.exp(-(dy2[:, :, None] + dx2[:, None, :]) / (2 * sigma[:, None, None] ** 2))
    images = peak[:, None, None] * blobs + rng.normal(0, 12, (n, 28, 28))
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels


def synthetic_mnist(n_train: int, n_test: int, seed: int = 0) -> tuple[Split, Split]:
    """Small MNIST-shaped stand-in data: ``(x_train, y_train), (x_test, y_test)``.

    Same structure and dtypes as ``load_mnist`` (uint8 ``(N, 28, 28)`` images, int64 labels in
    ``0..9``, each class equally often up to rounding). Each class is a noisy bright blob at its
    own place in the image, so even a linear model separates the classes well. The result
    depends only on the arguments. Write it to disk with ``write_mnist_files``.
    """
    n_train = checks.integer("synthetic_mnist", "n_train", n_train, minimum=0)
    n_test = checks.integer("synthetic_mnist", "n_test", n_test, minimum=0)
    rng = np.random.default_rng(seed)
    return _synthetic_split(rng, n_train), _synthetic_split(rng, n_test)


def write_mnist_files(directory: str | os.PathLike, train: Split, test: Split,
                      gzip: bool = True) -> Path:
    """Write ``train`` and ``test`` (``(images, labels)`` pairs) as the four files of ``FILES``.

    Images are stored as uint8 ``(N, 28, 28)``, labels as uint8 ``(N,)`` (values must fit), so
    the folder can be passed as ``data_dir`` to ``load_mnist`` / ``load_fashion_mnist`` or used
    as ``$FNNET_DATA_DIR/<dataset>``. Creates ``directory`` if needed; returns it as a ``Path``.
    Gzipped files keep the ``.gz`` names; with ``gzip=False`` the names drop the suffix.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = (train[0], train[1], test[0], test[1])
    for filename, array, kind in zip(FILES, arrays, ("images", "labels") * 2, strict=True):
        array = np.asarray(array)
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"{filename}: {kind} must fit uint8 (0..255)")
        target = directory / (filename if gzip else filename.removesuffix(".gz"))
        write_idx(target, array.astype(np.uint8), gzip=gzip)
    return directory
