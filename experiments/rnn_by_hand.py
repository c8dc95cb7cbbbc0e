"""Backpropagation through time by hand (beyond the notes): the tanh RNN's, the LSTM's and the
GRU's reverse scan checked three ways, then how far back the gradient reaches in each.

The layers are ``fnnet.RNN``, ``fnnet.LSTM`` and ``fnnet.GRU`` (``fnnet/layers/recurrent.py``,
``lstm.py``, ``gru.py``; the derivations are in their docstrings). Rows, one sequence per row,
``A_t = X_t W_xᵀ + b + H_{t−1} W_hᵀ`` the stacked pre-activations of the cell's gates::

    RNN    H_t = tanh(A_t)
    LSTM   [I|F|G|O] = [σ|σ|tanh|σ](A_t)      C_t = F⊙C_{t−1} + I⊙G      H_t = O⊙tanh(C_t)
    GRU    R, Z = σ(·)    N = tanh(Ax_n + R⊙(H_{t−1} W_hnᵀ + b_hn))    H_t = (1 − Z)⊙N + Z⊙H_{t−1}

The loss reaches ``H_t`` from the output (``dY_t``) and from step ``t+1``, so a reverse scan
carries ``dH`` (and the LSTM's ``dC``), for ``t = T … 1``::

    dH_t = dY_t + dH_next      dA_t = the cell's rule (RNN: dH_t ⊙ (1 − H_t²))
    dH_next = dA_t W_h        (the GRU: dAh_t W_h + dH_t ⊙ Z_t)        at t = 1 it is dH_0
    dW_x = Σ_t dA_tᵀ X_t    dW_h = Σ_t dA_tᵀ H_{t−1}    db = Σ_t dA_t    dX_t = dA_t W_x

(after the scan, one product each over the stacked steps). ``sequence_forward`` runs a layer from
a given initial state and ``sequence_backward`` also returns the gradient reaching it (``dH_0``,
the LSTM's ``dC_0``).

1. Agreement (float64, random problems ``N × T × n_in → H``, ``T = 1`` among them, from a random
   initial state, ``dY`` random at every step; ``--quick``: one problem per cell): the
   hand-derived gradients ``dW_x``, ``dW_h``, ``db`` (the GRU's ``db_hn`` too), ``dX``, ``dH_0``
   (and ``dC_0``) against (a) ``jax.vjp`` of the layer's own ``lax.scan`` forward (``apply`` is
   ``sequence_forward`` from a zero state; the public ``backward`` from zeros is also checked
   against ``jax.vjp(apply)``), (b) ``jax.vjp`` of a Python loop over time written here in plain
   ``jnp`` from the equations above (no ``lax.scan``, nothing of fnnet's, so a mistake in the
   order or the alignment of the steps inside the scan cannot cancel out; its forward ``Y`` is
   compared too), and (c) central finite differences ``(L(θ + ε e_k) − L(θ − ε e_k)) / 2ε`` of
   ``L = Σ Y ⊙ dY`` on a few random coordinates ``k`` of each gradient (a numerical check, as
   cs231n does). Each error is ``max|a − b| / max|b|`` (over the sampled coordinates for (c)).
2. Vanishing gradients: a task that needs memory, "remember the first token": ``T`` one-hot
   tokens drawn from 8 at random, the target the first of them, read from the last hidden state
   (``fnnet.sequence_classifier``: the cell, ``LastStep``, ``Dense``, softmax; cross-entropy on the
   last step only). The three cells, of the same width, are trained with Adam (gradient clipped
   to norm 1) on sequences of length 10, then of length ``T = 100`` (a curriculum: trained at
   ``T = 100`` from the start, none of them left chance level in our trials of a budget like
   this one, the gradient reaching the first token at initialisation being between about
   ``1e-4`` (the LSTM) and ``1e-14`` (the GRU) of the last step's); validation accuracy on
   fresh sequences. For one batch of sequences, at initialisation and after training:
   ``‖∂L/∂H_t‖ / ‖∂L/∂H_T‖`` against ``t``, each sequence's own loss and gradient, the median
   over the batch, in float64 (the LSTM's ``‖∂L/∂C_t‖``, relative to the same ``‖∂L/∂H_T‖``,
   dashed). The ratio is how much of the gradient at the output reaches step ``t``, whatever the
   loss's size. A memory kept in a saturated state can be right while this is small: the
   gradient measures the sensitivity to a small change of ``H_t``, not whether the first token
   is still known. ``--quick`` trains on length 10 only and measures there.
   How ``∂L/∂H_t`` is computed, by hand: ``dL/dH_T = (P − Y) W`` (the fused softmax/cross-entropy
   rule through ``Dense``); for every ``s`` the layer is run from the state ``(H_s, C_s)`` of the
   full sequence over the remaining inputs ``X_{s+1} … X_T`` (padded with zeros to length ``T``
   so that all ``T`` suffixes are one batch) with ``dY`` zero but ``dL/dH_T`` at the suffix's last
   real step, and ``sequence_backward``'s ``dH_0`` (and ``dC_0``) of that suffix is ``∂L/∂H_s``
   (``∂L/∂C_s``); the padded steps after the loss get ``dY = 0`` and pass back exactly zero. A
   check: ``∂L/∂H_t`` through ``jax.grad`` of our own plain-``jnp`` step (in a ``lax.scan``) with
   a perturbation ``δ_t`` added to every ``H_t`` (``∂L/∂δ_t = ∂L/∂H_t``).

Outputs in ``--out``: ``vanishing_gradients.png`` (two panels, at initialisation and after
training), ``bptt_errors.png`` (the largest error of each check), ``metrics.json``::

    python -m experiments.rnn_by_hand --out runs/rnn_by_hand [--quick] [--seed 0]
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import fnnet
from experiments import common
from fnnet.plots import save_figure

NAME = "rnn_by_hand"
TOLERANCE = 1e-10  # float64, (a) and (b)
FD_TOLERANCE = 1e-6  # float64 central differences, (c)
FD_EPS = 1e-6
FD_COORDS = 4  # random coordinates of each gradient
CELLS = {"tanh RNN": "rnn", "LSTM": "lstm", "GRU": "gru"}
LAYERS = {"rnn": fnnet.RNN, "lstm": fnnet.LSTM, "gru": fnnet.GRU}
# (N, T, n_in, H) of the agreement checks (T = 1 in full runs; the library's tests cover it too)
SHAPES = ((2, 1, 3, 4), (3, 6, 2, 5), (4, 15, 5, 8))
QUICK_SHAPES = ((3, 4, 2, 5),)
COMPARISONS = ("(a) jax.vjp of the layer's scan", "(b) jax.vjp of a Python loop",
               "(c) finite differences")
GRADS = ("dW_x", "dW_h", "db", "db_hn", "dx", "dh0", "dc0")
# the memory task: a curriculum of lengths, the last one measured; epochs per length
MEMORY = {"lengths": (10, 100), "hidden": 32, "n_train": 1536, "epochs": 15}
QUICK_MEMORY = {"lengths": (10,), "hidden": 16, "n_train": 1024, "epochs": 4}
TOKENS, BATCH, LR, CLIP = 8, 64, 5e-3, 1.0
N_MEASURE, N_VALIDATION = 32, 256
TINY = 1e-300  # an underflow to 0 is drawn here on the log scale


# ---------------------------------------------------------------------------------------------
# 1. Agreement


def cell_step(cell, params, carry, x_t):
    """One step of the cell's equations in plain ``jnp``: ``(h_prev,)`` or ``(h_prev, c_prev)``
    and ``X_t`` ``(N, n_in)`` to the new carry."""
    W_x, W_h, b = params.W_x, params.W_h, params.b
    hidden, h = W_h.shape[1], carry[0]
    ax, ah = x_t @ W_x.T + b, h @ W_h.T
    if cell == "rnn":
        return (jnp.tanh(ax + ah),)
    if cell == "lstm":
        a = ax + ah
        i, f, o = (jax.nn.sigmoid(a[:, k * hidden:(k + 1) * hidden]) for k in (0, 1, 3))
        g = jnp.tanh(a[:, 2 * hidden:3 * hidden])
        c = f * carry[1] + i * g
        return o * jnp.tanh(c), c
    # the GRU, PyTorch's convention
    r = jax.nn.sigmoid(ax[:, :hidden] + ah[:, :hidden])
    z = jax.nn.sigmoid(ax[:, hidden:2 * hidden] + ah[:, hidden:2 * hidden])
    n = jnp.tanh(ax[:, 2 * hidden:] + r * (ah[:, 2 * hidden:] + params.b_hn))
    return ((1 - z) * n + z * h,)


def loop_forward(cell, params, x, initial):
    """Every hidden state ``(N, T, H)`` from ``cell_step`` in a Python loop over time (no
    ``lax.scan``): what part 1's check (b) differentiates."""
    carry, hs = tuple(initial), []
    for t in range(x.shape[1]):
        carry = cell_step(cell, params, carry, x[:, t])
        hs.append(carry[0])
    return jnp.stack(hs, axis=1)


