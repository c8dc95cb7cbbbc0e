"""``fnnet train|evaluate|gradcheck --model lstm``: MNIST read row by row by an LSTM.

Each image is 28 time steps of 28 pixels, ``(N, 28, 28)``; the checkpoint records the model kind
and architecture so that ``evaluate`` rebuilds it, the MLP's flags are refused, and gradcheck
checks backpropagation through the 28 steps. Uses ``test_cli``'s synthetic data; one epoch.
"""

from __future__ import annotations

import pytest
import test_cli
from test_cli import assert_one_line_error, read_json, run

import fnnet
from fnnet import cli
from fnnet.cli import model_config
from fnnet.cli.model_config import LSTM_ARCHITECTURE

data_root = test_cli.data_root  # the synthetic data, one copy for this module

LSTM = ["--model", "lstm", "--epochs", "1", "--batch-size", "50", "--validation", "50", "--quiet"]


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """One ``fnnet train --model lstm`` run, with the inputs ``fit`` was handed."""
    out = tmp_path_factory.mktemp("lstm") / "run"
    code, seen = test_cli.train_with_spy(["train", "--data-dir", data_root, "--no-download",
                                          "--out", out, *LSTM])
    return code, out, seen


def test_train_feeds_rows_as_time_steps_and_records_the_model(trained, capsys):
    code, out, seen = trained
    assert code == 0
    assert seen["train"][0].shape[1:] == (28, 28) and seen["validation"][0].shape == (50, 28, 28)
    assert seen["model"] == fnnet.sequence_classifier(28, 10)
    config = read_json(out / "config.json")
    assert config["model"] == "lstm" and config["architecture"] == LSTM_ARCHITECTURE
    assert config["activation"] == "tanh" and config["layers"] is None
    assert config["run"]["model"] == repr(fnnet.sequence_classifier(28, 10))
    defaults = cli.train.LSTM_DEFAULTS
    assert config["optimizer"] == defaults["optimizer"] and config["lr"] == defaults["lr"]
    code, stdout, err = run(capsys, "evaluate", out / "model.npz", "--data-dir",
                            config_dir(config), "--no-download", "--out", out / "eval")
    assert code == 0, err
    assert "test accuracy" in stdout


def config_dir(config):
    return config["data_dir"].rsplit("/", 1)[0]


def test_the_model_kind_rebuilds_and_reads_rows():
    config = model_config.train_config(dataset="mnist", model="lstm", loss="cross-entropy",
                                       optimizer="adam", lr=0.003, epochs=1, batch_size=64,
                                       grads="manual", seed=0, ensemble=1)
    model, count = model_config.model_from_metadata(config)
    assert model == fnnet.sequence_classifier(28, 10) and count == 1
    assert model_config.input_layout(config) == "rows" and not model_config.takes_images(config)
    assert model_config.describe(config) == "lstm 128 over 28 rows of 28 pixels, dense 10"
    images = fnnet.datasets.synthetic_mnist(8, 2, seed=0)[0]
    x, y = model_config.prepare(config, *images)
    assert x.shape == (8, 28, 28) and y.shape == (8,)
    with pytest.raises(model_config.MetadataError, match="architecture"):
        model_config.model_from_metadata(dict(config, architecture={"hidden": 4}))


@pytest.mark.parametrize("flags, message", [
    (["--layers", "784,10"], "argument --layers: only for --model mlp; the LSTM is"),
    (["--loss", "mse"], "argument --loss: --model lstm trains with cross-entropy only"),
])
def test_the_mlp_flags_are_refused(data_root, tmp_path, capsys, flags, message):
    code, _, err = run(capsys, "train", "--data-dir", data_root, "--no-download", "--out",
                       tmp_path / "o", *LSTM, *flags)
    assert_one_line_error(code, err, mentions=message)


def test_gradcheck_checks_backpropagation_through_time(capsys):
    code, out, err = run(capsys, "gradcheck", "--model", "lstm", "--batch", "2")
    assert code == 0, err
    assert "[0].W_h" in out and "float64: PASS" in out
