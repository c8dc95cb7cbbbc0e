"""W6: nanoGPT's character-level Shakespeare recipe for a CPU, one training step at a time, and
the time to a validation loss of 1.88.

``python -m fnnet.bench.gpt [--quick] [--repeats N] [--out DIR]`` prints a table and writes
``metrics.json`` into ``--out`` (default ``runs/benchmark_gpt``).

The recipe (``fnnet train --dataset shakespeare --model gpt``, ``fnnet.cli.train_text``):
``fnnet.gpt(65, 64, 4, 4, 128)``, 4 pre-LayerNorm blocks of 4 heads, width 128, context 64, the
head tied to the token table, no dropout; 12 random windows of 64 characters a step, drawn inside
the compiled program from the training text (``fnnet.TokenWindows``); cross-entropy over every
token; AdamW lr 1e-3, betas (0.9, 0.99), weight decay 0.1 on the matrices and both embedding
tables (nanoGPT's groups, ``decay_embeddings=True``), warmup 100 steps and cosine to 1e-4 over
2,000, behind ``clip_by_global_norm(1.0)`` (``gpt_optimizer``), float32.

Implementations, timed in interleaved rounds as W1–W5 are (``fnnet.bench.workload``), each unit
``steps`` training steps:

    fnnet manual          the program ``fnnet.fit`` runs on a token stream (``fnnet.EpochRunner``
                          with ``windows=(block, steps)``, compiled once): the hand-derived
                          backward of ``fnnet.layers.transformer`` and ``fnnet.layers.attention``
                          (the lean attention backward, ``P`` recomputed from each row's
                          log-sum-exp)
    fnnet autodiff        the same program with ``grads="autodiff"``: ``jax.grad`` of the same
                          ``apply``
    torch eager           the same GPT in PyTorch eager (``fnnet.bench.torch_gpt``: attention by
                          ``F.scaled_dot_product_attention``, as nanoGPT runs it, or written out
                          with ``--torch-attention explicit``), the same AdamW groups and
                          clipping; skipped when torch is missing (an optional extra)
    ... bf16              fnnet's two programs under ``precision="bf16"`` and PyTorch under
                          ``torch.autocast("cpu", dtype=torch.bfloat16)``, where the CPU has
                          bfloat16 matrix units or with ``--bf16``, never with ``--no-bf16``
                          (``fnnet.bench.mixed.bf16_columns``)

Speeds are in tokens per second (``batch × block`` a step); paired ratios are of seconds per
token within a round (``fnnet.bench.harness.paired``), the figure the targets read.

FLOPs of one token (``token_flops``), matrix products only, with ``L`` blocks, width ``C``,
vocabulary ``V`` and context ``T`` (the LayerNorms, GELU, softmax, the embedding's gather and
scatter-add, the loss and the update are ``O(C)`` or ``O(T)`` per token and left out)::

    per block   qkv projection       X W_qkvᵀ          2·C·3C    =  6·C²
                scores               Q Kᵀ (per head)   2·T·d·h   =  2·T·C
                mix                  P V               2·T·d·h   =  2·T·C
                output projection    Y W_oᵀ            2·C·C     =  2·C²
                MLP                  C → 4C → C        2·2·C·4C  = 16·C²
    head        LN_f(X) W_teᵀ                          2·C·V
    forward     2·(12·L·C² + V·C) + 2·2·T·C·L

Every product has two backward products of its own FLOPs (``dW`` and ``dX``; for the scores
``dQ = dS K`` and ``dK = dSᵀ Q``, for the mix ``dV = Pᵀ dY`` and ``dP = dY Vᵀ``), the first
block's ``dX`` included (the embedding's gradient needs it), so a training step is three
forwards::

    total       3 · (24·L·C² + 2·V·C + 4·T·C·L)

The attention terms count the whole T×T square, as every implementation here computes it (the
causal mask zeroes the upper half; counting only the lower half would take ``T·C`` off each
term). The lean backward's recomputation of the scores (one more ``2·T·C``) is not counted: at
``T ≤ block`` XLA shares the forward's. For L = 4, C = 128, V = 65, T = 64: 3 · (1,572,864 +
16,640 + 131,072) = 5,161,728 FLOPs, 5.16 MFLOP a token (3.96 GFLOP a step of 12 × 64 tokens),
91 % of it in the blocks' projections and MLP.

Also measured (``memory_at``): the temporaries XLA allocates for one training step (loss and every
gradient, ``jax.jit(...).lower(...).compile().memory_analysis().temp_size_in_bytes``) of
``fnnet.gpt(65, T, 1, 4, 64)`` on one window of ``T = 2048``, for the lean backward, the
``P``-keeping one and ``jax.grad``; the target is lean ≤ 0.25 × ``jax.grad``
(``experiments/attention_by_hand.py`` sweeps T). And ``time_to_loss``: the CLI recipe trained
by ``fnnet.fit`` as ``fnnet train`` does, validated every 250 steps on the CLI's 512 validation
windows; the wall time (compile included) to the first validation loss ≤ 1.88 nats per character.

Data: tiny Shakespeare's training ids when ``fnnet.datasets.load_shakespeare`` finds them without
downloading (``FNNET_DATA_DIR``), random ids otherwise (timing only; ``time_to_loss`` needs the
text).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnnet
from fnnet import datasets
from fnnet.cli import train_text
from fnnet.cli.common import folder
from fnnet.io import write_json

from . import baselines, mixed
from .profile import dot_ops, dot_signatures
from .report import MANUAL_OVER_AUTODIFF, attention_memory_line, attention_memory_target
from .report import OVER_TORCH as TORCH_TARGETS
from .workload import roof_probes, time_implementations

FULL = {
    "gpt": {"vocab_size": 65, "block_size": 64, "layers": 4, "heads": 4, "dim": 128},
    "batch": 12, "block": 64, "steps": 16,
    "lr": 1e-3, "betas": train_text.BETAS, "weight_decay": 0.1, "clip": 1.0,
    "warmup": 100, "total_steps": 2000, "eval_every": 250,
    "matmul_n": 2048, "repeats": 10,
    "memory": {"t": 2048, "layers": 1, "heads": 4, "dim": 64, "batch": 1, "block": 128},
}
QUICK = {  # the same recipe at tiny sizes
    **FULL,
    "gpt": {"vocab_size": 65, "block_size": 16, "layers": 2, "heads": 2, "dim": 16},
    "batch": 4, "block": 16, "steps": 4, "matmul_n": 256, "repeats": 3,
    "memory": {**FULL["memory"], "t": 256},
}
#: The targets on the CPU, all on paired ratios (kept with the other workloads' in ``report``).
OVER_AUTODIFF = MANUAL_OVER_AUTODIFF["W6"]
OVER_TORCH = TORCH_TARGETS["W6"]
TARGET_LOSS = 1.88
MANUAL, AUTODIFF, TORCH = "fnnet manual", "fnnet autodiff", "torch eager"
MANUAL_BF16, AUTODIFF_BF16, TORCH_BF16 = ("fnnet manual bf16", "fnnet autodiff bf16",
                                          "torch autocast bf16")
DESCRIPTION = ("nanoGPT's char-level Shakespeare step: fnnet.gpt(65, block, layers, heads, dim), "
               "windows of block tokens, AdamW + clip_by_global_norm")


def token_flops(layers, dim, vocab, context):
    """``{"total", "forward", "terms"}``: the FLOPs of one token of a training step (the module
    docstring's count, ``3 · (24·L·C² + 2·V·C + 4·T·C·L)``), and each product's forward FLOPs
    (each has a ``dW``/``dX`` pair of the same)."""
    c = dim
    terms = {"qkv projection": 6 * c * c * layers, "scores Q Kᵀ": 2 * context * c * layers,
             "mix P V": 2 * context * c * layers, "output projection": 2 * c * c * layers,
             "MLP": 16 * c * c * layers, "head (tied)": 2 * vocab * c}
    forward = sum(terms.values())
    return {"total": 3 * forward, "forward": forward, "terms": terms}


def recipe(cfg):
    """The CLI's ``gpt_config`` fields ``gpt_optimizer`` reads, for ``cfg``."""
    return {"lr": cfg["lr"], "betas": list(cfg["betas"]), "weight_decay": cfg["weight_decay"],
            "clip": cfg["clip"], "steps": cfg["total_steps"], "warmup": cfg["warmup"]}


def model_for(cfg, precision=None, backward_form="lean"):
    """``fnnet.gpt`` of ``cfg["gpt"]`` (no dropout), under ``precision`` (``None``: float32)."""
    a = cfg["gpt"]
    model = fnnet.gpt(a["vocab_size"], a["block_size"], a["layers"], a["heads"], a["dim"],
                      backward_form=backward_form)
    return fnnet.precision.with_precision(model, None if precision in (None, "f32")
                                          else precision)


def load_tokens(vocab, seed, length=200_000):
    """``(train ids, source)``: tiny Shakespeare's training ids (int32) when they can be found
    without downloading (``"shakespeare"``), else ``length`` random ids below ``vocab``
    (``"random"``)."""
    try:
        ids = datasets.load_shakespeare(download=False).train
        if int(ids.max()) < vocab:
            return np.ascontiguousarray(ids, np.int32), "shakespeare"
    except (OSError, ValueError):
        pass
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab, length).astype(np.int32), "random"


