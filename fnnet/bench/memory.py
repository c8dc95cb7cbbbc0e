"""Peak memory: a separate process trains one workload with fnnet as ``fit`` does and reports its
RSS, stage by stage, so that nothing else the benchmark did counts.

The stages: start the runtime, load the data, put it on the device, compile, train one epoch. The
RSS is set next to the sum of what must be resident: the data (X and labels), params (twice:
``fit`` keeps an epoch's input params to replay it should the loss go non-finite), gradients,
optimizer state and one batch's activations. On a CPU the device array is the host array itself
(``fnnet.to_device`` of a 64-byte-aligned array), so the data are held once. The compiler's freed
heap is handed back to the OS after compiling (glibc ``malloc_trim``), so that the RSS counts live
memory. ``resource.getrusage``'s ``ru_maxrss`` is reported too; on Linux a child inherits its
parent's value at fork, so the process's own peak is read from ``VmHWM`` (reset per stage through
``/proc/self/clear_refs``), falling back to ``ru_maxrss`` where that is unavailable.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

import fnnet

from .harness import fit_epoch, load_data

STAGES = ("imports", "start the runtime", "load data (host)", "data to device", "compile",
          "train one epoch")


def tree_bytes(sizes, itemsize=4):
    """Bytes of an MLP's weights and biases for layer ``sizes``."""
    return sum((a * b + b) * itemsize for a, b in zip(sizes[:-1], sizes[1:]))


def proc_status(field):
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in bytes, or ``None``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak():
    """Reset the kernel's peak-RSS mark ``VmHWM`` (Linux: ``5`` to ``/proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def return_free_heap():
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim(0)``); True if it ran.
    Without it the RSS after compiling counts memory the compiler has already freed."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def rss_probe(sizes, batch, lr, n, seed):
    """Run in a fresh process: fnnet trains one epoch as ``fit`` does (``fnnet.to_device``, the
    epoch program without the per-step copy, its inputs kept). For each stage (``STAGES``) the RSS
    after it and the peak during it (``VmHWM``, reset before the stage) are noted; prints one JSON
    line."""
    # Linux keeps ru_maxrss across fork and exec: a child starts with its parent's peak (here the
    # benchmark's, data and PyTorch included). Its own peak is tracked with VmHWM, reset per stage.
    rusage_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stages = {"imports": {"rss": proc_status("VmRSS")}}
    resettable = reset_peak()

    def note(stage):
        stages[stage] = {"rss": proc_status("VmRSS"), "peak": proc_status("VmHWM") if resettable else None}
        reset_peak()

    jax.block_until_ready(jax.jit(lambda a: a + 1)(jnp.zeros(())))
    note("start the runtime")
    x, y, source = load_data(n, seed)
    note("load data (host)")
    xd, yd = fnnet.to_device(x, y)
    jax.block_until_ready((xd, yd))
    try:
        shared = xd.unsafe_buffer_pointer() == x.ctypes.data
    except Exception:  # not every backend exposes the pointer
        shared = None
    note("data to device")
    program, state, _ = fit_epoch({"sizes": sizes, "batch": batch, "lr": lr}, xd, yd, seed)
    compiled = jax.jit(program).lower(state, xd, yd).compile()
    trimmed = return_free_heap()
    note("compile")
    _, stats = compiled(state, xd, yd)
    jax.device_get(stats)
    note("train one epoch")
    rusage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peaks = [v.get("peak") or v["rss"] for v in stages.values()]
    print(json.dumps({"stages": stages, "peak": max(peaks) if resettable else rusage,
                      "getrusage_maxrss": rusage, "getrusage_maxrss_at_start": rusage_start,
                      "source": source, "data_shared_with_host": shared, "heap_trimmed": trimmed,
                      "platform": jax.devices()[0].platform}))


def run_probe(cfg, n, seed):
    """``rss_probe`` for ``cfg`` in a child process: its JSON, or ``{"error": ...}``."""
    code = (f"from fnnet.bench.memory import rss_probe; "
            f"rss_probe({tuple(cfg['sizes'])!r}, {cfg['batch']!r}, {cfg['lr']!r}, {n!r}, {seed!r})")
    # the folder fnnet is imported from, so that the child finds the same fnnet (installed or not)
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=path),
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def needed_bytes(sizes, batch, n):
    """What must be resident to train an MLP of ``sizes`` on ``n`` examples in batches of
    ``batch``, by part, in bytes (float32)."""
    params = tree_bytes(sizes)
    # fit keeps an epoch's input params to replay it should its loss go non-finite: two sets.
    return {"data": n * sizes[0] * 4 + n * 4, "params (the epoch's input and output)": 2 * params,
            "gradients": params, "optimizer_state": 8,
            "batch_activations": batch * (sizes[0] + 2 * sum(sizes[1:])) * 4}  # X_B, Z_l and A_l


def measure_peak_rss(cfg, n, seed, log):
    """Peak RSS of fnnet training ``cfg`` in a child process, against what has to be resident."""
    log("  peak memory: W3 in a separate process ...")
    child = run_probe(cfg, n, seed)
    if "error" in child:
        return child
    stages = child["stages"]
    expected = needed_bytes(cfg["sizes"], cfg["batch"], n)
    needed = sum(expected.values())
    base = stages["start the runtime"]["rss"]
    out = {"peak_rss": child["peak"], "getrusage_maxrss": child["getrusage_maxrss"],
           "getrusage_maxrss_at_start": child["getrusage_maxrss_at_start"],
           "stages": stages, "expected": expected, "expected_total": needed, "runtime": base,
           "data_shared_with_host": child["data_shared_with_host"], "platform": child["platform"],
           "heap_trimmed": child["heap_trimmed"],
           "peak_rss_over_runtime_plus_needed": child["peak"] / (base + needed),
           "compiled_program_resident": stages["compile"]["rss"] - stages["data to device"]["rss"]}
    train = stages["train one epoch"]
    if train["peak"] is not None:
        out["training_peak"] = train["peak"]
        out["training_peak_above_compiled"] = train["peak"] - stages["compile"]["rss"]
        # what the epoch allocates: its output params, the gradients, the state and activations
        # (the data and its input params are resident before it starts)
        out["epoch_needs"] = needed - expected["data"] - tree_bytes(cfg["sizes"])
        out["training_peak_above_compiled_over_epoch_needs"] = (
            out["training_peak_above_compiled"] / out["epoch_needs"])
        # all that training holds at its peak, the python + jax runtime and the compiled code aside
        out["training_holds"] = train["peak"] - base - out["compiled_program_resident"]
        out["training_holds_over_needed"] = out["training_holds"] / needed
    return out
