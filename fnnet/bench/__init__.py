"""Benchmark: fnnet against autodiff, plain numpy and PyTorch, and against the machine's roofs.

``python -m fnnet.bench [--quick] [--workloads W1,W2,W3,W4,W5,W6] [--repeats 5] [--out DIR]`` (or
``fnnet bench ...``)

Workloads (float32, MNIST-shaped data: the real MNIST when ``fnnet.datasets.load_mnist`` finds it,
e.g. with ``FNNET_DATA_DIR`` set, random pixels and labels otherwise):

    W1  784-10-10, ReLU/softmax, full-batch gradient descent over 60,000 examples  (ms/iteration)
    W2  784-128-10, minibatch 128, SGD                                             (examples/s)
    W3  784-1024-1024-10, minibatch 128, SGD                                       (examples/s)
    W4  fnnet.cnn() (convs 1→32→64, max pools, dropout, dense 1600→128→10) on NHWC
        images, minibatch 128, momentum 0.05 (β 0.9); and the time to 99% test
        accuracy on MNIST, compile included (fnnet.bench.cnn)                      (examples/s, s)
    W5  the character LSTM of fnnet train --dataset shakespeare: Embedding(65, 64),
        LSTM(64, 512), Dense(512, 65), cross-entropy over every token, 64 windows of 64
        characters, adam + clip_by_global_norm (fnnet.bench.lstm; tiny Shakespeare when
        load_shakespeare finds it, random ids otherwise)                           (tokens/s)

    W6  nanoGPT's CPU recipe step: fnnet.gpt(65, 64, 4 blocks, 4 heads, width 128),
        12 windows of 64 characters, AdamW + clip_by_global_norm; and the T = 2048
        temporaries of the lean backward, the P-keeping one and jax.grad
        (fnnet.bench.gpt, also python -m fnnet.bench.gpt with its time to loss 1.88)  (tokens/s)

W1–W4 run by default; W5 and W6 only when named (``--workloads W5,W6``, or W1,W2,W3,W4,W5,W6 for
all): each adds a few minutes. W4 makes the run several minutes longer: jax.grad of lax.conv inside
the scan takes about a minute to compile on a CPU, and the time-to-accuracy run trains up to 15
epochs (it stops at 99%; --no-time-to-accuracy skips it, --quick leaves it out; --workloads
W1,W2,W3 leaves W4 out).

Implementations, side by side in one run (on a shared machine, quote the ratios):

    fnnet manual     the program fnnet.fit runs (fnnet.EpochRunner's, from fnnet.TrainState.create,
                     compiled once) with the hand-derived backward; for W1 the full batch as
                     fit's chunk_size="auto" takes it on this machine (unchunked unless X takes
                     over a sixteenth of the memory), and once more the other way ("fnnet manual,
                     chunked" or "fnnet manual, unchunked"), so both are reported
    fnnet autodiff   the same with grads="autodiff": jax.grad of the same forward (for W4, of
                     apply: lax.conv and lax.reduce_window, timed on 4 steps, not 100; for W5,
                     of the scanned apply)
    numpy            the notes' equations in plain numpy (fnnet.bench.baselines)
    torch eager      PyTorch on the CPU, eager (skipped with a message when torch is absent)

Timing: every implementation is set up and warmed up, then timed in rounds: each round runs one
unit of each (one iteration for W1, one epoch for W2 and W3, a fixed number of steps for W4 and
W5) and the matmul roof, in an order that
rotates from round to round, so that a shared machine's changing load hits all of them alike. Each
figure is the median of ``--repeats`` rounds (at least 5; W1 takes three times as many, its
iterations being short). Ratios are given two ways: of the medians (``ratios``) and paired, the
median over rounds of the ratio within a round (``paired_ratios``, the more robust, used for the
targets and the table). fnnet's compile time (wall and CPU) is reported on its own line. The CPU
baselines' BLAS and PyTorch thread pools spin-wait, so on each workload each baseline runs with
whichever of 1 thread and all cores was faster on a short probe (a tenth of an epoch, or one
full-batch iteration; ``--baseline-threads`` fixes the count); XLA keeps its own thread pool.

FLOPs are counted for the matrix products of a training step, ``2 B (3 Σ_l n_{l-1} n_l − n_0 n_1)``
on a batch of ``B`` rows (``fnnet.bench.harness``; W4's convolutions as ``fnnet.bench.cnn`` says:
forward, dW and dX each ``2·B·OH·OW·kh·kw·Cin·Cout``, no dX for the first layer; W5's per token
as ``fnnet.bench.lstm`` says, ``3·2·(D·4H + H·4H + H·V)``, 7.28 MFLOP); an
implementation's "fraction of roof" is its FLOP rate by this count divided by the matmul roof, a
large jitted float32 matmul. W1's floors (``fnnet.bench.workload``): reading X once at the measured
memory bandwidth, and the step's FLOPs at the matmul roof; whichever is larger binds.

Peak memory (``fnnet.bench.memory``, ``--no-memory`` skips it): a separate process trains W3 as
``fit`` does and reports its RSS stage by stage, next to what must be resident. Where W3's time
goes (``fnnet.bench.profile``, CPU, ``--no-profile`` skips it): one epoch traced by ``jax.profiler``
with XLA:CPU's per-operation events, split into matrix products and the rest.

Outputs in ``--out`` (default ``runs/benchmark``): ``metrics.json``, ``benchmark.png`` and the
printed table. fnnet runs on whatever ``jax.devices()`` offers (reported); numpy and PyTorch run on
the CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import jax
import numpy as np

# gpt and startup are imported where they are used: each also runs as `python -m fnnet.bench.gpt`
# (or .startup), and runpy warns when the package has imported the module it is about to run.
from ..cli.common import folder
from . import baselines, cnn, harness, lstm, memory, mixed, profile, report, workload
from .harness import DEFAULT_WORKLOADS, FULL, QUICK, WORKLOADS

__all__ = ["build_parser", "main"]


def build_parser(prog=None):
    """The benchmark's command-line flags (``prog``: the program name shown, by default the one
    ``sys.argv[0]`` gives: ``python -m fnnet.bench``, or ``fnnet bench``)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=folder, default=Path("runs") / "benchmark",
                   help="folder for benchmark.png and metrics.json (default: runs/benchmark)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, a few seconds: what the test suite runs")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS),
                   help="comma-separated subset of W1,W2,W3,W4,W5,W6 (default: W1,W2,W3,W4; "
                        "W4, the CNN, adds several minutes; W5, the character LSTM, two to "
                        "three; W6, the GPT, three to four)")
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
    p.add_argument("--no-startup", action="store_true",
                   help="skip the cold and warm compile times of fnnet train (fnnet.bench.startup, "
                        "two fresh processes; off with --quick)")
    bf16 = p.add_mutually_exclusive_group()
    bf16.add_argument("--bf16", dest="bf16", action="store_const", const="on", default="auto",
                      help="time the bf16 columns (fnnet's bf16 programs, PyTorch autocast) even "
                           "on a CPU without bfloat16 matrix units, where they are left out by "
                           "default (emulated there, and slow)")
    bf16.add_argument("--no-bf16", dest="bf16", action="store_const", const="off",
                      help="time float32 only: leave out fnnet's bf16 programs and PyTorch "
                           "autocast")
    p.add_argument("--no-time-to-accuracy", action="store_true",
                   help="skip W4's time to 99%% test accuracy on MNIST (up to 15 epochs; off "
                        "with --quick)")
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


