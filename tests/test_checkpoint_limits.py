"""Checkpoints built to hurt: arrays that would inflate past what the manifest or ``like=`` says
(refused from the headers, before decompressing), entries deflated past any real ratio, arrays
named twice, trees too large in all, a FIFO in place of the file, manifests nested thousands of
levels deep, an unknown format version, and a save killed outright."""

from __future__ import annotations

import io as bytes_io
import json
import os
import subprocess
import sys
import time
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_io import refused_without_blocking

from fnnet import checkpoints as ckpt
from fnnet.checkpoint_tree import MAX_DEPTH
from fnnet.checkpoints import CheckpointError, load, save

REPO = Path(__file__).resolve().parents[1]
SMALL = {"w": np.zeros(10, np.float32)}


def _npy_header(shape, descr="<f4") -> bytes:
    buffer = bytes_io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buffer.getvalue()


def _manifest(tmp_path, shape=(10,)) -> dict:
    path = save(tmp_path / "template", SMALL)
    with zipfile.ZipFile(path) as archive:
        entry = bytes_io.BytesIO(archive.read(f"{ckpt.MANIFEST}.npy"))
    assert np.lib.format.read_magic(entry) == (1, 0)
    np.lib.format.read_array_header_1_0(entry)  # past the header: no array read
    manifest = json.loads(entry.read())
    manifest["tree"]["children"][0]["shape"] = list(shape)
    return manifest


def _write(path, manifest, leaf_header: bytes, zero_megabytes: float = 0, tail: bytes = b""):
    """An .npz of ``manifest`` and ``leaf_0`` = ``leaf_header`` + zeros (deflated, written a
    megabyte at a time) + ``tail``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        text = (manifest if isinstance(manifest, str) else json.dumps(manifest)).encode()
        archive.writestr(f"{ckpt.MANIFEST}.npy", _npy_header((len(text),), "|u1") + text)
        with archive.open("leaf_0.npy", "w", force_zip64=True) as member:
            member.write(leaf_header)
            for _ in range(int(zero_megabytes)):
                member.write(bytes(1 << 20))
            member.write(tail)
    return path


def _refused_cheaply(path, like=None, error=CheckpointError):
    """The error ``load`` raises, checking that it took little time and memory."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(error) as excinfo:
            load(path, like=like)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 2.0
    assert peak < 8 << 20, peak
    return str(excinfo.value)


def test_a_leaf_inflating_past_its_header_is_refused_before_decompressing(tmp_path):
    """A few hundred kB on disk whose one 40-byte array inflates to 100 MB."""
    path = _write(tmp_path / "bomb.npz", _manifest(tmp_path), _npy_header((10,)) + bytes(40), 100)
    assert path.stat().st_size < 1_000_000
    message = _refused_cheaply(path)
    assert "bomb.npz" in message and "would inflate to 104,857," in message
    assert "refused before decompressing" in message
    message = _refused_cheaply(path, like={"w": np.zeros(10, np.float32)})
    assert "would inflate" in message


def test_a_leaf_larger_than_the_manifest_says_is_refused_from_its_header(tmp_path):
    path = _write(tmp_path / "big.npz", _manifest(tmp_path), _npy_header((10**9,)), tail=b"x")
    message = _refused_cheaply(path)
    assert "holds float32[1000000000], but the manifest says float32[10]" in message


def test_a_leaf_larger_than_like_says_is_refused_before_reading(tmp_path):
    """Manifest and header agree on 4 GB; ``like=`` says 40 bytes: refused before reading."""
    path = _write(tmp_path / "big.npz", _manifest(tmp_path, (10**9,)), _npy_header((10**9,)), 1)
    message = _refused_cheaply(path, like={"w": np.zeros(10, np.float32)}, error=ValueError)
    assert "does not match the expected tree" in message
    assert "['w']: checkpoint has shape (1000000000,), expected (10,)" in message
    # Without like=, the 1 MB entry cannot be the 4 GB its header describes: refused too.
    assert "would inflate to 1,048,704 bytes" in _refused_cheaply(path)


