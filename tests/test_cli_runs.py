"""A run must never be lost, and whatever goes wrong is one clear line, never a traceback.

``fnnet train`` into a folder that holds a run is refused unless ``--resume`` or ``--overwrite``;
a folder in use by another run is refused naming it (a lock held while a run uses the folder); a
refused run leaves the run it was refused for byte for byte as it was; a resumed diverged run
stays diverged and keeps its loss-scale history; a checkpoint that cannot be resumed, output
names that cannot be written, an empty test set and empty flag values are one line before any
work; Ctrl-C while the command starts is one line and exit status 130.

Uses ``test_cli``'s synthetic data (500 training, 200 test images) and helpers.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import test_cli
from conftest import Stop
from test_cli import assert_one_line_error, read_json, run, train_argv

from fnnet import checkpoints, cli
from fnnet.cli import common, launch

data_root = test_cli.data_root  # the synthetic data, one copy for this module

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ("train_state.npz", "model.npz", "config.json")




@pytest.fixture(scope="module")
def finished(data_root, tmp_path_factory):
    """A finished two-epoch run to copy: its folder."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert cli.main([str(a) for a in train_argv(data_root, out, "--seed", "1")]) == 0
    return out


def copy_of(finished, tmp_path, name="run"):
    out = tmp_path / name
    shutil.copytree(finished, out)
    return out


