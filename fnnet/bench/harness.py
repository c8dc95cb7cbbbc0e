"""The benchmark's harness: the workloads, timing and medians, the machine's roofs, the data, the
thread counts of the CPU baselines, and the epoch program ``fnnet.fit`` runs.

W1–W3 are MLPs trained by plain SGD; W4 is ``fnnet.cnn()`` trained by heavy-ball momentum (lr
0.05, β 0.9, the PyTorch form), the same optimizer in every implementation (its FLOP count:
``fnnet.bench.cnn``).

FLOP count of one training step on a batch of ``B`` rows (matrix products only; the element-wise
terms, ReLU, softmax, bias and the update, are ``O(B · Σ n_out)`` and left out)::

    forward     Z_l = A_{l-1} W_lᵀ        2 B n_{l-1} n_l   per Dense layer
    backward    dW_l = dZ_lᵀ A_{l-1}      2 B n_{l-1} n_l   per Dense layer
                dA_{l-1} = dZ_l W_l       2 B n_{l-1} n_l   per Dense layer but the first
    total       2 B (3 Σ_l n_{l-1} n_l − n_0 n_1)

The matmul roof is a large jitted float32 matmul (GFLOP/s); the read bandwidth a jitted sum over a
large float32 array (GB/s).

Threads: numpy's BLAS and PyTorch spin-wait in their thread pools, so on cores busy with other
work all-core BLAS can run far slower than one thread. Each baseline gets whichever of 1 thread and
all cores was faster on a short probe (``choose_threads``).
"""

from __future__ import annotations

import ctypes
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import fnnet
from fnnet import datasets
from fnnet.devices import parallel

FULL = {
    "n": 60_000,
    "W1": {"sizes": (784, 10, 10), "batch": None, "lr": 0.1},
    "W2": {"sizes": (784, 128, 10), "batch": 128, "lr": 0.1},
    "W3": {"sizes": (784, 1024, 1024, 10), "batch": 128, "lr": 0.05},
    # W4: steps per timed unit (autodiff_steps for jax.grad of lax.conv, ~50x slower on a CPU);
    # accuracy: the time-to-99%-test-accuracy run on the whole of MNIST, capped at 15 epochs
    "W4": {"cnn": {}, "batch": 128, "lr": 0.05, "momentum": 0.9, "steps": 100,
           "autodiff_steps": 4, "accuracy": {"target": 0.99, "epochs": 15}},
    # W5: the character LSTM of fnnet train --dataset shakespeare; steps per timed unit
    "W5": {"lstm": {"vocab_size": 65, "dim": 64, "hidden": 512}, "batch": 64, "block": 64,
           "lr": 3e-3, "clip": 1.0, "steps": 16},
    "matmul_n": 2048,
    "bandwidth_mib": 256,
}
QUICK = {
    "n": 1024,
    "W1": {"sizes": (784, 10, 10), "batch": None, "lr": 0.1},
    "W2": {"sizes": (784, 32, 10), "batch": 64, "lr": 0.1},
    "W3": {"sizes": (784, 64, 64, 10), "batch": 64, "lr": 0.05},
    # W4 at tiny sizes, the same layers as fnnet.cnn(); no time to accuracy (it needs all of MNIST)
    "W4": {"cnn": {"channels": (4, 8), "kernel_size": 2, "hidden": 16}, "batch": 16, "lr": 0.05,
           "momentum": 0.9, "steps": 4, "autodiff_steps": 2, "accuracy": None},
    "W5": {"lstm": {"vocab_size": 65, "dim": 8, "hidden": 16}, "batch": 8, "block": 8,
           "lr": 3e-3, "clip": 1.0, "steps": 4},
    "matmul_n": 256,
    "bandwidth_mib": 8,
}
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")
#: What runs without ``--workloads``: W5 and W6 only when named (each adds a few minutes).
DEFAULT_WORKLOADS = ("W1", "W2", "W3", "W4")
DESCRIPTION = {
    "W1": "784-10-10 ReLU/softmax, full-batch GD",
    "W2": "784-128-10, minibatch SGD",
    "W3": "784-1024-1024-10, minibatch SGD",
    "W4": "fnnet.cnn() on NHWC images, minibatch momentum",
    "W5": "character LSTM, Embedding-LSTM-Dense, cross-entropy over every token, adam + clip",
    "W6": "nanoGPT's CPU recipe step, fnnet.gpt, AdamW + clip (fnnet.bench.gpt)",
}
UNCHUNKED = "fnnet manual, unchunked"
CHUNKED = "fnnet manual, chunked"
BASELINES = ("numpy", "torch eager", "torch autocast bf16")
#: The mixed-precision implementations, timed beside the float32 ones (``--precision``).
BF16 = ("fnnet manual bf16", "fnnet autodiff bf16", "torch autocast bf16")


