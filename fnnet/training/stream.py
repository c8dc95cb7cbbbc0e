"""Training on a token stream: ``TokenWindows``, random windows drawn inside the compiled
program.

A language model trains on windows of a long stream of token ids (a text's characters): each
step draws ``batch_size`` start positions ``s`` uniformly from ``0 … len − T − 1`` and reads the
``T + 1`` tokens from ``s``; the first ``T`` are the input and the ``T`` one step later the
targets (nanoGPT's ``get_batch``). The stream lives on the device once, and the windows are
gathered inside the step, so a run of many steps needs no host transfer at all.

``fit(model, loss, optimizer, TokenWindows(ids, block_size=64, steps=250), epochs=8, ...)``
trains 8 × 250 = 2,000 steps: an "epoch" of a stream is ``steps`` steps, after which ``fit``
scores the validation windows, calls the callbacks and saves its checkpoint, as after every
epoch of a data set. A run is thus a number of steps, validated every ``steps`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ..checks import integer


@dataclass(frozen=True, eq=False)
class TokenWindows:
    """A token stream to train on by random windows (this module's docstring).

    Args:
        tokens: the stream, a 1-D integer array of at least ``block_size + 1`` ids.
        block_size: ``T``, the tokens per window (the model's input length).
        steps: the steps of one ``fit`` epoch (the validation interval).
    """

    tokens: np.ndarray
    block_size: int
    steps: int

    def __post_init__(self):
        object.__setattr__(self, "block_size", integer("TokenWindows", "block_size",
                                                       self.block_size))
        object.__setattr__(self, "steps", integer("TokenWindows", "steps", self.steps))
        tokens = self.tokens if isinstance(self.tokens, jax.Array) else np.asarray(self.tokens)
        if tokens.ndim != 1 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"TokenWindows: tokens must be a 1-D array of integer ids, got "
                             f"shape {tuple(tokens.shape)} of {tokens.dtype}")
        if len(tokens) < self.block_size + 1:
            raise ValueError(f"TokenWindows: a stream of {len(tokens)} tokens holds no window of "
                             f"block_size + 1 = {self.block_size + 1}")
        object.__setattr__(self, "tokens", tokens)

    def __repr__(self):
        return (f"TokenWindows({len(self.tokens):,} tokens, block_size={self.block_size}, "
                f"steps={self.steps})")


def draw_windows(tokens, key, batch_size, block_size):
    """``(x, y)``, both ``(batch_size, block_size)``: windows of ``tokens`` at random starts
    drawn from ``key``, ``y`` the tokens one step after ``x``'s. Pure, for inside a program."""
    starts = jax.random.randint(key, (batch_size,), 0, tokens.shape[0] - block_size)
    window = tokens[starts[:, None] + jnp.arange(block_size + 1)]
    return window[:, :-1], window[:, 1:]
