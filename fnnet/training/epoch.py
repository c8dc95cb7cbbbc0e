"""A training step, and an epoch compiled as one program.

Note 003's recipe (experiments/NOTES.md): a forward pass keeping what the backward needs, the
backward, a gradient-descent update, repeated. ``train_step`` is one such step; an epoch shuffles
the data on the device and ``lax.scan``s the step over the minibatches, so one epoch is one compiled
program with no Python loop per batch and no host transfer inside it.

Minibatches: ``N // batch_size`` per epoch. The last partial batch is dropped; a fresh shuffle every
epoch means a different remainder each time, so every example is used about as often.
``batch_size=None`` is full-batch gradient descent (note 002): one step per epoch over all ``N``
examples, unshuffled.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from .. import losses as _losses
from .. import metrics, parallel
from .. import precision as _precision
from ..gradients import loss_output_and_grad
from .state import TrainState

# A step diverges when its loss is not finite or exceeds DIVERGENCE_FACTOR × max(L₀, 1), where L₀
# is the loss of the run's first step (the untrained network's loss, normally the largest of a
# healthy run). The max with 1 keeps a run that starts near zero loss from tripping on noise.
DIVERGENCE_FACTOR = 1e3


def train_step(model, loss, optimizer, grads="manual", fused=True, *, with_state=False,
               precision=None):
    """A pure ``(params, opt_state, x, y, *, state=(), key=None) -> (params, opt_state, loss)``.

    ``grads="manual"`` uses the hand-derived backward; ``grads="autodiff"`` swaps in ``jax.grad``
    for comparisons. ``key`` draws the step's dropout masks; ``state`` is the model's state
    (``init_state()``), and ``with_state=True`` appends the state after the step to the result.
    ``precision`` is the products' policy (``fnnet.precision``). A float16 policy scales the
    loss: the step then takes ``scale_state=`` (``policy.loss_scale.init()`` at first), skips
    the update when a gradient is not finite, and appends the new scale state to the result.
    Jittable, and vmappable over a leading model axis of params and state.
    """
    policy = _precision.get(precision)
    grad_fn = loss_output_and_grad(model, loss, fused, grads=grads, with_state=True,
                                   precision=policy)
    scaler = policy.loss_scale

    def step(params, opt_state, x, y, *, state=(), key=None, scale_state=None):
        if scaler is not None and scale_state is None:
            raise TypeError(f"train_step: precision={policy.name!r} scales the loss; pass "
                            f"scale_state= (policy.loss_scale.init() at the first step)")
        scale = None if scaler is None else scale_state.scale
        value, _, g, new_state = grad_fn(params, x, y, state=state, key=key, scale=scale)
        new_params, new_opt_state = optimizer.update(g, opt_state, params)
        out = (new_params, new_opt_state, value)
        if scaler is not None:
            finite = all_finite(g)
            out = (*select(finite, (new_params, new_opt_state), (params, opt_state)), value)
            new_state = select(finite, new_state, state)
        out = (*out, new_state) if with_state else out
        return out if scaler is None else (*out, scaler.update(scale_state, finite))

    return step


def all_finite(tree):
    """Whether every entry of every leaf of ``tree`` is finite (a scalar bool)."""
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def select(flag, if_true, if_false):
    """``jnp.where(flag, a, b)`` leaf by leaf over two pytrees of one structure."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(flag, a, b), if_true, if_false)


def float_dtype(params):
    """The params' floating dtype (float32 for a model without parameters)."""
    leaves = jax.tree_util.tree_leaves(params)
    return jnp.result_type(*leaves) if leaves else jnp.float32


def _empty_stats(dtype):
    return {"loss_sum": jnp.zeros((), dtype), "correct": jnp.zeros((), jnp.int32),
            "skipped": jnp.zeros((), jnp.int32),
            "seen": jnp.zeros((), jnp.int32), "bad_step": jnp.array(-1, jnp.int32),
            "last_loss": jnp.array(jnp.nan, dtype), "bad_loss": jnp.array(jnp.nan, dtype),
            "step": jnp.zeros((), jnp.int32)}


def _add_step(stats, ok, stopped, value, y_pred, yb, rows, dtype, skipped):
    """The epoch's running statistics after one step (``ok``: the step's loss was finite;
    ``skipped``: its update was skipped because a loss-scaled gradient overflowed)."""
    return {
        "skipped": stats["skipped"] + skipped.astype(jnp.int32),
        "loss_sum": stats["loss_sum"] + jnp.where(ok, value, 0).astype(dtype),
        "correct": stats["correct"] + jnp.where(ok, metrics.correct(y_pred, yb), 0),
        "seen": stats["seen"] + jnp.where(ok, rows, 0),
        "bad_step": jnp.where(ok | stopped, stats["bad_step"], stats["step"]),
        "bad_loss": jnp.where(ok | stopped, stats["bad_loss"], value.astype(dtype)),
        "last_loss": jnp.where(ok, value.astype(dtype), stats["last_loss"]),
        "step": stats["step"] + 1,
    }


