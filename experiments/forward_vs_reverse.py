"""Forward- against reverse-mode differentiation: note 003 (experiments/NOTES.md), "Backwards
Propagation, formally - reverse-mode differentiation".

The note's argument, measured:

- The derivative of one node with respect to another on a compute graph is the sum over all paths
  between them of the product of the edge derivatives. Summing path by path is exponential in the
  depth of the graph; factoring the sum (the note's ``αf + αe + … + γm = (α + β + γ)(f + e + m)``)
  makes it linear, and the factored sum is exactly forward-mode (``∂/∂x`` of every node, one pass
  per input) or reverse-mode (``∂z/∂`` every node, one pass per output) accumulation.
- Forward mode therefore needs one pass per input and reverse mode one pass per output. A network's
  loss has many inputs (parameters) and one output, so reverse mode (backpropagation) wins, by a
  factor that grows with the number of parameters; with one input and many outputs forward mode wins.

Part 1, the paths worked in code: Chris Olah's graph ``c = a + b, d = b + 1, e = c · d`` (the note's
first example) and a chain of ``k`` stages in which each node reaches the next by three edges (the
note's second example is ``k = 2``: nine paths, ``(α + β + γ)(δ + ε + ζ)`` factored). Each
derivative is computed by the sum over paths, by forward- and reverse-mode accumulation, and by
``jax.grad``; the number of multiplications of each is counted.

Part 2, timed: the full gradient of a network's scalar loss (one example, as note 001's ``C``) with
respect to all ``P`` parameters (flattened with ``jax.flatten_util.ravel_pytree``), by forward mode
(``jax.jvp`` with every basis vector, vmapped over chunks of 256 basis vectors as ``jax.jacfwd``
does, the chunks run by ``lax.map`` so memory stays bounded) and by reverse mode (``jax.grad``), as
``P`` grows from about 1e2 to 1e5; and the full Jacobian of ``f(t)``, a network from one scalar
input to ``m`` outputs, by forward mode (one ``jax.jvp``) and by reverse mode (``jax.vjp`` with every
output basis vector, chunked as ``jax.jacrev`` does), as ``m`` grows. Every function is jitted; the
compile and first call are excluded and the median of repeated calls is reported. The two modes'
results are checked equal.

Writes ``forward_vs_reverse.png`` (log-log time against size, both cases), ``path_factoring.png``
(multiplications: sum over paths against factored, per depth) and ``metrics.json`` (times and the
ratio reverse/forward at each size)::

    python -m experiments.forward_vs_reverse --out runs/forward_vs_reverse [--quick] [--seed 0]
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import fnnet
from experiments import common
from fnnet.plots import save_figure

CHUNK = 256
N_FEATURES = 8
WIDTHS = (8, 16, 32, 64, 128, 192, 256, 320)      # P = w² + 11w + 1: 153 … 105,921 parameters
QUICK_WIDTHS = (8, 32, 144)                        # up to 22,321 parameters
OUTPUTS = (10, 100, 1000, 3000, 10000)
QUICK_OUTPUTS = (10, 100, 1000)
F_WIDTH = 64

# ---------------------------------------------------------------------------------------------
# Part 1: derivatives on a compute graph, path by path and factored.
#
# A graph is a list of nodes in topological order, each ``(name, parents, fn, partials)``:
# ``fn(*parent_values)`` is the node's value and ``partials(*parent_values)`` the derivative along
# each edge, one per entry of ``parents`` (a parent listed twice is two edges). Inputs have no
# parents and ``fn = partials = None``.


def olah_graph():
    """``c = a + b``, ``d = b + 1``, ``e = c · d`` (colah.github.io/posts/2015-08-Backprop)."""
    return [
        ("a", (), None, None),
        ("b", (), None, None),
        ("c", ("a", "b"), lambda a, b: a + b, lambda a, b: (1.0, 1.0)),
        ("d", ("b",), lambda b: b + 1, lambda b: (1.0,)),
        ("e", ("c", "d"), lambda c, d: c * d, lambda c, d: (d, c)),
    ]


def chain_graph(k):
    """``x0 → x1 → … → xk``, each step by three edges: ``x_{j+1} = sin x_j + x_j²/2 + x_j/3``,
    so ``∂x_{j+1}/∂x_j = cos x_j + x_j + 1/3``, the sum of three edge derivatives; ``3^k`` paths."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"chain_graph: k must be a positive integer, got {k!r}")
    nodes = [("x0", (), None, None)]
    for j in range(k):
        p = f"x{j}"
        nodes.append((f"x{j + 1}", (p, p, p),
                      lambda u, v, w: jnp.sin(u) + v ** 2 / 2 + w / 3,
                      lambda u, v, w: (jnp.cos(u), v, 1.0 / 3)))
    return nodes


