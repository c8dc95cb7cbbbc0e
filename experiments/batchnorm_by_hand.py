"""Batch normalisation's backward by hand (beyond the notes): the step-by-step and the simplified
form, their agreement and speed, and what batch norm and dropout do to an MLP on MNIST.

The layer is ``fnnet.BatchNorm`` (``fnnet/layers/normalization.py``, derivation in the module
docstring; cs231n's ``batchnorm_backward`` and ``batchnorm_backward_alt``). Over the ``m`` values
of each feature (the batch, and for images the batch and space)::

    μ = (1/m) Σ X      X_c = X − μ      σ² = (1/m) Σ X_c²      s = 1/√(σ² + ε)
    X̂ = X_c · s        Y = γ ⊙ X̂ + β        dγ = Σ dY ⊙ X̂      dβ = Σ dY      dX̂ = dY ⊙ γ

*Staged* (``normalize_backward_staged``), the chain rule node by node through the graph, in
reverse: ``ds = Σ dX̂ ⊙ X_c``, ``dX_c = dX̂ · s``, ``dσ² = −½ s³ ds``, ``dX_c += (2/m) X_c dσ²``,
``dμ = −Σ dX_c``, ``dX = dX_c + dμ/m``. *Simplified* (``normalize_backward``, the default),
the same with ``X_c = X̂/s`` substituted and the terms collected::

    dX = (s/m) · (m dX̂ − Σ dX̂ − X̂ ⊙ Σ(dX̂ ⊙ X̂))

1. Agreement (float64, random inputs of several shapes, ``(N, F)`` and NHWC): ``dX``, ``dγ``,
   ``dβ`` of ``BatchNorm(..., backward_form="staged")`` and of the default ``"simplified"``
   against ``jax.vjp`` of the training-mode ``apply``, and against each other:
   ``max|a − b| / max|b|``.
2. Speed (float32): the layer's jitted ``backward`` in each form on the same cached forward and
   ``dY``, for ``(N=256, F=512)`` and ``(N=64, 14, 14, 32)``; median over interleaved rounds.
3. Training: a 784-256-256-10 ReLU MLP on MNIST, plain, with ``BatchNorm`` after each hidden
   ``Dense``, with ``Dropout`` after each hidden ReLU, and with both; the same seed, minibatch
   SGD; 5,000 validation images held out of the training set for the curves, the test set
   scored once per run at the end.

Outputs in ``--out``: ``training.png`` (validation accuracy and training loss per epoch, four
runs), ``backward_forms.png`` (errors and times), ``metrics.json``::

    python -m experiments.batchnorm_by_hand --out runs/batchnorm_by_hand [--quick] [--seed 0]
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.ticker import MaxNLocator

import fnnet
from experiments import common
from fnnet.bench.harness import median, paired
from fnnet.layers.normalization import NormParams, normalize
from fnnet.plots import save_figure

NAME = "batchnorm_by_hand"
TOLERANCE = 1e-10  # float64
SHAPES = ((8, 5), (16, 3), (64, 16), (4, 6, 6, 3), (3, 5, 7, 8))
QUICK_SHAPES = ((16, 3), (4, 6, 6, 3))
SPEED_SHAPES = ((256, 512), (64, 14, 14, 32))
QUICK_SPEED_SHAPES = ((32, 64), (8, 7, 7, 8))
COMPARISONS = ("staged vs jax.vjp", "simplified vs jax.vjp", "staged vs simplified")
HIDDEN = (256, 256)
DROPOUT = 0.2
LR, BATCH = 0.1, 128
EPOCHS, QUICK_EPOCHS = 8, 2
RUNS = {"plain": (False, False), "batch norm": (True, False), "dropout": (False, True),
        "batch norm + dropout": (True, True)}


def layer_pair(features):
    """The same ``BatchNorm`` with each backward form: ``{"staged": ..., "simplified": ...}``."""
    return {form: fnnet.BatchNorm(features, backward_form=form) for form in ("staged", "simplified")}


def random_problem(shape, rng):
    """``(params, x, dy)`` in the current default float: ``x`` off-centre and scaled, ``γ``, ``β``
    and ``dy`` random."""
    features = shape[-1]
    params = NormParams(jnp.asarray(rng.normal(1.0, 0.5, features)),
                        jnp.asarray(rng.normal(size=features)))
    x = jnp.asarray(rng.normal(size=shape) * rng.uniform(0.5, 3.0, features)
                    + rng.normal(size=features))
    return params, x, jnp.asarray(rng.normal(size=shape))


def agreement(shape, rng):
    """``{comparison: {"dX", "dgamma", "dbeta"}}`` for one shape."""
    layers = layer_pair(shape[-1])
    params, x, dy = random_problem(shape, rng)

    @jax.jit
    def compiled(params, x, dy):
        _, vjp = jax.vjp(lambda p, x: layers["simplified"].apply(p, x, train=True), params, x)
        hand = {form: layer.backward(params, layer.forward(params, x)[1], dy)
                for form, layer in layers.items()}
        return vjp(dy), hand

    ref, hand = compiled(params, x, dy)
    pairs = dict(zip(COMPARISONS, ((hand["staged"], ref), (hand["simplified"], ref),
                                   (hand["staged"], hand["simplified"]))))
    return {name: {"dX": common.rel_error(a[1], b[1]),
                   "dgamma": common.rel_error(a[0].gamma, b[0].gamma),
                   "dbeta": common.rel_error(a[0].beta, b[0].beta)}
            for name, (a, b) in pairs.items()}


def agreement_table(seed, shapes):
    """Every shape's errors in float64: ``(rows, worst)``."""
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        rows = [{"shape": str(shape), "comparison": name, **errors}
                for shape in shapes for name, errors in agreement(shape, rng).items()]
    return rows, max(r[k] for r in rows for k in ("dX", "dgamma", "dbeta"))