def _step_gradient(model, loss, fused, grads, n, batch_size, chunk_size, shard_batch, policy):
    """``(params, x, y, *, state, key) -> (loss, y_pred, grads, new_state)`` for one step; over
    chunks of a full batch when ``chunk_size`` asks for it (models without state or randomness
    only: batch statistics and dropout masks would differ chunk by chunk)."""
    full_batch = batch_size is None or batch_size >= n
    if not (full_batch and chunk_size is not None and chunk_size < n):
        return loss_output_and_grad(model, loss, fused, grads=grads, with_state=True,
                                    precision=policy)
    if policy.loss_scale is not None:
        raise ValueError(f"chunk_size={chunk_size}: loss scaling (precision={policy.name!r}) is "
                         f"not supported over chunks; use chunk_size=None")
    if getattr(model, "stochastic", False) or jax.tree_util.tree_leaves(model.init_state()):
        raise ValueError(f"chunk_size={chunk_size}: {model!r} keeps state or draws random numbers, "
                         f"so its full-batch gradient cannot be computed in chunks; use "
                         f"chunk_size=None")
    chunked = parallel.chunked(loss_output_and_grad(model, loss, fused, grads=grads,
                                                    precision=policy), n, chunk_size, shard_batch)

    def chunked_step(params, x, y, *, state, key, scale=None):
        return (*chunked(params, x, y), state)

    return chunked_step


def epoch_program(model, loss, optimizer, n, batch_size, grads="manual", fused=True,
                  shard_batch=None, chunk_size=None, keep_last_good=True,
                  divergence_factor=DIVERGENCE_FACTOR, precision=None):
    """One epoch as a pure ``(state, x, y) -> (state, stats)`` over a ``TrainState``.

    The epoch splits ``state.key`` into the next run key, a shuffle key and a step key, shuffles
    ``x, y`` (an ``argsort`` of 32-bit random integers; ties, rare, keep their order) and scans
    the training step over the ``n // batch_size`` minibatches. Step ``t`` draws its random
    numbers (dropout masks) from ``fold_in(step_key, t)``, and its new model state (running
    statistics) comes from ``model.next_state``; a step that is not applied keeps the old one.

    The non-finite guard: the first step whose loss is not finite sets ``state.stopped``; no
    update is applied from then on. With ``keep_last_good`` the params returned are the last ones
    whose loss was finite, at the price of a copy of the params at every step;
    ``keep_last_good=False`` skips the copy and returns the params that produced the non-finite
    loss (``EpochRunner`` then replays the epoch with the copy on).

    Divergence is treated the same way: a step whose loss exceeds ``state.loss_limit`` stops the
    model. A NaN limit is set at the first step to ``divergence_factor × max(L₀, 1)`` from that
    step's loss ``L₀``; ``inf`` turns the bound off.

    ``stats``: ``loss_sum`` (over the steps whose loss was finite), ``correct`` and ``seen``
    (predictions and examples), ``bad_step`` (the step whose loss went non-finite, or −1),
    ``last_loss`` (the last finite loss), ``bad_loss`` (the loss at ``bad_step``) and ``step``
    (steps run).

    ``shard_batch``, if given, is applied to every minibatch (a sharding constraint, for data
    parallelism across devices). Full batch (``batch_size=None``) uses ``x, y`` as they are; with
    ``chunk_size`` rows it computes the gradient chunk by chunk (``fnnet.parallel.chunked``), so
    ``x`` is read from memory once per step instead of twice.

    ``precision`` is the products' policy (``fnnet.precision``). Under a float16 policy the
    state carries a dynamic loss scale: a step whose loss is finite but whose scaled gradients
    overflowed is skipped (counted in ``stats["skipped"]``) and halves the scale; only a loss
    that is not finite, or over the bound, counts as divergence.
    """
    policy = _precision.get(precision)
    grad_fn = _step_gradient(model, loss, fused, grads, n, batch_size, chunk_size, shard_batch,
                             policy)
    full_batch = batch_size is None or batch_size >= n
    rows = n if full_batch else batch_size
    steps = n // rows
    if full_batch and chunk_size is not None and chunk_size < n:
        shard_batch = None  # the chunks are sharded instead

    def epoch(state, x, y):
        key, shuffle_key, steps_key = jax.random.split(state.key, 3)
        order = jnp.arange(n) if full_batch else jnp.argsort(jax.random.bits(shuffle_key, (n,)))
        batches = order[: steps * rows].reshape(steps, rows)
        dtype = float_dtype(state.params)

        def body(carry, idx):
            current, last_good, stats = carry  # last_good: () when not kept
            xb, yb = (x, y) if full_batch else (x[idx], y[idx])
            if shard_batch is not None:
                xb, yb = shard_batch(xb), shard_batch(yb)
            step_key = jax.random.fold_in(steps_key, stats["step"])
            scale = None if policy.loss_scale is None else current.loss_scale.scale
            value, y_pred, g, model_state = grad_fn(current.params, xb, yb,
                                                    state=current.model_state, key=step_key,
                                                    scale=scale)
            start = divergence_factor * jnp.maximum(value.astype(jnp.float32), 1.0)
            limit = jnp.where(jnp.isnan(current.loss_limit), start, current.loss_limit)
            ok = jnp.isfinite(value) & (value <= limit) & ~current.stopped
            finite = jnp.array(True) if scale is None else all_finite(g)
            params, opt_state = optimizer.update(g, current.opt_state, current.params)
            stats = _add_step(stats, ok, current.stopped, value, y_pred, yb, rows, dtype,
                              ok & ~finite)
            last_good = select(ok, current.params, last_good) if keep_last_good else last_good
            updated = current._replace(params=params, opt_state=opt_state, model_state=model_state)
            current = select(ok & finite, updated, current)._replace(
                stopped=current.stopped | ~ok, loss_limit=limit,
                loss_scale=(current.loss_scale if scale is None else select(
                    ok, policy.loss_scale.update(current.loss_scale, finite), current.loss_scale)))
            return (current, last_good, stats), None

        state = state._replace(loss_limit=jnp.asarray(state.loss_limit, jnp.float32))
        carry = (state, state.params if keep_last_good else (), _empty_stats(dtype))
        (state, last_good, stats), _ = jax.lax.scan(body, carry, batches)
        if keep_last_good:
            state = state._replace(params=select(state.stopped, last_good, state.params))
        return state._replace(key=key), stats

    return epoch


