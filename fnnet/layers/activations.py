"""Activations: the layers without parameters, ``Y = f(X)``; notes in experiments/NOTES.md.

``Activation`` writes the plumbing once (empty params, input checks, ``apply``, ``forward``,
``repr``). The element-wise ones are each nothing but their ``f`` and ``f'`` (``Elementwise``),
under note 000's one rule ``dE/dX = dE/dY ⊙ f'(X)``. Softmax mixes its outputs, so it keeps its own
backward, in note 000's Jacobian form and in the equivalent O(n) form.

Any number of leading axes: the element-wise ones act on every entry, whatever the shape; softmax
normalises over the last axis at every leading position (each step of an ``(N, T, V)`` sequence
output is its own distribution over ``V``), and its backward contracts the last axis only.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, fields
from typing import ClassVar

import jax
import jax.numpy as jnp

from .base import Layer
from .checks import check_array, check_dy, check_no_params, lookup


@dataclass(frozen=True, repr=False)
class Activation(Layer):
    """A layer without parameters, ``y = f(x)``.

    A subclass gives ``f``, ``backward`` and what ``forward`` keeps for ``backward`` in ``cache``:
    ``"x"`` (the input), ``"y"`` (the output, the default) or ``None`` (nothing). Every subclass
    is made a frozen dataclass too: immutable, hashable, equal when its class and fields are.
    """

    cache: ClassVar[str | None] = "y"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        dataclass(frozen=True, repr=False)(cls)

    @staticmethod
    @abc.abstractmethod
    def f(x):
        """The activation, ``Y = f(X)`` (every concrete activation gives it)."""

    def init(self, key, dtype=jnp.float32):
        return ()

    def apply(self, params, x, *, state=(), key=None, train=False):
        check_no_params(self, params)
        check_array(self, x)
        return self.f(x)

    def forward(self, params, x, *, state=(), key=None, train=True):
        y = self.apply(params, x)
        return y, {"x": x, "y": y}.get(self.cache)

    def __repr__(self):
        changed = [f"{field.name}={getattr(self, field.name)!r}" for field in fields(self)
                   if getattr(self, field.name) != field.default]
        return f"{type(self).__name__}({', '.join(changed)})"


class Elementwise(Activation):
    """``Y = f(X)`` element by element, given as ``f`` and its derivative ``df``.

    ``df`` takes what ``forward`` cached (the input or the output, as ``cache`` says) and returns
    ``f'(X)``; ``backward`` is then note 000's ``dE/dX = dE/dY ⊙ f'(X)``.
    """

    @staticmethod
    @abc.abstractmethod
    def df(cached):
        """``f'(X)`` from what ``forward`` cached (every element-wise activation gives it)."""

    def backward(self, params, cache, dy):
        """Note 000 (experiments/NOTES.md): ``dE/dX = dE/dY ⊙ f'(X)``. Element-wise, so rows and
        columns read the same."""
        if cache is not None:
            check_dy(self, dy, jnp.shape(cache))
        return (), dy * self.df(cache)


class ReLU(Elementwise):
    """``f(x) = max(0, x)``; ``f'(x) = [x > 0]``, 1 for ``x > 0`` and 0 for ``x ≤ 0``, from the
    cached input: note 000 (experiments/NOTES.md); note 001: ``dH/dz = 1`` where ``H > 0``, else 0.
    ``jax.nn.relu``'s derivative at 0 is 0 as well."""

    cache = "x"
    f = staticmethod(jax.nn.relu)

    @staticmethod
    def df(x):
        return x > 0  # a boolean mask: dy times it keeps dy's dtype


class Sigmoid(Elementwise):
    """``σ(x) = 1 / (1 + e^{−x}) = eˣ / (eˣ + 1)``, note 003 (experiments/NOTES.md), computed
    without overflow; ``σ'(x) = y (1 − y)`` from the cached output ``y``, note 004
    (experiments/NOTES.md): ``σ'(Z) = A ⊙ (1 − A)``."""

    f = staticmethod(jax.nn.sigmoid)

    @staticmethod
    def df(y):
        return y * (1 - y)


class Tanh(Elementwise):
    """``tanh(x)``, note 003 (experiments/NOTES.md); note 000's XOR and MNIST networks use it.
    ``tanh'(x) = 1 − y²`` from the cached output ``y``, evaluated as ``(1 − y)(1 + y)``, which
    loses no digits when ``|y|`` is close to 1."""

    f = staticmethod(jnp.tanh)

    @staticmethod
    def df(y):
        return (1 - y) * (1 + y)


class Identity(Elementwise):
    """``f(x) = x``, ``f'(x) = 1``: a linear output (for MSE regression). Nothing is cached."""

    cache = None

    @staticmethod
    def f(x):
        return x

    @staticmethod
    def df(cached):
        return 1


