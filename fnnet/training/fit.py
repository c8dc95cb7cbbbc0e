"""``fit``: the outline of training, built from the public pieces.

``_prepare`` checks every argument and builds the run's plan (the model under its policy, the
data on its devices, the ``RunConfig``) before any work; ``TrainState.create`` makes the state,
``EpochRunner`` compiles and runs each epoch (a scan of ``train_step``), ``epoch_record``
describes it, and callbacks print progress, save checkpoints and warn when a loss goes
non-finite.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import checkpoints, checks
from .. import loss_scale as _loss_scale
from .. import losses as _losses
from .. import precision as _precision
from ..devices import parallel, placement
from ..optim import Optimizer
from . import callbacks as cb
from . import inputs
from .config import ResumeError, RunConfig, fingerprint
from .epoch import EpochRunner
from .evaluate import evaluate, to_device
from .state import TrainState, model_count
from .step import GRADS
from .stream import TokenWindows


def _check_args(optimizer, grads, epochs):
    if not isinstance(optimizer, Optimizer):
        hint = (f" (for a name, use fnnet.optim.get({optimizer!r}, lr))"
                if isinstance(optimizer, str) else "")
        raise TypeError(f"fit: optimizer must be an fnnet.optim.Optimizer such as "
                        f"fnnet.optim.sgd(0.1), got {optimizer!r}{hint}")
    checks.choice("fit", "grads", grads, GRADS)
    checks.integer("fit", "epochs", epochs, minimum=0)


def _check_batch_size(batch_size, n):
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


def _check_resume(checkpoint, resume):
    if not isinstance(resume, bool):
        raise TypeError(f"fit: resume must be True or False (resume=True continues the run saved "
                        f"at checkpoint=PATH), got {resume!r}")
    if resume and checkpoint is None:
        raise ValueError("fit: resume=True continues the run saved at checkpoint=PATH; pass "
                         "checkpoint= too")


def _resume(path, state, config):
    """``(state, history, first_epoch)`` from the checkpoint ``fit(checkpoint=path)`` wrote.

    A resumed run continues the saved one exactly, so a configuration that differs from the
    saved one (another learning rate, batch size, model...) is refused rather than ignored.
    """
    meta = checkpoints.metadata(path)
    changed = config.differences(meta.get("config", {}))
    if changed:
        raise ResumeError(f"fit: the run saved in {str(path)!r} was saved with another "
                         f"configuration ({'; '.join(changed)}); resume with the saved settings "
                         f"(only epochs may change), or start a new run")
    try:
        saved, meta = checkpoints.load(path, like=state._asdict())
    except (checkpoints.CheckpointError, ValueError, TypeError) as e:
        raise ResumeError(f"fit: cannot resume from {str(path)!r}: {e}") from None
    epoch, history = meta.get("epoch"), meta.get("history")
    if not checks.is_integer(epoch) or epoch < 1 or not isinstance(history, dict) or not all(
            isinstance(values, list) for values in history.values()):
        raise ResumeError(f"fit: cannot resume from {str(path)!r}: its metadata must hold the "
                          f"epoch saved (an integer >= 1) and the history (lists by name), got "
                          f"epoch {epoch!r} and {type(history).__name__} history")
    if epoch > config.epochs:
        raise ResumeError(f"fit: the run saved in {str(path)!r} is at epoch {epoch}, past the "
                          f"{config.epochs} epochs asked for; ask for {epoch} or more")
    return TrainState(**saved), {name: list(v) for name, v in history.items()}, epoch + 1


def _validator(model, loss, fused, validation, dtype, models, state):
    """A compiled ``state -> (val_loss, val_accuracy)``, or ``None`` without validation data."""
    if validation is None:
        return None
    vx, vy = to_device(*validation, dtype, "validation", ids=model.takes_ids)

    def score(params, model_state, x, y):
        return evaluate(model, loss, params, x, y, fused=fused, state=model_state)

    score = jax.vmap(score, in_axes=(0, 0, None, None)) if models else score
    compiled = jax.jit(score).lower(state.params, state.model_state, vx, vy).compile()
    return lambda s: tuple(cb._to_list(v) for v in compiled(s.params, s.model_state, vx, vy))


def record_loss_scale(record, state, history):
    """Callback: the steps skipped for an overflow (``history["skipped_steps"]``) and the loss
    scale after the epoch (``history["loss_scale"]``), under a loss scale."""
    history.setdefault("skipped_steps", []).append(cb._to_list(record.stats["skipped"]))
    history.setdefault("loss_scale", []).append(cb._to_list(state.loss_scale.scale))
    skipped, ok = np.asarray(record.stats["skipped"]), np.asarray(record.stats["ok_steps"])
    if np.any((ok > 0) & (skipped >= ok)):
        warnings.warn(f"fit: every step of epoch {record.epoch} was skipped for a loss-scale "
                      f"overflow (the scale is now {cb._to_list(state.loss_scale.scale)}): the "
                      f"params did not change; the loss or its gradient overflows float16 at "
                      f"every scale tried (try precision='bf16')", RuntimeWarning, stacklevel=2)


class Plan(NamedTuple):
    """A checked run, before any work: what ``fit`` trains, on what, where, and its record."""

    model: Any
    loss: Any
    data: tuple
    examples: int
    batch_size: int | None
    models: int | None
    where: placement.Placement
    chunk: int | None
    scaler: Any
    windows: tuple | None
    config: RunConfig


def _training_data(model, loss, train, dtype, batch_size):
    """``(x, y, n, batch_size, template, windows)``: the data on the default device, the
    examples per epoch, the batch size checked, a batch of ``x`` (shapes for the checks) and
    the stream's ``(block_size, steps)`` or ``None``."""
    if not isinstance(train, TokenWindows):
        x, y = to_device(*train, dtype, "train", ids=model.takes_ids)
        n = x.shape[0]
        batch_size = _check_batch_size(batch_size, n)
        return x, y, n, batch_size, x[:1], None
    if not model.takes_ids:
        raise ValueError(f"fit: a TokenWindows stream trains a model that reads ids (an "
                         f"Embedding or GPT first), got {model!r}")
    if batch_size is None:
        raise ValueError("fit: a TokenWindows stream draws batch_size windows per step; "
                         "batch_size=None (full batch) has no meaning for it")
    batch_size = checks.integer("fit", "batch_size", batch_size)
    tokens = jax.device_put(jnp.asarray(train.tokens, jnp.int32))
    template = np.zeros((1, train.block_size), np.int32)
    return (tokens, tokens, train.steps * batch_size, batch_size, template,
            (train.block_size, train.steps))