def make_epoch(model, loss, optimizer, n, batch_size, grads="manual", fused=True, constrain=None,
               chunk_size=None, keep_last_good=True):
    """``epoch_program`` in positional form, for code that keeps the state's parts apart::

        epoch(params, opt_state, key, stopped, x, y) -> params, opt_state, key, stopped, stats

    ``constrain`` is ``epoch_program``'s ``shard_batch``. Only a non-finite loss stops training
    here (no divergence bound: the form has no place to carry it from one epoch to the next).
    """
    epoch = epoch_program(model, loss, optimizer, n, batch_size, grads, fused, constrain,
                          chunk_size, keep_last_good)

    def positional(params, opt_state, key, stopped, x, y):
        state, stats = epoch(TrainState(params, opt_state, key, stopped), x, y)
        return (*state[:4], stats)

    return positional


def diverged(stats):
    """Whether any model's loss went non-finite in the epoch these ``stats`` describe."""
    return bool(np.any(np.asarray(stats["bad_step"]) >= 0))


class EpochRunner:
    """Compiles an epoch once and runs it; what ``fit`` runs, and what a benchmark should time.

    Two programs are built from ``epoch_program``: the fast one (no per-step copy of the params)
    runs every epoch; if an epoch's loss goes non-finite, the guarded one (``keep_last_good``) is
    compiled (once) and replays that epoch from its inputs, so the params returned are the last
    finite ones. ``compile_seconds`` counts the time spent compiling both.

    Args:
        model, loss, optimizer, n, batch_size, grads, fused, shard_batch, chunk_size: as for
            ``epoch_program``.
        models: ``K`` to run ``K`` stacked models in one vmapped program, ``None`` for one.
        divergence_factor: the bound on the loss relative to the run's first loss.
        precision: the products' policy (``fnnet.precision``).
    """

    def __init__(self, model, loss, optimizer, n, batch_size, *, grads="manual", fused=True,
                 chunk_size=None, shard_batch=None, models=None,
                 divergence_factor=DIVERGENCE_FACTOR, precision=None):
        self._settings = (model, _losses.get(loss), optimizer, n, batch_size, grads, fused,
                          shard_batch, chunk_size)
        self.divergence_factor = divergence_factor
        self.precision = _precision.get(precision)
        self.models = models
        self.compile_seconds = 0.0
        self._compiled = {}

    def program(self, keep_last_good=False):
        """The pure ``(state, x, y) -> (state, stats)`` (vmapped over the models, if several)."""
        epoch = epoch_program(*self._settings, keep_last_good=keep_last_good,
                              divergence_factor=self.divergence_factor, precision=self.precision)
        return jax.vmap(epoch, in_axes=(0, None, None)) if self.models else epoch

    def compile(self, state, x, y, keep_last_good=False):
        """Compile the program for these inputs' shapes (once); return ``self``."""
        if keep_last_good not in self._compiled:
            start = time.perf_counter()
            lowered = jax.jit(self.program(keep_last_good)).lower(state, x, y)
            self._compiled[keep_last_good] = lowered.compile()
            self.compile_seconds += time.perf_counter() - start
        return self

    def __call__(self, state, x, y):
        """One epoch: ``(state, stats)`` with ``stats`` fetched to the host as numpy."""
        self.compile(state, x, y)
        new_state, stats = self._compiled[False](state, x, y)
        stats = jax.device_get(stats)
        if diverged(stats):
            self.compile(state, x, y, keep_last_good=True)
            new_state, stats = self._compiled[True](state, x, y)
            stats = jax.device_get(stats)
        return new_state, stats
