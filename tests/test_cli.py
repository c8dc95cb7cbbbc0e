"""Smoke tests of the ``fnnet`` command line (fnnet/cli/) on small synthetic data.

Every subcommand runs in-process through ``cli.main`` and writes what it promises; one test runs
``python -m fnnet.cli --help`` in a subprocess to prove the entry point. Every bad flag value is a
single line on stderr with exit status 2 and no traceback; data that cannot be found is exit 1.
Networks are tiny (784-16-10), data is 500 training and 200 test images, runs are 1-2 epochs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import jax.numpy as jnp
import pytest

import fnnet
from fnnet import cli, datasets
from fnnet.gradcheck import GradReport, GradRow

REPO = Path(__file__).resolve().parents[1]
N_TRAIN, N_TEST = 500, 200
SMALL = ["--layers", "784,16,10", "--epochs", "2", "--batch-size", "50", "--quiet"]
TRAIN_KEYS = {"config", "history", "test_accuracy", "test_loss", "train_accuracy", "train_loss",
              "epochs_trained", "seconds", "diverged", "divergence", "examples",
              "validation_accuracy", "validation_loss"}
MODEL_METADATA = {"dataset", "model", "layers", "activation", "output", "architecture", "loss",
                  "optimizer", "lr", "lr_decay", "epochs", "batch_size", "grads", "precision",
                  "seed", "ensemble", "validation", "data_dir", "test_accuracy", "test_loss",
                  "train_accuracy", "dtype"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A root holding synthetic ``mnist/`` and ``fashion-mnist/`` folders of the four IDX files."""
    root = tmp_path_factory.mktemp("data")
    train, test = datasets.synthetic_mnist(N_TRAIN, N_TEST, seed=0)
    for name in datasets.DATASETS:
        datasets.write_mnist_files(root / name, train, test)
    return root


def train_with_spy(argv):
    """``(exit status, the keyword arguments fit was handed)`` of ``fnnet argv...`` run
    in-process, ``fit`` itself running as usual."""
    seen, real_fit = {}, cli.train.fit

    def spy(**kwargs):
        seen.update(kwargs)
        return real_fit(**kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli.train, "fit", spy)
        code = cli.main([str(a) for a in argv])
    return code, seen


def run(capsys, *argv):
    """``(exit status, stdout, stderr)`` of ``fnnet argv...`` run in-process."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def train_argv(data_root, out, *extra):
    return ["train", "--data-dir", data_root, "--no-download", "--out", out, *SMALL, *extra]


def read_json(path):
    return json.loads(Path(path).read_text())


def assert_one_line_error(code, err, status=2, mentions=None):
    assert code == status, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fnnet") and "error:" in lines[0]
    if mentions:
        assert mentions in lines[0]


def assert_png(path):
    path = Path(path)
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """One ``fnnet train`` run (seed 1), shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("run") / "mnist"
    stdout = StringIO()
    with redirect_stdout(stdout):
        code = cli.main([str(a) for a in train_argv(data_root, out, "--seed", "1")])
    return code, stdout.getvalue(), out


# ---------------------------------------------------------------------------------------------
# Entry point and help


def test_entry_point_help_in_a_subprocess():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, "-m", "fnnet.cli", "--help"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for command in ("train", "evaluate", "gradcheck", "bench"):
        assert command in proc.stdout


