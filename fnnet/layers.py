"""Layers: each one a forward and the hand-derived backward of note 000, side by side.

A layer is an immutable, hashable description (sizes and choices, never arrays) with four pure
methods::

    init(key)                      -> params
    apply(params, x)               -> y                 plain jnp, the autodiff reference path
    forward(params, x)             -> (y, cache)        what backward needs, kept
    backward(params, cache, dy)    -> (dparams, dx)     the note's equations, nothing else

Layout is batch first (note 004): ``x`` has shape ``(N, n_in)``; a single example of shape ``(n_in,)``
works too. Notes 000, 001 and 002 write samples as columns; each backward's docstring gives the
note's column equation and the transposition used here.

``apply`` never calls ``backward`` and uses no custom derivative rule of ours, so ``jax.grad`` of
``apply`` is an independent reference for every rule written here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class DenseParams(NamedTuple):
    """Parameters of a Dense layer: ``W`` of shape ``(n_out, n_in)`` and ``b`` of shape ``(n_out,)``."""

    W: Any
    b: Any


# ---------------------------------------------------------------------------------------------
# Checks, run at trace time (shapes and dtypes are static under jit).


def check_floating(layer, x, what="input"):
    """Raise TypeError unless ``x`` is a floating-point array."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{layer}: {what} must be a floating-point array, got dtype {dtype} "
            f"(convert with x.astype(jnp.float32), e.g. after scaling pixels to [0, 1])"
        )


def check_features(layer, x, n, what="input"):
    """Raise unless ``x`` has shape ``(N, n)`` or ``(n,)``."""
    check_floating(layer, x, what)
    shape = jnp.shape(x)
    if len(shape) not in (1, 2) or shape[-1] != n:
        raise ValueError(
            f"{layer}: expected {what} of shape (N, {n}) or ({n},), got shape {tuple(shape)}"
        )


def _check_param(layer, name, value, expected):
    if tuple(jnp.shape(value)) != expected:
        raise ValueError(
            f"{layer}: parameter {name} has shape {tuple(jnp.shape(value))}, expected {expected}"
        )


# ---------------------------------------------------------------------------------------------
# Dense


def _he(key, shape, n_in, n_out, dtype):
    return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / n_in)


def _he_uniform(key, shape, n_in, n_out, dtype):
    a = math.sqrt(6.0 / n_in)
    return jax.random.uniform(key, shape, dtype, -a, a)


def _xavier(key, shape, n_in, n_out, dtype):
    a = math.sqrt(6.0 / (n_in + n_out))
    return jax.random.uniform(key, shape, dtype, -a, a)


def _xavier_normal(key, shape, n_in, n_out, dtype):
    return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / (n_in + n_out))


def _lecun(key, shape, n_in, n_out, dtype):
    return jax.random.normal(key, shape, dtype) * math.sqrt(1.0 / n_in)


def _uniform(key, shape, n_in, n_out, dtype):
    # Note 002's initialisation: np.random.rand(...) - 0.5
    return jax.random.uniform(key, shape, dtype, -0.5, 0.5)


INITS = {
    "he": _he,
    "he_uniform": _he_uniform,
    "xavier": _xavier,
    "glorot": _xavier,
    "xavier_normal": _xavier_normal,
    "glorot_normal": _xavier_normal,
    "lecun": _lecun,
    "uniform": _uniform,
}


