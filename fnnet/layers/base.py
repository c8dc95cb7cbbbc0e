"""What every layer shares: the ``Layer`` base type, which states the protocol.

A layer's full protocol::

    init(key, dtype)                                   -> params
    init_state(dtype)                                  -> state       () for most layers
    apply(params, x, *, state=(), key=None, train=False) -> y          the autodiff reference
    forward(params, x, *, state=(), key=None, train=True) -> (y, cache)
    backward(params, cache, dy)                        -> (dparams, dx)
    next_state(state, cache)                           -> state       after a training forward
    with_precision(policy)                             -> layer       its products under ``policy``
    stochastic                                         -> bool        draws random numbers in training
    takes_ids                                          -> bool        reads integer ids, not floats

Every layer (and ``fnnet.networks.Sequential``) subclasses ``Layer``: ``init``, ``apply``,
``forward`` and ``backward`` are abstract; ``Layer`` gives the rest a default for a layer that
keeps no state, draws no random numbers and has no matrix products: ``init_state`` is ``()``,
``next_state`` returns the state unchanged, ``with_precision`` returns the layer itself, and
``stochastic`` and ``takes_ids`` are ``False``. Such layers accept and ignore ``state``, ``key``
and ``train``.
``Embedding`` reads integer ids (``takes_ids = True``: ``fit`` keeps such inputs integer);
``Dropout`` needs a ``key`` in training (``stochastic = True``); ``BatchNorm`` keeps running
statistics as its state, which ``next_state`` updates from what ``forward`` cached; ``Dense`` and
``Conv2D`` carry a precision policy (``fnnet.precision``) that ``with_precision`` replaces. The state
never changes inside ``apply``, ``forward`` or ``backward``: a training step computes the new state
explicitly, ``new_state = model.next_state(state, cache)``, so everything stays pure.

Layers are frozen dataclasses: immutable, hashable, equal when their class and fields are (so a
layer can be a static argument under ``jit``).

``InputShape`` is a cache entry for the layers whose backward needs only the input's shape.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import jax
import jax.numpy as jnp


class Layer(abc.ABC):
    """A layer: the protocol of this module's docstring. Subclasses give ``init``, ``apply``,
    ``forward`` and ``backward``; the defaults here suit a layer without state, randomness or
    products."""

    stochastic = False  # True for a layer that draws random numbers in training (needs key=)
    takes_ids = False  # True for a layer whose input is integer ids (an embedding)

    @abc.abstractmethod
    def init(self, key, dtype=jnp.float32):
        """The parameters, drawn from ``key`` (``()`` for a layer without any)."""

    @abc.abstractmethod
    def apply(self, params, x, *, state=(), key=None, train=False):
        """``y``, in plain ``jnp``: the reference ``jax.grad`` differentiates."""

    @abc.abstractmethod
    def forward(self, params, x, *, state=(), key=None, train=True):
        """``(y, cache)``: the output and what ``backward`` needs."""

    @abc.abstractmethod
    def backward(self, params, cache, dy):
        """``(dparams, dx)`` from ``dy = dE/dY`` and the forward's cache."""

    def init_state(self, dtype=jnp.float32):
        """``()``: nothing to keep between steps."""
        return ()

    def next_state(self, state, cache):
        """The state after a training forward: unchanged."""
        return state

    def with_precision(self, policy):
        """This layer with its products under ``policy``: itself, for a layer without products."""
        return self


@jax.tree_util.register_static
@dataclass(frozen=True)
class InputShape:
    """An input's shape kept in a cache: static (no leaves) under ``jit``, ``vmap`` and ``scan``."""

    shape: tuple
