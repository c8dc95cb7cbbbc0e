"""The 2-D convolution (``Conv2D``) and its backward derived from the sum.

Images are NHWC (batch first, channels last); kernels are HWIO, ``W`` of shape
``(kh, kw, in_channels, out_channels)``. As in every deep-learning library the "convolution" is a
cross-correlation: the kernel is not flipped in the forward.

The forms, each computing the same ``Y``, ``dW``, ``db``, ``dX`` (a test shows they agree):

- ``Conv2D.apply``: ``lax.conv_general_dilated``, the independent reference autodiff differentiates;
- ``Conv2D.forward``/``backward``: im2col, a convolution as a matrix product of patches
  (``Y = P·Wmat + b``, ``dWmat = Pᵀ·dY``, ``dX = col2im(dY·Wmatᵀ)``), the fastest on the CPU inside
  ``lax.scan`` (README.md, "Convolutions", has the measurements);
- in ``conv_forms`` (which imports this module, never the other way): ``conv2d_naive``/
  ``conv2d_backward_naive``, numpy loops over the output positions (cs231n's
  ``conv_forward_naive``/``conv_backward_naive``), float64, for small sizes; and
  ``conv2d_backward_correlation``, ``dW`` the correlation of the input with ``dY``, ``dX`` the full
  convolution of ``dY`` with the flipped kernel (TheIndependentCode's ``dK = X ⋆ dY``,
  ``dX = dY ∗ K``), ``dY`` dilated by the stride.

The window geometry (paddings, output sizes, the input checks, and ``patches`` and ``col2im``, the
im2col pair) is in ``windows``, shared with the pooling layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .. import precision as _precision
from ..checks import integer
from ..pytrees import register_namedtuple
from .base import Layer
from .checks import check_dy, check_param, check_params_type, lookup
from .initializers import INITS
from .windows import (
    check_images,
    check_window,
    col2im,
    conv_pads,
    out_size,
    padding_spec,
    pair,
    patches,
)

DEFAULT_WEIGHT_INIT = "he"
DIMENSIONS = ("NHWC", "HWIO", "NHWC")


@register_namedtuple
class ConvParams(NamedTuple):
    """Parameters of a Conv2D: ``W`` of shape ``(kh, kw, in_channels, out_channels)`` and ``b`` of
    shape ``(out_channels,)``."""

    W: Any
    b: Any


@jax.tree_util.register_static
@dataclass(frozen=True)
class ConvGeometry:
    """What a conv's backward needs besides arrays: static under ``jit``, ``vmap`` and ``scan``."""

    window: tuple
    stride: tuple
    padded: tuple
    pads: tuple


