"""``fnnet bench``: run fnnet's benchmark, ``fnnet.bench.main``, with the arguments given.

``fnnet.bench`` is imported only when the command runs, so that the rest of the command line works
where the benchmark cannot be imported.
"""

from __future__ import annotations

import importlib
import sys

from .common import UsageError, check_out, exit_code

BENCH_MODULE = "fnnet.bench"

HELP = """\
run fnnet's benchmark, fnnet.bench (arguments forwarded)"""

USAGE = """\
usage: fnnet bench [ARGS ...]

Run fnnet's benchmark of the training step (also run as python -m fnnet.bench). Every argument
after 'bench' is passed to fnnet.bench.main unchanged, so 'fnnet bench --help' shows the
benchmark's own flags."""


def add_parser(subparsers):
    """List ``bench`` among the commands; ``main`` hands its arguments to ``run`` unparsed."""
    subparsers.add_parser("bench", help=HELP, add_help=False)


def _out_flag(argv):
    """The value of ``--out`` in ``argv`` (``--out DIR`` or ``--out=DIR``), or ``None``."""
    for index, arg in enumerate(argv):
        if arg == "--out" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--out="):
            return arg.removeprefix("--out=")
    return None


def run(argv):
    """Forward ``argv`` to ``fnnet.bench.main`` (imported when the command runs); return its exit
    status. An ``--out`` that cannot be written is refused first (exit status 2), so that no
    benchmark runs for nothing."""
    out = _out_flag(argv)
    if out is not None and not {"-h", "--help"} & set(argv):
        try:
            check_out("fnnet bench", out)
        except UsageError as e:
            print(f"{e.prog}: error: {e}", file=sys.stderr)
            return 2
    try:
        benchmark_main = importlib.import_module(BENCH_MODULE).main
    except (ImportError, AttributeError) as e:
        if "-h" in argv or "--help" in argv:
            print(USAGE)
            print(f"\n(The benchmark cannot be imported here: {e}.)")
            return 0
        print(f"fnnet bench: error: cannot import {BENCH_MODULE}.main ({e})", file=sys.stderr)
        return 1
    saved_argv0 = sys.argv[0] if sys.argv else None
    if sys.argv:
        sys.argv[0] = "fnnet bench"  # the program name argparse shows in the benchmark's messages
    try:
        return exit_code(benchmark_main(list(argv)))
    except SystemExit as e:
        return exit_code(e.code)
    finally:
        if saved_argv0 is not None:
            sys.argv[0] = saved_argv0
