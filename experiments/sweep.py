"""A learning-rate sweep in one program: K copies of a 784-128-10 network (ReLU, softmax,
cross-entropy), one per learning rate, trained together by ``fnnet.fit(..., lrs=[...])``.

Every update is the recipe of note 003 (experiments/NOTES.md): a forward pass keeping what the
backward needs, the hand-derived backward, a gradient-descent step ``W ← W − α_k dW``; with the
softmax/cross-entropy rule ``dZ = (A − Y)/N`` of note 002 and the Dense/ReLU rules of note 000.
``fit`` ``jax.vmap``s the whole epoch over a leading model axis of the parameters and optimizer
state, so the K models, each with its own rate ``α_k`` in its optimizer state, run as one compiled
``lax.scan`` per epoch. Every model starts from the same key: the same initial weights and the same
minibatch order, so only the rate differs.

What is measured:

- final test accuracy against learning rate (8 rates log-spaced from 1e-3 to 1, log x axis), after
  3 epochs of minibatch SGD (batches of 128) on all 60,000 training images;
- the wall time of the one K-model program against K separate ``fit`` runs with the same epochs,
  data and key (both timed end to end including compilation, and training alone), and their ratio;
- that the two agree: per rate, the largest absolute difference between the final parameters and
  between the final test accuracies of the vmapped model and its separate run. Both compute in
  float32; batching the matrix products over models may sum in a different order, so they agree to
  float32 rounding, which gradient descent can amplify over many steps at the largest rates. So
  the same comparison is also made after a single step: one vmapped ``fnnet.train_step`` for all
  rates against the step for each rate alone, from the same parameters on the same minibatch.

``--quick``: K = 3 rates (1e-2, 1e-1, 1), 500 training images, minibatches of 50, 1 epoch.

Outputs in ``--out``: ``accuracy_vs_lr.png``, ``timing.png`` and ``metrics.json``.

Usage: ``python -m experiments.sweep [--quick] [--out DIR] [--seed S] [--epochs E]``.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnnet
from experiments import common
from fnnet import plots

NAME = "sweep"
LOSS = "cross-entropy"
SIZES = [784, 128, 10]
FULL = {"lrs": np.logspace(-3, 0, 8).tolist(), "n": None, "batch_size": 128, "epochs": 3}
QUICK = {"lrs": np.logspace(-2, 0, 3).tolist(), "n": 500, "batch_size": 50, "epochs": 1}
# Float32 agreement: a difference within RTOL of the parameters' scale (plus ATOL) is rounding.
ATOL, RTOL = 1e-5, 1e-4


def max_abs_diff(a, b):
    """The largest ``|a − b|`` over every leaf of two parameter pytrees of the same structure."""
    return max(float(jnp.max(jnp.abs(u - v))) for u, v in
               zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True))


def max_abs(tree):
    """The largest ``|p|`` over every leaf of a pytree."""
    return max(float(jnp.max(jnp.abs(u))) for u in jax.tree_util.tree_leaves(tree))


def final(history, name):
    """The last epoch's value of ``history[name]``."""
    return history[name][-1]


def one_step_diffs(model, lrs, x, y, key):
    """The largest ``|Δparam|``, per rate, between one vmapped training step (all rates at once)
    and the same step taken for each rate alone (``lax.map``: one rate after another, unbatched),
    from the same initial parameters on the minibatch ``x, y``; one compiled program."""
    opt = fnnet.optim.sgd(lrs[0])
    step = fnnet.train_step(model, LOSS, opt)
    k = len(lrs)

    @jax.jit
    def compare(key, rates, x, y):
        params = model.init(key, jnp.float32)
        states = jax.vmap(lambda lr: opt.init(params, lr))(rates)
        stacked = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (k, *a.shape)), params)
        together = jax.vmap(step, in_axes=(0, 0, None, None))(stacked, states, x, y)[0]
        alone = jax.lax.map(lambda lr: step(params, opt.init(params, lr), x, y)[0], rates)
        per_leaf = [jnp.max(jnp.abs(t - a).reshape(k, -1), axis=1) for t, a in
                    zip(jax.tree_util.tree_leaves(together), jax.tree_util.tree_leaves(alone),
                        strict=True)]
        return jnp.max(jnp.stack(per_leaf), axis=0)

    return [float(d) for d in compare(key, jnp.asarray(lrs, jnp.float32), x, y)]


def run_sweep(model, train, test, lrs, epochs, batch_size, key):
    """One vmapped ``fit`` over all rates; returns ``(params, history, wall seconds)``."""
    t = time.perf_counter()
    params, history = fnnet.fit(model, LOSS, fnnet.optim.sgd(lrs[0]), train, epochs=epochs,
                                batch_size=batch_size, key=key, validation=test, lrs=lrs,
                                dtype=jnp.float32)
    jax.block_until_ready(params)
    return params, history, time.perf_counter() - t


