"""Window geometry over NHWC images, shared by the convolution (``conv``, ``conv_forms``) and the
pooling layers (``pooling``): argument checks for window sizes, strides and paddings, the padding
and output sizes, the input checks, and the im2col pair (``patches``, ``col2im``).

A window of ``(kh, kw)`` offsets slides over the padded image ``Xp`` with strides ``(s, s')``;
output position ``(i, j)`` reads ``Xp[n, i·s + p, j·s' + q, c]`` for ``0 ≤ p < kh``, ``0 ≤ q < kw``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ..checks import integer
from .checks import check_floating

PADDINGS = ("valid", "same")
NO_PADS = ((0, 0), (0, 0))


def pair(where, name, value, minimum=1):
    """``value`` (an int or a pair of ints, each ``>= minimum``) as a pair of ints."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2:
        raise ValueError(f"{where}: {name} must be an integer or a pair of integers, got {value!r}")
    return tuple(integer(where, name, v, minimum) for v in values)


def padding_spec(where, padding):
    """``"valid"``, ``"same"`` or a non-negative int (symmetric), checked."""
    if isinstance(padding, str):
        if padding.lower() not in PADDINGS:
            raise ValueError(f"{where}: padding must be 'valid', 'same' or a non-negative "
                             f"integer, got {padding!r}")
        return padding.lower()
    return integer(where, "padding", padding, minimum=0)


def conv_pads(padding, size, kernel, stride):
    """``((top, bottom), (left, right))`` for an image of spatial ``size``.

    ``"same"`` is TensorFlow's and XLA's ``SAME``: the output has ``ceil(size/stride)`` positions
    and the total padding ``max((out − 1)·s + k − size, 0)`` is split with the extra one at the end.
    """
    if padding == "valid":
        return NO_PADS
    if padding == "same":
        pads = []
        for n, k, s in zip(size, kernel, stride):
            total = max((-(-n // s) - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    return ((padding, padding), (padding, padding))


def out_size(size, pads, kernel, stride):
    """The output positions along each spatial axis: ``(H + pads − k) // s + 1``."""
    return tuple((n + lo + hi - k) // s + 1
                 for n, (lo, hi), k, s in zip(size, pads, kernel, stride))


def check_images(layer, x, channels=None):
    """Raise unless ``x`` is a floating NHWC batch (rank 4) with ``channels`` channels."""
    check_floating(layer, x)
    shape = tuple(jnp.shape(x))
    if len(shape) != 4:
        raise ValueError(f"{layer}: expected NHWC images of rank 4 (N, H, W, C), got shape {shape}"
                         f" (a single image needs its batch axis: x[None])")
    if channels is not None and shape[-1] != channels:
        raise ValueError(f"{layer}: expected {channels} input channels (the last axis of NHWC), "
                         f"got shape {shape}")


def check_window(layer, x, pads, window, what="kernel"):
    """Raise unless the ``window`` fits in the (padded) image."""
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(jnp.shape(x)[1:3], pads))
    if padded[0] < window[0] or padded[1] < window[1]:
        raise ValueError(f"{layer}: {what} {window} is larger than the (padded) image {padded} "
                         f"of input shape {tuple(jnp.shape(x))}")


def patches(xp, window, stride, out):
    """The ``kh·kw`` strided slices of the padded input ``xp`` ``(N, Hp, Wp, C)``, in row-major
    window order, each ``(N, OH, OW, C)``: slice ``(p, q)`` holds ``xp[n, i·s + p, j·s + q, c]``.
    Plain strided slices: no gather."""
    (kh, kw), (sh, sw), (oh, ow) = window, stride, out
    return [xp[:, p:p + (oh - 1) * sh + 1:sh, q:q + (ow - 1) * sw + 1:sw, :]
            for p in range(kh) for q in range(kw)]


def col2im(cols, window, stride, padded, pads):
    """The adjoint of ``patches``, cropped: the sum of every slice's gradient ``cols[p·kw + q]``
    ``(N, OH, OW, C)`` back at its place in the padded input ``(N, Hp, Wp, C)``, the padding then
    cut off. A slice is put in place by ``lax.pad`` (interior padding ``s − 1`` undoes the stride,
    the edges shift it by ``(p, q)``, negative edges crop the padding; no scatter), one axis at a
    time, since padding the height and the width are independent and linear::

        dXp = Σ_p pad_h( Σ_q pad_w(cols[p·kw + q], q), p )

    the ``kw`` slices of a row of the window summed along the width first, then the ``kh`` rows
    along the height. XLA:CPU wrote each of the ``kh·kw`` two-axis pads out in full before
    summing them; the one-axis pads fuse with their sums (experiments/BENCHMARKS.md, W4).
    """
    (kh, kw), (sh, sw), (hp, wp) = window, stride, padded
    (top, bottom), (left, right) = pads
    oh, ow = cols[0].shape[1:3]

    def place(a, axis, offset, crop, size, step, count):
        """``a`` at ``offset`` along ``axis`` (of ``size`` padded), ``step`` apart, cropped."""
        config = [(0, 0, 0)] * 4
        config[axis] = (offset - crop[0], size - offset - (count - 1) * step - 1 - crop[1],
                        step - 1)
        return lax.pad(a, jnp.zeros((), a.dtype), config)

    total = None
    for p in range(kh):
        row = place(cols[p * kw], 2, 0, (left, right), wp, sw, ow)
        for q in range(1, kw):
            row = row + place(cols[p * kw + q], 2, q, (left, right), wp, sw, ow)
        placed = place(row, 1, p, (top, bottom), hp, sh, oh)
        total = placed if total is None else total + placed
    return total