# ---------------------------------------------------------------------------------------------
# Timing


def median(values) -> float:
    """The median of ``values`` as a float."""
    return float(np.median(np.asarray(values, dtype=float)))


def seconds(fn) -> float:
    """Wall seconds of one call of ``fn()`` (which must block until its result is ready)."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def time_calls(fn, repeats, warmup=1, *, budget_s=0.0, max_repeats=None):
    """Seconds per call of ``fn()`` (which must block until its result is ready), after ``warmup``
    untimed calls: at least ``repeats`` calls, and more, up to ``max_repeats``, while their total
    is under ``budget_s``."""
    for _ in range(warmup):
        fn()
    cap = repeats if max_repeats is None else max(max_repeats, repeats)
    times = []
    while len(times) < repeats or (len(times) < cap and sum(times) < budget_s):
        times.append(seconds(fn))
    return times


def rate(amount, times, scale=1e9):
    """``amount`` per second over ``times``: ``{"median", "best"}``, divided by ``scale``."""
    return {"median": amount / median(times) / scale, "best": amount / min(times) / scale}


def paired(times_a, times_b):
    """The median over rounds of ``b / a`` within a round (the paired ratio)."""
    return median([tb / ta for ta, tb in zip(times_a, times_b)])


# ---------------------------------------------------------------------------------------------
# Roofs


def train_step_flops(sizes, batch):
    """FLOPs of one training step on ``batch`` rows: ``2 B (3 Σ n_{l-1} n_l − n_0 n_1)``."""
    pairs = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2 * batch * (3 * sum(pairs) - pairs[0])


def matmul_unit(n):
    """``(unit, flops)``: ``unit()`` runs a jitted float32 ``(n × n) @ (n × n)`` on the default
    jax device, ``2 n³`` FLOPs, and waits for it."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    mm = jax.jit(lambda a, b: a @ b)
    return (lambda: mm(a, b).block_until_ready()), 2 * n**3


def read_unit(x):
    """``(unit, bytes)``: ``unit()`` reads the float32 array ``x`` once on the default jax device
    (a jitted sum: every byte read, one scalar written) and waits for it."""
    xd = jax.device_put(jnp.asarray(x, jnp.float32))
    total = jax.jit(jnp.sum)
    return (lambda: total(xd).block_until_ready()), xd.size * 4


