"""Startup: how long ``fnnet train`` compiles on a first run and on an identical second run.

``python -m fnnet.bench.startup [--repeats 3] [--model mlp|cnn] [--json FILE]``

The command line keeps compiled programs in JAX's persistent compilation cache
(``fnnet.cli.common.compile_cache``). Each repeat here writes a fresh, empty cache folder and runs
``fnnet train`` twice in fresh processes (``python -m fnnet.cli train ... --compile-cache DIR``):
the first run compiles everything and fills the cache (cold), the second finds every program in it
(warm). The figures are ``metrics.json``'s ``compile_seconds`` (``fit``'s compile time: the epoch
program and the validation program, from tracing to a loaded executable) and the wall time of
each process (Python and JAX start-up, data, training, scoring, files). The data are synthetic
MNIST-shaped images (``fnnet.datasets.synthetic_mnist``): compile time depends on the shapes, not
on the pixels. Everything is written under a temporary folder, removed afterwards.

``measure(repeats=3)`` returns the figures as a dict (medians, ranges, every run, the CPU) for a
report; ``main`` prints them as a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .harness import median
from .mixed import cpu_description, describe_cpu
from .report import table

#: Synthetic training and test images: a tenth of the training set is held out for validation.
N_TRAIN, N_TEST = 2560, 512
#: The ``fnnet train`` flags of every run (besides data, output and cache folders).
TRAIN_FLAGS = ("--epochs", "1", "--quiet", "--no-download")
RUN_TIMEOUT_S = 600
def _train(data, out, cache, model):
    """One ``fnnet train`` in a fresh process: ``{"compile_seconds", "train_seconds",
    "wall_seconds"}``."""
    command = [sys.executable, "-m", "fnnet.cli", "train", "--model", model, "--data-dir",
               str(data), "--out", str(out), "--compile-cache", str(cache), *TRAIN_FLAGS]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"fnnet train exited with status {proc.returncode}: {last}")
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    return {"compile_seconds": metrics["compile_seconds"], "train_seconds": metrics["seconds"],
            "wall_seconds": wall}


def _summary(runs):
    """Median and range of each figure over ``runs``."""
    return {name: {"median": median([r[name] for r in runs]),
                   "min": min(r[name] for r in runs), "max": max(r[name] for r in runs)}
            for name in runs[0]}


def measure(repeats=3, model="mlp", log=None):
    """Cold and warm ``fnnet train`` start-up, ``repeats`` times, each with a fresh cache.

    Args:
        repeats: cold/warm pairs to run (each pair: two fresh processes, one new cache folder).
        model: ``"mlp"`` (784-128-10, batch 128) or ``"cnn"`` (``fnnet.cnn()``'s defaults).
        log: called with a line of progress per run (default: nothing).

    Returns:
        ``{"cold", "warm"}`` (each ``{"compile_seconds", "train_seconds", "wall_seconds"}`` with
        ``median``, ``min``, ``max``), ``"speedup"`` (median cold / median warm compile seconds),
        ``"runs"`` (every run), ``"cache_entries"`` and ``"cache_bytes"`` (of the last cache),
        ``"cpu"`` (``cpu_description``), ``"versions"``, ``"model"`` and ``"examples"``.
    """
    import jax

    from .. import datasets

    log = log or (lambda line: None)
    runs = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory(prefix="fnnet-startup-") as tmp:
        tmp = Path(tmp)
        train, test = datasets.synthetic_mnist(N_TRAIN, N_TEST, seed=0)
        datasets.write_mnist_files(tmp / "data" / "mnist", train, test)
        for repeat in range(repeats):
            cache = tmp / f"cache-{repeat}"
            for kind in ("cold", "warm"):
                run = _train(tmp / "data", tmp / f"out-{repeat}-{kind}", cache, model)
                runs[kind].append(run)
                log(f"  repeat {repeat + 1}/{repeats}, {kind}: compile {run['compile_seconds']:.3f} s, "
                    f"process {run['wall_seconds']:.2f} s")
        entries = [p for p in cache.rglob("*") if p.is_file()]
        cache_bytes = sum(p.stat().st_size for p in entries)
    cold, warm = _summary(runs["cold"]), _summary(runs["warm"])
    return {"cold": cold, "warm": warm,
            "speedup": cold["compile_seconds"]["median"] / warm["compile_seconds"]["median"],
            "runs": runs, "cache_entries": len(entries), "cache_bytes": cache_bytes,
            "cpu": cpu_description(), "model": model, "repeats": repeats,
            "examples": {"train": N_TRAIN - N_TRAIN // 10, "validation": N_TRAIN // 10,
                         "test": N_TEST},
            "versions": {"jax": jax.__version__, "python": platform.python_version()}}


def report(result):
    """The figures of ``measure`` as text lines."""
    lines = [f"fnnet train start-up, --model {result['model']}, 1 epoch on "
             f"{result['examples']['train']} synthetic training images; {result['repeats']} "
             f"repeats, each two fresh processes sharing a new compile cache",
             f"{describe_cpu(result['cpu'])}; jax {result['versions']['jax']}", ""]
    rows = []
    for kind, what in (("cold", "first run (empty cache)"), ("warm", "second run (cache filled)")):
        c, w = result[kind]["compile_seconds"], result[kind]["wall_seconds"]
        rows.append([what, c["median"], f"{c['min']:.3g}-{c['max']:.3g}", w["median"]])
    lines.append(table(rows, ["run", "compile s (median)", "compile s (range)",
                              "process wall s (median)"]))
    lines.append(f"\ncompile time, cold / warm: {result['speedup']:.1f}x; the cache held "
                 f"{result['cache_entries']} programs, {result['cache_bytes'] / 1e6:.2f} MB")
    return lines


def main(argv=None):
    """Measure and print; with ``--json FILE`` also write the figures. Returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m fnnet.bench.startup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="cold/warm pairs (default: 3)")
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp",
                        help="the network fnnet train compiles (default: mlp)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    result = measure(args.repeats, args.model, log=lambda line: print(line, flush=True))
    print("\n".join(report(result)))
    if args.json is not None:
        from ..io import write_json

        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