@dataclass(frozen=True, init=False)
class Conv2D(Layer):
    """2-D convolution (a cross-correlation, as everywhere), NHWC in and out::

        Y[n, i, j, o] = b[o] + Σ_{p,q,c} Xp[n, i·s + p, j·s' + q, c] · W[p, q, c, o]

    ``Xp`` the input padded as ``padding`` says, ``s, s'`` the strides. The output has
    ``(Hp − kh)//s + 1`` rows and ``(Wp − kw)//s' + 1`` columns.

    Args:
        in_channels, out_channels: ``C`` and ``O``.
        kernel_size: ``(kh, kw)``, or one int for a square kernel.
        stride: ``(s, s')`` or one int (1).
        padding: ``"valid"`` (none, the default), ``"same"`` (``ceil(H/s)`` outputs, TensorFlow's
            and XLA's ``SAME`` split: any odd pixel of padding goes at the end), either name in
            any case, or an int (that many zeros on every side).
        init: the weight initialisation (a name in ``INITS``), kept as ``weight_init``; ``he`` by
            default, with ``fan_in = kh·kw·in_channels`` (``fan_out = kh·kw·out_channels``).
            Biases start at zero.
        precision: the products' policy (``fnnet.precision``): ``"f32"`` (the default, no
            casts), ``"bf16"`` or ``"f16"`` (inputs cast, float32 accumulation).

    ``forward``/``backward`` run the im2col form, patches cached: of the forms tried, the
    fastest inside ``lax.scan`` on the CPU, where XLA's own convolutions are slow in loops
    (README.md, "Convolutions", has the measurements).
    """

    in_channels: int
    out_channels: int
    kernel_size: tuple
    stride: tuple
    padding: Any
    weight_init: str
    precision: _precision.Policy

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding="valid",
                 init=DEFAULT_WEIGHT_INIT, *, precision=None):
        object.__setattr__(self, "in_channels", integer("Conv2D", "in_channels", in_channels))
        object.__setattr__(self, "out_channels", integer("Conv2D", "out_channels", out_channels))
        object.__setattr__(self, "kernel_size", pair("Conv2D", "kernel_size", kernel_size))
        object.__setattr__(self, "stride", pair("Conv2D", "stride", stride))
        object.__setattr__(self, "padding", padding_spec("Conv2D", padding))
        lookup(INITS, init, "init", where="Conv2D")
        object.__setattr__(self, "weight_init", init)
        object.__setattr__(self, "precision", _precision.get(precision))

    def with_precision(self, policy):
        """This layer with its products under ``policy`` (a ``fnnet.precision`` policy or its
        name)."""
        return Conv2D(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                      self.padding, self.weight_init, precision=policy)

    def __repr__(self):
        kernel = self.kernel_size[0] if len(set(self.kernel_size)) == 1 else self.kernel_size
        args = [str(self.in_channels), str(self.out_channels), str(kernel)]
        if self.stride != (1, 1):
            args.append(f"stride={self.stride[0] if len(set(self.stride)) == 1 else self.stride}")
        if self.padding != "valid":
            args.append(f"padding={self.padding!r}")
        if self.weight_init != DEFAULT_WEIGHT_INIT:
            args.append(f"init={self.weight_init!r}")
        if self.precision.casts:
            args.append(f"precision={self.precision!r}")
        return f"Conv2D({', '.join(args)})"

    def init(self, key, dtype=jnp.float32):
        (kh, kw), c, o = self.kernel_size, self.in_channels, self.out_channels
        W = INITS[self.weight_init](key, (kh, kw, c, o), kh * kw * c, kh * kw * o, dtype)
        return ConvParams(W=W, b=jnp.zeros((o,), dtype))

    def _check(self, params, x):
        """The input and params checked; returns the padding ``((top, bottom), (left, right))``."""
        check_images(self, x, self.in_channels)
        check_params_type(self, params, ConvParams)
        shape = (*self.kernel_size, self.in_channels, self.out_channels)
        check_param(self, "W", params.W, shape)
        check_param(self, "b", params.b, (self.out_channels,))
        pads = conv_pads(self.padding, jnp.shape(x)[1:3], self.kernel_size, self.stride)
        check_window(self, x, pads, self.kernel_size)
        return pads

    def apply(self, params, x, *, state=(), key=None, train=False):
        """``lax.conv_general_dilated``: the reference, never used by ``backward``."""
        self._check(params, x)
        padding = ([(self.padding, self.padding)] * 2 if isinstance(self.padding, int)
                   else self.padding.upper())
        dtype = jnp.result_type(x, params.W)  # promoted as a matrix product would
        if self.precision.casts:
            dtype = self.precision.compute
        accumulate = jnp.float32 if self.precision.casts else None
        y = lax.conv_general_dilated(x.astype(dtype), params.W.astype(dtype), self.stride, padding,
                                     dimension_numbers=DIMENSIONS,
                                     preferred_element_type=accumulate)
        return y + params.b

    def forward(self, params, x, *, state=(), key=None, train=True):
        """im2col: ``P`` ``(N, OH, OW, kh·kw·C)``, the patches side by side along the channels in
        ``(p, q, c)`` order, which is ``W``'s row-major order, so ``Y = P·Wmat + b`` with
        ``Wmat = W.reshape(kh·kw·C, O)``. The cache keeps ``P`` and the geometry."""
        pads = self._check(params, x)
        xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
        out = out_size(x.shape[1:3], pads, self.kernel_size, self.stride)
        policy = self.precision
        xp = policy.cast(xp)
        P = _precision.concatenate(patches(xp, self.kernel_size, self.stride, out), axis=-1)
        y = policy.dot(P, params.W.reshape(-1, self.out_channels), (3, 0)) + params.b
        return y, (P, ConvGeometry(self.kernel_size, self.stride, xp.shape[1:3], pads))

    def backward(self, params, cache, dy):
        r"""The backward from the sum, step by step (cs231n's ``conv_backward_naive`` and
        TheIndependentCode's convolutional layer derive it the same way). Derivation: this
        docstring (beyond the notes, see experiments/NOTES.md 'Beyond the notes').

        Forward, with ``Xp`` the padded input, ``s`` the stride (``s'`` along the width)::

            Y[n,i,j,o] = b[o] + Σ_{p,q,c} Xp[n, i·s+p, j·s'+q, c] · W[p,q,c,o]

        The loss E depends on every ``Y[n,i,j,o]``; the chain rule sums over all of them:
        ``∂E/∂θ = Σ_{n,i,j,o} dY[n,i,j,o] · ∂Y[n,i,j,o]/∂θ``.

        1. Bias. ``∂Y[n,i,j,o]/∂b[o'] = [o = o']``, so ``db[o] = Σ_{n,i,j} dY[n,i,j,o]``.

        2. Kernel. ``∂Y[n,i,j,o]/∂W[p,q,c,o'] = [o = o'] · Xp[n, i·s+p, j·s'+q, c]``, so::

               dW[p,q,c,o] = Σ_{n,i,j} Xp[n, i·s+p, j·s'+q, c] · dY[n,i,j,o]

           a correlation of the padded input with ``dY`` (``dK = X ⋆ dY``): ``dY`` slides over
           ``Xp`` as a kernel whose taps are ``s`` apart, i.e. ``dY`` dilated by the stride.

        3. Input. ``Xp[n,h,w,c]`` appears in ``Y[n,i,j,o]`` whenever ``h = i·s+p`` and
           ``w = j·s'+q`` for some kernel offset ``(p, q)``, with coefficient ``W[p,q,c,o]``::

               dXp[n,h,w,c] = Σ_{i,j,o,p,q : i·s+p=h, j·s'+q=w} dY[n,i,j,o] · W[p,q,c,o]

           Dilate ``dY`` by the stride, ``D[n, i·s, j·s', o] = dY[n,i,j,o]`` (zeros between), then
           ``dXp[n,h,w,c] = Σ_{p,q,o} D[n, h−p, w−q, o] · W[p,q,c,o]``: a true convolution. Pad
           ``D`` with ``kh−1`` (``kw−1``) zeros on both sides and put ``p̄ = kh−1−p``,
           ``q̄ = kw−1−q``: ``dXp[n,h,w,c] = Σ_{p̄,q̄,o} Dpad[n, h+p̄, w+q̄, o] · W[kh−1−p̄, kw−1−q̄, c, o]``,
           the full correlation of ``dY`` with the kernel flipped in both spatial axes and its
           channel axes swapped (``dX = dY ∗ K`` full). ``dX`` is ``dXp`` without the padding.

        im2col, the form run here. With ``P[(n,i,j), (p,q,c)] = Xp[n, i·s+p, j·s'+q, c]`` and
        ``Wmat[(p,q,c), o] = W[p,q,c,o]`` the forward is ``Y = P·Wmat + b``, a matrix product, so
        steps 1 to 3 read::

            db    = Σ_rows dY                       (O,)
            dWmat = Pᵀ · dY                         (kh·kw·C, O), reshaped to W's shape
            dP    = dY · Wmatᵀ                      (N·OH·OW, kh·kw·C)
            dXp   = col2im(dP)

        where ``col2im`` adds each entry ``dP[(n,i,j), (p,q,c)]`` back into ``dXp[n, i·s+p,
        j·s'+q, c]`` (the adjoint of building ``P``): for each offset ``(p, q)`` a strided slice.
        Written out, ``Σ_{(i,j,p,q) : i·s+p=h, …} dP[(n,i,j),(p,q,c)]`` is step 3's sum.

        Under a casting policy the products read ``bf16``/``f16`` and accumulate in float32, and
        ``dWmat = Pᵀ·dY`` reads ``Pᵀ`` written out row-major (``fnnet.precision.transposed``), the
        layout XLA:CPU's narrow products need, whichever of ``P`` and ``dY`` is wider.
        """
        P, geometry = cache
        W, policy = params.W, self.precision
        kh, kw, c, o = W.shape
        check_dy(self, dy, P.shape[:3] + (o,))
        dyr = dy.reshape(-1, o)
        dW = _kernel_grad(P.reshape(-1, kh * kw * c), dyr, policy).reshape(W.shape)
        dP = policy.dot(policy.cast(dy), W.reshape(-1, o), (3, 1))
        cols = [dP[..., k * c:(k + 1) * c] for k in range(kh * kw)]
        dx = col2im(cols, geometry.window, geometry.stride, geometry.padded, geometry.pads)
        return ConvParams(W=dW, b=dyr.sum(axis=0)), dx


def _kernel_grad(P, dyr, policy):
    """``dWmat = Pᵀ·dY`` (rows of ``P`` and ``dY`` are the output positions).

    Under a casting policy ``Pᵀ`` is written out, even where ``P`` is the wider of the two
    (the second convolution of ``fnnet.cnn()``: 288 columns against ``dY``'s 64). Writing
    ``dYᵀ`` instead and transposing the ``(O, kh·kw·C)`` result moves less data, but XLA:CPU
    runs that product, few rows by a long contraction, at half the speed: the bf16 CNN's
    training step was 1.06× (batch 128) and 1.10× (batch 64) faster this way
    (experiments/BENCHMARKS.md, W4)."""
    if not policy.casts:
        return P.T @ dyr
    return policy.dot(_precision.transposed(P, policy), policy.cast(dyr), (1, 0))

