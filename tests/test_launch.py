"""``fnnet launch``: N local processes with the distributed settings, their output prefixed with
the rank, a failing process stopping the others with one line naming it, Ctrl-C passed on; and
``fnnet launch -n 2 -- fnnet train --distributed`` training like one process, resuming in both.

Everything runs in subprocesses with timeouts; the training run uses tiny synthetic data.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

from fnnet import cli, datasets
from fnnet.cli import launch
from fnnet.devices import distributed

pytestmark = pytest.mark.slow  # several processes

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240
#: What gloo says in every process once it has connected (the numbers vary).
GLOO_SAYS = ("[Gloo] Rank 1 is connected to 3 peer ranks. "
             "Expected number of connected peer ranks is : 3")
TRAIN = ["--layers", "784,16,10", "--batch-size", "52", "--seed", "3"]


def _env(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p), JAX_PLATFORMS="cpu",
        FNNET_CACHE_DIR=str(tmp_path / "cache"))
    for name in (*distributed.ENV_VARS, "XLA_FLAGS"):
        env.pop(name, None)
    return env


def _fnnet(tmp_path, *argv, timeout=TIMEOUT_S):
    """``(status, stdout, stderr, seconds)`` of ``python -m fnnet.cli argv...``."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "fnnet.cli", *map(str, argv)], cwd=ROOT,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started


def _python(code):
    return [sys.executable, "-c", code]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    train, test = datasets.synthetic_mnist(500, 200, seed=0)
    datasets.write_mnist_files(root / "mnist", train, test)
    return root


