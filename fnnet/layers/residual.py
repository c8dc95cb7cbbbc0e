"""``Residual``: a layer with a skip connection around it, ``Y = X + f(X)`` (He et al. 2016;
beyond the notes, experiments/NOTES.md "Beyond the notes").

The forward was ``Y = X + f(X)``: ``X`` reaches ``Y`` twice, directly (derivative the identity)
and through ``f``, so the chain rule adds the two paths::

    dX = dY + f.backward(dY)          dparams = f's own, from the same dY

The identity path passes ``dY`` back unchanged however deep the network: what lets a deep
transformer train (``TransformerBlock``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp

from .base import Layer


@dataclass(frozen=True)
class Residual(Layer):
    """``Y = X + f(X)`` around ``layer`` (``f``), which must keep the input's shape. Params,
    state, randomness and precision are ``layer``'s.

    Args:
        layer: the layer (or ``Sequential``) ``f``.
    """

    layer: Layer

    def __post_init__(self):
        if not isinstance(self.layer, Layer):
            raise TypeError(f"Residual: layer must be a fnnet layer, got {self.layer!r}")

    @property
    def stochastic(self):
        return self.layer.stochastic

    def with_precision(self, policy):
        return Residual(self.layer.with_precision(policy))

    def init(self, key, dtype=jnp.float32):
        return self.layer.init(key, dtype)

    def init_state(self, dtype=jnp.float32):
        return self.layer.init_state(dtype)

    def next_state(self, state, cache):
        return self.layer.next_state(state, cache)

    def _check(self, x, fx):
        if jnp.shape(fx) != jnp.shape(x):
            raise ValueError(f"{self}: the layer must keep its input's shape for X + f(X); "
                             f"got {tuple(jnp.shape(x))} in and {tuple(jnp.shape(fx))} out")

    def apply(self, params, x, *, state=(), key=None, train=False):
        fx = self.layer.apply(params, x, state=state, key=key, train=train)
        self._check(x, fx)
        return x + fx

    def forward(self, params, x, *, state=(), key=None, train=True):
        fx, cache = self.layer.forward(params, x, state=state, key=key, train=train)
        self._check(x, fx)
        return x + fx, cache

    def backward(self, params, cache, dy):
        """``dX = dY + f.backward(dY)``: the identity path and ``f``'s."""
        grads, dfx = self.layer.backward(params, cache, dy)
        return grads, dy + dfx