def perturbed_forward(cell, params, x, initial, deltas):
    """Every hidden state from ``cell_step`` with ``deltas[:, t]`` added to ``H_t`` as it is made
    (``∂L/∂δ_t = ∂L/∂H_t``), in a ``lax.scan`` of our own (a Python loop over 100 steps would take
    long to compile)."""
    def step(carry, inputs):
        x_t, delta = inputs
        carry = cell_step(cell, params, carry, x_t)
        h = carry[0] + delta
        return (h,) + carry[1:], h

    _, hs = jax.lax.scan(step, tuple(initial), (jnp.swapaxes(x, 0, 1), jnp.swapaxes(deltas, 0, 1)))
    return jnp.swapaxes(hs, 0, 1)


def random_problem(cell, shape, rng):
    """``(layer, params, x, initial, dy)`` in float64: weights ``N(0, 0.5²)`` (large enough that
    the gates are not all near 0.5), a random initial state."""
    n, t, n_in, hidden = shape
    layer = LAYERS[cell](n_in, hidden)
    shapes = jax.eval_shape(layer.init, jax.ShapeDtypeStruct((2,), jnp.uint32))
    params = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0, 0.5, s.shape)), shapes)
    initial = tuple(jnp.asarray(rng.normal(0, 0.5, (n, hidden))) for _ in layer.carries)
    x = jnp.asarray(rng.normal(size=(n, t, n_in)))
    dy = jnp.asarray(rng.normal(size=(n, t, hidden)))
    return layer, params, x, initial, dy


