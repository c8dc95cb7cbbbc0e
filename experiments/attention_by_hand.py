"""Causal self-attention's backward by hand (beyond the notes): the derivation worked in code on
explicit matrices, both hand-written forms against ``jax.vjp``, and what keeping ``P`` or not
costs a training step in memory and time as the context ``T`` grows.

The layer is ``fnnet.CausalSelfAttention`` (``fnnet/layers/attention.py``, derivation in the
module docstring; karpathy's llm.c and FlashAttention-2 derive the same). Per sequence and head,
``Q``, ``K``, ``V`` ``(T, d)``, ``M̃`` the scaled dropout mask (all ones without dropout)::

    S = Q Kᵀ/√d,  S_ij = −∞ for j > i      P = softmax(S) row by row      P̃ = P ⊙ M̃      Y = P̃ V

and from ``dY``, by the chain rule through each line in reverse::

    dV = P̃ᵀ dY        dP = (dY Vᵀ) ⊙ M̃        dS = P ⊙ (dP − rowsum(dP ⊙ P))
    dQ = dS K/√d       dK = dSᵀ Q/√d

with the identity that lets the memory-lean form forget ``P`` (FlashAttention-2's ``D``)::

    rowsum(dP ⊙ P)_i = Σ_j (dY Vᵀ)_ij P̃_ij = Σ_c dY_ic (P̃ V)_ic = rowsum(dY ⊙ Y)_i

``"keep_p"`` keeps ``P`` ``(N, h, T, T)`` from the forward; ``"lean"`` keeps only each row's
log-sum-exp ``ℓ`` and recomputes ``P = e^{S − ℓ}`` block of ``B`` query rows by block, so its
largest intermediate is one block's ``(N, h, B, T)`` scores; ``jax.grad`` of ``apply`` keeps
every ``T × T`` matrix of the forward for its backward.

1. The derivation in code (float64): for small problems, without and with dropout, each line
   above computed literally in numpy on the explicit ``(T, T)`` matrices of every sequence and
   head, each against ``jax.vjp`` of that line's forward at the same upstream gradient, and
   ``dQ``, ``dK``, ``dV`` against ``jax.vjp`` of ``attention_reference`` (what ``apply`` runs);
   the identity checked numerically. Then the whole layer, ``CausalSelfAttention.forward`` and
   ``backward`` with ``backward_form="keep_p"`` and ``"lean"`` (several block sizes, blocks that
   do not divide ``T``, dropout on and off) against ``jax.vjp`` of its ``apply``:
   ``max|a − b| / max|b|``, tolerance 1e-10.
2. Memory and time: one training step (loss and every gradient) of ``fnnet.gpt(65, T, 1, 4,
   64)`` (one block, 4 heads, width 64, blocks of 128 query rows) on one window of ``T``
   characters, for ``T = 64 … 4096``: the lean backward (``fnnet.value_and_grad``), the
   ``P``-keeping backward (the same, ``backward_form="keep_p"``) and ``jax.grad``
   (``fnnet.autodiff_value_and_grad``). Memory is read from each compiled program
   (``jax.jit(f).lower(...).compile().memory_analysis()``: the bytes of temporaries XLA
   allocates for one call, beyond the arguments and the outputs); time is the median wall time
   per call over interleaved rounds, on the CPU. What the compiled program holds is XLA's
   choice: the lean form's blocks are unrolled, and the compiler's schedule decides how many
   blocks' scores are alive at once.

Outputs in ``--out``: ``memory_and_time.png`` (temporaries and time per step against ``T``,
three curves each), ``metrics.json``::

    python -m experiments.attention_by_hand --out runs/attention_by_hand [--quick] [--seed 0]
"""

from __future__ import annotations

import math
import os
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.ticker import FuncFormatter

import fnnet
from experiments import common
from fnnet.bench.harness import median, paired
from fnnet.layers.attention import attention_reference, full_dropout_mask
from fnnet.plots import save_figure

