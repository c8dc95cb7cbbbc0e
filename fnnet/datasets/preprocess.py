"""Turning the loaded arrays into model inputs: ``flatten``, ``scale``, ``one_hot``, ``prepare``,
``aligned_empty`` (the 64-byte-aligned arrays ``scale`` writes into), and ``hold_out``, a
validation split drawn from the training set."""

from __future__ import annotations

import math

import numpy as np

from fnnet import checks

__all__ = ["ALIGNMENT", "aligned_empty", "flatten", "hold_out", "one_hot", "prepare", "scale"]

ALIGNMENT = 64


def aligned_empty(shape, dtype=np.float32, alignment=ALIGNMENT) -> np.ndarray:
    """An uninitialised numpy array whose data (if any) start on an ``alignment``-byte boundary.

    numpy aligns only to 16 bytes; XLA's CPU client takes a 64-byte-aligned host array as the
    device array itself (``jax.device_put`` without a copy), so the data is held once.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes == 0:  # numpy gives an empty slice the pointer of its base: nothing to align
        return np.empty(shape, dtype)
    raw = np.empty(nbytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def flatten(x: np.ndarray) -> np.ndarray:
    """Reshape a batch ``(N, ...)`` to ``(N, prod(...))``: ``(N, 28, 28)`` becomes ``(N, 784)``.

    Returns a view when possible; a 2-D input comes back unchanged in shape; an empty batch
    ``(0, 28, 28)`` becomes ``(0, 784)``.
    """
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"flatten expects a batch of shape (N, ...), got a scalar {x!r}")
    return x.reshape(x.shape[0], math.prod(x.shape[1:]))  # not -1: (0, 28, 28) has no -1


def scale(x: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Map integer pixel values ``0..255`` to floats in ``[0, 1]`` (divide by 255), any shape.

    Floating input is refused (it was probably scaled already), as are values outside 0..255.
    The result is 64-byte aligned (``aligned_empty``), so ``fnnet.fit`` uses it on the CPU without
    copying it.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"scale expects integer pixel values 0..255, got dtype {x.dtype}")
    if x.size and (x.min() < 0 or x.max() > 255):
        raise ValueError(f"scale expects pixel values in 0..255, got range {x.min()}..{x.max()}")
    out = aligned_empty(x.shape, dtype)
    np.divide(x, np.asarray(255, dtype=dtype), out=out, dtype=dtype)
    return out


def one_hot(labels: np.ndarray, num_classes: int = 10, dtype=np.float32) -> np.ndarray:
    """One-hot encode integer ``labels`` of shape ``(N,)`` as ``(N, num_classes)`` of ``dtype``.

    Raises ``ValueError`` if a label is outside ``0..num_classes-1``.
    """
    num_classes = checks.integer("one_hot", "num_classes", num_classes)
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"one_hot expects integer labels, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"one_hot: labels must be in 0..{num_classes - 1}, "
            f"got range {labels.min()}..{labels.max()}"
        )
    return np.eye(num_classes, dtype=dtype)[labels]


def prepare(x: np.ndarray, y: np.ndarray, dtype=np.float32,
            images: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Model-ready arrays: ``(scale(flatten(x), dtype), y as int32)``, or with ``images=True``
    the images themselves, channels last.

    ``x`` uint8 ``(N, 28, 28)`` becomes ``(N, 784)`` floats in ``[0, 1]``, or ``(N, 28, 28, 1)``
    (NHWC, the layout of ``fnnet.Conv2D``) with ``images=True``; images that already have a
    channel axis ``(N, H, W, C)`` keep it. Either way the array is 64-byte aligned (a reshape
    of ``scale``'s output is a view of it). Labels stay integer class indices (int32, JAX's
    default integer), not one-hot — use ``one_hot`` for that.
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"prepare: {len(x)} images but {len(y)} labels")
    if not images:
        return scale(flatten(x), dtype), y.astype(np.int32)
    if x.ndim not in (3, 4):
        raise ValueError(f"prepare: images=True expects images (N, H, W) or (N, H, W, C), got "
                         f"shape {x.shape}")
    pixels = scale(x, dtype)
    return (pixels[..., None] if x.ndim == 3 else pixels), y.astype(np.int32)


def hold_out(x: np.ndarray, y: np.ndarray, rows: int, seed: int = 0):
    """Split ``rows`` examples off ``(x, y)``: ``(kept, held_out)``, each an ``(x, y)`` pair.

    The held-out rows are drawn at random (``numpy.random.default_rng(seed)``), so the same
    seed gives the same split; both parts keep the original order. ``rows`` may be 0 (nothing
    held out) but must leave at least one example.
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"hold_out: {len(x)} examples but {len(y)} labels")
    rows = checks.integer("hold_out", "rows", rows, minimum=0)
    if rows >= len(x):
        raise ValueError(f"hold_out: cannot hold out {rows} of {len(x)} examples; expected "
                         f"fewer, so that some are left to train on")
    held = np.zeros(len(x), bool)
    held[np.random.default_rng(seed).permutation(len(x))[:rows]] = True
    return _aligned_rows(x, y, ~held), _aligned_rows(x, y, held)


def _aligned_rows(x, y, mask):
    """``(x[mask], y[mask])`` into 64-byte-aligned arrays, so the split is still held once on
    the device (``fnnet.to_device`` takes such an array without copying it)."""
    index = np.flatnonzero(mask)
    parts = []
    for array in (x, y):
        out = aligned_empty((len(index),) + array.shape[1:], array.dtype)
        np.take(array, index, axis=0, out=out)
        parts.append(out)
    return tuple(parts)
