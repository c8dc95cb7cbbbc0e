"""The ``fnnet`` command line: ``train``, ``evaluate``, ``gradcheck`` and ``bench``.

::

    fnnet train --dataset mnist                      # 784-128-10 ReLU/softmax, ~98% in seconds
    fnnet evaluate runs/mnist/model.npz              # accuracy, confusion matrix, misclassified digits
    fnnet gradcheck --layers 784,32,10               # hand-derived backward vs jax.grad, f32 and f64
    fnnet bench --quick                              # experiments/benchmark.py, arguments forwarded

``main(argv) -> int`` never raises ``SystemExit`` and never prints a traceback for a bad command
line: a wrong flag value is one line ``fnnet <command>: error: ...`` on stderr and exit status 2;
data that cannot be found or read is the loader's message and exit status 1.

Losses and outputs that make no sense together are refused (exit status 2):

- ``cross-entropy`` ``L = −(1/N) Σ_n Σ_i y_ni log ŷ_ni`` (note 003) is a negative log-likelihood only
  when each row ``ŷ_n`` is a probability distribution over the classes, so it needs ``--output
  softmax``. Sigmoid outputs need not sum to 1 (the loss would reward pushing every output to 1) and
  linear or tanh outputs can be ``≤ 0``, where ``log`` is undefined.
- ``binary-cross-entropy`` ``L = −(1/N) Σ [y log ŷ + (1 − y) log(1 − ŷ)]`` (note 004) needs every
  output in ``(0, 1)``: ``--output sigmoid`` (its fused rule ``dL/dZ = (Ŷ − Y)/N``) or ``softmax``.
- ``mse`` ``E = (1/n) Σ_i (y*_i − y_i)²`` (note 000) works with any output.

Cross-entropy trains on integer labels; MSE and binary cross-entropy on one-hot rows.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from . import checkpoints, datasets, losses, metrics, optim, plots
from .gradients import check_grads
from .networks import mlp
from .training import evaluate, fit

IMAGE_PIXELS = 784
NUM_CLASSES = 10
HIDDEN_ACTIVATIONS = ("relu", "sigmoid", "tanh", "linear")
OUTPUTS = ("softmax", "sigmoid", "tanh", "linear")
LOSSES = ("cross-entropy", "mse", "binary-cross-entropy")
LOSS_OUTPUTS = {
    "cross-entropy": ("softmax",),
    "binary-cross-entropy": ("sigmoid", "softmax"),
    "mse": OUTPUTS,
}
DEFAULT_OPTIMIZER = "momentum"
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.1, "adam": 1e-3, "rmsprop": 1e-3}
DEFAULT_EPOCHS = 10
DEFAULT_BATCH = 128
MISCLASSIFIED_SHOWN = 40
# Keys of a model checkpoint's metadata that ``evaluate`` needs to rebuild the network.
MODEL_KEYS = ("dataset", "layers", "activation", "output", "loss", "ensemble")
# Settings a resumed run must share with the run it continues (``epochs`` may grow).
RESUME_KEYS = ("dataset", "layers", "activation", "output", "loss", "optimizer", "lr", "batch_size",
               "grads", "seed", "ensemble")


class UsageError(Exception):
    """A bad command line or flag value: one line on stderr, exit status 2."""

    def __init__(self, prog, message):
        super().__init__(message)
        self.prog = prog


class DataUnavailable(Exception):
    """The dataset could not be found, downloaded or read: its message on stderr, exit status 1."""

    def __init__(self, prog, message):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose ``error`` raises ``UsageError`` instead of printing the usage
    block and exiting, so that ``main`` reports one line and returns 2."""

    def error(self, message):
        raise UsageError(self.prog, message)


