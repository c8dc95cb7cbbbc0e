"""Every code block in README.md runs as written.

The two set-up and test commands are run by ``.ci/run`` itself (it reads them from README.md);
here: every ``python`` block, in a fresh interpreter, and every other ``bash`` block, after the
README's main training job, each in a scratch folder.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the README's blocks, fnnet train among them

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SHARED_DATA = ROOT.parent / "shared" / "data"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)


def blocks(language):
    return [m.group(2) for m in BLOCK.finditer(README) if m.group(1) == language]


def environment():
    env = dict(os.environ, MPLBACKEND="Agg")
    if "FNNET_DATA_DIR" not in env:
        if not (SHARED_DATA / "mnist").is_dir():
            if env.get("CI"):
                pytest.fail("README's examples need real MNIST: set FNNET_DATA_DIR")
            pytest.skip("README's examples need real MNIST: set FNNET_DATA_DIR")
        env["FNNET_DATA_DIR"] = str(SHARED_DATA)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def run(command, cwd, timeout=600):
    out = subprocess.run(command, shell=isinstance(command, str), cwd=cwd, env=environment(),
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{command!r} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def test_the_readme_has_the_blocks_ci_runs():
    setup, tests = blocks("bash")[:2]
    assert "pip install -e" in setup and "fnnet train" in setup
    assert tests.strip() == "python -m pytest"
    assert "readme_block 1" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_block_runs(index, tmp_path):
    run([sys.executable, "-c", blocks("python")[index]], tmp_path)


def main_job_run_by_ci():
    """The repository's ``runs/mnist`` when ``.ci/run`` has just made it by running README's
    first block as written (``CI`` set, and newer than every source file of the package,
    README.md and pyproject.toml), else ``None``."""
    run_dir = ROOT / "runs" / "mnist"
    if not os.environ.get("CI") or not (run_dir / "model.npz").is_file():
        return None
    made = min(path.stat().st_mtime for path in run_dir.iterdir() if path.is_file())
    sources = [*(ROOT / "fnnet").rglob("*.py"), ROOT / "README.md", ROOT / "pyproject.toml"]
    newest_source = max(path.stat().st_mtime for path in sources)
    return run_dir if made > newest_source else None


def test_command_line_blocks_run_after_the_main_job(tmp_path):
    setup, _, *others = blocks("bash")
    ci_run = main_job_run_by_ci()
    if ci_run is not None:  # CI ran the main job itself a moment ago: its run, not a second one
        shutil.copytree(ci_run, tmp_path / "runs" / "mnist")
    else:
        run(setup.split("&&")[-1].strip(), tmp_path)  # the main job: fnnet train --dataset mnist
    assert (tmp_path / "runs" / "mnist" / "model.npz").is_file()
    for block in others:
        run(block, tmp_path)
