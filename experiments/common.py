"""What every experiment shares: ``--out`` and ``--quick`` flags, ``metrics.json``, a printed table,
and loading MNIST as flat float arrays."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def parser(description, default_out):
    """An argparse parser with the flags every experiment takes."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs") / default_out,
                   help=f"folder for figures and metrics.json (default: runs/{default_out})")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, a few seconds: what the test suite runs")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return p


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, "__array__"):
        return _plain(np.asarray(value).tolist())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_metrics(out, metrics):
    """Write ``metrics`` (numbers, strings, lists, dicts, arrays) to ``out/metrics.json`` atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".metrics-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_plain(metrics), f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out / "metrics.json")
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out / "metrics.json"


def table(rows, headers):
    """A plain-text table: ``rows`` is a list of lists, floats shown with 4 significant digits."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in cells]
    return "\n".join(out)


def load_mnist_flat(quick=False, n_quick=2000, dtype=np.float32):
    """MNIST as ``(x_train, y_train), (x_test, y_test), source``: flat ``(N, 784)`` floats in
    [0, 1], integer labels, and ``"mnist"`` or ``"synthetic"``. With ``quick``, the first ``n_quick``
    training images (and half as many test images); when the real files cannot be found, ``quick``
    falls back to ``fnnet.datasets.synthetic_mnist`` and ``source`` says so."""
    from fnnet import datasets

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
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    while len(times) < min_repeats or (len(times) < max_repeats and sum(times) < budget_s):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), len(times)


def run_mnist_classifier(argv, *, name, note, doc, model, loss, loss_label, description, config,
                         lr, batch_size, epochs, quick_epochs=3):
    """The experiment shared by the minibatch MNIST scripts: parse the flags (``--epochs``,
    ``--lr``, ``--batch-size`` on top of ``parser``'s), train ``model`` with minibatch SGD on one-hot
    targets, draw ``curves.png`` and ``confusion.png``, write and return ``metrics.json``.

    ``description`` names the network in titles (e.g. ``"784-40-10 tanh + MSE"``), ``loss_label``
    the loss in tables, ``config`` the network's settings recorded in the metrics.
    """
    import jax
    import jax.numpy as jnp

    import fnnet
    from fnnet import plots
    from fnnet.datasets import one_hot

    p = parser(doc, name)
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs (default {epochs}, {quick_epochs} with --quick)")
    p.add_argument("--lr", type=float, default=lr, help=f"learning rate (default {lr})")
    p.add_argument("--batch-size", type=int, default=batch_size,
                   help=f"minibatch size (default {batch_size})")
    args = p.parse_args(argv)
    epochs = args.epochs if args.epochs is not None else (quick_epochs if args.quick else epochs)
    if epochs < 1:
        p.error(f"--epochs must be at least 1, got {epochs}")

    (xtr, ytr), (xte, yte), source = load_mnist_flat(quick=args.quick)
    ytr_hot, yte_hot = one_hot(ytr, 10, np.float32), one_hot(yte, 10, np.float32)
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
        "quick": args.quick,
        "seed": args.seed,
        "data": source,
        "n_train": len(xtr),
        "n_test": len(xte),
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
