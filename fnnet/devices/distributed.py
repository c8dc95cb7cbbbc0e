"""Many processes: join JAX's distributed runtime, bounded in time, and tell process 0 apart.

``fit(..., devices="all")`` trains across processes once every process has called
``jax.distributed.initialize`` (``fnnet.devices.parallel`` explains the data parallelism). This module is
that call, made safe to use from a command line:

- **Where the settings come from.** ``initialize(coordinator, num_processes, process_id)`` takes
  them explicitly; without arguments it reads ``FNNET_COORDINATOR`` (``host:port`` of process 0),
  ``FNNET_NUM_PROCESSES`` and ``FNNET_PROCESS_ID`` (what ``fnnet launch`` sets), and without those
  it lets JAX detect the cluster (SLURM, Open MPI, Cloud TPU, ``JAX_COORDINATOR_ADDRESS``...).
- **CPU collectives.** On the CPU the all-reduce across processes runs over gloo (TCP):
  ``jax_cpu_collectives_implementation`` is set to ``"gloo"`` before JAX starts.
- **Bounded start.** Every process waits for all the others to join; if they have not within
  ``timeout`` seconds, this process prints one line naming the coordinator and the count it waited
  for and exits with status ``EXIT_TIMEOUT`` (JAX's own deadline would abort the process with a
  stack trace, and only after 5 minutes).
- **A process that dies.** JAX's coordination service expects a heartbeat from every process;
  one silent for ``heartbeat_seconds`` (JAX's default: 100) is declared dead, and every other
  process then stops with ``"The following tasks are unhealthy (stopped sending heartbeats): 1"``
  on stderr (a fatal error: exit status 134, SIGABRT). When process 0, which hosts the
  coordination service, dies, the others stop at once ("the leader task died"). With fnnet's
  default, ``HEARTBEAT_SECONDS`` = 20, a survivor stopped 14 s after its peer was killed
  (measured on a 2-core CPU; 0.2 s when process 0 was killed). ``fnnet launch`` watches its
  processes itself and stops the others within a second. A killed process's TCP connections are
  reset at once, so its peers usually learn it sooner, from their next all-reduce: ``lost_peer``
  reads that error, and ``fnnet train`` turns it into one line and ``abandon``.
- **SIGTERM** ends a process, as it ends any Python program: JAX's preemption service, which
  would catch it and keep training until a ``SIGKILL``, is turned off (fnnet does not use its
  sync points; ``fit`` checkpoints after every epoch).
- **Process 0.** ``is_main()`` is true in process 0 (and in a program that is not distributed):
  the one that prints and writes files. ``fit``'s ``print_progress`` and ``save_checkpoint``
  callbacks act in process 0 only.

A local coordinator (``127.0.0.1``, ``localhost``, ``::1``) binds to the loopback interface only,
so a run on one machine listens on no public address.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from dataclasses import dataclass

import jax
import numpy as np

ENV_COORDINATOR = "FNNET_COORDINATOR"
ENV_NUM_PROCESSES = "FNNET_NUM_PROCESSES"
ENV_PROCESS_ID = "FNNET_PROCESS_ID"
ENV_VARS = (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID)

#: Seconds every process waits for all the others to join before it gives up.
TIMEOUT_SECONDS = 60
#: Seconds without a heartbeat after which JAX declares a process dead and stops the others.
HEARTBEAT_SECONDS = 20
#: Seconds a finished process waits at exit for the others to finish (JAX's default).
SHUTDOWN_SECONDS = 300
#: The exit status of a process whose peers did not all join within the timeout.
EXIT_TIMEOUT = 1

_LOOPBACK = ("127.", "localhost", "[::1]", "::1")


class DistributedError(RuntimeError):
    """The distributed settings are missing, incomplete or invalid, or JAX was already started."""


@dataclass(frozen=True)
class ProcessInfo:
    """Where this process stands: its ``process_id`` among ``num_processes`` processes, joined
    through the coordinator at ``coordinator`` (``None`` when JAX detected the cluster)."""

    process_id: int
    num_processes: int
    coordinator: str | None


def _integer(name, text, minimum):
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or value < minimum:
        raise DistributedError(f"{name}={text!r}: expected an integer >= {minimum}")
    return value


def _check_coordinator(name, address):
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedError(f"{name}={address!r}: expected host:port of process 0, e.g. "
                               f"127.0.0.1:12345")
    return str(address)


def settings_from_env(environ=None):
    """``(coordinator, num_processes, process_id)`` from ``FNNET_COORDINATOR``,
    ``FNNET_NUM_PROCESSES`` and ``FNNET_PROCESS_ID``.

    Args:
        environ: the environment to read (default ``os.environ``).

    Returns:
        The three settings, checked, or ``None`` when none of the variables is set.

    Raises:
        DistributedError: some but not all of them are set, or one is invalid.
    """
    environ = os.environ if environ is None else environ
    given = {name: environ[name] for name in ENV_VARS if environ.get(name)}
    if not given:
        return None
    missing = [name for name in ENV_VARS if name not in given]
    if missing:
        raise DistributedError(f"{', '.join(sorted(given))} set but {', '.join(missing)} not; "
                               f"expected all three of {', '.join(ENV_VARS)} (fnnet launch sets "
                               f"them)")
    return check_settings(given[ENV_COORDINATOR], given[ENV_NUM_PROCESSES],
                          given[ENV_PROCESS_ID], names=ENV_VARS)


def check_settings(coordinator, num_processes, process_id, names=None):
    """The three settings checked: ``host:port``, a count >= 1 and an id in ``0..count-1``.

    Args:
        coordinator, num_processes, process_id: as for ``initialize``.
        names: how to name them in an error (default: the argument names).

    Returns:
        ``(coordinator, num_processes, process_id)`` as ``(str, int, int)``.

    Raises:
        DistributedError: naming the setting that is wrong and what was expected.
    """
    names = names or ("coordinator", "num_processes", "process_id")
    coordinator = _check_coordinator(names[0], coordinator)
    count = _integer(names[1], num_processes, 1)
    rank = _integer(names[2], process_id, 0)
    if rank >= count:
        raise DistributedError(f"{names[2]}={rank} with {names[1]}={count}: expected a process id "
                               f"in 0..{count - 1}")
    return coordinator, count, rank


def _deadline(seconds, message):
    """A daemon timer that prints ``message`` and ends the process with ``EXIT_TIMEOUT``."""

    def expire():
        print(message, file=sys.stderr, flush=True)
        os._exit(EXIT_TIMEOUT)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


def _backends_started():
    from jax._src import xla_bridge  # no public way to ask without starting them

    return xla_bridge.backends_are_initialized()


def initialize(coordinator=None, num_processes=None, process_id=None, *,
               timeout=TIMEOUT_SECONDS, heartbeat_seconds=HEARTBEAT_SECONDS,
               shutdown_seconds=SHUTDOWN_SECONDS, environ=None):
    """Join the distributed run (``jax.distributed.initialize``); call it before any other JAX call.

    Args:
        coordinator: ``"host:port"`` of process 0, where the coordination service listens.
        num_processes: how many processes take part.
        process_id: this process's id, ``0 .. num_processes - 1``.
            All three, or none: then ``FNNET_COORDINATOR``, ``FNNET_NUM_PROCESSES`` and
            ``FNNET_PROCESS_ID`` are read, and without them JAX detects the cluster.
        timeout: seconds to wait for all processes to join; after that this process prints one
            line and exits with ``EXIT_TIMEOUT``.
        heartbeat_seconds: a process silent this long is declared dead and the others stop.
        shutdown_seconds: at exit, how long a finished process waits for the others.
        environ: the environment to read (default ``os.environ``).

    Returns:
        A ``ProcessInfo``. Calling it again in a process already joined returns the same.

    Raises:
        DistributedError: the settings are incomplete or invalid, no cluster was found, or JAX
            was started before this call.
    """
    if jax.distributed.is_initialized():
        return ProcessInfo(jax.process_index(), jax.process_count(), _joined_through)
    explicit = (coordinator, num_processes, process_id)
    if any(value is not None for value in explicit):
        if any(value is None for value in explicit):
            raise DistributedError("initialize: coordinator, num_processes and process_id go "
                                   "together; pass all three, or none to read them from the "
                                   "environment")
        settings = check_settings(*explicit)
    else:
        settings = settings_from_env(environ)
    if _backends_started():
        raise DistributedError("initialize must come before any other JAX call, but JAX has "
                               "already started its devices in this process; call it first")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_enable_preemption_service", False)  # SIGTERM stops the process
    return _join(settings, timeout, heartbeat_seconds, shutdown_seconds)


_joined_through = None


def _join(settings, timeout, heartbeat_seconds, shutdown_seconds):
    """Call ``jax.distributed.initialize`` under a deadline of ``timeout`` seconds."""
    global _joined_through
    coordinator, count, rank = settings or (None, None, None)
    where = f"the coordinator at {coordinator}" if coordinator else "the detected cluster"
    who = f"process {rank} of {count}" if settings else "this process"
    timer = _deadline(timeout, f"fnnet: error: {who} gave up after {timeout:g} s: not all "
                               f"processes joined through {where}; expected every process to "
                               f"start with the same coordinator and process count")
    kwargs = dict(initialization_timeout=int(timeout) + 30, heartbeat_timeout_seconds=
                  int(heartbeat_seconds), shutdown_timeout_seconds=int(shutdown_seconds))
    if coordinator and coordinator.startswith(_LOOPBACK):
        kwargs["coordinator_bind_address"] = coordinator
    try:
        jax.distributed.initialize(coordinator, count, rank, **kwargs)
    except ValueError as e:  # nothing to detect: JAX names the first setting it lacks
        raise DistributedError(f"no distributed settings found ({e}); expected "
                               f"{', '.join(ENV_VARS)} (fnnet launch sets them) or a cluster "
                               f"JAX detects (SLURM, Open MPI, Cloud TPU)") from None
    finally:
        timer.cancel()
    _joined_through = coordinator
    return ProcessInfo(jax.process_index(), jax.process_count(), coordinator)


#: Phrases of the runtime errors a collective raises when another process has gone away: gloo's
#: TCP transport losing its peer, or the coordination service declaring a task dead.
LOST_PEER_MARKERS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe",
                     "heartbeat timeout", "stopped sending heartbeats", "leader task died")


def lost_peer(error):
    """``None``, or one phrase saying which process went away, when ``error`` (an exception a
    collective raised) says another process of the run died or was stopped: ``"process 1"``
    when there are two, else ``"another process (at HOST:PORT)"`` as gloo names its peer."""
    text = str(error)
    if not any(marker in text for marker in LOST_PEER_MARKERS):
        return None
    me, count = jax.process_index(), jax.process_count()
    if count == 2:
        return f"process {1 - me}"
    peer = re.search(r"\[([^\]]+)\]:(\d+)", text)
    return "another process" + (f" (at {peer.group(1)}:{peer.group(2)})" if peer else "")


def abandon(status):
    """End this process now with ``status``, its output flushed, skipping JAX's shutdown: after a
    peer has died the runtime's shutdown barrier can only fail, and fails with an abort and a
    page of C++ logs (the OS releases the run folder's lock)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def is_main():
    """Whether this is process 0, the one that prints and writes files (``True`` when the program
    is not distributed). Starts JAX's devices: in a distributed program call it after
    ``initialize``."""
    return jax.process_index() == 0


def to_host(tree):
    """``tree``'s arrays as numpy arrays in this process, for arrays replicated across processes
    (``fit``'s params and state): each process reads its own copy, with no collective.

    Args:
        tree: a pytree of ``jax.Array`` (or numpy) leaves, each fully replicated.

    Returns:
        The same pytree of numpy arrays.
    """
    return jax.tree_util.tree_map(np.asarray, tree)