# ---------------------------------------------------------------------------------------------
# Flag values


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _seed(text):
    """A random seed: an integer in ``0 .. 2**31 − 1`` (what every PRNG here accepts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2**31:
        raise argparse.ArgumentTypeError(f"expected a seed in 0..{2**31 - 1}, got {value}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _batch_size(text):
    """A positive integer, or ``full`` for full-batch gradient descent (note 002)."""
    if text == "full":
        return None
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'full', got {text!r}") from None


def _layers(text):
    """``"784,128,10"`` -> ``[784, 128, 10]``: at least two positive integers."""
    parts = [p.strip() for p in text.split(",")]
    sizes = []
    for p in parts:
        if not p.isdigit() or int(p) < 1:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated positive integers like 784,128,10, got {text!r} "
                f"({p!r} is not a positive integer)")
        sizes.append(int(p))
    if len(sizes) < 2:
        raise argparse.ArgumentTypeError(
            f"expected at least an input and an output size like 784,128,10, got {text!r}")
    return sizes


def _check_loss_output(prog, loss, output):
    """Refuse a loss/output pair that makes no sense (see the module docstring)."""
    allowed = LOSS_OUTPUTS[loss]
    if output not in allowed:
        raise UsageError(prog, f"--loss {loss} needs --output {' or '.join(allowed)} (outputs that "
                               f"are probabilities), got --output {output}")


def _check_image_layers(prog, layers, dataset):
    if layers[0] != IMAGE_PIXELS or layers[-1] != NUM_CLASSES:
        raise UsageError(prog, f"argument --layers: {dataset} images have {IMAGE_PIXELS} pixels and "
                               f"{NUM_CLASSES} classes, so the layers must start at {IMAGE_PIXELS} "
                               f"and end at {NUM_CLASSES}; got {','.join(map(str, layers))}")


def _dash(layers):
    return "-".join(map(str, layers))


# ---------------------------------------------------------------------------------------------
# Shared helpers: data, targets, scoring, JSON


def _load_data(prog, name, data_dir, download):
    """``(x_train, y_train), (x_test, y_test)`` of ``name``: flat float32 pixels in [0, 1], int32
    labels. ``data_dir`` is the folder holding the four files, or a root holding ``<name>/``."""
    folder = None
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if (folder / name).is_dir():
            folder = folder / name
    try:
        (xtr, ytr), (xte, yte) = datasets.load_dataset(name, folder, download)
    except (OSError, datasets.IDXError, datasets.DatasetError, datasets.ChecksumError) as e:
        raise DataUnavailable(prog, str(e)) from None
    return datasets.prepare(xtr, ytr), datasets.prepare(xte, yte)


def _targets(loss, labels):
    """Integer labels for cross-entropy; one-hot rows ``(N, 10)`` for MSE and binary cross-entropy."""
    if loss == "cross-entropy":
        return labels
    return datasets.one_hot(labels, NUM_CLASSES)


def predict(model, params, k, x):
    """The network's outputs on ``x``, ``(N, 10)``; for ``k > 1`` models stacked along a leading
    axis, their averaged prediction ``p̄ = (1/K) Σ_k p_k``."""
    x = jnp.asarray(x)
    if k == 1:
        return np.asarray(jax.jit(model.apply)(params, x))
    outputs = jax.jit(jax.vmap(model.apply, in_axes=(0, None)))(params, x)
    return np.asarray(jnp.mean(outputs, axis=0))


def model_scores(model, loss, params, k, x, labels):
    """``(loss, accuracy)`` on ``x`` by ``fnnet.evaluate``: scalars for one model, arrays of ``k``
    for ``k`` stacked models."""
    objective = losses.get(loss)
    fn = lambda p, xs, ys: evaluate(model, objective, p, xs, ys)
    if k > 1:
        fn = jax.vmap(fn, in_axes=(0, None, None))
    value, accuracy = jax.jit(fn)(params, jnp.asarray(x), jnp.asarray(_targets(loss, labels)))
    return np.asarray(value), np.asarray(accuracy)


def summarize_test(loss, labels, model_loss, model_accuracy, probs=None):
    """The test metrics written to ``metrics.json``.

    One model (scalar ``model_loss``, ``model_accuracy``): ``test_accuracy`` and ``test_loss``.
    ``K`` models (sequences of ``K``): the ensemble is scored by its averaged prediction ``probs``
    ``= p̄`` (class ``argmax p̄``, loss ``L(p̄, y)``), giving ``test_accuracy`` and ``test_loss``;
    each model's own numbers are ``model_test_accuracy`` and ``model_test_loss``, their means
    ``mean_test_accuracy`` and ``mean_test_loss``.
    """
    if np.ndim(model_accuracy) == 0:
        return {"test_accuracy": float(model_accuracy), "test_loss": float(model_loss)}
    objective = losses.get(loss)
    accuracy, value = jax.jit(lambda p, y: (metrics.accuracy(p, y), objective.value(p, y)))(
        jnp.asarray(probs), jnp.asarray(_targets(loss, labels)))
    return {
        "test_accuracy": float(accuracy),
        "test_loss": float(value),
        "model_test_accuracy": np.asarray(model_accuracy, float).tolist(),
        "model_test_loss": np.asarray(model_loss, float).tolist(),
        "mean_test_accuracy": float(np.mean(model_accuracy)),
        "mean_test_loss": float(np.mean(model_loss)),
    }


def _print_results(results, k):
    if k == 1:
        print(f"test accuracy {results['test_accuracy']:.2%}  (test loss {results['test_loss']:.4f})")
        return
    for i, (a, l) in enumerate(zip(results["model_test_accuracy"], results["model_test_loss"])):
        print(f"model {i}: test accuracy {a:.2%}  (test loss {l:.4f})")
    print(f"mean of {k} models: test accuracy {results['mean_test_accuracy']:.2%}  "
          f"(test loss {results['mean_test_loss']:.4f})")
    print(f"ensemble of {k} (averaged probabilities): test accuracy {results['test_accuracy']:.2%}  "
          f"(test loss {results['test_loss']:.4f})")


def _plain(value):
    """``value`` as JSON data: arrays become lists, non-finite floats ``None``."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        return _plain(np.asarray(value).tolist())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path, data):
    """Write ``data`` as indented JSON to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_plain(data), f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0o600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# ---------------------------------------------------------------------------------------------
# fnnet train


def _train_config(args, lr):
    return {
        "dataset": args.dataset, "layers": args.layers, "activation": args.activation,
        "output": args.output, "loss": args.loss, "optimizer": args.optimizer, "lr": lr,
        "epochs": args.epochs, "batch_size": args.batch_size, "grads": args.grads,
        "seed": args.seed, "ensemble": args.ensemble,
    }


def _check_resume(prog, out, state_path, config):
    """A resumed run must continue the same run: ``config.json`` in ``out`` must agree on every
    setting but ``epochs``, and the state checkpoint must be readable."""
    if not state_path.exists():
        raise UsageError(prog, f"argument --resume: nothing to resume, {state_path} does not exist "
                               f"(train without --resume first)")
    try:
        saved = json.loads((out / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise UsageError(prog, f"argument --resume: cannot read {out / 'config.json'} ({e})") from None
    differ = [f"{k} {saved.get(k)!r} -> {config[k]!r}" for k in RESUME_KEYS if saved.get(k) != config[k]]
    if differ:
        raise UsageError(prog, f"argument --resume: the run in {out} was trained with other settings "
                               f"({'; '.join(differ)}); resume with the same flags")
    try:
        checkpoints.load(state_path)
    except (OSError, ValueError) as e:
        raise UsageError(prog, f"argument --resume: {e}") from None


def _fit_recording_divergence(**kwargs):
    """``fit(**kwargs)``, returning ``(params, history, messages)`` where ``messages`` are fit's
    non-finite-loss warnings (other warnings are shown as usual)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        params, history = fit(**kwargs)
    messages = []
    for w in caught:
        if issubclass(w.category, RuntimeWarning) and "non-finite" in str(w.message):
            messages.append(str(w.message))
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return params, history, messages


