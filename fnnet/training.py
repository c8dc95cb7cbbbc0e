"""Training: a pure step, an epoch compiled as one program, ``fit``, ensembles and sweeps.

Note 003's recipe, a forward pass keeping what the backward needs, the backward, a gradient descent
update, repeated::

    step = train_step(model, loss, optimizer)          # pure, jittable, vmappable
    params, opt_state, loss_value = step(params, opt_state, x, y)

``fit`` runs whole epochs: the data goes to the device once, each epoch shuffles it there and
``lax.scan``s the step over the minibatches, so one epoch is one compiled program with no Python
loop per batch and no host transfer inside it.

Minibatches: ``N // batch_size`` per epoch. The last partial batch is dropped; a fresh shuffle every
epoch means a different remainder each time, so every example is used about as often.
``batch_size=None`` is full-batch gradient descent (note 002): one step per epoch over all ``N``
examples, unshuffled.
"""

from __future__ import annotations

import math
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from . import checkpoints, metrics, parallel
from . import losses as _losses
from .gradients import _objective_with_output, autodiff_loss_output_and_grad, loss_output_and_grad

GRADS = ("manual", "autodiff")


def _grad_fn(model, loss, grads, fused):
    if grads == "manual":
        return loss_output_and_grad(model, loss, fused)
    if grads == "autodiff":
        return autodiff_loss_output_and_grad(model, loss, fused)
    raise ValueError(f"grads must be one of {GRADS}, got {grads!r}")


def train_step(model, loss, optimizer, grads="manual", fused=True):
    """A pure ``(params, opt_state, x, y) -> (params, opt_state, loss_value)``.

    ``grads="manual"`` uses the hand-derived backward; ``grads="autodiff"`` swaps in ``jax.grad``
    for comparisons. Jittable, and vmappable over a leading model axis of params and state.
    """
    fn = _grad_fn(model, _losses.get(loss), grads, fused)

    def step(params, opt_state, x, y):
        value, _, g = fn(params, x, y)
        params, opt_state = optimizer.update(g, opt_state, params)
        return params, opt_state, value

    return step


def _where(flag, a, b):
    return jax.tree_util.tree_map(lambda u, v: jnp.where(flag, u, v), a, b)


def _float_dtype(params):
    leaves = jax.tree_util.tree_leaves(params)
    return jnp.result_type(*leaves) if leaves else jnp.float32


