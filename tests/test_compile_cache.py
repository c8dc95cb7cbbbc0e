"""The command line's persistent compilation cache (``fnnet.cli.common.compile_cache``): a second
identical ``fnnet train`` finds its programs there; the folder is private (mode 0700) and one
that others could write into is refused; ``--no-compile-cache`` writes nothing; importing fnnet
and returning from ``cli.main`` leave JAX's settings as they were."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from fnnet import cli, datasets
from fnnet.cli import common

pytestmark = pytest.mark.slow  # fnnet train in fresh processes

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("jax_compilation_cache_dir", "jax_enable_compilation_cache",
            "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes", "jax_cpu_collectives_implementation")
GRADCHECK = ["gradcheck", "--layers", "6,5,3", "--batch", "4"]


def _env(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p), JAX_PLATFORMS="cpu",
        FNNET_CACHE_DIR=str(tmp_path / "user-cache"))
    for name in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR"):
        env.pop(name, None)
    return env


def _entries(folder):
    return sorted(p.name for p in Path(folder).rglob("*") if p.is_file())


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def _settings():
    return {name: getattr(jax.config, name) for name in SETTINGS}


@pytest.fixture()
def user_cache(tmp_path, monkeypatch):
    """fnnet's per-user cache in a temporary folder, for a user who has set no JAX cache folder
    (the suite's own one, tests/conftest.py, is set aside meanwhile)."""
    from jax.experimental.compilation_cache import compilation_cache

    monkeypatch.setenv("FNNET_CACHE_DIR", str(tmp_path / "user-cache"))
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    suite_folder = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()
    yield tmp_path / "user-cache"
    jax.config.update("jax_compilation_cache_dir", suite_folder)
    compilation_cache.reset_cache()


# Runs ``fnnet train`` and prints how many compiles asked the persistent cache and how many it
# answered, counted by JAX's own monitoring events (not by timing, which load can distort).
COUNT_CACHE_HITS = """
import collections, sys
import jax.monitoring
from fnnet import cli
counts = collections.Counter()
jax.monitoring.register_event_listener(lambda event, **kw: counts.update([event]))
code = cli.main(sys.argv[1:])
print("cache", counts["/jax/compilation_cache/compile_requests_use_cache"],
      counts["/jax/compilation_cache/cache_hits"])
sys.exit(code)
"""


def test_a_second_identical_train_finds_every_program_in_the_cache(tmp_path):
    train, test = datasets.synthetic_mnist(500, 200, seed=0)
    datasets.write_mnist_files(tmp_path / "data" / "mnist", train, test)
    cache = tmp_path / "cache"
    argv = [sys.executable, "-c", COUNT_CACHE_HITS, "train", "--data-dir", tmp_path / "data",
            "--no-download", "--layers", "784,16,10", "--epochs", "1", "--batch-size", "50",
            "--quiet", "--compile-cache", cache]
    lookups, entries = [], []
    for run in ("cold", "warm"):
        proc = subprocess.run([*map(str, argv), "--out", str(tmp_path / run)], cwd=ROOT,
                              env=_env(tmp_path), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert " s of it compiling" in proc.stdout
        requests, hits = map(int, proc.stdout.strip().splitlines()[-1].split()[1:])
        lookups.append((requests, hits))
        entries.append(_entries(cache))
        metrics = json.loads((tmp_path / run / "metrics.json").read_text())
        assert metrics["compile_cache"] == str(cache / common.machine_key())
    assert entries[0], "the first run cached nothing"
    assert lookups[0][0] > 0 and lookups[0][1] == 0, lookups  # cold: every lookup missed
    assert lookups[1] == (lookups[0][0], lookups[0][0]), lookups  # warm: every one answered
    assert entries[1] == entries[0]  # and nothing new written
    assert _mode(cache) == _mode(cache / common.machine_key()) == 0o700
    assert not (tmp_path / "user-cache").exists()  # --compile-cache is the only folder used


def test_the_default_folder_is_private_and_settings_are_restored(user_cache, capsys):
    before = _settings()
    assert cli.main(GRADCHECK) == 0
    folder = user_cache / "jax" / common.machine_key()
    assert folder.is_dir()
    assert _mode(user_cache / "jax") == _mode(folder) == 0o700
    assert _settings() == before


def _args(*flags):
    args = cli.build_parser().parse_args([*GRADCHECK, *map(str, flags)])
    args.prog = "fnnet gradcheck"
    return args


def test_no_compile_cache_writes_nothing(user_cache):
    before = _settings()
    args = _args("--no-compile-cache")
    with common.compile_cache(args):
        assert jax.config.jax_enable_compilation_cache is False
        jax.jit(lambda v: v * 3 + 1)(jax.numpy.arange(7.0)).block_until_ready()
    assert args.compile_cache_path is None
    assert not user_cache.exists()
    assert _settings() == before


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o722])
def test_a_folder_others_can_write_is_refused(tmp_path, capsys, mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    before = _settings()
    args = _args("--compile-cache", shared)
    with common.compile_cache(args):
        assert jax.config.jax_enable_compilation_cache is False
        jax.jit(lambda v: v * 5 - 2)(jax.numpy.arange(9.0)).block_until_ready()
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"fnnet gradcheck: warning: not using the compile cache in {shared}: "
                          f"{shared} is writable by other users")
    assert "running uncached" in err
    assert args.compile_cache_path is None and list(shared.iterdir()) == []
    assert _settings() == before