def run_separate(model, train, test, lr, epochs, batch_size, key):
    """The same run for one rate on its own; returns ``(params, history, wall seconds)``."""
    t = time.perf_counter()
    params, history = fnnet.fit(model, LOSS, fnnet.optim.sgd(lr), train, epochs=epochs,
                                batch_size=batch_size, key=key, validation=test, progress=False,
                                dtype=jnp.float32)
    jax.block_until_ready(params)
    return params, history, time.perf_counter() - t


def seconds_of(history, wall):
    """``{"wall", "train", "compile"}`` seconds of a ``fit`` run that took ``wall`` end to end."""
    return {"wall": wall, "train": float(np.sum(history["seconds"])),
            "compile": float(history["compile_seconds"])}


def compare_rate(i, lr, sweep_params, sweep_hist, params, hist, step_diff, wall):
    """Rate ``i`` of the vmapped sweep against its separate run: one ``per_rate`` record."""
    diff = max_abs_diff(jax.tree_util.tree_map(lambda a: a[i], sweep_params), params)
    scale = max_abs(params)
    acc_v, acc_s = final(sweep_hist, "val_accuracy")[i], final(hist, "val_accuracy")
    return {
        "lr": lr,
        "test_accuracy_vmapped": acc_v,
        "test_accuracy_separate": acc_s,
        "train_loss_vmapped": final(sweep_hist, "loss")[i],
        "train_loss_separate": final(hist, "loss"),
        "max_abs_param_diff": diff,
        "one_step_max_abs_param_diff": step_diff,
        "max_abs_param": scale,
        "abs_accuracy_diff": abs(acc_v - acc_s),
        "equal_to_float32_tolerance": diff <= ATOL + RTOL * scale,
        "separate_wall_seconds": wall,
    }


def separate_runs(model, train, test, lrs, epochs, batch_size, key, sweep, step_diffs):
    """Every rate run on its own and compared with the vmapped ``sweep`` (``(params, history)``):
    returns the ``per_rate`` records and the separate runs' summed seconds (``seconds_of``)."""
    per_rate, total = [], {"wall": 0.0, "train": 0.0, "compile": 0.0}
    for i, lr in enumerate(lrs):
        params, hist, wall = run_separate(model, train, test, lr, epochs, batch_size, key)
        total = {k: total[k] + v for k, v in seconds_of(hist, wall).items()}
        rec = compare_rate(i, lr, *sweep, params, hist, step_diffs[i], wall)
        per_rate.append(rec)
        print(f"[{NAME}] lr={lr:.3g}: {wall:.1f}s, test acc {rec['test_accuracy_separate']:.4f}, "
              f"max |dparam| {rec['max_abs_param_diff']:.2e}", flush=True)
    return per_rate, total


def plot(out, lrs, per_rate, vm, sep, title):
    """``accuracy_vs_lr.png`` and ``timing.png`` in ``out``."""
    k = len(lrs)
    plots.plot_lines(lrs, {"one vmapped program": [r["test_accuracy_vmapped"] for r in per_rate],
                           "separate runs": [r["test_accuracy_separate"] for r in per_rate]},
                     out / "accuracy_vs_lr.png", xlabel="learning rate", ylabel="final test accuracy",
                     title=title, logx=True)
    plots.plot_bars({"end to end (with compile)": {f"1 program, K={k}": vm["wall"],
                                                   f"{k} separate runs": sep["wall"]},
                     "training only": {f"1 program, K={k}": vm["train"],
                                       f"{k} separate runs": sep["train"]}},
                    out / "timing.png", ylabel="seconds", title=f"{k} learning rates: wall time")


def per_rate_table(per_rate):
    """The README's table of the per-rate comparison."""
    return {"headers": ["lr", "test accuracy, one program", "test accuracy, separate run",
                        "max |dparam| after 1 step", "max |dparam| at the end", "equal (float32)"],
            "rows": [[r["lr"], r["test_accuracy_vmapped"], r["test_accuracy_separate"],
                      r["one_step_max_abs_param_diff"], r["max_abs_param_diff"],
                      r["equal_to_float32_tolerance"]] for r in per_rate]}