def test_train_distributed_in_two_processes_resumes_and_equals_one(data_root, tmp_path):
    """A one-process run of 1 epoch, resumed for a second epoch by two processes of two devices
    each (both read its checkpoint), ends where a one-process run of 2 epochs does."""
    data = ["--data-dir", data_root, "--no-download", *TRAIN]
    runs = [subprocess.Popen([sys.executable, "-m", "fnnet.cli", "train", *data, "--out",
                              tmp_path / out, "--epochs", epochs, "--quiet"], cwd=ROOT,
                             env=_env(tmp_path), text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
            for out, epochs in (("single", "2"), ("multi", "1"))]
    try:
        for run in runs:
            _, run_err = run.communicate(timeout=TIMEOUT_S)
            assert run.returncode == 0, run_err[-3000:]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.communicate()
    code, out, err, _ = _fnnet(tmp_path, "launch", "-n", "2", "--devices-per-process", "2", "--",
                               "fnnet", "train", "--distributed", *data, "--out",
                               tmp_path / "multi", "--epochs", "2", "--resume")
    assert code == 0, err[-3000:]
    # process 0 alone prints: the progress line of the resumed epoch, and the results. Gloo says
    # in every process that it connected, from several threads at once, so its sentence can
    # arrive broken into pieces ("[1] 3" alone on a line): a line of process 1 is gloo's when
    # every word of it is a number or a piece of that sentence; fnnet's own words are not.
    assert "[0] epoch 2/2" in err and "[0] test accuracy" in out
    ones = [line for line in (out + err).splitlines()
            if line.startswith("[1]") and not all(word.isdigit() or word in GLOO_SAYS
                                                  for word in line[3:].split())]
    assert not ones, ones
    metrics = json.loads((tmp_path / "multi" / "metrics.json").read_text())
    assert (metrics["processes"], metrics["devices"]) == (2, 4)
    assert metrics["history"]["epoch"] == [1, 2]
    multi = np.load(tmp_path / "multi" / "model.npz")
    one = np.load(tmp_path / "single" / "model.npz")
    leaves = [name for name in one.files if name.startswith("leaf_")]
    assert leaves
    for name in leaves:
        np.testing.assert_allclose(multi[name], one[name], rtol=1e-4, atol=1e-5)


def test_environment_and_prefixed_output(tmp_path):
    code = ("import os; print(os.environ['FNNET_PROCESS_ID'], os.environ['FNNET_NUM_PROCESSES'], "
            "os.environ['FNNET_COORDINATOR'], os.environ['XLA_FLAGS'])")
    status, out, err, _ = _fnnet(tmp_path, "launch", "-n", "3", "--port", launch.free_port(),
                                 "--devices-per-process", "4", "--", *_python(code), timeout=60)
    assert status == 0, err
    lines = sorted(out.splitlines())
    assert len(lines) == 3
    for rank, line in enumerate(lines):
        prefix, got_rank, count, coordinator, flags = line.split()
        assert (prefix, got_rank, count) == (f"[{rank}]", str(rank), "3")
        assert coordinator.startswith("127.0.0.1:")
        assert flags == "--xla_force_host_platform_device_count=4"


@pytest.mark.parametrize("death, status, says", [
    ("sys.exit(5)", 5, "exited with status 5"),
    ("os.kill(os.getpid(), signal.SIGKILL)", 128 + 9, "was killed by signal 9 (SIGKILL)"),
])
def test_a_failing_process_stops_the_others(tmp_path, death, status, says):
    code = ("import os, sys, time, signal\n"
            "if os.environ['FNNET_PROCESS_ID'] == '1':\n"
            f"    time.sleep(0.5); {death}\n"
            "time.sleep(120)\n")
    got, out, err, seconds = _fnnet(tmp_path, "launch", "-n", "3", "--", *_python(code),
                                    timeout=100)
    assert got == status
    assert seconds < 30, f"took {seconds:.1f} s"  # the others were stopped, not waited for
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fnnet launch: error: process 1 of 3 (pid ")
    assert says in lines[0]


def test_ctrl_c_reaches_every_process(tmp_path):
    code = ("import os, signal, sys, time\n"
            "def stop(*a):\n"
            "    print('interrupted', os.environ['FNNET_PROCESS_ID'], flush=True); sys.exit(130)\n"
            "signal.signal(signal.SIGINT, stop)\n"
            "print('ready', flush=True)\n"
            "time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-m", "fnnet.cli", "launch", "-n", "2", "--",
                             *_python(code)], cwd=ROOT, env=_env(tmp_path), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = ""
        deadline = time.monotonic() + 60
        while seen.count("ready") < 2 and time.monotonic() < deadline:
            seen += proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "[0] interrupted 0" in out and "[1] interrupted 1" in out
    assert "fnnet launch: interrupted" in err


def test_forwarders_are_listed_once_running_and_drain_waits_for_them(monkeypatch):
    """A Ctrl-C while ``_forward_all`` starts the output threads left some never started, and
    the launcher's clean-up joined them: a ``RuntimeError`` traceback in place of the one line.
    A forwarder is listed for ``_drain`` only once it runs, and ``_drain`` waits for it."""
    done = threading.Event()
    monkeypatch.setattr(launch, "_forward", lambda *args: (time.sleep(0.2), done.set()))
    proc = types.SimpleNamespace(stdout=None, stderr=None)
    started = []
    launch._forward_all([proc], False, started)
    assert len(started) == 2
    launch._drain(started, seconds=10)
    assert done.is_set()


@pytest.mark.parametrize("argv, mentions", [
    (["launch", "-n", "2", "fnnet", "train"], "expected -- and then the command"),
    (["launch", "-n", "0", "--", "true"], "argument -n/--processes"),
    (["launch", "-n", "2", "--"], "no command after --"),
    (["launch", "-n", "2", "--", "fnnet", "train", "--epochs", "1"], "needs --distributed"),
    (["launch", "-n", "2", "--port", "70000", "--", "true"], "expected a port in 1..65535"),
    (["launch", "-n", "2", "--", "no-such-program-fnnet"], "cannot run 'no-such-program-fnnet'"),
    (["launch", "-n", "2", "--grace", "-5", "--", "true"], "argument --grace: expected a finite "
                                                           "number >= 0, got '-5'"),
    (["launch", "-n", "2", "--grace", "nan", "--", "true"], "argument --grace"),
    (["launch", "-n", "2", "--grace", "inf", "--", "true"], "argument --grace"),
])
def test_bad_launch_command_lines_are_one_line_errors(capsys, argv, mentions):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("fnnet launch: error:") and mentions in err


def test_the_usage_line_names_every_flag(capsys):
    assert cli.main(["launch", "--help"]) == 0
    usage = capsys.readouterr().out.split("\n\n")[0]
    for flag in ("-n N", "--port P", "--devices-per-process K", "--grace S", "--no-prefix"):
        assert flag in usage, usage


def test_each_process_knows_the_launch_line():
    env = launch.environment(1, 2, 4321, base={launch.ENV_LAUNCH: "stale"},
                             launch_argv=["launch", "-n", "2", "--grace", "3"])
    assert env[launch.ENV_LAUNCH] == "fnnet launch -n 2 --grace 3"
    assert launch.ENV_LAUNCH not in launch.environment(1, 2, 4321, base={launch.ENV_LAUNCH: "x"})
    options, command = launch.parse(["-n", "2", "--", "fnnet", "train", "--distributed"])
    assert command[:2] == [sys.executable, "-c"] and command[3:] == ["train", "--distributed"]


def test_ctrl_c_under_launch_prints_the_launch_line_that_resumes(data_root, tmp_path):
    """Ctrl-C after an epoch of a launched run: process 0 prints the resume command, and it is
    the launch line (run alone, ``fnnet train --distributed`` would find no run to join)."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "fnnet.cli", "launch", "-n", "2", "--grace",
                             "30", "--", "fnnet", "train", "--distributed", "--data-dir",
                             str(data_root), "--no-download", *TRAIN, "--epochs", "1000",
                             "--out", str(out)], cwd=ROOT, env=_env(tmp_path), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not (out / "train_state.npz").exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-3000:]
    (line,) = [line for line in err.splitlines() if "resume with: " in line]
    assert line.startswith("[0] fnnet train: interrupted; the state after epoch "), line
    argv = shlex.split(line.split("resume with: ")[1])
    assert argv[:6] == ["fnnet", "launch", "-n", "2", "--grace", "30"], argv
    assert argv[6:9] == ["--", "fnnet", "train"] and argv[-1] == "--resume", argv
    assert "--distributed" in argv and str(out) in argv


def test_a_survivor_whose_peer_died_says_one_line_and_how_to_resume(data_root, tmp_path):
    """Issue 20: two ``fnnet train --distributed`` processes started by hand (no ``fnnet
    launch`` to stop the others); process 1 is killed after an epoch. Process 0 says in one line
    that it lost process 1 and how to resume, and ends with ``EXIT_PEER_LOST``: no traceback,
    no page of the runtime's C++ logs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    argv = ["train", "--distributed", "--data-dir", str(data_root), "--no-download", *TRAIN,
            "--epochs", "1000", "--out", str(out), "--quiet"]
    procs = [subprocess.Popen([sys.executable, "-m", "fnnet.cli", *argv], cwd=ROOT, text=True,
                              env={**_env(tmp_path), distributed.ENV_COORDINATOR:
                                   f"127.0.0.1:{port}", distributed.ENV_NUM_PROCESSES: "2",
                                   distributed.ENV_PROCESS_ID: str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for rank in (0, 1)]
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not (out / "train_state.npz").exists() and time.monotonic() < deadline:
            assert procs[0].poll() is None, procs[0].communicate()
            time.sleep(0.2)
        procs[1].kill()
        _, err = procs[0].communicate(timeout=TIMEOUT_S)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert procs[0].returncode == cli.EXIT_PEER_LOST == 4, err[-3000:]
    lines = [line for line in err.splitlines()  # but gloo's own and the stand-in data's notes
             if not line.startswith("[Gloo]") and "match neither data set" not in line]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith("fnnet train: error: process 0 of 2 lost process 1 during "
                               "training (it died or was stopped"), lines[0]
    argv_back = shlex.split(lines[0].split("resume with: ")[1])
    assert argv_back[:3] == ["fnnet", "train", "--distributed"] and argv_back[-1] == "--resume"
    assert str(out / "train_state.npz") in lines[0]


def test_train_distributed_without_a_run_to_join(tmp_path, data_root):
    status, _, err, _ = _fnnet(tmp_path, "train", "--distributed", "--data-dir", data_root,
                               "--out", tmp_path / "out", *TRAIN, timeout=120)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fnnet train: error: argument --distributed: no distributed")
    assert "FNNET_COORDINATOR" in lines[0]


SHARED = (Path(os.environ["FNNET_DATA_DIR"]).expanduser() if os.environ.get("FNNET_DATA_DIR")
          else ROOT.parent / "shared" / "data")


@pytest.mark.skipif(not (SHARED / "tinyshakespeare" / "input.txt").is_file(),
                    reason="needs the tiny Shakespeare corpus (FNNET_DATA_DIR)")
def test_the_gpt_trains_under_launch_as_in_one_process(tmp_path):
    """Issue 19: `fnnet train --dataset shakespeare --model gpt --distributed` under `fnnet
    launch` (two processes of two devices, each step's windows split across the four) ends
    where one process does."""
    gpt = ["train", "--dataset", "shakespeare", "--model", "gpt", "--data-dir", SHARED,
           "--no-download", "--depth", "1", "--heads", "2", "--dim", "8", "--block-size", "16",
           "--batch-size", "4", "--steps", "4", "--eval-every", "2", "--quiet"]
    code, _, err, _ = _fnnet(tmp_path, *gpt, "--out", tmp_path / "one")
    assert code == 0, err[-3000:]
    code, out, err, _ = _fnnet(tmp_path, "launch", "-n", "2", "--devices-per-process", "2", "--",
                               "fnnet", *gpt, "--distributed", "--out", tmp_path / "multi")
    assert code == 0, err[-3000:]
    assert "[0] validation loss" in out and "[1] validation loss" not in out
    multi, one = (np.load(tmp_path / name / "model.npz") for name in ("multi", "one"))
    leaves = [name for name in one.files if name.startswith("leaf_")]
    assert leaves
    for name in leaves:
        np.testing.assert_allclose(multi[name], one[name], rtol=1e-4, atol=1e-5)