def evaluate(graph, inputs):
    """Every node's value, given the inputs' values (a dict)."""
    values = {}
    for name, parents, fn, _ in graph:
        if not parents:
            if name not in inputs:
                raise ValueError(f"evaluate: no value given for input {name!r}")
            values[name] = inputs[name]
        else:
            values[name] = fn(*(values[p] for p in parents))
    return values


def edges(graph, values):
    """Every edge as ``(parent, child, derivative)`` at ``values``."""
    out = []
    for name, parents, _, partials in graph:
        if parents:
            for p, d in zip(parents, partials(*(values[q] for q in parents))):
                out.append((p, name, float(d)))
    return out


def sum_over_paths(graph, values, src, dst):
    """``∂dst/∂src`` as the sum over every path ``src → … → dst`` of the product of its edge
    derivatives. Returns ``(derivative, paths, multiplications)``; a path of ``L`` edges costs ``L``
    multiplications here (its product starts at 1), as forward and reverse mode pay one per edge."""
    into = {}
    for p, c, d in edges(graph, values):
        into.setdefault(c, []).append((p, d))
    total, n_paths, mults = 0.0, 0, 0

    def walk(node, product, length):
        nonlocal total, n_paths, mults
        if node == src:
            total += product
            n_paths += 1
            mults += length
            return
        for p, d in into.get(node, ()):
            walk(p, product * d, length + 1)

    walk(dst, 1.0, 0)
    return total, n_paths, mults


def forward_mode(graph, values, src):
    """Forward-mode accumulation: ``∂node/∂src`` for every node, in one pass over the edges
    (``ṫ_child = Σ_edges ∂child/∂parent · ṫ_parent``). Returns ``(tangents, multiplications)``."""
    tangent = {src: 1.0}
    mults = 0
    for p, c, d in edges(graph, values):
        if p in tangent:
            tangent[c] = tangent.get(c, 0.0) + d * tangent[p]
            mults += 1
    return tangent, mults


def reverse_mode(graph, values, dst):
    """Reverse-mode accumulation: ``∂dst/∂node`` for every node, in one backward pass over the
    edges (``ā_parent = Σ_edges ∂child/∂parent · ā_child``). Returns ``(adjoints, multiplications)``."""
    adjoint = {dst: 1.0}
    mults = 0
    for p, c, d in reversed(edges(graph, values)):
        if c in adjoint:
            adjoint[p] = adjoint.get(p, 0.0) + d * adjoint[c]
            mults += 1
    return adjoint, mults


def jax_gradient(graph, inputs, dst):
    """``∂dst/∂input`` for every input, by ``jax.grad`` of the graph's function."""
    names = sorted(inputs)
    g = jax.grad(lambda xs: evaluate(graph, dict(zip(names, xs)))[dst])(
        [jnp.asarray(inputs[n], jnp.float64) for n in names])
    return {n: float(v) for n, v in zip(names, g)}