def named(cell, dparams, dx, d_initial):
    """The gradients as ``{name: array}`` with the names of ``GRADS``."""
    out = {"dW_x": dparams.W_x, "dW_h": dparams.W_h, "db": dparams.b, "dx": dx,
           "dh0": d_initial[0]}
    if cell == "lstm":
        out["dc0"] = d_initial[1]
    if cell == "gru":
        out["db_hn"] = dparams.b_hn
    return out


def coordinates(inputs, rng, coords):
    """``coords`` random coordinates of each leaf of ``inputs`` (as ``ravel_pytree`` orders its
    values): one index array per leaf."""
    sizes = [leaf.size for leaf in jax.tree_util.tree_leaves(inputs)]
    starts = np.cumsum([0] + sizes[:-1])
    return [start + rng.choice(size, min(coords, size), replace=False)
            for start, size in zip(starts, sizes)]


def central_differences(loss, inputs, index, eps):
    """``(L(θ + ε e_k) − L(θ − ε e_k)) / 2ε`` of ``loss(*inputs)`` at every coordinate ``k`` of
    ``index`` (of the raveled ``inputs``), all in one vmapped call."""
    flat, unravel = ravel_pytree(inputs)
    steps = jnp.zeros((len(index), flat.size), flat.dtype).at[np.arange(len(index)), index].set(eps)
    at = jax.vmap(lambda v: loss(*unravel(v)))
    return (at(flat + steps) - at(flat - steps)) / (2 * eps)


