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

- final validation accuracy against learning rate (8 rates log-spaced from 1e-3 to 1, log x axis),
  after 3 epochs of minibatch SGD (batches of 128) on 55,000 training images; the other 5,000 are
  held out at random as the validation set, on which the best rate is chosen; the 10,000 test
  images are scored once per model, after training;
- the wall time of the one K-model program against K separate ``fit`` runs with the same epochs,
  data and key (both timed end to end including compilation, and training alone), and their ratio;
- that the two agree: per rate, the largest absolute difference between the final parameters and
  between the final validation and test accuracies of the vmapped model and its separate run. Both compute in
  float32; batching the matrix products over models may sum in a different order, so they agree to
  float32 rounding, which gradient descent can amplify over many steps at the largest rates. So
  the same comparison is also made after a single step: one vmapped ``fnnet.train_step`` for all
  rates against the step for each rate alone, from the same parameters on the same minibatch.

``--quick``: K = 3 rates (1e-2, 1e-1, 1), 500 training images (and 100 held out for validation),
minibatches of 50, 1 epoch.

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
# n: training images (None: all that are left), validation: images held out of the training set
FULL = {"lrs": np.logspace(-3, 0, 8).tolist(), "n": None, "validation": 5000, "batch_size": 128,
        "epochs": 3}
QUICK = {"lrs": np.logspace(-2, 0, 3).tolist(), "n": 500, "validation": 100, "batch_size": 50,
         "epochs": 1}
# Float32 agreement: a difference within RTOL of the parameters' scale (plus ATOL) is rounding.
ATOL, RTOL = 1e-5, 1e-4


def max_abs_diff(a, b):
    """The largest ``|a − b|`` over every leaf of two parameter pytrees of the same structure."""
    return max(float(jnp.max(jnp.abs(u - v))) for u, v in
               zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True))


def max_abs(tree):
    """The largest ``|p|`` over every leaf of a pytree."""
    return max(float(jnp.max(jnp.abs(u))) for u in jax.tree_util.tree_leaves(tree))


def model_k(stacked, k):
    """Model ``k``'s parameters out of parameters stacked along a leading model axis."""
    return jax.tree_util.tree_map(lambda a: a[k], stacked)


def final(history, name):
    """The last epoch's value of ``history[name]``."""
    return history[name][-1]


def one_step_diffs(model, lrs, x, y, key):
    """The largest ``|Δparam|``, per rate, between one vmapped training step (all rates at once)
    and the same step taken for each rate alone (``lax.map``: one rate after another, unbatched),
    from the same initial ``TrainState`` (``fnnet.TrainState.create(..., lrs=lrs)``: the same
    parameters, each rate in its optimizer state) on the minibatch ``x, y``; one compiled
    program."""
    opt = fnnet.optim.sgd(lrs[0])
    step = fnnet.train_step(model, LOSS, opt)
    k = len(lrs)
    states = fnnet.TrainState.create(model, opt, key, lrs=lrs, dtype=jnp.float32)

    @jax.jit
    def compare(states, x, y, key):
        together = jax.vmap(step, in_axes=(0, None, None, None))(states, x, y, key)[0].params
        alone = jax.lax.map(lambda state: step(state, x, y, key)[0].params, states)
        per_leaf = [jnp.max(jnp.abs(t - a).reshape(k, -1), axis=1) for t, a in
                    zip(jax.tree_util.tree_leaves(together), jax.tree_util.tree_leaves(alone),
                        strict=True)]
        return jnp.max(jnp.stack(per_leaf), axis=0)

    return [float(d) for d in compare(states, x, y, key)]


def score_test(model, params, test):
    """``(loss, accuracy)`` of ``params`` on the test set, scored once after training."""
    loss, accuracy = fnnet.evaluate(model, LOSS, params, *test)
    return float(loss), float(accuracy)


def run_sweep(model, train, val, test, lrs, epochs, batch_size, key):
    """One vmapped ``fit`` over all rates, validated on ``val`` after every epoch; then each
    model's test accuracy, scored once. Returns ``(params, history, test accuracies, wall seconds
    of the fit)``."""
    t = time.perf_counter()
    state, history = fnnet.fit(model, LOSS, fnnet.optim.sgd(lrs[0]), train, epochs=epochs,
                               batch_size=batch_size, key=key, validation=val, lrs=lrs,
                               dtype=jnp.float32)
    params = jax.block_until_ready(state.params)
    wall = time.perf_counter() - t
    test_acc = [score_test(model, model_k(params, i), test)[1] for i in range(len(lrs))]
    return params, history, test_acc, wall


def run_separate(model, train, val, test, lr, epochs, batch_size, key):
    """The same run for one rate on its own; returns ``(params, history, test accuracy, wall
    seconds of the fit)``."""
    t = time.perf_counter()
    state, history = fnnet.fit(model, LOSS, fnnet.optim.sgd(lr), train, epochs=epochs,
                               batch_size=batch_size, key=key, validation=val, progress=False,
                               dtype=jnp.float32)
    params = jax.block_until_ready(state.params)
    wall = time.perf_counter() - t
    return params, history, score_test(model, params, test)[1], wall


