"""What every experiment shares: ``--out``, ``--quick`` and ``--seed`` flags, ``metrics.json``, a
printed table, timing, and loading MNIST as flat float arrays.

Each experiment runs from the repository root as ``python -m experiments.NAME [--quick] [--out DIR]
[--seed S]``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

import fnnet
from fnnet import datasets, plots
from fnnet.bench.harness import median, time_calls
from fnnet.bench.report import table
from fnnet.io import write_json

__all__ = ["HISTORY_FIELDS", "cpu_model", "data_entries", "fit_and_test", "host_init",
           "interleaved_times", "load_mnist_flat", "load_mnist_split", "median_time",
           "parse_with_epochs", "parser", "predict", "rel_error", "run_mnist_classifier",
           "subplots", "table", "write_metrics"]

HISTORY_FIELDS = ("epoch", "loss", "train_accuracy", "val_loss", "val_accuracy",
                  "examples_per_second", "seconds")


def parser(description, name):
    """An argparse parser for ``python -m experiments.NAME`` with the flags every experiment takes
    (``--out`` defaults to ``runs/NAME``)."""
    p = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs") / name,
                   help=f"folder for figures and metrics.json (default: runs/{name})")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, a few seconds: what the test suite runs")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return p


def subplots(nrows=1, ncols=1, *, figsize):
    """``(figure, axes)`` as ``pyplot.subplots`` makes them, but a plain ``matplotlib`` ``Figure``:
    no pyplot state, no backend chosen (``fnnet.plots.save_figure`` writes it)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols)


def write_metrics(out, metrics):
    """Write ``metrics`` (numbers, strings, lists, dicts, arrays) to ``out/metrics.json`` atomically
    (``fnnet.io.write_json``: NaN and infinities become ``null``); return its path."""
    return write_json(Path(out) / "metrics.json", metrics)


