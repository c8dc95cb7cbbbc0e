"""The training step: one pure function, the one ``fit`` runs.

Note 003's recipe (experiments/NOTES.md): a forward pass keeping what the backward needs, the
backward, a gradient-descent update. ``train_step`` builds that step over a ``TrainState``::

    step(state, x, y, key) -> (state, stats)

and the epoch (``fnnet.training.epoch``) is a shuffle plus a ``lax.scan`` of exactly this
function over the minibatches, so what a reader runs by hand is what ``fit`` compiles.

Inside, in order:

1. ``loss, y_pred, dθ, model_state = gradient(params, x, y, state, key)``: the hand-derived
   backward (or ``jax.grad`` for comparisons); with a loss scale, of the scaled loss
   (``fnnet.loss_scale``), unscaled after.
2. The guard: the step is ``ok`` when its loss is finite, at most ``state.loss_limit`` (set at the
   run's first step to ``divergence_factor × max(L₀, 1)``) and the model has not stopped. A step
   that is not ok stops the model: no update from then on.
3. ``θ, opt_state = optimizer.update(dθ, opt_state, θ)``, kept when ok (and, with a loss scale,
   when every gradient is finite: an overflow skips the update and halves the scale).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import loss_scale as _loss_scale
from .. import losses as _losses
from .. import metrics
from ..devices import parallel
from ..gradients import loss_output_and_grad
from .state import TrainState

# A step diverges when its loss is not finite or exceeds DIVERGENCE_FACTOR × max(L₀, 1), where L₀
# is the loss of the run's first step (the untrained network's loss, normally the largest of a
# healthy run). The max with 1 keeps a run that starts near zero loss from tripping on noise.
DIVERGENCE_FACTOR = 1e3

GRADS = ("manual", "autodiff")


def select(flag, if_true, if_false):
    """``jnp.where(flag, a, b)`` leaf by leaf over two pytrees of one structure."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(flag, a, b), if_true, if_false)


def _gradient(model, fused, grads, chunk_size, shard_batch):
    """``loss -> (params, x, y, *, state, key) -> (value, y_pred, grads, new_state)``; over
    chunks of ``chunk_size`` rows of the batch when asked (models without state or randomness
    only: batch statistics and dropout masks would differ chunk by chunk)."""
    if chunk_size is None:
        return lambda loss: loss_output_and_grad(model, loss, fused, grads=grads, with_state=True)
    if model.stochastic or jax.tree_util.tree_leaves(model.init_state()):
        raise ValueError(f"chunk_size={chunk_size}: {model!r} keeps state or draws random numbers, "
                         f"so its full-batch gradient cannot be computed in chunks; use "
                         f"chunk_size=None")

    def over_chunks(loss):
        on_chunk = loss_output_and_grad(model, loss, fused, grads=grads)

        def gradient(params, x, y, *, state, key):
            chunked = parallel.chunked(on_chunk, x.shape[0], chunk_size, shard_batch)
            return (*chunked(params, x, y), state)

        return gradient

    return over_chunks


def train_step(model, loss, optimizer, *, grads="manual", fused=True, loss_scale=None,
               divergence_factor=DIVERGENCE_FACTOR, chunk_size=None, shard_batch=None):
    """The training step, a pure ``step(state, x, y, key) -> (state, stats)``.

    Args:
        model: a layer or network, its products under the policy it was built with
            (``fnnet.precision.with_precision``).
        loss: an ``fnnet.losses.Loss`` or its name.
        optimizer: an ``fnnet.optim.Optimizer``.
        grads: ``"manual"``, the hand-derived backward, or ``"autodiff"`` (``jax.grad``).
        fused: the fused softmax/cross-entropy and sigmoid/BCE rules.
        loss_scale: a ``fnnet.loss_scale.DynamicLossScale`` (``state.loss_scale`` then holds its
            state: ``TrainState.create(..., loss_scale=...)``), or ``None``.
        divergence_factor: the bound on the loss relative to the run's first loss (``inf``: no
            bound).
        chunk_size: compute the gradient of the batch over chunks of this many rows
            (``fnnet.devices.parallel.chunked``), or ``None``.
        shard_batch: a sharding constraint applied to each chunk (data parallelism).

    Returns:
        ``step(state, x, y, key)``: ``state`` a ``TrainState`` (one model; ``jax.vmap`` it for
        stacked models), ``x, y`` one minibatch, ``key`` the step's random key (dropout masks).
        It returns the state after the step and ``stats``, a dict of scalars: ``loss`` (the
        minibatch loss, unscaled), ``correct`` and ``scored`` (correct predictions and predictions
        made, one per row or per token of a sequence; 0 unless ok), ``ok`` (the
        step's loss was finite and within the bound, and the model had not stopped),
        ``skipped`` (ok, but the update was skipped for a loss-scale overflow) and ``stopped``
        (this step stopped the model). Jittable and vmappable.
    """
    loss = _losses.get(loss)
    if grads not in GRADS:
        raise ValueError(f"grads must be one of {GRADS}, got {grads!r}")
    scaler = _loss_scale.get(loss_scale)
    gradient = _gradient(model, fused, grads, chunk_size, shard_batch)

    def step(state, x, y, key):
        if not isinstance(state, TrainState):
            raise TypeError(f"train_step: state must be a TrainState (TrainState.create(model, "
                            f"optimizer, key)), got {type(state).__name__}")
        if scaler is not None and not isinstance(state.loss_scale, _loss_scale.LossScaleState):
            raise TypeError("train_step: loss_scale is set, so the state needs its loss scale's "
                            "state: create it with TrainState.create(..., loss_scale=...)")
        objective = loss if scaler is None else _loss_scale.scaled(loss, state.loss_scale)
        value, y_pred, g, model_state = gradient(objective)(
            state.params, x, y, state=state.model_state, key=key)
        if scaler is not None:
            value, g = _loss_scale.unscale((value, g), state.loss_scale)
        start = divergence_factor * jnp.maximum(value.astype(jnp.float32), 1.0)
        limit = jnp.where(jnp.isnan(state.loss_limit), start, state.loss_limit)
        ok = jnp.isfinite(value) & (value <= limit) & ~state.stopped
        finite = jnp.array(True) if scaler is None else _loss_scale.all_finite(g)
        params, opt_state = optimizer.update(g, state.opt_state, state.params)
        updated = state._replace(params=params, opt_state=opt_state, model_state=model_state)
        new = select(ok & finite, updated, state)._replace(
            stopped=state.stopped | ~ok, loss_limit=limit.astype(jnp.float32))
        if scaler is not None:
            new = new._replace(loss_scale=select(ok, scaler.update(state.loss_scale, finite),
                                                 state.loss_scale))
        predictions = metrics.predicted_classes(y_pred).size  # N, or N·T over a sequence
        stats = {"loss": value, "ok": ok, "skipped": ok & ~finite, "stopped": ~ok & ~state.stopped,
                 "correct": jnp.where(ok, metrics.correct(y_pred, y), 0),
                 "scored": jnp.where(ok, predictions, 0)}
        return new, stats

    return step