@pytest.mark.parametrize("command", ["train", "evaluate", "gradcheck"])
def test_every_subcommand_has_help(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert out.startswith(f"usage: fnnet {command}")


# ---------------------------------------------------------------------------------------------
# train and evaluate


def test_train_writes_checkpoint_metrics_and_curves(trained, data_root):
    code, stdout, out = trained
    assert code == 0
    assert "test accuracy" in stdout
    metrics = read_json(out / "metrics.json")
    assert TRAIN_KEYS <= set(metrics)
    assert metrics["history"]["epoch"] == [1, 2]
    assert metrics["config"]["layers"] == [784, 16, 10]
    assert metrics["config"]["optimizer"] == cli.DEFAULT_OPTIMIZER
    assert metrics["config"]["lr"] == cli.DEFAULT_LR[cli.DEFAULT_OPTIMIZER]
    assert metrics["diverged"] is False and metrics["divergence"] == []
    assert metrics["examples"] == {"train": N_TRAIN - N_TRAIN // 10, "validation": N_TRAIN // 10,
                                   "test": N_TEST}
    assert metrics["config"]["validation"] == N_TRAIN // 10
    assert metrics["config"]["data_dir"] == str((data_root / "mnist").resolve())
    assert metrics["validation_accuracy"] == pytest.approx(metrics["history"]["val_accuracy"][-1])
    assert metrics["test_accuracy"] > 0.8  # synthetic classes are blobs: easy
    assert f"{metrics['test_accuracy']:.2%}" in stdout
    assert f"validation accuracy {metrics['validation_accuracy']:.2%}" in stdout
    assert f"test set ({N_TEST} examples, scored once after training)" in stdout
    summary = stdout.strip().splitlines()[-1]
    for name in cli.train.WRITTEN:
        assert name in summary and (out / name).is_file(), name
    assert_png(out / "curves.png")

    params, meta = fnnet.load(out / "model.npz")
    assert MODEL_METADATA <= set(meta)
    assert meta["layers"] == [784, 16, 10] and meta["seed"] == 1 and meta["ensemble"] == 1
    assert meta["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert params[0].W.shape == (16, 784) and params[0].W.dtype == jnp.float32
    assert params[2].b.shape == (10,)


def test_evaluate_reads_the_train_checkpoint(trained, data_root, capsys):
    _, _, out = trained
    code, stdout, err = run(capsys, "evaluate", out / "model.npz", "--data-dir", data_root,
                            "--no-download")
    assert code == 0, err
    ev = out / "evaluation"  # the default --out: beside the checkpoint
    metrics = read_json(ev / "metrics.json")
    trained_metrics = read_json(out / "metrics.json")
    assert metrics["test_accuracy"] == pytest.approx(trained_metrics["test_accuracy"], abs=1e-6)
    assert metrics["test_loss"] == pytest.approx(trained_metrics["test_loss"], rel=1e-5)
    assert metrics["n_test"] == N_TEST
    confusion = metrics["confusion_matrix"]
    assert len(confusion) == 10 and sum(map(sum, confusion)) == N_TEST
    assert sum(confusion[i][i] for i in range(10)) == round(metrics["test_accuracy"] * N_TEST)
    assert metrics["misclassified"] == N_TEST - sum(confusion[i][i] for i in range(10))
    assert_png(ev / "confusion.png")
    assert_png(ev / "misclassified.png")
    assert f"{metrics['test_accuracy']:.2%}" in stdout


def test_ensemble_trains_k_models_and_evaluates_each_and_the_average(data_root, tmp_path, capsys):
    out = tmp_path / "ens"
    code, stdout, err = run(capsys, *train_argv(data_root, out, "--ensemble", "2"))
    assert code == 0, err
    metrics = read_json(out / "metrics.json")
    assert len(metrics["model_test_accuracy"]) == 2 and len(metrics["history"]["loss"][0]) == 2
    assert metrics["mean_test_accuracy"] == pytest.approx(sum(metrics["model_test_accuracy"]) / 2)
    assert "model 1:" in stdout and "mean of 2 models" in stdout and "ensemble of 2" in stdout
    params, meta = fnnet.load(out / "model.npz")
    assert meta["ensemble"] == 2 and params[0].W.shape == (2, 16, 784)

    assert_evaluate_scores_the_ensemble(capsys, data_root, out, tmp_path / "ev", metrics)


def assert_evaluate_scores_the_ensemble(capsys, data_root, run_folder, out, metrics):
    """``fnnet evaluate`` of the two-model checkpoint in ``run_folder`` scores each model and
    the ensemble as training did (``metrics``), and draws its figures into ``out``."""
    code, stdout, err = run(capsys, "evaluate", run_folder / "model.npz", "--data-dir", data_root,
                            "--no-download", "--out", out)
    assert code == 0, err
    ev = read_json(out / "metrics.json")
    assert ev["model_test_accuracy"] == pytest.approx(metrics["model_test_accuracy"], abs=1e-6)
    assert ev["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert "ensemble of 2 (averaged probabilities)" in stdout
    assert_png(out / "misclassified.png")
    assert_png(out / "confusion.png")


def test_one_hot_loss_adam_autodiff_full_batch_fashion(data_root, tmp_path, capsys):
    """MSE trains on one-hot targets (binary cross-entropy takes the same path)."""
    out = tmp_path / "run"
    flags = ["--dataset", "fashion-mnist", "--loss", "mse", "--output", "linear", "--activation",
             "tanh", "--optimizer", "adam", "--grads", "autodiff", "--batch-size", "full",
             "--epochs", "1", "--lr-decay", "0.5"]
    code, _, err = run(capsys, *train_argv(data_root, out, *flags))
    assert code == 0, err
    metrics = read_json(out / "metrics.json")
    assert metrics["history"]["epoch"] == [1]
    assert metrics["config"]["lr_decay"] == 0.5 and metrics["config"]["model"] == "mlp"
    assert 0 <= metrics["test_accuracy"] <= 1
    code, _, err = run(capsys, "evaluate", out / "model.npz", "--data-dir", data_root,
                       "--no-download", "--out", tmp_path / "ev")
    assert code == 0, err
    assert read_json(tmp_path / "ev" / "metrics.json")["test_accuracy"] == pytest.approx(
        metrics["test_accuracy"], abs=1e-6)


def test_resume_continues_a_run(trained, data_root, tmp_path, capsys):
    """``--resume --epochs 3`` on a copy of the two-epoch run adds a third epoch to its history."""
    _, _, original = trained
    out = tmp_path / "resumed"
    shutil.copytree(original, out)
    code, _, err = run(capsys, *train_argv(data_root, out, "--seed", "1", "--resume", "--epochs", "3"))
    assert code == 0, err
    before, after = read_json(original / "metrics.json"), read_json(out / "metrics.json")
    assert after["history"]["epoch"] == [1, 2, 3]
    assert after["history"]["loss"][:2] == before["history"]["loss"]
    assert after["config"]["epochs"] == 3 and after["epochs_trained"] == 3

    code, _, err = run(capsys, *train_argv(data_root, out, "--seed", "1", "--resume", "--lr", "0.5"))
    assert_one_line_error(code, err, mentions="--resume")


def test_precision_is_trained_recorded_scored_and_kept_on_resume(data_root, tmp_path, capsys,
                                                                monkeypatch):
    """``--precision f16``: recorded in config.json and the checkpoint, loss scale in the
    history, evaluate scores under it (the same test accuracy train printed), and a resume under
    another precision is refused. (The CPU is said to have bfloat16 units, so that the refusal is
    the only line wherever the test runs: the note about emulated bf16 has its own test.)"""
    from fnnet.bench import mixed
    monkeypatch.setattr(mixed, "cpu_description", lambda: {"model": "Test CPU",
                                                           "bf16_units": ["avx512_bf16"]})
    out = tmp_path / "f16"
    code, _, err = run(capsys, *train_argv(data_root, out, "--precision", "f16"))
    assert code == 0, err
    metrics = read_json(out / "metrics.json")
    assert metrics["config"]["precision"] == "f16"
    assert metrics["history"]["skipped_steps"] == [0, 0] and len(metrics["history"]["loss_scale"]) == 2
    code, stdout, err = run(capsys, "evaluate", out / "model.npz", "--data-dir", data_root)
    assert code == 0, err
    assert f"test accuracy {100 * metrics['test_accuracy']:.2f}%" in stdout
    code, _, err = run(capsys, *train_argv(data_root, out, "--resume", "--precision", "bf16",
                                           "--epochs", "3"))
    assert_one_line_error(code, err, mentions="precision 'f16' -> 'bf16'")


def test_divergence_exits_3_with_one_line_and_outputs_still_written(data_root, tmp_path, capsys):
    out = tmp_path / "diverged"
    code, stdout, err = run(capsys, *train_argv(data_root, out, "--optimizer", "sgd", "--lr", "1e20"))
    assert_one_line_error(code, err, status=cli.EXIT_DIVERGED,
                          mentions="training diverged at epoch 1")
    assert "non-finite" in err and "--lr" in err
    metrics = read_json(out / "metrics.json")
    assert metrics["diverged"] is True and metrics["divergence"] == [{"epoch": 1, "models": [0]}]
    assert "test accuracy" in stdout
    assert (out / "model.npz").is_file()
    assert fnnet.load(out / "model.npz")[1]["diverged"] is True
    assert_png(out / "curves.png")


def test_divergence_message_comes_from_the_history():
    history = {"diverged": [{"epoch": 2, "models": [0, 2]}, {"epoch": 3, "models": [1]}]}
    message = cli.train.divergence_message(history, 3)
    assert message.startswith("training diverged models 0, 2 at epoch 2, model 1 at epoch 3:")
    only = cli.train.divergence_message({"diverged": [{"epoch": 4, "models": [0]}]}, 1)
    assert only.startswith("training diverged at epoch 4:") and "\n" not in only
    assert cli.train.divergence_message({"loss": [0.5]}, 1) is None


# ---------------------------------------------------------------------------------------------
# gradcheck


@pytest.mark.parametrize("flags", [
    ["--layers", "784,8,10", "--batch", "4"],
    ["--layers", "12,6,3", "--activation", "sigmoid", "--output", "sigmoid", "--loss",
     "binary-cross-entropy", "--finite-differences"],
], ids=["relu-softmax-ce", "sigmoid-bce-finite-differences"])
def test_gradcheck_prints_a_table_per_dtype_and_passes(capsys, flags):
    code, out, err = run(capsys, "gradcheck", *flags)
    assert code == 0, out + err
    assert "gradient check (float32)" in out and "gradient check (float64)" in out
    assert "max rel err" in out and "[0].W" in out and "[2].b" in out
    assert "float32: PASS" in out and "float64: PASS" in out
    if "--finite-differences" in flags:
        assert "fin.diff rel" in out


def test_gradcheck_says_when_every_gradient_is_zero(capsys):
    """Issue 20: ``--layers 1,1`` (a softmax over one output: a constant loss) passed silently."""
    code, out, _ = run(capsys, "gradcheck", "--layers", "1,1", "--batch", "2")
    assert code == 0
    assert out.count("every gradient is exactly zero, so this checks nothing") == 2
    code, out, _ = run(capsys, "gradcheck", "--layers", "4,3", "--batch", "2")
    assert "exactly zero" not in out


def test_gradcheck_exits_1_when_a_dtype_fails(capsys, monkeypatch):
    def bad_report(model, loss, params, x, y, **kwargs):
        return GradReport((GradRow("[0].W", (6, 12), 0.5, 0.5),), str(x.dtype), 1.0, 1.0)

    monkeypatch.setattr(cli.gradcheck, "check_grads", bad_report)
    code, out, _ = run(capsys, "gradcheck", "--layers", "12,6,3")
    assert code == 1
    assert "float32: FAIL" in out and "float64: FAIL" in out


# ---------------------------------------------------------------------------------------------
# bench


def test_bench_forwards_its_arguments(capsys, monkeypatch):
    seen = []
    fake = types.ModuleType("fnnet.bench")
    fake.main = lambda argv=None: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, "fnnet.bench", fake)
    assert cli.main(["bench", "--quick", "--out", "somewhere"]) == 3
    assert seen == [["--quick", "--out", "somewhere"]]

    def exits(argv=None):
        raise SystemExit(2)

    fake.main = exits
    assert cli.main(["bench", "--bad"]) == 2


def test_bench_without_the_benchmark_module(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "fnnet.bench", None)  # makes the import fail
    code, _, err = run(capsys, "bench", "--quick")
    assert_one_line_error(code, err, status=1, mentions="cannot import fnnet.bench")
    code, out, _ = run(capsys, "bench", "--help")
    assert code == 0 and out.startswith("usage: fnnet bench")


# ---------------------------------------------------------------------------------------------
# Errors: one line, exit status 2 (1 for missing data), never a traceback


BAD_FLAGS = [
    (["train", "--activation", "swish"], "--activation"),
    (["train", "--output", "softplus"], "--output"),
    (["train", "--loss", "hinge"], "--loss"),
    (["train", "--optimizer", "lbfgs"], "--optimizer"),
    (["train", "--dataset", "cifar10"], "--dataset"),
    (["train", "--layers", "784,abc"], "--layers"),
    (["train", "--layers", "784"], "--layers"),
    (["train", "--layers", "100,10"], "--layers"),
    (["train", "--layers", "784,32,5"], "--layers"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--lr", "0"], "--lr"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--lr-decay", "0"], "--lr-decay"),
    (["train", "--lr-decay", "1.5"], "--lr-decay"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--epochs", "-3"], "--epochs"),
    (["train", "--epochs", "1.5"], "--epochs"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--batch-size", "-8"], "--batch-size"),
    (["train", "--ensemble", "0"], "--ensemble"),
    (["train", "--seed", "-1"], "--seed"),
    (["train", "--loss", "cross-entropy", "--output", "sigmoid"], "--output softmax"),
    (["train", "--loss", "binary-cross-entropy", "--output", "linear"], "--output sigmoid"),
    (["train", "--no-such-flag"], "--no-such-flag"),
    (["evaluate"], "CHECKPOINT"),
    (["gradcheck", "--batch", "0"], "--batch"),
    (["gradcheck", "--layers", "1,x"], "--layers"),
    (["gradcheck", "--tol32", "-1"], "--tol32"),
    (["gradcheck", "--seed", "x"], "--seed"),
    (["gradcheck", "--loss", "mse", "--output", "relu"], "--output"),
    (["frobnicate"], "frobnicate"),
    ([], "COMMAND"),
]


@pytest.mark.parametrize("argv,mentions", BAD_FLAGS, ids=[" ".join(a) or "nothing" for a, _ in BAD_FLAGS])
def test_bad_flag_values_are_one_line_errors(capsys, argv, mentions):
    code, out, err = run(capsys, *argv)
    assert_one_line_error(code, err, mentions=mentions)
    assert out == ""


def test_batch_size_larger_than_the_data(data_root, tmp_path, capsys):
    code, _, err = run(capsys, *train_argv(data_root, tmp_path / "o", "--batch-size", "451"))
    assert_one_line_error(code, err, mentions="larger than the 450 training examples")
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_resume_without_a_saved_state(data_root, tmp_path, capsys):
    code, _, err = run(capsys, *train_argv(data_root, tmp_path / "o", "--resume"))
    assert_one_line_error(code, err, mentions="nothing to resume")


def test_evaluate_refuses_bad_checkpoints(trained, tmp_path, capsys):
    _, _, out = trained
    params, meta = fnnet.load(out / "model.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip archive at all")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes((out / "model.npz").read_bytes()[:2000])
    no_metadata = fnnet.save(tmp_path / "bare.npz", params)
    wrong_shape = fnnet.save(tmp_path / "wrong.npz", params, **dict(meta, layers=[784, 32, 10]))
    bad_meta = fnnet.save(tmp_path / "badmeta.npz", params, **dict(meta, activation="swish"))
    cases = [(tmp_path / "missing.npz", "does not exist"), (garbage, "corrupted"),
             (truncated, "truncated.npz"), (no_metadata, "not a model checkpoint"),
             (wrong_shape, "shape"), (bad_meta, "activation='swish'"), (tmp_path, "CHECKPOINT")]
    for path, mentions in cases:
        code, _, err = run(capsys, "evaluate", path)
        assert_one_line_error(code, err, mentions=mentions)


def test_missing_data_is_one_clear_message(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FNNET_DATA_DIR", raising=False)
    monkeypatch.setenv("FNNET_CACHE_DIR", str(tmp_path / "cache"))
    code, out, err = run(capsys, "train", "--data-dir", tmp_path / "nothing", "--no-download",
                         "--out", tmp_path / "o")
    assert_one_line_error(code, err, status=1, mentions="mnist not found in --data-dir")
    assert str(tmp_path / "nothing") in err and "data_dir=" not in err
    assert not (tmp_path / "o").exists()
