"""What every layer shares: the state and randomness half of the protocol.

A layer's full protocol::

    init(key, dtype)                                   -> params
    init_state(dtype)                                  -> state       () for most layers
    apply(params, x, *, state=(), key=None, train=False) -> y          the autodiff reference
    forward(params, x, *, state=(), key=None, train=True) -> (y, cache)
    backward(params, cache, dy)                        -> (dparams, dx)
    next_state(state, cache)                           -> state       after a training forward

Most layers keep no state and draw no random numbers: ``Stateless`` gives them ``init_state``
(``()``) and ``next_state`` (the state unchanged), and they accept and ignore ``state``, ``key``
and ``train``. ``Dropout`` needs a ``key`` in training; ``BatchNorm`` keeps running statistics as
its state, which ``next_state`` updates from what ``forward`` cached. The state never changes
inside ``apply``, ``forward`` or ``backward``: a training step computes the new state explicitly,
``new_state = model.next_state(state, cache)``, so everything stays pure.
"""

from __future__ import annotations

import jax.numpy as jnp


class Stateless:
    """The state half of the protocol for a layer that keeps none."""

    stochastic = False  # True for a layer that draws random numbers in training (needs key=)

    def init_state(self, dtype=jnp.float32):
        """``()``: nothing to keep between steps."""
        return ()

    def next_state(self, state, cache):
        """The state after a training forward: unchanged."""
        return state
