"""``fnnet launch -n N -- COMMAND ...``: run COMMAND in N local processes that train as one.

Each process gets the environment ``fnnet.devices.distributed.initialize`` reads: ``FNNET_COORDINATOR``
(``127.0.0.1:PORT``, a free port unless ``--port``), ``FNNET_NUM_PROCESSES=N`` and
``FNNET_PROCESS_ID`` (0 .. N-1), and with ``--devices-per-process K`` an ``XLA_FLAGS`` that gives
each process K CPU devices; ``FNNET_LAUNCH_COMMAND`` holds the launch line (``fnnet launch -n N
...``), so that ``fnnet train`` interrupted prints a resume command under the same launcher.
``fnnet ...`` runs with this Python (``child_command``: ``fnnet.cli``'s ``main`` behind a Ctrl-C
guard, so that an interrupt that arrives while the process imports JAX is honoured, not lost);
any other command runs as given (``-- python -m mypackage.train``).

Every line a process prints is forwarded, prefixed with its rank (``[1] epoch 2/10 ...``; none
with ``--no-prefix``). Ctrl-C is passed on to every process (a process still running after
``--grace`` seconds is terminated, then killed). When a process exits with a non-zero status or is
killed by a signal, the others are terminated at once and ``fnnet launch`` prints one line naming
the process and its status, and exits with that status (128 + N for signal N). It exits 0 when
every process did.

This module also holds what ``fnnet train --distributed`` needs from the command line:
``join`` and ``check_split``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from ..devices import distributed
from .common import FORMATTER, Parser, UsageError, non_negative_float, positive_int

HELP = "run a command in N local processes that train as one (fnnet train --distributed)"
USAGE_HINT = "e.g. fnnet launch -n 2 -- fnnet train --distributed"
DEVICE_FLAG = "--xla_force_host_platform_device_count"
EXIT_INTERRUPTED = 130
POLL_SECONDS = 0.05
#: The environment variable holding the launch line (``fnnet launch -n N ...``, before ``--``).
ENV_LAUNCH = "FNNET_LAUNCH_COMMAND"
#: What ``fnnet ...`` runs as in each process (``python -c BOOTSTRAP ARGS...``): Ctrl-C deferred
#: while fnnet and JAX are imported (a KeyboardInterrupt raised there is a traceback, or is lost
#: inside JAX's garbage-collection callback), then ``fnnet.cli.console``, which honours it (and,
#: after a Ctrl-C, ends the process without the interpreter's teardown, which could crash).
BOOTSTRAP = """\
import signal, sys
def deferred(signum, frame):
    deferred.fnnet_deferred_interrupts.append(signum)
deferred.fnnet_deferred_interrupts = []
signal.signal(signal.SIGINT, deferred)
sys.argv[0] = "fnnet"
from fnnet.cli import console
sys.exit(console())
"""

DESCRIPTION = f"""\
Run COMMAND (everything after --) in N processes on this machine, set up to join one distributed
run: FNNET_COORDINATOR=127.0.0.1:PORT, FNNET_NUM_PROCESSES=N and FNNET_PROCESS_ID=0..N-1, which
fnnet train --distributed and fnnet.devices.distributed.initialize() read. 'fnnet ...' runs with this
Python (python -m fnnet.cli); any other command runs as given.

Output lines are prefixed with the process's rank. When a process fails (a non-zero exit status or
a signal), the others are stopped and the launcher exits with that status, naming the process.
Ctrl-C is passed on to every process.