def sweep_metrics(args, source, n, cfg, epochs, per_rate, vm, sep, history):
    """The metrics: the config, per-rate comparison, timings and the headline numbers."""
    lrs, k = cfg["lrs"], len(cfg["lrs"])
    acc = [r["test_accuracy_vmapped"] for r in per_rate]
    best = int(np.nanargmax(np.asarray(acc, dtype=float)))
    equal = sum(r["equal_to_float32_tolerance"] for r in per_rate)
    param_diff = max(r["max_abs_param_diff"] for r in per_rate)
    acc_diff = max(r["abs_accuracy_diff"] for r in per_rate)
    step_diff = max(r["one_step_max_abs_param_diff"] for r in per_rate)
    return {
        "experiment": NAME, "notes": ["002", "003"], **common.data_entries(args, source, *n),
        "config": {"sizes": SIZES, "loss": LOSS, "optimizer": "sgd", "lrs": lrs, "epochs": epochs,
                   "batch_size": cfg["batch_size"], "atol": ATOL, "rtol": RTOL},
        "k": k, "per_rate": per_rate, "best_lr": lrs[best], "best_test_accuracy": acc[best],
        **{f"{who}_{what}_seconds": t[what] for who, t in (("vmapped", vm), ("separate", sep))
           for what in ("wall", "train", "compile")},
        "wall_ratio_separate_over_vmapped": sep["wall"] / vm["wall"],
        "train_ratio_separate_over_vmapped": sep["train"] / vm["train"],
        "max_abs_param_diff": param_diff, "max_abs_accuracy_diff": acc_diff,
        "rates_equal_to_float32_tolerance": equal, "one_step_max_abs_param_diff": step_diff,
        "vmapped_history": history, "figures": ["accuracy_vs_lr.png", "timing.png"],
        "tables": {"per learning rate": per_rate_table(per_rate)},
        "headline": {
            "learning rates (K)": k,
            "best learning rate": lrs[best],
            "best final test accuracy": acc[best],
            "one program, wall seconds (incl. compile)": vm["wall"],
            f"{k} separate runs, wall seconds (incl. compile)": sep["wall"],
            "wall-time ratio separate / one program": sep["wall"] / vm["wall"],
            "training-only ratio separate / one program": sep["train"] / vm["train"],
            "max |param difference| vmapped vs separate": param_diff,
            "max |test accuracy difference|": acc_diff,
            "rates equal to float32 tolerance at the end": f"{equal} of {k}",
            "max |param difference| after one step": step_diff,
            "epochs, batch size": f"{epochs}, {cfg['batch_size']}",
            "data": f"{source}, {n[0]} train / {n[1]} test",
        },
    }


def print_summary(per_rate, vm, sep, out):
    print(common.table([[f"{r['lr']:.3g}", r["test_accuracy_vmapped"], r["test_accuracy_separate"],
                         r["one_step_max_abs_param_diff"], r["max_abs_param_diff"],
                         r["abs_accuracy_diff"], "yes" if r["equal_to_float32_tolerance"] else "no"]
                        for r in per_rate],
                       ["lr", "acc (vmapped)", "acc (separate)", "|dparam| 1 step", "|dparam| end",
                        "|dacc|", "equal"]))
    print(common.table([["one vmapped program", vm["wall"], vm["train"], vm["compile"]],
                        [f"{len(per_rate)} separate runs", sep["wall"], sep["train"], sep["compile"]]],
                       ["", "wall s", "training s", "compile s"]))
    print(f"separate / vmapped wall time: {sep['wall'] / vm['wall']:.2f}x "
          f"(training only {sep['train'] / vm['train']:.2f}x); outputs in {out}")


def main(argv=None):
    """Run the sweep both ways, compare, draw the figures, write and return the metrics."""
    args, epochs = common.parse_with_epochs(common.parser(__doc__, NAME), argv, FULL["epochs"],
                                            QUICK["epochs"], "epochs for both")
    cfg = QUICK if args.quick else FULL
    lrs, batch_size = cfg["lrs"], cfg["batch_size"]
    if args.quick:
        (xtr, ytr), (xte, yte), source = common.load_mnist_flat(quick=True, n_quick=cfg["n"])
    else:
        (xtr, ytr), (xte, yte), source = common.load_mnist_flat()
    train, test = (xtr, ytr), (xte, yte)
    model = fnnet.mlp(SIZES, activation="relu", output="softmax")
    key = jax.random.PRNGKey(args.seed)

    print(f"[{NAME}] {len(lrs)} learning rates, 784-128-10, {epochs} epoch(s), batch {batch_size}, "
          f"{len(xtr)} images: one vmapped program", flush=True)
    sweep_params, sweep_hist, sweep_wall = run_sweep(model, train, test, lrs, epochs, batch_size, key)
    step_diffs = one_step_diffs(model, lrs, jnp.asarray(xtr[:batch_size]), jnp.asarray(ytr[:batch_size]),
                                key)
    print(f"[{NAME}] the same {len(lrs)} runs one at a time", flush=True)
    per_rate, sep = separate_runs(model, train, test, lrs, epochs, batch_size, key,
                                  (sweep_params, sweep_hist), step_diffs)
    vm = seconds_of(sweep_hist, sweep_wall)
    out = Path(args.out)
    plot(out, lrs, per_rate, vm, sep, f"784-128-10, SGD, {epochs} epoch(s), batch {batch_size}")
    metrics = sweep_metrics(args, source, (len(xtr), len(xte)), cfg, epochs, per_rate, vm, sep,
                            sweep_hist)
    common.write_metrics(out, metrics)
    print_summary(per_rate, vm, sep, out)
    return metrics


if __name__ == "__main__":
    main()
