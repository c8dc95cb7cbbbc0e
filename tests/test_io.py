"""Tests of fnnet.io: the atomic write, stale temporaries, JSON conversion, bounded JSON reads,
only regular files read."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnnet import io


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _dead_pid() -> int:
    """The id of a process that has finished (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def refused_without_blocking(fifo: Path, call, error=ValueError, seconds: float = 2.0) -> str:
    """The message of the ``error`` that ``call()`` raises for the FIFO ``fifo``; fails (rather
    than hangs) when ``call`` is still blocked after ``seconds``, then opening the FIFO's write
    end so that the blocked reader sees end-of-file and its thread ends."""
    outcome: dict = {}

    def target():
        try:
            outcome["returned"] = call()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            outcome["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        thread.join(seconds)
        pytest.fail(f"reading {fifo} blocked for {seconds} s instead of refusing it")
    assert isinstance(outcome.get("error"), error), outcome
    return str(outcome["error"])


def _temporary_of(path: Path, pid: int) -> Path:
    """A temporary ``atomic_write`` would make for ``path`` in process ``pid``."""
    name = io.temporary_path(path).name.replace(f".{os.getpid()}.", f".{pid}.", 1)
    return path.with_name(name)


# ---------------------------------------------------------------------------------------------
# atomic_write.


def test_atomic_write_writes_content_with_permissions(tmp_path):
    target = tmp_path / "a" / "b" / "out.bin"
    assert io.atomic_write(target, lambda f: f.write(b"\x00\x01payload")) == target
    assert target.read_bytes() == b"\x00\x01payload"
    assert _mode(target) == 0o644
    assert os.listdir(target.parent) == ["out.bin"]

    text = io.write_text(tmp_path / "t.txt", "ünïcode\n")
    assert text.read_bytes() == "ünïcode\n".encode()
    assert _mode(io.write_bytes(tmp_path / "p.bin", b"x", mode=0o600)) == 0o600


def test_atomic_write_replaces_only_at_the_end(tmp_path):
    target = io.write_bytes(tmp_path / "f", b"old")

    def write(f):
        f.write(b"new")
        assert target.read_bytes() == b"old"  # readers still see the old file
        (tmp,) = [p for p in tmp_path.iterdir() if p.name.endswith(io.SUFFIX)]
        assert tmp.name.startswith(f".f.{os.getpid()}.") and _mode(tmp) == 0o600

    io.atomic_write(target, write)
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["f"]


def test_make_parents_false_needs_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        io.write_bytes(tmp_path / "missing" / "f", b"x", make_parents=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()],
                         ids=["OSError", "KeyboardInterrupt"])
@pytest.mark.parametrize("stage", ["write", "rename"])
def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, error, stage):
    target = io.write_bytes(tmp_path / "keep.bin", bytes(range(256)))
    before = target.read_bytes()

    def fail(*args, **kwargs):
        raise error

    def write(f):
        f.write(b"half a file")
        if stage == "write":
            fail()

    if stage == "rename":
        monkeypatch.setattr(os, "replace", fail)
    for path in (target, tmp_path / "new.bin"):
        with pytest.raises(type(error)):
            io.atomic_write(path, write)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.bin"]


# ---------------------------------------------------------------------------------------------
# Temporaries left by a killed process.


def test_stale_temporaries_of_the_target_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "run.json"
    dead = _temporary_of(target, _dead_pid())
    live = _temporary_of(target, os.getpid())
    other = _temporary_of(tmp_path / "other.json", _dead_pid())
    similar = _temporary_of(tmp_path / "run.json.bak", _dead_pid())  # ".run.json.bak.PID..."
    for p in (dead, live, other, similar):
        p.write_bytes(b"left behind")

    io.write_text(target, "{}\n")
    assert not dead.exists()
    assert live.exists() and other.exists() and similar.exists()
    assert target.read_text() == "{}\n"


def test_remove_stale_temporaries_returns_what_it_removed(tmp_path):
    target = tmp_path / "x.npz"
    dead = _temporary_of(target, _dead_pid())
    dead.write_bytes(b"")
    unrelated = tmp_path / f".x.npz.notapid.0000{io.SUFFIX}"
    unrelated.write_bytes(b"")
    assert io.remove_stale_temporaries(target) == [dead]
    assert io.remove_stale_temporaries(target) == []
    assert unrelated.exists()
    assert io.remove_stale_temporaries(tmp_path / "no" / "such" / "folder") == []


def test_temporary_path_is_fresh_and_beside_the_target(tmp_path):
    a, b = io.temporary_path(tmp_path / "f"), io.temporary_path(tmp_path / "f")
    assert a != b and a.parent == tmp_path
    assert a.name.startswith(f".f.{os.getpid()}.") and a.name.endswith(io.SUFFIX)


# ---------------------------------------------------------------------------------------------
# JSON.


