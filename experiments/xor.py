"""XOR with a 2-3-1 tanh network: note 000 (experiments/NOTES.md), the layers-as-objects design
trained end to end.

The network is note 000's ``Sequential(Dense(2, 3), Tanh(), Dense(3, 1), Tanh())`` with its mean
squared error ``E = (1/n) Σ (y* − y)²`` and the backward rules of note 000 as fnnet implements them::

    Dense:       dE/dW = dE/dY Xᵀ,   dE/dB = dE/dY,   dE/dX = Wᵀ dE/dY
    activation:  dE/dX = dE/dY ⊙ f'(X),   tanh'(X) = 1 − tanh²(X)
    MSE:         dE/dY = (2/n)(Y − Y*)

Training: full-batch gradient descent (``fnnet.optim.sgd(0.1)``) on the four points for a few
thousand epochs: ``fnnet.train_step`` (manual gradients) scanned with ``lax.scan``, one compiled
program for the whole run. A point counts as classified correctly when the output is on the right
side of 0.5 (targets 0 and 1); XOR is solved when all four are.

Seed robustness: the same run for 10 seeds at once (``jax.vmap`` of the scanned run; keys
``jax.random.split(key, 10)``, each started from ``fnnet.TrainState.create``, as ``fnnet.fit``
starts). Without ``--quick`` the 10 are also trained by ``fnnet.fit(..., ensemble=10,
batch_size=None)`` and the two are compared (``fit`` runs one compiled program per epoch, a Python
loop over a few thousand one-step epochs, which is why the scan is the main path).

Writes ``xor_surface.png`` (the network's output over ``[−0.5, 1.5]²`` with the four points and the
0.5 contour), ``xor_seeds.png`` (loss curves of the 10 seeds) and ``metrics.json``::

    python -m experiments.xor --out runs/xor [--quick] [--seed 0]
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnnet
from experiments import common
from fnnet.plots import save_figure

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
Y = np.array([[0], [1], [1], [0]], np.float32)
LR = 0.1
EPOCHS = 3000
SEEDS = 10


def network():
    """Note 000's XOR network (Xavier-uniform weights, zero biases)."""
    return fnnet.Sequential(fnnet.Dense(2, 3, init="xavier"), fnnet.Tanh(),
                            fnnet.Dense(3, 1, init="xavier"), fnnet.Tanh())


def train(key, epochs, x=X, y=Y):
    """One run: the state ``fnnet.fit`` starts from (``fnnet.TrainState.create(model, sgd(0.1),
    key)``), then ``epochs`` full-batch steps ``step(state, x, y, key) -> (state, stats)`` of
    ``fnnet.train_step`` in a ``lax.scan``. Returns the params, the loss before every step (the
    step's ``stats["loss"]``) and how many points are classified correctly after every step."""
    model, opt = network(), fnnet.optim.sgd(LR)
    state = fnnet.TrainState.create(model, opt, key)
    step = fnnet.train_step(model, fnnet.losses.mse, opt, grads="manual")
    x, y = jnp.asarray(x), jnp.asarray(y)

    def body(state, i):
        state, stats = step(state, x, y, jax.random.fold_in(key, i))  # no dropout: key unused
        return state, (stats["loss"], correct(state.params, x, y))

    state, (losses, n_correct) = jax.lax.scan(body, state, jnp.arange(epochs))
    return state.params, losses, n_correct


def epochs_to_solve(n_correct, n_points=4):
    """The first epoch after which every point is classified correctly and stays so (None if the
    run does not end solved)."""
    n_correct = np.asarray(n_correct)
    if n_correct[-1] != n_points:
        return None
    wrong = np.flatnonzero(n_correct != n_points)
    return int(wrong[-1]) + 2 if wrong.size else 1


@jax.jit
def runs(keys):
    """``train`` for every key (a leading axis of keys), ``EPOCHS`` epochs, vmapped and compiled."""
    return jax.vmap(lambda k: train(k, EPOCHS))(keys)


@jax.jit
def apply(params, x):
    """The network's output (compiled)."""
    return network().apply(params, x)


def correct(params, x=X, y=Y):
    """How many of the points are on the right side of 0.5."""
    return fnnet.metrics.correct(network().apply(params, jnp.asarray(x)), jnp.asarray(y))


def plot_surface(path, params, lo=-0.5, hi=1.5, n=201):
    """Output of the network over ``[lo, hi]²``, the 0.5 contour and the four XOR points."""
    g = np.linspace(lo, hi, n, dtype=np.float32)
    gx, gy = np.meshgrid(g, g)
    z = np.asarray(apply(params, jnp.asarray(np.stack([gx.ravel(), gy.ravel()], 1))))
    fig, ax = common.subplots(figsize=(5.6, 4.8))
    cs = ax.contourf(gx, gy, z.reshape(gx.shape), levels=np.linspace(-1, 1, 21), cmap="RdBu_r")
    ax.contour(gx, gy, z.reshape(gx.shape), levels=[0.5], colors="k", linewidths=1.5)
    fig.colorbar(cs, ax=ax, label="network output")
    for (a, b), t in zip(X, Y[:, 0]):
        ax.scatter([a], [b], s=120, c="white" if t else "black", edgecolors="k", linewidths=1.5,
                   zorder=3)
        ax.annotate(f"XOR = {int(t)}", (a, b), textcoords="offset points", xytext=(8, 8))
    ax.set(xlabel="x₁", ylabel="x₂", xlim=(lo, hi), ylim=(lo, hi),
           title="note 000: 2-3-1 tanh network on XOR\n(black line: output = 0.5)")
    return save_figure(fig, path)


