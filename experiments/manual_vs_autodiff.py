"""Hand-derived gradients against ``jax.grad`` for every network of the notes, and what each costs.

Every backward rule fnnet uses is derived in the notes (experiments/NOTES.md); this runs them all,
one network per derivation, against JAX's automatic differentiation of the plain forward pass (note
004's closing step: "let an automatic-differentiation framework compute the same derivatives, and
compare")::

    name                network                                              loss                  note
    single_neuron       Dense(1,1)                                           MSE                   001
    two_hidden_layers   Dense(1,100) ReLU Dense(100,100) ReLU Dense(100,1)   MSE                   001
    xor                 Dense(2,3) Tanh Dense(3,1) Tanh                      MSE                   000
    mnist_relu_softmax  Dense(784,10) ReLU Dense(10,10) Softmax              cross-entropy         002
    mnist_sigmoid_bce   Dense(784,17) Sigmoid Dense(17,10) Sigmoid           binary cross-entropy  004
    mnist_tanh_mse      Dense(784,40) Tanh Dense(40,10) Tanh                 MSE                   000

The rules being checked: Dense ``dE/dW = dE/dY Xᵀ, dE/dX = Wᵀ dE/dY`` and activations
``dE/dX = dE/dY ⊙ f'(X)`` (note 000), MSE ``dE/dY = (2/n)(Y − Y*)`` (note 000), softmax with
cross-entropy ``dZ = A − Y`` (note 002), sigmoid with binary cross-entropy ``dL/dZ2 = Ŷ − Y`` and
``σ' = A(1 − A)`` (note 004), ReLU ``dH/dz = [z > 0]`` (notes 000, 001).

For each network, on random data of the right shape (no dataset needed; pixels uniform in [0, 1],
labels uniform over the 10 classes; batch 256, ``--quick`` 32), ``fnnet.check_grads`` gives the
largest absolute and relative (``‖manual − autodiff‖∞ / ‖autodiff‖∞`` per parameter) difference,
in float32 and in float64. And the compiled cost of a training step, ``fnnet.train_step`` with
``grads="manual"`` against ``grads="autodiff"`` (sgd, float32): a jitted ``lax.scan`` of S steps
on one batch, timed (compile excluded, median of repeats) and divided by S, so the per-call dispatch
does not swamp the small networks.

Writes ``manual_vs_autodiff.png`` (errors on a log axis; step times) and ``metrics.json``::

    python -m experiments.manual_vs_autodiff --out runs/manual_vs_autodiff [--quick] [--seed 0]
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnnet
from experiments import common
from fnnet.plots import save_figure

TOLERANCE = {"float32": 1e-4, "float64": 1e-10}
ERROR_FLOOR = 1e-20  # where an exact zero is drawn on the log axis


def networks():
    """``{name: (model, loss, note)}`` for every network of the notes."""
    D = fnnet.Dense
    return {
        "single_neuron": (fnnet.Sequential(D(1, 1)), fnnet.losses.mse, "001"),
        "two_hidden_layers": (fnnet.Sequential(D(1, 100), fnnet.ReLU(), D(100, 100), fnnet.ReLU(),
                                               D(100, 1)), fnnet.losses.mse, "001"),
        "xor": (fnnet.Sequential(D(2, 3, init="xavier"), fnnet.Tanh(), D(3, 1, init="xavier"),
                                 fnnet.Tanh()), fnnet.losses.mse, "000"),
        "mnist_relu_softmax": (fnnet.Sequential(D(784, 10), fnnet.ReLU(), D(10, 10), fnnet.Softmax()),
                               fnnet.losses.cross_entropy, "002"),
        "mnist_sigmoid_bce": (fnnet.Sequential(D(784, 17, init="xavier"), fnnet.Sigmoid(),
                                               D(17, 10, init="xavier"), fnnet.Sigmoid()),
                              fnnet.losses.binary_cross_entropy, "004"),
        "mnist_tanh_mse": (fnnet.Sequential(D(784, 40, init="xavier"), fnnet.Tanh(),
                                            D(40, 10, init="xavier"), fnnet.Tanh()),
                           fnnet.losses.mse, "000"),
    }


def make_data(name, batch, rng):
    """Random inputs and targets shaped for network ``name`` (float64 numpy; labels int32)."""
    if name == "single_neuron":
        x = rng.normal(size=(batch, 1))
        return x, 3 * x - 2 + 0.3 * rng.normal(size=(batch, 1))
    if name == "two_hidden_layers":
        x = rng.uniform(-np.pi, np.pi, (batch, 1))
        return x, np.sin(x)
    if name == "xor":
        bits = rng.integers(0, 2, (batch, 2))
        x = bits + 0.1 * rng.normal(size=(batch, 2))
        return x, (bits[:, :1] ^ bits[:, 1:]).astype(np.float64)
    if name.startswith("mnist_"):
        x = rng.uniform(0, 1, (batch, 784))
        labels = rng.integers(0, 10, batch).astype(np.int32)
        if name == "mnist_relu_softmax":
            return x, labels
        return x, np.eye(10)[labels]
    raise ValueError(f"make_data: unknown network {name!r}; expected one of {sorted(networks())}")


def gradient_check(model, loss, seed, x, y, dtype):
    """``fnnet.check_grads`` at params drawn from ``seed`` in ``dtype``: ``(report, n_params)``."""
    params = common.host_init(model, np.random.default_rng(seed), dtype)
    y = y if np.issubdtype(y.dtype, np.integer) else jnp.asarray(y, dtype)
    report = fnnet.check_grads(model, loss, params, jnp.asarray(x, dtype), y)
    n = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(params))
    return report, n


median_time = common.median_time


def step_time(model, loss, grads, seed, x, y, steps, budget_s):
    """Seconds per compiled ``fnnet.train_step`` (float32, sgd 0.01): a jitted scan of ``steps``
    steps on one batch, median over repeats, divided by ``steps``."""
    opt = fnnet.optim.sgd(0.01)
    step = fnnet.train_step(model, loss, opt, grads=grads)
    params = common.host_init(model, np.random.default_rng(seed), jnp.float32)
    key = jax.random.PRNGKey(seed)
    state = fnnet.TrainState.create(model, opt, key, params=params)
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y) if np.issubdtype(y.dtype, np.integer) else jnp.asarray(y, jnp.float32)

    @jax.jit
    def run(state):
        def body(state, _):
            return step(state, x, y, key)[0], None  # no dropout: the key draws nothing

        return jax.lax.scan(body, state, None, length=steps)[0].params

    seconds, repeats = median_time(run, state, budget_s=budget_s)
    return seconds / steps, repeats


def plot(path, rows):
    names = [r["network"] for r in rows]
    fig, (ax_e, ax_t) = common.subplots(1, 2, figsize=(14, 4.8))
    bars = [("float32", "max_abs", "float32 abs"), ("float32", "max_rel", "float32 rel"),
            ("float64", "max_abs", "float64 abs"), ("float64", "max_rel", "float64 rel")]
    width = 0.8 / len(bars)
    xs = np.arange(len(names))
    for j, (dt, kind, label) in enumerate(bars):
        vals = [max(r[dt][kind], ERROR_FLOOR) for r in rows]
        ax_e.bar(xs + (j - 1.5) * width, vals, width, label=label,
                 color=("C0", "C9", "C3", "C1")[j])
    for dt, ls in (("float32", "--"), ("float64", ":")):
        ax_e.axhline(TOLERANCE[dt], color="k", ls=ls, lw=1, label=f"{dt} rel tolerance")
    ax_e.set_yscale("log")
    ax_e.set_xticks(xs, names, rotation=20, ha="right")
    ax_e.set(ylabel="max |manual − jax.grad|", ylim=(ERROR_FLOOR / 2, 1),
             title=f"gradient differences (an exact 0 is drawn at {ERROR_FLOOR:g})")
    ax_e.legend(fontsize=8, ncol=2)
    ax_e.grid(alpha=0.3, axis="y")
    for j, (kind, label) in enumerate((("manual", "manual backward"), ("autodiff", "jax.grad"))):
        ax_t.bar(xs + (j - 0.5) * 0.4, [r[f"{kind}_step_us"] for r in rows], 0.4, label=label)
    for x, r in zip(xs, rows):
        top = max(r["manual_step_us"], r["autodiff_step_us"])
        ax_t.annotate(f"×{r['autodiff_over_manual']:.2f}", (x, top), ha="center", va="bottom",
                      fontsize=8)
    ax_t.set_yscale("log")
    ax_t.set_xticks(xs, names, rotation=20, ha="right")
    ax_t.set(ylabel="µs per step (median)",
             title="compiled train_step time, float32 (label: autodiff / manual)")
    ax_t.legend(fontsize=8)
    ax_t.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def main(argv=None):
    """Run the experiment; return the metrics written to ``OUT/metrics.json``."""
    args = common.parser(__doc__.splitlines()[0], "manual_vs_autodiff").parse_args(argv)
    batch, steps, budget = (32, 10, 0.03) if args.quick else (256, 100, 1.0)
    rng = np.random.default_rng(args.seed)
    rows = []
    for name, (model, loss, note) in networks().items():
        k_init = int(rng.integers(2 ** 31))
        x, y = make_data(name, batch, rng)
        row = {"network": name, "model": repr(model), "loss": loss.name, "note": note}
        for dtype_name, dtype in (("float32", jnp.float32), ("float64", jnp.float64)):
            with jax.enable_x64(True) if dtype_name == "float64" else contextlib.nullcontext():
                report, n_params = gradient_check(model, loss, k_init, x, y, dtype)
            row[dtype_name] = {"max_abs": report.max_abs, "max_rel": report.max_rel,
                               "ok": report.ok(TOLERANCE[dtype_name]),
                               "per_parameter": [{"name": r.name, "shape": r.shape,
                                                  "max_abs": r.max_abs, "max_rel": r.max_rel}
                                                 for r in report.rows]}
        row["params"] = n_params
        for g in ("manual", "autodiff"):
            seconds, repeats = step_time(model, loss, g, k_init, x, y, steps, budget)
            row[f"{g}_step_us"] = seconds * 1e6
            row[f"{g}_repeats"] = repeats
        row["autodiff_over_manual"] = row["autodiff_step_us"] / row["manual_step_us"]
        rows.append(row)

    out = Path(args.out)
    plot(out / "manual_vs_autodiff.png", rows)
    metrics = {
        "experiment": "manual_vs_autodiff", "seed": args.seed, "quick": args.quick,
        "batch": batch, "steps_per_timing": steps, "tolerance": TOLERANCE,
        "device": str(jax.devices()[0]),
        "all_ok": all(r["float32"]["ok"] and r["float64"]["ok"] for r in rows),
        "networks": {r["network"]: r for r in rows},
    }
    common.write_metrics(out, metrics)
    print(common.table(
        [[r["network"], r["params"], r["float32"]["max_abs"], r["float32"]["max_rel"],
          r["float64"]["max_abs"], r["float64"]["max_rel"], r["manual_step_us"],
          r["autodiff_step_us"], r["autodiff_over_manual"]] for r in rows],
        ["network", "params", "f32 max abs", "f32 max rel", "f64 max abs", "f64 max rel",
         "manual µs/step", "autodiff µs/step", "autodiff/manual"]))
    print(f"every network within tolerance (float32 rel ≤ {TOLERANCE['float32']:g}, float64 rel ≤ "
          f"{TOLERANCE['float64']:g}): {metrics['all_ok']}; batch {batch}; wrote {out}")
    return metrics


if __name__ == "__main__":
    main()
