"""The package's boundaries: what importing it changes, what it imports, what the wheel holds."""

import subprocess
import sys
from pathlib import Path

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


def test_no_module_is_much_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "fnnet").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 450}
    assert not long, long


def test_license_file_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
