"""Dropout: inverted dropout, the identity at inference.

Derivation (beyond the notes; cs231n's ``dropout_forward``/``dropout_backward`` derive it the same
way). In training each unit is kept with probability ``1 − p`` (``p = rate``, the probability of
dropping) and the kept ones are scaled by ``1/(1 − p)``, so the expected output equals the input
and inference needs no rescaling::

    M_ij ~ Bernoulli(1 − p),      Y = X ⊙ M / (1 − p)

``Y`` is linear in ``X`` with the fixed mask, so ``∂Y_ij/∂X_ij = M_ij/(1 − p)`` and::

    dX = dY ⊙ M / (1 − p)

At inference (``train=False``) ``Y = X`` and ``dX = dY``.

Element-wise, so any shape works: ``(N, F)``, ``(N, T, F)`` (each unit of each step drawn on its
own), images; the mask has ``X``'s shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from ..checks import real
from .base import Layer
from .checks import check_array, check_dy, check_no_params, is_key


@dataclass(frozen=True, init=False)
class Dropout(Layer):
    """Inverted dropout: in training each unit is dropped with probability ``rate`` and the rest
    scaled by ``1/(1 − rate)``; the identity at inference.

    ``rate`` is the probability of *dropping* a unit (``jax.example_libraries.stax.Dropout``
    takes the probability of keeping one). Training needs a ``key``; the same key draws the same
    mask in ``apply`` and ``forward``, so the hand-derived and the autodiff gradients compare.

    Args:
        rate: in ``[0, 1)``.
    """

    rate: float
    stochastic = True

    def __init__(self, rate):
        object.__setattr__(self, "rate", real("Dropout", "rate", rate, 0, 1, high_open=True))

    def init(self, key, dtype=jnp.float32):
        return ()

    def _scaled_mask(self, x, key):
        """``M / (1 − p)`` with ``M ~ Bernoulli(1 − p)``, in ``x``'s dtype."""
        if key is None:
            raise ValueError(f"{self}: training (train=True) draws a dropout mask and needs "
                             f"key= (a jax.random key); pass train=False for inference")
        if not is_key(key):
            raise TypeError(f"{self}: key must be a jax.random key (jax.random.key(0) or "
                            f"jax.random.PRNGKey(0)), got {type(key).__name__} {key!r:.40}")
        keep = jax.random.bernoulli(key, 1.0 - self.rate, jnp.shape(x))
        return keep.astype(jnp.result_type(x)) / jnp.asarray(1.0 - self.rate, jnp.result_type(x))

    def apply(self, params, x, *, state=(), key=None, train=False):
        check_no_params(self, params)
        check_array(self, x)
        if not train or self.rate == 0:
            return x
        return x * self._scaled_mask(x, key)

    def forward(self, params, x, *, state=(), key=None, train=True):
        check_no_params(self, params)
        check_array(self, x)
        if not train or self.rate == 0:
            return x, None
        mask = self._scaled_mask(x, key)
        return x * mask, mask

    def backward(self, params, cache, dy):
        """``dX = dY ⊙ M / (1 − p)`` (the mask ``forward`` drew, already scaled), or ``dY`` at
        inference."""
        if cache is None:
            return (), dy
        check_dy(self, dy, cache.shape)
        return (), dy * cache
