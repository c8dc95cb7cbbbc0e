"""An epoch compiled as one program: a shuffle, then a ``lax.scan`` of the training step.

The step is ``fnnet.training.step.train_step``'s, unchanged: the epoch only chooses the
minibatches and the step keys, keeps the last params whose loss was finite, and adds up the
steps' statistics. One epoch is one compiled program with no Python loop per batch and no host
transfer inside it.

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
from .step import DIVERGENCE_FACTOR, select, train_step
from .stream import draw_windows


def float_dtype(params):
    """The params' floating dtype (float32 for a model without parameters)."""
    leaves = jax.tree_util.tree_leaves(params)
    return jnp.result_type(*leaves) if leaves else jnp.float32


def _empty_totals(dtype):
    return {"loss_sum": jnp.zeros((), dtype), "correct": jnp.zeros((), jnp.int32),
            "skipped": jnp.zeros((), jnp.int32),
            "seen": jnp.zeros((), jnp.int32), "ok_steps": jnp.zeros((), jnp.int32),
            "bad_step": jnp.array(-1, jnp.int32),
            "last_loss": jnp.array(jnp.nan, dtype), "bad_loss": jnp.array(jnp.nan, dtype),
            "step": jnp.zeros((), jnp.int32)}


def _add_step(totals, stats, dtype):
    """The epoch's running totals after one step's ``stats`` (``train_step``'s)."""
    ok, value = stats["ok"], stats["loss"].astype(dtype)
    return {
        "skipped": totals["skipped"] + stats["skipped"].astype(jnp.int32),
        "loss_sum": totals["loss_sum"] + jnp.where(ok, value, 0),
        "correct": totals["correct"] + stats["correct"],
        "seen": totals["seen"] + stats["scored"],
        "ok_steps": totals["ok_steps"] + ok.astype(jnp.int32),
        "bad_step": jnp.where(stats["stopped"], totals["step"], totals["bad_step"]),
        "bad_loss": jnp.where(stats["stopped"], value, totals["bad_loss"]),
        "last_loss": jnp.where(ok, value, totals["last_loss"]),
        "step": totals["step"] + 1,
    }


def epoch_program(model, loss, optimizer, n, batch_size, *, grads="manual", fused=True,
                  shard_batch=None, chunk_size=None, keep_last_good=True,
                  divergence_factor=DIVERGENCE_FACTOR, loss_scale=None, windows=None,
                  with_last_good=False):
    """One epoch as a pure ``(state, x, y) -> (state, stats)`` over a ``TrainState``.

    The epoch splits ``state.key`` into the next run key, a shuffle key and a step key, shuffles
    ``x, y`` (an ``argsort`` of 32-bit random integers; ties, rare, keep their order) and scans
    ``train_step(...)`` over the ``n // batch_size`` minibatches; step ``t`` gets the key
    ``fold_in(step_key, t)``. A step that is not ok (``train_step``) stops the model.

    With ``keep_last_good`` the params returned for a stopped model are the last ones whose loss
    was finite, at the price of a copy of the params at every step; ``keep_last_good=False``
    skips the copy and returns the params that produced the bad loss (``EpochRunner`` then
    replays the epoch with the copy on).

    ``stats``: ``loss_sum`` and ``ok_steps`` (over the ok steps), ``correct`` and ``seen``
    (correct predictions and predictions made: one per row, or per token of a sequence),
    ``skipped`` (updates skipped for a loss-scale overflow), ``bad_step`` (the step that stopped
    the model, or −1), ``last_loss`` (the last ok loss), ``bad_loss`` (the loss at
    ``bad_step``), ``step`` (steps run) and ``steps``: every step's own stats, stacked (what
    ``train_step`` returned at each step).

    The other arguments are ``train_step``'s. Full batch (``batch_size=None``) uses ``x, y`` as
    they are; with ``chunk_size`` rows it computes the gradient chunk by chunk
    (``fnnet.devices.parallel.chunked``), so ``x`` is read from memory once per step instead of twice.
    ``shard_batch``, if given, is applied to every minibatch (or chunk).

    ``with_last_good`` (with ``keep_last_good``): the program returns a third value, the
    params before the update of the epoch's last ok step (``EpochRunner`` reads it from the
    epoch before one whose first step stopped the model).

    ``windows=(block_size, steps)``: ``x`` is a 1-D token stream (``y`` is not read) and the
    epoch is ``steps`` steps, each on ``batch_size`` windows drawn at random inside the program
    (``fnnet.training.stream``) from ``fold_in(shuffle key, t)``; ``n`` is not used.
    """
    full_batch = windows is None and (batch_size is None or batch_size >= n)
    rows = n if full_batch else batch_size
    steps = n // rows if windows is None else windows[1]
    chunk = chunk_size if full_batch and chunk_size is not None and chunk_size < n else None
    step = train_step(model, loss, optimizer, grads=grads, fused=fused, loss_scale=loss_scale,
                      divergence_factor=divergence_factor, chunk_size=chunk,
                      shard_batch=shard_batch if chunk is not None else None)
    shard_batch = None if chunk is not None else shard_batch  # the chunks are sharded instead

    def epoch(state, x, y):
        key, shuffle_key, steps_key = jax.random.split(state.key, 3)
        if windows is not None:
            batches = jnp.arange(steps)
        else:
            order = (jnp.arange(n) if full_batch
                     else jnp.argsort(jax.random.bits(shuffle_key, (n,))))
            batches = order[: steps * rows].reshape(steps, rows)
        dtype = float_dtype(state.params)

        def batch(idx):
            if windows is not None:
                return draw_windows(x, jax.random.fold_in(shuffle_key, idx), rows, windows[0])
            return (x, y) if full_batch else (x[idx], y[idx])

        def body(carry, idx):
            current, last_good, totals = carry  # last_good: () when not kept
            xb, yb = batch(idx)
            if shard_batch is not None:
                xb, yb = shard_batch(xb), shard_batch(yb)
            new, stats = step(current, xb, yb, jax.random.fold_in(steps_key, totals["step"]))
            if keep_last_good:
                last_good = select(stats["ok"], current.params, last_good)
            return (new, last_good, _add_step(totals, stats, dtype)), stats

        state = state._replace(loss_limit=jnp.asarray(state.loss_limit, jnp.float32))
        carry = (state, state.params if keep_last_good else (), _empty_totals(dtype))
        (state, last_good, totals), per_step = jax.lax.scan(body, carry, batches)
        if keep_last_good:
            state = state._replace(params=select(state.stopped, last_good, state.params))
        if with_last_good:
            return state._replace(key=key), {**totals, "steps": per_step}, last_good
        return state._replace(key=key), {**totals, "steps": per_step}

    return epoch


