"""The package's boundaries: what importing it changes, what it imports, what the wheel holds."""

import subprocess
import sys
from pathlib import Path

import import_graph
import pytest

import fnnet

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def _run(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_changes_no_global_setting():
    code = ("import matplotlib; matplotlib.use('svg')\n"
            "import jax\n"
            "before = (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision)\n"
            "import fnnet, fnnet.plots, fnnet.cli\n"
            "after = (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision)\n"
            "print(matplotlib.get_backend(), before == after)")
    assert _run(code) == "svg True"


def test_import_fnnet_does_not_load_matplotlib():
    assert _run("import sys, fnnet; print('matplotlib' in sys.modules)") == "False"


def test_no_fnnet_module_imports_experiments():
    code = ("import importlib, pkgutil, sys, fnnet\n"
            "for info in pkgutil.walk_packages(fnnet.__path__, 'fnnet.'):\n"
            "    if not info.name.endswith('__main__'):\n"
            "        importlib.import_module(info.name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'experiments'))")
    assert _run(code) == "[]"
    for path in (ROOT / "fnnet").rglob("*.py"):
        text = path.read_text()
        assert "import experiments" not in text and "from experiments" not in text, path


def test_the_wheel_holds_only_fnnet_and_the_version_is_defined_once():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["fnnet*"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "fnnet._version.__version__"}
    from fnnet import checkpoints
    assert fnnet.__version__ == checkpoints.FNNET_VERSION
    hits = [p for p in (ROOT / "fnnet").rglob("*.py")
            if f'"{fnnet.__version__}"' in p.read_text() and p.name != "_version.py"]
    assert not hits, f"the version string is written again in {hits}"


# The package's floors, bottom first: a module imports only from its own floor or below.
FLOORS = (
    ("foundations", ("fnnet._version", "fnnet.checks", "fnnet.io", "fnnet.pytrees",
                     "fnnet.checkpoint_tree", "fnnet.checkpoints")),
    ("maths", ("fnnet.layers", "fnnet.losses", "fnnet.metrics", "fnnet.precision",
               "fnnet.loss_scale", "fnnet.optim", "fnnet.networks", "fnnet.gradients",
               "fnnet.gradcheck", "fnnet.sampling")),
    ("devices", ("fnnet.devices",)),
    ("training", ("fnnet.training",)),
    ("data and figures", ("fnnet.datasets", "fnnet.plots")),
    ("front ends", ("fnnet.cli", "fnnet.bench", "fnnet")),
)


def _floor(module):
    """The floor of ``module``: the one whose prefix names it most closely."""
    best = max(((len(prefix), number) for number, (_, prefixes) in enumerate(FLOORS)
                for prefix in prefixes if module == prefix or module.startswith(prefix + ".")))
    return best[1]


def test_the_import_graph_has_no_cycle():
    graph = import_graph.imports()
    assert "fnnet.training.fit" in graph and "fnnet.checkpoints" in graph["fnnet.training.fit"]
    assert import_graph.cycles(graph) == []
    assert import_graph.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_floors_point_one_way():
    """Foundations (checks, files) → maths → devices → training → data and figures → front
    ends (CLI, benchmark, the package's own namespace); experiments sit outside the package."""
    graph = import_graph.imports()
    assert set(graph) == {m for m in graph if _floor(m) is not None}
    upward = [f"{m} ({FLOORS[_floor(m)][0]}) imports {t} ({FLOORS[_floor(t)][0]})"
              for m, targets in sorted(graph.items()) for t in sorted(targets)
              if _floor(t) > _floor(m)]
    assert not upward, "\n".join(upward)


def test_license_file_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