def snapshot(folder):
    """``{relative path: sha256}`` of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# 1. A new run never silently replaces an old one


@pytest.mark.parametrize("existing", RUN_FILES)
def test_a_folder_holding_a_run_is_refused_before_any_work(data_root, tmp_path, capsys,
                                                           fit_calls, existing):
    out = tmp_path / "run"
    out.mkdir()
    (out / existing).write_bytes(b"the old run")
    code, stdout, err = run(capsys, *train_argv(data_root, out))
    assert_one_line_error(code, err, mentions=f"argument --out: {out} already holds a run")
    assert existing in err and "--resume to continue it" in err and "--overwrite to replace it" in err
    assert fit_calls == [] and stdout == ""
    assert (out / existing).read_bytes() == b"the old run"


def test_the_default_out_is_protected_too(data_root, tmp_path, capsys, monkeypatch, fit_calls):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "mnist").mkdir(parents=True)
    (tmp_path / "runs" / "mnist" / "model.npz").write_bytes(b"old")
    code, _, err = run(capsys, "train", "--data-dir", data_root, "--no-download", "--quiet")
    assert_one_line_error(code, err, mentions=f"argument --out: {Path('runs') / 'mnist'} already "
                                              f"holds a run")
    assert fit_calls == []


def test_a_shakespeare_run_is_protected_too(tmp_path, capsys, monkeypatch):
    loads = []
    monkeypatch.setattr(cli.train.train_text, "run", lambda *a, **k: loads.append(a))
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    code, _, err = run(capsys, "train", "--dataset", "shakespeare", "--model", "lstm", "--out",
                       out, "--no-download")
    assert_one_line_error(code, err, mentions=f"{out} already holds a run")
    assert loads == []


def test_overwrite_and_resume_together_are_refused(data_root, tmp_path, capsys, fit_calls):
    code, _, err = run(capsys, *train_argv(data_root, tmp_path / "o", "--overwrite", "--resume"))
    assert_one_line_error(code, err, mentions="argument --overwrite")
    assert "--resume" in err and fit_calls == []


def test_overwrite_replaces_the_run_and_drops_its_old_results(finished, data_root, tmp_path,
                                                              capsys, monkeypatch):
    """``--overwrite`` replaces the run; interrupted after its first epoch, the folder holds the
    new run's state and configuration and none of the old run's results."""
    out = copy_of(finished, tmp_path)
    real_fit = cli.train.fit

    def fit_then_ctrl_c(**kwargs):
        real_fit(**dict(kwargs, epochs=1))
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.train, "fit", fit_then_ctrl_c)
    code, _, err = run(capsys, *train_argv(data_root, out, "--overwrite", "--seed", "7"))
    assert code == cli.EXIT_INTERRUPTED, err
    resume = shlex.split(err.split("resume with: ")[1])
    assert resume[-1] == "--resume" and "--overwrite" not in resume
    assert read_json(out / "config.json")["seed"] == 7
    assert checkpoints.metadata(out / "train_state.npz")["config"]["seed"] == 7
    for name in ("model.npz", "metrics.json", "curves.png"):
        assert not (out / name).exists(), name
    monkeypatch.undo()
    code, _, err = run(capsys, *train_argv(data_root, out, "--overwrite", "--seed", "8"))
    assert code == 0, err
    assert read_json(out / "metrics.json")["config"]["seed"] == 8
    assert not list(out.glob(".*lock*"))  # nothing left behind


def test_a_folder_in_use_is_refused_naming_the_holder(data_root, tmp_path, capsys, fit_calls):
    out = tmp_path / "run"
    holder = ["train", "--out", str(out), "--epochs", "99"]
    with common.run_lock("fnnet train", out, holder):
        code, _, err = run(capsys, *train_argv(data_root, out))
    assert_one_line_error(code, err, mentions=f"argument --out: {out} is in use by another run")
    assert f"pid {os.getpid()}" in err and "fnnet train --out" in err and "--epochs 99" in err
    assert fit_calls == []
    with pytest.raises(Stop):  # released: the next run goes ahead
        cli.main([str(a) for a in train_argv(data_root, out)])


def test_the_folder_is_locked_while_a_run_uses_it(data_root, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    seen = []

    def fit_while_locked(**kwargs):
        with pytest.raises(common.UsageError, match="in use by another run"):
            with common.run_lock("fnnet train", out, ["train"]):
                pass
        seen.append(True)
        raise Stop

    monkeypatch.setattr(cli.train, "fit", fit_while_locked)
    with pytest.raises(Stop):
        cli.main([str(a) for a in train_argv(data_root, out)])
    assert seen == [True]
    assert not out.exists()  # a run that wrote nothing leaves no empty folder behind


def test_only_process_0_locks_the_folder(data_root, tmp_path, capsys, monkeypatch, fit_calls):
    """The other processes of a distributed run write nothing, so they take no lock: process 0's
    lock never stops them."""
    out = tmp_path / "run"
    monkeypatch.setattr(cli.train.distributed, "is_main", lambda: False)
    with common.run_lock("fnnet train", out, ["train"]), pytest.raises(Stop):
        cli.main([str(a) for a in train_argv(data_root, out)])
    assert len(fit_calls) == 1


def test_a_lock_dies_with_its_process(data_root, tmp_path, capsys, fit_calls):
    """A killed run leaves its lock file, which blocks nothing (the lock itself went with the
    process); a stale lock file with anything in it blocks nothing either."""
    out = tmp_path / "run"
    out.mkdir()
    code = ("import fcntl, os, sys, time\n"
            f"fd = os.open({str(out / common.LOCK_NAME)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, f'{os.getpid()}\\nfnnet train --out x\\n'.encode())\n"
            "print('locked', flush=True)\n"
            "time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        code_, _, err = run(capsys, *train_argv(data_root, out))
        assert_one_line_error(code_, err, mentions=f"pid {proc.pid}")
    finally:
        proc.kill()
        proc.communicate()
    assert (out / common.LOCK_NAME).exists()
    with pytest.raises(Stop):
        cli.main([str(a) for a in train_argv(data_root, out)])
    (out / common.LOCK_NAME).write_text("garbage")
    with pytest.raises(Stop):
        cli.main([str(a) for a in train_argv(data_root, out)])
    assert len(fit_calls) == 2


# ---------------------------------------------------------------------------------------------
# 2. A refused run leaves the run it was refused for as it was


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
@pytest.mark.parametrize("refusal", [
    (["--layers", "784,100000000,10"], 1, "needs about"),
    (["--batch-size", "451"], 2, "argument --batch-size"),
    (["--validation", "500"], 2, "argument --validation"),
], ids=["memory", "batch", "validation"])
def test_a_refused_run_leaves_the_old_run_byte_identical(finished, data_root, tmp_path, capsys,
                                                         flag, refusal):
    out = copy_of(finished, tmp_path)
    before = snapshot(out)
    extra, status, mentions = refusal
    code, _, err = run(capsys, *train_argv(data_root, out, "--seed", "1", flag, *extra))
    assert_one_line_error(code, err, status=status, mentions=mentions)
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(before)


# ---------------------------------------------------------------------------------------------
# 3. What a checkpoint keeps: divergence, loss scale, skipped steps


def test_a_resumed_diverged_run_stays_diverged(data_root, tmp_path, capsys):
    out = tmp_path / "diverged"
    flags = ["--optimizer", "sgd", "--lr", "1e20"]
    code, _, err = run(capsys, *train_argv(data_root, out, *flags, "--epochs", "1"))
    assert code == cli.EXIT_DIVERGED, err
    assert checkpoints.metadata(out / "train_state.npz")["history"]["diverged"] == [
        {"epoch": 1, "models": [0]}]
    code, _, err = run(capsys, *train_argv(data_root, out, *flags, "--epochs", "3", "--resume"))
    assert_one_line_error(code, err, status=cli.EXIT_DIVERGED,
                          mentions="training diverged at epoch 1")
    metrics = read_json(out / "metrics.json")
    assert metrics["diverged"] is True and metrics["divergence"] == [{"epoch": 1, "models": [0]}]
    assert metrics["history"]["epoch"] == [1]  # nothing more was trained: the run had stopped
    assert checkpoints.metadata(out / "model.npz")["diverged"] is True


def test_a_resumed_run_keeps_its_loss_scale_history(data_root, tmp_path, capsys):
    out = tmp_path / "f16"
    code, _, err = run(capsys, *train_argv(data_root, out, "--precision", "f16", "--epochs", "1"))
    assert code == 0, err
    first = read_json(out / "metrics.json")["history"]
    code, _, err = run(capsys, *train_argv(data_root, out, "--precision", "f16", "--epochs", "2",
                                           "--resume"))
    assert code == 0, err
    history = read_json(out / "metrics.json")["history"]
    assert history["epoch"] == [1, 2]
    assert len(history["loss_scale"]) == 2 and len(history["skipped_steps"]) == 2
    assert history["loss_scale"][0] == first["loss_scale"][0]


# ---------------------------------------------------------------------------------------------
# 4. A checkpoint that cannot be resumed: one line


def _resave(path, tree=None, **changes):
    """Rewrite the checkpoint at ``path`` with ``changes`` to its metadata (``None``: drop)."""
    saved, meta = checkpoints.load(path)
    meta = {k: v for k, v in {**meta, **changes}.items() if v is not None}
    checkpoints.save(path, saved if tree is None else tree, **meta)


def _model_as_state(out):
    shutil.copyfile(out / "model.npz", out / "train_state.npz")


def _epoch_abc(out):
    _resave(out / "train_state.npz", epoch="abc")


def _no_history(out):
    _resave(out / "train_state.npz", history=None)


def _history_not_a_record(out):
    _resave(out / "train_state.npz", history=[1, 2])


def _another_networks_state(out):
    """The state of a 784-8-10 network under the 784-16-10 run's configuration."""
    state, meta = checkpoints.load(out / "train_state.npz")
    first, *rest = state["params"]
    params = (type(first)(np.asarray(first.W)[:8], np.asarray(first.b)[:8]), *rest)
    checkpoints.save(out / "train_state.npz", dict(state, params=params), **meta)