def diverged(stats):
    """Whether any model's loss went non-finite in the epoch these ``stats`` describe."""
    return bool(np.any(np.asarray(stats["bad_step"]) >= 0))


class EpochRunner:
    """Compiles an epoch once and runs it; what ``fit`` runs, and what a benchmark should time.

    Two programs are built from ``epoch_program``: the fast one (no per-step copy of the params)
    runs every epoch; if an epoch's loss goes non-finite, the guarded one (``keep_last_good``) is
    compiled (once) and replays that epoch from its inputs, so the params returned are the last
    finite ones. ``compile_seconds`` counts the time spent compiling them.

    When the first step of an epoch stops a model, the last params whose loss was finite are
    those before the previous epoch's last update (the epoch's own starting params produced the
    bad loss): the runner keeps the previous epoch's inputs (references, no copy; the state it
    started from stays alive one epoch longer) and replays that epoch with ``with_last_good``
    to recover them. A runner's first epoch has no previous one (a resumed run's neither): its
    starting params are returned.

    Args:
        model, loss, optimizer, n, batch_size: as for ``epoch_program``.
        models: ``K`` to run ``K`` stacked models in one vmapped program, ``None`` for one.
        **options: ``epoch_program``'s keyword arguments (``grads``, ``fused``, ``chunk_size``,
            ``shard_batch``, ``divergence_factor``, ``loss_scale``).
    """

    def __init__(self, model, loss, optimizer, n, batch_size, *, models=None, **options):
        self._settings = (model, _losses.get(loss), optimizer, n, batch_size)
        self._options = options
        self.models = models
        self.compile_seconds = 0.0
        self._compiled = {}
        self._previous = None  # the last epoch's (state, x, y)

    def program(self, keep_last_good=False, with_last_good=False):
        """The pure ``(state, x, y) -> (state, stats)`` (vmapped over the models, if several;
        with ``with_last_good`` also the last good params, ``epoch_program``)."""
        epoch = epoch_program(*self._settings, keep_last_good=keep_last_good or with_last_good,
                              with_last_good=with_last_good, **self._options)
        return jax.vmap(epoch, in_axes=(0, None, None)) if self.models else epoch

    def compile(self, state, x, y, keep_last_good=False, with_last_good=False):
        """Compile the program for these inputs' shapes (once); return ``self``."""
        variant = (keep_last_good, with_last_good)
        if variant not in self._compiled:
            start = time.perf_counter()
            lowered = jax.jit(self.program(*variant)).lower(state, x, y)
            self._compiled[variant] = lowered.compile()
            self.compile_seconds += time.perf_counter() - start
        return self

    def __call__(self, state, x, y):
        """One epoch: ``(state, stats)`` with ``stats`` fetched to the host as numpy."""
        self.compile(state, x, y)
        new_state, stats = self._compiled[False, False](state, x, y)
        stats = jax.device_get(stats)
        if diverged(stats):
            self.compile(state, x, y, keep_last_good=True)
            new_state, stats = self._compiled[True, False](state, x, y)
            stats = jax.device_get(stats)
            new_state = self._stopped_at_first_step(new_state, stats)
        self._previous = (state, x, y)
        return new_state, stats

    def _stopped_at_first_step(self, state, stats):
        """``state`` with the params before the previous epoch's last ok update for each model
        stopped by this epoch's first step (the class docstring)."""
        first = np.asarray(stats["bad_step"]) == 0
        if self._previous is None or not first.any():
            return state
        self.compile(*self._previous, with_last_good=True)
        _, _, last_good = self._compiled[False, True](*self._previous)
        flag = jnp.asarray(first)

        def pick(good, current):
            return jnp.where(flag.reshape(flag.shape + (1,) * (current.ndim - flag.ndim)), good,
                             current)

        return state._replace(params=jax.tree_util.tree_map(pick, last_good, state.params))
