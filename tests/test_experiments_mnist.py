"""Experiments part B: the three MNIST scripts, the learning-rate sweep and run_all, each run with
``--quick`` in this process (real MNIST when ``FNNET_DATA_DIR`` points at it, else synthetic data).

Most of the time goes to compiling. The checks that each script also runs as ``python -m
experiments.NAME`` from the repository root only ask for ``--help``, but for one ``run_all``.
"""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from test_experiments_notes import run_modules_help

from experiments import mnist_relu_softmax, mnist_sigmoid_bce, mnist_tanh_mse, run_all, sweep

pytestmark = pytest.mark.slow  # the experiment scripts

ROOT = Path(__file__).resolve().parents[1]
CHANCE = 0.1


def read_metrics(folder):
    return json.loads((Path(folder) / "metrics.json").read_text())


def assert_pngs(folder, names):
    for name in names:
        path = Path(folder) / name
        assert path.is_file(), f"{path} was not written"
        assert path.stat().st_size > 1000, f"{path} is (nearly) empty"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"


def assert_common_keys(metrics, name, epochs):
    for key in ("experiment", "quick", "seed", "data", "n_train", "n_test", "config",
                "train_accuracy", "test_accuracy", "headline"):
        assert key in metrics, f"metrics.json lacks {key!r}"
    assert metrics["experiment"] == name and metrics["quick"] is True
    assert metrics["data"] in ("mnist", "synthetic")


