"""The benchmark's report: its targets, the printed tables, the chart and ``metrics.json``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from fnnet.io import write_json
from fnnet.plots import save_figure

from . import mixed
from .harness import WORKLOADS


def table(rows, headers):
    """A plain-text table: ``rows`` is a list of lists, floats shown with 4 significant digits."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in cells]
    return "\n".join(out)


def _mb(b):
    return b / 1e6


def _target(value, want):
    return {"value": value, "met": None if value is None else value >= want}


# ---------------------------------------------------------------------------------------------
# Targets


MANUAL_OVER_AUTODIFF = {"W1": 1.0, "W2": 1.0, "W3": 1.0, "W4": 10.0, "W5": 1.3, "W6": 1.2}
OVER_TORCH = {"W2": 1.8, "W3": 1.5, "W4": 1.2, "W5": 1.2, "W6": 2.0}
#: W6's memory target: the lean backward's temporaries at T = MEMORY_T against jax.grad's.
MEMORY_T, MEMORY_RATIO = 2048, 0.25
#: The workloads whose manual and autodiff programs should do the same matrix products (W4's
#: autodiff runs XLA's convolutions; W5's sums dW_h inside its reverse loop).
SAME_PRODUCTS = ("W1", "W2", "W3")
ACCURACY_SECONDS = 60.0


def targets(workloads, compile_limit=1.0, cpu=None):
    """Each target: the measured value and whether it was met. Speed ratios are the paired ones
    (the median over rounds of the ratio within a round), the most robust to a shared machine's
    changing load; the ratio of medians is in ``ratios``. The compile target is the MLPs'
    (W1–W3): W4's ``jax.grad`` of ``lax.conv`` compiles for a minute on a CPU, W4's time to
    accuracy counts its compile, and W5's programs (two time loops) take seconds."""
    out = {}

    def ratio(w, a, b):
        r = workloads.get(w, {}).get("paired_ratios", {}).get(a, {}).get(b)
        return None if r is None else float(r)

    for w in (w for w in WORKLOADS if w in workloads):
        want = MANUAL_OVER_AUTODIFF[w]
        t = _target(ratio(w, "fnnet manual", "fnnet autodiff"), want)
        if "manual_vs_autodiff" in workloads[w]:
            c = workloads[w]["manual_vs_autodiff"]
            t["paired_ratio_range"] = c["paired_ratio_range"]
            if w in SAME_PRODUCTS:
                t["same_matrix_products"] = c["same_matrix_products"]
        out[f"{w}: fnnet manual >= {want:.1f}x fnnet autodiff"] = t
        compiles = [r.get("compile_seconds") for r in workloads[w]["results"].values()
                    if r.get("compile_seconds") is not None]
        if compiles and w in SAME_PRODUCTS:
            out[f"{w}: compile < {compile_limit:g} s (slowest fnnet)"] = {
                "value": max(compiles), "met": max(compiles) < compile_limit}
    for w, want in OVER_TORCH.items():
        if w in workloads:
            out[f"{w}: fnnet >= {want}x torch eager"] = _target(ratio(w, "fnnet manual",
                                                                      "torch eager"), want)
    if "W3" in workloads and "fnnet manual" in workloads["W3"]["results"]:
        out["W3: fnnet >= 90% of the matmul roof"] = _target(
            workloads["W3"]["results"]["fnnet manual"]["fraction_of_roof_paired"], 0.9)
    if "W1" in workloads and "chunked_over_memory_floor" in workloads["W1"].get("floor", {}):
        v = workloads["W1"]["floor"]["chunked_over_memory_floor"]
        out["W1: within 1.5x of the single-read floor"] = {"value": v, "met": v <= 1.5}
    if "time_to_accuracy" in workloads.get("W4", {}):
        out[f"W4: 99% test accuracy in < {ACCURACY_SECONDS:g} s, compile included"] = \
            accuracy_target(workloads["W4"]["time_to_accuracy"])
    if "memory" in workloads.get("W6", {}):
        label, target = attention_memory_target(workloads["W6"]["memory"])
        out[f"W6: {label}"] = target
    out.update(mixed.targets(workloads, cpu or mixed.cpu_description()))
    return out


