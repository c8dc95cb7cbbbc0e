"""Benchmark: fnnet against autodiff, plain numpy and PyTorch, and against the machine's roofs.

``python -m experiments.benchmark [--quick] [--workloads W1,W2,W3] [--repeats 5] [--out DIR]``

Workloads (float32, MNIST-shaped data: the real MNIST when ``fnnet.datasets.load_mnist`` finds it,
e.g. with ``FNNET_DATA_DIR`` set, random pixels and labels otherwise):

    W1  784-10-10, ReLU/softmax, full-batch gradient descent over 60,000 examples  (ms/iteration)
    W2  784-128-10, minibatch 128, SGD                                             (examples/s)
    W3  784-1024-1024-10, minibatch 128, SGD                                       (examples/s)

Implementations, side by side in one run (the machine is shared: quote the ratios):

    fnnet manual     the program fnnet.fit runs (fnnet.make_epoch, compiled once) with the
                     hand-derived backward; for W1 the full batch in chunks, and once
                     more unchunked ("fnnet manual, unchunked") to show what the chunking buys
    fnnet autodiff   the same with grads="autodiff": jax.grad of the same forward
    numpy            the notes' equations in plain numpy (below, not part of the package)
    torch eager      PyTorch on the CPU, eager (skipped with a message when torch is absent)

Timing: every implementation is set up and warmed up, then timed in rounds: each round runs one
unit of each (one iteration for W1, one epoch for W2 and W3) and the matmul roof, in an order
that rotates from round to round, so that a shared machine's changing load hits all of them
alike. Each figure is the median of ``--repeats`` rounds (at least 5; W1 takes three times as
many, its iterations being short). Ratios are given two ways: of the medians (``ratios``) and
paired, the median over rounds of the ratio within a round (``paired_ratios``, the more robust,
used for the targets and the table). fnnet's compile time (wall and CPU) is reported on its own
line. The CPU baselines' BLAS and PyTorch thread pools spin-wait: on cores busy with other work,
two threads can run 100 times slower than one, so on each workload each baseline runs with
whichever of 1 thread and all cores was faster on a short probe (a tenth of an epoch, or one
full-batch iteration; ``--baseline-threads`` fixes the count); XLA keeps its own thread pool.

FLOP count of one training step on a batch of ``B`` rows (matrix products only; the element-wise
terms, ReLU, softmax, bias and the update, are ``O(B · Σ n_out)`` and left out)::

    forward     Z_l = A_{l-1} W_lᵀ        2 B n_{l-1} n_l   per Dense layer
    backward    dW_l = dZ_lᵀ A_{l-1}      2 B n_{l-1} n_l   per Dense layer
                dA_{l-1} = dZ_l W_l       2 B n_{l-1} n_l   per Dense layer but the first
    total       2 B (3 Σ_l n_{l-1} n_l − n_0 n_1)

so W1 costs 1.92 GFLOP per iteration, W2 0.080 GFLOP per step and W3 1.21 GFLOP per step. The
matmul roof is a large jitted float32 matmul (GFLOP/s); an implementation's "fraction of roof" is
its FLOP rate by this count divided by the roof.

W1's floor: a full-batch step has to read every one of the 60,000 × 784 float32 pixels at least
once, 188 MB; streamed at the measured memory bandwidth (a jitted reduction over a large array)
that takes ``188 MB / bandwidth``: no implementation can iterate faster. Unchunked, X is read
twice per step (the forward ``X W1ᵀ`` and the backward ``dZ1ᵀ X``); ``fnnet.parallel.chunked``
runs the forward and backward chunk by chunk while the chunk is in cache, so X comes from
memory once. Where the step's FLOPs take longer at the matmul roof than the read does (few cores,
as on a small CPU), the step is compute-bound and the compute floor ``FLOPs / roof`` is the
binding one; both are reported. A compute-bound step hides its memory reads behind the
arithmetic, so there the chunking saves little or no time (it still bounds the activations held
at once to one chunk's).

Peak memory: a separate process trains W3 with fnnet as ``fit`` does and reports its RSS, stage
by stage (start the runtime, load the data, put it on the device, compile, train one epoch), next
to the sum of what must be resident: the data (X and labels), params (twice: ``fit`` keeps an
epoch's input params to replay it should the loss go non-finite), gradients, optimizer state and
one batch's activations. On a CPU the device array is the host array itself (``fnnet.to_device``
of a 64-byte-aligned array), so the data are held once. The compiler's freed heap is handed back
to the OS after compiling (glibc ``malloc_trim``), so that the RSS counts live memory.
``resource.getrusage``'s ``ru_maxrss`` is reported too; on Linux a child inherits its parent's
value at fork, so the process's own peak is read from ``VmHWM`` (reset per stage through
``/proc/self/clear_refs``), falling back to ``ru_maxrss`` where that is unavailable.

Where W3's time goes (CPU, ``--no-profile`` skips it): one epoch compiled with XLA:CPU's
per-operation trace events on and traced by ``jax.profiler``; each HLO operation's time is summed
and split into matrix products (a ``dot``, or a fusion holding one) and the rest, next to the
untraced epoch time, so the time between operations shows too.

Outputs in ``--out`` (default ``runs/benchmark``): ``metrics.json``, ``benchmark.png`` and the
printed table. The script is device-agnostic: fnnet runs on whatever ``jax.devices()`` offers
(reported); numpy and PyTorch run on the CPU.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from experiments.common import parser, table, write_metrics

FULL = {
    "n": 60_000,
    "W1": {"sizes": (784, 10, 10), "batch": None, "lr": 0.1},
    "W2": {"sizes": (784, 128, 10), "batch": 128, "lr": 0.1},
    "W3": {"sizes": (784, 1024, 1024, 10), "batch": 128, "lr": 0.05},
    "matmul_n": 2048,
    "bandwidth_mib": 256,
}
QUICK = {
    "n": 1024,
    "W1": {"sizes": (784, 10, 10), "batch": None, "lr": 0.1},
    "W2": {"sizes": (784, 32, 10), "batch": 64, "lr": 0.1},
    "W3": {"sizes": (784, 64, 64, 10), "batch": 64, "lr": 0.05},
    "matmul_n": 256,
    "bandwidth_mib": 8,
}
WORKLOADS = ("W1", "W2", "W3")
DESCRIPTION = {
    "W1": "784-10-10 ReLU/softmax, full-batch GD",
    "W2": "784-128-10, minibatch SGD",
    "W3": "784-1024-1024-10, minibatch SGD",
}
UNCHUNKED = "fnnet manual, unchunked"


# ---------------------------------------------------------------------------------------------
# Measuring


def _median(values):
    return float(np.median(np.asarray(values, dtype=float)))


def _time_calls(fn, repeats, warmup=1):
    """Seconds per call of ``fn()`` (which must block until its result is ready), ``repeats``
    times after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def train_step_flops(sizes, batch):
    """FLOPs of one training step on ``batch`` rows: ``2 B (3 Σ n_{l-1} n_l − n_0 n_1)``."""
    pairs = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2 * batch * (3 * sum(pairs) - pairs[0])


