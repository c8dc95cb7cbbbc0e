"""The fully connected layer and its parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax.numpy as jnp

from .. import precision as _precision
from ..checks import integer
from ..pytrees import register_namedtuple
from .base import Layer
from .checks import (
    check_dy,
    check_features,
    check_floating,
    check_param,
    check_params_type,
    lookup,
)
from .initializers import INITS

DEFAULT_WEIGHT_INIT = "he"


@register_namedtuple
class DenseParams(NamedTuple):
    """Parameters of a Dense layer: ``W`` of shape ``(n_out, n_in)`` and ``b`` of shape ``(n_out,)``."""

    W: Any
    b: Any


@dataclass(frozen=True, init=False)
class Dense(Layer):
    """Fully connected layer, ``Z = X Wᵀ + b`` (note 004), ``y_j = Σ_i w_ji x_i + b_j`` (note 000);
    the notes are in experiments/NOTES.md.

    The input is ``(N, n_in)``, one example ``(n_in,)``, or any number of leading axes
    ``(N, T, ..., n_in)``: the same weights are applied at every leading position (every step of
    a sequence), over the last axis.

    Args:
        n_in: inputs per example.
        n_out: outputs per example.
        init: the weight initialisation (a name in ``INITS``), kept as ``weight_init``: ``he``
            (normal, std √(2/n_in), the default, for ReLU), ``he_uniform``, ``xavier``/``glorot``
            (uniform ±√(6/(n_in+n_out)), for tanh and sigmoid), ``xavier_normal``, ``lecun`` or
            ``uniform`` (U(−0.5, 0.5), as note 002). Biases start at zero.
        precision: the products' policy (``fnnet.precision``): ``"f32"`` (the default, no
            casts), ``"bf16"`` or ``"f16"`` (inputs cast, float32 accumulation).
    """

    n_in: int
    n_out: int
    weight_init: str
    precision: _precision.Policy

    def __init__(self, n_in: int, n_out: int, init: str = DEFAULT_WEIGHT_INIT, *,
                 precision=None):
        object.__setattr__(self, "n_in", integer("Dense", "n_in", n_in))
        object.__setattr__(self, "n_out", integer("Dense", "n_out", n_out))
        lookup(INITS, init, "init", where="Dense")
        object.__setattr__(self, "weight_init", init)
        object.__setattr__(self, "precision", _precision.get(precision))

    def __repr__(self):
        init_arg = "" if self.weight_init == DEFAULT_WEIGHT_INIT else f", init={self.weight_init!r}"
        if self.precision.casts:
            init_arg += f", precision={self.precision!r}"
        return f"Dense({self.n_in}, {self.n_out}{init_arg})"

    def with_precision(self, policy):
        """This layer with its products under ``policy`` (a ``fnnet.precision`` policy or its
        name)."""
        return Dense(self.n_in, self.n_out, self.weight_init, precision=policy)

    def init(self, key, dtype=jnp.float32):
        shape = (self.n_out, self.n_in)
        W = INITS[self.weight_init](key, shape, self.n_in, self.n_out, dtype)
        return DenseParams(W=W, b=jnp.zeros((self.n_out,), dtype))

    def _check(self, params, x):
        check_params_type(self, params, DenseParams)
        if jnp.ndim(x) <= 2:
            check_features(self, x, self.n_in)
        else:  # leading axes (N, T, ..., n_in): the same layer at every position
            check_floating(self, x)
            if jnp.shape(x)[-1] != self.n_in:
                raise ValueError(f"{self}: expected input of shape (N, {self.n_in}), "
                                 f"({self.n_in},) or (N, ..., {self.n_in}) (features last), got "
                                 f"shape {tuple(jnp.shape(x))}")
        check_param(self, "W", params.W, (self.n_out, self.n_in))
        check_param(self, "b", params.b, (self.n_out,))

    def apply(self, params, x, *, state=(), key=None, train=False):
        self._check(params, x)
        if not self.precision.casts:
            return x @ params.W.T + params.b
        return self.precision.dot(x, params.W, (x.ndim - 1, 1)) + params.b

    def forward(self, params, x, *, state=(), key=None, train=True):
        """``Z = X Wᵀ + b``; the cache is ``X`` (in the products' input type)."""
        xc = self.precision.cast(x)  # cast once: the product and the cache share it
        return self.apply(params, xc), xc

    def backward(self, params, cache, dy):
        """Note 000 (experiments/NOTES.md), samples as columns: ``dE/dW = dE/dY Xᵀ``,
        ``dE/dB = dE/dY``, ``dE/dX = Wᵀ dE/dY``.

        Rows (note 004), one example per row of ``X`` and ``dY``, summed over the batch::

            dW = dYᵀ X        (n_out, n_in)
            db = Σ_n dY_n     (n_out,)
            dX = dY W         (N, n_in)

        With leading axes, ``X`` of shape ``(N, T, ..., n_in)``: ``Z[n, t] = W X[n, t] + b`` at
        every position with the same ``W`` and ``b``, so each position contributes its own
        ``dY[n, t] X[n, t]ᵀ`` and the gradients sum over every leading axis. Flattening the
        leading axes into ``M = N·T·…`` rows makes that sum one matrix product::

            dW = Σ_{n,t} dY[n,t]ᵀ X[n,t] = dY_flatᵀ X_flat      (n_out, M)·(M, n_in)
            db = Σ_{n,t} dY[n,t]                                  (n_out,)
            dX[n, t] = dY[n, t] W                                 (N, T, ..., n_in)

        The flattening is a free reshape of row-major arrays, so this is the 2-D rule on the
        ``(M, n_in)`` and ``(M, n_out)`` rows, its products and layouts included, with ``dX``
        shaped back to ``(N, T, ..., n_in)``.

        Under a casting policy each product reads ``bf16``/``f16`` inputs and accumulates in
        float32, and ``dYᵀ`` is written out row-major first (``fnnet.precision.transposed``;
        with leading axes, the flattened ``dY``'s).
        """
        x, policy = cache, self.precision
        check_dy(self, dy, x.shape[:-1] + (self.n_out,))
        if x.ndim > 2:  # leading axes: the 2-D rule on the rows, dX shaped back
            grads, dx_rows = self.backward(params, x.reshape(-1, x.shape[-1]),
                                           dy.reshape(-1, dy.shape[-1]))
            return grads, dx_rows.reshape(x.shape[:-1] + dx_rows.shape[-1:])
        if not policy.casts:
            if x.ndim == 1:
                return DenseParams(W=jnp.outer(dy, x), b=dy), dy @ params.W
            return DenseParams(W=dy.T @ x, b=dy.sum(axis=0)), dy @ params.W
        dyc = policy.cast(dy)
        if x.ndim == 1:
            dW = policy.dot(dyc[:, None], x[None, :], (1, 0))
            return DenseParams(W=dW, b=dy), policy.dot(dyc, params.W, (0, 0))
        dW = policy.dot(_precision.transposed(dyc, policy), x, (1, 0))
        return DenseParams(W=dW, b=dy.sum(axis=0)), policy.dot(dyc, params.W, (1, 0))