def path_examples(max_depth):
    """Part 1's numbers: Olah's graph at ``a = 2, b = 1``, and the three-edge chain for depths
    ``1 … max_depth`` at ``x0 = 0.5``, all in float64."""
    with jax.enable_x64(True):
        g = olah_graph()
        inputs = {"a": 2.0, "b": 1.0}
        values = {k: float(v) for k, v in evaluate(g, inputs).items()}
        adj, rev_mults = reverse_mode(g, values, "e")
        olah = {"values": values, "jax_grad": jax_gradient(g, inputs, "e"),
                "reverse_mode": {n: adj[n] for n in ("a", "b")}, "reverse_mults": rev_mults}
        for x in ("a", "b"):
            d, n_paths, mults = sum_over_paths(g, values, x, "e")
            tan, fwd_mults = forward_mode(g, values, x)
            olah[f"d_e/d_{x}"] = {"sum_over_paths": d, "paths": n_paths, "path_mults": mults,
                                  "forward_mode": tan.get("e", 0.0), "forward_mults": fwd_mults,
                                  "forward_all_nodes": tan}
        chain = []
        for k in range(1, max_depth + 1):
            g = chain_graph(k)
            values = {n: float(v) for n, v in evaluate(g, {"x0": 0.5}).items()}
            d, n_paths, mults = sum_over_paths(g, values, "x0", f"x{k}")
            tan, fwd_mults = forward_mode(g, values, "x0")
            adj, rev_mults = reverse_mode(g, values, f"x{k}")
            ref = jax_gradient(g, {"x0": 0.5}, f"x{k}")["x0"]
            chain.append({"depth": k, "paths": n_paths, "sum_over_paths": d, "path_mults": mults,
                          "forward_mode": tan[f"x{k}"], "forward_mults": fwd_mults,
                          "reverse_mode": adj["x0"], "reverse_mults": rev_mults, "jax_grad": ref,
                          "max_rel_diff": max(abs(v - ref) for v in (d, tan[f"x{k}"], adj["x0"]))
                          / abs(ref)})
    return olah, chain


# ---------------------------------------------------------------------------------------------
# Part 2: timing whole gradients and Jacobians.


def by_basis(n, fn, dtype, chunk=CHUNK):
    """``[fn(e_0), …, fn(e_{n−1})]`` for the basis vectors ``e_i`` of length ``n``: ``jax.vmap`` over
    chunks of ``chunk`` basis vectors (as ``jax.jacfwd``/``jax.jacrev`` vmap over all of them at
    once), ``lax.map`` over the chunks so that only ``chunk × n`` basis entries exist at a time."""
    chunk = min(chunk, n)
    n_chunks = math.ceil(n / chunk)

    def one(start):
        basis = jax.nn.one_hot(start + jnp.arange(chunk), n, dtype=dtype)  # rows past n are zero
        return jax.vmap(fn)(basis)

    out = jax.lax.map(one, jnp.arange(n_chunks) * chunk)
    return out.reshape((n_chunks * chunk,) + out.shape[2:])[:n]


median_time = functools.partial(common.median_time, min_repeats=3, max_repeats=30)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def loss_case(width, rng, budget_s):
    """Gradient of one example's MSE loss of ``Dense(8,w) tanh Dense(w,w) tanh Dense(w,1)`` with
    respect to all its ``P`` parameters, by forward and by reverse mode."""
    model = fnnet.Sequential(fnnet.Dense(N_FEATURES, width), fnnet.Tanh(), fnnet.Dense(width, width),
                             fnnet.Tanh(), fnnet.Dense(width, 1))
    flat, unravel = ravel_pytree(common.host_init(model, rng))
    x = jnp.asarray(rng.normal(size=(1, N_FEATURES)), jnp.float32)
    y = jnp.ones((1, 1), jnp.float32)
    n = flat.size

    def loss(v):
        return fnnet.losses.mse.value(model.apply(unravel(v), x), y)

    evaluate_loss = jax.jit(loss)
    forward = jax.jit(lambda v: by_basis(n, lambda e: jax.jvp(loss, (v,), (e,))[1], v.dtype))
    reverse = jax.jit(jax.grad(loss))
    t_f, r_f = median_time(forward, flat, budget_s=budget_s)
    t_r, r_r = median_time(reverse, flat, budget_s=budget_s)
    t_e, _ = median_time(evaluate_loss, flat, budget_s=budget_s / 4)
    return {"width": width, "params": int(n), "forward_s": t_f, "reverse_s": t_r, "loss_eval_s": t_e,
            "repeats": [r_f, r_r], "reverse_over_forward": t_r / t_f,
            "grad_rel_diff": rel_err(forward(flat), reverse(flat))}


