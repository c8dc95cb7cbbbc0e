"""What ``fit`` does after each epoch: the record of the epoch, the history, and small callbacks.

An ``EpochRecord`` describes one finished epoch; ``fit`` appends it to ``history`` (a dict of
per-epoch lists) and then calls each callback as ``callback(record, state, history)``.
``print_progress``, ``save_checkpoint`` and ``warn_diverged`` are the ones ``fit`` builds from its
``progress`` and ``checkpoint`` arguments; pass your own in ``fit(..., callbacks=[...])``.

In a program of several processes (``fnnet.devices.distributed``), ``print_progress`` prints and
``save_checkpoint`` writes in process 0 only (``jax.process_index() == 0``): every process holds
the same replicated state, so one line per epoch and one checkpoint file are written, once.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass, field

import jax
import numpy as np

from .. import checkpoints

# The per-epoch entries of ``history``, in order.
HISTORY_KEYS = ("epoch", "loss", "train_accuracy", "val_loss", "val_accuracy",
                "examples_per_second", "seconds")


@dataclass
class EpochRecord:
    """One finished epoch. For ``K`` models each score is a list of ``K`` values, and a model
    that had stopped before the epoch reads NaN.

    Attributes:
        epoch: the epoch's number, from 1.
        loss: mean training loss over the epoch's minibatches.
        train_accuracy: accuracy over the epoch's minibatches, as trained (over every token of
            a sequence model's outputs).
        val_loss, val_accuracy: on the validation data at the epoch's end, or ``None``.
        examples_per_second: training examples processed per second (all models together).
        seconds: wall time of the epoch, compilation excluded.
        diverged: the models whose loss went non-finite in this epoch (``[0]`` for one model),
            with ``bad_step`` and ``last_loss`` per model in ``stats``.
        stats: the epoch program's raw statistics (numpy).
    """

    epoch: int
    loss: object
    train_accuracy: object
    examples_per_second: float
    seconds: float
    val_loss: object = None
    val_accuracy: object = None
    diverged: list = field(default_factory=list)
    stats: dict = field(default_factory=dict, repr=False)


def _to_list(value):
    return np.asarray(value).tolist()


def epoch_record(epoch, stats, seconds, examples):
    """The ``EpochRecord`` of an epoch from its program's ``stats``.

    Args:
        epoch: its number.
        stats: the epoch program's statistics, on the host.
        seconds: its wall time.
        examples: training examples it processed, all models together.
    """
    seen = np.asarray(stats["seen"])
    with np.errstate(invalid="ignore", divide="ignore"):  # a stopped model saw nothing: NaN
        loss = np.where(seen > 0, stats["loss_sum"] / np.maximum(stats["ok_steps"], 1), np.nan)
        accuracy = np.where(seen > 0, stats["correct"] / seen, np.nan)
    diverged = np.flatnonzero(np.atleast_1d(np.asarray(stats["bad_step"]) >= 0)).tolist()
    return EpochRecord(epoch, _to_list(loss), _to_list(accuracy), examples / seconds, seconds,
                       diverged=diverged, stats=stats)


def new_history():
    """An empty history: one empty list per entry of ``HISTORY_KEYS``."""
    return {name: [] for name in HISTORY_KEYS}


def append(history, record):
    """Add ``record`` to ``history`` (and its divergence, if any, to ``history["diverged"]``)."""
    for name in HISTORY_KEYS:
        history[name].append(getattr(record, name))
    if record.diverged:
        history.setdefault("diverged", []).append({"epoch": record.epoch,
                                                   "models": list(record.diverged)})


def saved_history(history):
    """The per-epoch lists of ``history`` (``HISTORY_KEYS``)."""
    return {name: history[name] for name in HISTORY_KEYS}


# The entries of ``history`` that not every run has, kept with the checkpoint when present: the
# divergence events and, under a loss scale, the scale and the skipped steps per epoch.
OPTIONAL_HISTORY_KEYS = ("diverged", "loss_scale", "skipped_steps")


def checkpoint_history(history):
    """The part of ``history`` a checkpoint keeps: the per-epoch lists (``saved_history``), and
    the divergence events, loss scales and skipped steps when there are any
    (``OPTIONAL_HISTORY_KEYS``), so that a resumed run goes on from the whole record (a
    diverged run stays diverged)."""
    kept = saved_history(history)
    kept.update({name: history[name] for name in OPTIONAL_HISTORY_KEYS if name in history})
    return kept


def _mean(value):
    """The mean over the models still training (a stopped one's entry is NaN)."""
    values = np.asarray(value, dtype=float)
    if values.ndim == 0 or np.isnan(values).all():
        return float(np.mean(values))
    return float(np.mean(values[~np.isnan(values)]))


def format_record(record, epochs, models=None):
    """One progress line: ``epoch 3/10  loss 0.1234  train acc 96.50%  ...``."""
    line = f"epoch {record.epoch:>{len(str(epochs))}}/{epochs}  loss {_mean(record.loss):.4f}"
    line += f"  train acc {_mean(record.train_accuracy):6.2%}"
    if record.val_accuracy is not None:
        line += f"  val acc {_mean(record.val_accuracy):6.2%}"
    line += f"  {record.examples_per_second:>10,.0f} ex/s  {record.seconds:.2f}s"
    if models:
        line += f"  (mean of {models} models)"
    return line


def print_progress(epochs, first_epoch=1, models=None, lines=30, file=None):
    """A callback printing a progress line for the first and last epoch and about ``lines`` in
    between (to ``file``, standard error by default); in process 0 only.

    Args:
        epochs: the last epoch's number.
        first_epoch: the first epoch of this run (``> 1`` when resumed).
        models: ``K`` for ``K`` models (the line shows their mean), ``None`` for one.
        lines: about how many lines to print in all.
        file: where to print (default ``sys.stderr``).

    Returns:
        ``callback(record, state, history)``.
    """
    every = max(1, math.ceil(epochs / lines))

    def callback(record, state, history):
        if jax.process_index() != 0:
            return
        if record.epoch % every == 0 or record.epoch in (epochs, first_epoch):
            print(format_record(record, epochs, models), file=file or sys.stderr, flush=True)

    return callback


def save_checkpoint(path, config=None):
    """A callback saving the ``TrainState``, the epoch, the history (``checkpoint_history``: the
    divergence events and loss scales included) and the run's ``config``
    (what a resumed run must match) to ``path`` after each epoch, atomically, in process 0 only;
    ``fit(resume=path)`` continues from it (in every process: all read the same file).

    Args:
        path: the checkpoint file (``.npz``).
        config: the run's settings, saved with it (``fit``'s ``run_config``).

    Returns:
        ``callback(record, state, history)``.
    """

    def callback(record, state, history):
        if jax.process_index() != 0:
            return
        checkpoints.save(path, state._asdict(), epoch=record.epoch,
                         history=checkpoint_history(history), config=config or {})

    return callback


def warn_diverged(models=None):
    """A callback raising a ``RuntimeWarning`` for the epoch in which a model diverged (its loss
    went non-finite or past the divergence bound): which model, which step, the bound and the
    last good loss."""

    def callback(record, state, history):
        if not record.diverged:
            return
        bad = np.atleast_1d(np.asarray(record.stats["bad_step"]))
        last = np.atleast_1d(np.asarray(record.stats["last_loss"]))
        bad_loss = np.atleast_1d(np.asarray(record.stats.get("bad_loss", np.nan)))
        limit = np.atleast_1d(np.asarray(state.loss_limit)) if state is not None else None
        parts = []
        for i in record.diverged:
            finite = f"{last[i]:.6g}" if np.isfinite(last[i]) else "none this epoch"
            what = "became non-finite"
            if np.isfinite(bad_loss[i % bad_loss.size]) and limit is not None:
                what = (f"reached {bad_loss[i % bad_loss.size]:.4g}, past the divergence bound "
                        f"{limit[i % limit.size]:.4g},")
            who = f"model {i}: " if models else ""
            parts.append(f"{who}loss {what} at epoch {record.epoch}, step {int(bad[i])} "
                         f"(last finite loss {finite})")
        warnings.warn("; ".join(parts) + ". Training stopped for "
                      + ("these models" if models else "this run")
                      + "; the params returned are the last ones before it (check the data, "
                      "or try a smaller learning rate).", RuntimeWarning, stacklevel=3)

    return callback
