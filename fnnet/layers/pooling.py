"""Pooling over windows of NHWC images: ``MaxPool2D`` and ``AvgPool2D`` (no parameters).

``Y[n, i, j, c]`` pools ``X[n, i·s + p, j·s' + q, c]`` over the window offsets ``0 ≤ p < wh``,
``0 ≤ q < ww``; ``stride`` defaults to the window and there is no padding ("valid": rows and
columns no window reaches are left out, and get a zero gradient).

``apply`` is ``lax.reduce_window``, the reference that autodiff differentiates. ``forward`` and
``backward`` are written by hand: when the stride equals the window (the usual 2×2 pool), the
windows tile the image and a reshape to ``(N, OH, wh, OW, ww, C)`` exposes them, so pooling is a
max or a mean over axes 2 and 4 and the backward a broadcast back; otherwise the windows are the
``wh·ww`` strided slices of ``windows.patches``, and the backward goes back through
``windows.col2im`` (the window geometry this module shares with the convolution).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from jax import lax

from .base import InputShape, Layer
from .checks import check_dy, check_no_params
from .windows import NO_PADS, check_images, check_window, col2im, out_size, pair, patches


@dataclass(frozen=True, init=False)
class Pool2D(Layer):
    """What max and average pooling share: the window, the stride, the checks and the two ways
    of laying out the windows. A subclass gives ``apply``, ``forward`` and ``backward``."""

    window: tuple
    stride: tuple

    def __init__(self, window=2, stride=None):
        name = type(self).__name__
        object.__setattr__(self, "window", pair(name, "window", window))
        object.__setattr__(self, "stride", self.window if stride is None
                           else pair(name, "stride", stride))

    def __repr__(self):
        def short(value):
            return value[0] if value[0] == value[1] else value
        stride = "" if self.stride == self.window else f", stride={short(self.stride)}"
        return f"{type(self).__name__}({short(self.window)}{stride})"

    def init(self, key, dtype=jnp.float32):
        return ()

    def _check(self, params, x):
        check_no_params(self, params)
        check_images(self, x)
        check_window(self, x, NO_PADS, self.window, what="window")

    def _reduce(self, x, init, computation):
        """``lax.reduce_window`` over the windows, valid padding: the reference."""
        dims, strides = (1, *self.window, 1), (1, *self.stride, 1)
        return lax.reduce_window(x, np.array(init, x.dtype), computation, dims, strides, "VALID")

    def _out(self, x):
        return out_size(x.shape[1:3], NO_PADS, self.window, self.stride)

    @property
    def tiles(self):
        """Whether the windows tile the image (stride = window), so a reshape lays them out."""
        return self.stride == self.window

    def _blocks(self, x):
        """``(N, OH, wh, OW, ww, C)``: the image cut into its windows (needs ``tiles``)."""
        (oh, ow), (wh, ww) = self._out(x), self.window
        n, c = x.shape[0], x.shape[3]
        return x[:, :oh * wh, :ow * ww, :].reshape(n, oh, wh, ow, ww, c)

    def _unblock(self, blocks, shape):
        """The inverse of ``_blocks``: back to the input ``shape``, zeros where no window
        reached."""
        n, oh, wh, ow, ww, c = blocks.shape
        dx = blocks.reshape(n, oh * wh, ow * ww, c)
        return jnp.pad(dx, ((0, 0), (0, shape[1] - oh * wh), (0, shape[2] - ow * ww), (0, 0)))

    def _windows(self, x):
        """``(N, OH, OW, wh·ww, C)``: each window's entries along axis 3, in row-major order."""
        return jnp.stack(patches(x, self.window, self.stride, self._out(x)), axis=3)

    def _col2im(self, cols, shape):
        """Each window's gradients ``(N, OH, OW, wh·ww, C)`` added back at their places in an
        input of ``shape``."""
        parts = [cols[:, :, :, k, :] for k in range(cols.shape[3])]
        return col2im(parts, self.window, self.stride, shape[1:3], NO_PADS)