def jacobian_case(m, rng, budget_s):
    """Jacobian ``df/dt`` of ``f(t) = Dense(1,64) tanh Dense(64,64) tanh Dense(64,m)`` at a scalar
    ``t``: ``m`` outputs, one input."""
    model = fnnet.Sequential(fnnet.Dense(1, F_WIDTH), fnnet.Tanh(), fnnet.Dense(F_WIDTH, F_WIDTH),
                             fnnet.Tanh(), fnnet.Dense(F_WIDTH, m))
    params = common.host_init(model, rng)
    t = jnp.full((1,), 0.3, jnp.float32)

    def f(t):
        return model.apply(params, t)  # (m,)

    def reverse_fn(t):
        _, pullback = jax.vjp(f, t)
        return by_basis(m, lambda e: pullback(e)[0], t.dtype)[:, 0]

    forward = jax.jit(lambda t: jax.jvp(f, (t,), (jnp.ones_like(t),))[1])
    reverse = jax.jit(reverse_fn)
    t_f, r_f = median_time(forward, t, budget_s=budget_s)
    t_r, r_r = median_time(reverse, t, budget_s=budget_s)
    return {"outputs": m, "forward_s": t_f, "reverse_s": t_r, "repeats": [r_f, r_r],
            "reverse_over_forward": t_r / t_f, "jacobian_rel_diff": rel_err(reverse(t), forward(t))}


def plot_times(path, loss_rows, jac_rows):
    fig, (ax_l, ax_j) = common.subplots(1, 2, figsize=(12, 4.6))
    P = [r["params"] for r in loss_rows]
    ax_l.plot(P, [r["forward_s"] for r in loss_rows], "o-", label="forward mode (P jvps)")
    ax_l.plot(P, [r["reverse_s"] for r in loss_rows], "s-", label="reverse mode (jax.grad)")
    ax_l.plot(P, [r["loss_eval_s"] for r in loss_rows], "k:", label="one loss evaluation")
    ax_l.set(xlabel="parameters P (inputs)", ylabel="seconds (median)", xscale="log", yscale="log",
             title="many inputs, one output: gradient of a loss\nreverse mode wins")
    m = [r["outputs"] for r in jac_rows]
    ax_j.plot(m, [r["forward_s"] for r in jac_rows], "o-", label="forward mode (one jvp)")
    ax_j.plot(m, [r["reverse_s"] for r in jac_rows], "s-", label="reverse mode (m vjps)")
    ax_j.set(xlabel="outputs m", ylabel="seconds (median)", xscale="log", yscale="log",
             title="one input, many outputs: Jacobian of f(t)\nforward mode wins")
    for ax in (ax_l, ax_j):
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle("note 003: cost of a full derivative, forward against reverse mode (jitted, "
                 f"{jax.devices()[0].platform.upper()})", y=1.03)
    return save_figure(fig, path)


def plot_paths(path, chain):
    fig, ax = common.subplots(figsize=(6.5, 4.2))
    k = [r["depth"] for r in chain]
    ax.plot(k, [r["path_mults"] for r in chain], "o-", label="sum over paths (3^k paths)")
    ax.plot(k, [r["forward_mults"] for r in chain], "s-", label="factored: forward mode")
    ax.plot(k, [r["reverse_mults"] for r in chain], "^--", label="factored: reverse mode")
    ax.set(xlabel="depth k (three edges per step)", ylabel="multiplications", yscale="log",
           title="note 003: factoring the sum over paths")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return save_figure(fig, path)