def seconds_of(history, wall):
    """``{"wall", "train", "compile"}`` seconds of a ``fit`` run that took ``wall`` end to end."""
    return {"wall": wall, "train": float(np.sum(history["seconds"])),
            "compile": float(history["compile_seconds"])}


def compare_rate(i, lr, sweep_params, sweep_hist, sweep_test, params, hist, test_acc, step_diff,
                 wall):
    """Rate ``i`` of the vmapped sweep against its separate run: one ``per_rate`` record."""
    diff = max_abs_diff(model_k(sweep_params, i), params)
    scale = max_abs(params)
    val_v, val_s = final(sweep_hist, "val_accuracy")[i], final(hist, "val_accuracy")
    acc_v, acc_s = sweep_test[i], test_acc
    return {
        "lr": lr,
        "val_accuracy_vmapped": val_v,
        "val_accuracy_separate": val_s,
        "test_accuracy_vmapped": acc_v,
        "test_accuracy_separate": acc_s,
        "train_loss_vmapped": final(sweep_hist, "loss")[i],
        "train_loss_separate": final(hist, "loss"),
        "max_abs_param_diff": diff,
        "one_step_max_abs_param_diff": step_diff,
        "max_abs_param": scale,
        "abs_accuracy_diff": abs(acc_v - acc_s),
        "abs_val_accuracy_diff": abs(val_v - val_s),
        "equal_to_float32_tolerance": diff <= ATOL + RTOL * scale,
        "separate_wall_seconds": wall,
    }


def separate_runs(model, data, lrs, epochs, batch_size, key, sweep, step_diffs):
    """Every rate run on its own on ``data`` (``(train, validation, test)``) and compared with the
    vmapped ``sweep`` (``(params, history, test accuracies)``): returns the ``per_rate`` records
    and the separate runs' summed seconds (``seconds_of``)."""
    per_rate, total = [], {"wall": 0.0, "train": 0.0, "compile": 0.0}
    for i, lr in enumerate(lrs):
        params, hist, test_acc, wall = run_separate(model, *data, lr, epochs, batch_size, key)
        total = {k: total[k] + v for k, v in seconds_of(hist, wall).items()}
        rec = compare_rate(i, lr, *sweep, params, hist, test_acc, step_diffs[i], wall)
        per_rate.append(rec)
        print(f"[{NAME}] lr={lr:.3g}: {wall:.1f}s, validation acc "
              f"{rec['val_accuracy_separate']:.4f}, test acc {rec['test_accuracy_separate']:.4f}, "
              f"max |dparam| {rec['max_abs_param_diff']:.2e}", flush=True)
    return per_rate, total


def plot(out, lrs, per_rate, vm, sep, title):
    """``accuracy_vs_lr.png`` and ``timing.png`` in ``out``."""
    k = len(lrs)
    plots.plot_lines(lrs, {"validation, one vmapped program":
                           [r["val_accuracy_vmapped"] for r in per_rate],
                           "validation, separate runs": [r["val_accuracy_separate"] for r in per_rate],
                           "test (scored once), one vmapped program":
                           [r["test_accuracy_vmapped"] for r in per_rate]},
                     out / "accuracy_vs_lr.png", xlabel="learning rate", ylabel="final accuracy",
                     title=title, logx=True)
    plots.plot_bars({"end to end (with compile)": {f"1 program, K={k}": vm["wall"],
                                                   f"{k} separate runs": sep["wall"]},
                     "training only": {f"1 program, K={k}": vm["train"],
                                       f"{k} separate runs": sep["train"]}},
                    out / "timing.png", ylabel="seconds", title=f"{k} learning rates: wall time")


def per_rate_table(per_rate):
    """The README's table of the per-rate comparison."""
    return {"headers": ["lr", "validation accuracy, one program", "validation accuracy, separate run",
                        "test accuracy, one program", "test accuracy, separate run",
                        "max |dparam| after 1 step", "max |dparam| at the end", "equal (float32)"],
            "rows": [[r["lr"], r["val_accuracy_vmapped"], r["val_accuracy_separate"],
                      r["test_accuracy_vmapped"], r["test_accuracy_separate"],
                      r["one_step_max_abs_param_diff"], r["max_abs_param_diff"],
                      r["equal_to_float32_tolerance"]] for r in per_rate]}