def _prepare(model, loss, optimizer, train, validation, *, epochs, batch_size, grads, fused,
             params, ensemble, lrs, devices, shard, chunk_size, dtype, precision, loss_scale,
             recipe):
    """Every check ``fit`` makes, then its ``Plan``: the model under its precision policy
    (applied here, once), the data on its devices, the configuration."""
    inputs.require_dtype(dtype, "fit")
    policy = None if precision is None else _precision.get(precision)
    if policy is not None:
        _precision.check_master_dtype(dtype, policy, "fit")
        _precision.check_params_dtype(params, policy, "fit")
    scaler = _loss_scale.get(loss_scale, policy)
    loss = _losses.get(loss)
    _check_args(optimizer, grads, epochs)
    x, y, n, batch_size, template, windows = _training_data(model, loss, train, dtype,
                                                            batch_size)
    models = model_count(ensemble, lrs)
    _check_data(model, loss, params, models, template if windows else x, y,
                batch_size or n, "fit: train")
    if validation is not None:
        _check_data(model, loss, params, models, *validation, len(validation[0]),
                    "fit: validation")
    inputs.check_memory(inputs.training_bytes(model, optimizer, template[0], batch_size or n,
                                              models, dtype), "fit")
    where, data = placement.plan(devices, shard, batch_size or n, models, (x, y))
    chunk = (None if windows else
             parallel.resolve_chunk_size(chunk_size, n, batch_size, data[0], where.batch_mesh))
    model = _precision.with_precision(model, policy)
    config = RunConfig(
        model=repr(model), loss=loss.name, optimizer=str(optimizer),
        examples=len(x) if windows else n,
        batch_size=batch_size, epochs=epochs, grads=grads, fused=bool(fused),
        dtype=jnp.dtype(dtype).name, precision=None if policy is None else policy.name,
        loss_scale=None if scaler is None else repr(scaler), ensemble=ensemble, lrs=lrs,
        chunk_size=chunk, shard=where.recorded,
        windows=windows and {"block_size": windows[0], "steps": windows[1]},
        data=fingerprint(train.tokens) if windows else fingerprint(*train), recipe=recipe or {})
    return Plan(model, loss, data, n, batch_size, models, where, chunk, scaler, windows, config)