def cmd_train(args):
    """Train an MLP on MNIST or Fashion-MNIST with ``fnnet.fit``; write ``model.npz``,
    ``metrics.json``, ``curves.png`` (and ``config.json``, ``train_state.npz``) into ``--out``."""
    prog = args.prog
    _check_image_layers(prog, args.layers, args.dataset)
    _check_loss_output(prog, args.loss, args.output)
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    config = _train_config(args, lr)
    out = Path(args.out) if args.out is not None else Path("runs") / args.dataset
    state_path = out / "train_state.npz"
    if args.resume:
        _check_resume(prog, out, state_path, config)

    (xtr, ytr), (xte, yte) = _load_data(prog, args.dataset, args.data_dir, not args.no_download)
    if args.batch_size is not None and args.batch_size > len(xtr):
        raise UsageError(prog, f"argument --batch-size: {args.batch_size} is larger than the "
                               f"{len(xtr)} training examples (use --batch-size full for full-batch "
                               f"gradient descent)")
    model = mlp(args.layers, args.activation, args.output)
    optimizer = optim.by_name(args.optimizer, lr)
    k = args.ensemble
    write_json(out / "config.json", config)
    if not args.quiet:
        batch = "full batch" if args.batch_size is None else f"batch {args.batch_size}"
        models = f", {k} models" if k > 1 else ""
        print(f"fnnet train: {args.dataset} {_dash(args.layers)} {args.activation}/{args.output}, "
              f"{args.loss}, {args.optimizer} lr {lr:g}, {args.epochs} epochs of {batch}, "
              f"{args.grads} gradients, seed {args.seed}{models} -> {out}", flush=True)

    t0 = time.perf_counter()
    params, history, diverged = _fit_recording_divergence(
        model=model, loss=args.loss, optimizer=optimizer, train=(xtr, _targets(args.loss, ytr)),
        epochs=args.epochs, batch_size=args.batch_size, key=jax.random.PRNGKey(args.seed),
        validation=(xte, _targets(args.loss, yte)), grads=args.grads,
        ensemble=k if k > 1 else None, progress=not args.quiet, checkpoint=state_path,
        resume=state_path if args.resume else None, dtype=jnp.float32)
    seconds = time.perf_counter() - t0
    for message in diverged:
        print(f"fnnet train: WARNING: training diverged: {message} The checkpoint and metrics "
              f"written are those of the last parameters whose loss was finite.",
              file=sys.stderr, flush=True)

    # fit scored the final params on the test set (its validation data) at the last epoch's end.
    probs = predict(model, params, k, xte) if k > 1 else None
    results = summarize_test(args.loss, yte, history["val_loss"][-1], history["val_accuracy"][-1],
                             probs)
    final = {"train_loss": history["loss"][-1], "train_accuracy": history["train_accuracy"][-1],
             "epochs_trained": history["epoch"][-1]}
    checkpoint = checkpoints.save(out / "model.npz", params, **config, **final, **results,
                                  dtype="float32", diverged=bool(diverged))
    write_json(out / "metrics.json", {"config": config, **results, **final, "seconds": seconds,
                                      "diverged": diverged, "history": history})
    plots.plot_history(history, out / "curves.png",
                       title=f"{args.dataset} {_dash(args.layers)}, {args.optimizer} lr {lr:g}")
    _print_results(results, k)
    if not args.quiet:
        print(f"trained in {seconds:.1f} s; wrote {checkpoint}, {out / 'metrics.json'}, "
              f"{out / 'curves.png'}")
    return 0