def attention_memory_target(m):
    """``(label, {"value", "met"})``: W6's memory target on ``memory_at``'s result ``m`` (``met``
    ``None`` at a T other than ``MEMORY_T``)."""
    value = m["lean_over_autodiff"]
    return (f"lean backward's temporaries <= {MEMORY_RATIO}x jax.grad's at T = {m['T']}",
            {"value": value, "met": value <= MEMORY_RATIO if m["T"] == MEMORY_T else None})


def attention_memory_line(m):
    """The temporaries of the three compiled steps at ``m["T"]`` (``memory_at``), in one line."""
    return (f"temporaries of one step at T = {m['T']}: "
            + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in m["temp_bytes"].items())
            + f"; lean/jax.grad {m['lean_over_autodiff']:.3f}, P-keeping/jax.grad "
              f"{m['keep_p_over_autodiff']:.3f}")


def accuracy_target(tta):
    """W4's time to accuracy as a target: met when reached in under ``ACCURACY_SECONDS``; missed
    when not reached; ``None`` when skipped or run on a subset (``--quick``), not the figure."""
    if "skipped" in tta:
        return {"value": None, "met": None, "note": f"skipped: {tta['skipped']}"}
    met = tta["reached"] and tta["seconds"] < ACCURACY_SECONDS
    note = (f"epoch {tta['epoch']}" if tta["reached"]
            else f"not reached in {len(tta['epochs'])} epoch(s)")
    if tta["subset"]:
        met, note = None, note + f"; a {tta['train_examples']}-image subset, not the figure"
    return {"value": tta["seconds"], "met": met, "note": note}


MEMORY_TARGET = "W3: training holds <= 1.1x data once + params, grads, state, batch"


def memory_target(peak):
    """The W3 memory target: at its peak, training (the python + jax runtime and the compiled
    code aside) holds the data once and no more than 1.1x the data, params, gradients, optimizer
    state and one batch's activations (the 10 % for XLA's temporaries: the shuffled order, a
    copy of one weight matrix)."""
    ratio = peak.get("training_holds_over_needed")
    if ratio is None:
        return {"value": None, "met": None}
    if peak.get("platform") != "cpu":  # RSS is host memory; the data and params live on the device
        return {"value": ratio, "met": None, "data_held_once": None}
    once = peak.get("data_shared_with_host") is not False
    return {"value": ratio, "met": bool(once and ratio <= 1.1), "data_held_once": once}


# ---------------------------------------------------------------------------------------------
# Printing


def print_report(report, log):
    """The whole report as text, through ``log``."""
    m = report["machine"]
    log("")
    log(f"devices: {report['devices']}   (jax {report['versions']['jax']}, "
        f"{report['cpu_count']} CPU cores, data: {report['data_source']}, baseline threads: "
        f"{report['baseline_threads']})")
    if "cpu" in report:
        log(mixed.describe_cpu(report["cpu"]))
    log(f"matmul roof: {m['matmul']['gflops']:.1f} GFLOP/s at the start, "
        f"{m['matmul_after']['gflops']:.1f} at the end (float32 {m['matmul']['n']}², median); "
        f"memory bandwidth: {m['bandwidth']['gbs']:.1f} GB/s (jitted sum over "
        f"{m['bandwidth']['bytes'] / 2**20:.0f} MiB, median)")
    for name, w in report["workloads"].items():
        print_workload(name, w, log)
    if "profile" in report:
        print_profile(report["profile"], report["workloads"].get("W3", {}).get("roof_gflops"), log)
    if "peak_memory" in report:
        print_memory(report["peak_memory"], log)
    if "startup" in report:
        log("")
        for line in startup_lines(report["startup"]):
            log(line)
    log("")
    log("targets (speed ratios paired within rounds):")
    for what, t in report["targets"].items():
        v = t["value"]
        shown = "n/a" if v is None else f"{v:.3g}"
        verdict = "n/a" if t["met"] is None else ("met" if t["met"] else "MISSED")
        note = f"  ({t['note']})" if "note" in t else ""
        if "paired_ratio_range" in t:
            lo, hi = t["paired_ratio_range"]
            products = {True: "; same matrix products", False: "; different products"}.get(
                t.get("same_matrix_products"), "")
            note = f"  (rounds {lo:.2f}-{hi:.2f}{products})"
        log(f"  {what:<66} {shown:>8}  {verdict}{note}")