{USAGE_HINT} --epochs 3
fnnet launch -n 2 --devices-per-process 4 -- python -m mypackage.train   (8 CPU devices in all)"""


def add_parser(subparsers):
    """List ``launch`` among the commands; ``main`` hands its arguments to ``run`` unparsed."""
    subparsers.add_parser("launch", help=HELP, add_help=False)


def build_parser():
    """The flags before ``--``."""
    parser = Parser(prog="fnnet launch", formatter_class=FORMATTER, description=DESCRIPTION,
                    usage="fnnet launch -n N [--port P] [--devices-per-process K] [--grace S] "
                          "[--no-prefix] -- COMMAND ...")
    parser.add_argument("-n", "--processes", type=positive_int, required=True, metavar="N",
                        help="how many processes to start")
    parser.add_argument("--port", type=positive_int, metavar="P",
                        help="the coordinator's port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--devices-per-process", type=positive_int, metavar="K",
                        help=f"give each process K CPU devices ({DEVICE_FLAG}=K in XLA_FLAGS)")
    parser.add_argument("--grace", type=non_negative_float, default=10.0, metavar="S",
                        help="after Ctrl-C, seconds to wait before terminating, a finite number "
                             ">= 0 (default: 10)")
    parser.add_argument("--no-prefix", action="store_true",
                        help="forward output lines without the [rank] prefix")
    return parser


def parse(argv):
    """``(options, command)`` of ``fnnet launch``'s ``argv``; ``UsageError`` for a bad one."""
    if "--" not in argv:
        if {"-h", "--help"} & set(argv):
            build_parser().parse_args(["--help"])
        raise UsageError("fnnet launch", f"expected -- and then the command to run, {USAGE_HINT}")
    split = argv.index("--")
    options, command = build_parser().parse_args(argv[:split]), argv[split + 1:]
    if not command:
        raise UsageError("fnnet launch", f"no command after --; {USAGE_HINT}")
    if options.port is not None and options.port > 65535:
        raise UsageError("fnnet launch", f"argument --port: expected a port in 1..65535, got "
                                         f"{options.port}")
    if command[0] == "fnnet":
        words = command[1:2]
        if words == ["launch"]:
            raise UsageError("fnnet launch", "the command cannot be fnnet launch itself")
        if words == ["train"] and not {"--distributed", "-h", "--help"} & set(command):
            raise UsageError("fnnet launch", "fnnet train needs --distributed here: without it "
                                             "every process would train alone and all would write "
                                             "into the same --out")
        command = child_command(command)
    elif shutil.which(command[0]) is None:
        raise UsageError("fnnet launch", f"cannot run {command[0]!r}: no such program; expected a "
                                         f"program on PATH or a path to one")
    return options, command


def child_command(command):
    """What ``fnnet ARGS...`` runs as in a process of the launch: this Python running
    ``BOOTSTRAP`` with ``ARGS``."""
    return [sys.executable, "-c", BOOTSTRAP, *command[1:]]


def free_port(port=None):
    """``port`` if it is free on 127.0.0.1 (``UsageError`` if not), else a free port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port or 0))
        except OSError as e:
            raise UsageError("fnnet launch", f"argument --port: cannot use port {port} on "
                                             f"127.0.0.1 ({e.strerror}); expected a free port") from None
        return probe.getsockname()[1]


def environment(rank, count, port, devices_per_process=None, base=None, launch_argv=None):
    """The environment of process ``rank`` of ``count``.

    Args:
        rank, count: the process's id and the number of processes.
        port: the coordinator's port on 127.0.0.1.
        devices_per_process: K CPU devices per process, or ``None`` to leave ``XLA_FLAGS`` alone.
        base: the environment to start from (default ``os.environ``).
        launch_argv: the launch line's words (``["launch", "-n", "2", ...]``, before ``--``),
            recorded in ``ENV_LAUNCH`` as ``fnnet launch ...``; ``None`` to record none.

    Returns:
        A new dict.
    """
    env = dict(os.environ if base is None else base)
    env.pop(ENV_LAUNCH, None)
    env.update({distributed.ENV_COORDINATOR: f"127.0.0.1:{port}",
                distributed.ENV_NUM_PROCESSES: str(count),
                distributed.ENV_PROCESS_ID: str(rank), "PYTHONUNBUFFERED": "1"})
    if launch_argv is not None:
        env[ENV_LAUNCH] = shlex.join(["fnnet", *map(str, launch_argv)])
    if devices_per_process:
        flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_FLAG)]
        env["XLA_FLAGS"] = " ".join([*flags, f"{DEVICE_FLAG}={devices_per_process}"])
    return env


def _forward(stream, out, prefix, lock):
    """Copy ``stream``'s lines to ``out`` (a text stream), each after ``prefix``; once ``out`` is
    closed (``fnnet launch ... | head``), keep reading so that the process never blocks."""
    target = getattr(out, "buffer", None)
    for line in iter(stream.readline, b""):
        if out is None:
            continue
        try:
            with lock:
                if target is not None:
                    target.write(prefix.encode() + line)
                else:
                    out.write(prefix + line.decode(errors="replace"))
                out.flush()
        except (OSError, ValueError):  # a broken pipe, a closed file
            out = None
    stream.close()


def _parent_death_signal():
    """On Linux, a function that makes the calling (child) process receive SIGTERM when the
    launcher dies, however it dies; ``None`` elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded here, before any fork
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _start(command, env):
    """Start one process in a session of its own, so that a terminal's Ctrl-C reaches only the
    launcher, which passes it on."""
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_parent_death_signal())


