"""Two hidden ReLU layers fit ``sin`` on [−π, π]: note 001 (experiments/NOTES.md), "2 Hidden
Layers", with the note's chain rule written out here, not taken from fnnet.

Forward, for one scalar input ``i`` (column shapes of the note, ``h = 100``)::

    z1 = w1 i + b1,   H1 = ReLU(z1)        w1, b1 [h×1]
    z2 = w2 H1 + b2,  H2 = ReLU(z2)        w2 [h×h], b2 [h×1]
    O  = z3 = w3 H2 + b3                   w3 [1×h], b3 [1×1]
    C  = (O − O_des)²

Backward, the note's chain rule (``dH/dz = 1`` where ``H > 0``, else 0; ``⊙`` element-wise)::

    dC/dO  = 2 (O − O_des)
    dC/dw3 = dC/dO H2ᵀ                                   dC/db3 = dC/dO
    dC/dw2 = dC/dO (w3ᵀ ⊙ dH2/dz2) H1ᵀ                   dC/db2 = dC/dO (w3ᵀ ⊙ dH2/dz2)
    dC/dw1 = dC/dO ((w3 ⊙ dH2/dz2ᵀ) w2)ᵀ ⊙ dH1/dz1 · i   dC/db1 = dC/dO ((w3 ⊙ dH2/dz2ᵀ) w2)ᵀ ⊙ dH1/dz1

(the note writes ``H2`` and ``w3 ⊙ dH2/dz2`` without the transposes its shapes need).
``note_grads_one`` is that, literally, for one example. ``note_grads`` is the same with the ``N``
examples as the columns of ``I`` and the cost averaged, ``C = (1/N) Σ_n (O_n − O_des,n)²``: then
``dC/dO = 2 (O − O_des)/N`` is a ``[1×N]`` row and each product with ``H1ᵀ``, ``H2ᵀ`` or ``Iᵀ`` sums
the per-example gradients of the note (checked: equal to the mean of ``note_grads_one`` over the
examples).

Checks, in float64 and float32: ``note_grads`` against ``fnnet.value_and_grad`` (fnnet's own
hand-derived backward, for ``Sequential(Dense(1,h), ReLU(), Dense(h,h), ReLU(), Dense(h,1))`` with
``mse``) and against ``jax.grad`` of the note's cost; the max relative error ``‖a − b‖∞ / ‖b‖∞``
over the six parameters is reported.

Training: full-batch gradient descent with the note's gradients and learning rate 0.01, one
iteration = one update on all ``N`` points (one compiled ``lax.scan``); the fit after the note's
100, 500, 1000 and 5000 iterations (``--quick``: 20, 100, 200, 1000 on fewer points). The note leaves
the initialisation open: He-normal weights and ``b1 ~ N(0, 1)`` (see ``init``).

Writes ``two_hidden_layers_fit.png``, ``two_hidden_layers_loss.png`` and ``metrics.json``::

    python -m experiments.two_hidden_layers --out runs/two_hidden_layers [--quick] [--seed 0]
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

import fnnet
from experiments import common
from fnnet.plots import save_figure

HIDDEN = 100  # note 001: "HL Neurons = 100"
ALPHA = 0.01
ITERATIONS = (100, 500, 1000, 5000)  # note 001: "Training iters [100, 500, 1000, 5000]"
QUICK_ITERATIONS = (20, 100, 200, 1000)
NAMES = ("w1", "b1", "w2", "b2", "w3", "b3")


def network(h=HIDDEN):
    """The same network in fnnet: ``Dense(1,h) ReLU Dense(h,h) ReLU Dense(h,1)``."""
    return fnnet.Sequential(fnnet.Dense(1, h), fnnet.ReLU(), fnnet.Dense(h, h), fnnet.ReLU(),
                            fnnet.Dense(h, 1))


def to_note(params):
    """fnnet params of ``network()`` -> the note's dict: ``W`` is already ``[n_out×n_in]``
    (``w1 [h×1]``, ``w2 [h×h]``, ``w3 [1×h]``); biases become columns ``[n_out×1]``."""
    (d1, _, d2, _, d3) = params
    return {"w1": d1.W, "b1": d1.b[:, None], "w2": d2.W, "b2": d2.b[:, None],
            "w3": d3.W, "b3": d3.b[:, None]}


def to_fnnet(p):
    """The note's dict -> fnnet params of ``network()``."""
    D = fnnet.DenseParams
    return (D(p["w1"], p["b1"][:, 0]), (), D(p["w2"], p["b2"][:, 0]), (), D(p["w3"], p["b3"][:, 0]))