def startup_lines(result):
    """``fnnet train``'s compile time with an empty and a filled compile cache
    (``fnnet.bench.startup``), as text lines."""
    cold, warm = result["cold"]["compile_seconds"], result["warm"]["compile_seconds"]
    return [f"fnnet train start-up (fnnet.bench.startup, {result['repeats']} repeat(s), fresh "
            f"processes): compile {cold['median']:.2f} s with an empty cache, {warm['median']:.2f} "
            f"s with the cache filled ({result['speedup']:.1f}x; {result['cache_entries']} "
            f"programs, {result['cache_bytes'] / 1e6:.2f} MB)"]


def _header(name, w):
    """A workload's first line: what it trains, its FLOPs and the roof of its rounds."""
    roof = f"matmul roof in the same rounds {w['roof_gflops']:.1f} GFLOP/s"
    if name == "W6":
        return (f"{name}: {w['description']}, {w['model']} ({w['optimizer']}), {w['batch']} "
                f"windows of {w['block']} tokens ({w['data_source']}); "
                f"{w['flops_per_token'] / 1e6:.3g} MFLOP per token ({w['flops_per_step'] / 1e9:.3g} "
                f"GFLOP per step: projections, attention, MLP and tied head, forward, dW and dX); "
                f"a unit is {w['steps_per_unit']} steps; {roof}")
    if "flops_per_token" in w:  # W5
        return (f"{name}: {w['description']}, {w['model']} ({w['optimizer']}), {w['batch']} "
                f"windows of {w['block']} tokens ({w['data_source']}); "
                f"{w['flops_per_token'] / 1e6:.3g} MFLOP per token ({w['flops_per_step'] / 1e9:.3g} "
                f"GFLOP per step: input projection, recurrent product and dense head, forward, dW "
                f"and dX); a unit is {w['steps_per_unit']} steps; {roof}")
    if "flops_per_step" in w:  # W4
        small = f" at small sizes, fnnet.cnn({w['cnn_arguments']})" if w["cnn_arguments"] else ""
        return (f"{name}: {w['description']}{small} ({w['optimizer']}), batch {w['batch']}; "
                f"{w['flops_per_example'] / 1e6:.4g} MFLOP per example ({w['flops_per_step'] / 1e9:.3g} "
                f"GFLOP per step: convolutions and dense products, forward, dW and dX); a unit is "
                f"{w['steps_per_unit']} steps ({w['autodiff_steps_per_unit']} for fnnet autodiff); {roof}")
    return (f"{name}: {w['description']}, {w['examples']} examples"
            + (f", batch {w['batch']}" if w["batch"] else "")
            + f"; {w['flops_per_unit'] / 1e9:.3g} GFLOP per {w['unit']}; {roof}")


def _autodiff_line(c, convolutions):
    """What fnnet's manual and autodiff programs compile to, and their ratio's range."""
    ratios = (f"their speed ratio ranged {c['paired_ratio_range'][0]:.2f}-"
              f"{c['paired_ratio_range'][1]:.2f} over the rounds")
    if convolutions:  # W4: jax.grad of apply runs XLA's convolutions, the manual one none
        return (f"fnnet autodiff differentiates apply: {c['hlo_convolutions'][1]} XLA convolutions in "
                f"its program, {c['hlo_convolutions'][0]} in the manual one (im2col matrix products); "
                + ratios)
    same = "the same" if c["same_matrix_products"] else "DIFFERENT"
    return (f"fnnet manual and autodiff compile to {same} {c['matrix_products']} matrix products "
            f"(shapes and dimensions compared; {c['hlo_operations'][0]} and {c['hlo_operations'][1]} "
            f"operations in all); " + ratios)


def _recurrent_line(w):
    """W5: where each program sums ``dW_h``, and the manual/autodiff ratio's range."""
    parts = []
    for impl, p in w["recurrent_products"].items():
        where = ("one product after the time loop" if p["in_loop"] is False
                 else "a product in every step of the reverse loop" if p["in_loop"] else "?")
        parts.append(f"{impl} {p['products']} matrix products, dW_h contracted over "
                     f"{p['dW_h_rows']} rows ({where})")
    line = "; ".join(parts)
    if "manual_vs_autodiff" in w:
        lo, hi = w["manual_vs_autodiff"]["paired_ratio_range"]
        line += f"; fnnet manual / autodiff ranged {lo:.2f}-{hi:.2f} over the rounds"
    return line