def make_epoch(model, loss, optimizer, n, batch_size, grads="manual", fused=True, constrain=None,
               chunk_size=None, keep_last_good=True):
    """One epoch as a pure function, to be compiled once::

        epoch(params, opt_state, key, stopped, x, y)
            -> params, opt_state, key, stopped, stats

    It shuffles ``x, y`` with a key split from ``key`` and scans the training step over the
    ``n // batch_size`` minibatches. Non-finite loss guard: the first step whose loss is not finite
    sets ``stopped``; no update is applied from then on, and (with ``keep_last_good``) the params
    returned are the last ones whose loss was finite. ``keep_last_good=False`` saves the copy of the
    params that this takes at every step (5-8 % of a large network's step time): the params
    returned after a non-finite loss are then the ones that produced it, and ``fit`` replays such an
    epoch with the copy on. ``stats`` holds the mean loss, the number of correct predictions and of
    examples seen, and where the loss went non-finite (``bad_step``, ``last_loss``).

    The shuffle is an ``argsort`` of 32-bit random integers (ties, rare, keep their order).

    ``constrain``, if given, is applied to every minibatch (a sharding constraint, for data
    parallelism across devices).

    Full batch (``batch_size=None``) uses ``x, y`` as they are (no gather, no copy); with
    ``chunk_size`` rows it computes the gradient chunk by chunk (``fnnet.parallel.chunked``), so
    ``x`` is read from memory once per step instead of twice.
    """
    fn = _grad_fn(model, _losses.get(loss), grads, fused)
    full_batch = batch_size is None or batch_size >= n
    b = n if full_batch else batch_size
    steps = n // b
    if full_batch and chunk_size is not None and chunk_size < n:
        fn, constrain = parallel.chunked(fn, n, chunk_size, constrain), None

    def epoch(params, opt_state, key, stopped, x, y):
        key, shuffle_key = jax.random.split(key)
        order = jnp.arange(n) if full_batch else jnp.argsort(jax.random.bits(shuffle_key, (n,)))
        batches = order[: steps * b].reshape(steps, b)
        dtype = _float_dtype(params)

        def body(carry, idx):
            params, opt_state, good, stopped, stats = carry  # good is () without keep_last_good
            xb, yb = (x, y) if full_batch else (x[idx], y[idx])
            if constrain is not None:
                xb, yb = constrain(xb), constrain(yb)
            value, y_pred, g = fn(params, xb, yb)
            ok = jnp.isfinite(value) & ~stopped
            new_params, new_state = optimizer.update(g, opt_state, params)
            stats = {
                "loss_sum": stats["loss_sum"] + jnp.where(ok, value, 0).astype(dtype),
                "correct": stats["correct"] + jnp.where(ok, metrics.correct(y_pred, yb), 0),
                "seen": stats["seen"] + jnp.where(ok, b, 0),
                "bad_step": jnp.where(ok | stopped, stats["bad_step"], stats["step"]),
                "last_loss": jnp.where(ok, value.astype(dtype), stats["last_loss"]),
                "step": stats["step"] + 1,
            }
            good = _where(ok, params, good) if keep_last_good else good
            carry = (_where(ok, new_params, params), _where(ok, new_state, opt_state), good,
                     stopped | ~ok, stats)
            return carry, None

        stats = {"loss_sum": jnp.zeros((), dtype), "correct": jnp.zeros((), jnp.int32),
                 "seen": jnp.zeros((), jnp.int32), "bad_step": jnp.array(-1, jnp.int32),
                 "last_loss": jnp.array(jnp.nan, dtype), "step": jnp.zeros((), jnp.int32)}
        carry = (params, opt_state, params if keep_last_good else (), stopped, stats)
        (params, opt_state, good, stopped, stats), _ = jax.lax.scan(body, carry, batches)
        if keep_last_good:
            params = _where(stopped, good, params)
        return params, opt_state, key, stopped, stats

    return epoch


def evaluate(model, loss, params, x, y, batch_size=10_000, fused=True):
    """``(mean loss, accuracy)`` of ``params`` on ``x, y``, in chunks of ``batch_size`` rows."""
    fn = _objective_with_output(model, _losses.get(loss), fused)
    n = x.shape[0]
    chunk = min(batch_size, n)
    full = n // chunk

    def score(xb, yb):
        value, y_pred = fn(params, xb, yb)
        return value * xb.shape[0], metrics.correct(y_pred, yb)

    def body(acc, i):
        xb = jax.lax.dynamic_slice_in_dim(x, i * chunk, chunk)
        yb = jax.lax.dynamic_slice_in_dim(y, i * chunk, chunk)
        s = score(xb, yb)
        return (acc[0] + s[0], acc[1] + s[1]), None

    dtype = _float_dtype(params)
    (loss_sum, correct), _ = jax.lax.scan(
        body, (jnp.zeros((), dtype), jnp.zeros((), jnp.int32)), jnp.arange(full))
    if full * chunk < n:
        s = score(x[full * chunk:], y[full * chunk:])
        loss_sum, correct = loss_sum + s[0], correct + s[1]
    return loss_sum / n, correct / n


# ---------------------------------------------------------------------------------------------
# fit