def forward(p, I):
    """Note 001's forward with the examples as columns: ``I [1×N] -> (z1, H1, z2, H2, O)``."""
    z1 = p["w1"] @ I + p["b1"]
    H1 = jnp.maximum(0, z1)
    z2 = p["w2"] @ H1 + p["b2"]
    H2 = jnp.maximum(0, z2)
    O = p["w3"] @ H2 + p["b3"]
    return z1, H1, z2, H2, O


def cost(p, I, O_des):
    """``C = (1/N) Σ_n (O_n − O_des,n)²``; for one example, the note's ``C = (O − O_des)²``."""
    return jnp.mean((forward(p, I)[-1] - O_des) ** 2)


def note_grads_one(p, i, O_des):
    """The note's chain rule for ONE example (scalar ``i``, scalar ``O_des``), literally."""
    i = jnp.reshape(i, (1, 1))
    _, H1, _, H2, O = forward(p, i)
    dC_dO = 2 * (O - O_des)                                   # [1×1]
    dH2_dz2 = (H2 != 0).astype(O.dtype)                       # [h×1], 1 where H2 ≠ 0
    dH1_dz1 = (H1 != 0).astype(O.dtype)
    w3_dH2 = p["w3"].T * dH2_dz2                              # (w3 ⊙ dH2/dz2) as a column
    back1 = (w3_dH2.T @ p["w2"]).T * dH1_dz1                  # ((w3 ⊙ dH2/dz2) w2) ⊙ dH1/dz1
    return {
        "w3": dC_dO * H2.T,                                   # [1×h]
        "b3": dC_dO,                                          # [1×1]
        "w2": dC_dO * (w3_dH2 @ H1.T),                        # [h×h]
        "b2": dC_dO * w3_dH2,                                 # [h×1]
        "w1": dC_dO * back1 * i,                              # [h×1]
        "b1": dC_dO * back1,                                  # [h×1]
    }


def note_grads(p, I, O_des):
    """The note's chain rule for ``N`` examples as columns, cost averaged over them.

    ``dC/dO = 2 (O − O_des)/N`` ``[1×N]``; ``D2 = (w3ᵀ ⊙ dH2/dz2) ⊙ dC/dO`` ``[h×N]`` and
    ``D1 = (w2ᵀ D2) ⊙ dH1/dz1`` are the note's bracketed factors times ``dC/dO``, one column per
    example; ``dC/dw2 = D2 H1ᵀ`` (etc.) sums the note's per-example products over the columns.
    Returns ``(C, grads)``.
    """
    z1, H1, z2, H2, O = forward(p, I)
    n = I.shape[1]
    dC_dO = 2 * (O - O_des) / n                               # [1×N]
    dH2_dz2 = (H2 != 0).astype(O.dtype)                       # [h×N]
    dH1_dz1 = (H1 != 0).astype(O.dtype)
    D2 = (p["w3"].T * dH2_dz2) * dC_dO                        # [h×N]
    D1 = (p["w2"].T @ D2) * dH1_dz1                           # [h×N]
    grads = {
        "w3": dC_dO @ H2.T, "b3": jnp.sum(dC_dO, axis=1, keepdims=True),
        "w2": D2 @ H1.T, "b2": jnp.sum(D2, axis=1, keepdims=True),
        "w1": D1 @ I.T, "b1": jnp.sum(D1, axis=1, keepdims=True),
    }
    return jnp.mean((O - O_des) ** 2), grads