class MaxPool2D(Pool2D):
    """``Y[n,i,j,c] = max_{p,q} X[n, i·s+p, j·s'+q, c]``; ``MaxPool2D(window=2, stride=None)``.

    Backward: ``∂Y[n,i,j,c]/∂X[n,h,w,c]`` is 1 at the window's maximum and 0 elsewhere, so each
    window's ``dY`` goes to its maximum and ``dX`` sums what every window sent (overlapping windows,
    stride < window, can send to the same pixel).

    Ties: where a window holds its maximum more than once, the first in row-major window order
    (smallest ``p``, then smallest ``q``) gets all of that window's ``dY``, the others nothing. This
    is what ``jax.grad`` of ``apply`` does too (XLA's ``select_and_scatter`` keeps the first of equal
    values), and a test checks it on tied inputs; ``jax.grad`` of ``jnp.max`` would split instead.
    """

    def apply(self, params, x, *, state=(), key=None, train=False):
        self._check(params, x)
        return self._reduce(x, -np.inf, lax.max)

    def forward(self, params, x, *, state=(), key=None, train=True):
        """The max over the windows; the cache keeps the input and the output (no copies)."""
        self._check(params, x)
        y = self._blocks(x).max(axis=(2, 4)) if self.tiles else self._windows(x).max(axis=3)
        return y, (x, y)

    def backward(self, params, cache, dy):
        """``dX[window's first maximum] += dY`` for every window; derivation: the class docstring
        (beyond the notes, see experiments/NOTES.md 'Beyond the notes')."""
        x, y = cache
        check_dy(self, dy, y.shape)
        if self.tiles:  # each window's positions in row-major order; the first maximum takes dY
            at_max = self._blocks(x) == y[:, :, None, :, None, :]
            taken = jnp.zeros(y.shape, bool)
            rows = []
            for p in range(self.window[0]):
                sent = []
                for q in range(self.window[1]):
                    first = at_max[:, :, p, :, q, :] & ~taken
                    taken = taken | first
                    sent.append(jnp.where(first, dy, 0))
                rows.append(jnp.stack(sent, axis=3))
            return (), self._unblock(jnp.stack(rows, axis=2), x.shape)
        first = jnp.argmax(self._windows(x), axis=3)  # argmax: the first maximum
        size = self.window[0] * self.window[1]
        cols = jnp.where(jnp.arange(size)[:, None] == first[:, :, :, None, :], dy[:, :, :, None, :], 0)
        return (), self._col2im(cols, x.shape)


class AvgPool2D(Pool2D):
    """``Y[n,i,j,c] = (1/(wh·ww)) Σ_{p,q} X[n, i·s+p, j·s'+q, c]``; ``AvgPool2D(window=2,
    stride=None)``.

    Backward: ``∂Y[n,i,j,c]/∂X[n, i·s+p, j·s'+q, c] = 1/(wh·ww)`` for every offset in the window, so
    each window spreads ``dY/(wh·ww)`` evenly over its pixels, and ``dX`` sums what every window
    sent.
    """

    def apply(self, params, x, *, state=(), key=None, train=False):
        self._check(params, x)
        return self._reduce(x, 0.0, lax.add) / (self.window[0] * self.window[1])

    def forward(self, params, x, *, state=(), key=None, train=True):
        """The mean over the windows; the cache keeps the input's shape (static)."""
        self._check(params, x)
        y = self._blocks(x).mean(axis=(2, 4)) if self.tiles else self._windows(x).mean(axis=3)
        return y, InputShape(tuple(x.shape))

    def backward(self, params, cache, dy):
        """``dX[every pixel of the window] += dY/(wh·ww)``; derivation: the class docstring (beyond
        the notes, see experiments/NOTES.md 'Beyond the notes')."""
        shape, (wh, ww) = cache.shape, self.window
        check_dy(self, dy, (shape[0], *out_size(shape[1:3], NO_PADS, self.window, self.stride),
                            shape[3]))
        share = dy / (wh * ww)
        if self.tiles:
            n, oh, ow, c = dy.shape
            blocks = jnp.broadcast_to(share[:, :, None, :, None, :], (n, oh, wh, ow, ww, c))
            return (), self._unblock(blocks, shape)
        cols = jnp.broadcast_to(share[:, :, :, None, :], (*dy.shape[:3], wh * ww, dy.shape[3]))
        return (), self._col2im(cols, shape)