def sweep_metrics(args, source, n, cfg, epochs, per_rate, vm, sep, history):
    """The metrics: the config, per-rate comparison, timings and the headline numbers."""
    lrs, k = cfg["lrs"], len(cfg["lrs"])
    val = [r["val_accuracy_vmapped"] for r in per_rate]
    acc = [r["test_accuracy_vmapped"] for r in per_rate]
    best = int(np.nanargmax(np.asarray(val, dtype=float)))  # chosen on validation
    equal = sum(r["equal_to_float32_tolerance"] for r in per_rate)
    param_diff = max(r["max_abs_param_diff"] for r in per_rate)
    acc_diff = max(r["abs_accuracy_diff"] for r in per_rate)
    val_diff = max(r["abs_val_accuracy_diff"] for r in per_rate)
    step_diff = max(r["one_step_max_abs_param_diff"] for r in per_rate)
    return {
        "experiment": NAME, "notes": ["002", "003"],
        **common.data_entries(args, source, n[0], n[2]), "n_validation": n[1],
        "config": {"sizes": SIZES, "loss": LOSS, "optimizer": "sgd", "lrs": lrs, "epochs": epochs,
                   "batch_size": cfg["batch_size"], "atol": ATOL, "rtol": RTOL},
        "k": k, "per_rate": per_rate, "best_lr": lrs[best], "best_val_accuracy": val[best],
        "best_test_accuracy": acc[best],
        **{f"{who}_{what}_seconds": t[what] for who, t in (("vmapped", vm), ("separate", sep))
           for what in ("wall", "train", "compile")},
        "wall_ratio_separate_over_vmapped": sep["wall"] / vm["wall"],
        "train_ratio_separate_over_vmapped": sep["train"] / vm["train"],
        "max_abs_param_diff": param_diff, "max_abs_accuracy_diff": acc_diff,
        "max_abs_val_accuracy_diff": val_diff,
        "rates_equal_to_float32_tolerance": equal, "one_step_max_abs_param_diff": step_diff,
        "vmapped_history": history, "figures": ["accuracy_vs_lr.png", "timing.png"],
        "tables": {"per learning rate": per_rate_table(per_rate)},
        "headline": {
            "learning rates (K)": k,
            "best learning rate (on validation)": lrs[best],
            "its final validation accuracy": val[best],
            "its test accuracy (scored once)": acc[best],
            "one program, wall seconds (incl. compile)": vm["wall"],
            f"{k} separate runs, wall seconds (incl. compile)": sep["wall"],
            "wall-time ratio separate / one program": sep["wall"] / vm["wall"],
            "training-only ratio separate / one program": sep["train"] / vm["train"],
            "max |param difference| vmapped vs separate": param_diff,
            "max |validation accuracy difference|": val_diff,
            "max |test accuracy difference|": acc_diff,
            "rates equal to float32 tolerance at the end": f"{equal} of {k}",
            "max |param difference| after one step": step_diff,
            "epochs, batch size": f"{epochs}, {cfg['batch_size']}",
            "data": f"{source}, {n[0]} train / {n[1]} validation / {n[2]} test",
        },
    }


def print_summary(per_rate, vm, sep, out):
    print(common.table([[f"{r['lr']:.3g}", r["val_accuracy_vmapped"], r["val_accuracy_separate"],
                         r["test_accuracy_vmapped"], r["test_accuracy_separate"],
                         r["one_step_max_abs_param_diff"], r["max_abs_param_diff"],
                         r["abs_accuracy_diff"], "yes" if r["equal_to_float32_tolerance"] else "no"]
                        for r in per_rate],
                       ["lr", "val acc (vmapped)", "val acc (separate)", "test acc (vmapped)",
                        "test acc (separate)", "|dparam| 1 step", "|dparam| end", "|dtest acc|",
                        "equal"]))
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
    n_quick = None if cfg["n"] is None else cfg["n"] + cfg["validation"]
    train, val, test, source = common.load_mnist_split(
        quick=args.quick, validation=cfg["validation"], seed=args.seed,
        **({} if n_quick is None else {"n_quick": n_quick}))
    xtr, ytr = train
    model = fnnet.mlp(SIZES, activation="relu", output="softmax")
    key = jax.random.PRNGKey(args.seed)

    print(f"[{NAME}] {len(lrs)} learning rates, 784-128-10, {epochs} epoch(s), batch {batch_size}, "
          f"{len(xtr)} images ({len(val[0])} held out for validation): one vmapped program",
          flush=True)
    sweep_params, sweep_hist, sweep_test, sweep_wall = run_sweep(model, train, val, test, lrs,
                                                                 epochs, batch_size, key)
    step_diffs = one_step_diffs(model, lrs, jnp.asarray(xtr[:batch_size]), jnp.asarray(ytr[:batch_size]),
                                key)
    print(f"[{NAME}] the same {len(lrs)} runs one at a time", flush=True)
    per_rate, sep = separate_runs(model, (train, val, test), lrs, epochs, batch_size, key,
                                  (sweep_params, sweep_hist, sweep_test), step_diffs)
    vm = seconds_of(sweep_hist, sweep_wall)
    out = Path(args.out)
    plot(out, lrs, per_rate, vm, sep, f"784-128-10, SGD, {epochs} epoch(s), batch {batch_size}")
    metrics = sweep_metrics(args, source, (len(xtr), len(val[0]), len(test[0])), cfg, epochs,
                            per_rate, vm, sep, sweep_hist)
    common.write_metrics(out, metrics)
    print_summary(per_rate, vm, sep, out)
    return metrics


if __name__ == "__main__":
    main()