def fnnet_gpt_runner(cfg, tokens, state, grads="manual", precision=None):
    """``(unit, info)``: the program ``fnnet.fit`` runs on a ``TokenWindows`` stream
    (``fnnet.EpochRunner(..., windows=(block, steps)).program(keep_last_good=False)``), compiled
    once (compile time, matrix products and operation count noted) for the device token stream
    ``tokens``, from ``state`` (shared by every fnnet program: the same init and keys, so the same
    windows). ``unit()`` runs ``cfg["steps"]`` steps; ``info["last_loss"]`` is their mean loss
    and ``info["losses"]`` every unit's, in order (the first the warm-up's)."""
    model = model_for(cfg, precision)
    opt = train_text.gpt_optimizer(recipe(cfg))
    steps, batch = cfg["steps"], cfg["batch"]
    runner = fnnet.EpochRunner(model, "cross-entropy", opt, steps * batch, batch, grads=grads,
                               windows=(cfg["block"], steps))
    t, cpu = time.perf_counter(), time.process_time()
    compiled = jax.jit(runner.program(keep_last_good=False)).lower(state, tokens, tokens).compile()
    info = {"compile_seconds": time.perf_counter() - t,
            "compile_cpu_seconds": time.process_time() - cpu, "losses": [], "units_run": 0}
    hlo = compiled.as_text()
    info["matrix_products"] = dot_signatures(hlo)
    info["hlo_operations"] = len(dot_ops(hlo)[0])
    info["hlo_convolutions"] = hlo.count(" convolution(")
    current = [state]

    def unit():
        current[0], stats = compiled(current[0], tokens, tokens)
        info["last_loss"] = float(jax.device_get(stats)["loss_sum"]) / steps
        info["losses"].append(info["last_loss"])
        info["units_run"] += 1

    unit()
    info["first_loss"] = info["last_loss"]
    return unit, info