NAME = "attention_by_hand"
TOLERANCE = 1e-10  # float64
DROPOUT = 0.25
# (N, h, T, d) of the explicit-matrix derivation; quick: the first
STEP_SHAPES = ((2, 2, 7, 3), (1, 3, 12, 4))
# (N, T, C, heads, dropout) of the layer checks, each for every form in FORMS
CASES = ((2, 7, 6, 2, 0.0), (2, 16, 8, 2, 0.0), (2, 13, 8, 4, 0.3), (1, 33, 12, 3, 0.2))
QUICK_CASES = ((2, 13, 8, 4, 0.0),)  # blocks of 4 that do not divide T (dropout: CASES)
FORMS = (("keep_p", 128), ("lean", 1), ("lean", 4), ("lean", 5), ("lean", 16), ("lean", 128))
QUICK_FORMS = (("keep_p", 128), ("lean", 4))
STEPS = ("Y = P̃V (forward)", "dV = P̃ᵀdY", "dP = (dY Vᵀ) ⊙ M̃", "dS = P ⊙ (dP − rowsum(dP ⊙ P))",
         "dQ = dS K/√d", "dK = dSᵀQ/√d", "dQ, dK, dV end to end",
         "rowsum(dP ⊙ P) = rowsum(dY ⊙ Y)")
# the memory and time comparison: fnnet.gpt(VOCAB, T, LAYERS, HEADS, DIM), BATCH windows
VOCAB, LAYERS, HEADS, DIM, BATCH, BLOCK = 65, 1, 4, 64, 1, 128
LENGTHS = (64, 128, 256, 512, 1024, 2048, 4096)
QUICK_LENGTHS = (64, 256)
TARGET_T, TARGET_RATIO = 2048, 0.25  # the lean step's temporaries ≤ 1/4 of jax.grad's at T=2048
IMPLEMENTATIONS = ("lean backward", "P-keeping backward", "jax.grad")
MIB = 2.0 ** 20


# --- 1. the derivation on explicit matrices ----------------------------------------------------


def random_qkv(shape, rng):
    """``q, k, v, dy`` float64 ``(N, h, T, d)``."""
    return tuple(jnp.asarray(rng.normal(size=shape)) for _ in range(4))


def literal(q, k, v, dy, mask):
    """The forward and the backward of every sequence and head on explicit ``(T, T)`` numpy
    matrices, one line of the module docstring each: a dict of ``(N, h, ...)`` arrays."""
    q, k, v, dy, mask = (np.asarray(a) for a in (q, k, v, dy, mask))
    n, h, t, d = q.shape
    out = {name: np.zeros((n, h, t, t)) for name in ("P", "dP", "dS")}
    out.update({name: np.zeros((n, h, t, d)) for name in ("Y", "dQ", "dK", "dV")})
    out.update({name: np.zeros((n, h, t)) for name in ("rowsum_dP_P", "rowsum_dY_Y")})
    above = np.triu(np.ones((t, t), bool), 1)  # j > i: the later steps a query may not read
    for a in range(n):
        for b in range(h):
            Q, K, V, dY, M = q[a, b], k[a, b], v[a, b], dy[a, b], mask[a, b]
            S = Q @ K.T / math.sqrt(d)
            S[above] = -np.inf
            E = np.exp(S - S.max(axis=1, keepdims=True))
            P = E / E.sum(axis=1, keepdims=True)
            Pt = P * M
            Y = Pt @ V
            dV = Pt.T @ dY
            dP = (dY @ V.T) * M
            rowsum = (dP * P).sum(axis=1, keepdims=True)
            dS = P * (dP - rowsum)
            dQ = dS @ K / math.sqrt(d)
            dK = dS.T @ Q / math.sqrt(d)
            for name, value in (("P", P), ("dP", dP), ("dS", dS), ("Y", Y), ("dQ", dQ),
                                ("dK", dK), ("dV", dV), ("rowsum_dP_P", rowsum[:, 0]),
                                ("rowsum_dY_Y", (dY * Y).sum(axis=1))):
                out[name][a, b] = value
    return out


