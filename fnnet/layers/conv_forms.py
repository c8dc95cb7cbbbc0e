"""The reference forms of ``Conv2D``'s forward and backward, for the experiment and the tests:
numpy loops over the output positions (cs231n's naive forms, ``conv2d_naive``,
``conv2d_backward_naive``) and the correlation/convolution form of the derivation
(``conv2d_backward_correlation``, TheIndependentCode's ``dK = X ⋆ dY``, ``dX = dY ∗ K``). The
derivation itself is in ``Conv2D.backward``'s docstring (``fnnet/layers/conv.py``).

This module imports ``conv`` (for ``ConvParams``) and ``windows``; ``conv`` does not import it, and
``fnnet.layers`` does not export its names: import them from here."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from .conv import DIMENSIONS, ConvParams
from .windows import conv_pads, out_size, padding_spec, pair


def _geometry(where, x, W, stride, padding):
    """Stride pair, padding, the padded input and the output size of a conv of ``x`` by ``W``."""
    stride = pair(where, "stride", stride)
    pads = conv_pads(padding_spec(where, padding), x.shape[1:3], W.shape[:2], stride)
    return stride, pads, out_size(x.shape[1:3], pads, W.shape[:2], stride)


def conv2d_naive(x, W, b, stride=1, padding="valid"):
    """``Y`` by loops over the output positions, in numpy float64 (cs231n's
    ``conv_forward_naive``): ``Y[:, i, j, :] = Σ_{p,q,c} window[:, p, q, c] · W[p, q, c, :] + b``."""
    x, W, b = (np.asarray(a, np.float64) for a in (x, W, b))
    (sh, sw), pads, (oh, ow) = _geometry("conv2d_naive", x, W, stride, padding)
    xp = np.pad(x, ((0, 0), *pads, (0, 0)))
    kh, kw = W.shape[:2]
    y = np.zeros((x.shape[0], oh, ow, W.shape[3]))
    for i in range(oh):
        for j in range(ow):
            window = xp[:, i * sh:i * sh + kh, j * sw:j * sw + kw, :]
            y[:, i, j, :] = np.einsum("npqc,pqco->no", window, W) + b
    return y


def conv2d_backward_naive(x, W, dy, stride=1, padding="valid"):
    """``(ConvParams(dW, db), dX)`` by loops over the output positions, numpy float64 (cs231n's
    ``conv_backward_naive``): each position ``(i, j)`` adds ``window ⊗ dY[:, i, j]`` to ``dW`` and
    ``dY[:, i, j]·Wᵀ`` to the window's place in ``dXp``; ``db = Σ dY``."""
    x, W, dy = (np.asarray(a, np.float64) for a in (x, W, dy))
    (sh, sw), pads, (oh, ow) = _geometry("conv2d_backward_naive", x, W, stride, padding)
    xp = np.pad(x, ((0, 0), *pads, (0, 0)))
    kh, kw = W.shape[:2]
    dW, dxp = np.zeros_like(W), np.zeros_like(xp)
    for i in range(oh):
        for j in range(ow):
            rows, cols = slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw)
            dW += np.einsum("npqc,no->pqco", xp[:, rows, cols, :], dy[:, i, j])
            dxp[:, rows, cols, :] += np.einsum("no,pqco->npqc", dy[:, i, j], W)
    (top, _), (left, _) = pads
    dx = dxp[:, top:top + x.shape[1], left:left + x.shape[2], :]
    return ConvParams(W=dW, b=dy.sum(axis=(0, 1, 2))), dx


def conv2d_backward_correlation(x, W, dy, stride=1, padding="valid"):
    """``(ConvParams(dW, db), dX)`` in the correlation/convolution form of ``Conv2D.backward``'s
    derivation (TheIndependentCode's ``dK = X ⋆ dY``, ``dX = dY ∗ K`` full), by
    ``lax.conv_general_dilated`` used as the derivation's own operations (no autodiff):

    - ``dW``: the padded input correlated with ``dY`` as the kernel, the kernel dilated by the
      stride (``rhs_dilation``); batch and channels trade places (``CHWN``/``IHWO``), so the sum
      runs over ``n`` and the output is ``(kh, kw, C, O)``;
    - ``dX``: ``dY`` dilated by the stride (``lhs_dilation``), padded with ``kh − 1`` and ``kw − 1``
      zeros (the full convolution), correlated with ``W`` flipped in both spatial axes and its
      channel axes swapped; the padding then cropped.
    """
    stride, ((top, bottom), (left, right)), _ = _geometry("conv2d_backward_correlation", x, W,
                                                          stride, padding)
    kh, kw = W.shape[:2]
    oh, ow = dy.shape[1:3]
    used = ((oh - 1) * stride[0] + kh, (ow - 1) * stride[1] + kw)  # rows and columns read
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    dW = lax.conv_general_dilated(xp[:, :used[0], :used[1], :], dy, (1, 1), "VALID",
                                  rhs_dilation=stride, dimension_numbers=("CHWN", "IHWO", "HWNC"))
    extra = (xp.shape[1] - used[0], xp.shape[2] - used[1])  # rows no window reads: zero gradient
    flipped = jnp.flip(W, (0, 1)).transpose(0, 1, 3, 2)
    dxp = lax.conv_general_dilated(dy, flipped, (1, 1),
                                   [(kh - 1, kh - 1 + extra[0]), (kw - 1, kw - 1 + extra[1])],
                                   lhs_dilation=stride, dimension_numbers=DIMENSIONS)
    dx = dxp[:, top:top + x.shape[1], left:left + x.shape[2], :]
    return ConvParams(W=dW, b=dy.sum(axis=(0, 1, 2))), dx
