"""What every experiment shares: ``--out``, ``--quick`` and ``--seed`` flags, ``metrics.json``, a
printed table, timing, and loading MNIST as flat float arrays.

Each experiment runs from the repository root as ``python -m experiments.NAME [--quick] [--out DIR]
[--seed S]``.
"""

from __future__ import annotations

import argparse
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

__all__ = ["data_entries", "host_init", "load_mnist_flat", "median_time", "parse_with_epochs",
           "parser", "run_mnist_classifier", "subplots", "table", "write_metrics"]


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
                         lr, batch_size, epochs, quick_epochs=3):
    """The experiment shared by the minibatch MNIST scripts: parse the flags (``--epochs``,
    ``--lr``, ``--batch-size`` on top of ``parser``'s), train ``model`` with minibatch SGD on one-hot
    targets, draw ``curves.png`` and ``confusion.png``, write and return ``metrics.json``.

    ``description`` names the network in titles (e.g. ``"784-40-10 tanh + MSE"``), ``loss_label``
    the loss in tables, ``config`` the network's settings recorded in the metrics.
    """
    p = parser(doc, name)
    p.add_argument("--lr", type=float, default=lr, help=f"learning rate (default {lr})")
    p.add_argument("--batch-size", type=int, default=batch_size,
                   help=f"minibatch size (default {batch_size})")
    args, epochs = parse_with_epochs(p, argv, epochs, quick_epochs)
    (xtr, ytr), (xte, yte), source = load_mnist_flat(quick=args.quick)
    ytr_hot, yte_hot = datasets.one_hot(ytr, 10, np.float32), datasets.one_hot(yte, 10, np.float32)
    print(f"[{name}] {description}, SGD lr={args.lr}, batch {args.batch_size}, {epochs} epochs on "
          f"{len(xtr)} images", flush=True)
    params, history = fnnet.fit(model, loss, fnnet.optim.sgd(args.lr), (xtr, ytr_hot), epochs=epochs,
                                batch_size=args.batch_size, key=jax.random.PRNGKey(args.seed),
                                validation=(xte, yte_hot), dtype=jnp.float32)
    train_loss, train_acc = fnnet.evaluate(model, loss, params, xtr, ytr_hot)
    # fit evaluated the final params on the test set after the last epoch
    test_loss, test_acc = history["val_loss"][-1], history["val_accuracy"][-1]
    outputs = model.apply(params, jnp.asarray(xte))

    out = Path(args.out)
    plots.plot_history(history, out / "curves.png", title=f"note {note}: {description}, SGD "
                       f"lr={args.lr}, batch {args.batch_size}")
    plots.plot_confusion(np.asarray(fnnet.metrics.confusion_matrix(outputs, yte, 10)),
                         out / "confusion.png", title=f"test set, {description}")

    train_seconds = float(np.sum(history["seconds"]))
    metrics = {
        "experiment": name,
        "note": note,
        **data_entries(args, source, len(xtr), len(xte)),
        "config": {**config, "loss": loss, "optimizer": "sgd", "lr": args.lr,
                   "batch_size": args.batch_size, "epochs": epochs},
        "train_accuracy": float(train_acc),
        "test_accuracy": float(test_acc),
        "train_loss": float(train_loss),
        "test_loss": float(test_loss),
        "train_seconds": train_seconds,
        "compile_seconds": float(history["compile_seconds"]),
        "diverged": history.get("diverged", []),
        "history": {k: history[k] for k in
                    ("epoch", "loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")},
        "figures": ["curves.png", "confusion.png"],
        "headline": {
            "train accuracy": float(train_acc),
            "test accuracy": float(test_acc),
            f"test loss ({loss_label})": float(test_loss),
            "optimizer": f"minibatch SGD, lr {args.lr}, batch {args.batch_size}",
            "epochs": epochs,
            "training seconds": train_seconds,
            "data": f"{source}, {len(xtr)} train / {len(xte)} test",
        },
    }
    write_metrics(out, metrics)
    print(table([["train", float(train_loss), float(train_acc)],
                 ["test", float(test_loss), float(test_acc)]], ["split", loss_label, "accuracy"]))
    print(f"{epochs} epochs in {train_seconds:.1f}s; outputs in {out}")
    return metrics
