"""``Flatten``: images ``(N, H, W, C)`` to rows ``(N, H·W·C)`` for the dense layers after them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp

from .base import InputShape, Layer
from .checks import check_floating, check_no_params


@dataclass(frozen=True)
class Flatten(Layer):
    """``(N, H, W, C) -> (N, H·W·C)`` in row-major (C) order: ``Y[n, (h·W + w)·C + c] = X[n, h, w, c]``,
    so the channels of a pixel stay side by side. Any ``(N, ...)`` of rank ≥ 2 works the same way;
    the batch axis is required.

    A reshape only moves entries, so its backward moves ``dY`` back: ``dX = dY.reshape(X.shape)``.
    The cache is the input's shape, static (no arrays).
    """

    def init(self, key, dtype=jnp.float32):
        return ()

    def _check(self, params, x):
        check_no_params(self, params)
        check_floating(self, x)
        if jnp.ndim(x) < 2:
            raise ValueError(f"{self}: expected a batch (N, H, W, C) of rank 2 or more (NHWC "
                             f"images: rank 4), got shape {tuple(jnp.shape(x))}")

    def apply(self, params, x, *, state=(), key=None, train=False):
        self._check(params, x)
        return jnp.reshape(x, (x.shape[0], math.prod(x.shape[1:])))

    def forward(self, params, x, *, state=(), key=None, train=True):
        return self.apply(params, x), InputShape(tuple(x.shape))

    def backward(self, params, cache, dy):
        """``dX = dY`` reshaped back to the input's shape (a reshape relabels the entries
        without moving them: its Jacobian is the identity)."""
        return (), jnp.reshape(dy, cache.shape)