@partial(jax.jit, static_argnames="rate")
def step_references(q, k, v, dy, p, dp, ds, key, rate):
    """Each line's ``jax.vjp`` at the literal upstream gradient (``p``, ``dp``, ``ds`` the
    literal ``P``, ``dP``, ``dS``), and the end-to-end ``jax.vjp`` of ``attention_reference``
    (``key=None`` without dropout)."""
    d, t = q.shape[-1], q.shape[2]
    causal = jnp.tril(jnp.ones((t, t), bool))
    m = 1.0 if key is None else full_dropout_mask(key, rate, *q.shape[:3], 128)
    options = {} if key is None else {"key": key, "rate": rate}
    y, end_to_end = jax.vjp(lambda q, k, v: attention_reference(
        q, k, v, policy=fnnet.precision.get(None), **options), q, k, v)
    _, out_vjp = jax.vjp(lambda p, v: jnp.einsum("nhqk,nhkd->nhqd", p * m, v), p, v)
    _, softmax_vjp = jax.vjp(lambda s: jax.nn.softmax(jnp.where(causal, s, -jnp.inf), axis=-1),
                             jnp.einsum("nhqd,nhkd->nhqk", q, k) / math.sqrt(d))
    _, scores_vjp = jax.vjp(lambda q, k: jnp.einsum("nhqd,nhkd->nhqk", q, k) / math.sqrt(d), q, k)
    dp_ref, dv = out_vjp(dy)
    (ds_ref,) = softmax_vjp(dp)
    dq, dk = scores_vjp(ds)
    return {"Y": y, "dV": dv, "dP": dp_ref, "dS": ds_ref, "dQ": dq, "dK": dk,
            "end_to_end": end_to_end(dy)}


def derivation_table(seed, shapes):
    """The literal lines against ``jax.vjp``, without and with dropout: ``(rows, worst,
    causal_leak)``, ``causal_leak`` the largest ``|dS_ij|`` above the diagonal (exactly 0)."""
    rng = np.random.default_rng(seed)
    rows, leak = [], 0.0
    with jax.enable_x64(True):
        for shape in shapes:
            q, k, v, dy = random_qkv(shape, rng)
            for rate in (0.0, DROPOUT):
                key = None if rate == 0 else jax.random.PRNGKey(seed + 1)
                m = np.ones(shape[:3] + (shape[2],)) if key is None else np.asarray(
                    full_dropout_mask(key, rate, *shape[:3], 128))
                lit = literal(q, k, v, dy, m)
                ref = step_references(q, k, v, dy, *(jnp.asarray(lit[name]) for name in
                                                     ("P", "dP", "dS")), key, rate)
                errors = [common.rel_error(lit["Y"], ref["Y"]),
                          common.rel_error(lit["dV"], ref["dV"]),
                          common.rel_error(lit["dP"], ref["dP"]),
                          common.rel_error(lit["dS"], ref["dS"]),
                          common.rel_error(lit["dQ"], ref["dQ"]),
                          common.rel_error(lit["dK"], ref["dK"]),
                          common.rel_error((lit["dQ"], lit["dK"], lit["dV"]), ref["end_to_end"]),
                          common.rel_error(lit["rowsum_dP_P"], lit["rowsum_dY_Y"])]
                leak = max(leak, float(np.max(np.abs(np.triu(lit["dS"], 1)))))
                case = f"N,h,T,d={shape}, dropout {rate:g}"
                rows += [{"case": case, "step": step, "error": e} for step, e in zip(STEPS, errors)]
    return rows, max(r["error"] for r in rows), leak


def random_layer_params(layer, rng):
    """The layer's params in float64 with every leaf ``~ N(0, 0.3²)`` (biases non-zero)."""
    shapes = jax.eval_shape(layer.init, jax.ShapeDtypeStruct((2,), jnp.uint32))
    return jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape)), shapes)