def _log(msg):
    print(msg, flush=True)


def measure_one(name, conf, x, y, args, repeats, log, bf16):
    """One workload's report (W4's with its time to accuracy unless ``--no-time-to-accuracy``),
    with its bf16 columns if ``bf16``."""
    log(f"{name}: {harness.DESCRIPTION[name]} ...")
    if name == "W6":  # its own sizes (fnnet.bench.gpt.QUICK, FULL) and its own bf16 decision
        from . import gpt
        return gpt.measure_gpt(repeats, args.seed, log, quick=args.quick, bf16=args.bf16,
                               threads=args.baseline_threads, memory=not args.no_memory)
    cfg = conf[name]
    if name == "W5":
        return lstm.measure_lstm(name, cfg, repeats, args.seed, args.baseline_threads, log,
                                 conf["matmul_n"], bf16)
    if name == "W4":
        out = cnn.measure_cnn(name, cfg, x, y, repeats, args.seed, args.baseline_threads, log,
                              conf["matmul_n"], bf16)
        if not args.no_time_to_accuracy:
            out["time_to_accuracy"] = cnn.time_to_accuracy(cfg, args.seed, log)
        return out
    reps = 3 * repeats if cfg["batch"] is None else repeats
    return workload.measure_workload(name, cfg, x, y, reps, args.seed, args.baseline_threads, log,
                                     conf["matmul_n"], conf["bandwidth_mib"], bf16)