def _another_models_state(out):
    """A CNN's configuration saved with the MLP run's state (a CNN run's train_state.npz)."""
    meta = checkpoints.metadata(out / "train_state.npz")
    config = dict(meta["config"], model="cnn", layers=None)
    _resave(out / "train_state.npz", config=config)


@pytest.mark.parametrize("damage, mentions", [
    (_model_as_state, "not a training state"),
    (_epoch_abc, "epoch 'abc'"),
    (_no_history, "history"),
    (_history_not_a_record, "history"),
    (_another_networks_state, "does not match"),
    (_another_models_state, "model 'cnn' -> 'mlp'"),
], ids=["model-as-state", "epoch-abc", "no-history", "bad-history", "other-network",
        "other-model"])
def test_a_checkpoint_that_cannot_be_resumed_is_one_line(finished, data_root, tmp_path, capsys,
                                                         damage, mentions):
    out = copy_of(finished, tmp_path)
    damage(out)
    before = snapshot(out)
    code, _, err = run(capsys, *train_argv(data_root, out, "--seed", "1", "--resume", "--epochs",
                                           "3"))
    assert_one_line_error(code, err, mentions="fnnet train: error: argument --resume: ")
    assert mentions in err
    assert snapshot(out) == before


def test_resuming_past_the_requested_epochs_is_refused(finished, data_root, tmp_path, capsys,
                                                       fit_calls):
    out = copy_of(finished, tmp_path)
    code, _, err = run(capsys, *train_argv(data_root, out, "--seed", "1", "--resume", "--epochs",
                                           "1"))
    assert_one_line_error(code, err, mentions="argument --resume: ")
    assert "saved at epoch 2" in err and "--epochs 1" in err and fit_calls == []


