"""``fit``: the outline of training, built from the public pieces.

``TrainState.create`` makes the state, ``EpochRunner`` compiles and runs each epoch,
``epoch_record`` describes it, and callbacks print progress, save checkpoints and warn when a
loss goes non-finite.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from .. import checkpoints, checks, parallel, placement
from .. import losses as _losses
from .. import precision as _precision
from ..optim import Optimizer
from . import callbacks as cb
from . import inputs
from .epoch import EpochRunner
from .evaluate import evaluate, to_device
from .state import TrainState, model_count

GRADS = ("manual", "autodiff")


def _check_args(optimizer, grads, epochs, batch_size, n):
    if not isinstance(optimizer, Optimizer):
        hint = (f" (for a name, use fnnet.optim.get({optimizer!r}, lr))"
                if isinstance(optimizer, str) else "")
        raise TypeError(f"fit: optimizer must be an fnnet.optim.Optimizer such as "
                        f"fnnet.optim.sgd(0.1), got {optimizer!r}{hint}")
    checks.choice("fit", "grads", grads, GRADS)
    checks.integer("fit", "epochs", epochs, minimum=0)
    if batch_size is not None:
        batch_size = checks.integer("fit", "batch_size", batch_size)
        if batch_size > n:
            raise ValueError(f"fit: batch_size {batch_size} is larger than the {n} training "
                             f"examples (use batch_size=None for full-batch gradient descent)")
    return batch_size


def _check_data(model, loss, params, models, x, y, rows, where):
    """Finite inputs, and targets the loss can score against the network's outputs."""
    inputs.check_finite(x, where)
    template = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    if params is not None:  # the given params, one model's shapes of them
        template = params if models is None else jax.tree_util.tree_map(lambda a: a[0], params)
    inputs.check_targets(loss, y, inputs.output_width(model, template, x, rows), where)


def _check_keeps_state(model, dtype, return_state):
    if not return_state and jax.tree_util.tree_leaves(model.init_state(dtype)):
        raise ValueError(f"fit: {model!r} keeps state (running statistics) that the params alone "
                         f"would lose; pass return_state=True to get the TrainState (its params "
                         f"and model_state)")


def run_config(model, loss, optimizer, n, batch_size, grads, fused, dtype, ensemble, lrs,
               chunk):
    """What a resumed run must share with the run it continues (``epochs`` may grow)."""
    return {"model": repr(model), "loss": loss.name, "optimizer": str(optimizer),
            "examples": n, "batch_size": batch_size, "grads": grads, "fused": bool(fused),
            "dtype": jnp.dtype(dtype).name, "ensemble": ensemble,
            "lrs": None if lrs is None else [float(r) for r in lrs], "chunk_size": chunk}


def _resume(path, state, config):
    """``(state, history, first_epoch)`` from the checkpoint ``fit(checkpoint=path)`` wrote.

    A resumed run continues the saved one exactly, so a configuration that differs from the
    saved one (another learning rate, batch size, model...) is refused rather than ignored.
    """
    meta = checkpoints.metadata(path)
    changed = {name: (meta["config"].get(name), value) for name, value in config.items()
               if name in meta.get("config", {}) and meta["config"][name] != value}
    if changed:
        lines = "; ".join(f"{name}: saved {old!r}, now {new!r}"
                          for name, (old, new) in changed.items())
        raise ValueError(f"fit: resume={str(path)!r} was saved with another configuration "
                         f"({lines}); resume with the saved settings (only epochs may change), "
                         f"or start a new run")
    saved, meta = checkpoints.load(path, like=state._asdict())
    history = {name: list(values) for name, values in meta["history"].items()}
    return TrainState(**saved), history, int(meta["epoch"]) + 1


def _validator(model, loss, fused, validation, dtype, models, state):
    """A compiled ``state -> (val_loss, val_accuracy)``, or ``None`` without validation data."""
    if validation is None:
        return None
    vx, vy = to_device(*validation, dtype, "validation")

    def score(params, model_state, x, y):
        return evaluate(model, loss, params, x, y, fused=fused, state=model_state)

    score = jax.vmap(score, in_axes=(0, 0, None, None)) if models else score
    compiled = jax.jit(score).lower(state.params, state.model_state, vx, vy).compile()
    return lambda s: tuple(cb._to_list(v) for v in compiled(s.params, s.model_state, vx, vy))


def record_loss_scale(record, state, history):
    """Callback: the steps skipped for an overflow (``history["skipped_steps"]``) and the loss
    scale after the epoch (``history["loss_scale"]``), under a loss-scaling policy."""
    history.setdefault("skipped_steps", []).append(cb._to_list(record.stats["skipped"]))
    history.setdefault("loss_scale", []).append(cb._to_list(state.loss_scale.scale))


def _callbacks(given, models, progress, checkpoint, config, policy):
    """The callbacks ``fit`` runs after each epoch: the user's, then the divergence warning,
    the loss scale's record, progress (``progress``: ``(epochs, first_epoch)`` or false) and the
    checkpoint."""
    callbacks = list(given) + [cb.warn_diverged(models)]
    if policy.loss_scale is not None:
        callbacks.append(record_loss_scale)
    if progress:
        callbacks.append(cb.print_progress(*progress, models))
    if checkpoint is not None:
        callbacks.append(cb.save_checkpoint(checkpoint, config))
    return callbacks