def print_workload(name, w, log):
    """One workload's table, compile times, ratios, (W1) floors and (W4) time to accuracy."""
    log("")
    log(_header(name, w))
    paired = w["paired_ratios"]
    rows = []
    for impl, r in w["results"].items():
        speed = (f"{r['ms_per_iteration']:.1f} ms/iter" if w["batch"] is None
                 else f"{r['examples_per_second']:,.0f} {w.get('speed_unit', 'ex/s')}")
        rel = "1.00x" if impl == "fnnet manual" else (
            f"{1 / paired['fnnet manual'][impl]:.2f}x" if "fnnet manual" in paired else "-")
        rows.append([impl, speed, f"{r['gflops']:.1f}", f"{100 * r['fraction_of_roof']:.1f}%", rel,
                     str(r.get("threads", "-"))])
    log(table(rows, ["implementation", "speed (median)", "GFLOP/s", "of roof", "vs fnnet manual",
                     "threads"]))
    for impl, why in w["skipped"].items():
        log(f"  {impl}: skipped ({why})")
    compiles = {impl: r for impl, r in w["results"].items() if "compile_seconds" in r}
    if compiles:
        log("compile: " + ", ".join(f"{impl} {r['compile_seconds']:.2f} s ({r['compile_cpu_seconds']:.2f} s "
                                    f"CPU)" for impl, r in compiles.items()))
    if "fnnet manual" in paired:
        log("ratios (paired): " + ", ".join(f"fnnet manual / {b} = {v:.2f}"
                                            for b, v in paired["fnnet manual"].items()))
    if "recurrent_products" in w:
        log(_recurrent_line(w))
    elif "manual_vs_autodiff" in w:
        log(_autodiff_line(w["manual_vs_autodiff"], "flops_per_step" in w))
    if w.get("bf16", "timed") != "timed":
        log(f"bf16: {w['bf16']}")
    if "manual_vs_autodiff_bf16" in w:
        c = w["manual_vs_autodiff_bf16"]
        log(f"bf16: fnnet manual bf16 / fnnet autodiff bf16 ranged {c['paired_ratio_range'][0]:.2f}"
            f"-{c['paired_ratio_range'][1]:.2f} over the rounds")
        mixed.print_products(name, w, log)
    if "memory" in w:  # W6's temporaries at T = 2048
        log(attention_memory_line(w["memory"]))
    if "floor" in w:
        print_floor(w["floor"], log)
    if "time_to_accuracy" in w:
        print_accuracy(w["time_to_accuracy"], log)


def print_accuracy(t, log):
    """W4's time to accuracy, epoch by epoch."""
    if "skipped" in t:
        log(f"time to accuracy: skipped ({t['skipped']})")
        return
    what = (f"{t['train_examples']} {t['data']} training images, {t['test_examples']} test images"
            + (" (a subset: not the figure)" if t["subset"] else ""))
    result = (f"{100 * t['target']:g}% reached after epoch {t['epoch']}, {t['seconds']:.1f} s from the "
              f"start, compile included" if t["reached"]
              else f"{100 * t['target']:g}% not reached in {len(t['epochs'])} epoch(s)")
    log(f"time to {100 * t['target']:g}% test accuracy: fnnet.fit ({t['grads']} gradients, "
        f"{t['optimizer']}, batch {t['batch']}) on {what}: {result}. The test set serves only as "
        f"the stopping criterion of this timing.")
    if t["epochs"]:
        log(f"  before the first epoch's end, besides its {t['epochs'][0]['train_seconds']:.1f} s of "
            f"training: {t['before_first_epoch_seconds']:.1f} s (data to the device, compiling, the "
            f"first test scoring)")
    log(table([[e["epoch"], f"{e['seconds_since_start']:.1f}", f"{e['train_seconds']:.1f}",
                f"{e['train_loss']:.4f}", f"{100 * e['test_accuracy']:.2f}%"] for e in t["epochs"]],
              ["  epoch", "s since start", "s training", "train loss", "test accuracy"]))


