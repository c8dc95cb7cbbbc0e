"""A learning-rate sweep in one program: K copies of a 784-128-10 network (ReLU, softmax,
cross-entropy), one per learning rate, trained together by ``fnnet.fit(..., lrs=[...])``.

Every update is note 003's recipe (forward keeping what the backward needs, the hand-derived
backward, a gradient-descent step ``W ← W − α_k dW``) with the softmax/cross-entropy rule
``dZ = (A − Y)/N`` of note 002 and the Dense/ReLU rules of note 000. ``fit`` ``jax.vmap``s the
whole epoch over a leading model axis of the parameters and optimizer state, so the K models, each
with its own rate ``α_k`` in its optimizer state, run as one compiled ``lax.scan`` per epoch. Every
model starts from the same key: the same initial weights and the same minibatch order, so only the
rate differs.

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

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python experiments/sweep.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import fnnet  # noqa: E402
from experiments import common  # noqa: E402
from fnnet import plots  # noqa: E402

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


def main(argv=None):
    """Run the sweep both ways, compare, draw the figures, write and return the metrics."""
    p = common.parser(__doc__, NAME)
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs for both (default {FULL['epochs']}, {QUICK['epochs']} with --quick)")
    args = p.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    if args.epochs is not None:
        if args.epochs < 1:
            p.error(f"--epochs must be at least 1, got {args.epochs}")
        cfg["epochs"] = args.epochs
    lrs, epochs, batch_size = cfg["lrs"], cfg["epochs"], cfg["batch_size"]

    if args.quick:
        (xtr, ytr), (xte, yte), source = common.load_mnist_flat(quick=True, n_quick=cfg["n"])
    else:
        (xtr, ytr), (xte, yte), source = common.load_mnist_flat()
    train, test = (xtr, ytr), (xte, yte)
    model = fnnet.mlp(SIZES, activation="relu", output="softmax")
    key = jax.random.PRNGKey(args.seed)
    k = len(lrs)

    print(f"[{NAME}] {k} learning rates, 784-128-10, {epochs} epoch(s), batch {batch_size}, "
          f"{len(xtr)} images: one vmapped program", flush=True)
    sweep_params, sweep_hist, sweep_wall = run_sweep(model, train, test, lrs, epochs, batch_size, key)
    step_diffs = one_step_diffs(model, lrs, jnp.asarray(xtr[:batch_size]), jnp.asarray(ytr[:batch_size]),
                                key)
    print(f"[{NAME}] the same {k} runs one at a time", flush=True)
    rows, per_rate, sep_wall, sep_train, sep_compile = [], [], 0.0, 0.0, 0.0
    for i, lr in enumerate(lrs):
        params, hist, wall = run_separate(model, train, test, lr, epochs, batch_size, key)
        sep_wall += wall
        sep_train += float(np.sum(hist["seconds"]))
        sep_compile += float(hist["compile_seconds"])
        mine = jax.tree_util.tree_map(lambda a, i=i: a[i], sweep_params)
        diff = max_abs_diff(mine, params)
        scale = max_abs(params)
        acc_v, acc_s = final(sweep_hist, "val_accuracy")[i], final(hist, "val_accuracy")
        loss_v, loss_s = final(sweep_hist, "loss")[i], final(hist, "loss")
        rec = {
            "lr": lr,
            "test_accuracy_vmapped": acc_v,
            "test_accuracy_separate": acc_s,
            "train_loss_vmapped": loss_v,
            "train_loss_separate": loss_s,
            "max_abs_param_diff": diff,
            "one_step_max_abs_param_diff": step_diffs[i],
            "max_abs_param": scale,
            "abs_accuracy_diff": abs(acc_v - acc_s),
            "equal_to_float32_tolerance": diff <= ATOL + RTOL * scale,
            "separate_wall_seconds": wall,
        }
        per_rate.append(rec)
        rows.append([f"{lr:.3g}", acc_v, acc_s, step_diffs[i], diff, rec["abs_accuracy_diff"],
                     "yes" if rec["equal_to_float32_tolerance"] else "no"])
        print(f"[{NAME}] lr={lr:.3g}: {wall:.1f}s, test acc {acc_s:.4f}, max |dparam| {diff:.2e}",
              flush=True)

    sweep_train = float(np.sum(sweep_hist["seconds"]))
    sweep_compile = float(sweep_hist["compile_seconds"])
    acc_v = [r["test_accuracy_vmapped"] for r in per_rate]
    acc_s = [r["test_accuracy_separate"] for r in per_rate]
    best = int(np.nanargmax(np.asarray(acc_v, dtype=float)))
    equal = sum(r["equal_to_float32_tolerance"] for r in per_rate)

    out = Path(args.out)
    plots.plot_lines(lrs, {"one vmapped program": acc_v, "separate runs": acc_s},
                     out / "accuracy_vs_lr.png", xlabel="learning rate", ylabel="final test accuracy",
                     title=f"784-128-10, SGD, {epochs} epoch(s), batch {batch_size}", logx=True)
    plots.plot_bars({"end to end (with compile)": {f"1 program, K={k}": sweep_wall,
                                                   f"{k} separate runs": sep_wall},
                     "training only": {f"1 program, K={k}": sweep_train,
                                       f"{k} separate runs": sep_train}},
                    out / "timing.png", ylabel="seconds", title=f"{k} learning rates: wall time")

    metrics = {
        "experiment": NAME,
        "notes": ["002", "003"],
        "quick": args.quick,
        "seed": args.seed,
        "data": source,
        "n_train": len(xtr),
        "n_test": len(xte),
        "config": {"sizes": SIZES, "loss": LOSS, "optimizer": "sgd", "lrs": lrs, "epochs": epochs,
                   "batch_size": batch_size, "atol": ATOL, "rtol": RTOL},
        "k": k,
        "per_rate": per_rate,
        "best_lr": lrs[best],
        "best_test_accuracy": acc_v[best],
        "vmapped_wall_seconds": sweep_wall,
        "vmapped_train_seconds": sweep_train,
        "vmapped_compile_seconds": sweep_compile,
        "separate_wall_seconds": sep_wall,
        "separate_train_seconds": sep_train,
        "separate_compile_seconds": sep_compile,
        "wall_ratio_separate_over_vmapped": sep_wall / sweep_wall,
        "train_ratio_separate_over_vmapped": sep_train / sweep_train,
        "max_abs_param_diff": max(r["max_abs_param_diff"] for r in per_rate),
        "max_abs_accuracy_diff": max(r["abs_accuracy_diff"] for r in per_rate),
        "rates_equal_to_float32_tolerance": equal,
        "one_step_max_abs_param_diff": max(step_diffs),
        "vmapped_history": sweep_hist,
        "figures": ["accuracy_vs_lr.png", "timing.png"],
        "tables": {"per learning rate": {
            "headers": ["lr", "test accuracy, one program", "test accuracy, separate run",
                        "max |dparam| after 1 step", "max |dparam| at the end", "equal (float32)"],
            "rows": [[r["lr"], r["test_accuracy_vmapped"], r["test_accuracy_separate"],
                      r["one_step_max_abs_param_diff"], r["max_abs_param_diff"],
                      r["equal_to_float32_tolerance"]] for r in per_rate]}},
        "headline": {
            "learning rates (K)": k,
            "best learning rate": lrs[best],
            "best final test accuracy": acc_v[best],
            "one program, wall seconds (incl. compile)": sweep_wall,
            f"{k} separate runs, wall seconds (incl. compile)": sep_wall,
            "wall-time ratio separate / one program": sep_wall / sweep_wall,
            "training-only ratio separate / one program": sep_train / sweep_train,
            "max |param difference| vmapped vs separate": max(r["max_abs_param_diff"] for r in per_rate),
            "max |test accuracy difference|": max(r["abs_accuracy_diff"] for r in per_rate),
            "rates equal to float32 tolerance at the end": f"{equal} of {k}",
            "max |param difference| after one step": max(step_diffs),
            "epochs, batch size": f"{epochs}, {batch_size}",
            "data": f"{source}, {len(xtr)} train / {len(xte)} test",
        },
    }
    common.write_metrics(out, metrics)
    print(common.table(rows, ["lr", "acc (vmapped)", "acc (separate)", "|dparam| 1 step",
                              "|dparam| end", "|dacc|", "equal"]))
    print(common.table([["one vmapped program", sweep_wall, sweep_train, sweep_compile],
                        [f"{k} separate runs", sep_wall, sep_train, sep_compile]],
                       ["", "wall s", "training s", "compile s"]))
    print(f"separate / vmapped wall time: {sep_wall / sweep_wall:.2f}x "
          f"(training only {sep_train / sweep_train:.2f}x); outputs in {out}")
    return metrics


if __name__ == "__main__":
    main()