def agreement(cell, shape, rng):
    """One problem's rows: ``{comparison: {grad: error}}`` (``"Y"`` for the loop's forward),
    and the error of the public ``backward`` from zeros against ``jax.vjp(apply)``."""
    layer, params, x, initial, dy = random_problem(cell, shape, rng)
    picks = coordinates((params, x, initial), rng, FD_COORDS)
    index = np.concatenate(picks)

    @jax.jit  # one compilation per problem
    def compiled(params, x, initial, dy):
        y, cache = layer.sequence_forward(params, x, initial)
        hand = layer.sequence_backward(params, cache, dy)
        scan_vjp = jax.vjp(lambda *a: layer.sequence_forward(*a)[0], params, x, initial)[1](dy)
        y_loop, loop_vjp = jax.vjp(lambda *a: loop_forward(cell, *a), params, x, initial)
        public = layer.backward(params, layer.forward(params, x)[1], dy)
        apply_vjp = jax.vjp(layer.apply, params, x)[1](dy)
        numeric = central_differences(
            lambda *a: jnp.sum(layer.sequence_forward(*a)[0] * dy), (params, x, initial), index,
            FD_EPS)
        return y, hand, scan_vjp, y_loop, loop_vjp(dy), public, apply_vjp, numeric

    y, hand, scan_vjp, y_loop, loop_vjp, public, apply_vjp, numeric = compiled(params, x, initial,
                                                                              dy)
    hand_named = named(cell, *hand)

    def compare(ref):
        ref = named(cell, *ref)
        return {k: common.rel_error(hand_named[k], ref[k]) for k in hand_named}

    # (c): the hand gradient's sampled coordinates against the differences, leaf by leaf
    hand_flat = np.asarray(ravel_pytree(hand)[0])
    bounds = np.cumsum([0] + [len(pick) for pick in picks])
    fd = [common.rel_error(hand_flat[pick], numeric[lo:hi])
          for pick, lo, hi in zip(picks, bounds[:-1], bounds[1:])]
    fd = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(hand), fd)
    rows = {COMPARISONS[0]: compare(scan_vjp),
            COMPARISONS[1]: {"Y": common.rel_error(y, y_loop), **compare(loop_vjp)},
            COMPARISONS[2]: named(cell, *fd)}
    public_error = max(common.rel_error(public[0], apply_vjp[0]),
                       common.rel_error(public[1], apply_vjp[1]))
    return rows, public_error


def agreement_table(seed, shapes):
    """Every cell's and shape's errors in float64: ``(rows, public)``, ``public`` the largest
    error of the public ``backward`` against ``jax.vjp(apply)`` per cell."""
    rng = np.random.default_rng(seed)
    rows, public = [], {}
    with jax.enable_x64(True):
        for label, cell in CELLS.items():
            for shape in shapes:
                errors, public_error = agreement(cell, shape, rng)
                public[label] = max(public.get(label, 0.0), public_error)
                for comparison, values in errors.items():
                    rows.append({"cell": label, "shape": "N={} T={} n_in={} H={}".format(*shape),
                                 "comparison": comparison,
                                 **{k: values.get(k) for k in ("Y", *GRADS)}})
    return rows, public


def worst(rows, comparisons):
    """The largest error in ``rows`` of the ``comparisons`` named, over every gradient (and
    ``Y``)."""
    return max(r[k] for r in rows if r["comparison"] in comparisons
               for k in ("Y", *GRADS) if r[k] is not None)


# ---------------------------------------------------------------------------------------------
# 2. Vanishing gradients


def memory_task(n, t, rng):
    """``(x, y)``: ``n`` sequences of ``t`` one-hot tokens (float32 ``(n, t, TOKENS)``), the
    label the first token."""
    tokens = rng.integers(0, TOKENS, (n, t))
    return np.eye(TOKENS, dtype=np.float32)[tokens], tokens[:, 0].astype(np.int32)


