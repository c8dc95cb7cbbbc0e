"""Where an epoch's time goes, and which matrix products a program does: optimized HLO parsed.

``dot_signatures`` lists a compiled program's matrix products (shapes, layouts and dimension
numbers), so that two programs, fnnet's hand-derived backward and ``jax.grad``'s, can be compared
product by product. ``profile_epoch`` (CPU only) compiles one epoch with XLA:CPU's per-operation
trace events on, traces it with ``jax.profiler``, sums each HLO operation's time and splits it
into matrix products (a ``dot``, or a fusion holding one) and the rest, next to the untraced epoch
time, so the time between operations shows too.
"""

from __future__ import annotations

import gzip
import json
import re
import tempfile
import time
from pathlib import Path

import jax

import fnnet

from .harness import fit_epoch, median, time_calls, train_step_flops

_NOT_RUN = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast"}


def parse_hlo(hlo_text):
    """``({computation: [(name, opcode, shape, operands, called computations, attributes)]},
    entry name)`` of an optimized HLO module (attributes without the metadata)."""
    comps, current, entry = {}, None, None
    for line in hlo_text.splitlines():
        head = re.match(r"^(ENTRY )?%(\S+) .*\{$", line)
        if head:
            current = head.group(2)
            comps[current] = []
            entry = current if head.group(1) else entry
            continue
        inst = re.match(r"^\s+(?:ROOT )?%(\S+) = (.*?) ([\w-]+)\((.*?)\)(.*)$", line)
        if inst and current is not None:
            operands = re.findall(r"%([\w.-]+)", inst.group(4))
            called = re.findall(r"(?:calls|body|condition|to_apply|branch_computations)=\{?%([\w.-]+)",
                                inst.group(5))
            attributes = re.split(r",\s*(?:metadata|backend_config)=", inst.group(5))[0].strip(", ")
            comps[current].append((inst.group(1), inst.group(3), inst.group(2), operands, called,
                                   attributes))
    return comps, entry


def dot_ops(hlo_text):
    """``(ops, dots)``: the names of the operations an optimized HLO module runs (the instructions
    of its entry computation and of the while loops, calls and branches it reaches, but for
    parameters, constants, tuples and bitcasts) and of those that are matrix products: a ``dot``,
    or a fusion that holds one, however deeply nested."""
    comps, entry = parse_hlo(hlo_text)

    def holds_dot(comp, seen=()):
        return any(op == "dot" or any(c not in seen and holds_dot(c, seen + (comp,)) for c in called)
                   for _, op, _, _, called, _ in comps.get(comp, ()))

    ops, dots, stack, visited = set(), set(), [entry], set()
    while stack:
        comp = stack.pop()
        if comp in visited or comp not in comps:
            continue
        visited.add(comp)
        for name, op, _, _, called, _ in comps[comp]:
            if op in ("while", "call", "conditional"):
                stack.extend(called)
            elif op not in _NOT_RUN:
                ops.add(name)
                if op == "dot" or (op in ("fusion", "custom-call") and any(map(holds_dot, called))):
                    dots.add(name)
    return ops, dots


def dot_signatures(hlo_text):
    """The matrix products of an optimized HLO module, fused or not, each as its operands' and
    result's shapes and layouts and its dimension numbers, sorted: two programs with equal lists
    do the same matrix products on the same layouts."""
    comps, _ = parse_hlo(hlo_text)
    shape = {inst[0]: inst[2] for body in comps.values() for inst in body}
    return sorted(f"{sh} = dot({', '.join(str(shape.get(o)) for o in operands)}) {attributes}"
                  for body in comps.values() for _, op, sh, operands, _, attributes in body
                  if op == "dot")


def _trace(run):
    """``(wall seconds, trace events)`` of ``run()`` under ``jax.profiler`` (``None`` for the
    events when no perfetto trace was written)."""
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            run()
        wall = time.perf_counter() - t
        traces = sorted(Path(tmp).rglob("*.trace.json.gz"))
        if not traces:
            return wall, None
        with gzip.open(traces[-1], "rt") as f:
            events = json.load(f)
    return wall, events["traceEvents"] if isinstance(events, dict) else events


def _per_op(events, ops):
    """``({op: seconds}, first start, last end)`` (microseconds) over the complete events of
    ``ops``."""
    per_op, first, last = {}, float("inf"), float("-inf")
    for e in events:
        if e.get("ph") == "X" and e.get("name") in ops:
            per_op[e["name"]] = per_op.get(e["name"], 0.0) + e.get("dur", 0) / 1e6
            first, last = min(first, e["ts"]), max(last, e["ts"] + e.get("dur", 0))
    return per_op, first, last


def profile_epoch(cfg, x, y, seed, log, top=8):
    """One fnnet epoch of ``cfg`` traced by ``jax.profiler`` with XLA:CPU's per-operation events on
    (``xla_cpu_enable_xprof_traceme``): the time in matrix products and in everything else, and the
    ``top`` operations. CPU only (a GPU's trace names kernels, not HLO operations)."""
    platform = jax.devices()[0].platform
    if platform != "cpu":
        return {"skipped": "the per-operation profile reads XLA:CPU's trace; not on " + platform}
    xd, yd = fnnet.to_device(x, y)
    program, state, _ = fit_epoch(cfg, xd, yd, seed)
    compiled = jax.jit(program).lower(state, xd, yd).compile({"xla_cpu_enable_xprof_traceme": True})
    ops, dots = dot_ops(compiled.as_text())
    run = lambda: jax.block_until_ready(compiled(state, xd, yd))
    untraced = median(time_calls(run, 3, warmup=1))
    log("  profile: one W3 epoch under jax.profiler ...")
    wall, events = _trace(run)
    if events is None:
        return {"skipped": "jax.profiler wrote no perfetto trace"}
    per_op, first, last = _per_op(events, ops)
    if not per_op:
        return {"skipped": "the trace holds no per-operation events"}
    in_dots = sum(v for k, v in per_op.items() if k in dots)
    if in_dots <= 0:
        return {"skipped": "no matrix product found among the traced operations"}
    flops = train_step_flops(cfg["sizes"], cfg["batch"]) * (len(x) // cfg["batch"])
    ranked = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
    return {"epoch_seconds_traced": wall, "epoch_seconds": untraced,
            "traced_span_seconds": (last - first) / 1e6, "ops_seconds": sum(per_op.values()),
            "matrix_products_seconds": in_dots, "other_seconds": sum(per_op.values()) - in_dots,
            "matrix_products_gflops": flops / in_dots / 1e9,
            "top": [{"op": k, "seconds": v, "matrix_product": k in dots} for k, v in ranked]}