def matmul_unit(n):
    """``(unit, flops)``: ``unit()`` runs a jitted float32 ``(n × n) @ (n × n)`` on the default
    jax device, ``2 n³`` FLOPs, and waits for it."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    mm = jax.jit(lambda a, b: a @ b)
    return (lambda: mm(a, b).block_until_ready()), 2 * n**3


def read_unit(x):
    """``(unit, bytes)``: ``unit()`` reads the float32 array ``x`` once on the default jax device
    (a jitted sum: every byte read, one scalar written) and waits for it."""
    import jax
    import jax.numpy as jnp

    xd = jax.device_put(jnp.asarray(x, jnp.float32))
    total = jax.jit(jnp.sum)
    return (lambda: total(xd).block_until_ready()), xd.size * 4


def _rate(amount, times, scale=1e9):
    return {"median": amount / _median(times) / scale, "best": amount / min(times) / scale}


def matmul_roof(n, repeats):
    """The float32 matmul rate of the default jax device, GFLOP/s, median of ``repeats``."""
    unit, flops = matmul_unit(n)
    rate = _rate(flops, _time_calls(unit, repeats, warmup=2))
    return {"gflops": rate["median"], "gflops_best": rate["best"], "n": n}


def memory_bandwidth(mib, repeats):
    """Read bandwidth of the default jax device, GB/s: median over ``repeats`` of a jitted sum
    over a ``mib`` MiB float32 array."""
    unit, nbytes = read_unit(np.ones(mib * 2**20 // 4, np.float32))
    rate = _rate(nbytes, _time_calls(unit, repeats, warmup=2))
    return {"gbs": rate["median"], "gbs_best": rate["best"], "bytes": nbytes}


# ---------------------------------------------------------------------------------------------
# Data


def load_data(n, seed):
    """``(x (n, 784) float32 in [0, 1], y (n,) int32, source)``: the first ``n`` MNIST training
    images when the files can be found without downloading, random pixels and labels otherwise."""
    from fnnet import datasets

    try:
        (x, y), _ = datasets.load_mnist(download=False)
        x, y = datasets.prepare(x[:n], y[:n])
        if len(x) == n:
            return x, y, "mnist"
    except (FileNotFoundError, OSError, ValueError):
        pass
    rng = np.random.default_rng(seed)
    x = datasets.aligned_empty((n, 784), np.float32)  # as prepare's: the CPU device shares it
    rng.random(out=x, dtype=np.float32)
    return x, rng.integers(0, 10, n).astype(np.int32), "random"


# ---------------------------------------------------------------------------------------------
# The implementations. Each ``*_runner`` sets one up (compiling where there is something to
# compile), runs a warm-up, and returns ``(unit, info)``: ``unit()`` runs one timed unit, one
# iteration for full batch or one epoch for minibatches, and returns once its result is ready.
# The units of all implementations are timed in turn, round after round, so that a change in the
# load of a shared machine hits all of them alike.


def fit_epoch(cfg, xd, yd, seed, grads="manual", chunk=None):
    """``(epoch, inputs)``: the epoch program ``fnnet.fit`` compiles for ``cfg`` (``fnnet.make_epoch``
    without the per-step copy of the params, ``keep_last_good=False``; ``fit`` keeps each epoch's
    inputs instead, to replay an epoch whose loss goes non-finite) and its first inputs, for data
    ``xd, yd`` already on the device (``fnnet.to_device``)."""
    import jax
    import jax.numpy as jnp

    import fnnet

    model, opt = fnnet.mlp(cfg["sizes"]), fnnet.optim.sgd(cfg["lr"])
    epoch = fnnet.make_epoch(model, "cross-entropy", opt, len(xd), cfg["batch"], grads=grads,
                             chunk_size=chunk, keep_last_good=False)
    init_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
    params = model.init(init_key, jnp.float32)
    return epoch, [params, opt.init(params), run_key, jnp.zeros((), bool), xd, yd]


def fnnet_runner(cfg, x, y, seed, grads="manual", chunk_size="auto"):
    """The program ``fnnet.fit`` runs (``fit_epoch``), the data put on the device by
    ``fnnet.to_device``, compiled once, the epoch's stats fetched after each call. ``chunk_size``
    is resolved as ``fit`` resolves it (``fnnet.parallel.resolve_chunk_size``)."""
    import jax

    import fnnet
    from fnnet import parallel

    n = len(x)
    xd, yd = fnnet.to_device(x, y)
    chunk = parallel.resolve_chunk_size(chunk_size, n, cfg["batch"], xd)
    epoch, inputs = fit_epoch(cfg, xd, yd, seed, grads, chunk)
    state = inputs[:4]
    t, cpu = time.perf_counter(), time.process_time()
    compiled = jax.jit(epoch).lower(*inputs).compile()
    info = {"compile_seconds": time.perf_counter() - t, "compile_cpu_seconds": time.process_time() - cpu,
            "chunk_size": chunk}
    hlo = compiled.as_text()
    info["matrix_products"] = dot_signatures(hlo)
    info["hlo_operations"] = len(_dot_ops(hlo)[0])
    steps = 1 if cfg["batch"] is None else n // cfg["batch"]

    def unit():
        *new, stats = compiled(*state, xd, yd)
        stats = jax.device_get(stats)
        state[:] = new
        info["last_loss"] = float(stats["loss_sum"]) / steps

    unit()
    return unit, info


def _numpy_init(sizes, rng):
    """He-normal weights ``W_l`` of shape ``(n_l, n_{l-1})`` and zero biases, float32."""
    return [[(rng.standard_normal((b, a)) * np.sqrt(2.0 / a)).astype(np.float32),
             np.zeros(b, np.float32)] for a, b in zip(sizes[:-1], sizes[1:])]


def numpy_step(params, x, y_onehot, lr):
    """One gradient-descent step in plain numpy, the notes' equations with samples as rows.

    Forward (note 004): ``Z_l = A_{l-1} W_lᵀ + b_l``, ``A_l = ReLU(Z_l)``, softmax at the output.
    Backward (note 002): ``dZ_L = (A_L − Y)/B``; for every layer ``dW_l = dZ_lᵀ A_{l-1}``,
    ``db_l = Σ_n dZ_l``; ``dZ_{l-1} = (dZ_l W_l) ⊙ [Z_{l-1} > 0]``. Update ``W −= α dW``. Returns
    the cross-entropy ``−(1/B) Σ Y ⊙ log A_L`` (note 003), computed from the logits.
    """
    acts, zs = [x], []
    for i, (W, b) in enumerate(params):
        z = acts[-1] @ W.T + b
        zs.append(z)
        if i < len(params) - 1:
            acts.append(np.maximum(z, 0))
    z = zs[-1]
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    batch = len(x)
    loss = -float(np.sum(y_onehot * (shifted - np.log(s)))) / batch
    dz = (e / s - y_onehot) / np.float32(batch)
    for i in reversed(range(len(params))):
        W, b = params[i]
        dW, db = dz.T @ acts[i], dz.sum(axis=0)
        if i > 0:
            dz = (dz @ W) * (zs[i - 1] > 0)
        params[i][0] = W - lr * dW
        params[i][1] = b - lr * db
    return loss


def numpy_runner(cfg, x, y, seed):
    """Plain numpy: full batch (one iteration per unit) or minibatch SGD (one epoch per unit, a
    fresh permutation each epoch, the last partial batch dropped as fnnet does)."""
    rng = np.random.default_rng(seed)
    params = _numpy_init(cfg["sizes"], rng)
    onehot = np.eye(cfg["sizes"][-1], dtype=np.float32)[y]
    lr = np.float32(cfg["lr"])
    info = {}
    if cfg["batch"] is None:
        def unit():
            info["last_loss"] = numpy_step(params, x, onehot, lr)

        unit()
        return unit, info
    b = cfg["batch"]
    epoch_steps = len(x) // b

    def unit(steps=epoch_steps):
        order = rng.permutation(len(x))
        for i in range(steps):
            idx = order[i * b:(i + 1) * b]
            info["last_loss"] = numpy_step(params, x[idx], onehot[idx], lr)

    unit(max(epoch_steps // 10, 1))  # warm-up: a tenth of an epoch
    return unit, info


def torch_runner(cfg, x, y, seed):
    """PyTorch eager on the CPU, the textbook loop: ``model(xb)``, ``F.cross_entropy`` on the
    logits, ``backward()``, ``SGD.step()``. No per-step loss or accuracy bookkeeping (fnnet keeps
    both), so the comparison leans, if anything, in PyTorch's favour."""
    import torch

    torch.manual_seed(seed)
    sizes, layers = cfg["sizes"], []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, np.int64))
    info = {}

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    if cfg["batch"] is None:
        def unit():
            info["last_loss"] = float(step(xt, yt).detach())

        unit()
        return unit, info
    b = cfg["batch"]
    epoch_steps = len(x) // b

    def unit(steps=epoch_steps):
        order = torch.randperm(len(xt))
        for i in range(steps):
            idx = order[i * b:(i + 1) * b]
            loss = step(xt[idx], yt[idx])
        info["last_loss"] = float(loss.detach())

    unit(max(epoch_steps // 10, 1))
    return unit, info


def torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Threads of the CPU baselines. numpy's BLAS and PyTorch spin-wait in their thread pools: on a
# machine whose cores are busy with other work, all-core BLAS can run 100 times slower than one
# thread. Each baseline gets whichever of 1 thread and all cores is faster on a short probe.


def _openblas():
    """numpy's OpenBLAS ``(set_num_threads, get_num_threads)`` through ctypes, or ``None`` (other
    BLAS builds: their thread count stays as it is and is reported as such)."""
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            libs = sorted({line.split()[-1] for line in f if "openblas" in line.lower()})
    except OSError:
        return None
    for lib in libs:
        try:
            dll = ctypes.CDLL(lib)
        except OSError:
            continue
        for suffix in ("64_", ""):
            for prefix in ("scipy_openblas", "openblas"):
                setter = getattr(dll, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(dll, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    return (lambda n, s=setter: s(ctypes.c_int(n))), getter
    return None


def set_threads(impl, count):
    """Set the thread count of ``impl``'s library; return the count in effect (``None``:
    unknown)."""
    if impl == "torch eager":
        import torch

        torch.set_num_threads(count)
        return torch.get_num_threads()
    blas = _openblas()
    if blas is None:
        return None
    blas[0](count)
    return int(blas[1]())


def choose_threads(impl, probe, log):
    """Run ``probe()`` (a tenth of an epoch, or one full-batch iteration) twice with 1 thread and
    twice with all cores; keep the faster count. Returns ``(threads, {count: seconds})``, or
    ``(None, {})`` when the thread count cannot be set."""
    cores = os.cpu_count() or 1
    if set_threads(impl, cores) is None:
        return None, {}
    if cores == 1:
        return 1, {}
    timings = {}
    for count in (1, cores):
        set_threads(impl, count)
        timings[count] = min(_time_calls(probe, 2, warmup=0))
    best = min(timings, key=timings.get)
    log(f"    {impl}: {best} thread(s) (probe: " + ", ".join(
        f"{c} thread(s) {1e3 * t:.0f} ms" for c, t in timings.items()) + ")")
    return set_threads(impl, best), timings


# ---------------------------------------------------------------------------------------------
# One workload


def measure_workload(name, cfg, x, y, repeats, seed, baseline_threads, log, matmul_n, bandwidth_mib):
    """Every implementation on one workload, timed round-robin, and in every round the matmul
    roof too (and, for full batch, the read of X and of a large array), so that each figure and
    the roof it is compared with come from the same minutes of a shared machine's load."""
    full_batch = cfg["batch"] is None
    n = len(x)
    unit_examples = n if full_batch else (n // cfg["batch"]) * cfg["batch"]
    steps = 1 if full_batch else n // cfg["batch"]
    flops = train_step_flops(cfg["sizes"], n if full_batch else cfg["batch"]) * steps
    makers = {
        "fnnet manual": lambda: fnnet_runner(cfg, x, y, seed, "manual"),
        "fnnet autodiff": lambda: fnnet_runner(cfg, x, y, seed, "autodiff"),
        "numpy": lambda: numpy_runner(cfg, x, y, seed),
        "torch eager": lambda: torch_runner(cfg, x, y, seed),
    }
    if full_batch:
        makers[UNCHUNKED] = lambda: fnnet_runner(cfg, x, y, seed, "manual", chunk_size=None)
    units, infos, skipped, threads = {}, {}, {}, {}
    for impl, make in makers.items():
        if impl == "torch eager" and not torch_available():
            skipped[impl] = "torch is not installed (pip install torch, or the 'bench' extra)"
            log(f"  {name} {impl}: skipped, {skipped[impl]}")
            continue
        log(f"  {name} {impl}: setup and warm-up ...")
        units[impl], infos[impl] = make()
        if impl in ("numpy", "torch eager"):
            if baseline_threads == "auto":
                unit = units[impl]
                probe = unit if full_batch else (lambda unit=unit: unit(max(steps // 10, 1)))
                count, timings = choose_threads(impl, probe, log)
                infos[impl]["thread_probe_seconds"] = {str(c): t for c, t in timings.items()}
            else:
                count = set_threads(impl, int(baseline_threads))
            if count is not None:
                threads[impl] = count
    probes = {"matmul": matmul_unit(matmul_n)}
    if full_batch:
        probes["read X"] = read_unit(x)
        probes["read array"] = read_unit(np.ones(bandwidth_mib * 2**20 // 4, np.float32))
    for unit, _ in probes.values():
        _time_calls(unit, 0, warmup=2)
    times = {impl: [] for impl in [*units, *probes]}
    order = [*units.items(), *((p, u) for p, (u, _) in probes.items())]
    for r in range(repeats):
        log(f"  {name} round {r + 1}/{repeats}")
        shift = r % len(order)  # each round starts elsewhere: no implementation always goes first
        for impl, unit in order[shift:] + order[:shift]:
            if impl in threads:
                set_threads(impl, threads[impl])
            t = time.perf_counter()
            unit()
            times[impl].append(time.perf_counter() - t)
    roof = _rate(probes["matmul"][1], times["matmul"])
    results = {}
    for impl in units:
        ts = times[impl]
        sec = _median(ts)
        res = {"seconds_median": sec, "seconds_min": min(ts), "seconds_all": ts,
               "examples_per_second": unit_examples / sec, "gflops": flops / sec / 1e9,
               "fraction_of_roof": flops / sec / 1e9 / roof["median"],
               "fraction_of_roof_paired": _median([flops / t / (probes["matmul"][1] / m)
                                                  for t, m in zip(ts, times["matmul"])]),
               **infos[impl]}
        if full_batch:
            res["ms_per_iteration"] = 1e3 * sec
        if impl in threads:
            res["threads"] = threads[impl]
        results[impl] = res
    speed = {impl: r["examples_per_second"] for impl, r in results.items()}
    ratios = {a: {b: speed[a] / speed[b] for b in speed if b != a} for a in speed}
    paired = {a: {b: _median([tb / ta for ta, tb in zip(times[a], times[b])]) for b in units if b != a}
              for a in units}
    out = {"description": DESCRIPTION[name], "sizes": list(cfg["sizes"]), "batch": cfg["batch"],
           "examples": n, "flops_per_unit": flops, "unit": "iteration" if full_batch else "epoch",
           "roof_gflops": roof["median"], "roof_gflops_best": roof["best"],
           "roof_seconds_all": times["matmul"], "results": results, "ratios": ratios,
           "paired_ratios": paired, "skipped": skipped}
    a, b = results.get("fnnet manual"), results.get("fnnet autodiff")
    if a and b:
        within = [tb / ta for ta, tb in zip(times["fnnet manual"], times["fnnet autodiff"])]
        out["manual_vs_autodiff"] = {
            "same_matrix_products": a["matrix_products"] == b["matrix_products"],
            "matrix_products": len(a["matrix_products"]),
            "hlo_operations": [a["hlo_operations"], b["hlo_operations"]],
            "paired_ratio_range": [min(within), max(within)]}
    if full_batch:
        out["floor"] = w1_floor(out, probes, times)
    return out


def w1_floor(w1, probes, times):
    """W1's floors: reading X once at the bandwidth measured in the same rounds (a large array's
    read), and the step's FLOPs at the matmul roof of those rounds."""
    bandwidth = _rate(probes["read array"][1], times["read array"])["median"]
    x_bytes = probes["read X"][1]
    memory_ms = 1e3 * x_bytes / (bandwidth * 1e9)
    compute_ms = 1e3 * w1["flops_per_unit"] / (w1["roof_gflops"] * 1e9)
    floor = {"x_bytes": x_bytes, "bandwidth_gbs": bandwidth, "memory_floor_ms": memory_ms,
             "x_read_ms_measured": 1e3 * _median(times["read X"]), "compute_floor_ms": compute_ms,
             "binding_floor_ms": max(memory_ms, compute_ms),
             "binding": "memory" if memory_ms >= compute_ms else "compute"}
    for impl, key in (("fnnet manual", "chunked"), (UNCHUNKED, "unchunked")):
        if impl in w1["results"]:
            ms = w1["results"][impl]["ms_per_iteration"]
            floor[f"{key}_ms"] = ms
            floor[f"{key}_over_memory_floor"] = ms / memory_ms
            floor[f"{key}_over_binding_floor"] = ms / floor["binding_floor_ms"]
            floor[f"{key}_over_x_read_paired"] = _median(
                [t / r for t, r in zip(times[impl], times["read X"])])
    return floor


# ---------------------------------------------------------------------------------------------
# Peak memory (a child process, so that nothing else this script did counts)


def _tree_bytes(sizes, itemsize=4):
    return sum((a * b + b) * itemsize for a, b in zip(sizes[:-1], sizes[1:]))


def _proc_status(field):
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in bytes, or ``None``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak():
    """Reset the kernel's peak-RSS mark ``VmHWM`` (Linux: ``5`` to ``/proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _return_free_heap():
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim(0)``); True if it ran.
    Without it the RSS after compiling counts memory the compiler has already freed."""
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0) or True)
    except (OSError, AttributeError):
        return False


def rss_probe(sizes, batch, lr, n, seed):
    """Run in a fresh process: fnnet trains one epoch as ``fit`` does (``fnnet.to_device``, the
    epoch program without the per-step copy, its inputs kept). For each stage (starting the
    runtime, loading the data, putting it on the device, compiling, training) the RSS after it
    and the peak during it (``VmHWM``, reset before the stage) are noted; prints one JSON line."""
    import jax
    import jax.numpy as jnp

    import fnnet

    # Linux keeps ru_maxrss across fork and exec: a child starts with its parent's peak (here the
    # benchmark's, data and PyTorch included). Its own peak is tracked with VmHWM, reset per stage.
    rusage_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stages = {"imports": {"rss": _proc_status("VmRSS")}}
    resettable = _reset_peak()

    def note(stage):
        stages[stage] = {"rss": _proc_status("VmRSS"),
                         "peak": _proc_status("VmHWM") if resettable else None}
        _reset_peak()

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
    epoch, inputs = fit_epoch({"sizes": sizes, "batch": batch, "lr": lr}, xd, yd, seed)
    compiled = jax.jit(epoch).lower(*inputs).compile()
    trimmed = _return_free_heap()
    note("compile")
    outputs = compiled(*inputs)
    jax.device_get(outputs[-1])
    note("train one epoch")
    rusage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peaks = [v.get("peak") or v["rss"] for v in stages.values()]
    print(json.dumps({"stages": stages, "peak": max(peaks) if resettable else rusage,
                      "getrusage_maxrss": rusage, "getrusage_maxrss_at_start": rusage_start,
                      "source": source, "data_shared_with_host": shared, "heap_trimmed": trimmed,
                      "platform": jax.devices()[0].platform}))


def measure_peak_rss(cfg, n, seed, log):
    """Peak RSS of fnnet training ``cfg`` in a child process, against what has to be resident."""
    sizes, batch = cfg["sizes"], cfg["batch"]
    code = (f"from experiments.benchmark import rss_probe; "
            f"rss_probe({tuple(sizes)!r}, {batch!r}, {cfg['lr']!r}, {n!r}, {seed!r})")
    root = Path(__file__).resolve().parents[1]
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    log("  peak memory: W3 in a separate process ...")
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=dict(os.environ, PYTHONPATH=path),
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {proc.returncode}"}
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    stages = child["stages"]
    data = n * sizes[0] * 4 + n * 4
    params = _tree_bytes(sizes)
    activations = batch * (sizes[0] + 2 * sum(sizes[1:])) * 4  # X_B, then Z_l and A_l per layer
    # fit keeps an epoch's input params to replay it should its loss go non-finite: two sets.
    expected = {"data": data, "params (the epoch's input and output)": 2 * params, "gradients": params,
                "optimizer_state": 8, "batch_activations": activations}
    needed = sum(expected.values())
    base = stages["start the runtime"]["rss"]
    train = stages["train one epoch"]
    out = {"peak_rss": child["peak"], "getrusage_maxrss": child["getrusage_maxrss"],
           "getrusage_maxrss_at_start": child["getrusage_maxrss_at_start"],
           "stages": stages, "expected": expected, "expected_total": needed, "runtime": base,
           "data_shared_with_host": child["data_shared_with_host"], "platform": child["platform"],
           "heap_trimmed": child["heap_trimmed"],
           "peak_rss_over_runtime_plus_needed": child["peak"] / (base + needed)}
    out["compiled_program_resident"] = stages["compile"]["rss"] - stages["data to device"]["rss"]
    if train["peak"] is not None:
        out["training_peak"] = train["peak"]
        out["training_peak_above_compiled"] = train["peak"] - stages["compile"]["rss"]
        # what the epoch allocates: its output params, the gradients, the state and activations
        # (the data and its input params are resident before it starts)
        out["epoch_needs"] = needed - data - params
        out["training_peak_above_compiled_over_epoch_needs"] = (
            out["training_peak_above_compiled"] / out["epoch_needs"])
        # all that training holds at its peak, the python + jax runtime and the compiled code aside
        out["training_holds"] = train["peak"] - base - out["compiled_program_resident"]
        out["training_holds_over_needed"] = out["training_holds"] / needed
    return out


# ---------------------------------------------------------------------------------------------
# Where an epoch's time goes (CPU): XLA's own per-operation trace


_NOT_RUN = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast"}


def _parse_hlo(hlo_text):
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


def _dot_ops(hlo_text):
    """``(ops, dots)``: the names of the operations an optimized HLO module runs (the instructions
    of its entry computation and of the while loops, calls and branches it reaches, but for
    parameters, constants, tuples and bitcasts) and of those that are matrix products: a ``dot``,
    or a fusion that holds one, however deeply nested."""
    comps, entry = _parse_hlo(hlo_text)

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
    comps, _ = _parse_hlo(hlo_text)
    shape = {inst[0]: inst[2] for body in comps.values() for inst in body}
    return sorted(f"{sh} = dot({', '.join(str(shape.get(o)) for o in operands)}) {attributes}"
                  for body in comps.values() for _, op, sh, operands, _, attributes in body
                  if op == "dot")


def profile_epoch(cfg, x, y, seed, log, top=8):
    """One fnnet epoch of ``cfg`` traced by ``jax.profiler`` with XLA:CPU's per-operation events on
    (``xla_cpu_enable_xprof_traceme``): the time in matrix products and in everything else, and the
    ``top`` operations. CPU only (a GPU's trace names kernels, not HLO operations)."""
    import gzip
    import tempfile

    import jax

    import fnnet

    if jax.devices()[0].platform != "cpu":
        return {"skipped": "the per-operation profile reads XLA:CPU's trace; not on " +
                           jax.devices()[0].platform}
    n = len(x)
    epoch, args = fit_epoch(cfg, *fnnet.to_device(x, y), seed)
    compiled = jax.jit(epoch).lower(*args).compile({"xla_cpu_enable_xprof_traceme": True})
    ops, dots = _dot_ops(compiled.as_text())
    jax.block_until_ready(compiled(*args))
    untraced = _median(_time_calls(lambda: jax.block_until_ready(compiled(*args)), 3, warmup=0))
    log("  profile: one W3 epoch under jax.profiler ...")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            jax.block_until_ready(compiled(*args))
        wall = time.perf_counter() - t
        traces = sorted(Path(tmp).rglob("*.trace.json.gz"))
        if not traces:
            return {"skipped": "jax.profiler wrote no perfetto trace"}
        with gzip.open(traces[-1], "rt") as f:
            events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    per_op, first, last = {}, float("inf"), float("-inf")
    for e in events:
        if e.get("ph") == "X" and e.get("name") in ops:
            per_op[e["name"]] = per_op.get(e["name"], 0.0) + e.get("dur", 0) / 1e6
            first, last = min(first, e["ts"]), max(last, e["ts"] + e.get("dur", 0))
    if not per_op:
        return {"skipped": "the trace holds no per-operation events"}
    in_dots = sum(v for k, v in per_op.items() if k in dots)
    if in_dots <= 0:
        return {"skipped": "no matrix product found among the traced operations"}
    steps = n // cfg["batch"]
    flops = train_step_flops(cfg["sizes"], cfg["batch"]) * steps
    ranked = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
    return {"epoch_seconds_traced": wall, "epoch_seconds": untraced,
            "traced_span_seconds": (last - first) / 1e6, "ops_seconds": sum(per_op.values()),
            "matrix_products_seconds": in_dots, "other_seconds": sum(per_op.values()) - in_dots,
            "matrix_products_gflops": flops / in_dots / 1e9,
            "top": [{"op": k, "seconds": v, "matrix_product": k in dots} for k, v in ranked]}


def _print_profile(p, roof, log):
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


# ---------------------------------------------------------------------------------------------
# Report


def _mb(b):
    return b / 1e6


def targets(workloads, compile_limit=1.0):
    """Each target of the brief: the measured value and whether it was met. Speed ratios are the
    paired ones (the median over rounds of the ratio within a round), the most robust to a
    shared machine's changing load; the ratio of medians is in ``ratios``."""
    out = {}

    def ratio(w, a, b):
        r = workloads.get(w, {}).get("paired_ratios", {}).get(a, {}).get(b)
        return None if r is None else float(r)

    for w in WORKLOADS:
        if w not in workloads:
            continue
        t = _target(ratio(w, "fnnet manual", "fnnet autodiff"), 1.0)
        if "manual_vs_autodiff" in workloads[w]:
            t["same_matrix_products"] = workloads[w]["manual_vs_autodiff"]["same_matrix_products"]
            t["paired_ratio_range"] = workloads[w]["manual_vs_autodiff"]["paired_ratio_range"]
        out[f"{w}: fnnet manual >= 1.0x fnnet autodiff"] = t
        compiles = [r.get("compile_seconds") for r in workloads[w]["results"].values()
                    if r.get("compile_seconds") is not None]
        if compiles:
            out[f"{w}: compile < {compile_limit:g} s (slowest fnnet)"] = {
                "value": max(compiles), "met": max(compiles) < compile_limit}
    for w, want in (("W2", 1.8), ("W3", 1.5)):
        if w in workloads:
            out[f"{w}: fnnet >= {want}x torch eager"] = _target(ratio(w, "fnnet manual",
                                                                      "torch eager"), want)
    if "W3" in workloads and "fnnet manual" in workloads["W3"]["results"]:
        out["W3: fnnet >= 90% of the matmul roof"] = _target(
            workloads["W3"]["results"]["fnnet manual"]["fraction_of_roof_paired"], 0.9)
    if "W1" in workloads and "chunked_over_memory_floor" in workloads["W1"].get("floor", {}):
        v = workloads["W1"]["floor"]["chunked_over_memory_floor"]
        out["W1: within 1.5x of the single-read floor"] = {"value": v, "met": v <= 1.5}
    return out


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


def _target(value, want):
    return {"value": value, "met": None if value is None else value >= want}


def print_report(report, log):
    m = report["machine"]
    log("")
    log(f"devices: {report['devices']}   (jax {report['versions']['jax']}, "
        f"{report['cpu_count']} CPU cores, data: {report['data_source']}, baseline threads: "
        f"{report['baseline_threads']})")
    log(f"matmul roof: {m['matmul']['gflops']:.1f} GFLOP/s at the start, "
        f"{m['matmul_after']['gflops']:.1f} at the end (float32 {m['matmul']['n']}², median); "
        f"memory bandwidth: {m['bandwidth']['gbs']:.1f} GB/s (jitted sum over "
        f"{m['bandwidth']['bytes'] / 2**20:.0f} MiB, median)")
    for name, w in report["workloads"].items():
        _print_workload(name, w, log)
    if "profile" in report:
        roof = report["workloads"].get("W3", {}).get("roof_gflops")
        _print_profile(report["profile"], roof, log)
    if "peak_memory" in report:
        _print_memory(report["peak_memory"], log)
    log("")
    log("targets (speed ratios paired within rounds):")
    for what, t in report["targets"].items():
        v = t["value"]
        shown = "n/a" if v is None else f"{v:.3g}"
        verdict = "n/a" if t["met"] is None else ("met" if t["met"] else "MISSED")
        note = ""
        if "paired_ratio_range" in t:
            lo, hi = t["paired_ratio_range"]
            note = (f"  (rounds {lo:.2f}-{hi:.2f}; "
                    + ("same matrix products)" if t["same_matrix_products"] else "different products)"))
        log(f"  {what:<66} {shown:>8}  {verdict}{note}")


def _print_workload(name, w, log):
    log("")
    log(f"{name}: {w['description']}, {w['examples']} examples"
        + (f", batch {w['batch']}" if w["batch"] else "") + f"; {w['flops_per_unit'] / 1e9:.3g} GFLOP "
        f"per {w['unit']}; matmul roof in the same rounds {w['roof_gflops']:.1f} GFLOP/s")
    rows = []
    paired = w["paired_ratios"]
    for impl, r in w["results"].items():
        speed = (f"{r['ms_per_iteration']:.1f} ms/iter" if w["batch"] is None
                 else f"{r['examples_per_second']:,.0f} ex/s")
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
    if "manual_vs_autodiff" in w:
        c = w["manual_vs_autodiff"]
        same = "the same" if c["same_matrix_products"] else "DIFFERENT"
        log(f"fnnet manual and autodiff compile to {same} {c['matrix_products']} matrix products "
            f"(shapes and dimensions compared; {c['hlo_operations'][0]} and {c['hlo_operations'][1]} "
            f"operations in all); their speed ratio ranged {c['paired_ratio_range'][0]:.2f}-"
            f"{c['paired_ratio_range'][1]:.2f} over the rounds")
    if "floor" in w:
        f = w["floor"]
        log(f"floor: reading X ({f['x_bytes'] / 1e6:.0f} MB) once at {f['bandwidth_gbs']:.1f} GB/s takes "
            f"{f['memory_floor_ms']:.1f} ms (a jitted read of X itself: {f['x_read_ms_measured']:.1f} ms); "
            f"the FLOPs at the matmul roof take {f['compute_floor_ms']:.1f} ms, so here W1 is "
            f"{f['binding']}-bound.")
        if "chunked_ms" in f:
            log(f"       chunked fnnet {f['chunked_ms']:.1f} ms = {f['chunked_over_memory_floor']:.2f}x the "
                f"single-read floor ({f['chunked_over_x_read_paired']:.2f}x the read of X, paired), "
                f"{f['chunked_over_binding_floor']:.2f}x the binding floor"
                + (f"; unchunked {f['unchunked_ms']:.1f} ms = {f['unchunked_over_memory_floor']:.2f}x"
                   if "unchunked_ms" in f else ""))
        log("       A full-batch step must stream all of X from memory at least once: that is the "
            "floor. Unchunked, X is read twice (X W1ᵀ, then dZ1ᵀ X); chunked, each chunk's second read "
            "hits the cache. That saves time only where the step runs at memory speed: where its "
            "matrix products are compute-bound, as when the compute floor is the larger, the reads "
            "hide behind the arithmetic.")


def _print_memory(p, log):
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


def plot(report, path):
    """Two panels per workload: each implementation's FLOP rate as a fraction of the matmul roof
    (medians), and its speed relative to fnnet manual (paired ratios, as in the table)."""
    import matplotlib.pyplot as plt

    from fnnet.plots import save_figure  # selects the Agg backend before pyplot is imported

    workloads = report["workloads"]
    names = list(workloads)
    impls = list(dict.fromkeys(i for w in workloads.values() for i in w["results"]))
    width = 0.8 / max(len(impls), 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for j, impl in enumerate(impls):
        xs = np.arange(len(names)) + (j - (len(impls) - 1) / 2) * width
        roof, rel = [], []
        for w in names:
            roof.append(workloads[w]["results"].get(impl, {}).get("fraction_of_roof", np.nan))
            paired = workloads[w]["paired_ratios"].get("fnnet manual", {})
            rel.append(1.0 if impl == "fnnet manual" else 1 / paired[impl] if impl in paired else np.nan)
        axes[0].bar(xs, roof, width, label=impl)
        axes[1].bar(xs, rel, width, label=impl)
    axes[0].set(ylabel="FLOP rate / matmul roof", title="fraction of the float32 matmul roof")
    axes[1].set(ylabel="speed / fnnet manual", title="speed relative to fnnet manual (higher: faster)")
    labels = [f"{w}\n{'-'.join(map(str, workloads[w]['sizes']))}\n"
              + ("full batch" if workloads[w]["batch"] is None else f"batch {workloads[w]['batch']}")
              for w in names]
    for ax in axes:
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xticks(np.arange(len(names)), labels, fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    handles, names_ = axes[0].get_legend_handles_labels()
    fig.legend(handles, names_, loc="lower center", ncol=len(impls), fontsize=8, frameon=False)
    fig.suptitle(f"fnnet benchmark on {', '.join(report['devices'])}", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------


def build_parser():
    p = parser(__doc__.split("\n")[0], "benchmark")
    p.description = __doc__
    p.add_argument("--workloads", default="W1,W2,W3",
                   help="comma-separated subset of W1,W2,W3 (default: all three)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed rounds per workload after the warm-up (default 5; 2 with --quick); "
                        "W1 takes three times as many")
    p.add_argument("--baseline-threads", default="auto",
                   help="threads for numpy's BLAS and PyTorch: 'auto' (the faster of 1 and all "
                        "cores on a short probe) or a number")
    p.add_argument("--no-profile", action="store_true",
                   help="skip the per-operation profile of one W3 epoch (CPU)")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the peak-memory measurement of W3 (a separate process)")
    return p


def _parse_args(argv):
    args = build_parser().parse_args(argv)
    names = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown or not names:
        raise ValueError(f"unknown workloads {unknown or args.workloads!r}; expected a "
                         f"comma-separated subset of {','.join(WORKLOADS)}")
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 5)
    if repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {repeats}")
    if args.baseline_threads != "auto" and (not args.baseline_threads.isdigit()
                                            or int(args.baseline_threads) < 1):
        raise ValueError(f"--baseline-threads must be 'auto' or a positive number, got "
                         f"{args.baseline_threads!r}")
    return args, names, repeats


def main(argv=None):
    try:
        args, names, repeats = _parse_args(argv)
    except ValueError as e:
        print(f"benchmark: {e}", file=sys.stderr)
        return 2
    conf = QUICK if args.quick else FULL

    import jax

    def log(msg):
        print(msg, flush=True)

    x, y, source = load_data(conf["n"], args.seed)
    devices = [str(d) for d in jax.devices()]
    log(f"benchmark on {devices}, data: {source} {x.shape}, repeats: {repeats}")
    log("machine roofs ...")
    roofs = [matmul_roof(conf["matmul_n"], max(repeats, 5))]
    bandwidth = memory_bandwidth(conf["bandwidth_mib"], max(repeats, 5))
    log(f"  matmul {roofs[0]['gflops']:.1f} GFLOP/s, read bandwidth {bandwidth['gbs']:.1f} GB/s")
    workloads = {}
    for name in names:
        cfg = conf[name]
        reps = 3 * repeats if cfg["batch"] is None else repeats
        log(f"{name}: {DESCRIPTION[name]} ...")
        workloads[name] = measure_workload(name, cfg, x, y, reps, args.seed, args.baseline_threads, log,
                                           conf["matmul_n"], conf["bandwidth_mib"])
    roofs.append(matmul_roof(conf["matmul_n"], max(repeats, 5)))
    report = {
        "devices": devices,
        "platform": jax.devices()[0].platform,
        "cpu_count": os.cpu_count(),
        "host": platform.processor() or platform.machine(),
        "versions": {"jax": jax.__version__, "numpy": np.__version__, "python": platform.python_version(),
                     "torch": _torch_version()},
        "data_source": source,
        "quick": args.quick,
        "repeats": repeats,
        "baseline_threads": args.baseline_threads,
        "machine": {"matmul": roofs[0], "matmul_after": roofs[1], "bandwidth": bandwidth},
        "workloads": workloads,
        "flop_count": "per step on B rows: 2 B (3 sum_l n_{l-1} n_l - n_0 n_1) "
                      "(forward, dW, and dX except the first layer; element-wise terms left out)",
    }
    if "W3" in names and not args.no_profile:
        try:
            report["profile"] = profile_epoch(conf["W3"], x, y, args.seed, log)
        except Exception as e:  # a profiler or XLA option this installation lacks: say so, go on
            report["profile"] = {"skipped": f"{type(e).__name__}: {e}"}
    if "W3" in names and not args.no_memory:
        report["peak_memory"] = measure_peak_rss(conf["W3"], conf["n"], args.seed, log)
    report["targets"] = targets(workloads)
    if "peak_memory" in report and "error" not in report["peak_memory"]:
        report["targets"]["W3: training holds <= 1.1x data once + params, grads, state, batch"] = (
            memory_target(report["peak_memory"]))
    print_report(report, log)
    out = Path(args.out)
    write_metrics(out, report)
    plot(report, out / "benchmark.png")
    log(f"\nwrote {out / 'metrics.json'} and {out / 'benchmark.png'}")
    return 0


def _torch_version():
    if not torch_available():
        return None
    import torch

    return torch.__version__


if __name__ == "__main__":
    sys.exit(main())