def _forward_all(procs, no_prefix, started):
    """Threads forwarding every process's output (started once every process is: a thread
    running while the launcher forks could leave a lock held in the child), each appended to
    ``started`` once it runs, so a Ctrl-C meanwhile leaves there only threads to wait for."""
    lock = threading.Lock()
    for rank, proc in enumerate(procs):
        prefix = "" if no_prefix else f"[{rank}] "
        for pipe, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr)):
            thread = threading.Thread(target=_forward, args=(pipe, out, prefix, lock), daemon=True)
            thread.start()
            started.append(thread)


def _signal(procs, sig):
    """Send ``sig`` to the process group of every process still running."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)


def stop(procs, grace=5.0, first=signal.SIGTERM):
    """Send ``first`` to every running process; SIGKILL those still running after ``grace`` s."""
    _signal(procs, first)
    deadline = time.monotonic() + grace
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    _signal(procs, signal.SIGKILL)
    for proc in procs:
        proc.wait()


def describe_status(code):
    """``"exited with status 3"`` or ``"was killed by signal 9 (SIGKILL)"``."""
    if code >= 0:
        return f"exited with status {code}"
    with contextlib.suppress(ValueError):
        return f"was killed by signal {-code} ({signal.Signals(-code).name})"
    return f"was killed by signal {-code}"


def supervise(procs):
    """Wait until every process has exited 0 (return 0) or one has failed: then stop the others
    and return ``(rank, status)`` of the first failure."""
    while True:
        running = False
        for rank, proc in enumerate(procs):
            code = proc.poll()
            if code is None:
                running = True
            elif code != 0:
                stop(procs)
                return rank, code
        if not running:
            return 0
        time.sleep(POLL_SECONDS)


class _Terminated(Exception):
    """The launcher received SIGTERM."""


def _on_sigterm(signum, frame):
    raise _Terminated


def run(argv):
    """Run ``fnnet launch`` with ``argv`` (the words after ``launch``); return the exit status."""
    argv = list(argv)
    options, command = parse(argv)
    launch_argv = ["launch", *argv[:argv.index("--")]]
    port, count = free_port(options.port), options.processes
    procs, forwarders = [], []
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        for rank in range(count):
            procs.append(_start(command, environment(rank, count, port,
                                                     options.devices_per_process,
                                                     launch_argv=launch_argv)))
        _forward_all(procs, options.no_prefix, forwarders)
        outcome = supervise(procs)
    except FileNotFoundError as e:
        stop(procs)
        raise UsageError("fnnet launch", f"cannot run {command[0]!r}: {e.strerror}; expected a "
                                         f"program on PATH") from None
    except (KeyboardInterrupt, _Terminated) as e:
        terminated = isinstance(e, _Terminated)
        stop(procs, options.grace, first=signal.SIGTERM if terminated else signal.SIGINT)
        _drain(forwarders)
        print(f"fnnet launch: {'terminated' if terminated else 'interrupted'}; stopped every "
              f"process", file=sys.stderr, flush=True)
        return 128 + signal.SIGTERM if terminated else EXIT_INTERRUPTED
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    _drain(forwarders)
    if outcome == 0:
        return 0
    rank, code = outcome
    print(f"fnnet launch: error: process {rank} of {count} (pid {procs[rank].pid}) "
          f"{describe_status(code)}; stopped the other processes", file=sys.stderr, flush=True)
    return code if code > 0 else 128 - code


def _drain(forwarders, seconds=5.0):
    """Wait (a little) for the output still in the pipes to be forwarded by the running
    ``forwarders``."""
    deadline = time.monotonic() + seconds
    for thread in forwarders:
        thread.join(max(0.0, deadline - time.monotonic()))


# ---------------------------------------------------------------------------------------------
# What fnnet train --distributed needs


def join(prog):
    """Join the distributed run (``fnnet.devices.distributed.initialize``) before any other JAX call.

    Args:
        prog: the command's name, for the error.

    Raises:
        UsageError: there is no run to join, or its settings are wrong (a timeout ends the
            process itself, with one line).
    """
    try:
        return distributed.initialize()
    except distributed.DistributedError as e:
        raise UsageError(prog, f"argument --distributed: {e}") from None


def check_split(prog, batch_size, n):
    """Refuse (``UsageError``) a step whose rows do not split evenly across all devices.

    Args:
        prog: the command's name.
        batch_size: rows per step, or ``None`` for the full batch of ``n`` rows.
        n: training examples.
    """
    import jax

    rows, count = batch_size or n, jax.device_count()
    if rows % count:
        what = f"--batch-size {rows}" if batch_size else f"the full batch of {n} examples"
        raise UsageError(prog, f"argument --batch-size: {what} does not split evenly across the "
                               f"{count} devices of {jax.process_count()} processes; expected a "
                               f"multiple of {count}")