def to_device(x, y, dtype=jnp.float32, where="train"):
    """``(x, y)`` on the default device, as ``fit`` holds them: ``x`` as ``dtype``, integer labels
    as int32, float targets as ``dtype``. Shapes and dtypes are checked (``where`` names the split
    in the error).

    One copy at most: an array that already has the dtype is handed to ``jax.device_put`` as it
    is, and on the CPU a numpy array aligned to 64 bytes (``fnnet.datasets.prepare`` makes them
    so) becomes the device array without a copy, so the data is held once, not twice. Such an
    array must not be written to while the device array is in use.
    """
    x = np.asarray(x) if not isinstance(x, jax.Array) else x
    y = np.asarray(y) if not isinstance(y, jax.Array) else y
    if x.ndim != 2:
        raise ValueError(f"fit: {where} x must have shape (N, features), got {tuple(x.shape)} "
                         f"(flatten images first, e.g. fnnet.datasets.flatten)")
    if len(x) != len(y):
        raise ValueError(f"fit: {where} x has {len(x)} rows but y has {len(y)}")
    if len(x) == 0:
        raise ValueError(f"fit: {where} data is empty")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"fit: {where} x must be floating-point, got {x.dtype} "
                        f"(scale pixels to [0, 1] first, e.g. fnnet.datasets.scale)")
    y_dtype = jnp.int32 if jnp.issubdtype(y.dtype, jnp.integer) else dtype
    dtype = jax.dtypes.canonicalize_dtype(dtype)
    y_dtype = jax.dtypes.canonicalize_dtype(y_dtype)
    return (jax.device_put(x if x.dtype == dtype else x.astype(dtype)),
            jax.device_put(y if y.dtype == y_dtype else y.astype(y_dtype)))


def _fmt_epoch(epoch, epochs, rec, k):
    def m(v):  # the mean over the models still training (a stopped one's entry is NaN)
        v = np.asarray(v, dtype=float)
        return float(np.mean(v[~np.isnan(v)])) if v.ndim and not np.isnan(v).all() else float(
            np.mean(v))

    line = f"epoch {epoch:>{len(str(epochs))}}/{epochs}  loss {m(rec['loss']):.4f}"
    line += f"  train acc {m(rec['train_accuracy']):6.2%}"
    if rec.get("val_accuracy") is not None:
        line += f"  val acc {m(rec['val_accuracy']):6.2%}"
    line += f"  {rec['examples_per_second']:>10,.0f} ex/s  {rec['seconds']:.2f}s"
    if k:
        line += f"  (mean of {k} models)"
    return line


def _to_py(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a).tolist(), tree)