def hidden_gradients(model, cell, params, x, y):
    """``(dH, dC, dH_by_loop)``: ``∂L_n/∂H_t`` for ``t = 0 … T`` of every sequence ``n``,
    ``(N, T + 1, H)``, by the layer's reverse scan over the suffixes (module docstring), the
    LSTM's ``∂L_n/∂C_t`` the same way (``None`` for the others), and ``∂L_n/∂H_t`` by
    ``jax.grad`` of our own loop with a perturbation at every step."""
    layer, dense = model.layers[0], model.layers[2]
    lp, dp = params[0], params[2]
    n, t, n_in = x.shape
    initial = tuple(jnp.zeros((n, layer.n_hidden), x.dtype) for _ in layer.carries)
    _, cache = layer.sequence_forward(lp, x, initial)
    # dL/dH_T: softmax and cross-entropy fused (dZ = P − Y), then Dense's dX = dZ W
    h_last = cache.hs[-1]
    p = jax.nn.softmax(dense.apply(dp, h_last))
    dh_last = dense.backward(dp, h_last, p - jax.nn.one_hot(y, p.shape[-1], dtype=p.dtype))[1]
    # the state before step s + 1, for s = 0 … T − 1: (H_s,) or (H_s, C_s), each (T, N, H)
    carried = (cache.hs, cache.saved[1]) if cell == "lstm" else (cache.hs,)
    states = [jnp.concatenate([v[None], w[:-1]]) for v, w in zip(initial, carried)]
    # the T suffixes as one batch of T·N sequences (row s·N + n): X_{s+1} … X_T, then zeros
    reads = np.arange(t)[:, None] + np.arange(t)[None, :]  # (s, k): the step read at k
    xs = jnp.where((reads < t)[None, :, :, None], x[:, np.minimum(reads, t - 1)], 0)
    xs = jnp.swapaxes(xs, 0, 1).reshape(t * n, t, n_in)
    dys = jnp.zeros((t, n, t, layer.n_hidden), x.dtype)
    dys = dys.at[np.arange(t), :, t - 1 - np.arange(t)].set(dh_last[None])  # the loss's step
    _, suffix = layer.sequence_forward(lp, xs, tuple(v.reshape(t * n, -1) for v in states))
    d_initial = layer.sequence_backward(lp, suffix, dys.reshape(t * n, t, -1))[2]

    def per_step(d, final):  # (T·N, H) rows s·N + n, and the value at T: (N, T + 1, H)
        return jnp.concatenate([jnp.swapaxes(d.reshape(t, n, -1), 0, 1), final[:, None]], axis=1)

    dh = per_step(d_initial[0], dh_last)
    dc = per_step(d_initial[1], jnp.zeros_like(dh_last)) if cell == "lstm" else None

    def last_step_loss(deltas):  # δ_0 perturbs H_0, δ_t (t ≥ 1) the H_t made at step t
        start = (initial[0] + deltas[:, 0],) + initial[1:]
        return jnp.sum(perturbed_forward(cell, lp, x, start, deltas[:, 1:])[:, -1] * dh_last)

    return dh, dc, jax.grad(last_step_loss)(jnp.zeros_like(dh))


def gradient_profile(model, cell, params, x, y):
    """In float64: ``{"dH": ..., "dC": ...}`` the median over the sequences of
    ``‖∂L/∂H_t‖ / ‖∂L/∂H_T‖`` for ``t = 0 … T`` (and of ``‖∂L/∂C_t‖ / ‖∂L/∂H_T‖`` for the
    LSTM), and the relative error of the reverse-scan ``∂L/∂H_t`` against the loop's."""
    with jax.enable_x64(True):
        params, x = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), (params, x))
        dh, dc, dh_loop = jax.jit(hidden_gradients, static_argnums=(0, 1))(
            model, cell, params, x, jnp.asarray(y))
        error = common.rel_error(dh, dh_loop)
        dh, dc = (None if d is None else np.linalg.norm(np.asarray(d), axis=-1) for d in (dh, dc))
    scale = dh[:, -1:]
    profile = {"dH": np.median(dh / scale, axis=0)}
    if dc is not None:
        profile["dC"] = np.median(dc / scale, axis=0)[:-1]  # C_T is not read by the loss
    return profile, error


