"""Tests for fnnet.datasets: IDX reading/writing, lookup order, downloads from a local mirror.

Network-free: the only server used is a ``http.server`` on 127.0.0.1 (plus ``file://`` URLs).
Every test runs with FNNET_DATA_DIR unset, the cache in ``tmp_path`` and the mirrors pointing
at a closed local port, so nothing here can reach the internet or touch the real cache.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fnnet import datasets, io
from fnnet.datasets import (
    FILES,
    ChecksumError,
    DatasetError,
    DatasetNotFoundError,
    IDXError,
    aligned_empty,
    flatten,
    load_fashion_mnist,
    load_mnist,
    one_hot,
    prepare,
    read_idx,
    scale,
    synthetic_mnist,
    write_idx,
    write_mnist_files,
)

# the real files: $FNNET_DATA_DIR/mnist when set (CI sets it), else ../shared/data/mnist beside the
# repository
REAL_MNIST = (Path(os.environ["FNNET_DATA_DIR"]).expanduser() if os.environ.get("FNNET_DATA_DIR")
              else Path(__file__).resolve().parents[2] / "shared" / "data") / "mnist"


def _closed_port() -> int:
    """A local TCP port with nothing listening (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DEAD_MIRROR = f"http://127.0.0.1:{_closed_port()}/"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No FNNET_DATA_DIR, a private cache, and default mirrors that refuse connections."""
    monkeypatch.delenv("FNNET_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("FNNET_CACHE_DIR", str(tmp_path / "cache"))
    for name, var in datasets.MIRROR_ENV.items():
        monkeypatch.delenv(var, raising=False)
        monkeypatch.setitem(datasets.MIRRORS, name, (DEAD_MIRROR,))


def _small_dataset(seed: int, n_train: int = 30, n_test: int = 20):
    return synthetic_mnist(n_train, n_test, seed=seed)


def _write_set(folder: Path, seed: int, **kw) -> tuple:
    train, test = _small_dataset(seed, **kw)
    write_mnist_files(folder, train, test)
    return train, test


def _assert_same(loaded, expected):
    for got, want in zip(
        (loaded[0][0], loaded[0][1], loaded[1][0], loaded[1][1]),
        (expected[0][0], expected[0][1], expected[1][0], expected[1][1]),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listing(folder: Path) -> list[str]:
    """Every file under ``folder`` (hidden temp files included), relative, sorted."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------
# IDX reading and writing
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip_every_dtype(tmp_path, dtype, compress):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        array = rng.integers(info.min, info.max, size=(3, 4, 5), endpoint=True).astype(dtype)
    else:
        array = rng.normal(size=(3, 4, 5)).astype(dtype)
    path = write_idx(tmp_path / "a.idx", array, gzip=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    assert back.flags.writeable
    np.testing.assert_array_equal(back, array)


def test_read_raw_idx_written_by_hand_is_big_endian(tmp_path):
    # 0x0B int16, 1 dimension of length 2: values 1 and -2, big-endian.
    path = tmp_path / "hand.idx"
    path.write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x00, 0x01, 0xFF, 0xFE]))
    np.testing.assert_array_equal(read_idx(path), np.array([1, -2], dtype=np.int16))


def test_gzip_detected_by_magic_not_name(tmp_path):
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    gz_named_raw = write_idx(tmp_path / "raw.gz", array, gzip=False)
    raw_named_gz = write_idx(tmp_path / "compressed.idx", array, gzip=True)
    np.testing.assert_array_equal(read_idx(gz_named_raw), array)
    np.testing.assert_array_equal(read_idx(raw_named_gz), array)


def test_write_idx_is_deterministic_and_leaves_no_temp_files(tmp_path):
    array = np.arange(10, dtype=np.int32)
    first = write_idx(tmp_path / "x.gz", array).read_bytes()
    second = write_idx(tmp_path / "x.gz", array).read_bytes()
    assert first == second
    assert _listing(tmp_path) == ["x.gz"]


def test_write_idx_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(ValueError, match="int64") as excinfo:
        write_idx(tmp_path / "bad.idx", np.arange(3, dtype=np.int64))
    assert "bad.idx" in str(excinfo.value)
    assert not (tmp_path / "bad.idx").exists()


