"""The command line when things go wrong or could mislead: validation held out of the training set
(never the test set), data looked for only where the user says, Ctrl-C, output folders that cannot
be written, labels out of range, and help that promises nothing it does not measure.

Uses ``test_cli``'s synthetic data (500 training, 200 test images) and helpers.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import shutil
import sys
import types

import numpy as np
import pytest
import test_cli
from conftest import Stop
from test_cli import N_TEST, N_TRAIN, assert_one_line_error, read_json, run, train_argv

from fnnet import checkpoints, cli, datasets

data_root = test_cli.data_root  # the synthetic data, one copy for this module

HELD = N_TRAIN // 10  # the default validation split of the 500-image training set




def _rows(images):
    return {bytes(row) for row in np.asarray(images)}


# ---------------------------------------------------------------------------------------------
# Validation is held out of the training set; the test set is scored once


@pytest.mark.parametrize("flag,held", [([], HELD), (["--validation", "120"], 120),
                                       (["--validation", "0"], 0)])
def test_validation_is_drawn_from_the_training_set_never_the_test_set(
        data_root, tmp_path, capsys, fit_calls, flag, held):
    with pytest.raises(Stop):
        cli.main([str(a) for a in train_argv(data_root, tmp_path / "o", *flag)])
    (call,) = fit_calls
    x_train = call["train"][0]
    assert len(x_train) == N_TRAIN - held
    (x_all, _), (x_test, _) = datasets.load_mnist(data_root / "mnist")
    test_rows = _rows(datasets.prepare(x_test, np.zeros(N_TEST, int))[0])
    if held == 0:
        assert call["validation"] is None
        return
    x_val = call["validation"][0]
    assert len(x_val) == held
    assert not _rows(x_val) & test_rows and not _rows(x_val) & _rows(x_train)
    assert _rows(x_val) | _rows(x_train) == _rows(datasets.prepare(x_all, np.zeros(N_TRAIN, int))[0])
    assert call["recipe"]["validation"] == held


def test_the_validation_split_follows_the_seed(data_root, tmp_path, fit_calls):
    for seed in ("1", "1", "2"):
        with pytest.raises(Stop):
            cli.main([str(a) for a in train_argv(data_root, tmp_path / seed, "--seed", seed)])
    first, again, other = (_rows(call["validation"][0]) for call in fit_calls)
    assert first == again and first != other


def test_a_validation_split_as_large_as_the_training_set_is_refused(data_root, tmp_path, capsys):
    code, _, err = run(capsys, *train_argv(data_root, tmp_path / "o", "--validation", N_TRAIN))
    assert_one_line_error(code, err, mentions="argument --validation")


# ---------------------------------------------------------------------------------------------
# An explicit --data-dir is the only place looked at; evaluate finds the data trained on


def test_a_mistyped_data_dir_never_falls_back(data_root, tmp_path, capsys, monkeypatch, fit_calls):
    monkeypatch.setenv("FNNET_DATA_DIR", str(data_root))  # the real place: must not be used
    code, _, err = run(capsys, "train", "--data-dir", tmp_path / "typo", "--out", tmp_path / "o")
    assert_one_line_error(code, err, status=1, mentions=f"mnist not found in --data-dir "
                                                        f"{tmp_path / 'typo'}")
    assert "--data-dir is the only place looked at" in err and fit_calls == []


def test_evaluate_reads_the_data_folder_the_run_recorded(data_root, tmp_path, capsys,
                                                         monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(data_root / "mnist", copy)
    code, _, err = run(capsys, "train", "--data-dir", copy, "--no-download", "--out",
                       tmp_path / "run", "--layers", "784,8,10", "--epochs", "1", "--quiet")
    assert code == 0, err
    monkeypatch.delenv("FNNET_DATA_DIR", raising=False)
    monkeypatch.setenv("FNNET_CACHE_DIR", str(tmp_path / "empty-cache"))
    checkpoint = tmp_path / "run" / "model.npz"
    code, _, err = run(capsys, "evaluate", checkpoint, "--no-download")
    assert code == 0, err
    shutil.move(copy, tmp_path / "moved")
    code, _, err = run(capsys, "evaluate", checkpoint, "--no-download")
    assert_one_line_error(code, err, status=1, mentions="the data folder the checkpoint records")
    assert str(copy) in err and "pass --data-dir" in err
    code, _, err = run(capsys, "evaluate", checkpoint, "--data-dir", tmp_path / "moved")
    assert code == 0, err


def test_labels_out_of_range_are_refused_where_data_enters(data_root, tmp_path, capsys):
    """A label file with a 10 in it: train and evaluate refuse it, naming file, value, place."""
    code, _, err = run(capsys, *train_argv(data_root, tmp_path / "run", "--epochs", "1"))
    assert code == 0, err
    folder = tmp_path / "bad"
    shutil.copytree(data_root / "mnist", folder)
    labels = datasets.read_idx(folder / datasets.FILES[3])
    labels[17] = 10
    datasets.write_idx(folder / datasets.FILES[3], labels)
    for argv in (["train", "--out", tmp_path / "o"], ["evaluate", tmp_path / "run" / "model.npz"]):
        code, _, err = run(capsys, *argv, "--data-dir", folder)
        assert_one_line_error(code, err, status=1, mentions=str(folder / datasets.FILES[3]))
        assert "found 10 at index 17" in err


# ---------------------------------------------------------------------------------------------
# Ctrl-C


def _interrupt_after_one_epoch(monkeypatch):
    real_fit = cli.train.fit

    def fit_then_ctrl_c(**kwargs):
        real_fit(**dict(kwargs, epochs=1))
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.train, "fit", fit_then_ctrl_c)


def test_ctrl_c_says_where_the_state_is_and_how_to_resume(data_root, tmp_path, capsys,
                                                          monkeypatch):
    out = tmp_path / "run"
    _interrupt_after_one_epoch(monkeypatch)
    code, _, err = run(capsys, *train_argv(data_root, out))
    assert code == cli.EXIT_INTERRUPTED and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert f"the state after epoch 1 is in {out / 'train_state.npz'}" in line
    command = line.split("resume with: ")[1]
    argv = shlex.split(command)
    assert argv[:2] == ["fnnet", "train"] and argv[-1] == "--resume"
    monkeypatch.undo()
    code, _, err = run(capsys, *argv[1:])
    assert code == 0, err
    assert read_json(out / "metrics.json")["history"]["epoch"] == [1, 2]


def test_ctrl_c_before_the_first_epoch(data_root, tmp_path, capsys, monkeypatch):
    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.train, "fit", interrupted)
    code, _, err = run(capsys, *train_argv(data_root, tmp_path / "run"))
    assert code == cli.EXIT_INTERRUPTED
    (line,) = err.strip().splitlines()
    assert "nothing was saved to resume from" in line


def _disk_full_on_call(monkeypatch, module, name, call):
    """``module.name`` raising ENOSPC, as a full disk would, from its ``call``-th call on."""
    real, calls = getattr(module, name), []

    def full(path, *args, **kwargs):
        calls.append(path)
        if len(calls) >= call:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, name, full)


@pytest.mark.parametrize("where", ["checkpoint", "results"])
def test_a_full_disk_mid_training_is_one_line_with_the_resume_command(data_root, tmp_path, capsys,
                                                                      monkeypatch, where):
    """The second epoch's checkpoint, or the results after the last epoch, cannot be written:
    one line with the error, the state kept (the last whole checkpoint) and the command that
    resumes, which then ends the run as an uninterrupted one would."""
    out = tmp_path / "run"
    # checkpoints.save writes train_state.npz after epochs 1 and 2, then model.npz
    _disk_full_on_call(monkeypatch, checkpoints, "save", 2 if where == "checkpoint" else 3)
    code, _, err = run(capsys, *train_argv(data_root, out))
    assert_one_line_error(code, err, status=1, mentions="No space left on device")
    epoch = 1 if where == "checkpoint" else 2
    assert f"the state after epoch {epoch} is in {out / 'train_state.npz'}" in err
    argv = shlex.split(err.split("resume with: ")[1])
    assert argv[:2] == ["fnnet", "train"] and argv[-1] == "--resume"
    monkeypatch.undo()
    code, _, err = run(capsys, *argv[1:])
    assert code == 0, err
    assert read_json(out / "metrics.json")["history"]["epoch"] == [1, 2]
    assert (out / "model.npz").is_file()


def test_ctrl_c_elsewhere_is_one_line(capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.gradcheck, "check_grads", interrupted)
    code, _, err = run(capsys, "gradcheck", "--layers", "4,3")
    assert code == cli.EXIT_INTERRUPTED and err.strip() == "fnnet gradcheck: interrupted"
    fake = types.ModuleType("fnnet.bench")
    fake.main = interrupted
    monkeypatch.setitem(sys.modules, "fnnet.bench", fake)
    code, _, err = run(capsys, "bench", "--quick")
    assert code == cli.EXIT_INTERRUPTED and err.strip() == "fnnet bench: interrupted"


# ---------------------------------------------------------------------------------------------
# --out that cannot be written: one line, exit 2, before any work


def _unusable_outs(tmp_path, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = cli.common.os.access
    monkeypatch.setattr(cli.common.os, "access",
                        lambda path, mode: False if str(path) == str(locked)
                        else real_access(path, mode))
    return {a_file: "it is a file", a_file / "sub": f"{a_file} is a file",
            locked / "run": f"{locked} is not writable"}


def test_an_unusable_out_is_refused_before_any_work(data_root, tmp_path, capsys, monkeypatch,
                                                    fit_calls, bench_calls):
    for out, problem in _unusable_outs(tmp_path, monkeypatch).items():
        for argv in (train_argv(data_root, out), ["evaluate", tmp_path / "none.npz", "--out", out],
                     ["bench", "--quick", "--out", out], ["bench", f"--out={out}"]):
            code, stdout, err = run(capsys, *argv)
            assert_one_line_error(code, err, mentions=f"argument --out: cannot write into {out}")
            assert problem in err and stdout == ""
    assert fit_calls == [] and bench_calls == []


# ---------------------------------------------------------------------------------------------
# What a new user reads


@pytest.mark.parametrize("command", ["", "train", "evaluate", "gradcheck"])
def test_help_has_no_markup_and_promises_no_figure(capsys, command):
    code, out, _ = run(capsys, *([command] if command else []), "--help")
    assert code == 0
    assert "``" not in out
    assert not re.search(r"\d\s?%", out), out


def test_fashion_mnist_figures_name_the_classes(data_root, tmp_path, capsys, monkeypatch):
    from fnnet import plots

    seen = {}
    for name in ("plot_confusion", "plot_digits"):
        real = getattr(plots, name)
        monkeypatch.setattr(plots, name, lambda *a, _real=real, _name=name, **k: (
            seen.__setitem__(_name, k.get("class_names")), _real(*a, **k))[1])
    out = tmp_path / "run"
    code, _, err = run(capsys, *train_argv(data_root, out, "--dataset", "fashion-mnist",
                                           "--epochs", "1"))
    assert code == 0, err
    code, _, err = run(capsys, "evaluate", out / "model.npz")
    assert code == 0, err
    names = list(datasets.CLASS_NAMES["fashion-mnist"])
    assert seen == {"plot_confusion": names, "plot_digits": names}


def test_a_network_too_large_for_memory_is_one_line_with_the_figure(data_root, tmp_path, capsys):
    from fnnet import cli as fnnet_cli
    for argv in (["gradcheck", "--layers", "784,99999999,10"],
                 train_argv(data_root, tmp_path / "o", "--layers", "784,99999999,10")):
        status = fnnet_cli.main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert status == 1 and len(err.strip().splitlines()) == 1, err
        assert re.search(r"needs about [\d,.]+ GiB .* only [\d,.]+ GiB is available", err)


@pytest.mark.digest_warnings
def test_files_that_are_not_the_published_ones_are_said_in_one_warning_line(data_root, tmp_path,
                                                                           capsys):
    """Issue 20: local files were never checked against the published digests. The stand-in
    files match neither data set's: one line, ``fnnet train: warning: ...``, then the run goes
    on (here to a refusal for memory, so that nothing trains)."""
    from fnnet import cli as fnnet_cli
    status = fnnet_cli.main([str(a) for a in train_argv(data_root, tmp_path / "o", "--layers",
                                                          "784,99999999,10")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(lines) == 2, lines
    assert lines[0].startswith("fnnet train: warning: mnist: ") and "match neither" in lines[0]
    assert lines[1].startswith("fnnet train: error:")


def test_bf16_on_a_cpu_without_bf16_units_is_said_once(data_root, tmp_path, capsys, monkeypatch):
    """Issue 20: --precision bf16 is 1.1-1.8x slower than f32 on CPUs without bfloat16 units,
    with no hint. One line says so; on a CPU with them, nothing is said."""
    from fnnet import cli as fnnet_cli
    from fnnet.bench import mixed
    for units, said in (([], True), (["avx512_bf16"], False)):
        monkeypatch.setattr(mixed, "cpu_description", lambda units=units: {
            "model": "Test CPU", "bf16_units": units})
        argv = train_argv(data_root, tmp_path / str(said), "--precision", "bf16", "--layers",
                          "784,99999999,10")  # refused for memory after the note: nothing trains
        fnnet_cli.main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert ("Test CPU) has no bfloat16 matrix units" in err) is said
        assert err.count("note:") == int(said)