GELU_FORMS = ("tanh", "none")
SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


class GELU(Elementwise):
    """The Gaussian error linear unit (Hendrycks & Gimpel 2016), ``f(x) = x Φ(x)`` with ``Φ`` the
    standard normal's distribution function, the activation of GPT's MLP.

    ``approximate="tanh"`` (the default, GPT-2's and llm.c's) replaces ``Φ`` by
    ``½(1 + tanh u)`` with ``u = √(2/π)(x + 0.044715 x³)``::

        f(x)  = ½ x (1 + tanh u)
        f'(x) = ½ (1 + tanh u) + ½ x (1 − tanh² u) √(2/π) (1 + 3·0.044715 x²)

    (the product rule, then ``tanh' = 1 − tanh²`` and ``du/dx``). ``approximate="none"`` is the
    exact form, with ``φ`` the standard normal's density::

        f(x)  = x Φ(x) = ½ x (1 + erf(x/√2))
        f'(x) = Φ(x) + x φ(x),      φ(x) = e^{−x²/2}/√(2π)

    Both cache the input. Note 000's rule ``dE/dX = dE/dY ⊙ f'(X)`` does the rest.

    Args:
        approximate: ``"tanh"`` or ``"none"``, as ``jax.nn.gelu(approximate=True/False)`` and
            PyTorch's ``nn.GELU(approximate=...)``.
    """

    approximate: str = "tanh"
    cache = "x"

    def __post_init__(self):
        lookup(dict.fromkeys(GELU_FORMS), self.approximate, "approximate", where="GELU")

    def f(self, x):
        if self.approximate == "tanh":
            return 0.5 * x * (1 + jnp.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))
        return 0.5 * x * (1 + jax.scipy.special.erf(x / math.sqrt(2)))

    def df(self, x):
        if self.approximate == "tanh":
            t = jnp.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))
            return 0.5 * (1 + t) + 0.5 * x * (1 - t) * (1 + t) * SQRT_2_OVER_PI * (
                1 + 3 * 0.044715 * x ** 2)
        cdf = 0.5 * (1 + jax.scipy.special.erf(x / math.sqrt(2)))
        return cdf + x * jnp.exp(-0.5 * x ** 2) / math.sqrt(2 * math.pi)


def softmax(x):
    """Softmax over the last axis, shifted by the maximum so that ``e^x`` never overflows.

    ``y_i = e^{x_i − m} / Σ_k e^{x_k − m}`` with ``m = max_k x_k``: the shift cancels in the ratio.
    """
    shift = jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True))
    exps = jnp.exp(x - shift)
    return exps / jnp.sum(exps, axis=-1, keepdims=True)


def log_softmax(x):
    """``log softmax(x) = x − logsumexp(x)``, with the log-sum-exp shifted by the maximum."""
    shifted = x - jax.lax.stop_gradient(jnp.max(x, axis=-1, keepdims=True))
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))


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

    the Jacobian never formed. Per row for a batch: the inner product runs over the last axis,
    at every leading position (``(N, T, V)`` included).
    """
    return y * (dy - jnp.sum(y * dy, axis=-1, keepdims=True))


class Softmax(Activation):
    """``y_i = e^{x_i} / Σ_k e^{x_k}`` over the last axis, note 000 (experiments/NOTES.md),
    computed shifted (stable).

    Args:
        jacobian: ``True`` makes ``backward`` form note 000's ``n × n`` Jacobian
            (``softmax_backward_jacobian``); the default uses the equivalent O(n) expression
            (``softmax_backward_simple``).

    Followed by cross-entropy, ``fnnet.value_and_grad`` skips this backward altogether (the fused
    rule ``dZ = (A − Y)/N`` of note 002, ``(A − Y)/(N·T)`` for an ``(N, T, V)`` output).
    """

    jacobian: bool = False
    f = staticmethod(softmax)

    def backward(self, params, cache, dy):
        """Note 000: ``dE/dX = (M ⊙ (I − Mᵀ)) dE/dY``, in the form ``jacobian`` chooses."""
        check_dy(self, dy, jnp.shape(cache))
        form = softmax_backward_jacobian if self.jacobian else softmax_backward_simple
        return (), form(cache, dy)


ACTIVATIONS = {
    "relu": ReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "softmax": Softmax,
    "linear": Identity,
    "identity": Identity,
    "gelu": GELU,
}


def get(name):
    """The activation layer called ``name`` (``relu``, ``sigmoid``, ``tanh``, ``softmax``,
    ``linear``/``identity``); an ``Activation`` is returned as it is."""
    if isinstance(name, Activation):
        return name
    return lookup(ACTIVATIONS, name, "activation")()