def print_floor(f, log):
    """W1's floors against the measured iterations."""
    log(f"floor: reading X ({f['x_bytes'] / 1e6:.0f} MB) once at {f['bandwidth_gbs']:.1f} GB/s takes "
        f"{f['memory_floor_ms']:.1f} ms (a jitted read of X itself: {f['x_read_ms_measured']:.1f} ms); "
        f"the FLOPs at the matmul roof take {f['compute_floor_ms']:.1f} ms, so here W1 is "
        f"{f['binding']}-bound.")
    parts = [f"{key.replace('_', ' ')} {f[key + '_ms']:.1f} ms = "
             f"{f[key + '_over_memory_floor']:.2f}x the single-read floor "
             f"({f[key + '_over_x_read_paired']:.2f}x the read of X, paired)"
             for key in ("chunked", "unchunked", "bf16_chunked", "bf16_unchunked")
             if f"{key}_ms" in f]
    if parts:
        auto = f.get("auto_chunk_size")
        log(f"       fnnet, the full batch {'in chunks of ' + str(auto) + ' rows' if auto else 'unchunked'}"
            f" as fit chooses it here (chunk_size=\"auto\"), and the other way: " + "; ".join(parts))
    log("       A full-batch step must stream all of X from memory at least once: that is the "
        "floor. Unchunked, X is read twice (X W1ᵀ, then dZ1ᵀ X); chunked, each chunk's second read "
        "hits the cache. That saves time only where the step runs at memory speed: where its "
        "matrix products are compute-bound, as when the compute floor is the larger, the reads "
        "hide behind the arithmetic.")


def print_profile(p, roof, log):
    """Where one W3 epoch's time went, by XLA:CPU's per-operation trace."""
    log("")
    if "skipped" in p:
        log(f"profile (W3): skipped: {p['skipped']}")
        return
    total = p["traced_span_seconds"]  # first operation's start to last one's end, in the trace
    gaps = max(total - p["ops_seconds"], 0.0)  # 0 where operations overlapped
    log(f"profile, one W3 epoch as XLA:CPU's per-operation trace sees it ({total:.2f} s from the first "
        f"operation to the last; {p['epoch_seconds']:.2f} s untraced, median of 3): matrix products "
        f"{p['matrix_products_seconds']:.2f} s ({100 * p['matrix_products_seconds'] / total:.0f}%) at "
        f"{p['matrix_products_gflops']:.1f} GFLOP/s"
        + (f" = {100 * p['matrix_products_gflops'] / roof:.0f}% of W3's matmul roof (median of its rounds)"
           if roof else "")
        + f"; the other operations (updates, ReLU, softmax, the batch gather, copies) "
        f"{p['other_seconds']:.2f} s ({100 * p['other_seconds'] / total:.0f}%); between operations "
        f"(the runtime's scheduling, the loop) {gaps:.2f} s ({100 * gaps / total:.0f}%)")
    rows = [[t["op"], "yes" if t["matrix_product"] else "", f"{1e3 * t['seconds']:.0f}",
             f"{100 * t['seconds'] / total:.1f}%"] for t in p["top"]]
    log(table(rows, ["  HLO operation", "matrix product", "ms per epoch", "share"]))