# ---------------------------------------------------------------------------------------------
# 5. Output names that cannot be written: found before training


@pytest.mark.parametrize("name", ["model.npz", "metrics.json", "curves.png", "train_state.npz",
                                  "config.json"])
def test_an_output_name_taken_by_a_folder_is_refused_before_training(data_root, tmp_path,
                                                                      capsys, fit_calls, name):
    out = tmp_path / "run"
    (out / name).mkdir(parents=True)
    code, _, err = run(capsys, *train_argv(data_root, out, "--overwrite"))
    assert_one_line_error(code, err, mentions=f"argument --out: cannot write {out / name}")
    assert "is a folder" in err and fit_calls == []


@pytest.mark.parametrize("out", ["/proc/fnnet-test-run", "/sys/fnnet-test-run"])
def test_an_out_on_a_system_folder_is_refused(data_root, capsys, fit_calls, out):
    if not Path(out).parent.is_dir():
        pytest.skip(f"no {Path(out).parent} here")
    code, _, err = run(capsys, *train_argv(data_root, out))
    assert_one_line_error(code, err, mentions=f"argument --out: cannot write into {out}")
    assert fit_calls == [] and not Path(out).exists()


def test_evaluate_never_writes_into_a_training_run(finished, data_root, tmp_path, capsys):
    """evaluate's metrics.json would replace the run's: a run folder is refused as --out, and so
    is an output name taken by a folder."""
    out = copy_of(finished, tmp_path)
    before = snapshot(out)
    code, _, err = run(capsys, "evaluate", out / "model.npz", "--out", out, "--data-dir",
                       data_root)
    assert_one_line_error(code, err, mentions=f"argument --out: {out} holds a training run")
    assert snapshot(out) == before
    (tmp_path / "ev" / "confusion.png").mkdir(parents=True)
    code, _, err = run(capsys, "evaluate", out / "model.npz", "--out", tmp_path / "ev",
                       "--data-dir", data_root)
    assert_one_line_error(code, err, mentions=f"cannot write {tmp_path / 'ev' / 'confusion.png'}")


# ---------------------------------------------------------------------------------------------
# 6. An empty test set is found before training


def test_an_empty_test_set_is_refused_before_training(data_root, tmp_path, capsys, monkeypatch,
                                                      fit_calls):
    real = cli.train.load_data

    def no_test_rows(*args, **kwargs):
        train, (x, y) = real(*args, **kwargs)
        return train, (x[:0], y[:0])

    monkeypatch.setattr(cli.train, "load_data", no_test_rows)
    code, _, err = run(capsys, *train_argv(data_root, tmp_path / "run"))
    assert_one_line_error(code, err, status=1, mentions="test set")
    assert "no examples" in err and fit_calls == []
    assert not (tmp_path / "run").exists()


def test_evaluate_refuses_an_empty_test_set(finished, data_root, tmp_path, capsys, monkeypatch):
    real = cli.evaluate.load_data
    monkeypatch.setattr(cli.evaluate, "load_data", lambda *a, **k: (
        lambda data: (data[0], (data[1][0][:0], data[1][1][:0])))(real(*a, **k)))
    code, _, err = run(capsys, "evaluate", finished / "model.npz", "--out", tmp_path / "ev",
                       "--data-dir", data_root)
    assert_one_line_error(code, err, status=1, mentions="test set holds no examples")


# ---------------------------------------------------------------------------------------------
# 8. Empty values are refused, not taken for the current folder


@pytest.mark.parametrize("argv, flag", [
    (["train", "--out", ""], "--out"),
    (["train", "--out="], "--out"),
    (["train", "--compile-cache", ""], "--compile-cache"),
    (["train", "--data-dir", ""], "--data-dir"),
    (["evaluate", "x.npz", "--out", ""], "--out"),
    (["evaluate", "x.npz", "--data-dir", ""], "--data-dir"),
    (["gradcheck", "--compile-cache", ""], "--compile-cache"),
    (["bench", "--quick", "--out", ""], "--out"),
    (["bench", "--out="], "--out"),
])
def test_an_empty_folder_value_is_refused(capsys, argv, flag, fit_calls, bench_calls):
    code, _, err = run(capsys, *argv)
    assert_one_line_error(code, err, mentions=f"argument {flag}: expected a folder")
    assert "empty" in err and fit_calls == [] and bench_calls == []


