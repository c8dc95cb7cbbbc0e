"""Experiments part C, beyond the notes: ``conv_by_hand``, ``batchnorm_by_hand`` and ``mnist_cnn``,
each run with ``--quick`` in this process (real MNIST when ``FNNET_DATA_DIR`` points at it, else
synthetic data), and the helpers of ``experiments.common`` they share."""

import json

import numpy as np
import pytest
from test_experiments_notes import run_modules_help

from experiments import batchnorm_by_hand, common, conv_by_hand, mnist_cnn, run_all

pytestmark = pytest.mark.slow  # the experiment scripts

NAMES = ("conv_by_hand", "batchnorm_by_hand", "mnist_cnn")
CHANCE = 0.1
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_quick(module, out):
    """``module.main(["--quick", "--out", out])``; returns the metrics it returned and wrote."""
    returned = module.main(["--quick", "--out", str(out)])
    written = json.loads((out / "metrics.json").read_text())
    assert written["quick"] is True and written["experiment"] == module.NAME
    assert set(written) == set(returned)
    assert written["data"] in ("mnist", "synthetic")
    for name in written["figures"]:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, f"{name} is not a real PNG"
    return written


def test_conv_by_hand_every_form_equals_jax_vjp(tmp_path):
    m = run_quick(conv_by_hand, tmp_path)
    assert m["figures"] == ["filters.png", "feature_maps.png", "speed.png"]
    rows = m["agreement"]
    assert len(rows) == len(conv_by_hand.QUICK_CASES) * len(conv_by_hand.FORMS)
    assert {r["form"] for r in rows} == set(conv_by_hand.FORMS)
    assert len({r["case"] for r in rows}) == len(conv_by_hand.QUICK_CASES)
    for r in rows:
        for grad in ("dW", "db", "dX"):
            assert r[grad] <= 1e-10, r
        if r["form"] == "correlation/convolution":
            assert r["Y"] is None  # a backward form only
        else:
            assert r["Y"] <= 1e-10, r
    assert m["all_agree"] and m["max_rel_error"] <= 1e-10
    assert m["tables"]  # the README's table of errors
    speed = m["speed"]
    assert speed["manual_examples_per_second"] > 0 and speed["autodiff_examples_per_second"] > 0
    assert speed["cpu"] and speed["batch"] == conv_by_hand.QUICK_TIMING[0]
    assert len(speed["seconds"]["manual"]) == len(speed["seconds"]["autodiff"]) >= 2
    assert m["test_accuracy"] > 2 * CHANCE
    assert len(m["history"]["val_accuracy"]) == conv_by_hand.QUICK_EPOCHS


def test_batchnorm_by_hand_forms_agree_and_four_runs(tmp_path):
    m = run_quick(batchnorm_by_hand, tmp_path)
    assert m["figures"] == ["training.png", "backward_forms.png"]
    rows = m["agreement"]
    assert len(rows) == len(batchnorm_by_hand.QUICK_SHAPES) * 3
    assert {r["comparison"] for r in rows} == set(batchnorm_by_hand.COMPARISONS)
    for r in rows:
        assert max(r["dX"], r["dgamma"], r["dbeta"]) <= 1e-10, r
    assert m["all_agree"] and m["max_rel_error"] <= 1e-10
    assert [t["shape"] for t in m["speed"]] == [str(s) for s in batchnorm_by_hand.QUICK_SPEED_SHAPES]
    for t in m["speed"]:
        assert t["staged_us"] > 0 and t["simplified_us"] > 0 and t["staged_over_simplified"] > 0
    assert set(m["runs"]) == set(batchnorm_by_hand.RUNS)
    assert "BatchNorm" in m["runs"]["batch norm"]["model"]
    assert "Dropout" in m["runs"]["dropout"]["model"]
    assert "BatchNorm" not in m["runs"]["plain"]["model"]
    for run in m["runs"].values():
        assert len(run["history"]["val_accuracy"]) == batchnorm_by_hand.QUICK_EPOCHS
        assert run["test_accuracy"] > 3 * CHANCE
    assert m["n_validation"] == 200 and m["n_train"] == 800  # held out of training, not test


def test_mnist_cnn_quick(tmp_path):
    m = run_quick(mnist_cnn, tmp_path)
    assert m["figures"] == ["curves.png", "confusion.png", "misclassified.png"]
    assert m["config"]["model"].startswith("Sequential(Conv2D(1, 32, 3)")
    assert len(m["history"]["val_accuracy"]) == mnist_cnn.QUICK_EPOCHS
    assert m["test_accuracy"] > 3 * CHANCE
    assert m["test_misclassified"] == round((1 - m["test_accuracy"]) * m["n_test"])
    assert m["n_validation"] == 100 and m["n_train"] == 500


def test_common_helpers():
    a = {"w": np.array([1.0, -2.0]), "b": np.zeros(3)}
    assert common.rel_error(a, a) == 0
    assert common.rel_error({"w": np.array([1.0, -2.5]), "b": np.full(3, 1e-3)}, a) == 0.25
    calls = []
    times = common.interleaved_times({"x": lambda v: calls.append("x") or v,
                                      "y": lambda v: calls.append("y") or v}, 1.0, rounds=3)
    assert calls == ["x", "y"] * 4  # one untimed call each, then rounds of both
    assert len(times["x"]) == len(times["y"]) == 3
    assert isinstance(common.cpu_model(), str) and common.cpu_model()


def test_registered_and_run_as_modules():
    assert set(NAMES) <= set(run_all.EXPERIMENTS)
    out = run_modules_help(list(NAMES))
    assert out.count("--quick") >= len(NAMES) and out.count("--seed") >= len(NAMES)


@pytest.mark.parametrize("module", [conv_by_hand, batchnorm_by_hand, mnist_cnn])
def test_bad_flags_are_refused(module):
    with pytest.raises(SystemExit):
        module.main(["--epochs", "0"])