# ---------------------------------------------------------------------------------------------
# fnnet evaluate


def _model_from_metadata(prog, path, meta):
    """``(model, k)``: the network and its number of stacked models, rebuilt from a checkpoint's
    metadata; UsageError naming what is missing or invalid if they cannot be."""
    missing = [key for key in MODEL_KEYS if key not in meta]
    if missing:
        raise UsageError(prog, f"argument CHECKPOINT: {path} is not a model checkpoint written by "
                               f"'fnnet train' (its metadata lacks {', '.join(missing)})")
    layers, k = meta["layers"], meta["ensemble"]
    checks = {
        "dataset": meta["dataset"] in datasets.DATASETS,
        "layers": isinstance(layers, list) and len(layers) >= 2
        and all(type(n) is int and n > 0 for n in layers),
        "activation": meta["activation"] in HIDDEN_ACTIVATIONS,
        "output": meta["output"] in OUTPUTS,
        "loss": meta["loss"] in LOSSES,
        "ensemble": type(k) is int and k >= 1,
    }
    bad = [f"{key}={meta[key]!r}" for key, ok in checks.items() if not ok]
    if bad:
        raise UsageError(prog, f"argument CHECKPOINT: {path} has invalid metadata ({', '.join(bad)})")
    _check_image_layers(prog, layers, meta["dataset"])
    _check_loss_output(prog, meta["loss"], meta["output"])
    return mlp(layers, meta["activation"], meta["output"]), k