def layer_agreement(case, forms, seed, rng):
    """One case's rows: each form's output and gradients against ``jax.vjp`` of ``apply`` of the
    same layer (the dropout masks depend on the block size, so each its own reference)."""
    n, t, c, heads, rate = case
    layers = {(form, block): fnnet.CausalSelfAttention(c, heads, rate, backward_form=form,
                                                       block=block) for form, block in forms}
    params = random_layer_params(next(iter(layers.values())), rng)
    x, dy = (jnp.asarray(rng.normal(size=(n, t, c))) for _ in range(2))
    key = jax.random.PRNGKey(seed) if rate else None

    @jax.jit
    def compiled(params, x, dy, key):
        results = {}
        for name, layer in layers.items():
            y_ref, vjp = jax.vjp(partial(layer.apply, key=key, train=True), params, x)
            y, cache = layer.forward(params, x, key=key, train=True)
            results[name] = (y, layer.backward(params, cache, dy), y_ref, vjp(dy))
        return results

    rows = []
    for (form, block), (y, (dp, dx), y_ref, (dp_ref, dx_ref)) in compiled(params, x, dy,
                                                                           key).items():
        rows.append({"case": f"N={n}, T={t}, C={c}, h={heads}, dropout {rate:g}", "form": form,
                     "block": block, "Y": common.rel_error(y, y_ref),
                     "dX": common.rel_error(dx, dx_ref),
                     "dW_qkv": common.rel_error(dp.qkv.W, dp_ref.qkv.W),
                     "db_qkv": common.rel_error(dp.qkv.b, dp_ref.qkv.b),
                     "dW_proj": common.rel_error(dp.proj.W, dp_ref.proj.W),
                     "db_proj": common.rel_error(dp.proj.b, dp_ref.proj.b)})
    return rows


ERROR_COLUMNS = ("Y", "dX", "dW_qkv", "db_qkv", "dW_proj", "db_proj")


def layer_table(seed, cases, forms):
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        rows = [r for case in cases for r in layer_agreement(case, forms, seed, rng)]
    return rows, max(r[k] for r in rows for k in ERROR_COLUMNS)


# --- 2. memory and time of a training step -----------------------------------------------------


def step_functions(t):
    """``{implementation: (params, ids, labels) -> (loss, grads)}`` for ``fnnet.gpt(VOCAB, t,
    LAYERS, HEADS, DIM)``, and that model."""
    lean = fnnet.gpt(VOCAB, t, LAYERS, HEADS, DIM, block=BLOCK)
    keep = fnnet.gpt(VOCAB, t, LAYERS, HEADS, DIM, backward_form="keep_p", block=BLOCK)
    return {"lean backward": fnnet.value_and_grad(lean, "cross_entropy"),
            "P-keeping backward": fnnet.value_and_grad(keep, "cross_entropy"),
            "jax.grad": fnnet.autodiff_value_and_grad(lean, "cross_entropy")}, lean


def rounds_for(t, quick):
    """Timing rounds (and a budget in seconds) per length: fewer for the long contexts."""
    if quick:
        return 3, 0.0
    return (7, 2.0) if t <= 512 else (5, 0.0) if t <= 1024 else (3, 0.0)