def train_cell(label, cell, config, seed, rng):
    """One cell's classifier: params at initialisation, then trained by ``fit`` on the memory
    task at each length of ``config["lengths"]`` in turn (a curriculum), validated on fresh
    sequences of the same length. Returns ``(model, initial params, trained params, stages)``."""
    model = fnnet.sequence_classifier(TOKENS, TOKENS, hidden=config["hidden"], cell=cell)
    initial = model.init(jax.random.PRNGKey(seed))
    params, stages = initial, []
    for k, length in enumerate(config["lengths"]):
        train = memory_task(config["n_train"], length, rng)
        validation = memory_task(N_VALIDATION, length, rng)
        optimizer = fnnet.optim.clip_by_global_norm(fnnet.optim.adam(LR), CLIP)
        state, history = fnnet.fit(model, "cross-entropy", optimizer, train,
                                   epochs=config["epochs"], batch_size=BATCH,
                                   key=jax.random.PRNGKey(seed + k), params=params,
                                   validation=validation, progress=False)
        params = state.params
        stages.append({"T": length, "epochs": config["epochs"], "loss": history["loss"],
                       "val_loss": history["val_loss"], "val_accuracy": history["val_accuracy"],
                       "seconds": float(np.sum(history["seconds"])),
                       "compile_seconds": float(history["compile_seconds"])})
        print(f"[{NAME}] {label}: T={length}, {config['epochs']} epochs, validation accuracy "
              f"{history['val_accuracy'][-1]:.2%}", flush=True)
    return model, initial, params, stages


def vanishing(config, seed):
    """Part 2: every cell's gradient profile at initialisation and after training."""
    rng = np.random.default_rng(seed)
    length = config["lengths"][-1]
    x, y = memory_task(N_MEASURE, length, rng)
    results = {}
    for label, cell in CELLS.items():
        model, initial, trained, stages = train_cell(label, cell, config, seed, rng)
        before, error_before = gradient_profile(model, cell, initial, x, y)
        after, error_after = gradient_profile(model, cell, trained, x, y)
        results[label] = {"model": repr(model), "stages": stages, "init": before, "trained": after,
                          "val_accuracy": stages[-1]["val_accuracy"][-1],
                          "loop_rel_error": max(error_before, error_after)}
    return results, length


# ---------------------------------------------------------------------------------------------
# Figures


def plot_vanishing(path, results, length, config):
    fig, axes = common.subplots(1, 2, figsize=(13, 4.8))
    steps = np.arange(length + 1)
    for ax, when, title in ((axes[0], "init", "at initialisation"),
                            (axes[1], "trained", "after training")):
        for k, (label, r) in enumerate(results.items()):
            name = label if when == "init" else f"{label} (validation accuracy {r['val_accuracy']:.0%})"
            ax.plot(steps, np.maximum(r[when]["dH"], TINY), color=f"C{k}", label=f"{name}: ‖∂L/∂H_t‖")
            if "dC" in r[when]:
                ax.plot(steps[:-1], np.maximum(r[when]["dC"], TINY), color=f"C{k}", ls="--",
                        label=f"{label}: ‖∂L/∂C_t‖ (the cell state)")
        ax.set(yscale="log", xlabel="step t (the first token is read at t = 1)",
               ylabel="‖∂L/∂H_t‖ / ‖∂L/∂H_T‖ (median over sequences)",
               title=f"{title}: loss on the last step, T = {length}")
        ax.grid(alpha=0.3, which="major")
        ax.legend(fontsize=8)
    fig.suptitle(f"how much of the last step's gradient reaches step t: remember the first of "
                 f"{length} tokens, hidden size {config['hidden']}, trained on lengths "
                 f"{', '.join(map(str, config['lengths']))} in turn (float64, {N_MEASURE} sequences)")
    return save_figure(fig, path)