def test_jsonable_converts_numpy_jax_paths_and_tuples(tmp_path):
    data = {
        "i": np.int64(7), "f": np.float32(0.5), "b": np.bool_(True), "u": np.uint8(255),
        "array": np.arange(6, dtype=np.int32).reshape(2, 3), "jax": jnp.asarray([1.0, 2.5]),
        "jax0d": jnp.asarray(3), "path": tmp_path / "p", "tuple": (1, (2, 3)), 4: "int key",
        np.int32(5): None,
    }
    assert io.jsonable(data) == {
        "i": 7, "f": 0.5, "b": True, "u": 255, "array": [[0, 1, 2], [3, 4, 5]],
        "jax": [1.0, 2.5], "jax0d": 3, "path": str(tmp_path / "p"), "tuple": [1, [2, 3]],
        "4": "int key", "5": None,
    }
    out = io.jsonable(data)
    assert type(out["i"]) is int and type(out["b"]) is bool and type(out["f"]) is float


def test_nonfinite_null_or_keep(tmp_path):
    data = {"nan": float("nan"), "inf": np.float64(np.inf), "arr": np.array([1.0, -np.inf])}
    assert io.jsonable(data) == {"nan": None, "inf": None, "arr": [1.0, None]}
    kept = io.jsonable(data, nonfinite="keep")
    assert math.isnan(kept["nan"]) and kept["inf"] == math.inf and kept["arr"] == [1.0, -math.inf]

    def no_constants(name):
        raise AssertionError(f"strict JSON has no {name}")

    strict = io.write_json(tmp_path / "strict.json", data)
    assert json.loads(strict.read_text(), parse_constant=no_constants) == {
        "nan": None, "inf": None, "arr": [1.0, None]}
    back = io.read_json(io.write_json(tmp_path / "keep.json", data, nonfinite="keep"))
    assert math.isnan(back["nan"]) and back["inf"] == math.inf
    assert strict.read_text().endswith("\n") and _mode(strict) == 0o644
    with pytest.raises(ValueError, match="nonfinite"):
        io.jsonable(1.0, nonfinite="drop")


@pytest.mark.parametrize(
    "value, message",
    [
        ({"cfg": {"opt": [1, object()]}}, r"where\['cfg'\]\['opt'\]\[1\]: .*type object"),
        ({"k": jax.random.key(0)}, r"where\['k'\]: .*type"),
        ({"s": np.array(["text"])}, r"where\['s'\]: .*ndarray"),
        ({"c": 1 + 2j}, r"where\['c'\]: .*complex"),
        ({"d": {(1, 2): 3}}, r"where\['d'\]: dict key \(1, 2\) is not a string"),
        ({"d": {1.5: 3}}, r"where\['d'\]: dict key 1.5"),
        ({True: 1}, r"where: dict key True"),
    ],
    ids=["object", "typed-key", "str-array", "complex", "tuple-key", "float-key", "bool-key"],
)
def test_jsonable_refuses_naming_where(value, message):
    with pytest.raises(TypeError, match=message):
        io.jsonable(value, "where")


def test_int_keys_false_refuses_int_keys():
    with pytest.raises(TypeError, match=r"m\['d'\]: dict key 3 is not a string"):
        io.jsonable({"d": {3: 1}}, "m", int_keys=False)
    assert io.jsonable({"d": {"3": 1}}, "m", int_keys=False) == {"d": {"3": 1}}


def test_write_json_failure_leaves_no_file(tmp_path):
    with pytest.raises(TypeError, match="data"):
        io.write_json(tmp_path / "bad.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_read_json_round_trip_and_size_limit(tmp_path):
    path = io.write_json(tmp_path / "d.json", {"a": [1, 2], "b": "ü"}, indent=None)
    assert io.read_json(path) == {"a": [1, 2], "b": "ü"}
    size = path.stat().st_size
    assert io.read_json(path, max_bytes=size) == {"a": [1, 2], "b": "ü"}
    with pytest.raises(ValueError, match=f"{size:,} bytes of JSON is more than the {size - 1:,}"):
        io.read_json(path, max_bytes=size - 1)
    with pytest.raises(FileNotFoundError):
        io.read_json(tmp_path / "missing.json")


def test_read_json_nested_too_deeply_is_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(ValueError, match="deep.json: the JSON is nested too deeply"):
        io.read_json(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    message = refused_without_blocking(fifo, lambda: io.read_json(fifo))
    assert message == (f"{fifo}: is a FIFO (named pipe), which is never read (it could block or "
                       f"never end); expected a regular JSON file")
    message = refused_without_blocking(fifo, lambda: io.open_regular(fifo, "the metrics"),
                                       io.NotARegularFileError)
    assert message.endswith("expected the metrics")


def test_open_regular_reads_a_regular_file_and_refuses_a_folder(tmp_path):
    path = io.write_bytes(tmp_path / "f.bin", b"bytes")
    with io.open_regular(path) as f:
        assert f.read() == b"bytes"
        assert os.get_blocking(f.fileno())
    with pytest.raises(IsADirectoryError):
        io.open_regular(tmp_path)
    with pytest.raises(FileNotFoundError):
        io.open_regular(tmp_path / "missing")
    (tmp_path / "bad.json").write_bytes(b"{not json")
    with pytest.raises(ValueError, match=r"bad\.json: not JSON \(.*\); expected a UTF-8 JSON"):
        io.read_json(tmp_path / "bad.json")