def print_memory(p, log):
    """The peak-memory measurement: RSS by stage against what must be resident."""
    log("")
    if "error" in p:
        log(f"peak memory (W3): failed: {p['error']}")
        return
    e, st = p["expected"], p["stages"]
    log(f"peak memory, W3 trained by fnnet in its own process: peak RSS {_mb(p['peak_rss']):.0f} MB, "
        f"{p['peak_rss_over_runtime_plus_needed']:.2f}x (python + jax runtime + needed)")
    inherited = p["getrusage_maxrss"] <= p["getrusage_maxrss_at_start"]
    log(f"  (getrusage ru_maxrss {_mb(p['getrusage_maxrss']):.0f} MB"
        + (f", which is the {_mb(p['getrusage_maxrss_at_start']):.0f} MB the process inherited from "
           "this benchmark at fork: Linux keeps ru_maxrss across exec; the peak above is the "
           "process's own, VmHWM)" if inherited else ")"))
    log("  needed: " + " + ".join(f"{name.replace('_', ' ')} {_mb(v):.1f} MB" for name, v in e.items())
        + f" = {_mb(p['expected_total']):.0f} MB; python + jax with the runtime started "
        f"{_mb(p['runtime']):.0f} MB")
    rows = [[stage, f"{_mb(v['rss']):.0f}", "-" if v.get("peak") is None else f"{_mb(v['peak']):.0f}"]
            for stage, v in st.items()]
    log(table(rows, ["  stage", "RSS after (MB)", "peak during (MB)"]))
    shared = {True: "the device array is the host array itself (no copy: fnnet.to_device on a "
                    "64-byte-aligned array, as fnnet.datasets.prepare makes them)",
              False: "the device holds a copy of the host array (a GPU's memory, or an unaligned "
                     "host array)",
              None: "whether the device shares the host array is unknown"}[p["data_shared_with_host"]]
    log(f"  data: {shared}")
    log(f"  the compiled program and the runtime's caches stay resident: "
        f"{_mb(p['compiled_program_resident']):.0f} MB after compiling"
        + (" (the compiler's freed heap handed back first, malloc_trim)" if p["heap_trimmed"] else ""))
    if "training_peak" in p:
        log(f"  training itself: its peak is {_mb(p['training_peak_above_compiled']):.1f} MB above the "
            f"compiled state (data and input params already resident) = "
            f"{p['training_peak_above_compiled_over_epoch_needs']:.2f}x the "
            f"{_mb(p['epoch_needs']):.1f} MB the epoch must allocate: output params, gradients, state, "
            f"one batch's activations")
        log(f"  at its peak training holds {_mb(p['training_holds']):.0f} MB (the runtime and the "
            f"compiled code aside) = {p['training_holds_over_needed']:.2f}x the "
            f"{_mb(p['expected_total']):.0f} MB needed")


# ---------------------------------------------------------------------------------------------
# Files


def _bars(axes, workloads, names, impls):
    width = 0.8 / max(len(impls), 1)
    for j, impl in enumerate(impls):
        xs = np.arange(len(names)) + (j - (len(impls) - 1) / 2) * width
        roof, rel = [], []
        for w in names:
            roof.append(workloads[w]["results"].get(impl, {}).get("fraction_of_roof", np.nan))
            paired = workloads[w]["paired_ratios"].get("fnnet manual", {})
            rel.append(1.0 if impl == "fnnet manual" else 1 / paired[impl] if impl in paired else np.nan)
        axes[0].bar(xs, roof, width, label=impl)
        axes[1].bar(xs, rel, width, label=impl)


def _label(name, w):
    """A workload's tick label: its layers, its batch, and W4's time to accuracy."""
    label = (f"{name}\n{w.get('label') or '-'.join(map(str, w['sizes']))}\n"
             + ("full batch" if w["batch"] is None else f"batch {w['batch']}"))
    tta = w.get("time_to_accuracy", {})
    if tta.get("reached"):
        label += (f"\n{100 * tta['target']:g}% in {tta['seconds']:.0f} s"
                  + (" (subset)" if tta["subset"] else ""))
    return label


def plot(report, path):
    """Two panels per workload: each implementation's FLOP rate as a fraction of the matmul roof
    (medians), and its speed relative to fnnet manual (paired ratios, as in the table). Drawn with
    matplotlib's object API (no pyplot, no backend chosen), written by ``fnnet.plots.save_figure``."""
    workloads = report["workloads"]
    names = list(workloads)
    impls = list(dict.fromkeys(i for w in workloads.values() for i in w["results"]))
    fig = Figure(figsize=(12, 4.8))
    axes = fig.subplots(1, 2)
    _bars(axes, workloads, names, impls)
    axes[0].set(ylabel="FLOP rate / matmul roof", title="fraction of the float32 matmul roof")
    axes[1].set(ylabel="speed / fnnet manual", title="speed relative to fnnet manual (higher: faster)")
    labels = [_label(w, workloads[w]) for w in names]
    for ax in axes:
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xticks(np.arange(len(names)), labels, fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    handles, legend_names = axes[0].get_legend_handles_labels()
    fig.legend(handles, legend_names, loc="lower center", ncol=len(impls), fontsize=8, frameon=False)
    fig.suptitle(f"fnnet benchmark on {', '.join(report['devices'])}", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return save_figure(fig, path)


def write(report, out):
    """``metrics.json`` and ``benchmark.png`` in the folder ``out``; returns their paths."""
    out = Path(out)
    return write_json(out / "metrics.json", report), plot(report, out / "benchmark.png")