def plot_errors(path, rows):
    fig, ax = common.subplots(figsize=(9, 4.2))
    cells = list(CELLS)
    xs, width = np.arange(len(cells)), 0.8 / len(COMPARISONS)
    for j, comparison in enumerate(COMPARISONS):
        values = [max(worst([r for r in rows if r["cell"] == c], (comparison,)), 1e-20)
                  for c in cells]
        ax.bar(xs + (j - 1) * width, values, width, label=comparison)
    ax.axhline(TOLERANCE, color="k", ls="--", lw=1, label=f"tolerance (a), (b): {TOLERANCE:g}")
    ax.axhline(FD_TOLERANCE, color="k", ls=":", lw=1, label=f"tolerance (c): {FD_TOLERANCE:g}")
    ax.set_xticks(xs, cells)
    ax.set(yscale="log", ylabel="largest relative error (every gradient, every shape)",
           title="hand-derived BPTT against three references, float64 (an exact 0 is drawn at "
                 "1e-20)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    """Run the two parts; return the metrics written to ``OUT/metrics.json``."""
    p = common.parser(__doc__.splitlines()[0], NAME)
    args = p.parse_args(argv)
    out = Path(args.out)
    rows, public = agreement_table(args.seed, QUICK_SHAPES if args.quick else SHAPES)
    exact, numeric = worst(rows, COMPARISONS[:2]), worst(rows, COMPARISONS[2:])
    public_worst = max(public.values())
    config = QUICK_MEMORY if args.quick else MEMORY
    results, length = vanishing(config, args.seed)
    plot_vanishing(out / "vanishing_gradients.png", results, length, config)
    plot_errors(out / "bptt_errors.png", rows)

    headers = ["cell", "shape", "comparison", "Y", *GRADS]
    first = {label: {when: float(r[when]["dH"][0]) for when in ("init", "trained")}
             for label, r in results.items()}
    metrics = {
        "experiment": NAME, "quick": args.quick, "seed": args.seed,
        "data": f"synthetic: remember the first of T one-hot tokens ({TOKENS} kinds)",
        "tolerance": TOLERANCE, "fd_tolerance": FD_TOLERANCE, "fd_eps": FD_EPS,
        "fd_coordinates": FD_COORDS, "agreement": rows, "max_rel_error": exact,
        "max_fd_rel_error": numeric, "public_backward_rel_error": public,
        "all_agree": max(exact, public_worst) <= TOLERANCE and numeric <= FD_TOLERANCE,
        "config": {**config, "tokens": TOKENS, "batch_size": BATCH, "optimizer": "adam", "lr": LR,
                   "clip": CLIP, "measured_sequences": N_MEASURE,
                   "validation_sequences": N_VALIDATION},
        "T": length, "cells": results,
        "cpu": common.cpu_model(), "device": str(jax.devices()[0]),
        "figures": ["vanishing_gradients.png", "bptt_errors.png"],
        "headline": {
            "largest relative error, (a) and (b) (float64)": exact,
            "largest relative error, backward from zeros vs jax.vjp(apply)": public_worst,
            "largest relative error, (c) finite differences": numeric,
            **{f"‖∂L/∂H_0‖ / ‖∂L/∂H_T‖, {label}, at initialisation / trained":
               [v["init"], v["trained"]] for label, v in first.items()},
            **{f"validation accuracy after training, {label} (T = {length})": r["val_accuracy"]
               for label, r in results.items()},
            "training seconds": sum(s["seconds"] for r in results.values() for s in r["stages"]),
            "data": f"synthetic memory task, T = {length}, {TOKENS} tokens",
        },
        "tables": {"relative error of the hand-derived BPTT (float64)": {
            "headers": headers, "rows": [[r[h] for h in headers] for r in rows]}},
    }
    common.write_metrics(out, metrics)
    print(common.table([[r[h] for h in headers] for r in rows], headers))
    print(common.table([[label, r["val_accuracy"], first[label]["init"], first[label]["trained"]]
                        for label, r in results.items()],
                       ["cell", f"val accuracy T={length}", "‖∂L/∂H_0‖/‖∂L/∂H_T‖ init",
                        "trained"]))
    print(f"largest relative error {exact:.2e} (≤ {TOLERANCE:g}: {exact <= TOLERANCE}), finite "
          f"differences {numeric:.2e} (≤ {FD_TOLERANCE:g}: {numeric <= FD_TOLERANCE}); outputs "
          f"in {out}")
    return metrics


if __name__ == "__main__":
    main()