def _param_template(model, k):
    """Shapes and dtypes of the params ``fnnet train`` saves: float32, stacked ``k`` deep if ``k > 1``."""
    init = lambda key: model.init(key, jnp.float32)
    if k == 1:
        return jax.eval_shape(init, jax.random.PRNGKey(0))
    return jax.eval_shape(jax.vmap(init), jax.random.split(jax.random.PRNGKey(0), k))


def _read_checkpoint(prog, path, like=None):
    try:
        return checkpoints.load(path, like=like)
    except (OSError, ValueError) as e:  # missing, a folder, unreadable, corrupted, wrong shapes
        raise UsageError(prog, f"argument CHECKPOINT: {e}") from None


def cmd_evaluate(args):
    """Rebuild the network from a checkpoint's metadata, score it on the test set, and write
    ``confusion.png``, ``misclassified.png`` and ``metrics.json``."""
    prog = args.prog
    path = Path(args.checkpoint)
    _, meta = _read_checkpoint(prog, path)
    model, k = _model_from_metadata(prog, path, meta)
    params, _ = _read_checkpoint(prog, path, like=_param_template(model, k))
    _, (xte, yte) = _load_data(prog, meta["dataset"], args.data_dir, not args.no_download)
    out = Path(args.out) if args.out is not None else path.parent / "evaluation"

    probs = predict(model, params, k, xte)
    model_loss, model_accuracy = model_scores(model, meta["loss"], params, k, xte, yte)
    results = summarize_test(meta["loss"], yte, model_loss, model_accuracy, probs)
    predicted = np.asarray(metrics.predicted_classes(probs))
    confusion = np.asarray(metrics.confusion_matrix(jnp.asarray(probs), jnp.asarray(yte), NUM_CLASSES))
    wrong = np.flatnonzero(predicted != yte)
    shown = wrong[:MISCLASSIFIED_SHOWN]
    who = f"ensemble of {k}" if k > 1 else "model"
    plots.plot_confusion(confusion, out / "confusion.png",
                         title=f"{meta['dataset']} test set, {who}: {results['test_accuracy']:.2%}")
    plots.plot_digits(xte[shown], out / "misclassified.png", labels=yte[shown],
                      predictions=predicted[shown],
                      title=f"{len(shown)} of {len(wrong)} misclassified test images: "
                            f"predicted (true)")
    write_json(out / "metrics.json", {
        "checkpoint": str(path), "dataset": meta["dataset"], "n_test": len(yte), **results,
        "misclassified": len(wrong), "misclassified_shown": shown, "confusion_matrix": confusion,
        "config": meta,
    })
    print(f"{path}: {meta['dataset']} {_dash(meta['layers'])} {meta['activation']}/{meta['output']}, "
          f"{meta['loss']}" + (f", {k} models" if k > 1 else ""))
    _print_results(results, k)
    print(f"{len(wrong)} of {len(yte)} test images misclassified; wrote {out / 'confusion.png'}, "
          f"{out / 'misclassified.png'}, {out / 'metrics.json'}")
    return 0