def _idx_bytes(array: np.ndarray) -> bytes:
    path_bytes = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return path_bytes + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_data(tmp_path, compress):
    data = _idx_bytes(np.zeros((4, 5), np.uint8))[:-3]
    path = tmp_path / "short.idx"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(IDXError) as excinfo:
        read_idx(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert "truncated" in message and "expected 20 bytes" in message and "got 17" in message


def test_truncated_header(tmp_path):
    path = tmp_path / "header.idx"
    path.write_bytes(bytes([0, 0, 0x08, 3, 0, 0, 0, 1]))
    with pytest.raises(IDXError, match="truncated header") as excinfo:
        read_idx(path)
    assert str(path) in str(excinfo.value)


def test_trailing_garbage(tmp_path):
    path = tmp_path / "long.idx"
    path.write_bytes(_idx_bytes(np.zeros((2, 2), np.uint8)) + b"junk")
    with pytest.raises(IDXError) as excinfo:
        read_idx(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert "trailing" in message and "expected 4 bytes" in message and "got 8" in message


@pytest.mark.parametrize(
    "head",
    [b"\x00\x01\x08\x01", b"PK\x03\x04", b"\x00\x00\x07\x01", b"\x00\x00\x0a\x01"],
    ids=["nonzero-second-byte", "zip-file", "dtype-07", "dtype-0a"],
)
def test_wrong_magic_or_unknown_dtype(tmp_path, head):
    path = tmp_path / "magic.idx"
    path.write_bytes(head + b"\x00\x00\x00\x01" + b"\x00")
    with pytest.raises(IDXError) as excinfo:
        read_idx(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert "not an IDX file" in message and "0x08 (uint8)" in message


def test_tiny_file(tmp_path):
    path = tmp_path / "tiny.idx"
    path.write_bytes(b"\x00\x00")
    with pytest.raises(IDXError, match="only 2 bytes") as excinfo:
        read_idx(path)
    assert str(path) in str(excinfo.value)


@pytest.mark.parametrize("damage", ["cut", "corrupt"])
def test_bad_gzip(tmp_path, damage):
    good = gzip.compress(_idx_bytes(np.arange(200, dtype=np.uint8).reshape(10, 20)))
    if damage == "cut":
        bad = good[: len(good) // 2]
    else:
        bad = good[:10] + bytes(b ^ 0xFF for b in good[10:-8]) + good[-8:]
    path = tmp_path / "bad.gz"
    path.write_bytes(bad)
    with pytest.raises(IDXError) as excinfo:
        read_idx(path)
    message = str(excinfo.value)
    assert str(path) in message and "does not decompress" in message


# ----------------------------------------------------------------------------------------------
# Dataset validation
# ----------------------------------------------------------------------------------------------


def test_load_from_data_dir_round_trip(tmp_path):
    expected = _write_set(tmp_path / "d", seed=1)
    loaded = load_mnist(data_dir=tmp_path / "d", download=False)
    _assert_same(loaded, expected)
    (x_train, y_train), (x_test, y_test) = loaded
    assert x_train.dtype == np.uint8 and x_train.shape == (30, 28, 28)
    assert y_train.dtype == np.int64 and x_test.shape == (20, 28, 28) and y_test.shape == (20,)


def test_uncompressed_files_are_accepted(tmp_path):
    train, test = _small_dataset(2)
    write_mnist_files(tmp_path / "raw", train, test, gzip=False)
    assert not any(p.suffix == ".gz" for p in (tmp_path / "raw").iterdir())
    _assert_same(load_mnist(tmp_path / "raw", download=False), (train, test))


def test_count_mismatch_names_both_files(tmp_path):
    folder = tmp_path / "d"
    _write_set(folder, seed=3)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(29, np.uint8))
    with pytest.raises(DatasetError) as excinfo:
        load_mnist(folder, download=False)
    message = str(excinfo.value)
    assert "count mismatch" in message and "30 images" in message and "29 labels" in message
    assert str(folder / "train-images-idx3-ubyte.gz") in message
    assert str(folder / "train-labels-idx1-ubyte.gz") in message


def test_labels_outside_0_to_9(tmp_path):
    folder = tmp_path / "d"
    _write_set(folder, seed=4)
    labels = np.zeros(20, np.uint8)
    labels[7] = 10
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DatasetError) as excinfo:
        load_mnist(folder, download=False)
    message = str(excinfo.value)
    assert str(folder / "t10k-labels-idx1-ubyte.gz") in message
    assert "0..9" in message and "10 at index 7" in message


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((30, 28, 27), np.uint8),
        np.zeros((30, 784), np.uint8),
        np.zeros((30, 28, 28), np.int8),
    ],
    ids=["28x27", "flat", "int8"],
)
def test_images_not_n_28_28_uint8(tmp_path, images):
    folder = tmp_path / "d"
    _write_set(folder, seed=5)
    write_idx(folder / "train-images-idx3-ubyte.gz", images)
    with pytest.raises(DatasetError) as excinfo:
        load_mnist(folder, download=False)
    message = str(excinfo.value)
    assert str(folder / "train-images-idx3-ubyte.gz") in message and "(N, 28, 28)" in message