def fit(model, loss, optimizer, train, epochs=1, batch_size=128, key=None, validation=None,
        grads="manual", fused=True, params=None, ensemble=None, lrs=None, progress=True,
        checkpoint=None, resume=None, devices=None, dtype=jnp.float32, chunk_size="auto",
        callbacks=(), return_state=False, shard=None, precision=None):
    """Train ``model`` on ``train = (x, y)``; return ``(params, history)``.

    - ``x`` has shape ``(N, features)``, floating; ``y`` holds integer labels ``(N,)`` or targets
      shaped like the output (one-hot rows for cross-entropy).
    - ``batch_size``: minibatch size (the last partial batch of each shuffled epoch is dropped), or
      ``None`` for full-batch gradient descent, one step per epoch.
    - ``key``: a ``jax.random`` key; the same key gives bit-identical params on the CPU.
    - ``params``: start from these instead of ``model.init``.
    - ``ensemble=K`` / ``lrs=[...]``: K models in one compiled program (``TrainState.create``).
    - ``checkpoint=PATH`` saves the ``TrainState``, epoch and history after every epoch
      (atomically); ``resume=PATH`` continues such a run up to ``epochs`` and ends where an
      uninterrupted run would.
    - ``devices``: a list of devices, a count or ``"all"``, to train on; ``None`` trains on the
      default device.
    - ``shard``: what the devices split (``fnnet.placement``): ``"batch"``, the default with
      ``devices``, splits each minibatch and replicates the params (``fnnet.parallel``);
      ``"models"`` places the ``K`` models of ``ensemble``/``lrs`` on the ``D`` devices, ``K/D``
      whole models each, with no communication between devices (``K`` divisible by ``D``).
      Refused without ``devices``, and ``"models"`` for one model.
    - ``chunk_size``: full batch only, the gradient over chunks of this many rows
      (``fnnet.parallel.chunked``); ``"auto"`` chunks large batches, ``None`` never.
    - ``precision``: ``"f32"`` (the default), ``"bf16"`` or ``"f16"``, or an
      ``fnnet.precision.Policy``: the matrix products and convolutions read bfloat16/float16
      inputs and accumulate in float32, on the manual and the autodiff path alike; params,
      optimizer state, loss and statistics stay float32. ``"f16"`` scales the loss dynamically
      (``history["skipped_steps"]`` counts the steps skipped because a scaled gradient
      overflowed, ``history["loss_scale"]`` the scale after each epoch). Validation runs under
      the same policy; it is recorded, so a resume under another policy is refused.
    - ``callbacks``: more ``callback(record, state, history)`` to call after each epoch.
    - ``return_state``: return the whole ``TrainState`` instead of the params; needed for a
      model that keeps state (batch norm's running statistics), which params alone would lose.
    - A loss that is not finite stops that model with a warning naming the epoch, step and last
      finite loss; its params are the last ones whose loss was finite.

    ``history`` holds, per epoch, the fields of ``EpochRecord`` named in ``HISTORY_KEYS`` (lists
    of K values for K models), ``compile_seconds``, and ``diverged`` if a loss went non-finite.
    """
    inputs.require_dtype(dtype, "fit")
    policy = _precision.get(precision)
    _precision.check_master_dtype(dtype, policy, "fit")
    loss = _losses.get(loss)
    x, y = to_device(*train, dtype, "train")
    n = x.shape[0]
    batch_size = _check_args(optimizer, grads, epochs, batch_size, n)
    models = model_count(ensemble, lrs)
    _check_keeps_state(model, dtype, return_state)
    _check_data(model, loss, params, models, x, y, batch_size or n, "fit: train")
    if validation is not None:
        _check_data(model, loss, params, models, *validation, len(validation[0]),
                    "fit: validation")
    inputs.check_memory(inputs.training_bytes(model, optimizer, x[0], batch_size or n, models,
                                              dtype), "fit")
    if checkpoint is not None:
        inputs.check_writable(checkpoint, "fit: checkpoint")
    where, (x, y) = placement.plan(devices, shard, batch_size or n, models, (x, y))
    chunk = parallel.resolve_chunk_size(chunk_size, n, batch_size, x, where.batch_mesh)
    config = run_config(model, loss, optimizer, n, batch_size, grads, fused, dtype, ensemble, lrs,
                        chunk)
    config["shard"] = where.recorded
    config["precision"] = policy.label
    key = jax.random.PRNGKey(0) if key is None else key
    state = TrainState.create(model, optimizer, key, params=params, ensemble=ensemble, lrs=lrs,
                              dtype=dtype, precision=policy)
    model = _precision.with_precision(model, policy)
    history, first_epoch = cb.new_history(), 1
    if resume is not None:
        state, history, first_epoch = _resume(resume, state, config)
    state = where.place(state)

    runner = EpochRunner(model, loss, optimizer, n, batch_size, grads=grads, fused=fused,
                         chunk_size=chunk, shard_batch=where.shard_batch, models=models,
                         precision=policy)
    started = time.perf_counter()
    runner.compile(state, x, y)
    validate = _validator(model, loss, fused, validation, dtype, models, state)
    history["compile_seconds"] = time.perf_counter() - started - runner.compile_seconds
    callbacks = _callbacks(callbacks, models, progress and (epochs, first_epoch), checkpoint,
                           config, policy)

    rows = n if batch_size is None else batch_size
    for epoch in range(first_epoch, epochs + 1):
        started, compiled_before = time.perf_counter(), runner.compile_seconds
        state, stats = runner(state, x, y)
        seconds = time.perf_counter() - started - (runner.compile_seconds - compiled_before)
        record = cb.epoch_record(epoch, stats, seconds, (n // rows) * rows * (models or 1), rows)
        if validate is not None:
            record.val_loss, record.val_accuracy = validate(state)
        cb.append(history, record)
        for callback in callbacks:
            callback(record, state, history)
        if jnp.all(state.stopped):
            break
    history["compile_seconds"] += runner.compile_seconds
    return (state if return_state else state.params), history