def plot_seeds(path, losses, solved):
    fig, ax = common.subplots(figsize=(6.5, 4.2))
    epochs = np.arange(1, losses.shape[1] + 1)
    for k, (curve, ok) in enumerate(zip(losses, solved)):
        ax.plot(epochs, curve, color="C0" if ok else "C3", alpha=0.8,
                label=("solved" if ok else "not solved") if k == int(np.argmax(solved == ok)) else None)
    ax.set(xlabel="epoch (one full-batch step)", ylabel="MSE", yscale="log",
           title=f"XOR, {len(solved)} seeds: {int(np.sum(solved))} solved")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return save_figure(fig, path)


def fit_ensemble(key, epochs):
    """The same 10 runs through ``fnnet.fit(ensemble=10)``: returns stacked params."""
    state, _ = fnnet.fit(network(), fnnet.losses.mse, fnnet.optim.sgd(LR), (X, Y),
                         epochs=epochs, batch_size=None, key=key, ensemble=SEEDS, progress=False)
    return state.params


def main(argv=None):
    """Run the experiment; return the metrics written to ``OUT/metrics.json``."""
    args = common.parser(__doc__.splitlines()[0], "xor").parse_args(argv)
    key = jax.random.PRNGKey(args.seed)
    # The main run (key) and the 10 seed runs (split(key, 10)) in one compiled program.
    keys = jnp.concatenate([key[None], jax.random.split(key, SEEDS)])
    all_params, all_losses, all_correct = runs(keys)
    params = jax.tree_util.tree_map(lambda a: a[0], all_params)
    losses, run_correct = np.asarray(all_losses[0]), np.asarray(all_correct[0])
    n_correct = int(run_correct[-1])
    outputs = np.asarray(apply(params, jnp.asarray(X)))[:, 0]
    seed_params = jax.tree_util.tree_map(lambda a: a[1:], all_params)
    seed_losses, seed_run_correct = np.asarray(all_losses[1:]), np.asarray(all_correct[1:])
    seed_correct = seed_run_correct[:, -1]
    solved = seed_correct == len(X)
    seed_epochs = [epochs_to_solve(c) for c in seed_run_correct]

    out = Path(args.out)
    plot_surface(out / "xor_surface.png", params)
    plot_seeds(out / "xor_seeds.png", seed_losses, solved)
    metrics = {
        "experiment": "xor", "note": "000", "seed": args.seed, "quick": args.quick,
        "network": repr(network()), "loss": "mse", "optimizer": f"sgd(lr={LR}), full batch",
        "epochs": EPOCHS,
        "accuracy": n_correct / len(X), "solved": n_correct == len(X),
        "outputs": outputs, "targets": Y[:, 0], "final_loss": float(losses[-1]),
        "epochs_to_solve": epochs_to_solve(run_correct),
        "seeds": SEEDS, "seeds_solved": int(np.sum(solved)),
        "seed_correct": seed_correct, "seed_final_loss": seed_losses[:, -1],
        "seed_epochs_to_solve": seed_epochs,
        "loss_curve": np.asarray(losses)[:: max(1, EPOCHS // 500)],
    }
    if not args.quick:
        fit_params = fit_ensemble(key, EPOCHS)
        fit_correct = np.asarray(jax.jit(jax.vmap(correct))(fit_params))
        diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                   zip(jax.tree_util.tree_leaves(fit_params), jax.tree_util.tree_leaves(seed_params)))
        metrics["fit_ensemble"] = {"seeds_solved": int(np.sum(fit_correct == len(X))),
                                   "seed_correct": fit_correct,
                                   "max_abs_param_diff_vs_scan": diff}
    common.write_metrics(out, metrics)
    print(common.table([[f"({int(a)}, {int(b)})", int(t), float(o), "yes" if (o > 0.5) == t else "no"]
                        for (a, b), t, o in zip(X, Y[:, 0], outputs)],
                       ["input", "XOR", "output", "correct"]))
    print(f"accuracy {n_correct}/{len(X)} after {EPOCHS} epochs (final MSE {float(losses[-1]):.3g}); "
          f"{int(np.sum(solved))}/{SEEDS} seeds solve it")
    print(common.table([[k, int(c), float(f), "-" if e is None else e]
                        for k, (c, f, e) in enumerate(zip(seed_correct, seed_losses[:, -1], seed_epochs))],
                       ["seed run", "correct /4", "final MSE", "solved from epoch"]))
    if "fit_ensemble" in metrics:
        f = metrics["fit_ensemble"]
        print(f"fnnet.fit(ensemble={SEEDS}): {f['seeds_solved']}/{SEEDS} solve it; "
              f"max |params − scan params| = {f['max_abs_param_diff_vs_scan']:.3g}")
    print(f"wrote {out}")
    return metrics


if __name__ == "__main__":
    main()