# ---------------------------------------------------------------------------------------------
# 7. Ctrl-C while the command starts


def _env():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p), JAX_PLATFORMS="cpu",
        PYTHONWARNINGS="ignore")  # Python's own warnings; the CLI says the data's digest
    # warning whatever the filters (the synthetic files are not MNIST's): _assert_interrupted
    # sets that line aside
    for name in ("FNNET_COORDINATOR", "FNNET_NUM_PROCESSES", "FNNET_PROCESS_ID"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def import_seconds():
    """How long ``import fnnet.cli`` takes here (JAX's import, mostly)."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import fnnet.cli"], cwd=ROOT, env=_env(), check=True,
                   timeout=120)
    return time.monotonic() - started


def _interrupt_at_start(command, seconds):
    """Start ``command`` three times, and send SIGINT after a fifth, two fifths and three fifths
    of ``seconds`` (while it imports); ``[(delay, status, stderr)]``."""
    results = []
    for delay in (0.2 * seconds, 0.4 * seconds, 0.6 * seconds):
        proc = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        results.append((delay, proc.returncode, err))
    return results


def _assert_interrupted(results):
    for delay, status, err in results:
        assert status == cli.EXIT_INTERRUPTED, (delay, status, err[-2000:])
        assert "Traceback" not in err, (delay, err[-2000:])
        # a Ctrl-C late enough finds the data's digest warning already printed; besides it, one line
        (line,) = [line for line in err.strip().splitlines()
                   if not line.startswith("fnnet train: warning: mnist:")]
        assert line.startswith("fnnet train: interrupted"), (delay, line)


def _long_train(data_root, out):
    return ["train", "--data-dir", str(data_root), "--no-download", "--out", str(out),
            "--layers", "784,16,10", "--epochs", "100", "--batch-size", "50", "--quiet",
            "--no-compile-cache"]


def test_the_console_script_ends_an_interrupted_process_without_teardown(monkeypatch):
    """``fnnet`` (``cli.console``) returns ``main``'s status, except after a Ctrl-C (130): then
    the process ends at once, by ``os._exit``, once its output is flushed (a teardown under XLA's
    compile threads crashed an interrupted process with SIGSEGV after its message)."""
    ended = []

    def fake_exit(status):
        ended.append(status)
        raise SystemExit(status)

    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr(cli, "main", lambda: 0)
    assert cli.console() == 0 and ended == []
    monkeypatch.setattr(cli, "main", lambda: cli.EXIT_INTERRUPTED)
    with pytest.raises(SystemExit):
        cli.console()
    assert ended == [cli.EXIT_INTERRUPTED]


@pytest.mark.slow
def test_ctrl_c_while_a_launched_process_starts(data_root, tmp_path, import_seconds):
    """The processes ``fnnet launch`` starts honour a Ctrl-C that arrives while they import JAX:
    exit status 130 and one line (it was a traceback, or lost inside ``import jax``)."""
    command = launch.child_command(["fnnet", *_long_train(data_root, tmp_path / "run")])
    _assert_interrupted(_interrupt_at_start(command, import_seconds))


@pytest.mark.slow
def test_ctrl_c_while_fnnet_starts(data_root, tmp_path, import_seconds):
    command = [sys.executable, "-m", "fnnet.cli", *_long_train(data_root, tmp_path / "run")]
    _assert_interrupted(_interrupt_at_start(command, import_seconds))


# ---------------------------------------------------------------------------------------------
# 9. The resume command of a run started by fnnet launch is the launch line


def test_the_resume_command_of_a_launched_run_is_the_launch_line(tmp_path, monkeypatch):
    launched = ["launch", "-n", "2", "--devices-per-process", "2"]
    env = launch.environment(0, 2, 1234, base={}, launch_argv=launched)
    train = ["train", "--distributed", "--epochs", "3", "--out", str(tmp_path / "run")]
    monkeypatch.setenv(launch.ENV_LAUNCH, env[launch.ENV_LAUNCH])
    command = cli.train.resume_command(train, distributed=True)
    assert shlex.split(command) == ["fnnet", *launched, "--", "fnnet", *train, "--resume"]
    monkeypatch.delenv(launch.ENV_LAUNCH)
    assert shlex.split(cli.train.resume_command(train, distributed=True)) == [
        "fnnet", *train, "--resume"]
    again = cli.train.resume_command([*train, "--resume"], distributed=False)
    assert shlex.split(again) == ["fnnet", *train, "--resume"]