# ---------------------------------------------------------------------------------------------
# fnnet gradcheck


def _gradcheck_problem(model, sizes, loss, batch, seed):
    """Random ``params, x, y`` as numpy arrays, to be cast to each dtype checked.

    ``params`` come from ``model.init`` (float32, compiled once); pixel-like inputs ``x ~ U[0, 1)``;
    targets are integer labels (cross-entropy), 0/1 entries (binary cross-entropy) or ``U[0, 1)``
    (MSE), drawn with numpy so that no random-number kernel is compiled per array and dtype.
    """
    params = jax.tree_util.tree_map(np.asarray, jax.jit(model.init)(jax.random.PRNGKey(seed)))
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(batch, sizes[0]))
    if loss == "cross-entropy":
        y = rng.integers(0, sizes[-1], size=batch).astype(np.int32)
    elif loss == "binary-cross-entropy":
        y = (rng.uniform(size=(batch, sizes[-1])) < 0.5).astype(np.float64)
    else:
        y = rng.uniform(size=(batch, sizes[-1]))
    return params, x, y


def _as_dtype(tree, dtype):
    """Every floating array of ``tree`` as a jax array of ``dtype``; integer arrays unchanged."""
    cast = lambda a: jnp.asarray(a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a)
    return jax.tree_util.tree_map(cast, tree)


def _verdict(report, tol, fd_tol):
    """``(passed, line)``: the worst relative error ``‖g_manual − g_jax‖∞ / ‖g_jax‖∞`` over the
    parameters against ``tol``, and with finite differences the worst directional-derivative error
    against ``fd_tol``."""
    ok = report.ok(tol)
    line = f"max relative error {report.max_rel:.3e} {'<=' if ok else '>'} {tol:g}"
    fd = [r.fd_rel for r in report.rows if r.fd_rel is not None]
    if fd:
        fd_ok = max(fd) <= fd_tol
        line += f", finite differences {max(fd):.3e} {'<=' if fd_ok else '>'} {fd_tol:g}"
        ok = ok and fd_ok
    return ok, f"{report.dtype}: {'PASS' if ok else 'FAIL'}  {line}"


def cmd_gradcheck(args):
    """Compare the hand-derived backward with ``jax.grad`` per parameter, in float32 and float64.

    Exit status 0 when both dtypes pass their tolerance, 1 otherwise.
    """
    _check_loss_output(args.prog, args.loss, args.output)
    model = mlp(args.layers, args.activation, args.output)
    problem = _gradcheck_problem(model, args.layers, args.loss, args.batch, args.seed)
    print(f"gradcheck: {_dash(args.layers)} {args.activation}/{args.output}, {args.loss}, "
          f"batch {args.batch}, seed {args.seed}")
    verdicts = []
    settings = (("float32", args.tol32, args.fd_tol32), ("float64", args.tol64, args.fd_tol64))
    for dtype, tol, fd_tol in settings:
        with jax.enable_x64(dtype == "float64"):
            params, x, y = _as_dtype(problem, dtype)
            report = check_grads(model, losses.get(args.loss), params, x, y,
                                 finite_differences=args.finite_differences)
        print()
        print(report)
        verdicts.append(_verdict(report, tol, fd_tol))
    print()
    for _, line in verdicts:
        print(line)
    return 0 if all(ok for ok, _ in verdicts) else 1


# ---------------------------------------------------------------------------------------------
# fnnet bench


