"""Many processes (``fnnet.devices.distributed``): a process that dies stops the other with an
error naming it, and joining is bounded in time. (Two processes of two CPU devices training as
one, an MLP and the GPT, are checked end to end under ``fnnet launch`` in ``test_launch``.)

The processes are subprocesses on 127.0.0.1 (gloo collectives over TCP, a free port), each
started with ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` and waited for with a timeout.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import xla_flags_with

from fnnet.devices import distributed
from fnnet.training import callbacks as cb

pytestmark = pytest.mark.slow  # several processes

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 180  # any one subprocess; a healthy run takes a few seconds

WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from fnnet.devices import distributed
    rank, port, out, epochs = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    if rank >= 0:  # rank -1: the one-device reference, not distributed
        distributed.initialize(f"127.0.0.1:{port}", 2, rank, timeout=60, heartbeat_seconds=5)
    import jax
    import fnnet
    from fnnet import optim
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 20)).astype(np.float32)
    y = rng.integers(0, 3, 256).astype(np.int32)
    def ready(record, state, history):  # tells the test that training is under way
        (out.parent / f"ready-{rank}").touch()
    params, history = fnnet.fit(fnnet.mlp([20, 16, 3]), "cross-entropy", optim.momentum(0.1),
                                (x, y), epochs=epochs, batch_size=32, key=jax.random.PRNGKey(0),
                                devices="all" if rank >= 0 else None, progress=False,
                                callbacks=[ready])
    np.savez(out, *[np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(params)])
    print(f"rank {rank}: {jax.device_count()} devices, {jax.process_count()} processes")
""")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices=2):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p), JAX_PLATFORMS="cpu",
        XLA_FLAGS=xla_flags_with(f"--xla_force_host_platform_device_count={devices}"),
        PYTHONUNBUFFERED="1")
    for name in distributed.ENV_VARS:
        env.pop(name, None)
    return env


def _start(script, *args, devices=2):
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], env=_env(devices),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _finish(proc, timeout=TIMEOUT_S):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"a process ran past {timeout} s:\n{err[-3000:]}")
    return proc.returncode, out, err


@pytest.fixture()
def worker(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return script


def test_a_process_that_dies_stops_the_other_naming_it(worker, tmp_path):
    port = free_port()
    procs = [_start(worker, rank, port, tmp_path / f"params-{rank}.npz", 100000) for rank in (0, 1)]
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not all((tmp_path / f"ready-{rank}").exists() for rank in (0, 1)):
            assert all(p.poll() is None for p in procs), _finish(procs[0], 5)[2][-3000:]
            assert time.monotonic() < deadline, "training never started"
            time.sleep(0.1)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        code, _, err = _finish(procs[0], timeout=90)
        seconds = time.monotonic() - killed
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert code != 0
    assert seconds < 60, f"the survivor took {seconds:.1f} s to stop"
    if "stopped sending heartbeats" not in err:
        # killed inside a collective, the peer can be seen first by gloo's transport, which
        # aborts the survivor with its own message ("Received data size doesn't match expected
        # size") before the coordination service's heartbeat check runs (seen once in CI)
        assert "gloo::EnforceNotMet" in err, err[-3000:]
        return
    # JAX's coordination service names the silent task: "...unhealthy (stopped sending
    # heartbeats):\n1\n..." (or /job:jax_worker/task:1 in other versions)
    named = err.split("stopped sending heartbeats")[1][:200]
    assert "1" in named.replace("(", " ").split(), named


def test_joining_gives_up_with_one_line_naming_the_coordinator(tmp_path):
    script = tmp_path / "alone.py"
    port = free_port()  # nobody listens there
    script.write_text("import sys\nfrom fnnet.devices import distributed\n"
                      f"distributed.initialize('127.0.0.1:{port}', 2, int(sys.argv[1]), timeout=3)\n"
                      "print('joined')\n")
    started = time.monotonic()
    code, out, err = _finish(_start(script, 1), timeout=60)
    assert code == distributed.EXIT_TIMEOUT
    assert time.monotonic() - started < 30
    assert "joined" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fnnet: error: process 1 of 2 gave up after 3 s")
    assert f"127.0.0.1:{port}" in lines[0]


# ---------------------------------------------------------------------------------------------
# Settings, and what only process 0 does (in this process)


def test_settings_from_the_environment():
    env = {"FNNET_COORDINATOR": "127.0.0.1:1234", "FNNET_NUM_PROCESSES": "2",
           "FNNET_PROCESS_ID": "1"}
    assert distributed.settings_from_env(env) == ("127.0.0.1:1234", 2, 1)
    assert distributed.settings_from_env({}) is None


@pytest.mark.parametrize("env, mentions", [
    ({"FNNET_COORDINATOR": "127.0.0.1:1234"}, "FNNET_NUM_PROCESSES, FNNET_PROCESS_ID not"),
    ({"FNNET_COORDINATOR": "nohost", "FNNET_NUM_PROCESSES": "2", "FNNET_PROCESS_ID": "0"},
     "FNNET_COORDINATOR='nohost': expected host:port"),
    ({"FNNET_COORDINATOR": "h:1", "FNNET_NUM_PROCESSES": "two", "FNNET_PROCESS_ID": "0"},
     "FNNET_NUM_PROCESSES='two': expected an integer >= 1"),
    ({"FNNET_COORDINATOR": "h:1", "FNNET_NUM_PROCESSES": "2", "FNNET_PROCESS_ID": "2"},
     "expected a process id in 0..1"),
])
def test_bad_settings_are_one_clear_error(env, mentions):
    with pytest.raises(distributed.DistributedError, match="^[^\n]*$") as e:
        distributed.settings_from_env(env)
    assert mentions in str(e.value)


def test_initialize_refuses_once_jax_has_started():
    jax.devices()  # this process's JAX is started
    with pytest.raises(distributed.DistributedError, match="before any other JAX call"):
        distributed.initialize("127.0.0.1:1234", 2, 0)
    with pytest.raises(distributed.DistributedError, match="go together"):
        distributed.initialize("127.0.0.1:1234")
    assert not jax.distributed.is_initialized()


def test_progress_and_checkpoints_only_in_process_zero(monkeypatch, tmp_path, capsys):
    record = cb.EpochRecord(1, 0.5, 0.9, 100.0, 0.1)
    state = type("State", (), {"_asdict": lambda self: {"w": np.ones(2, np.float32)}})()
    progress, save = cb.print_progress(1), cb.save_checkpoint(tmp_path / "state.npz")
    monkeypatch.setattr(jax, "process_index", lambda *a: 1)
    progress(record, state, cb.new_history())
    save(record, state, cb.new_history())
    assert capsys.readouterr().err == "" and not (tmp_path / "state.npz").exists()
    monkeypatch.setattr(jax, "process_index", lambda *a: 0)
    progress(record, state, cb.new_history())
    save(record, state, cb.new_history())
    assert "epoch 1/1" in capsys.readouterr().err and (tmp_path / "state.npz").exists()