def test_malformed_file_in_dataset_names_it(tmp_path):
    folder = tmp_path / "d"
    _write_set(folder, seed=6)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(IDXError) as excinfo:
        load_mnist(folder, download=False)
    assert str(folder / "t10k-images-idx3-ubyte.gz") in str(excinfo.value)


# ----------------------------------------------------------------------------------------------
# Where files are looked for
# ----------------------------------------------------------------------------------------------


def test_lookup_order_data_dir_then_env_then_cache(tmp_path, monkeypatch):
    from_arg = _write_set(tmp_path / "arg", seed=10)
    from_env = _write_set(tmp_path / "root" / "mnist", seed=11)
    from_cache = _write_set(tmp_path / "cache" / "mnist", seed=12)
    monkeypatch.setenv("FNNET_DATA_DIR", str(tmp_path / "root"))

    _assert_same(load_mnist(tmp_path / "arg", download=False), from_arg)
    _assert_same(load_mnist(download=False), from_env)
    monkeypatch.delenv("FNNET_DATA_DIR")
    _assert_same(load_mnist(download=False), from_cache)


def test_incomplete_location_is_skipped_not_mixed(tmp_path, monkeypatch):
    _write_set(tmp_path / "root" / "mnist", seed=13)
    (tmp_path / "root" / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    from_cache = _write_set(tmp_path / "cache" / "mnist", seed=14)
    monkeypatch.setenv("FNNET_DATA_DIR", str(tmp_path / "root"))
    _assert_same(load_mnist(download=False), from_cache)


def test_cache_dir_resolution(tmp_path, monkeypatch):
    assert datasets.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("FNNET_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets.cache_dir() == tmp_path / "xdg" / "fnnet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets.cache_dir() == tmp_path / "home" / ".cache" / "fnnet"


def test_xdg_cache_is_used_for_lookup(tmp_path, monkeypatch):
    monkeypatch.delenv("FNNET_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = _write_set(tmp_path / "xdg" / "fnnet" / "fashion-mnist", seed=15)
    _assert_same(load_fashion_mnist(download=False), expected)


def test_fashion_mnist_never_takes_mnist_files(tmp_path, monkeypatch):
    _write_set(tmp_path / "root" / "mnist", seed=16)
    _write_set(tmp_path / "cache" / "mnist", seed=17)
    monkeypatch.setenv("FNNET_DATA_DIR", str(tmp_path / "root"))
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load_fashion_mnist(download=False)
    message = str(excinfo.value)
    assert str(tmp_path / "root" / "fashion-mnist") in message
    assert str(tmp_path / "cache" / "fashion-mnist") in message

    fashion = _write_set(tmp_path / "root" / "fashion-mnist", seed=18)
    _assert_same(load_fashion_mnist(download=False), fashion)
    assert not np.array_equal(load_mnist(download=False)[0][0], fashion[0][0])


def test_not_found_lists_every_path_and_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("FNNET_DATA_DIR", str(tmp_path / "root"))
    (tmp_path / "root" / "mnist").mkdir(parents=True)
    write_idx(tmp_path / "root" / "mnist" / "train-images-idx3-ubyte.gz",
              np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load_mnist(download=False)
    assert isinstance(excinfo.value, FileNotFoundError)
    message = str(excinfo.value)
    for path in (tmp_path / "root" / "mnist", tmp_path / "cache" / "mnist"):
        assert str(path) in message
    assert "missing train-labels-idx1-ubyte.gz" in message  # the env folder exists, incomplete
    assert "folder does not exist" in message
    assert "download=False" in message
    assert "data_dir=" in message and "FNNET_DATA_DIR=" in message and "mnist/" in message
    for filename in FILES:
        assert filename in message


def test_env_root_pointing_at_files_gets_a_hint(tmp_path, monkeypatch):
    _write_set(tmp_path / "flat", seed=19)
    monkeypatch.setenv("FNNET_DATA_DIR", str(tmp_path / "flat"))
    with pytest.raises(DatasetNotFoundError, match="root with one folder per dataset") as excinfo:
        load_mnist(download=False)
    assert str(tmp_path / "flat" / "mnist") in str(excinfo.value)


# ----------------------------------------------------------------------------------------------
# Downloading from a local mirror
# ----------------------------------------------------------------------------------------------


# ``mirror``, a local HTTP server over a folder, is a fixture of conftest.py.


def _publish(folder: Path, seed: int, monkeypatch, name: str = "mnist") -> tuple:
    """Write a small dataset into ``folder`` and make its digests the expected ones."""
    data = _write_set(folder, seed=seed)
    digests = {f: (_sha256(folder / f),) for f in FILES}
    monkeypatch.setitem(datasets.SHA256, name, digests)
    return data


def test_download_lands_all_four_files_in_cache(tmp_path, mirror, monkeypatch, capsys):
    url, www = mirror
    expected = _publish(www / "mnist", seed=20, monkeypatch=monkeypatch)
    loaded = load_mnist(mirrors=[url + "mnist/"])
    _assert_same(loaded, expected)
    assert _listing(tmp_path / "cache") == sorted(f"mnist/{f}" for f in FILES)
    assert "downloading" in capsys.readouterr().err
    # A second load uses the cache: the server is no longer needed.
    shutil.rmtree(www / "mnist")
    _assert_same(load_mnist(mirrors=[url + "mnist/"]), expected)


def test_download_only_fetches_missing_files(tmp_path, mirror, monkeypatch, capsys):
    url, www = mirror
    expected = _publish(www, seed=21, monkeypatch=monkeypatch)
    cached = tmp_path / "cache" / "mnist"
    cached.mkdir(parents=True)
    shutil.copy(www / FILES[0], cached / FILES[0])
    _assert_same(load_mnist(mirrors=url), expected)
    err = capsys.readouterr().err
    assert FILES[0] not in err and all(f in err for f in FILES[1:])


def test_mirror_env_var_is_used(tmp_path, mirror, monkeypatch):
    url, www = mirror
    expected = _publish(www, seed=22, monkeypatch=monkeypatch, name="fashion-mnist")
    monkeypatch.setenv("FNNET_FASHION_MNIST_MIRROR", url)
    _assert_same(load_fashion_mnist(), expected)
    assert _listing(tmp_path / "cache") == sorted(f"fashion-mnist/{f}" for f in FILES)


def test_file_url_mirror(tmp_path, monkeypatch):
    expected = _publish(tmp_path / "local", seed=23, monkeypatch=monkeypatch)
    _assert_same(load_mnist(mirrors=[(tmp_path / "local").as_uri()]), expected)


def test_download_removes_what_a_killed_download_left(tmp_path, monkeypatch):
    expected = _publish(tmp_path / "local", seed=27, monkeypatch=monkeypatch)
    cached = tmp_path / "cache" / "mnist"
    cached.mkdir(parents=True)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a process that is gone, as a killed download's would be
    leftover = io.temporary_path(cached / FILES[0]).name.replace(f".{os.getpid()}.",
                                                                 f".{child.pid}.", 1)
    (cached / leftover).write_bytes(b"the first half of a download")
    _assert_same(load_mnist(mirrors=[(tmp_path / "local").as_uri()]), expected)
    assert _listing(tmp_path / "cache") == sorted(f"mnist/{f}" for f in FILES)


def _publish_with_wrong_digest(folder: Path, seed: int, monkeypatch, filename: str, digest: str):
    """``_publish``, but ``filename``'s expected SHA-256 is ``digest`` (which it does not have)."""
    _publish(folder, seed=seed, monkeypatch=monkeypatch)
    monkeypatch.setitem(datasets.SHA256, "mnist", {**datasets.SHA256["mnist"], filename: (digest,)})


def test_checksum_mismatch_raises_and_leaves_nothing(tmp_path, mirror, monkeypatch):
    url, www = mirror
    _publish_with_wrong_digest(www, 24, monkeypatch, "train-images-idx3-ubyte.gz", "0" * 64)
    with pytest.raises(ChecksumError) as excinfo:
        load_mnist(mirrors=[url])
    message = str(excinfo.value)
    assert "train-images-idx3-ubyte.gz" in message
    assert "0" * 64 in message and _sha256(www / "train-images-idx3-ubyte.gz") in message
    assert _listing(tmp_path / "cache") == []


def test_checksum_mismatch_on_later_file_keeps_only_verified_files(tmp_path, mirror, monkeypatch):
    url, www = mirror
    _publish_with_wrong_digest(www, 25, monkeypatch, "t10k-images-idx3-ubyte.gz", "f" * 64)
    with pytest.raises(ChecksumError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist(mirrors=[url])
    assert _listing(tmp_path / "cache") == sorted(f"mnist/{f}" for f in FILES[:2])


def test_first_mirror_failing_falls_back_to_second(tmp_path, mirror, monkeypatch, capsys):
    url, www = mirror
    expected = _publish(www / "good", seed=26, monkeypatch=monkeypatch)
    (www / "corrupt").mkdir()
    for f in FILES:  # the first mirror serves wrong bytes, the second the right ones
        (www / "corrupt" / f).write_bytes(b"not the file")
    mirrors = [DEAD_MIRROR, url + "missing/", url + "corrupt/", url + "good/"]
    _assert_same(load_mnist(mirrors=mirrors), expected)
    assert _listing(tmp_path / "cache") == sorted(f"mnist/{f}" for f in FILES)
    err = capsys.readouterr().err
    assert "Connection refused" in err or "URLError" in err
    assert "404" in err and "checksum mismatch" in err


def test_no_network_and_no_files(tmp_path, monkeypatch):
    monkeypatch.setenv("FNNET_DATA_DIR", str(tmp_path / "root"))
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load_mnist()  # default mirrors: the closed local port set by isolated_env
    message = str(excinfo.value)
    assert str(tmp_path / "root" / "mnist") in message
    assert str(tmp_path / "cache" / "mnist") in message
    assert "data_dir argument: not given" in message
    assert DEAD_MIRROR + "train-images-idx3-ubyte.gz" in message
    assert "data_dir=" in message and "FNNET_DATA_DIR=" in message
    assert "fashion-mnist/" in message and "FNNET_MNIST_MIRROR" in message
    assert _listing(tmp_path / "cache") == [] and not (tmp_path / "cache" / "mnist").exists()


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.load_dataset("cifar10")


def test_published_mnist_digests_accept_the_shared_files():
    if not REAL_MNIST.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{REAL_MNIST} not present; CI is set, so the data must be there")
        pytest.skip(f"{REAL_MNIST} not present")
    for f in FILES:
        assert _sha256(REAL_MNIST / f) in datasets.SHA256["mnist"][f], f
    for name in datasets.DATASETS:
        assert set(datasets.SHA256[name]) == set(FILES)
        assert all(len(d) == 64 for ds in datasets.SHA256[name].values() for d in ds)


# ----------------------------------------------------------------------------------------------
# Helpers and synthetic data
# ----------------------------------------------------------------------------------------------


def test_flatten_scale_one_hot_prepare():
    x = np.arange(2 * 28 * 28).reshape(2, 28, 28).astype(np.uint8)
    flat = flatten(x)
    assert flat.shape == (2, 784)
    np.testing.assert_array_equal(flat[1], x[1].ravel())

    scaled = scale(np.array([0, 51, 255], np.uint8))
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled, [0.0, 0.2, 1.0])
    assert scale(np.array([255], np.uint8), dtype=np.float64).dtype == np.float64
    with pytest.raises(TypeError):
        scale(scaled)

    encoded = one_hot(np.array([0, 3, 9]))
    assert encoded.shape == (3, 10) and encoded.dtype == np.float32
    np.testing.assert_array_equal(encoded.argmax(1), [0, 3, 9])
    assert encoded.sum() == 3
    assert one_hot(np.array([1]), num_classes=3).tolist() == [[0.0, 1.0, 0.0]]
    with pytest.raises(ValueError, match="0..9"):
        one_hot(np.array([10]))

    xs, ys = prepare(x, np.array([4, 7], np.int64))
    assert xs.shape == (2, 784) and xs.dtype == np.float32
    assert 0.0 <= xs.min() and xs.max() <= 1.0
    assert ys.dtype == np.int32 and ys.tolist() == [4, 7]


def test_synthetic_mnist_structure_determinism_and_learnability():
    (x_train, y_train), (x_test, y_test) = synthetic_mnist(500, 200, seed=3)
    assert x_train.shape == (500, 28, 28) and x_train.dtype == np.uint8
    assert x_test.shape == (200, 28, 28) and y_test.shape == (200,)
    assert y_train.dtype == np.int64 and set(np.unique(y_train)) == set(range(10))
    again = synthetic_mnist(500, 200, seed=3)
    _assert_same(((x_train, y_train), (x_test, y_test)), again)
    assert not np.array_equal(synthetic_mnist(500, 200, seed=4)[0][0], x_train)

    # A nearest-centroid classifier fit on train must do well on test.
    xs, ys = prepare(x_train, y_train)
    xt, yt = prepare(x_test, y_test)
    centroids = np.stack([xs[ys == k].mean(0) for k in range(10)])
    predicted = ((xt[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (predicted == yt).mean() > 0.9


def test_write_mnist_files_then_load_via_env_root(tmp_path, monkeypatch):
    data = synthetic_mnist(40, 10, seed=7)
    write_mnist_files(tmp_path / "root" / "fashion-mnist", *data)
    monkeypatch.setenv("FNNET_DATA_DIR", str(tmp_path / "root"))
    _assert_same(load_fashion_mnist(download=False), data)


# ----------------------------------------------------------------------------------------------
# The real data
# ----------------------------------------------------------------------------------------------


def test_real_mnist_loads_from_shared_data(monkeypatch):
    if not all((REAL_MNIST / f).is_file() for f in FILES):
        message = f"real MNIST not found in {REAL_MNIST} (needs {', '.join(FILES)})"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI is set, so the data must be there")
        pytest.skip(message)
    monkeypatch.setenv("FNNET_DATA_DIR", str(REAL_MNIST.parent))
    (x_train, y_train), (x_test, y_test) = load_mnist(download=False)
    assert x_train.shape == (60000, 28, 28) and x_train.dtype == np.uint8
    assert x_test.shape == (10000, 28, 28) and x_test.dtype == np.uint8
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    for labels in (y_train, y_test):
        assert labels.min() == 0 and labels.max() == 9
        assert set(np.unique(labels)) == set(range(10))


def test_scaled_images_are_64_byte_aligned_and_exact():
    x = np.random.default_rng(0).integers(0, 256, (37, 28, 28)).astype(np.uint8)
    for dtype in (np.float32, np.float64):
        scaled = scale(x, dtype)
        assert scaled.ctypes.data % 64 == 0, dtype
        np.testing.assert_array_equal(scaled, x.astype(dtype) / dtype(255))
    xs, _ = prepare(x, np.zeros(37, np.int64))
    assert xs.ctypes.data % 64 == 0 and xs.flags.c_contiguous
    empty = scale(np.zeros((0, 784), np.uint8))
    assert empty.shape == (0, 784) and empty.dtype == np.float32
    for shape in [(), (5,), (3, 7, 2)]:
        a = aligned_empty(shape, np.int32)
        assert a.shape == shape and a.dtype == np.int32 and a.ctypes.data % 64 == 0


def test_hold_out_keeps_both_parts_aligned_for_a_copy_free_device_put():
    from fnnet.datasets import ALIGNMENT, hold_out
    x = np.arange(200 * 6, dtype=np.float32).reshape(200, 6)
    y = np.arange(200, dtype=np.int32)
    (xk, yk), (xh, yh) = hold_out(x, y, 37, seed=3)
    for part in (xk, yk, xh, yh):
        assert part.ctypes.data % ALIGNMENT == 0
    assert len(xh) == 37 and np.array_equal(np.sort(np.concatenate([yk, yh])), y)
    np.testing.assert_array_equal(xk, x[yk])
    np.testing.assert_array_equal(xh, x[yh])


@pytest.mark.digest_warnings
def test_the_other_data_sets_files_are_refused_and_unknown_ones_named(tmp_path, monkeypatch):
    """Issue 20: --dataset fashion-mnist pointed at MNIST's files trained on digits and named
    clothes. A file whose SHA-256 is the other data set's published one is refused; files that
    match neither are used with one warning naming them."""
    from fnnet.datasets import loaders

    train, test = synthetic_mnist(20, 10)
    write_mnist_files(tmp_path, train, test)
    with pytest.warns(UserWarning, match="match neither data set's published SHA-256"):
        loaders.load_dataset("fashion-mnist", tmp_path, download=False)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    table = {name: dict(files) for name, files in loaders.SHA256.items()}
    table["mnist"]["train-labels-idx1-ubyte.gz"] = (digest,)  # as if it were MNIST's own file
    monkeypatch.setattr(loaders, "SHA256", table)
    with pytest.raises(DatasetError, match="is mnist's train-labels-idx1-ubyte.gz, not "
                                           "fashion-mnist's"):
        loaders.load_dataset("fashion-mnist", tmp_path, download=False)