def torch_runner(cfg, tokens, seed, autocast=None, attention="sdpa"):
    """``fnnet.bench.torch_gpt.runner`` (imported here: torch is optional)."""
    from . import torch_gpt

    return torch_gpt.runner(cfg, tokens, seed, autocast=autocast, attention=attention)


def implementations(cfg, tokens_host, seed, bf16, torch_attention="sdpa"):
    """``{name: make}``: fnnet's two programs and PyTorch, and with ``bf16`` their bf16 twins."""
    tokens = jax.device_put(jnp.asarray(tokens_host, jnp.int32))
    model = model_for(cfg)
    state = fnnet.TrainState.create(model, train_text.gpt_optimizer(recipe(cfg)),
                                    jax.random.PRNGKey(seed), dtype=jnp.float32)
    makers = {
        MANUAL: lambda: fnnet_gpt_runner(cfg, tokens, state, "manual"),
        AUTODIFF: lambda: fnnet_gpt_runner(cfg, tokens, state, "autodiff"),
        TORCH: lambda: torch_runner(cfg, tokens_host, seed, attention=torch_attention),
    }
    if bf16:
        makers[MANUAL_BF16] = lambda: fnnet_gpt_runner(cfg, tokens, state, "manual", "bf16")
        makers[AUTODIFF_BF16] = lambda: fnnet_gpt_runner(cfg, tokens, state, "autodiff", "bf16")
        makers[TORCH_BF16] = lambda: torch_runner(cfg, tokens_host, seed, autocast="bf16",
                                                  attention=torch_attention)
    return makers


