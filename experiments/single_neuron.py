"""One neuron learns a line: note 001 (experiments/NOTES.md), first page.

Forward, cost, chain rule and update exactly as the note writes them, for one example at a time::

    output = w · input + b
    C      = (output − desired)²
    dC/dw  = dC/doutput · doutput/dw = 2 (output − desired) · input
    dC/db  = dC/doutput · doutput/db = 2 (output − desired)
    w ← w − α dC/dw,   b ← b − α dC/db,   α = 0.01

The data are noisy samples of a known line, ``desired = 3 · input − 2 + ε`` with ``input ~ U(−2, 2)``
and ``ε ~ N(0, 0.3²)``. Training is per-sample stochastic gradient descent, as the note does it: one
update per example (no averaging over a batch), the examples visited in a fresh random order every
epoch. The whole run is one compiled ``lax.scan``; its outputs are the per-iteration ``w``, ``b``,
the cost of the example just used and the mean cost over the whole data set.

Checks: the recovered ``w, b`` against the true ``3, −2`` and against the least-squares line of the
same noisy data (what any fit can hope to reach), and the note's two derivatives against
``jax.grad`` of ``C`` at random points, in float64.

Writes ``single_neuron.png`` (data and fitted line; ``w``, ``b`` and the cost against iteration) and
``metrics.json``::

    python -m experiments.single_neuron --out runs/single_neuron [--quick] [--seed 0]
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from fnnet.plots import save_figure

TRUE_W, TRUE_B = 3.0, -2.0
NOISE = 0.3
ALPHA = 0.01  # note 001: "typical learning rate"


def make_data(rng, n, dtype=np.float32):
    """``n`` noisy points of the line: ``input ~ U(−2, 2)``, ``desired = 3 input − 2 + N(0, 0.3²)``
    (drawn with the numpy generator ``rng``)."""
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"make_data: n must be an integer >= 2, got {n!r}")
    x = rng.uniform(-2.0, 2.0, n)
    d = TRUE_W * x + TRUE_B + NOISE * rng.normal(size=n)
    return x.astype(dtype), d.astype(dtype)


def cost(w, b, x, desired):
    """Note 001: ``C = (output − desired)²`` with ``output = w · input + b`` (one example)."""
    output = w * x + b
    return (output - desired) ** 2


def note_grads(w, b, x, desired):
    """Note 001's chain rule, written out: ``dC/dw = 2 (output − desired) · input``,
    ``dC/db = 2 (output − desired)``."""
    output = w * x + b
    dC_doutput = 2 * (output - desired)
    return dC_doutput * x, dC_doutput


def visiting_order(rng, n, epochs):
    """The example used at each iteration: every epoch a fresh random permutation of ``0 … n−1``."""
    return np.concatenate([rng.permutation(n) for _ in range(epochs)]).astype(np.int32)


@jax.jit
def train(w0, b0, x, desired, order, alpha=ALPHA):
    """Per-sample SGD with the note's update ``w ← w − α dC/dw``, ``b ← b − α dC/db``, one update
    per entry of ``order`` (the index of the example used), in one ``lax.scan``. Returns the final
    ``(w, b)`` and per-iteration arrays ``w``, ``b`` (after the update), ``cost`` (of the example
    used, before the update) and ``mean_cost`` (over all examples, after the update).
    """

    def step(carry, i):
        w, b = carry
        c = cost(w, b, x[i], desired[i])
        dw, db = note_grads(w, b, x[i], desired[i])
        w, b = w - alpha * dw, b - alpha * db
        mean_c = jnp.mean(cost(w, b, x, desired))
        return (w, b), {"w": w, "b": b, "cost": c, "mean_cost": mean_c}

    (w, b), trace = jax.lax.scan(step, (w0, b0), order)
    return (w, b), trace


def least_squares(x, desired):
    """The line minimising ``Σ (w x + b − desired)²`` (closed form), as a reference for the fit."""
    A = np.stack([np.asarray(x, np.float64), np.ones(len(x))], axis=1)
    (w, b), *_ = np.linalg.lstsq(A, np.asarray(desired, np.float64), rcond=None)
    return float(w), float(b)


def check_note_grads(rng, n=1000):
    """Max abs and rel difference between the note's ``dC/dw, dC/db`` and ``jax.grad`` of ``C`` at
    ``n`` random ``(w, b, input, desired)``, in float64."""

    @jax.jit
    def both(w, b, x, d):
        return jax.vmap(note_grads)(w, b, x, d), jax.vmap(jax.grad(cost, argnums=(0, 1)))(w, b, x, d)

    with jax.enable_x64(True):
        mine, ref = both(*jnp.asarray(rng.normal(0, 3, (4, n)), jnp.float64))
        out = {}
        for name, m, r in zip(("dC/dw", "dC/db"), mine, ref):
            m, r = np.asarray(m), np.asarray(r)
            err = np.abs(m - r)
            out[name] = {"max_abs": float(err.max()),
                         "max_rel": float(np.max(err / np.maximum(np.abs(r), 1e-300)))}
    return out


def plot(path, x, desired, w, b, trace, title):
    """Left: the data, the true line and the fitted one. Middle: ``w, b`` per iteration. Right: the
    cost per iteration (each example's, and the mean over the data)."""
    fig, (ax_d, ax_p, ax_c) = common.subplots(1, 3, figsize=(15, 4.2))
    grid = np.linspace(-2.2, 2.2, 50)
    ax_d.scatter(x, desired, s=10, alpha=0.6, label="data")
    ax_d.plot(grid, TRUE_W * grid + TRUE_B, "k--", label=f"true: {TRUE_W:g}·x {TRUE_B:+g}")
    ax_d.plot(grid, w * grid + b, "r-", label=f"fitted: {w:.3f}·x {b:+.3f}")
    ax_d.set(xlabel="input", ylabel="desired output", title="data and fitted line")
    it = np.arange(1, len(trace["w"]) + 1)
    ax_p.plot(it, trace["w"], label="w")
    ax_p.plot(it, trace["b"], label="b")
    ax_p.axhline(TRUE_W, color="C0", ls=":", lw=1)
    ax_p.axhline(TRUE_B, color="C1", ls=":", lw=1)
    ax_p.set(xlabel="iteration (one example each)", ylabel="value", title="w and b", xscale="log")
    ax_c.plot(it, trace["cost"], lw=0.5, alpha=0.4, label="C of the example used")
    ax_c.plot(it, trace["mean_cost"], label="mean C over the data")
    ax_c.axhline(NOISE ** 2, color="k", ls=":", lw=1, label=f"noise variance {NOISE ** 2:g}")
    ax_c.set(xlabel="iteration", ylabel="cost", title="cost", xscale="log", yscale="log")
    for ax in (ax_d, ax_p, ax_c):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def main(argv=None):
    """Run the experiment; return the metrics written to ``OUT/metrics.json``."""
    args = common.parser(__doc__.splitlines()[0], "single_neuron").parse_args(argv)
    n, epochs = (100, 20) if args.quick else (200, 50)
    rng = np.random.default_rng(args.seed)
    x, desired = make_data(rng, n)
    w0, b0 = rng.normal(size=2).astype(np.float32)
    (w, b), trace = train(w0, b0, x, desired, visiting_order(rng, n, epochs))
    w, b = float(w), float(b)
    trace = {k: np.asarray(v) for k, v in trace.items()}
    ls_w, ls_b = least_squares(x, desired)
    grads = check_note_grads(rng)

    out = Path(args.out)
    plot(out / "single_neuron.png", np.asarray(x), np.asarray(desired), w, b, trace,
         f"note 001: one neuron, per-sample SGD, α = {ALPHA}, {epochs} epochs × {n} examples")
    stride = max(1, len(trace["w"]) // 500)
    metrics = {
        "experiment": "single_neuron",
        "note": "001",
        "update": "per-sample SGD (one example per update, no averaging), shuffled every epoch",
        "alpha": ALPHA, "n_examples": n, "epochs": epochs, "iterations": n * epochs,
        "seed": args.seed, "quick": args.quick,
        "true": {"w": TRUE_W, "b": TRUE_B}, "noise_std": NOISE,
        "initial": {"w": float(w0), "b": float(b0)},
        "w": w, "b": b,
        "w_error": abs(w - TRUE_W), "b_error": abs(b - TRUE_B),
        "least_squares": {"w": ls_w, "b": ls_b},
        "w_error_vs_least_squares": abs(w - ls_w), "b_error_vs_least_squares": abs(b - ls_b),
        "final_mean_cost": float(trace["mean_cost"][-1]),
        "note_grads_vs_jax_grad_float64": grads,
        "trace_every": stride,
        "trace": {k: v[::stride] for k, v in trace.items()},
    }
    common.write_metrics(out, metrics)
    print(common.table(
        [["w", TRUE_W, ls_w, w, abs(w - TRUE_W)], ["b", TRUE_B, ls_b, b, abs(b - TRUE_B)]],
        ["param", "true", "least squares", "SGD (note 001)", "|SGD − true|"]))
    print(common.table([[k, v["max_abs"], v["max_rel"]] for k, v in grads.items()],
                       ["note's derivative", "max abs vs jax.grad", "max rel (float64)"]))
    print(f"final mean cost {metrics['final_mean_cost']:.4g} (noise variance {NOISE ** 2:g}); "
          f"wrote {out}")
    return metrics


if __name__ == "__main__":
    main()
