"""Text from a language model: one compiled loop, one character (or token) at a time.

Two kinds of model. A recurrent one (``context=None``) is built with ``stateful=1``
(``fnnet.language_model(..., stateful=1)``): its layers carry their final hidden state from one
call to the next through the model state (``init_state``/``next_state``), so the prompt is fed
once and then one id per step. A model that reads a window (``context=T``, a GPT,
``fnnet.gpt``) keeps the last ``T`` ids in a buffer of fixed length: at each step it reads the
whole buffer (its causal attention makes the output at position ``k`` depend on the first
``k + 1`` ids only, so the unfilled tail of a short buffer changes nothing), takes the output at
the last filled position, and appends the new id, dropping the oldest once the buffer is full.
Either way the next id is drawn from the model's output ``p``, sharpened or flattened by the
temperature ``τ``::

    id_{t+1} ~ Categorical(softmax(log p_t / τ))        τ → 0: the most likely id; τ = 1: p itself

and feeds it back. The whole generation is one ``lax.scan`` inside one compiled program: no
recompilation per character and no host round trip until the ids come back; the temperature is
an argument of that program, so another temperature does not compile it again.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

__all__ = ["sample"]


def _last_step(model, params, state, ids):
    """The output at the last position for ``ids`` ``(1, T)``, and the state after them."""
    y, cache = model.forward(params, ids, state=state, train=False)
    return y[0, -1], model.next_state(state, cache)


@partial(jax.jit, static_argnums=(0, 3))
def _generate(model, params, prompt, length, temperature, key):
    p, state = _last_step(model, params, model.init_state(), prompt[None, :])

    def step(carry, step_key):
        p, state = carry
        next_id = _draw(p, temperature, step_key, prompt.dtype)
        return _last_step(model, params, state, next_id[None, None]), next_id

    _, ids = jax.lax.scan(step, (p, state), jax.random.split(key, length))
    return ids


def _draw(p, temperature, key, dtype):
    logits = jnp.log(jnp.maximum(p, jnp.finfo(p.dtype).tiny)) / temperature
    return jax.random.categorical(key, logits).astype(dtype)


@partial(jax.jit, static_argnums=(0, 3, 5))
def _generate_windowed(model, params, prompt, length, temperature, context, key):
    filled = min(prompt.shape[0], context)
    buffer = jnp.zeros((context,), prompt.dtype).at[:filled].set(prompt[-filled:])

    def step(carry, step_key):
        buffer, filled = carry
        p = model.apply(params, buffer[None, :])[0, filled - 1]
        next_id = _draw(p, temperature, step_key, buffer.dtype)
        full = filled == context
        buffer = jnp.where(full, jnp.roll(buffer, -1), buffer)
        buffer = buffer.at[jnp.where(full, context - 1, filled)].set(next_id)
        return (buffer, jnp.minimum(filled + 1, context)), next_id

    _, ids = jax.lax.scan(step, (buffer, jnp.asarray(filled)), jax.random.split(key, length))
    return ids


def sample(model, params, prompt, length, *, key, temperature=1.0, context=None):
    """``length`` ids drawn from ``model`` after ``prompt``.

    Args:
        model: a language model over ids, its output probabilities ``(1, T, vocab)``: with
            ``context=None`` one whose recurrent layers carry one sequence's state
            (``fnnet.language_model(vocab, ..., stateful=1)``); with ``context=T`` one that
            reads windows of up to ``T`` ids (``fnnet.gpt(vocab, T, ...)``).
        params: its parameters.
        prompt: the ids to start from, a 1-D integer array of at least one id.
        length: how many ids to draw (> 0).
        key: a ``jax.random`` key: the same key draws the same ids.
        temperature: ``τ > 0``.
        context: ``None`` (recurrent), or the window length ``T`` of a windowed model (the
            prompt's last ``T`` ids are its first window).

    Returns:
        The ``length`` ids drawn, an int32 array (the prompt not included).

    Raises:
        ValueError: an empty prompt, ``length < 1`` or ``temperature <= 0``.
    """
    prompt = jnp.asarray(prompt, jnp.int32)
    if prompt.ndim != 1 or prompt.size == 0:
        raise ValueError(f"sample: prompt must be a 1-D array of at least one id, got shape "
                         f"{prompt.shape}")
    if int(length) < 1:
        raise ValueError(f"sample: length must be at least 1, got {length}")
    if not float(temperature) > 0:
        raise ValueError(f"sample: temperature must be > 0, got {temperature}")
    if context is not None:
        return _generate_windowed(model, params, prompt, int(length), float(temperature),
                                  int(context), key)
    return _generate(model, params, prompt, int(length), float(temperature), key)
