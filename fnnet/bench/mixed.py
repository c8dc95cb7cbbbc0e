"""Mixed precision in the benchmark: the CPU's bfloat16 units, the bf16 targets, and the matrix
products of fnnet's two bf16 programs side by side.

Implementations timed beside the float32 ones where the CPU has bfloat16 matrix units or fnnet
runs on an accelerator (``bf16_columns``; ``--bf16`` times them on any CPU, ``--no-bf16`` leaves
them out):

    fnnet manual bf16     fnnet.fit's program under precision="bf16": every product of the
                          hand-derived backward reads bfloat16 and accumulates in float32, dYᵀ
                          written out row-major (fnnet.precision)
    fnnet autodiff bf16   jax.grad of the same bf16 forward
    torch autocast bf16   PyTorch eager under torch.autocast("cpu", dtype=torch.bfloat16)

The products table shows why the two fnnet programs differ: XLA:CPU upcasts to float32 a
bfloat16 product whose left operand is contracted over its first axis (the operand upcaster),
which is what ``jax.grad``'s transposed products are; fnnet's manual backward writes ``dYᵀ`` out
first, so all of its products stay in bfloat16.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

#: The processor features worth naming (as /proc/cpuinfo spells them).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
             "neon", "sve", "bf16")
#: Features that give a CPU bfloat16 matrix units: AMX tiles, AVX-512's dot products, Arm's BF16.
BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")

OVER_F32 = 1.5
OVER_AUTODIFF = 1.5
OVER_AUTOCAST = 1.0
W1_FLOOR = 3.0


def cpu_description():
    """``{"model", "machine", "flags", "cores", "bf16_units"}`` of this machine's processor: the
    model name and vector features of ``/proc/cpuinfo`` where it exists (else
    ``platform.processor()``), and which of them give bfloat16 matrix units."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() in ("flags", "Features") and not flags:
            present = set(value.split())
            flags = [flag for flag in CPU_FLAGS if flag in present]
    return {"model": model, "machine": platform.machine(), "flags": flags,
            "cores": os.cpu_count(), "bf16_units": [f for f in flags if f in BF16_FLAGS]}


def bf16_columns(choice, cpu, platform="cpu"):
    """``(timed, why)``: whether the benchmark times its bf16 columns (fnnet's programs under
    ``precision="bf16"``, PyTorch under autocast), and the reason in words. ``choice`` is the
    user's: ``"on"`` (``--bf16``), ``"off"`` (``--no-bf16``) or ``"auto"``, which times them on
    an accelerator or a CPU with bfloat16 matrix units (``cpu["bf16_units"]``) and leaves them out
    elsewhere: without the units XLA and PyTorch emulate bfloat16, usually slower than float32,
    and the default benchmark would spend most of its time there."""
    if choice not in ("auto", "on", "off"):
        raise ValueError(f"bf16 columns: expected 'auto', 'on' or 'off', got {choice!r}")
    if choice == "off":
        return False, "off (--no-bf16)"
    native = platform != "cpu" or bool(cpu["bf16_units"])
    if choice == "on":
        return True, "timed" + ("" if native else " (--bf16; emulated: no bfloat16 matrix units "
                                                  "on this CPU)")
    if native:
        return True, "timed"
    return False, (f"not timed: this CPU ({cpu['model']}) has no bfloat16 matrix units, so "
                   f"bf16 would be emulated (usually slower than float32); --bf16 times it "
                   f"anyway")


def describe_cpu(cpu):
    """One line: the model, its features, and whether it has bfloat16 matrix units."""
    units = (f"bfloat16 matrix units: {', '.join(cpu['bf16_units'])}" if cpu["bf16_units"]
             else "no bfloat16 matrix units (bf16 products are emulated; expect no speed-up)")
    flags = ", ".join(cpu["flags"]) or "none of " + ", ".join(CPU_FLAGS)
    return f"CPU: {cpu['model']} ({cpu['machine']}: {flags}), {cpu['cores']} cores; {units}"


def _paired(workloads, w, a, b):
    r = workloads.get(w, {}).get("paired_ratios", {}).get(a, {}).get(b)
    return None if r is None else float(r)


def targets(workloads, cpu):
    """The bf16 targets: W3 bf16 >= 1.5x fnnet float32 and >= 1.5x jax.grad under bf16, >= 1.0x
    PyTorch autocast; W4 (the CNN) bf16 >= 1.0x PyTorch autocast; W1 in bf16 within 3x of the
    single-read floor. Judged (``met``) only where the CPU has bfloat16 matrix units; elsewhere
    reported with ``met`` ``None`` and a note."""
    out = {}
    note = None if cpu["bf16_units"] else "no bfloat16 matrix units on this CPU"
    checks = (("W3", "fnnet manual", OVER_F32, "fnnet manual (float32)"),
              ("W3", "fnnet autodiff bf16", OVER_AUTODIFF, "jax.grad under bf16"),
              ("W3", "torch autocast bf16", OVER_AUTOCAST, "torch autocast bf16"),
              ("W4", "torch autocast bf16", OVER_AUTOCAST, "torch autocast bf16"))
    for w, other, want, label in checks:
        if w in workloads and "fnnet manual bf16" in workloads[w]["results"]:
            value = _paired(workloads, w, "fnnet manual bf16", other)
            met = None if value is None or note else value >= want
            t = {"value": value, "met": met}
            if note:
                t["note"] = note
            out[f"{w}: fnnet bf16 >= {want:.1f}x {label}"] = t
    floor = workloads.get("W1", {}).get("floor", {})
    key = next((k for k in ("bf16_chunked_over_memory_floor", "bf16_unchunked_over_memory_floor")
                if k in floor), None)
    if key:
        v = floor[key]
        t = {"value": v, "met": None if note else v <= W1_FLOOR}
        if note:
            t["note"] = note
        out[f"W1: fnnet bf16 within {W1_FLOOR:g}x of the single-read floor"] = t
    return out


def _operand_types(signature):
    """``"bf16 x bf16 -> f32"`` of a product signature from ``fnnet.bench.profile``."""
    result = re.match(r"(\w+)\[", signature).group(1)
    operands = re.findall(r"(\w+)\[[^\]]*\]\{[^}]*\}", signature.split("dot(", 1)[1])
    return f"{' x '.join(operands[:2])} -> {result}"


def print_products(name, w, log):
    """fnnet's manual and autodiff bf16 programs' matrix products, side by side: shapes, operand
    and result types, contracted dimensions."""
    results = w.get("results", {})
    if "fnnet manual bf16" not in results or "fnnet autodiff bf16" not in results:
        return
    log(f"{name} under bf16: the matrix products of each compiled program (XLA:CPU, optimised):")
    for impl in ("fnnet manual bf16", "fnnet autodiff bf16"):
        products = results[impl]["matrix_products"]
        upcast = sum(1 for p in products if "bf16" not in p.split("dot(", 1)[1])
        log(f"  {impl}: {len(products)} products, {upcast} of them on float32 inputs")
        for p in products:
            dims = re.findall(r"(lhs|rhs)_contracting_dims=\{(\d+)\}", p)
            log(f"    {p.split(' = ')[0]:<22} {_operand_types(p):<20} contracting "
                + ", ".join(f"{side} {d}" for side, d in dims))