def loss_agreement(results, a=MANUAL, b=AUTODIFF):
    """How far apart two fnnet programs' losses are after the same units (the same windows from
    the same state): ``{"units", "steps", "a", "b", "max_abs_diff", "last_abs_diff"}``, or
    ``None`` when either is missing."""
    if a not in results or b not in results:
        return None
    la, lb = results[a]["losses"], results[b]["losses"]
    k = min(len(la), len(lb))
    diffs = [abs(x - y) for x, y in zip(la[:k], lb[:k])]
    return {"units": k, a: la[k - 1], b: lb[k - 1], "max_abs_diff": max(diffs),
            "last_abs_diff": diffs[-1]}


def memory_at(mem, seed=0):
    """Temporaries of one compiled training step (loss and every gradient) of ``fnnet.gpt(65, T,
    layers, heads, dim)`` on ``batch`` windows of ``T = mem["t"]``: the lean backward, the
    ``P``-keeping backward and ``jax.grad`` of the same ``apply``
    (``memory_analysis().temp_size_in_bytes``), and the two ratios to ``jax.grad``."""
    t, vocab = mem["t"], 65
    shape = (mem["layers"], mem["heads"], mem["dim"])
    lean = fnnet.gpt(vocab, t, *shape, block=mem["block"])
    keep = fnnet.gpt(vocab, t, *shape, backward_form="keep_p", block=mem["block"])
    fns = {"lean backward": fnnet.value_and_grad(lean, "cross_entropy"),
           "P-keeping backward": fnnet.value_and_grad(keep, "cross_entropy"),
           "jax.grad": fnnet.autodiff_value_and_grad(lean, "cross_entropy")}
    params = jax.eval_shape(lean.init, jax.random.PRNGKey(seed))
    ids = jax.ShapeDtypeStruct((mem["batch"], t), jnp.int32)
    out = {"T": t, **mem, "temp_bytes": {}}
    for name, fn in fns.items():
        stats = jax.jit(fn).lower(params, ids, ids).compile().memory_analysis()
        out["temp_bytes"][name] = int(stats.temp_size_in_bytes)
    grad = out["temp_bytes"]["jax.grad"]
    out["lean_over_autodiff"] = out["temp_bytes"]["lean backward"] / grad
    out["keep_p_over_autodiff"] = out["temp_bytes"]["P-keeping backward"] / grad
    return out


def targets(report):
    """W6's targets, each ``{"value", "met"}`` (``met`` ``None`` where not measured)."""
    paired = report.get("paired_ratios", {})

    def ratio(a, b):
        return paired.get(a, {}).get(b)

    out = {}
    for label, a, b, want in ((f"fnnet manual >= {OVER_AUTODIFF}x jax.grad", MANUAL, AUTODIFF,
                               OVER_AUTODIFF),
                              (f"fnnet manual >= {OVER_TORCH}x PyTorch eager", MANUAL, TORCH,
                               OVER_TORCH)):
        value = ratio(a, b)
        out[label] = {"value": value, "met": None if value is None else value >= want}
    if "memory" in report:
        label, target = attention_memory_target(report["memory"])
        out[label] = target
    return out