def bandwidth_array(mib):
    """A float32 array of ``mib`` MiB, for measuring the read bandwidth."""
    return np.ones(mib * 2**20 // 4, np.float32)


def matmul_roof(n, repeats):
    """The float32 matmul rate of the default jax device, GFLOP/s, median of ``repeats``."""
    unit, flops = matmul_unit(n)
    r = rate(flops, time_calls(unit, repeats, warmup=2))
    return {"gflops": r["median"], "gflops_best": r["best"], "n": n}


def memory_bandwidth(mib, repeats):
    """Read bandwidth of the default jax device, GB/s: median over ``repeats`` of a jitted sum
    over a ``mib`` MiB float32 array."""
    unit, nbytes = read_unit(bandwidth_array(mib))
    r = rate(nbytes, time_calls(unit, repeats, warmup=2))
    return {"gbs": r["median"], "gbs_best": r["best"], "bytes": nbytes}


# ---------------------------------------------------------------------------------------------
# Data and the program under test


def load_data(n, seed):
    """``(x (n, 784) float32 in [0, 1], y (n,) int32, source)``: the first ``n`` MNIST training
    images when the files can be found without downloading, random pixels and labels otherwise."""
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


def model_and_optimizer(cfg):
    """``(model, optimizer)`` of a workload: ``fnnet.mlp(cfg["sizes"])`` and SGD for W1–W3,
    ``fnnet.cnn(**cfg["cnn"])`` and momentum for W4, ``fnnet.language_model(**cfg["lstm"])`` and
    Adam behind ``clip_by_global_norm`` for W5 (as ``fnnet train --dataset shakespeare``)."""
    if "lstm" in cfg:
        return (fnnet.language_model(**cfg["lstm"]),
                fnnet.optim.clip_by_global_norm(fnnet.optim.adam(cfg["lr"]), cfg["clip"]))
    if "cnn" in cfg:
        return fnnet.cnn(**cfg["cnn"]), fnnet.optim.momentum(cfg["lr"], beta=cfg["momentum"])
    return fnnet.mlp(cfg["sizes"]), fnnet.optim.sgd(cfg["lr"])


def fit_epoch(cfg, xd, yd, seed, grads="manual", chunk_size="auto", precision="f32"):
    """``(program, state, chunk)``: the epoch program ``fnnet.fit`` compiles for ``cfg``
    (``fnnet.EpochRunner(...).program(keep_last_good=False)``, a pure ``(state, x, y) -> (state,
    stats)``), its first state (``fnnet.TrainState.create``) and the chunk size, resolved as ``fit``
    resolves it (``fnnet.devices.parallel.resolve_chunk_size``), for data ``xd, yd`` already on the device
    (``fnnet.to_device``), the products under ``precision`` (``fnnet.precision``; no loss
    scaling, so ``"f16"`` is not timed here)."""
    model, opt = model_and_optimizer(cfg)
    chunk = parallel.resolve_chunk_size(chunk_size, len(xd), cfg["batch"], xd)
    runner = fnnet.EpochRunner(fnnet.precision.with_precision(model, precision), "cross-entropy",
                               opt, len(xd), cfg["batch"], grads=grads, chunk_size=chunk)
    return runner.program(keep_last_good=False), initial_state(cfg, model, opt, seed), chunk


_STATES = {}


def initial_state(cfg, model, optimizer, seed):
    """``fnnet.TrainState.create(model, optimizer, PRNGKey(seed))``, made once per workload and
    seed and shared by its manual and autodiff programs (the state depends on neither the data
    nor the gradients; creating it compiles the init, seconds for the CNN). Its arrays are
    immutable and never donated, so sharing them is safe."""
    key = (repr(sorted(cfg.items())), seed)
    if key not in _STATES:
        _STATES[key] = fnnet.TrainState.create(model, optimizer, jax.random.PRNGKey(seed),
                                               dtype=jnp.float32)
    return _STATES[key]


# ---------------------------------------------------------------------------------------------
# Threads of the CPU baselines


def _openblas():
    """numpy's OpenBLAS ``(set_num_threads, get_num_threads)`` through ctypes, or ``None`` (other
    BLAS builds: their thread count stays as it is and is reported as such)."""
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
    if impl.startswith("torch"):
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
        timings[count] = min(time_calls(probe, 2, warmup=0))
    best = min(timings, key=timings.get)
    log(f"    {impl}: {best} thread(s) (probe: " + ", ".join(
        f"{c} thread(s) {1e3 * t:.0f} ms" for c, t in timings.items()) + ")")
    return set_threads(impl, best), timings


def baseline_threads(impl, probe, setting, info, log):
    """The thread count ``impl`` runs with: the faster on ``probe`` with ``setting`` ``"auto"``
    (its timings go into ``info``), else ``int(setting)``; ``None`` when it cannot be set."""
    if setting != "auto":
        return set_threads(impl, int(setting))
    count, timings = choose_threads(impl, probe, log)
    info["thread_probe_seconds"] = {str(c): t for c, t in timings.items()}
    return count
