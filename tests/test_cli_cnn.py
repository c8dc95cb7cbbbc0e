"""``fnnet train|evaluate|gradcheck --model cnn``: the CNN on the command line.

The CNN trains on NHWC images ``(N, 28, 28, 1)`` with its own defaults, its checkpoint records the
model kind and architecture so that ``evaluate`` rebuilds it, ``--resume`` refuses a change of
model, ``--ensemble`` stacks CNNs, and the flags only the MLP takes are refused. Uses
``test_cli``'s synthetic data (500 training, 200 test images); runs are one epoch.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import test_cli
from test_cli import (
    N_TEST,
    assert_evaluate_scores_the_ensemble,
    assert_one_line_error,
    assert_png,
    read_json,
    run,
)
from test_scoring import assert_checkpoint_round_trip, random_params

import fnnet
from fnnet import cli, datasets
from fnnet.cli import model_config
from fnnet.cli.model_config import CNN_ARCHITECTURE, MetadataError
from fnnet.datasets import ALIGNMENT

data_root = test_cli.data_root  # the synthetic data, one copy for this module

CNN = ["--model", "cnn", "--epochs", "1", "--batch-size", "50", "--validation", "50", "--quiet"]
HELD = 50


def cnn_argv(data_root, out, *extra):
    return ["train", "--data-dir", data_root, "--no-download", "--out", out, *CNN, *extra]


class Stop(Exception):
    """Raised by a stand-in ``fit`` once it has seen its arguments."""


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """One ``fnnet train --model cnn`` run, with the inputs ``fit`` was handed."""
    out = tmp_path_factory.mktemp("cnn") / "run"
    code, seen = test_cli.train_with_spy(cnn_argv(data_root, out))
    return code, out, seen


# ---------------------------------------------------------------------------------------------
# train and evaluate


def test_train_feeds_the_cnn_nhwc_images_and_records_the_model(trained):
    code, out, seen = trained
    assert code == 0
    x_train, _ = seen["train"]
    assert x_train.shape == (500 - HELD, 28, 28, 1) and x_train.dtype == np.float32
    assert seen["validation"][0].shape == (HELD, 28, 28, 1)
    assert seen["model"] == fnnet.cnn()
    config = read_json(out / "config.json")
    assert config["model"] == "cnn" and config["layers"] is None
    assert config["architecture"] == CNN_ARCHITECTURE
    assert (config["activation"], config["output"], config["loss"]) == ("relu", "softmax",
                                                                         "cross-entropy")
    params, meta = fnnet.load(out / "model.npz")
    assert meta["model"] == "cnn" and meta["architecture"] == CNN_ARCHITECTURE
    assert params[0].W.shape == (3, 3, 1, 32) and params[3].W.shape == (3, 3, 32, 64)
    metrics = read_json(out / "metrics.json")
    assert metrics["history"]["epoch"] == [1] and metrics["examples"]["test"] == N_TEST
    assert 0 <= metrics["test_accuracy"] <= 1
    assert_png(out / "curves.png")


def test_evaluate_rebuilds_the_cnn(trained, data_root, capsys):
    _, out, _ = trained
    code, stdout, err = run(capsys, "evaluate", out / "model.npz", "--data-dir", data_root,
                            "--no-download", "--out", out / "ev")
    assert code == 0, err
    metrics, trained_metrics = read_json(out / "ev" / "metrics.json"), read_json(out / "metrics.json")
    assert metrics["test_accuracy"] == pytest.approx(trained_metrics["test_accuracy"], abs=1e-6)
    assert metrics["test_loss"] == pytest.approx(trained_metrics["test_loss"], rel=1e-5)
    assert sum(map(sum, metrics["confusion_matrix"])) == N_TEST
    assert_png(out / "ev" / "confusion.png")
    assert_png(out / "ev" / "misclassified.png")
    assert "cnn conv 32-64" in stdout


def test_the_cnn_defaults_are_its_own(data_root, tmp_path, capsys, monkeypatch):
    calls = []

    def fake_fit(**kwargs):
        calls.append(kwargs)
        raise Stop

    monkeypatch.setattr(cli.train, "fit", fake_fit)
    with pytest.raises(Stop):
        cli.main([str(a) for a in ["train", "--model", "cnn", "--data-dir", data_root,
                                   "--no-download", "--out", tmp_path / "o", "--quiet"]])
    (call,) = calls
    config = call["recipe"]  # recorded in the run's configuration, written after an epoch
    assert not (tmp_path / "o" / "config.json").exists()  # nothing written by a refused run
    defaults = cli.CNN_DEFAULTS
    assert {key: config[key] for key in defaults} == defaults
    assert call["epochs"] == defaults["epochs"] and call["batch_size"] == defaults["batch_size"]
    assert call["train"][0].ctypes.data % ALIGNMENT == 0  # held once, no copy on the CPU
    steps = (500 - 500 // 10) // defaults["batch_size"]  # validation: a tenth
    optimizer = call["optimizer"]
    assert optimizer.name == defaults["optimizer"] and optimizer.hyperparams["lr"] == defaults["lr"]
    if defaults["lr_decay"] != 1:
        assert optimizer.schedule == fnnet.optim.exponential_decay(defaults["lr_decay"], steps)
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0 and "--model" in out
    text = " ".join(out.split())
    assert (f"by default {defaults['optimizer']} lr {defaults['lr']:g}, multiplied by "
            f"{defaults['lr_decay']:g} per epoch (--lr-decay), for {defaults['epochs']} epochs "
            f"of batch {defaults['batch_size']}") in text


def test_resume_continues_a_cnn_and_refuses_a_change_of_model(trained, data_root, tmp_path,
                                                               capsys):
    _, original, _ = trained
    out = tmp_path / "resumed"
    shutil.copytree(original, out)
    code, _, err = run(capsys, *cnn_argv(data_root, out, "--resume", "--epochs", "2"))
    assert code == 0, err
    assert read_json(out / "metrics.json")["history"]["epoch"] == [1, 2]

    mlp = ["train", "--data-dir", data_root, "--no-download", "--out", out, "--epochs", "3",
           "--batch-size", "50", "--validation", "50", "--quiet", "--resume"]
    code, _, err = run(capsys, *mlp)
    assert_one_line_error(code, err, mentions="--resume")
    assert "model 'cnn' -> 'mlp'" in err


def test_an_ensemble_of_cnns_is_trained_and_evaluated(data_root, tmp_path, capsys):
    out = tmp_path / "ens"
    code, stdout, err = run(capsys, *cnn_argv(data_root, out, "--ensemble", "2"))
    assert code == 0, err
    params, meta = fnnet.load(out / "model.npz")
    assert meta["ensemble"] == 2 and params[0].W.shape == (2, 3, 3, 1, 32)
    metrics = read_json(out / "metrics.json")
    assert len(metrics["model_test_accuracy"]) == 2
    assert_evaluate_scores_the_ensemble(capsys, data_root, out, tmp_path / "ev", metrics)


# ---------------------------------------------------------------------------------------------
# Refusals: one line, exit status 2, before any work


REFUSED = [
    (["--layers", "784,10"], "argument --layers: only for --model mlp"),
    (["--activation", "relu"], "argument --activation: only for --model mlp"),
    (["--output", "softmax"], "argument --output: only for --model mlp"),
    (["--layers", "784,10", "--output", "sigmoid"], "argument --layers, --output: only for"),
    (["--loss", "mse"], "--model cnn trains with cross-entropy only"),
    (["--loss", "binary-cross-entropy"], "got --loss binary-cross-entropy"),
    (["--model", "rnn"], "argument --model"),
]


@pytest.mark.parametrize("flags,mentions", REFUSED, ids=[" ".join(f) for f, _ in REFUSED])
def test_mlp_only_flags_are_refused_with_the_cnn(data_root, tmp_path, capsys, flags, mentions):
    code, out, err = run(capsys, "train", "--model", "cnn", *flags, "--data-dir", data_root,
                         "--out", tmp_path / "o")
    assert_one_line_error(code, err, mentions=mentions)
    assert out == "" and not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# gradcheck


def test_gradcheck_checks_the_cnn(capsys):
    code, out, err = run(capsys, "gradcheck", "--model", "cnn", "--batch", "2")
    assert code == 0, out + err
    assert out.startswith("gradcheck: cnn conv 32-64")
    assert "[0].W" in out and "(3, 3, 1, 32)" in out and "[10].b" in out
    assert "float32: PASS" in out and "float64: PASS" in out
    code, _, err = run(capsys, "gradcheck", "--model", "cnn", "--layers", "784,10")
    assert_one_line_error(code, err, mentions="only for --model mlp")


# ---------------------------------------------------------------------------------------------
# The metadata of a CNN (fnnet.cli.model_config) and its images (fnnet.datasets.prepare)


def cnn_config(**changes):
    settings = dict(dataset="mnist", model="cnn", loss="cross-entropy", optimizer="momentum",
                    lr=0.05, lr_decay=0.75, epochs=1, batch_size=64, grads="manual", seed=0, ensemble=1)
    return model_config.train_config(**dict(settings, **changes))


@pytest.mark.parametrize("num_models", [1, 2])
def test_cnn_metadata_round_trip(tmp_path, num_models):
    made = cnn_config(ensemble=num_models)
    assert tuple(made) == model_config.CONFIG_KEYS
    assert made["layers"] is None and made["architecture"] == CNN_ARCHITECTURE
    model, count = model_config.model_from_metadata(made)
    assert model == fnnet.cnn() and count == num_models
    assert model_config.takes_images(made)
    assert model_config.describe(made) == "cnn conv 32-64 (3x3, pool 2), dense 128, dropout 0.5"
    params = random_params(model_config.param_template(model, num_models))
    assert params[0].W.shape == ((3, 3, 1, 32) if num_models == 1 else (2, 3, 3, 1, 32))
    assert_checkpoint_round_trip(tmp_path / "model.npz", params, made, model, num_models)


def test_a_cnn_architecture_other_than_the_default_is_rebuilt():
    architecture = dict(CNN_ARCHITECTURE, channels=[4, 8], hidden=None, dropout=0.25)
    model, _ = model_config.model_from_metadata(cnn_config(architecture=architecture))
    assert model == fnnet.cnn(channels=(4, 8), hidden=None, dropout=0.25)


@pytest.mark.parametrize("key,value", [
    ("model", "rnn"), ("layers", [784, 10]), ("activation", "tanh"), ("output", "sigmoid"),
    ("loss", "mse"), ("architecture", None), ("architecture", {"channels": [32]}),
    ("architecture", dict(CNN_ARCHITECTURE, kernel_size=20)),
    ("architecture", dict(CNN_ARCHITECTURE, channels="32,64")),
])
def test_invalid_cnn_metadata_is_named(key, value):
    with pytest.raises(MetadataError, match=f"invalid metadata.*{key}="):
        model_config.model_from_metadata(dict(cnn_config(), **{key: value}))


def test_metadata_without_a_model_key_is_an_mlp():
    """Checkpoints written before ``--model`` existed have neither ``model`` nor
    ``architecture``: they rebuild as MLPs and resume as MLP runs."""
    mlp_config = model_config.train_config(
        dataset="mnist", layers=[784, 8, 10], activation="relu", output="softmax",
        loss="cross-entropy", optimizer="momentum", lr=0.1, epochs=1, batch_size=64,
        grads="manual", seed=0, ensemble=1)
    old = {key: value for key, value in mlp_config.items() if key not in ("model", "architecture")}
    model, _ = model_config.model_from_metadata(old)
    assert model == fnnet.mlp([784, 8, 10]) and not model_config.takes_images(old)


def test_the_optimizer_of_a_configuration_decays_per_epoch():
    constant = model_config.optimizer_of(dict(cnn_config(), lr_decay=1.0), steps_per_epoch=10)
    assert str(constant) == str(fnnet.optim.momentum(0.05))
    decaying = model_config.optimizer_of(cnn_config(), steps_per_epoch=10)
    assert decaying.schedule == fnnet.optim.exponential_decay(0.75, every=10)
    assert float(decaying.schedule(20)) == pytest.approx(0.75**2)
    legacy = {key: value for key, value in cnn_config().items() if key != "lr_decay"}
    assert str(model_config.optimizer_of(legacy, 10)) == str(constant)
    with pytest.raises(MetadataError, match="lr_decay must be a finite number in \\(0, 1\\]"):
        cnn_config(lr_decay=1.5)


def test_prepare_gives_aligned_nhwc_images():
    (x, y), _ = datasets.synthetic_mnist(7, 0)
    images, labels = datasets.prepare(x, y, images=True)
    flat, _ = datasets.prepare(x, y)
    assert images.shape == (7, 28, 28, 1) and images.dtype == np.float32
    assert images.ctypes.data % ALIGNMENT == 0 and images.flags.c_contiguous
    np.testing.assert_array_equal(images.reshape(7, -1), flat)
    assert labels.dtype == np.int32
    assert datasets.prepare(x[..., None], y, images=True)[0].shape == (7, 28, 28, 1)
    with pytest.raises(ValueError, match="images=True expects images"):
        datasets.prepare(x.reshape(7, -1), y, images=True)