def test_mnist_relu_softmax_quick(tmp_path):
    returned = mnist_relu_softmax.main(["--quick", "--out", str(tmp_path)])
    metrics = read_metrics(tmp_path)
    assert_common_keys(metrics, "mnist_relu_softmax", mnist_relu_softmax.QUICK_EPOCHS)
    assert returned["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert_pngs(tmp_path, ["curves.png", "init_comparison.png", "digits.png", "confusion.png"])
    # note 002's set-up: full batch, alpha 0.1, 784-10-10
    assert metrics["config"]["batch_size"] is None and metrics["config"]["lr"] == 0.1
    assert metrics["config"]["sizes"] == [784, 10, 10]
    assert set(metrics["runs"]) == {"uniform", "he"}
    for run in metrics["runs"].values():
        assert len(run["history"]["loss"]) == mnist_relu_softmax.QUICK_EPOCHS
        assert run["test_accuracy"] > 4 * CHANCE and run["train_accuracy"] > 4 * CHANCE
        assert run["history"]["loss"][-1] < run["history"]["loss"][0]  # gradient descent descends
    assert metrics["best_init"] in ("uniform", "he")


@pytest.mark.parametrize("module, loss", [(mnist_sigmoid_bce, "binary-cross-entropy"),
                                          (mnist_tanh_mse, "mse")])
def test_mnist_minibatch_scripts_quick(tmp_path, module, loss):
    returned = module.main(["--quick", "--out", str(tmp_path), "--seed", "1"])
    metrics = read_metrics(tmp_path)
    assert_common_keys(metrics, module.NAME, module.QUICK_EPOCHS)
    assert returned["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert metrics["seed"] == 1 and metrics["config"]["loss"] == loss
    assert metrics["config"]["targets"].startswith("one-hot")
    assert_pngs(tmp_path, ["curves.png", "confusion.png"])
    assert len(metrics["history"]["val_accuracy"]) == module.QUICK_EPOCHS
    assert metrics["test_accuracy"] > 5 * CHANCE and metrics["train_accuracy"] > 5 * CHANCE


def test_sweep_quick_matches_separate_runs(tmp_path):
    metrics = sweep.main(["--quick", "--out", str(tmp_path)])
    assert metrics == read_metrics(tmp_path)
    assert_pngs(tmp_path, ["accuracy_vs_lr.png", "timing.png"])
    assert metrics["k"] == 3 and len(metrics["per_rate"]) == 3
    assert metrics["n_train"] == 500 and metrics["config"]["epochs"] == 1
    # the vmapped K-model program equals K separate runs to float32 tolerance
    assert metrics["rates_equal_to_float32_tolerance"] == 3
    assert metrics["max_abs_param_diff"] < 1e-4
    assert metrics["max_abs_accuracy_diff"] <= 1e-6
    assert metrics["one_step_max_abs_param_diff"] < 1e-6
    for rec in metrics["per_rate"]:
        assert rec["test_accuracy_vmapped"] == pytest.approx(rec["test_accuracy_separate"], abs=1e-6)
    assert metrics["best_test_accuracy"] > 3 * CHANCE
    for key in ("vmapped_wall_seconds", "separate_wall_seconds", "wall_ratio_separate_over_vmapped"):
        assert metrics[key] > 0


def _fake_experiment(name, fails=False):
    """An in-memory ``experiments.NAME`` module: writes a metrics.json and a figure, or raises."""
    module = types.ModuleType(f"experiments.{name}")
    module.__doc__ = f"Fake {name}: reproduces nothing; stands in for a cheap experiment."

    def main(argv=None):
        if fails:
            raise RuntimeError(f"{name} broke on purpose")
        from PIL import Image

        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (1800, 600), (200, 30, 30)).save(out / "wide.png")
        Image.new("RGB", (300, 300), (30, 30, 200)).save(out / "a_small.png")
        metrics = {"experiment": name, "quick": "--quick" in argv, "accuracy": 0.875,
                   "nested": {"steps": 12}, "history": [1, 2, 3], "figures": ["wide.png"],
                   "tables": {"per rate": {"headers": ["lr", "test accuracy"],
                                           "rows": [[0.5, 0.25], [1.0, 0.5]]}}}
        (out / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    module.main = main
    return module


def test_run_all_quick_reports_missing_and_failing(tmp_path, monkeypatch, capsys):
    names = ("mnist_tanh_mse", "fake_ok", "fake_fail", "fake_missing")
    monkeypatch.setattr(run_all, "EXPERIMENTS", names)
    monkeypatch.setitem(sys.modules, "experiments.fake_ok", _fake_experiment("fake_ok"))
    monkeypatch.setitem(sys.modules, "experiments.fake_fail", _fake_experiment("fake_fail", True))
    out, readme = tmp_path / "runs", tmp_path / "site" / "README.md"
    stale = out / "fake_ok" / "stale.png"  # a figure an earlier run left behind
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\x89PNG\r\n\x1a\n")
    os.utime(stale, (1_000_000_000, 1_000_000_000))

    result = run_all.main(["--quick", "--out", str(out), "--only", "mnist_tanh_mse,fake_ok",
                           "--readme", str(readme)])
    assert result["exit_status"] == 0
    assert {n: r["status"] for n, r in result["runs"].items()} == {"mnist_tanh_mse": "ok",
                                                                  "fake_ok": "ok"}
    info = json.loads((out / "mnist_tanh_mse" / "run_info.json").read_text())
    assert info["quick"] is True and info["machine"]["jax"]
    text = readme.read_text()
    tanh = read_metrics(out / "mnist_tanh_mse")
    assert "## mnist_tanh_mse" in text and "## fake_ok" in text
    assert f"| test accuracy | {tanh['test_accuracy']:.2%} |" in text  # read from metrics.json
    assert "| accuracy | 87.50% |" in text and "| nested.steps | 12 |" in text
    assert "--quick" in text and "jax" in text and "Not run yet." in text
    links = [line[line.index("](") + 2:-1] for line in text.splitlines() if line.startswith("![")]
    assert "figures/mnist_tanh_mse/curves.png" in links
    fake = [link for link in links if "fake_ok" in link]
    assert fake == ["figures/fake_ok/wide.png", "figures/fake_ok/a_small.png"]  # "figures" order
    assert "stale.png" not in text
    assert "**per rate**" in text and "| 0.5 | 25.00% |" in text
    for link in links:
        assert (readme.parent / link).stat().st_size > 100
    from PIL import Image

    with Image.open(readme.parent / "figures" / "fake_ok" / "wide.png") as img:
        assert img.width == run_all.MAX_WIDTH  # scaled down for the page

    capsys.readouterr()
    result = run_all.main(["--quick", "--out", str(out), "--only", "fake_fail", "fake_missing",
                           "--readme", str(readme)])
    assert result["exit_status"] == 1
    assert result["runs"]["fake_fail"]["status"] == "failed"
    assert "broke on purpose" in result["runs"]["fake_fail"]["error"]
    assert result["runs"]["fake_missing"]["status"] == "missing"
    assert "missing or failed: fake_fail, fake_missing" in capsys.readouterr().err
    text = readme.read_text()
    assert "broke on purpose" in text and "no module experiments/fake_missing.py" in text
    assert "## mnist_tanh_mse" in text and "figures/mnist_tanh_mse/curves.png" in text  # kept

    with pytest.raises(SystemExit):
        run_all.main(["--only", "no_such_experiment", "--out", str(out), "--readme", str(readme)])


def test_scripts_run_as_modules():
    """``python -m experiments.NAME --help`` for each, from the repository root (one interpreter)."""
    names = ["mnist_relu_softmax", "mnist_sigmoid_bce", "mnist_tanh_mse", "sweep", "run_all"]
    out = run_modules_help(names)
    assert out.count("--quick") >= len(names) and out.count("--out") >= len(names)


def test_run_all_runs_with_python_m(tmp_path):
    """``python -m experiments.run_all`` imports its experiments as ``experiments.NAME``."""
    out, readme = tmp_path / "runs", tmp_path / "README.md"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-m", "experiments.run_all", "--quick", "--only",
                           "single_neuron", "--out", str(out), "--readme", str(readme)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    info = json.loads((out / "single_neuron" / "run_info.json").read_text())
    assert info["status"] == "ok" and info["command"].startswith("python -m experiments.single_neuron")
    text = readme.read_text()
    assert "## single_neuron" in text and "figures/single_neuron/single_neuron.png" in text
    assert "experiments/NOTES.md" in text


def test_run_all_writes_only_under_out_unless_publishing(tmp_path, monkeypatch):
    monkeypatch.setattr(run_all, "EXPERIMENTS", ("fake_ok",))
    monkeypatch.setitem(sys.modules, "experiments.fake_ok", _fake_experiment("fake_ok"))
    published = tmp_path / "published" / "README.md"
    monkeypatch.setattr(run_all, "DEFAULT_README", published)
    out = tmp_path / "runs"
    result = run_all.main(["--quick", "--out", str(out)])
    assert result["exit_status"] == 0
    assert result["readme"] == str(out / "README.md") and (out / "figures" / "fake_ok").is_dir()
    assert not published.parent.exists(), "run_all wrote outside --out without --publish"
    result = run_all.main(["--quick", "--out", str(out), "--publish"])
    assert result["readme"] == str(published) and published.exists()
    with pytest.raises(SystemExit):
        run_all.main(["--out", str(out), "--publish", "--readme", str(tmp_path / "x.md")])
