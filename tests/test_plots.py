"""fnnet.plots: each function writes a PNG, atomically, without touching matplotlib's globals."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from fnnet import plots
from fnnet.io import SUFFIX

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[1]


def assert_png(path, returned):
    assert returned == Path(path)
    data = Path(path).read_bytes()
    assert len(data) > len(PNG_SIGNATURE) and data.startswith(PNG_SIGNATURE)
    assert not list(Path(path).parent.glob(f"*{SUFFIX}")), "a temporary file was left behind"


def test_importing_fnnet_changes_no_matplotlib_setting(tmp_path):
    # a fresh interpreter: this one may have imported fnnet (and matplotlib) already
    script = textwrap.dedent("""
        import sys
        import matplotlib
        matplotlib.use("svg")
        before = dict(matplotlib.rcParams)
        import fnnet
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        assert dict(matplotlib.rcParams) == before
        assert "matplotlib.pyplot" not in sys.modules, "importing fnnet imported pyplot"
        fnnet.plots.plot_lines([1, 2], {"a": [1, 2]}, sys.argv[1] + "/lines.png", "x", "y")
        assert matplotlib.get_backend() == "svg" and "matplotlib.pyplot" not in sys.modules

        # a figure the caller made with pyplot is saved and closed
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots()
        ax.plot([0, 1])
        fnnet.plots.save_figure(fig, sys.argv[1] + "/pyplot.png")
        assert plt.get_fignums() == []
    """)
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for name in ("lines.png", "pyplot.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)


def test_plot_history_single_and_ensemble(tmp_path):
    single = {"epoch": [1, 2, 3], "loss": [1.0, 0.5, 0.25], "val_loss": [1.1, None, 0.3],
              "train_accuracy": [0.5, 0.7, 0.9], "val_accuracy": [0.4, 0.6, 0.8]}
    assert_png(tmp_path / "single.png", plots.plot_history(single, tmp_path / "single.png", "t"))
    ensemble = {"epoch": [1, 2], "loss": [[1.0, 0.9], [0.5, 0.4]], "val_accuracy": [[0.3, 0.4],
                                                                                   [0.5, 0.6]]}
    assert_png(tmp_path / "k.png", plots.plot_history(ensemble, str(tmp_path / "k.png")))


def test_plot_confusion(tmp_path):
    matrix = np.array([[5, 1, 0], [0, 4, 2], [1, 0, 6]])
    path = tmp_path / "sub" / "confusion.png"  # missing folders are made
    assert_png(path, plots.plot_confusion(matrix, path, class_names=["a", "b", "c"]))


@pytest.mark.parametrize("class_names", [None, ["T-shirt/top", "Trouser", "Pullover"]])
def test_plot_digits(tmp_path, class_names):
    images = np.random.default_rng(0).random((3, 784))
    path = tmp_path / "digits.png"
    returned = plots.plot_digits(images, path, labels=[0, 1, 2], predictions=[0, 2, 2],
                                 title="digits", columns=2, class_names=class_names)
    assert_png(path, returned)
    assert_png(tmp_path / "plain.png", plots.plot_digits(images[:1], tmp_path / "plain.png",
                                                         labels=[1], class_names=class_names))


def test_plot_lines_and_bars(tmp_path):
    assert_png(tmp_path / "lines.png",
               plots.plot_lines([1, 10, 100], {"a": [3, 2, 1], "b": [1, 2, 3]},
                                tmp_path / "lines.png", "x", "y", logx=True, logy=True))
    groups = {"g1": {"x": 1.0, "y": 2.0}, "g2": {"x": 3.0}}
    assert_png(tmp_path / "bars.png",
               plots.plot_bars(groups, tmp_path / "bars.png", "value", title="t", logy=True))


def test_a_failing_save_leaves_no_temporary_and_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "figure.png"
    path.write_bytes(b"old figure")

    def half_a_figure(self, f, **kwargs):
        f.write(PNG_SIGNATURE)
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", half_a_figure)
    with pytest.raises(RuntimeError, match="disk full"):
        plots.plot_lines([0, 1], {"a": [0, 1]}, path, "x", "y")
    assert path.read_bytes() == b"old figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png"]
    monkeypatch.undo()
    with pytest.raises(ValueError, match="not supported"):  # an unknown format, same outcome
        plots.save_figure(Figure(), tmp_path / "figure.notaformat")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png"]
