"""One workload: every implementation set up, then timed in rounds against the machine's roofs.

Each round runs one unit of each implementation (one iteration for full batch, one epoch for
minibatches, a fixed number of steps for W4, ``fnnet.bench.cnn``) and the matmul roof (for full
batch also a read of X and of a large array), in an order that rotates from round to round, so
that a shared machine's changing load hits all of them alike. Each figure is the median over the
rounds; ratios are given two ways, of the medians (``ratios``) and paired, the median over rounds
of the ratio within a round (``paired_ratios``, on seconds per example, so that units of different
lengths compare).

W1's floor: a full-batch step has to read every one of X's float32 pixels at least once; streamed
at the read bandwidth measured in the same rounds that takes ``bytes(X) / bandwidth``, and no
implementation can iterate faster. Unchunked, X is read twice per step (the forward ``X W1ᵀ`` and
the backward ``dZ1ᵀ X``); ``fnnet.devices.parallel.chunked`` runs the forward and backward chunk by chunk
while the chunk is in cache, so X comes from memory once. Where the step's FLOPs take longer at
the matmul roof than the read does, the step is compute-bound and the compute floor
``FLOPs / roof`` is the binding one; both are reported.
"""

from __future__ import annotations

import time

import jax
import numpy as np

import fnnet
from fnnet.devices import parallel

from . import baselines
from .harness import (
    BASELINES,
    BF16,
    CHUNKED,
    DESCRIPTION,
    UNCHUNKED,
    bandwidth_array,
    baseline_threads,
    fit_epoch,
    matmul_unit,
    median,
    paired,
    rate,
    read_unit,
    seconds,
    set_threads,
    time_calls,
    train_step_flops,
)
from .profile import dot_ops, dot_signatures


def fnnet_runner(cfg, x, y, seed, grads="manual", chunk_size="auto", precision="f32"):
    """The program ``fnnet.fit`` runs (``fit_epoch``), the data put on the device by
    ``fnnet.to_device`` (integer ``x``: token ids), compiled once (its compile time, wall and
    CPU, and its matrix products noted), the epoch's stats fetched after each call (``first_loss``
    the mean loss of the first call's steps, ``last_loss`` of the latest's). Returns ``(unit,
    info)``."""
    xd, yd = fnnet.to_device(x, y, ids=np.issubdtype(np.asarray(x).dtype, np.integer))
    program, state, chunk = fit_epoch(cfg, xd, yd, seed, grads, chunk_size, precision)
    t, cpu = time.perf_counter(), time.process_time()
    compiled = jax.jit(program).lower(state, xd, yd).compile()
    info = {"compile_seconds": time.perf_counter() - t,
            "compile_cpu_seconds": time.process_time() - cpu, "chunk_size": chunk}
    hlo = compiled.as_text()
    info["matrix_products"] = dot_signatures(hlo)
    info["hlo_operations"] = len(dot_ops(hlo)[0])
    info["hlo_convolutions"] = hlo.count(" convolution(")
    steps = 1 if cfg["batch"] is None else len(x) // cfg["batch"]
    current = [state]

    def unit():
        current[0], stats = compiled(current[0], xd, yd)
        info["last_loss"] = float(jax.device_get(stats)["loss_sum"]) / steps

    unit()
    info["first_loss"] = info["last_loss"]
    return unit, info


def implementations(cfg, x, y, seed, bf16=True):
    """``{name: make}``: ``make()`` sets the implementation up and returns ``(unit, info)``;
    with ``bf16`` also fnnet's two programs under ``precision="bf16"`` and PyTorch under
    ``torch.autocast`` (``BF16``)."""
    makers = {
        "fnnet manual": lambda: fnnet_runner(cfg, x, y, seed, "manual"),
        "fnnet autodiff": lambda: fnnet_runner(cfg, x, y, seed, "autodiff"),
        **{impl: (lambda run=run: run(cfg, x, y, seed)) for impl, run in baselines.RUNNERS.items()
           if bf16 or impl not in BF16},
    }
    if bf16:
        makers["fnnet manual bf16"] = lambda: fnnet_runner(cfg, x, y, seed, "manual",
                                                           precision="bf16")
        makers["fnnet autodiff bf16"] = lambda: fnnet_runner(cfg, x, y, seed, "autodiff",
                                                             precision="bf16")
    if cfg["batch"] is None:  # the full batch both ways: fit's "auto" choice and the other
        if parallel.resolve_chunk_size("auto", len(x), None, x) is None:
            rows = chunk_rows(x)
            makers[CHUNKED] = lambda: fnnet_runner(cfg, x, y, seed, "manual", chunk_size=rows)
        else:
            makers[UNCHUNKED] = lambda: fnnet_runner(cfg, x, y, seed, "manual", chunk_size=None)
    return makers