BENCH_HELP = """\
usage: fnnet bench [ARGS ...]

Run experiments/benchmark.py (the benchmark of fnnet's training step against jax.grad and other
implementations): every argument after 'bench' is passed to experiments.benchmark.main unchanged,
so 'fnnet bench --help' shows the benchmark's own flags. It needs the fnnet repository's
experiments package: run from the repository root, or install fnnet with 'pip install -e .'."""


def _exit_code(code):
    """What ``sys.exit(code)`` would exit with: ``None`` is 0, an int itself, anything else 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def cmd_bench(argv):
    """Forward ``argv`` to ``experiments.benchmark.main`` (imported only now)."""
    try:
        benchmark = importlib.import_module("experiments.benchmark")
    except ImportError as e:
        if "-h" in argv or "--help" in argv:
            print(BENCH_HELP)
            return 0
        print(f"fnnet bench: error: cannot import experiments.benchmark ({e}); 'fnnet bench' runs "
              f"experiments/benchmark.py of the fnnet repository: run it from the repository root "
              f"or install fnnet with 'pip install -e .'", file=sys.stderr)
        return 1
    saved_argv0 = sys.argv[0] if sys.argv else None
    if sys.argv:
        sys.argv[0] = "fnnet bench"  # the program name argparse shows in the benchmark's messages
    try:
        return _exit_code(benchmark.main(list(argv)))
    except SystemExit as e:
        return _exit_code(e.code)
    finally:
        if saved_argv0 is not None:
            sys.argv[0] = saved_argv0


# ---------------------------------------------------------------------------------------------
# The parser and main


def _add_network_flags(p, layers):
    p.add_argument("--layers", type=_layers, default=_layers(layers), metavar="N,N,...",
                   help=f"layer sizes, input first (default: {layers})")
    p.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default="relu",
                   help="hidden-layer activation (default: relu)")
    p.add_argument("--output", choices=OUTPUTS, default="softmax",
                   help="output activation (default: softmax)")
    p.add_argument("--loss", choices=LOSSES, default="cross-entropy",
                   help="loss (default: cross-entropy); cross-entropy needs --output softmax, "
                        "binary-cross-entropy --output sigmoid or softmax")


def _add_data_flags(p):
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="folder with the four .gz files, or a root holding mnist/ and "
                        "fashion-mnist/ (default: $FNNET_DATA_DIR, then the cache)")
    p.add_argument("--no-download", action="store_true",
                   help="never download; fail when the files are not found")


EXAMPLES = """\
examples:
  fnnet train --dataset mnist                 784-128-10 ReLU/softmax, about 98% test accuracy
  fnnet train --optimizer adam --ensemble 5   five models, scored alone and averaged
  fnnet evaluate runs/mnist/model.npz         confusion matrix and misclassified digits
  fnnet gradcheck --layers 784,32,10          hand-derived backward vs jax.grad, float32 and float64
  fnnet bench --help                          the benchmark's own flags"""