@dataclass(frozen=True, init=False)
class Dense:
    """Fully connected layer, ``Z = X Wᵀ + b`` (note 004), ``y_j = Σ_i w_ji x_i + b_j`` (note 000).

    ``init`` is one of ``he`` (normal, std √(2/n_in), the default, for ReLU), ``he_uniform``,
    ``xavier``/``glorot`` (uniform ±√(6/(n_in+n_out)), for tanh and sigmoid), ``xavier_normal``,
    ``lecun`` or ``uniform`` (U(−0.5, 0.5), as note 002). Biases start at zero.
    """

    n_in: int
    n_out: int
    initializer: str

    def __init__(self, n_in, n_out, init="he"):
        for name, v in (("n_in", n_in), ("n_out", n_out)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Dense: {name} must be a positive integer, got {v!r}")
        if init not in INITS:
            raise ValueError(f"Dense: unknown init {init!r}; expected one of {sorted(INITS)}")
        object.__setattr__(self, "n_in", n_in)
        object.__setattr__(self, "n_out", n_out)
        object.__setattr__(self, "initializer", init)

    def __repr__(self):
        return f"Dense({self.n_in}, {self.n_out})"

    def init(self, key, dtype=jnp.float32):
        shape = (self.n_out, self.n_in)
        W = INITS[self.initializer](key, shape, self.n_in, self.n_out, dtype)
        return DenseParams(W=W, b=jnp.zeros((self.n_out,), dtype))

    def _check(self, params, x):
        check_features(self, x, self.n_in)
        _check_param(self, "W", params.W, (self.n_out, self.n_in))
        _check_param(self, "b", params.b, (self.n_out,))

    def apply(self, params, x):
        self._check(params, x)
        return x @ params.W.T + params.b

    def forward(self, params, x):
        return self.apply(params, x), x

    def backward(self, params, cache, dy):
        """Note 000 (columns): ``dE/dW = dE/dY Xᵀ``, ``dE/dB = dE/dY``, ``dE/dX = Wᵀ dE/dY``.

        Rows (note 004), one example per row of ``X`` and ``dY``, summed over the batch::

            dW = dYᵀ X        (n_out, n_in)
            db = Σ_n dY_n     (n_out,)
            dX = dY W         (N, n_in)
        """
        x = cache
        if x.ndim == 1:
            dW, db = jnp.outer(dy, x), dy
        else:
            dW, db = dy.T @ x, dy.sum(axis=0)
        return DenseParams(W=dW, b=db), dy @ params.W


# ---------------------------------------------------------------------------------------------
# Element-wise activations: Y = f(X), dE/dX = dE/dY ⊙ f'(X)   (note 000)


class _Activation:
    """Shared plumbing of the parameterless layers: empty params, input checks."""

    def init(self, key, dtype=jnp.float32):
        return ()

    def _check(self, params, x):
        if params != () and params is not None:
            raise ValueError(f"{self}: takes no parameters, got {type(params).__name__}")
        check_floating(self, x)
        if jnp.ndim(x) < 1:
            raise ValueError(f"{self}: expected an array of rank 1 or more, got a scalar")


@dataclass(frozen=True)
class ReLU(_Activation):
    """``f(x) = max(0, x)``, ``f'(x) = 1`` for ``x > 0`` and ``0`` for ``x ≤ 0`` (note 000)."""

    def __repr__(self):
        return "ReLU()"

    def apply(self, params, x):
        self._check(params, x)
        return jax.nn.relu(x)  # its derivative at 0 is 0, like ours

    def forward(self, params, x):
        return self.apply(params, x), x

    def backward(self, params, cache, dy):
        """Note 000: ``dE/dX = dE/dY ⊙ f'(X)`` with ``f'(X) = [X > 0]``; note 001: ``dH/dz = 1`` where
        ``H > 0``, else 0. Element-wise, so rows and columns read the same."""
        x = cache
        return (), dy * (x > 0).astype(dy.dtype)


@dataclass(frozen=True)
class Sigmoid(_Activation):
    """``σ(x) = 1 / (1 + e^{−x}) = eˣ / (eˣ + 1)`` (note 003), computed without overflow."""

    def __repr__(self):
        return "Sigmoid()"

    def apply(self, params, x):
        self._check(params, x)
        return jax.nn.sigmoid(x)

    def forward(self, params, x):
        y = self.apply(params, x)
        return y, y

    def backward(self, params, cache, dy):
        """Note 004: ``σ'(Z) = A ⊙ (1 − A)``, so ``dE/dX = dE/dY ⊙ Y ⊙ (1 − Y)`` (element-wise)."""
        y = cache
        return (), dy * y * (1 - y)


@dataclass(frozen=True)
class Tanh(_Activation):
    """``tanh(x)`` (note 003); note 000's XOR and MNIST networks use it."""

    def __repr__(self):
        return "Tanh()"

    def apply(self, params, x):
        self._check(params, x)
        return jnp.tanh(x)

    def forward(self, params, x):
        y = self.apply(params, x)
        return y, y

    def backward(self, params, cache, dy):
        """Note 000's activation rule with ``tanh'(X) = 1 − tanh²(X)``: ``dE/dX = dE/dY ⊙ (1 − Y²)``,
        evaluated as ``(1 − Y)(1 + Y)``, which loses no digits when ``|Y|`` is close to 1."""
        y = cache
        return (), dy * ((1 - y) * (1 + y))


def softmax(x):
    """Softmax over the last axis, shifted by the maximum so that ``e^x`` never overflows.

    ``y_i = e^{x_i − m} / Σ_k e^{x_k − m}`` with ``m = max_k x_k``: the shift cancels in the ratio.
    """
    m = jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True))
    e = jnp.exp(x - m)
    return e / jnp.sum(e, axis=-1, keepdims=True)