def chunk_rows(x):
    """The rows of a chunk of the full batch ``x`` where ``fit`` would chunk it
    (``fnnet.devices.parallel.auto_chunk_size``), a quarter of it (a multiple of 8) for a batch
    smaller than one chunk."""
    n = len(x)
    rows = parallel.auto_chunk_size(n, x.shape[1], np.dtype(x.dtype).itemsize, min_rows=0)
    return rows or max(8, n // 4 // 8 * 8)


def set_up(name, makers, probe_steps, threads_setting, log):
    """Every implementation of ``makers`` (``{name: make}``) set up and warmed up, the baselines'
    thread counts chosen on a probe of ``probe_steps`` steps (``None``: one full-batch iteration):
    returns ``(units, infos, skipped, threads)``."""
    units, infos, skipped, threads = {}, {}, {}, {}
    for impl, make in makers.items():
        if impl.startswith("torch") and not baselines.torch_available():
            skipped[impl] = "torch is not installed (pip install torch, or the 'bench' extra)"
            log(f"  {name} {impl}: skipped, {skipped[impl]}")
            continue
        log(f"  {name} {impl}: setup and warm-up ...")
        unit, info = make()
        units[impl], infos[impl] = unit, info
        if impl in BASELINES:
            probe = unit if probe_steps is None else (lambda unit=unit: unit(probe_steps))
            count = baseline_threads(impl, probe, threads_setting, info, log)
            if count is not None:
                threads[impl] = count
    return units, infos, skipped, threads


def roof_probes(x, full_batch, matmul_n, bandwidth_mib):
    """``{name: (unit, amount)}``: the matmul roof, and for full batch the reads of X and of a
    large array, each warmed up."""
    probes = {"matmul": matmul_unit(matmul_n)}
    if full_batch:
        probes["read X"] = read_unit(x)
        probes["read array"] = read_unit(bandwidth_array(bandwidth_mib))
    for unit, _ in probes.values():
        time_calls(unit, 0, warmup=2)
    return probes


def timed_rounds(name, units, probes, threads, repeats, log):
    """``{name: [seconds per round]}`` for every unit and probe, over ``repeats`` rounds whose
    order rotates, so that no implementation always goes first."""
    order = [*units.items(), *((p, u) for p, (u, _) in probes.items())]
    times = {impl: [] for impl, _ in order}
    for r in range(repeats):
        log(f"  {name} round {r + 1}/{repeats}")
        shift = r % len(order)
        for impl, unit in order[shift:] + order[:shift]:
            if impl in threads:
                set_threads(impl, threads[impl])
            times[impl].append(seconds(unit))
    return times


def results(units, infos, threads, times, matmul_flops, flops, examples, full_batch):
    """Per implementation: its times, speed, FLOP rate and fraction of the roof (of the medians,
    and paired within rounds), with what its runner noted. ``flops`` and ``examples`` map each
    implementation to its unit's FLOPs and examples (W4 times autodiff on fewer steps)."""
    roof = rate(matmul_flops, times["matmul"])["median"]
    out = {}
    for impl in units:
        ts, f = times[impl], flops[impl]
        sec = median(ts)
        res = {"seconds_median": sec, "seconds_min": min(ts), "seconds_all": ts,
               "examples_per_unit": examples[impl], "flops_per_unit": f,
               "examples_per_second": examples[impl] / sec, "gflops": f / sec / 1e9,
               "fraction_of_roof": f / sec / 1e9 / roof,
               "fraction_of_roof_paired": median([f / t / (matmul_flops / m)
                                                  for t, m in zip(ts, times["matmul"])]),
               **infos[impl]}
        if full_batch:
            res["ms_per_iteration"] = 1e3 * sec
        if impl in threads:
            res["threads"] = threads[impl]
        out[impl] = res
    return out


def manual_vs_autodiff(res, per_example, suffix=""):
    """Whether fnnet's two programs (``suffix``: of a precision, ``" bf16"``) do the same matrix
    products, and their paired ratio's range (``per_example``: each round's seconds per
    example)."""
    manual, autodiff = "fnnet manual" + suffix, "fnnet autodiff" + suffix
    a, b = res[manual], res[autodiff]
    within = [tb / ta for ta, tb in zip(per_example[manual], per_example[autodiff])]
    return {"same_matrix_products": a["matrix_products"] == b["matrix_products"],
            "matrix_products": len(a["matrix_products"]),
            "hlo_operations": [a["hlo_operations"], b["hlo_operations"]],
            "hlo_convolutions": [a["hlo_convolutions"], b["hlo_convolutions"]],
            "paired_ratio_range": [min(within), max(within)]}


def time_implementations(name, makers, examples, flops, make_probes, repeats, threads_setting, log,
                         probe_steps):
    """Set up ``makers``, then time them round-robin against ``make_probes()``'s roofs (the
    baselines' threads chosen on ``probe_steps`` steps, ``None`` for full batch): returns ``(out,
    times, probes)``, ``out`` the workload's results, ratios (of the medians, and paired within
    rounds on seconds per example, ``examples`` a unit's per implementation) and skipped ones."""
    units, infos, skipped, threads = set_up(name, makers, probe_steps, threads_setting, log)
    probes = make_probes()
    times = timed_rounds(name, units, probes, threads, repeats, log)
    res = results(units, infos, threads, times, probes["matmul"][1], flops, examples,
                  probe_steps is None)
    roof = rate(probes["matmul"][1], times["matmul"])
    speed = {impl: r["examples_per_second"] for impl, r in res.items()}
    per_example = {impl: [t / examples[impl] for t in times[impl]] for impl in units}
    out = {"roof_gflops": roof["median"], "roof_gflops_best": roof["best"],
           "roof_seconds_all": times["matmul"], "results": res,
           "ratios": {a: {b: speed[a] / speed[b] for b in speed if b != a} for a in speed},
           "paired_ratios": {a: {b: paired(per_example[a], per_example[b]) for b in units if b != a}
                             for a in units},
           "skipped": skipped}
    if "fnnet manual" in res and "fnnet autodiff" in res:
        out["manual_vs_autodiff"] = manual_vs_autodiff(res, per_example)
    if "fnnet manual bf16" in res and "fnnet autodiff bf16" in res:
        out["manual_vs_autodiff_bf16"] = manual_vs_autodiff(res, per_example, " bf16")
    return out, times, probes


def measure_workload(name, cfg, x, y, repeats, seed, threads_setting, log, matmul_n, bandwidth_mib,
                     bf16=True):
    """Every implementation on one MLP workload (W1–W3), timed round-robin, and in every round the
    matmul roof too (and, for full batch, the read of X and of a large array), so that each figure
    and the roof it is compared with come from the same minutes of a shared machine's load."""
    full_batch = cfg["batch"] is None
    n = len(x)
    unit_examples = n if full_batch else (n // cfg["batch"]) * cfg["batch"]
    steps = 1 if full_batch else n // cfg["batch"]
    flops = train_step_flops(cfg["sizes"], n if full_batch else cfg["batch"]) * steps
    makers = implementations(cfg, x, y, seed, bf16)
    out, times, probes = time_implementations(
        name, makers, dict.fromkeys(makers, unit_examples), dict.fromkeys(makers, flops),
        lambda: roof_probes(x, full_batch, matmul_n, bandwidth_mib), repeats, threads_setting, log,
        None if full_batch else max(steps // 10, 1))
    out = {"description": DESCRIPTION[name], "sizes": list(cfg["sizes"]), "batch": cfg["batch"],
           "examples": n, "flops_per_unit": flops, "unit": "iteration" if full_batch else "epoch",
           **out}
    if full_batch:
        out["floor"] = w1_floor(out, probes, times)
    return out


def w1_floor(w1, probes, times):
    """W1's floors: reading X once at the bandwidth measured in the same rounds (a large array's
    read), and the step's FLOPs at the matmul roof of those rounds."""
    bandwidth = rate(probes["read array"][1], times["read array"])["median"]
    x_bytes = probes["read X"][1]
    memory_ms = 1e3 * x_bytes / (bandwidth * 1e9)
    compute_ms = 1e3 * w1["flops_per_unit"] / (w1["roof_gflops"] * 1e9)
    floor = {"x_bytes": x_bytes, "bandwidth_gbs": bandwidth, "memory_floor_ms": memory_ms,
             "x_read_ms_measured": 1e3 * median(times["read X"]), "compute_floor_ms": compute_ms,
             "binding_floor_ms": max(memory_ms, compute_ms),
             "binding": "memory" if memory_ms >= compute_ms else "compute"}
    floor["auto_chunk_size"] = w1["results"]["fnnet manual"].get("chunk_size")
    for impl in ("fnnet manual", CHUNKED, UNCHUNKED, "fnnet manual bf16"):
        if impl in w1["results"]:
            chunked = w1["results"][impl].get("chunk_size") is not None
            key = ("bf16_" if "bf16" in impl else "") + ("chunked" if chunked else "unchunked")
            ms = w1["results"][impl]["ms_per_iteration"]
            floor[f"{key}_ms"] = ms
            floor[f"{key}_over_memory_floor"] = ms / memory_ms
            floor[f"{key}_over_binding_floor"] = ms / floor["binding_floor_ms"]
            floor[f"{key}_over_x_read_paired"] = paired(times["read X"], times[impl])
    return floor