@pytest.fixture
def nothing_inflated(monkeypatch):
    """Fails the test if any array of a checkpoint but its (uint8) manifest is read through
    numpy's ``.npy`` reader."""
    real = np.lib.format.read_array

    def read_array(*args, **kwargs):
        arr = real(*args, **kwargs)
        if arr.dtype != np.uint8:
            raise AssertionError(f"an array was read: {arr.dtype}{list(arr.shape)}")
        return arr

    monkeypatch.setattr(np.lib.format, "read_array", read_array)


def test_a_deflated_entry_past_the_ratio_is_refused_before_inflating(tmp_path, nothing_inflated):
    """2 MB of zeros deflated into 2 kB, and manifest, header and like= all agree on 2 MB: the
    ratio alone refuses it (at this size only for the test; a 2 kB entry of 2 GB alike)."""
    n = 1 << 19  # float32: 2 MiB
    path = _write(tmp_path / "packed.npz", _manifest(tmp_path, (n,)), _npy_header((n,)), 2)
    assert path.stat().st_size < 10_000
    for like in (None, {"w": np.zeros(n, np.float32)}):
        message = _refused_cheaply(path, like=like)
        assert "packed.npz" in message and "would inflate to 2,097,280 bytes from" in message
        assert f"expected at most {ckpt.MAX_RATIO} to 1" in message
        assert "refused before decompressing" in message


def test_a_leaf_named_twice_by_the_manifest_is_refused_before_reading_any(tmp_path,
                                                                          nothing_inflated):
    """One stored array named 500 times would be read (and held) 500 times."""
    manifest = _manifest(tmp_path)
    node = manifest["tree"]["children"][0]
    manifest["tree"] = {"type": "list", "children": [node] * 500}
    path = _write(tmp_path / "echo.npz", manifest, _npy_header((10,)) + bytes(40))
    message = _refused_cheaply(path)
    assert "echo.npz: the manifest names leaf 0 twice ([0] and [1])" in message
    assert "expected each stored array named once" in message


def test_an_entry_named_twice_in_the_zip_directory_is_refused(tmp_path, nothing_inflated):
    path = _write(tmp_path / "twice.npz", _manifest(tmp_path), _npy_header((10,)) + bytes(40))
    with zipfile.ZipFile(path, "a") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name
        archive.writestr("leaf_0.npy", _npy_header((10,)) + np.ones(10, "<f4").tobytes())
    for read in (load, ckpt.metadata):
        with pytest.raises(CheckpointError) as excinfo:
            read(path)
        assert "twice.npz: the zip directory names entry 'leaf_0.npy' twice" in str(
            excinfo.value)


def test_the_arrays_together_are_bounded_without_like(tmp_path, monkeypatch, nothing_inflated):
    tree = {"a": np.zeros(1000, np.float32), "b": np.zeros(1000, np.float32)}
    path = save(tmp_path / "two", tree)
    with pytest.raises(CheckpointError) as excinfo:
        load(path, max_bytes=7999)
    message = str(excinfo.value)
    assert "two.npz: the arrays take 8,000 bytes once read; expected at most 7,999" in message
    monkeypatch.setattr(ckpt, "MAX_BYTES", 7999)
    with pytest.raises(CheckpointError, match="8,000 bytes once read; expected at most 7,999"):
        load(path)
    monkeypatch.undo()  # numpy's reader back: what fits is read
    assert load(path, max_bytes=8000)[0]["a"].shape == (1000,)
    monkeypatch.setattr(ckpt, "MAX_BYTES", 7999)
    assert load(path, like=tree)[0]["b"].shape == (1000,)  # with like=: exactly what it says