def _callbacks(given, plan, progress, checkpoint):
    """The callbacks ``fit`` runs after each epoch: the user's, then the divergence warning,
    the loss scale's record, progress (``progress``: ``(epochs, first_epoch)`` or false) and the
    checkpoint."""
    callbacks = list(given) + [cb.warn_diverged(plan.models)]
    if plan.scaler is not None:
        callbacks.append(record_loss_scale)
    if progress:
        callbacks.append(cb.print_progress(*progress, plan.models))
    if checkpoint is not None:
        callbacks.append(cb.save_checkpoint(checkpoint, plan.config.to_json()))
    return callbacks


def fit(model, loss, optimizer, train, *, epochs=1, batch_size=128, key=None, validation=None,
        grads="manual", fused=True, params=None, ensemble=None, lrs=None, progress=True,
        checkpoint=None, resume=False, devices=None, shard=None, chunk_size="auto",
        dtype=jnp.float32, precision=None, loss_scale="auto", recipe=None, callbacks=()):
    """Train ``model`` on ``train = (x, y)``; return ``(state, history)``.

    Args:
        model: a layer or network.
        loss: an ``fnnet.losses.Loss`` or its name.
        optimizer: an ``fnnet.optim.Optimizer`` (``fnnet.optim.sgd(0.1)``).
        train: ``(x, y)``: ``x`` of shape ``(N, features)`` or images ``(N, H, W, C)``,
            floating (integer ids ``(N, T)`` for a model that reads ids); ``y`` integer labels
            ``(N,)`` (``(N, T)``) or targets shaped like the output. Or a token stream,
            ``fnnet.training.TokenWindows(tokens, block_size, steps)``: each step draws
            ``batch_size`` random windows inside the program, and an epoch is ``steps`` steps
            (``fnnet.training.stream``).

    Keyword arguments, by group:
        - What to train: ``epochs``; ``batch_size`` (the last partial batch of each shuffled
          epoch is dropped; ``None``: full-batch gradient descent, one step per epoch);
          ``key`` (a ``jax.random`` key: the same key gives bit-identical params on the CPU);
          ``params`` (start from these instead of ``model.init``); ``validation``
          (``(x, y)`` scored after every epoch: hold it out of the training data, never the
          test set); ``dtype`` of the params.
        - How gradients are computed: ``grads`` (``"manual"``, the hand-derived backward, or
          ``"autodiff"``); ``fused`` (the fused softmax/cross-entropy rules); ``precision``
          (``None``: the model as it is; ``"f32"``, ``"bf16"``, ``"f16"`` or a
          ``fnnet.precision.Policy``, applied to the model here: products read bfloat16/float16
          and accumulate in float32, params, optimizer state, loss and statistics stay
          float32); ``loss_scale`` (``"auto"``: dynamic when ``precision`` names float16
          products, none otherwise, so a model built under float16 before ``fit`` and trained
          with ``precision=None`` needs its scale named; a ``fnnet.loss_scale.DynamicLossScale``;
          ``None``: none).
        - Several models: ``ensemble=K`` or ``lrs=[...]``: K models in one compiled program
          (``TrainState.create``).
        - Where: ``devices`` (a list, a count or ``"all"``; ``None``: the default device),
          ``shard`` (``"batch"``, the default with devices: split each minibatch; ``"models"``:
          ``K/D`` whole models on each of ``D`` devices), ``chunk_size`` (full batch only: the
          gradient over chunks of this many rows, ``fnnet.devices.parallel.chunked``; ``"auto"`` chunks
          where X takes more than a sixteenth of the device's memory, ``None`` never).
        - Saving: ``checkpoint=PATH`` saves the ``TrainState``, epoch, history and configuration
          after every epoch (atomically); with ``resume=True`` the run saved there continues up
          to ``epochs`` and ends where an uninterrupted run would (a resume whose configuration
          differs, but for ``epochs``, is refused; the saved state wins over ``key`` and
          ``params``, which only start a new run). ``recipe``: the caller's settings (JSON
          values), recorded in the configuration and compared on resume.
        - Watching: ``progress`` (a line per epoch on standard error), ``callbacks`` (more
          ``callback(record, state, history)`` to call after each epoch).

    Returns:
        ``(state, history)``. ``state`` is the ``TrainState`` after training: ``state.params``,
        ``state.model_state`` (running statistics of batch norm, which params alone would
        lose), the optimizer's state and the run key. ``history`` holds, per epoch, the fields of
        ``EpochRecord`` named in ``HISTORY_KEYS`` (lists of K values for K models),
        ``compile_seconds``, ``config`` (the ``RunConfig`` as ``to_json`` writes it),
        ``diverged`` if a loss went non-finite, and under a loss scale ``skipped_steps`` and
        ``loss_scale``.

    A loss that is not finite, or past the divergence bound, stops that model with a warning
    naming the epoch, step and last finite loss; its params are the last ones whose loss was
    finite.
    """
    _check_resume(checkpoint, resume)
    plan = _prepare(model, loss, optimizer, train, validation, epochs=epochs,
                    batch_size=batch_size, grads=grads, fused=fused, params=params,
                    ensemble=ensemble, lrs=lrs, devices=devices, shard=shard,
                    chunk_size=chunk_size, dtype=dtype, precision=precision,
                    loss_scale=loss_scale, recipe=recipe)
    if checkpoint is not None:
        inputs.check_writable(checkpoint, "fit: checkpoint")
    key = jax.random.PRNGKey(0) if key is None else key
    state = TrainState.create(plan.model, optimizer, key, params=params, ensemble=ensemble,
                              lrs=lrs, dtype=dtype, loss_scale=plan.scaler)
    history, first_epoch = cb.new_history(), 1
    if resume:
        state, history, first_epoch = _resume(checkpoint, state, plan.config)
    state = plan.where.place(state)
    x, y = plan.data
    n = plan.examples

    runner = EpochRunner(plan.model, plan.loss, optimizer, n, plan.batch_size, grads=grads,
                         fused=fused, chunk_size=plan.chunk, shard_batch=plan.where.shard_batch,
                         models=plan.models, loss_scale=plan.scaler, windows=plan.windows)
    started = time.perf_counter()
    runner.compile(state, x, y)
    validate = _validator(plan.model, plan.loss, fused, validation, dtype, plan.models, state)
    history["compile_seconds"] = time.perf_counter() - started - runner.compile_seconds
    history["config"] = plan.config.to_json()
    callbacks = _callbacks(callbacks, plan, progress and (epochs, first_epoch), checkpoint)

    rows = plan.batch_size or n
    if jnp.all(state.stopped):  # a resumed run whose every model had stopped: nothing to train
        first_epoch = epochs + 1
    for epoch in range(first_epoch, epochs + 1):
        started, compiled_before = time.perf_counter(), runner.compile_seconds
        state, stats = runner(state, x, y)
        seconds = time.perf_counter() - started - (runner.compile_seconds - compiled_before)
        record = cb.epoch_record(epoch, stats, seconds, (n // rows) * rows * (plan.models or 1))
        if validate is not None:
            record.val_loss, record.val_accuracy = validate(state)
        cb.append(history, record)
        for callback in callbacks:
            callback(record, state, history)
        if jnp.all(state.stopped):
            break
    history["compile_seconds"] += runner.compile_seconds
    return state, history