def max_rel(a, b):
    """``max over parameters of ‖a − b‖∞ / ‖b‖∞`` (``b`` the reference), as a float."""
    worst = 0.0
    for name in NAMES:
        x, y = np.asarray(a[name], np.float64), np.asarray(b[name], np.float64)
        scale = np.max(np.abs(y))
        err = np.max(np.abs(x - y))
        worst = max(worst, float(err / scale) if scale > 0 else float(err))
    return worst


def init(rng, dtype=np.float32, h=HIDDEN):
    """Note-layout params drawn with the numpy generator ``rng``: He-normal weights
    (``N(0, 2/n_in)``, fnnet's default), ``b1 ~ N(0, 1)``, ``b2 = b3 = 0``.

    The note leaves the initialisation open. With ``b1 = 0`` every first-layer unit
    ``max(0, w1_j i)`` has its kink at ``i = 0``, and gradient descent at α = 0.01 spends thousands of
    iterations moving them; ``b1 ~ N(0, 1)`` spreads the kinks ``−b1_j / w1_j`` over the input range.
    """
    p = {"w1": rng.normal(0, np.sqrt(2.0), (h, 1)), "b1": rng.normal(0, 1, (h, 1)),
         "w2": rng.normal(0, np.sqrt(2.0 / h), (h, h)), "b2": np.zeros((h, 1)),
         "w3": rng.normal(0, np.sqrt(2.0 / h), (1, h)), "b3": np.zeros((1, 1))}
    return {k: jnp.asarray(v, dtype) for k, v in p.items()}


@jax.jit
def _all_grads(p, i):
    """The note's gradient and its four references for inputs ``i`` (target ``sin i``)."""
    I, O_des = i[None, :], jnp.sin(i)[None, :]
    c, mine = note_grads(p, I, O_des)
    per_example = jax.vmap(note_grads_one, in_axes=(None, 0, 0))(p, i, O_des[0])
    mean_one = {k: jnp.mean(v, axis=0) for k, v in per_example.items()}
    c_f, g_f = fnnet.value_and_grad(network(), fnnet.losses.mse)(to_fnnet(p), i[:, None], O_des.T)
    c_j, g_j = jax.value_and_grad(cost)(p, I, O_des)
    return (c, c_f, c_j), (mine, mean_one, to_note(g_f), g_j)


def compare(seed, n, dtype):
    """Max relative errors of the note's gradient against the mean of the per-example note
    gradients, ``fnnet.value_and_grad`` and ``jax.grad``, on ``n`` random inputs in ``dtype``."""
    rng = np.random.default_rng(seed)
    p = init(rng, dtype)
    i = jnp.asarray(rng.uniform(-np.pi, np.pi, n), dtype)
    (c, c_f, c_j), (mine, mean_one, g_f, g_j) = jax.device_get(_all_grads(p, i))
    return {
        "vs_mean_of_per_example_note": max_rel(mine, mean_one),
        "vs_fnnet_value_and_grad": max_rel(mine, g_f),
        "vs_jax_grad": max_rel(mine, g_j),
        "fnnet_value_and_grad_vs_jax_grad": max_rel(g_f, g_j),
        "cost_rel_diff_vs_fnnet": abs(float(c) - float(c_f)) / abs(float(c_f)),
        "cost_rel_diff_vs_jax": abs(float(c) - float(c_j)) / abs(float(c_j)),
    }


def train(p, I, O_des, grid, checkpoints, alpha=ALPHA):
    """Full-batch gradient descent ``w ← w − α dC/dw`` with ``note_grads``, ``max(checkpoints)``
    iterations in one ``lax.scan``. Returns the final params, the cost before every update, and
    the network's output on ``grid`` after each checkpoint's iteration (``[len(checkpoints), G]``).
    """
    marks = jnp.asarray(checkpoints)
    snaps = jnp.zeros((len(checkpoints), grid.shape[1]), I.dtype)

    def step(carry, t):
        p, snaps = carry
        c, g = note_grads(p, I, O_des)
        p = {k: p[k] - alpha * g[k] for k in p}
        hit = marks == t + 1
        snaps = jax.lax.cond(jnp.any(hit),
                             lambda s: jnp.where(hit[:, None], forward(p, grid)[-1], s),
                             lambda s: s, snaps)
        return (p, snaps), c

    (p, snaps), costs = jax.lax.scan(step, (p, snaps), jnp.arange(max(checkpoints)))
    return p, costs, snaps