def fit(model, loss, optimizer, train, epochs=1, batch_size=128, key=None, validation=None,
        grads="manual", fused=True, params=None, ensemble=None, lrs=None, progress=True,
        checkpoint=None, resume=None, devices=None, dtype=jnp.float32, chunk_size="auto"):
    """Train ``model`` on ``train = (x, y)``; return ``(params, history)``.

    - ``x`` has shape ``(N, features)``, floating; ``y`` holds integer labels ``(N,)`` or targets
      shaped like the output (one-hot rows for cross-entropy).
    - ``batch_size``: minibatch size (the last partial batch of each shuffled epoch is dropped), or
      ``None`` for full-batch gradient descent, one step per epoch.
    - ``key``: a ``jax.random`` key; the same key gives bit-identical params on the CPU.
    - ``params``: start from these instead of ``model.init``.
    - ``ensemble=K``: train K networks with keys ``jax.random.split(key, K)`` in one compiled
      program (``jax.vmap``); model ``k`` follows exactly the run ``fit(..., key=keys[k])`` would.
    - ``lrs=[...]``: a learning-rate sweep, one model per rate, in one program; without
      ``ensemble`` every model starts from the same ``key`` (same init, same shuffles), so only the
      rate differs; with ``ensemble=len(lrs)`` each also gets its own key.
    - ``checkpoint=PATH`` saves params, optimizer state, key, epoch and history after every epoch
      (atomically); ``resume=PATH`` continues such a run up to ``epochs`` and ends where an
      uninterrupted run would.
    - ``devices``: a list of devices, an int count (the first n of ``jax.devices()``) or ``"all"``,
      to split each minibatch across, data parallel with params replicated (see
      ``fnnet.parallel``; the batch size must be divisible by the device count); ``None`` trains
      on the default device.
    - ``chunk_size``: full batch only, compute the gradient over chunks of this many rows so the
      data are read from memory once per step (``fnnet.parallel.chunked``); ``"auto"`` chunks
      large batches (a few MiB per chunk), ``None`` never chunks.
    - A loss that is not finite stops training with a warning naming the epoch, step and last
      finite loss, and the params returned are the last ones whose loss was finite.

    ``history`` holds, per epoch, ``loss`` (mean training loss), ``train_accuracy`` (over the
    epoch's minibatches, as trained), ``val_loss`` and ``val_accuracy`` (at the epoch's end, if
    ``validation`` is given), ``examples_per_second`` and ``seconds``; plus ``compile_seconds``.
    For K models each per-epoch entry is a list of K values, and ``params`` are stacked along a
    leading axis of size K.
    """
    if grads not in GRADS:
        raise ValueError(f"fit: grads must be one of {GRADS}, got {grads!r}")
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"fit: epochs must be a non-negative integer, got {epochs!r}")
    loss = _losses.get(loss)
    key = jax.random.PRNGKey(0) if key is None else key
    x, y = to_device(*train, dtype, "train")
    n = x.shape[0]
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"fit: batch_size must be a positive integer or None, got {batch_size!r}")
    if batch_size is not None and batch_size > n:
        raise ValueError(f"fit: batch_size {batch_size} is larger than the {n} training examples "
                         f"(use batch_size=None for full-batch gradient descent)")
    val = to_device(*validation, dtype, "validation") if validation is not None else None

    k = _model_count(ensemble, lrs)
    mesh = constrain = None
    if devices is not None:
        mesh, constrain, (x, y) = parallel.setup(devices, batch_size or n, (x, y))
    chunk = parallel.resolve_chunk_size(chunk_size, n, batch_size, x, mesh)
    eval_fn = lambda p, vx, vy: evaluate(model, loss, p, vx, vy, fused=fused)

    def start(run_key, lr, p=None):
        init_key, run_key = jax.random.split(run_key)
        p = model.init(init_key, dtype) if p is None else p
        return p, optimizer.init(p, lr), run_key

    if k:
        keys = jax.random.split(key, k) if ensemble else jnp.stack([key] * k)
        rates = jnp.asarray(lrs, dtype) if lrs is not None else None
        in_p = None if params is None else 0
        params, opt_state, run_key = jax.jit(jax.vmap(
            start, in_axes=(0, None if rates is None else 0, in_p)))(keys, rates, params)
        eval_fn = jax.vmap(eval_fn, in_axes=(0, None, None))
        stopped = jnp.zeros((k,), bool)
    else:
        params, opt_state, run_key = jax.jit(start)(key, None, params)
        stopped = jnp.zeros((), bool)

    history = {"epoch": [], "loss": [], "train_accuracy": [], "val_loss": [], "val_accuracy": [],
               "examples_per_second": [], "seconds": []}
    first_epoch = 1
    if resume is not None:
        state, meta = checkpoints.load(resume, like={"params": params, "opt_state": opt_state,
                                                     "key": run_key, "stopped": stopped})
        params, opt_state, run_key, stopped = (state["params"], state["opt_state"], state["key"],
                                               state["stopped"])
        history = {name: list(v) for name, v in meta["history"].items()}
        first_epoch = int(meta["epoch"]) + 1

    if mesh is not None:
        params, opt_state, run_key, stopped = parallel.replicate(
            (params, opt_state, run_key, stopped), mesh)

    def compile_epoch(keep_last_good):
        fn = make_epoch(model, loss, optimizer, n, batch_size, grads, fused, constrain, chunk,
                        keep_last_good)
        fn = jax.vmap(fn, in_axes=(0, 0, 0, 0, None, None)) if k else fn
        return jax.jit(fn).lower(params, opt_state, run_key, stopped, x, y).compile()

    # Epochs run without the per-step copy of the params that the non-finite guard needs; an epoch
    # whose loss goes non-finite is replayed from its (kept) inputs by a program that makes it.
    t0 = time.perf_counter()
    compiled_epoch, careful_epoch = compile_epoch(keep_last_good=False), None
    compiled_eval = jax.jit(eval_fn).lower(params, *val).compile() if val is not None else None
    history["compile_seconds"] = time.perf_counter() - t0

    b = n if batch_size is None else batch_size
    per_epoch = (n // b) * b
    every = max(1, math.ceil(epochs / 30))
    for epoch in range(first_epoch, epochs + 1):
        t = time.perf_counter()
        inputs = (params, opt_state, run_key, stopped, x, y)
        params, opt_state, run_key, stopped, stats = compiled_epoch(*inputs)
        stats = jax.device_get(stats)
        if np.any(np.asarray(stats["bad_step"]) >= 0):
            if careful_epoch is None:  # its compile time is counted as such, not as the epoch's
                tc = time.perf_counter()
                careful_epoch = compile_epoch(keep_last_good=True)
                history["compile_seconds"] += time.perf_counter() - tc
                t += time.perf_counter() - tc
            params, opt_state, run_key, stopped, stats = careful_epoch(*inputs)
            stats = jax.device_get(stats)
        seconds = time.perf_counter() - t
        seen = np.asarray(stats["seen"])
        with np.errstate(invalid="ignore", divide="ignore"):  # a stopped model saw nothing: NaN
            loss_mean = np.where(seen > 0, stats["loss_sum"] / (seen // b), np.nan)
            accuracy = np.where(seen > 0, stats["correct"] / seen, np.nan)
        rec = {
            "epoch": epoch,
            "loss": _to_py(loss_mean),
            "train_accuracy": _to_py(accuracy),
            "examples_per_second": per_epoch * (k or 1) / seconds,
            "seconds": seconds,
            "val_loss": None,
            "val_accuracy": None,
        }
        if compiled_eval is not None:
            vl, va = compiled_eval(params, *val)
            rec["val_loss"], rec["val_accuracy"] = _to_py(vl), _to_py(va)
        for name in ("epoch", "loss", "train_accuracy", "val_loss", "val_accuracy",
                     "examples_per_second", "seconds"):
            history[name].append(rec[name])
        if progress and (epoch % every == 0 or epoch == epochs or epoch == first_epoch):
            print(_fmt_epoch(epoch, epochs, rec, k), file=sys.stderr, flush=True)
        if checkpoint is not None:
            checkpoints.save(checkpoint, {"params": params, "opt_state": opt_state, "key": run_key,
                                          "stopped": stopped},
                             epoch=epoch, history=_jsonable_history(history))
        newly = np.asarray(stats["bad_step"]) >= 0
        if np.any(newly):
            _warn_diverged(epoch, stats, newly, k)
            history.setdefault("diverged", []).append(
                {"epoch": epoch, "models": np.flatnonzero(np.atleast_1d(newly)).tolist()})
        if np.all(np.asarray(stopped)):
            break
    return params, history


def _model_count(ensemble, lrs):
    if ensemble is not None and (not isinstance(ensemble, int) or ensemble < 1):
        raise ValueError(f"fit: ensemble must be a positive integer, got {ensemble!r}")
    if lrs is not None:
        lrs = list(np.atleast_1d(np.asarray(lrs, dtype=float)))
        if not lrs or min(lrs) < 0:
            raise ValueError(f"fit: lrs must be a non-empty list of non-negative rates, got {lrs}")
        if ensemble is not None and ensemble != len(lrs):
            raise ValueError(f"fit: ensemble={ensemble} but {len(lrs)} learning rates were given")
        return len(lrs)
    return ensemble


def _jsonable_history(history):
    return {name: v for name, v in history.items() if name not in ("compile_seconds", "diverged")}


def _warn_diverged(epoch, stats, newly, k):
    bad = np.atleast_1d(np.asarray(stats["bad_step"]))
    last = np.atleast_1d(np.asarray(stats["last_loss"]))
    which = np.flatnonzero(np.atleast_1d(newly))
    parts = []
    for i in which:
        finite = f"{last[i]:.6g}" if np.isfinite(last[i]) else "none this epoch"
        who = f"model {i}: " if k else ""
        parts.append(f"{who}loss became non-finite at epoch {epoch}, step {int(bad[i])} "
                     f"(last finite loss {finite})")
    warnings.warn("; ".join(parts) + ". Training stopped for "
                  + ("these models" if k else "this run")
                  + "; the params returned are the last ones whose loss was finite "
                  "(try a smaller learning rate).", RuntimeWarning, stacklevel=3)