def measure(t, seed, quick):
    """One length: each implementation's compiled memory, compile seconds and time per step."""
    fns, model = step_functions(t)
    params = model.init(jax.random.PRNGKey(seed))
    rng = np.random.default_rng(seed)
    ids = jnp.asarray(rng.integers(0, VOCAB, (BATCH, t + 1)), jnp.int32)
    x, y = ids[:, :-1], ids[:, 1:]
    compiled, result = {}, {"T": t}
    for name, fn in fns.items():
        started = time.perf_counter()
        compiled[name] = jax.jit(fn).lower(params, x, y).compile()
        stats = compiled[name].memory_analysis()
        result[name] = {"temp_mib": stats.temp_size_in_bytes / MIB,
                        "argument_mib": stats.argument_size_in_bytes / MIB,
                        "output_mib": stats.output_size_in_bytes / MIB,
                        "compile_seconds": time.perf_counter() - started}
    losses = {name: float(fn(params, x, y)[0]) for name, fn in compiled.items()}
    rounds, budget = rounds_for(t, quick)
    times = common.interleaved_times(compiled, params, x, y, rounds=rounds, budget_s=budget)
    for name in fns:
        result[name].update(ms=median(times[name]) * 1e3, seconds=times[name],
                            loss=losses[name])
    result["rounds"] = len(times["jax.grad"])
    result["lean_over_autodiff_memory"] = (result["lean backward"]["temp_mib"]
                                           / result["jax.grad"]["temp_mib"])
    result["keep_p_over_autodiff_memory"] = (result["P-keeping backward"]["temp_mib"]
                                             / result["jax.grad"]["temp_mib"])
    result["lean_over_autodiff_time"] = paired(times["jax.grad"], times["lean backward"])
    result["keep_p_over_autodiff_time"] = paired(times["jax.grad"], times["P-keeping backward"])
    result["loss_spread"] = max(losses.values()) - min(losses.values())
    print(f"[{NAME}] T={t}: temporaries " + ", ".join(
        f"{name} {result[name]['temp_mib']:.2f} MiB" for name in fns) + "; ms/step " + ", ".join(
        f"{name} {result[name]['ms']:.1f}" for name in fns) + f" ({result['rounds']} rounds)",
        flush=True)
    return result


def growth(sweep, name, key="temp_mib"):
    """The log-log slope of ``name``'s ``key`` from the second-largest to the largest ``T``
    (2: quadratic, 1: linear)."""
    a, b = sweep[-2], sweep[-1]
    return math.log(b[name][key] / a[name][key]) / math.log(b["T"] / a["T"])


def plot_memory_and_time(path, sweep, target_t):
    fig, (ax_m, ax_t) = common.subplots(1, 2, figsize=(13, 4.8))
    ts = [r["T"] for r in sweep]
    styles = {"lean backward": "o-", "P-keeping backward": "s-", "jax.grad": "^--"}
    for name in IMPLEMENTATIONS:
        ax_m.plot(ts, [r[name]["temp_mib"] for r in sweep], styles[name], label=name)
        ax_t.plot(ts, [r[name]["ms"] for r in sweep], styles[name], label=name)
    first = sweep[0]["jax.grad"]["temp_mib"]
    for power, label in ((1, "∝ T"), (2, "∝ T²")):
        ax_m.plot(ts, [first * (t / ts[0]) ** power for t in ts], ":", color="gray", lw=1,
                  label=f"{label} (guide)")
    for ax in (ax_m, ax_t):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ts, [str(t) for t in ts])
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    row = next((r for r in sweep if r["T"] == target_t), sweep[-1])
    ax_m.annotate(f"lean/jax.grad at T={row['T']}: {row['lean_over_autodiff_memory']:.2f}",
                  (row["T"], row["lean backward"]["temp_mib"]), textcoords="offset points",
                  xytext=(-150, 25), arrowprops={"arrowstyle": "->"})
    ax_m.set(xlabel="context T (characters)", ylabel="MiB of temporaries (compiled step)",
             title="peak temporary memory of one training step")
    ax_t.set(xlabel="context T (characters)", ylabel="ms per step (median, interleaved)",
             title="time per training step, CPU")
    fig.suptitle(f"fnnet.gpt({VOCAB}, T, {LAYERS} layer, {HEADS} heads, dim {DIM}), batch "
                 f"{BATCH}, lean blocks of {BLOCK} rows: loss and every gradient, jitted")
    return save_figure(fig, path)