def test_a_folder_of_another_user_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    assert common.unsafe_folder_reason(folder) is None
    monkeypatch.setattr(os, "getuid", lambda: folder.stat().st_uid + 1)
    assert "belongs to user id" in common.unsafe_folder_reason(folder)
    path, reason = common.prepare_cache_folder(folder)
    assert path is None and "belongs to user id" in reason


def test_a_file_is_not_a_cache_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    path, reason = common.prepare_cache_folder(tmp_path / "file")
    assert path is None and reason


def test_importing_fnnet_sets_no_cache_or_distributed_setting():
    code = ("import jax\n"
            f"names = {SETTINGS!r}\n"
            "before = [getattr(jax.config, n) for n in names]\n"
            "import fnnet, fnnet.cli, fnnet.devices.distributed, fnnet.cli.launch, fnnet.bench.startup\n"
            "print([getattr(jax.config, n) for n in names] == before)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


def test_a_folder_under_a_parent_others_can_write_is_refused(tmp_path, capsys):
    """Issue 20: only the folder itself was checked; under a world-writable parent another user
    could swap it for their own. Its ancestors are checked as ssh's StrictModes does (a sticky
    parent, as /tmp, is fine)."""
    parent = tmp_path / "open"
    parent.mkdir()
    parent.chmod(0o777)
    (parent / "mine").mkdir(mode=0o700)
    path, reason = common.prepare_cache_folder(parent / "mine")
    assert path is None and f"{parent}, above it, is writable by other users" in reason
    parent.chmod(0o1777)  # sticky: others cannot rename or delete what is mine
    path, reason = common.prepare_cache_folder(parent / "mine")
    assert reason is None and path.is_dir()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="giving a folder to another user needs root")
def test_a_folder_under_a_parent_of_another_user_is_refused(tmp_path):
    """An ancestor that belongs to another user (not root) is refused, whatever its mode: its
    owner could rename the folder below and put theirs in its place."""
    parent = tmp_path / "theirs"
    parent.mkdir(mode=0o755)
    (parent / "mine").mkdir(mode=0o700)
    os.chown(parent, 54321, -1)
    try:
        path, reason = common.prepare_cache_folder(parent / "mine")
        assert path is None and reason == (f"{parent}, above it, belongs to user id 54321, not "
                                           f"to you or root")
    finally:
        os.chown(parent, 0, -1)
    path, reason = common.prepare_cache_folder(parent / "mine")
    assert reason is None and path.is_dir()


def test_a_damaged_cache_entry_is_said_once_and_dropped(tmp_path, capsys):
    """Issue 20: JAX warned about an unreadable entry on every run, ten lines with its own
    paths, and never replaced it. One line, and the folder is emptied for a fresh start."""
    args = _args("--compile-cache", tmp_path / "cache")
    with common.compile_cache(args):
        jax.jit(lambda v: jax.numpy.sin(v) * 7 + 3)(jax.numpy.arange(11.0)).block_until_ready()
    folder = args.compile_cache_path
    entries = [p for p in folder.iterdir() if p.is_file()]
    assert entries
    for entry in entries:
        entry.write_bytes(b"not a compiled program")
    with common.compile_cache(args):
        jax.jit(lambda v: jax.numpy.sin(v) * 7 + 3)(jax.numpy.arange(11.0)).block_until_ready()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fnnet gradcheck: warning: 1 compiled program(s)")
    assert "could not be read" in err[0] and "site-packages" not in err[0]
    assert not [p for p in folder.iterdir() if p.is_file() and p.read_bytes().startswith(b"not")]