def measure_gpt(repeats, seed, log, quick=False, bf16="auto", threads="auto",
                torch_attention="sdpa", memory=True):
    """W6: every implementation timed round-robin with the matmul roof over ``repeats`` rounds,
    each unit ``steps`` training steps of the recipe (``QUICK``'s tiny sizes with ``quick``);
    as ``bf16`` (``"auto"``, ``"on"`` or ``"off"``: ``fnnet.bench.mixed.bf16_columns``) also
    fnnet's programs under ``precision="bf16"`` and PyTorch under autocast; with ``memory`` the
    T = 2048 temporaries (T = 256 with ``quick``). Returns the report (``metrics.json``'s ``"W6"``)."""
    cfg = QUICK if quick else FULL
    arch = cfg["gpt"]
    load = {"start": list(os.getloadavg())}
    tokens, source = load_tokens(arch["vocab_size"], seed)
    with_bf16, bf16_why = mixed.bf16_columns(bf16, mixed.cpu_description(), jax.default_backend())
    makers = implementations(cfg, tokens, seed, with_bf16, torch_attention)
    tokens_per_unit = cfg["steps"] * cfg["batch"] * cfg["block"]
    count = token_flops(arch["layers"], arch["dim"], arch["vocab_size"], cfg["block"])
    out, _, _ = time_implementations(
        "W6", makers, dict.fromkeys(makers, tokens_per_unit),
        dict.fromkeys(makers, count["total"] * tokens_per_unit),
        lambda: roof_probes(tokens, False, cfg["matmul_n"], 0), repeats, threads, log,
        max(cfg["steps"] // 4, 1))
    load["end"] = list(os.getloadavg())
    step_tokens = cfg["batch"] * cfg["block"]
    for r in out["results"].values():
        r["ms_per_step"] = 1e3 * r["seconds_median"] / cfg["steps"]
        r["tokens_per_second"] = r["examples_per_second"]
    report = {"description": DESCRIPTION, "model": repr(model_for(cfg)),
              "label": "GPT " + "-".join(str(arch[k]) for k in ("layers", "heads", "dim"))
                       + (" (small)" if quick else ""),
              "architecture": arch, "batch": cfg["batch"], "block": cfg["block"],
              "steps_per_unit": cfg["steps"], "tokens_per_step": step_tokens,
              "tokens_per_unit": tokens_per_unit, "data_source": source, "speed_unit": "tok/s",
              "optimizer": (f"adamw lr {cfg['lr']:g} betas {tuple(cfg['betas'])} weight decay "
                            f"{cfg['weight_decay']:g} (embeddings too), warmup {cfg['warmup']} + "
                            f"cosine over {cfg['total_steps']}, clip_by_global_norm "
                            f"{cfg['clip']:g}"),
              "flops_per_token": count["total"], "flops_forward_per_token": count["forward"],
              "flop_terms": count["terms"], "flops_per_step": count["total"] * step_tokens,
              "torch_attention": torch_attention, "threads_setting": threads,
              "cpu": mixed.cpu_description(), "load_average": load,
              "bf16": bf16_why, **out}
    report["loss_agreement"] = loss_agreement(out["results"])
    if with_bf16:
        report["loss_agreement_bf16"] = loss_agreement(out["results"], MANUAL_BF16, AUTODIFF_BF16)
    if memory:
        log("  W6 memory: compiling one training step at T = "
            f"{cfg['memory']['t']} (lean, P-keeping, jax.grad) ...")
        report["memory"] = memory_at(cfg["memory"], seed)
    report["targets"] = targets(report)
    return report


def time_to_loss(target=TARGET_LOSS, log=print, grads="manual", seed=0, precision=None,
                 steps=None, eval_every=None):
    """Train the CLI recipe as ``fnnet train --dataset shakespeare --model gpt`` does
    (``fnnet.fit`` on a ``TokenWindows`` stream, the validation windows ``spread`` over the
    validation text, ``gpt_optimizer``), validating every ``eval_every`` steps (250): the wall
    time, compile included, from the call to the first validation loss ≤ ``target``, or
    ``"not reached in N steps"`` with the last value. Needs tiny Shakespeare
    (``FNNET_DATA_DIR``); returns ``{"skipped": why}`` without it."""
    try:
        corpus = datasets.load_shakespeare(download=False)
    except (OSError, ValueError) as e:
        return {"skipped": " ".join(str(e).split())[:300]}
    cfg = FULL
    steps = steps or cfg["total_steps"]
    every = eval_every or cfg["eval_every"]
    rec = {**recipe(cfg), "steps": steps, "warmup": min(cfg["warmup"], steps // 20)}
    block, arch = cfg["block"], cfg["gpt"]
    model = fnnet.gpt(len(corpus.vocab), block, arch["layers"], arch["heads"], arch["dim"])
    validation = train_text.spread(*train_text.windows(corpus.validation, block),
                                   train_text.EVAL_WINDOWS)
    evals, load = [], {"start": list(os.getloadavg())}
    started = time.perf_counter()

    def record(epoch_record, state, history):
        evals.append({"step": epoch_record.epoch * every,
                      "seconds": time.perf_counter() - started,
                      "train_loss": float(epoch_record.loss),
                      "val_loss": float(epoch_record.val_loss)})
        log(f"  W6 time to loss ({grads}): step {evals[-1]['step']}: val "
            f"{evals[-1]['val_loss']:.4f} at {evals[-1]['seconds']:.1f} s")

    _, history = fnnet.fit(
        model=model, loss="cross-entropy", optimizer=train_text.gpt_optimizer(rec),
        train=fnnet.TokenWindows(corpus.train, block, every), epochs=steps // every,
        batch_size=cfg["batch"], key=jax.random.PRNGKey(seed), validation=validation,
        grads=grads, progress=False, precision=precision, callbacks=[record])
    total = time.perf_counter() - started
    load["end"] = list(os.getloadavg())
    reached = next((e for e in evals if e["val_loss"] <= target), None)
    out = {"target": target, "grads": grads, "precision": precision or "f32", "steps": steps,
           "eval_every": every, "validation_windows": len(validation[0]),
           "evaluations": evals, "total_seconds": total,
           "compile_seconds": history["compile_seconds"], "final_val_loss": evals[-1]["val_loss"],
           "load_average": load}
    if reached:
        out.update(reached=True, seconds_to_target=reached["seconds"],
                   step_reached=reached["step"], val_loss_reached=reached["val_loss"])
    else:
        out.update(reached=False, result=f"not reached in {steps} steps (final validation loss "
                                         f"{evals[-1]['val_loss']:.4f})")
    return out


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def print_report(report, log=print):
    """The table: per implementation ms/step, tokens/s, GFLOP/s and fraction of the roof, the
    paired ratios to fnnet manual; then the loss agreement, the memory and the targets."""
    res, paired = report["results"], report["paired_ratios"]
    load = report["load_average"]
    log(f"W6 {report['label']}: {report['description']}; {report['tokens_per_step']} tokens a "
        f"step, {report['steps_per_unit']} steps a unit; data {report['data_source']}; "
        f"{report['flops_per_token'] / 1e6:.2f} MFLOP/token; matmul roof "
        f"{report['roof_gflops']:.0f} GFLOP/s; load average {load['start'][0]:.2f} -> "
        f"{load['end'][0]:.2f}")
    log(f"  {'implementation':<22} {'ms/step':>8} {'tok/s':>9} {'GFLOP/s':>8} {'of roof':>8} "
        f"{'manual is x faster (paired)':>28}")
    for impl, r in res.items():
        vs = None if impl == MANUAL else paired.get(MANUAL, {}).get(impl)
        log(f"  {impl:<22} {r['ms_per_step']:>8.2f} {r['tokens_per_second']:>9,.0f} "
            f"{r['gflops']:>8.1f} {r['fraction_of_roof_paired']:>8.2f} {_fmt(vs, '>28.3f')}")
    if MANUAL_BF16 in res:
        log(f"  bf16: fnnet manual bf16 vs fnnet manual {paired[MANUAL_BF16][MANUAL]:.3f}x, vs "
            f"jax.grad bf16 {paired[MANUAL_BF16][AUTODIFF_BF16]:.3f}x"
            + (f", vs torch autocast {paired[MANUAL_BF16][TORCH_BF16]:.3f}x"
               if TORCH_BF16 in paired[MANUAL_BF16] else ""))
    for impl, why in report.get("skipped", {}).items():
        log(f"  {impl}: skipped, {why}")
    agree = report.get("loss_agreement")
    if agree:
        log(f"  loss after {agree['units']} units: manual {agree[MANUAL]:.6f}, autodiff "
            f"{agree[AUTODIFF]:.6f} (largest difference over the units "
            f"{agree['max_abs_diff']:.1e})")
    if report["bf16"] != "timed":
        log(f"  bf16 columns {report['bf16']}")
    if "memory" in report:
        log("  " + attention_memory_line(report["memory"]))
    for label, t in report["targets"].items():
        state = "not measured" if t["met"] is None else "met" if t["met"] else "NOT met"
        log(f"  target {label}: {_fmt(t['value'], '.3f')} ({state})")
    for key in ("time_to_loss", "time_to_loss_autodiff"):
        ttl = report.get(key)
        if not ttl:
            continue
        if "skipped" in ttl:
            log(f"  {key}: skipped, {ttl['skipped']}")
        elif ttl["reached"]:
            log(f"  time to validation loss {ttl['target']} ({ttl['grads']}): "
                f"{ttl['seconds_to_target']:.1f} s (step {ttl['step_reached']}, "
                f"{ttl['val_loss_reached']:.4f}; compile {ttl['compile_seconds']:.1f} s; load "
                f"{ttl['load_average']['start'][0]:.2f})")
        else:
            log(f"  time to validation loss {ttl['target']} ({ttl['grads']}): {ttl['result']}, "
                f"{ttl['total_seconds']:.1f} s")


def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv=None):
    """``python -m fnnet.bench.gpt``: W6, its table, ``metrics.json`` in ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m fnnet.bench.gpt",
                                     description="W6: nanoGPT's CPU recipe, fnnet's "
                                                 "hand-derived backward against jax.grad and "
                                                 "PyTorch eager")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds (tests)")
    parser.add_argument("--repeats", type=int, help="timed rounds (default: 10, quick 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=folder, default=Path("runs/benchmark_gpt"))
    bf16 = parser.add_mutually_exclusive_group()
    bf16.add_argument("--bf16", dest="bf16", action="store_const", const="on", default="auto",
                      help="time the bf16 columns even on a CPU without bfloat16 matrix units "
                           "(left out there by default: emulated, and slow)")
    bf16.add_argument("--no-bf16", dest="bf16", action="store_const", const="off",
                      help="leave the bf16 columns out")
    parser.add_argument("--no-memory", action="store_true", help="skip the T = 2048 temporaries")
    parser.add_argument("--threads", default="auto",
                        help="PyTorch's threads: 'auto' (1 or all cores, the faster on a "
                             "probe) or a count")
    parser.add_argument("--torch-attention", choices=("sdpa", "explicit"), default="sdpa")
    parser.add_argument("--time-to-loss", choices=("manual", "autodiff", "both", "none"),
                        help="train the recipe to validation loss 1.88 (default: manual; "
                             "none with --quick)")
    args = parser.parse_args(argv)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    repeats = args.repeats or (QUICK if args.quick else FULL)["repeats"]
    report = measure_gpt(repeats, args.seed, log, quick=args.quick, bf16=args.bf16,
                         threads=args.threads, torch_attention=args.torch_attention,
                         memory=not args.no_memory)
    which = args.time_to_loss or ("none" if args.quick else "manual")
    runs = {"both": ("manual", "autodiff"), "none": ()}.get(which, (which,))
    for grads in runs:
        key = "time_to_loss" if grads == "manual" else f"time_to_loss_{grads}"
        report[key] = time_to_loss(TARGET_LOSS, log, grads, args.seed)
    report["jax"] = {"version": jax.__version__, "devices": [str(d) for d in jax.devices()]}
    report["torch"] = baselines.torch_version()
    print_report(report)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "metrics.json", _json_ready({"W6": report}))
    print(f"wrote {args.out / 'metrics.json'}")
    return report


if __name__ == "__main__":
    main()