def plot_fit(path, i, o, grid, snaps, checkpoints, costs):
    fig, ax = common.subplots(figsize=(7.5, 4.6))
    ax.plot(grid, np.sin(grid), "k--", lw=2, label="target sin(i)")
    ax.scatter(i, o, s=8, color="k", alpha=0.4, label=f"{len(i)} training points")
    colors = matplotlib.colormaps["viridis"](np.linspace(0.1, 0.9, len(checkpoints)))
    for t, s, c in zip(checkpoints, snaps, colors):
        ax.plot(grid, s, color=c, label=f"after {t} iterations (C = {costs[t - 1]:.2g})")
    ax.set(xlabel="input i", ylabel="output O",
           title=f"note 001: 1-{HIDDEN}-{HIDDEN}-1 ReLU, full-batch GD, α = {ALPHA}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_loss(path, costs, checkpoints):
    fig, ax = common.subplots(figsize=(6.5, 4.2))
    it = np.arange(1, len(costs) + 1)
    ax.plot(it, costs)
    for t in checkpoints:
        ax.axvline(t, color="gray", ls=":", lw=1)
    ax.set(xlabel="iteration", ylabel="C (mean squared error)", xscale="log", yscale="log",
           title="cost before each update (dotted: the note's checkpoints)")
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, path)


def main(argv=None):
    """Run the experiment; return the metrics written to ``OUT/metrics.json``."""
    args = common.parser(__doc__.splitlines()[0], "two_hidden_layers").parse_args(argv)
    n, checkpoints = (64, QUICK_ITERATIONS) if args.quick else (200, ITERATIONS)
    with jax.enable_x64(True):
        checks64 = compare(args.seed + 1, 256, jnp.float64)
    checks32 = compare(args.seed + 1, 256, jnp.float32)

    i = jnp.linspace(-np.pi, np.pi, n, dtype=jnp.float32)
    I, O_des = i[None, :], jnp.sin(i)[None, :]
    grid = np.linspace(-np.pi, np.pi, 400, dtype=np.float32)
    p0 = init(np.random.default_rng(args.seed), jnp.float32)
    p, costs, snaps = jax.jit(train, static_argnums=(4,))(p0, I, O_des, jnp.asarray(grid)[None, :],
                                                          checkpoints)
    costs, snaps = np.asarray(costs), np.asarray(snaps)
    final_cost = float(cost(p, I, O_des))

    out = Path(args.out)
    plot_fit(out / "two_hidden_layers_fit.png", np.asarray(i), np.asarray(O_des[0]), grid, snaps,
             checkpoints, np.append(costs[1:], final_cost))
    plot_loss(out / "two_hidden_layers_loss.png", costs, checkpoints)
    after = {t: float(costs[t]) if t < len(costs) else final_cost for t in checkpoints}
    stride = max(1, len(costs) // 1000)
    metrics = {
        "experiment": "two_hidden_layers", "note": "001",
        "hidden": HIDDEN, "alpha": ALPHA, "n_points": n, "seed": args.seed, "quick": args.quick,
        "update": "full-batch gradient descent on the mean cost, note 001's chain-rule gradients",
        "init": "He-normal weights, b1 ~ N(0, 1), b2 = b3 = 0",
        "checkpoints": list(checkpoints),
        "cost_after": after,
        "initial_cost": float(costs[0]), "final_cost": final_cost,
        "grad_max_rel_error": {"float64": checks64, "float32": checks32},
        "cost_every": stride, "cost_curve": costs[::stride],
    }
    common.write_metrics(out, metrics)
    print(common.table([[name, checks64[name], checks32[name]] for name in checks64],
                       ["note 001 gradient", "max rel err float64", "float32"]))
    print(common.table([[t, after[t]] for t in checkpoints], ["iterations", "cost C after"]))
    print(f"initial cost {metrics['initial_cost']:.4g}; wrote {out}")
    return metrics


if __name__ == "__main__":
    main()