def log_softmax(x):
    """``log softmax(x) = x − logsumexp(x)``, with the log-sum-exp shifted by the maximum."""
    m = jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True))
    s = x - m
    return s - jnp.log(jnp.sum(jnp.exp(s), axis=-1, keepdims=True))


def softmax_backward_jacobian(y, dy):
    """Note 000's Jacobian form, literally: ``dE/dX = (M ⊙ (I − Mᵀ)) dE/dY``.

    ``M`` is ``Y`` tiled ``n`` times, an ``n × n`` matrix whose columns are ``Y``, so
    ``(M ⊙ (I − Mᵀ))_ij = y_i (δ_ij − y_j) = ∂y_i/∂x_j``. This Jacobian is symmetric, so the same
    matrix maps row vectors: for rows, ``dX_n = dY_n (M_n ⊙ (I − M_nᵀ))``. Costs O(n²) per example.
    """
    n = y.shape[-1]
    M = jnp.repeat(y[..., :, None], n, axis=-1)  # columns are Y
    I = jnp.eye(n, dtype=y.dtype)
    J = M * (I - jnp.swapaxes(M, -1, -2))
    return jnp.einsum("...ij,...j->...i", J, dy)


def softmax_backward_simple(y, dy):
    """The O(n) form of note 000's Jacobian product.

    ``(dE/dX)_i = Σ_j y_i (δ_ij − y_j) (dE/dY)_j = y_i (dE/dY)_i − y_i Σ_j y_j (dE/dY)_j``, that is::

        dE/dX = Y ⊙ (dE/dY − ⟨Y, dE/dY⟩)

    the Jacobian never formed. Per row for a batch: the inner product runs over the last axis.
    """
    return y * (dy - jnp.sum(y * dy, axis=-1, keepdims=True))


@dataclass(frozen=True)
class Softmax(_Activation):
    """``y_i = e^{x_i} / Σ_k e^{x_k}`` over the last axis (note 000), computed shifted (stable).

    ``jacobian=True`` makes ``backward`` form note 000's ``n × n`` Jacobian; the default uses the
    equivalent O(n) expression. Followed by cross-entropy, ``fnnet.value_and_grad`` skips this
    backward altogether (the fused rule ``dZ = (A − Y)/N`` of note 002).
    """

    jacobian: bool = False

    def __repr__(self):
        return "Softmax(jacobian=True)" if self.jacobian else "Softmax()"

    def apply(self, params, x):
        self._check(params, x)
        return softmax(x)

    def forward(self, params, x):
        y = self.apply(params, x)
        return y, y

    def backward(self, params, cache, dy):
        """Note 000: ``dE/dX = (M ⊙ (I − Mᵀ)) dE/dY``; see ``softmax_backward_jacobian`` and
        ``softmax_backward_simple`` (the default) for the two forms and the derivation."""
        y = cache
        if self.jacobian:
            return (), softmax_backward_jacobian(y, dy)
        return (), softmax_backward_simple(y, dy)


@dataclass(frozen=True)
class Identity(_Activation):
    """``y = x``: a linear output (for MSE regression)."""

    def __repr__(self):
        return "Identity()"

    def apply(self, params, x):
        self._check(params, x)
        return x

    def forward(self, params, x):
        return self.apply(params, x), None

    def backward(self, params, cache, dy):
        """``dE/dX = dE/dY``."""
        return (), dy


ACTIVATIONS = {
    "relu": ReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "softmax": Softmax,
    "linear": Identity,
    "identity": Identity,
}


def activation(name):
    """The activation layer called ``name`` (``relu``, ``sigmoid``, ``tanh``, ``softmax``, ``linear``)."""
    if isinstance(name, _Activation):
        return name
    try:
        return ACTIVATIONS[name]()
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}"
        ) from None