def test_evaluate_reads_no_array_before_comparing_with_the_model(tmp_path, nothing_inflated):
    """``fnnet evaluate`` of a checkpoint whose metadata names a 784-10 MLP but whose arrays are
    others: refused from the manifest, no array read (it read them all first)."""
    from fnnet.cli.common import UsageError
    from fnnet.cli.evaluate import _read_checkpoint
    from fnnet.cli.model_config import train_config

    config = train_config(dataset="mnist", loss="cross-entropy", optimizer="sgd", lr=0.1,
                          epochs=1, batch_size=32, grads="manual", seed=0, ensemble=1,
                          layers=[784, 10], activation="relu", output="softmax")
    path = save(tmp_path / "model", {"w": np.zeros((1000, 1000), np.float32)}, **config)
    with pytest.raises(UsageError) as excinfo:
        _read_checkpoint("fnnet evaluate", path)
    assert "model.npz does not match the expected tree" in str(excinfo.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
@pytest.mark.parametrize("read", ["load", "metadata"])
def test_a_fifo_in_place_of_a_checkpoint_is_refused_not_waited_on(tmp_path, read):
    fifo = tmp_path / "model.npz"
    os.mkfifo(fifo)
    message = refused_without_blocking(fifo, lambda: getattr(ckpt, read)(fifo), CheckpointError)
    assert message.startswith(f"{fifo}: is a FIFO (named pipe)")
    assert "expected a regular .npz checkpoint file" in message


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000])
def test_a_deeply_nested_manifest_is_a_checkpoint_error(tmp_path, depth):
    """5,000 levels (a 5 kB file) is too deep for Python's JSON reader; 65 is not."""
    tree = '{"type": "list", "children": [' * depth + '{"type": "none"}' + "]}" * depth
    text = json.dumps(_manifest(tmp_path)).replace('"tree": ', f'"tree": {tree}, "was": ', 1)
    path = _write(tmp_path / "deep.npz", text, _npy_header((10,)) + bytes(40))
    with pytest.raises(CheckpointError) as excinfo:
        load(path)
    assert "deep.npz" in str(excinfo.value) and f"{MAX_DEPTH}" in str(excinfo.value)
    assert "nested" in str(excinfo.value)


def test_a_tree_nested_deeper_than_the_bound_is_not_saved(tmp_path):
    tree = None
    for _ in range(MAX_DEPTH):
        tree = [tree]
    assert load(save(tmp_path / "ok", tree))[0] == tree
    with pytest.raises(ValueError, match=f"nested more than {MAX_DEPTH} levels"):
        save(tmp_path / "deep", [tree])
    assert not (tmp_path / "deep.npz").exists()


@pytest.mark.parametrize("version", [-5, 0, "1", 1.0])
def test_a_format_version_other_than_the_supported_one_is_refused(tmp_path, version):
    manifest = _manifest(tmp_path)
    manifest["format_version"] = version
    path = _write(tmp_path / "v.npz", manifest, _npy_header((10,)) + bytes(40))
    with pytest.raises(CheckpointError, match="format_version|format version") as excinfo:
        load(path)
    assert "v.npz" in str(excinfo.value)
    if version in (-5, 0):
        assert f"version {version} is not one fnnet wrote; expected version 1" in str(
            excinfo.value)


KILLED_SAVE = """
import os, sys
import numpy as np
from fnnet import checkpoints
os.fsync = lambda fd: os.kill(os.getpid(), 9)  # killed once the data is written, before renaming
checkpoints.save(sys.argv[1], {"w": np.ones(1000)})
"""


def test_a_killed_saves_temporary_is_removed_by_the_next_save(tmp_path):
    target = tmp_path / "state.npz"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(target)], env=env,
                           capture_output=True, timeout=300)
    assert child.returncode == -9, child.stderr
    (left,) = os.listdir(tmp_path)
    assert left.startswith(".state.npz.") and left.endswith(".fnnet-tmp")
    save(target, SMALL)
    assert os.listdir(tmp_path) == ["state.npz"]
    assert np.array_equal(load(target)[0]["w"], SMALL["w"])