def main(argv=None):
    """Run both parts; return the metrics written to ``OUT/metrics.json``."""
    args = common.parser(__doc__.splitlines()[0], NAME).parse_args(argv)
    out = Path(args.out)
    load_before = os.getloadavg()
    started = time.perf_counter()
    steps, step_worst, leak = derivation_table(args.seed, STEP_SHAPES[:1] if args.quick
                                               else STEP_SHAPES)
    layer_rows, layer_worst = layer_table(args.seed, QUICK_CASES if args.quick else CASES,
                                          QUICK_FORMS if args.quick else FORMS)
    worst = max(step_worst, layer_worst)
    lengths = QUICK_LENGTHS if args.quick else LENGTHS
    sweep = [measure(t, args.seed, args.quick) for t in lengths]
    target_t = TARGET_T if TARGET_T in lengths else lengths[-1]
    target = next(r for r in sweep if r["T"] == target_t)
    plot_memory_and_time(out / "memory_and_time.png", sweep, target_t)
    load_after = os.getloadavg()
    seconds = time.perf_counter() - started

    ratio = target["lean_over_autodiff_memory"]
    metrics = {
        "experiment": NAME, "quick": args.quick, "seed": args.seed, "data": "random",
        "tolerance": TOLERANCE, "derivation": steps, "agreement": layer_rows,
        "max_rel_error": worst, "all_agree": worst <= TOLERANCE,
        "causal_leak": leak, "memory": sweep,
        "config": {"model": f"fnnet.gpt({VOCAB}, T, {LAYERS}, {HEADS}, {DIM})", "batch": BATCH,
                   "block": BLOCK, "lengths": list(lengths), "dropout": DROPOUT},
        "cpu": common.cpu_model(), "device": str(jax.devices()[0]),
        "load_average": {"before": list(load_before), "after": list(load_after)},
        "seconds": seconds, "figures": ["memory_and_time.png"],
        "headline": {
            "largest relative error, literal lines and both forms vs jax.vjp (float64)": worst,
            f"temporaries lean / jax.grad at T={target_t} (target ≤ {TARGET_RATIO})": ratio,
            f"lean within the target at T={target_t}": ratio <= TARGET_RATIO,
            f"temporaries P-keeping / jax.grad at T={target_t}":
                target["keep_p_over_autodiff_memory"],
            **{f"MiB of temporaries at T={target_t}, {name}": target[name]["temp_mib"]
               for name in IMPLEMENTATIONS},
            f"time per step lean / jax.grad at T={target_t} (paired)":
                target["lean_over_autodiff_time"],
            f"time per step P-keeping / jax.grad at T={target_t} (paired)":
                target["keep_p_over_autodiff_time"],
            **{f"growth of temporaries T={sweep[-2]['T']}→{sweep[-1]['T']} (log-log slope), "
               f"{name}": growth(sweep, name) for name in IMPLEMENTATIONS},
            "CPU": common.cpu_model(),
            "load average (1 min) before / after": f"{load_before[0]:.2f} / {load_after[0]:.2f}",
        },
        "tables": {
            "the derivation, line by line, against jax.vjp (float64)": {
                "headers": ["case", "line", "max relative error"],
                "rows": [[r["case"], r["step"], r["error"]] for r in steps]},
            "CausalSelfAttention forward/backward against jax.vjp of apply (float64)": {
                "headers": ["case", "form", "block", *ERROR_COLUMNS],
                "rows": [[r["case"], r["form"], r["block"], *(r[k] for k in ERROR_COLUMNS)]
                         for r in layer_rows]},
            "one training step: MiB of temporaries and ms per step": {
                "headers": ["T", *(f"{n} MiB" for n in IMPLEMENTATIONS),
                            *(f"{n} ms" for n in IMPLEMENTATIONS), "lean/jax.grad memory"],
                "rows": [[r["T"], *(r[n]["temp_mib"] for n in IMPLEMENTATIONS),
                          *(r[n]["ms"] for n in IMPLEMENTATIONS),
                          r["lean_over_autodiff_memory"]] for r in sweep]},
        },
    }
    common.write_metrics(out, metrics)
    for table in metrics["tables"].values():
        print(common.table(table["rows"], table["headers"]))
    print(f"largest relative error {worst:.2e} (≤ {TOLERANCE:g}: {worst <= TOLERANCE}); "
          f"temporaries lean/jax.grad at T={target_t}: {ratio:.3f} (target ≤ {TARGET_RATIO}); "
          f"{seconds:.1f}s; outputs in {out}")
    return metrics


if __name__ == "__main__":
    main()