def speed(shapes, seed, rounds, budget_s):
    """Microseconds per jitted ``backward`` of each form (float32), on the same inputs."""
    rng = np.random.default_rng(seed)
    results = []
    for shape in shapes:
        layers = layer_pair(shape[-1])
        params, x, dy = (jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), v)
                         for v in random_problem(shape, rng))
        cache = normalize(x, tuple(range(x.ndim - 1)), 1e-5)
        fns = {form: jax.jit(layer.backward) for form, layer in layers.items()}
        times = common.interleaved_times(fns, params, cache, dy, rounds=rounds, budget_s=budget_s)
        results.append({"shape": str(shape), "rounds": len(times["staged"]),
                        **{f"{form}_us": median(t) * 1e6 for form, t in times.items()},
                        "staged_over_simplified": paired(times["simplified"], times["staged"])})
    return results


def mlp(batch_norm, dropout):
    """784-256-256-10: ``Dense [BatchNorm] ReLU [Dropout]`` per hidden layer, softmax output."""
    layers, n_in = [], 784
    for n_out in HIDDEN:
        layers += [fnnet.Dense(n_in, n_out)] + ([fnnet.BatchNorm(n_out)] if batch_norm else [])
        layers += [fnnet.ReLU()] + ([fnnet.Dropout(DROPOUT)] if dropout else [])
        n_in = n_out
    return fnnet.Sequential(*layers, fnnet.Dense(n_in, 10), fnnet.Softmax())


def plot_training(path, runs, lr):
    fig, (ax_acc, ax_loss) = common.subplots(1, 2, figsize=(13, 4.6))
    for name, run in runs.items():
        h = run["history"]
        ax_acc.plot(h["epoch"], h["val_accuracy"], marker="o", label=name)
        ax_loss.plot(h["epoch"], h["loss"], marker="o", label=name)
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy (held out of training)")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", yscale="log",
                title="training loss (mean over the epoch's minibatches)")
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(f"784-256-256-10 ReLU MLP on MNIST, SGD lr {lr}, batch {BATCH}, dropout rate "
                 f"{DROPOUT}, one seed")
    return save_figure(fig, path)