def load_mnist_flat(quick=False, n_quick=2000, dtype=np.float32):
    """MNIST as ``(x_train, y_train), (x_test, y_test), source``: flat ``(N, 784)`` floats in
    [0, 1], integer labels, and ``"mnist"`` or ``"synthetic"``. With ``quick``, the first ``n_quick``
    training images (and half as many test images); when the real files cannot be found, ``quick``
    falls back to ``fnnet.datasets.synthetic_mnist`` and ``source`` says so."""
    try:
        (xtr, ytr), (xte, yte) = datasets.load_mnist(download=not quick)
        source = "mnist"
    except (FileNotFoundError, OSError):
        if not quick:
            raise
        (xtr, ytr), (xte, yte) = datasets.synthetic_mnist(n_quick, n_quick // 2)
        source = "synthetic"
    if quick:
        xtr, ytr, xte, yte = xtr[:n_quick], ytr[:n_quick], xte[:n_quick // 2], yte[:n_quick // 2]
    return datasets.prepare(xtr, ytr, dtype), datasets.prepare(xte, yte, dtype), source


def load_mnist_split(quick=False, n_quick=2000, validation=5000, seed=0, images=False):
    """MNIST as ``train, validation, test, source`` (each split an ``(x, y)`` pair):
    ``load_mnist_flat``'s data with ``validation`` rows held out of the training set at random
    (``fnnet.datasets.hold_out`` with ``seed``), so that choices are made on them and the test set
    is scored once. ``images=True`` gives NHWC ``(N, 28, 28, 1)`` images instead of flat rows."""
    (xtr, ytr), test, source = load_mnist_flat(quick=quick, n_quick=n_quick)
    train, val = datasets.hold_out(xtr, ytr, validation, seed=seed)
    if images:
        train, val, test = ((x.reshape(-1, 28, 28, 1), y) for x, y in (train, val, test))
    return train, val, test, source


def fit_and_test(model, optimizer, train, validation, test, *, epochs, batch_size, seed,
                 loss="cross-entropy"):
    """``fnnet.fit`` on ``train`` (``validation`` scored after every epoch, for the curves), then
    ``test`` scored once in inference mode. Returns ``{"state", "history", "test_loss",
    "test_accuracy", "train_seconds", "compile_seconds"}``; ``state`` is the ``TrainState``
    (params and the model's running statistics)."""
    state, history = fnnet.fit(model, loss, optimizer, train, epochs=epochs,
                               batch_size=batch_size, key=jax.random.PRNGKey(seed),
                               validation=validation, dtype=jnp.float32)
    x, y = fnnet.to_device(*test, jnp.float32, "test")
    test_loss, test_acc = fnnet.evaluate(model, loss, state.params, x, y, batch_size=2000,
                                         state=state.model_state)
    return {"state": state, "history": {k: history[k] for k in HISTORY_FIELDS},
            "test_loss": float(test_loss), "test_accuracy": float(test_acc),
            "train_seconds": float(np.sum(history["seconds"])),
            "compile_seconds": float(history["compile_seconds"])}


def predict(model, params, x, *, state=(), chunk=1000):
    """``model.apply`` in inference mode on ``x``, ``chunk`` rows at a time (a CNN's activations
    for all 10,000 test images at once would take gigabytes); a numpy array."""
    apply = jax.jit(lambda p, s, xb: model.apply(p, xb, state=s))
    return np.concatenate([np.asarray(apply(params, state, jnp.asarray(x[i:i + chunk])))
                           for i in range(0, len(x), chunk)])


def rel_error(a, b):
    """The largest relative difference of the pytree ``a`` from the reference ``b``: over the
    leaves, ``max|a − b| / max|b|`` (the absolute difference where ``b`` is all zeros)."""
    worst = 0.0
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
        diff, scale = float(np.max(np.abs(u - v))), float(np.max(np.abs(v)))
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


def cpu_model():
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def interleaved_times(fns, *args, rounds=5, budget_s=0.0, max_rounds=50):
    """Wall seconds of each compiled ``fns[name](*args)``, in rounds that call every function once,
    so that a load that comes and goes on a shared machine hits them alike; the first call of each
    (compiling) is not timed. At least ``rounds`` rounds, more while under ``budget_s``, at most
    ``max_rounds``. Returns ``{name: [seconds per round]}``."""
    for fn in fns.values():
        jax.block_until_ready(fn(*args))
    times = {name: [] for name in fns}
    started, done = time.perf_counter(), 0
    while done < rounds or (done < max_rounds and time.perf_counter() - started < budget_s):
        done += 1
        for name, fn in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - t)
    return times


def median_time(fn, *args, budget_s=1.0, min_repeats=5, max_repeats=50):
    """Median wall time of ``fn(*args)``, the first call (compile) excluded; at least
    ``min_repeats`` calls, more while under ``budget_s``. Returns ``(median, repeats)``."""
    times = time_calls(lambda: jax.block_until_ready(fn(*args)), min_repeats, warmup=1,
                       budget_s=budget_s, max_repeats=max_repeats)
    return median(times), len(times)


def parse_with_epochs(p, argv, full, quick, what="epochs"):
    """Add ``--epochs`` to the parser ``p`` (``what`` names them in the help; default ``full``,
    ``quick`` with ``--quick``) and parse ``argv``. Returns ``(args, epochs)``."""
    p.add_argument("--epochs", type=int, default=None,
                   help=f"{what} (default {full}, {quick} with --quick)")
    args = p.parse_args(argv)
    epochs = args.epochs if args.epochs is not None else (quick if args.quick else full)
    if epochs < 1:
        p.error(f"--epochs must be at least 1, got {epochs}")
    return args, epochs


def split_scores(train, validation, test):
    """The six entries every MNIST experiment records: ``train/val/test_accuracy`` and
    ``_loss`` from three ``(loss, accuracy)`` pairs (validation held out, test scored once)."""
    splits = {"train": train, "val": validation, "test": test}
    return {**{f"{split}_accuracy": float(pair[1]) for split, pair in splits.items()},
            **{f"{split}_loss": float(pair[0]) for split, pair in splits.items()}}


def data_entries(args, source, n_train, n_test):
    """The metrics entries that say how an MNIST experiment ran and on which data."""
    return {"quick": args.quick, "seed": args.seed, "data": source, "n_train": n_train,
            "n_test": n_test}


def host_init(model, rng, dtype=np.float32):
    """Params shaped as ``model.init`` makes them, drawn with the numpy generator ``rng`` (the same
    numbers in every dtype, and no PRNG kernels to compile): every weight matrix ``(n_out, n_in)``
    ``~ N(0, 2/n_in)``, biases ``~ N(0, 0.1²)`` (non-zero, so their gradients are exercised too)."""
    shapes = jax.eval_shape(model.init, jax.ShapeDtypeStruct((2,), jnp.uint32))

    def draw(leaf):
        scale = np.sqrt(2.0 / leaf.shape[1]) if len(leaf.shape) == 2 else 0.1
        return jnp.asarray(rng.normal(0, scale, leaf.shape), dtype)

    return jax.tree_util.tree_map(draw, shapes)


def run_mnist_classifier(argv, *, name, note, doc, model, loss, loss_label, description, config,
                         lr, batch_size, epochs, quick_epochs=3, validation=5000,
                         quick_validation=200):
    """The experiment shared by the minibatch MNIST scripts: parse the flags (``--epochs``,
    ``--lr``, ``--batch-size`` on top of ``parser``'s), hold ``validation`` training images out
    (``quick_validation`` with ``--quick``), train ``model`` with minibatch SGD on one-hot targets
    of the rest, validating on the held-out images after every epoch, score the test set once at
    the end, draw ``curves.png`` and ``confusion.png``, write and return ``metrics.json``.

    ``description`` names the network in titles (e.g. ``"784-40-10 tanh + MSE"``), ``loss_label``
    the loss in tables, ``config`` the network's settings recorded in the metrics.
    """
    p = parser(doc, name)
    p.add_argument("--lr", type=float, default=lr, help=f"learning rate (default {lr})")
    p.add_argument("--batch-size", type=int, default=batch_size,
                   help=f"minibatch size (default {batch_size})")
    args, epochs = parse_with_epochs(p, argv, epochs, quick_epochs)
    (xtr, ytr), (xval, yval), (xte, yte), source = load_mnist_split(
        quick=args.quick, validation=quick_validation if args.quick else validation,
        seed=args.seed)
    ytr_hot, yval_hot, yte_hot = (datasets.one_hot(y, 10, np.float32) for y in (ytr, yval, yte))
    print(f"[{name}] {description}, SGD lr={args.lr}, batch {args.batch_size}, {epochs} epochs on "
          f"{len(xtr)} images ({len(xval)} held out for validation)", flush=True)
    state, history = fnnet.fit(model, loss, fnnet.optim.sgd(args.lr), (xtr, ytr_hot),
                               epochs=epochs, batch_size=args.batch_size,
                               key=jax.random.PRNGKey(args.seed), validation=(xval, yval_hot),
                               dtype=jnp.float32)
    params = state.params
    train_loss, train_acc = fnnet.evaluate(model, loss, params, xtr, ytr_hot)
    # fit scored the final params on the validation images after the last epoch
    val_loss, val_acc = history["val_loss"][-1], history["val_accuracy"][-1]
    test_loss, test_acc = fnnet.evaluate(model, loss, params, xte, yte_hot)  # once, at the end
    outputs = model.apply(params, jnp.asarray(xte))

    out = Path(args.out)
    plots.plot_history(history, out / "curves.png", title=f"note {note}: {description}, SGD "
                       f"lr={args.lr}, batch {args.batch_size} (validation: held out of training)")
    plots.plot_confusion(np.asarray(fnnet.metrics.confusion_matrix(outputs, yte, 10)),
                         out / "confusion.png", title=f"test set, {description}")

    train_seconds = float(np.sum(history["seconds"]))
    metrics = {
        "experiment": name,
        "note": note,
        **data_entries(args, source, len(xtr), len(xte)),
        "n_validation": len(xval),
        "config": {**config, "loss": loss, "optimizer": "sgd", "lr": args.lr,
                   "batch_size": args.batch_size, "epochs": epochs},
        **split_scores((train_loss, train_acc), (val_loss, val_acc), (test_loss, test_acc)),
        "train_seconds": train_seconds,
        "compile_seconds": float(history["compile_seconds"]),
        "diverged": history.get("diverged", []),
        "history": {k: history[k] for k in
                    ("epoch", "loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")},
        "figures": ["curves.png", "confusion.png"],
        "headline": {
            "train accuracy": float(train_acc),
            "validation accuracy": float(val_acc),
            "test accuracy": float(test_acc),
            f"test loss ({loss_label})": float(test_loss),
            "optimizer": f"minibatch SGD, lr {args.lr}, batch {args.batch_size}",
            "epochs": epochs,
            "training seconds": train_seconds,
            "data": f"{source}, {len(xtr)} train / {len(xval)} validation / {len(xte)} test",
        },
    }
    write_metrics(out, metrics)
    print(table([["train", float(train_loss), float(train_acc)],
                 ["validation", float(val_loss), float(val_acc)],
                 ["test (scored once)", float(test_loss), float(test_acc)]],
                ["split", loss_label, "accuracy"]))
    print(f"{epochs} epochs in {train_seconds:.1f}s; outputs in {out}")
    return metrics