def measure(args, names, repeats, log=_log):
    """Every measurement the flags ask for: the report (``metrics.json``'s content)."""
    conf = QUICK if args.quick else FULL
    x, y, source = harness.load_data(conf["n"], args.seed)
    devices = [str(d) for d in jax.devices()]
    log(f"benchmark on {devices}, data: {source} {x.shape}, repeats: {repeats}")
    log("machine roofs ...")
    roofs = [harness.matmul_roof(conf["matmul_n"], max(repeats, 5))]
    bandwidth = harness.memory_bandwidth(conf["bandwidth_mib"], max(repeats, 5))
    log(f"  matmul {roofs[0]['gflops']:.1f} GFLOP/s, read bandwidth {bandwidth['gbs']:.1f} GB/s")
    cpu = mixed.cpu_description()
    bf16, bf16_why = mixed.bf16_columns(args.bf16, cpu, jax.default_backend())
    if not bf16 and args.bf16 == "auto":
        log(f"bf16 columns {bf16_why}")
    workloads = {name: measure_one(name, conf, x, y, args, repeats, log, bf16) for name in names}
    roofs.append(harness.matmul_roof(conf["matmul_n"], max(repeats, 5)))
    out = {
        "devices": devices, "platform": jax.devices()[0].platform, "cpu_count": os.cpu_count(),
        "cpu": cpu,
        "host": platform.processor() or platform.machine(),
        "versions": {"jax": jax.__version__, "numpy": np.__version__,
                     "python": platform.python_version(), "torch": baselines.torch_version()},
        "data_source": source, "quick": args.quick, "repeats": repeats, "bf16": bf16_why,
        "baseline_threads": args.baseline_threads,
        "machine": {"matmul": roofs[0], "matmul_after": roofs[1], "bandwidth": bandwidth},
        "workloads": workloads,
        "flop_count": "per step on B rows: 2 B (3 sum_l n_{l-1} n_l - n_0 n_1) "
                      "(forward, dW, and dX except the first layer; element-wise terms left out); "
                      "W4: each Conv2D 2 B OH OW kh kw Cin Cout for the forward, dW and dX alike, "
                      "Dense as above, no dX for the first layer; "
                      "W5: per token 3 * 2 (D 4H + H 4H + H V) (input projection, recurrent "
                      "product, dense head; forward, dW and dX each)",
    }
    if "W3" in names and not args.no_profile:
        try:
            out["profile"] = profile.profile_epoch(conf["W3"], x, y, args.seed, log)
        except Exception as e:  # a profiler or XLA option this installation lacks: say so, go on
            out["profile"] = {"skipped": f"{type(e).__name__}: {e}"}
    if "W3" in names and not args.no_memory:
        out["peak_memory"] = memory.measure_peak_rss(conf["W3"], conf["n"], args.seed, log)
    if not (args.quick or args.no_startup):
        log("fnnet train start-up, cold and warm compile cache ...")
        from . import startup
        out["startup"] = startup.measure(repeats=1, log=log)
    out["targets"] = report.targets(workloads, cpu=cpu)
    if "startup" in out:
        warm = out["startup"]["warm"]["compile_seconds"]["median"]
        out["targets"]["fnnet train: a second identical run compiles in < 0.2 s"] = {
            "value": warm, "met": warm < 0.2}
    if "peak_memory" in out and "error" not in out["peak_memory"]:
        out["targets"][report.MEMORY_TARGET] = report.memory_target(out["peak_memory"])
    return out


def main(argv=None) -> int:
    """Run the benchmark with the command-line flags ``argv``; return the exit status (0, or 2 for
    bad flags)."""
    try:
        args, names, repeats = _parse_args(argv)
    except ValueError as e:
        print(f"benchmark: {e}", file=sys.stderr)
        return 2
    result = measure(args, names, repeats)
    report.print_report(result, _log)
    metrics, png = report.write(result, args.out)
    _log(f"\nwrote {metrics} and {png}")
    return 0