def plot_forms(path, rows, timing):
    fig, (ax_e, ax_t) = common.subplots(1, 2, figsize=(13, 4.6))
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    xs, width = np.arange(len(shapes)), 0.8 / len(COMPARISONS)
    for j, name in enumerate(COMPARISONS):
        worst = [max(max(r["dX"], r["dgamma"], r["dbeta"]), 1e-20)
                 for s in shapes for r in rows if r["shape"] == s and r["comparison"] == name]
        ax_e.bar(xs + (j - 1) * width, worst, width, label=name)
    ax_e.axhline(TOLERANCE, color="k", ls="--", lw=1, label=f"tolerance {TOLERANCE:g}")
    ax_e.set_xticks(xs, shapes, rotation=15)
    ax_e.set(yscale="log", ylabel="max relative error (dX, dγ, dβ)",
             title="float64 agreement (an exact 0 is drawn at 1e-20)")
    xs = np.arange(len(timing))
    for j, form in enumerate(("staged", "simplified")):
        ax_t.bar(xs + (j - 0.5) * 0.4, [t[f"{form}_us"] for t in timing], 0.4, label=form)
    for x, t in zip(xs, timing):
        ax_t.annotate(f"staged/simplified ×{t['staged_over_simplified']:.2f}",
                      (x, max(t["staged_us"], t["simplified_us"])), ha="center", va="bottom")
    ax_t.set_xticks(xs, [t["shape"] for t in timing])
    ax_t.margins(y=0.15)
    ax_t.set(ylabel="µs per backward (median)", title="jitted BatchNorm.backward, float32")
    for ax in (ax_e, ax_t):
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def train_all(args, epochs):
    """The four MLPs on MNIST: ``(runs, data entries)``."""
    train, val, test, source = common.load_mnist_split(
        args.quick, n_quick=1000, validation=200 if args.quick else 5000, seed=args.seed)
    runs = {}
    for name, (batch_norm, dropout) in RUNS.items():
        model = mlp(batch_norm, dropout)
        print(f"[{NAME}] {name}: {model!r}, SGD lr {args.lr}, batch {BATCH}, {epochs} epochs",
              flush=True)
        run = common.fit_and_test(model, fnnet.optim.sgd(args.lr), train, val, test,
                                  epochs=epochs, batch_size=BATCH, seed=args.seed)
        run.pop("state")
        runs[name] = {"model": repr(model), "val_accuracy": run["history"]["val_accuracy"][-1],
                      **run}
    return runs, {**common.data_entries(args, source, len(train[0]), len(test[0])),
                  "n_validation": len(val[0])}


def main(argv=None):
    """Run the three parts; return the metrics written to ``OUT/metrics.json``."""
    p = common.parser(__doc__.splitlines()[0], NAME)
    p.add_argument("--lr", type=float, default=LR, help=f"SGD learning rate (default {LR})")
    args, epochs = common.parse_with_epochs(p, argv, EPOCHS, QUICK_EPOCHS)
    out = Path(args.out)
    rows, worst = agreement_table(args.seed, QUICK_SHAPES if args.quick else SHAPES)
    timing = speed(QUICK_SPEED_SHAPES if args.quick else SPEED_SHAPES, args.seed,
                   *((3, 0.0) if args.quick else (10, 2.0)))
    runs, data = train_all(args, epochs)
    plot_training(out / "training.png", runs, args.lr)
    plot_forms(out / "backward_forms.png", rows, timing)

    metrics = {
        "experiment": NAME, **data, "tolerance": TOLERANCE, "agreement": rows,
        "max_rel_error": worst, "all_agree": worst <= TOLERANCE, "speed": timing,
        "cpu": common.cpu_model(), "device": str(jax.devices()[0]),
        "config": {"hidden": list(HIDDEN), "dropout": DROPOUT, "optimizer": "sgd", "lr": args.lr,
                   "batch_size": BATCH, "epochs": epochs},
        "runs": runs, "figures": ["training.png", "backward_forms.png"],
        "headline": {
            "largest relative error, staged/simplified/jax.vjp (float64)": worst,
            **{f"backward time staged/simplified, {t['shape']}": t["staged_over_simplified"]
               for t in timing},
            **{f"test accuracy, {name}": run["test_accuracy"] for name, run in runs.items()},
            "epochs": epochs, "CPU": common.cpu_model(),
            "data": f"{data['data']}, {data['n_train']} train / {data['n_validation']} "
                    f"validation / {data['n_test']} test",
        },
        "tables": {"relative error (float64)": {
            "headers": ["shape", "comparison", "dX", "dγ", "dβ"],
            "rows": [[r["shape"], r["comparison"], r["dX"], r["dgamma"], r["dbeta"]]
                     for r in rows]}},
    }
    common.write_metrics(out, metrics)
    print(common.table(metrics["tables"]["relative error (float64)"]["rows"],
                       ["shape", "comparison", "dX", "dγ", "dβ"]))
    print(common.table([[t["shape"], t["staged_us"], t["simplified_us"], t["staged_over_simplified"]]
                        for t in timing], ["shape", "staged µs", "simplified µs", "ratio"]))
    print(common.table([[name, r["val_accuracy"], r["test_accuracy"], r["train_seconds"]]
                        for name, r in runs.items()],
                       ["network", "val acc (last epoch)", "test acc", "train s"]))
    print(f"largest relative error {worst:.2e} (≤ {TOLERANCE:g}: {worst <= TOLERANCE}); "
          f"outputs in {out}")
    return metrics


if __name__ == "__main__":
    main()