def build_parser():
    """The ``fnnet`` argument parser (``bench`` is listed here; its arguments go to the benchmark)."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="fnnet", formatter_class=formatter,
                     description="fnnet: neural networks from scratch in JAX, every gradient derived "
                                 "by hand and checked against jax.grad.",
                     epilog=EXAMPLES)
    parser.add_argument("--version", action="version", version="fnnet 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train an MLP on MNIST or Fashion-MNIST",
                           description=inspect.cleandoc(cmd_train.__doc__) + "\n\nThe defaults "
                           "train 784-128-10 with momentum (lr 0.1), 10 epochs of batch 128: about "
                           "98% test accuracy on MNIST.", formatter_class=formatter)
    train.add_argument("--dataset", choices=datasets.DATASETS, default="mnist",
                       help="dataset (default: mnist)")
    _add_network_flags(train, "784,128,10")
    train.add_argument("--optimizer", choices=optim.NAMES, default=DEFAULT_OPTIMIZER,
                       help=f"optimizer (default: {DEFAULT_OPTIMIZER})")
    train.add_argument("--lr", type=_positive_float,
                       help="learning rate > 0 (default: " + ", ".join(
                           f"{lr:g} for {name}" for name, lr in DEFAULT_LR.items()) + ")")
    train.add_argument("--epochs", type=_positive_int, default=DEFAULT_EPOCHS,
                       help=f"epochs (default: {DEFAULT_EPOCHS})")
    train.add_argument("--batch-size", type=_batch_size, default=DEFAULT_BATCH, metavar="N|full",
                       help=f"minibatch size, or 'full' for full-batch gradient descent "
                            f"(default: {DEFAULT_BATCH})")
    train.add_argument("--grads", choices=("manual", "autodiff"), default="manual",
                       help="hand-derived backward (manual) or jax.grad (default: manual)")
    train.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    train.add_argument("--ensemble", type=_positive_int, default=1, metavar="K",
                       help="train K models with different seeds in one program (default: 1)")
    train.add_argument("--out", type=Path, metavar="DIR",
                       help="output folder (default: runs/<dataset>)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its train_state.npz (saved every "
                            "epoch) up to --epochs; every other setting must be the same")
    train.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    _add_data_flags(train)
    train.set_defaults(run=cmd_train)

    ev = sub.add_parser("evaluate", help="score a checkpoint written by 'fnnet train'",
                        description=inspect.cleandoc(cmd_evaluate.__doc__), formatter_class=formatter)
    ev.add_argument("checkpoint", metavar="CHECKPOINT", help="model.npz written by 'fnnet train'")
    ev.add_argument("--out", type=Path, metavar="DIR",
                    help="output folder (default: evaluation/ beside the checkpoint)")
    _add_data_flags(ev)
    ev.set_defaults(run=cmd_evaluate)

    check = sub.add_parser("gradcheck", help="hand-derived gradients vs jax.grad, float32 and float64",
                        description=inspect.cleandoc(cmd_gradcheck.__doc__), formatter_class=formatter)
    _add_network_flags(check, "784,32,10")
    check.add_argument("--batch", type=_positive_int, default=16, help="examples (default: 16)")
    check.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    check.add_argument("--finite-differences", action="store_true",
                    help="also compare each gradient's directional derivative with central "
                         "finite differences (L(p + εv) − L(p − εv)) / 2ε")
    check.add_argument("--tol32", type=_positive_float, default=1e-4,
                    help="float32 relative-error tolerance (default: 1e-4)")
    check.add_argument("--tol64", type=_positive_float, default=1e-10,
                    help="float64 relative-error tolerance (default: 1e-10)")
    check.add_argument("--fd-tol32", type=_positive_float, default=5e-2,
                    help="float32 finite-difference tolerance (default: 5e-2, ε = 1e-2)")
    check.add_argument("--fd-tol64", type=_positive_float, default=1e-5,
                    help="float64 finite-difference tolerance (default: 1e-5, ε = 1e-6)")
    check.set_defaults(run=cmd_gradcheck)

    sub.add_parser("bench", help="run experiments/benchmark.py (arguments forwarded)", add_help=False)
    return parser


def main(argv=None) -> int:
    """Run ``fnnet`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if argv and argv[0] == "bench":
        return cmd_bench(argv[1:])
    try:
        args, unknown = build_parser().parse_known_args(argv)
        args.prog = f"fnnet {args.command}"
        if unknown:
            raise UsageError(args.prog, f"unrecognized arguments: {' '.join(unknown)}")
        return args.run(args)
    except UsageError as e:
        message = " ".join(str(e).split("\n"))
        print(f"{e.prog}: error: {message} (see '{e.prog} --help')", file=sys.stderr)
        return 2
    except DataUnavailable as e:
        print(f"{e.prog}: error: {e}", file=sys.stderr)
        return 1
    except SystemExit as e:  # --help and --version
        return _exit_code(e.code)


if __name__ == "__main__":
    sys.exit(main())