def main(argv=None):
    """Run the experiment; return the metrics written to ``OUT/metrics.json``."""
    args = common.parser(__doc__.splitlines()[0], "forward_vs_reverse").parse_args(argv)
    widths, outputs = (QUICK_WIDTHS, QUICK_OUTPUTS) if args.quick else (WIDTHS, OUTPUTS)
    budget = 0.1 if args.quick else 2.0
    olah, chain = path_examples(6 if args.quick else 10)

    rng = np.random.default_rng(args.seed)
    loss_rows = [loss_case(w, rng, budget) for w in widths]
    jac_rows = [jacobian_case(m, rng, budget) for m in outputs]

    out = Path(args.out)
    plot_times(out / "forward_vs_reverse.png", loss_rows, jac_rows)
    plot_paths(out / "path_factoring.png", chain)
    metrics = {
        "experiment": "forward_vs_reverse", "note": "003", "seed": args.seed, "quick": args.quick,
        "device": str(jax.devices()[0]), "chunk": CHUNK,
        "paths": {"olah": olah, "chain": chain},
        "loss_gradient": loss_rows,
        "one_input_jacobian": jac_rows,
        "reverse_over_forward": {
            "loss_gradient": {str(r["params"]): r["reverse_over_forward"] for r in loss_rows},
            "one_input_jacobian": {str(r["outputs"]): r["reverse_over_forward"] for r in jac_rows},
        },
        "reverse_wins_at_largest_P": loss_rows[-1]["reverse_s"] < loss_rows[-1]["forward_s"],
        "forward_wins_at_largest_m": jac_rows[-1]["forward_s"] < jac_rows[-1]["reverse_s"],
    }
    common.write_metrics(out, metrics)

    v = olah["values"]
    print(f"Olah's graph, a = {v['a']:g}, b = {v['b']:g}: c = a + b = {v['c']:g}, d = b + 1 = {v['d']:g}, "
          f"e = c·d = {v['e']:g}")
    print(f"  ∂e/∂b over paths: b→c→e (1·d = {v['d']:g}) + b→d→e (1·c = {v['c']:g}) = "
          f"{olah['d_e/d_b']['sum_over_paths']:g}")
    print(common.table(
        [[f"∂e/∂{x}", olah[f"d_e/d_{x}"]["paths"], olah[f"d_e/d_{x}"]["sum_over_paths"],
          olah[f"d_e/d_{x}"]["forward_mode"], olah["reverse_mode"][x], olah["jax_grad"][x]]
         for x in ("a", "b")],
        ["derivative", "paths", "sum over paths", "forward mode", "reverse mode", "jax.grad"]))
    print("  forward mode from b gives every node: "
          + ", ".join(f"∂{n}/∂b = {d:g}" for n, d in olah["d_e/d_b"]["forward_all_nodes"].items())
          + "; reverse mode from e gives ∂e/∂a and ∂e/∂b in one pass")
    print(common.table(
        [[r["depth"], r["paths"], r["path_mults"], r["forward_mults"], r["reverse_mults"],
          r["sum_over_paths"], r["reverse_mode"], r["jax_grad"], r["max_rel_diff"]] for r in chain],
        ["depth", "paths", "mults (paths)", "mults (fwd)", "mults (rev)", "sum over paths",
         "reverse mode", "jax.grad", "max rel diff"]))
    print(common.table(
        [[r["params"], r["forward_s"], r["reverse_s"], r["loss_eval_s"], r["reverse_over_forward"],
          r["grad_rel_diff"]] for r in loss_rows],
        ["params P", "forward s", "reverse s", "loss eval s", "reverse/forward", "rel diff"]))
    print(common.table(
        [[r["outputs"], r["forward_s"], r["reverse_s"], r["reverse_over_forward"],
          r["jacobian_rel_diff"]] for r in jac_rows],
        ["outputs m", "forward s", "reverse s", "reverse/forward", "rel diff"]))
    print(f"wrote {out}")
    return metrics


if __name__ == "__main__":
    main()
