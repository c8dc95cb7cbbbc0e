"""fnnet.datasets against hostile or broken inputs: a folder named by the caller is the only place
looked at; IDX files whose header lies (gzip bombs, overflowing dimensions, more images than the
published set, labels disagreeing with the images) or that are FIFOs; mirrors that trickle their
headers or body, or send too much; a download killed outright.

Network-free, like ``test_datasets`` (whose isolation fixture and helpers are used here): the only
servers are ``http.server`` instances on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import http.server
import os
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from test_datasets import DEAD_MIRROR, _listing, _publish, _write_set, isolated_env  # noqa: F401
from test_io import refused_without_blocking

from fnnet import datasets
from fnnet.datasets import (
    FILES,
    ChecksumError,
    DatasetError,
    DatasetNotFoundError,
    IDXError,
    hold_out,
    load_mnist,
    read_idx,
)
from fnnet.datasets import download as download_module
from fnnet.datasets import idx as idx_module
from fnnet.datasets.idx import read_idx_header

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------
# A folder the caller names is the only place looked at
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["mistyped", "empty", "partial"])
def test_an_explicit_data_dir_is_the_only_place_looked_at(tmp_path, monkeypatch, given):
    """The environment's root and the cache hold the data and a mirror serves it, yet a
    mistyped, empty or partial ``data_dir`` is refused, naming it; nothing is downloaded."""
    _write_set(tmp_path / "root" / "mnist", seed=30)
    _write_set(tmp_path / "cache" / "mnist", seed=31)
    _publish(tmp_path / "www", seed=32, monkeypatch=monkeypatch)
    monkeypatch.setenv("FNNET_DATA_DIR", str(tmp_path / "root"))
    folder = tmp_path / given
    if given == "empty":
        folder.mkdir()
    elif given == "partial":
        _write_set(folder, seed=33)
        (folder / FILES[3]).unlink()
    before = _listing(tmp_path / "cache")
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load_mnist(folder, mirrors=[(tmp_path / "www").as_uri()])
    message = str(excinfo.value)
    assert f"mnist not found in data_dir {folder} (" in message
    assert "only place looked at" in message
    assert ("folder does not exist" if given == "mistyped" else f"{FILES[3]})") in message
    assert _listing(tmp_path / "cache") == before


def test_the_not_found_message_in_the_command_lines_words(tmp_path):
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load_mnist(tmp_path / "nowhere")
    cli = excinfo.value.message("cli")
    assert "\n" not in cli and "--data-dir" in cli and "data_dir=" not in cli
    assert str(tmp_path / "nowhere") in cli
    recorded = excinfo.value.message("cli", given_as="the folder recorded in the checkpoint")
    assert recorded.startswith("mnist not found in the folder recorded in the checkpoint ")

    with pytest.raises(DatasetNotFoundError) as excinfo:
        load_mnist(download=False)  # searched: $FNNET_DATA_DIR (unset) and the cache
    cli = excinfo.value.message("cli")
    assert "\n" not in cli and "--no-download" in cli and "--data-dir" in cli
    assert "download=False" not in cli and "data_dir=" not in cli
    assert "download=False" in str(excinfo.value)


# ----------------------------------------------------------------------------------------------
# IDX headers that lie
# ----------------------------------------------------------------------------------------------


def _header(code: int, shape) -> bytes:
    return bytes([0, 0, code, len(shape)]) + np.asarray(shape, ">u4").tobytes()


def _gzip_of_zeros(head: bytes, megabytes: int, extra: int = 0) -> bytes:
    """gzip of ``head`` then ``megabytes`` MB (and ``extra`` bytes) of zeros, compressed a
    megabyte at a time."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [packer.compress(head)]
    zeros = bytes(1 << 20)
    parts += [packer.compress(zeros) for _ in range(megabytes)]
    parts.append(packer.compress(bytes(extra)))
    return b"".join(parts + [packer.flush()])


def _refused_cheaply(path, max_bytes):
    """``read_idx(path)``'s IDXError message, checking that refusing it took under a second and
    under ``max_bytes`` of memory."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(IDXError) as excinfo:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < max_bytes, peak
    return str(excinfo.value)


def test_a_gzip_idx_inflating_past_its_header_is_refused_without_inflating_it(tmp_path):
    """A 200 kB file whose header promises 10 bytes but whose stream inflates to 200 MB."""
    path = tmp_path / "bomb.gz"
    path.write_bytes(_gzip_of_zeros(_header(0x08, (10,)), 200))
    assert path.stat().st_size < 1_000_000
    message = _refused_cheaply(path, 4 << 20)  # gzip's buffers, never the 200 MB
    assert str(path) in message and "trailing garbage" in message and "not read" in message


def test_a_gzip_header_promising_more_than_the_file_can_hold_is_refused_before_reading(tmp_path):
    path = tmp_path / "promise.gz"
    path.write_bytes(gzip.compress(_header(0x08, (60000, 1000, 1000)) + bytes(100)))
    message = _refused_cheaply(path, 1 << 20)
    assert str(path) in message and "cannot hold" in message and "60000000000 bytes" in message


@pytest.mark.parametrize("compress", [False, True])
def test_idx_dimensions_overflowing_int64_or_too_many_name_the_file(tmp_path, compress):
    cases = {
        "overflow": (_header(0x0E, (0xFFFFFFFF,) * 4), "more than any array can hold"),
        "ndim": (_header(0x08, (1,) * 65), "65 dimensions"),
    }
    for name, (head, expected) in cases.items():
        path = tmp_path / f"{name}.idx"
        path.write_bytes(gzip.compress(head) if compress else head)
        with pytest.raises(IDXError) as excinfo:
            read_idx(path)
        assert str(path) in str(excinfo.value) and expected in str(excinfo.value), name


def test_sixty_four_dimensions_are_read(tmp_path):
    path = tmp_path / "deep.idx"
    path.write_bytes(_header(0x08, (1,) * 64) + b"\x07")
    assert read_idx(path).shape == (1,) * 64


@pytest.fixture
def no_data_read(monkeypatch):
    """Fails the test if any IDX file's data (past its header) is read."""

    def read_data(*args, **kwargs):
        raise AssertionError("IDX data was read")

    monkeypatch.setattr(idx_module, "_read_data", read_data)


def test_more_images_than_the_published_set_are_refused_from_the_headers(tmp_path):
    """70,000 training images and labels (55 MB inflated from 55 kB, within deflate's ratio, and
    agreeing with each other): refused from the headers, before any is inflated."""
    folder = tmp_path / "d"
    _write_set(folder, seed=40)
    (folder / FILES[0]).write_bytes(_gzip_of_zeros(_header(0x08, (70_000, 28, 28)), 52,
                                                   70_000 * 784 - (52 << 20)))
    (folder / FILES[1]).write_bytes(gzip.compress(_header(0x08, (70_000,)) + bytes(70_000)))
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError) as excinfo:
            load_mnist(folder, download=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak
    message = str(excinfo.value)
    assert message.startswith(f"{folder / FILES[0]}: the headers declare 70,000 images and labels;")
    assert "expected at most the 60,000 of mnist's training set" in message


def test_labels_disagreeing_with_the_images_are_refused_before_any_data_is_read(tmp_path,
                                                                                no_data_read):
    folder = tmp_path / "d"
    _write_set(folder, seed=41)  # 30 training images
    (folder / FILES[1]).write_bytes(_gzip_of_zeros(_header(0x08, (2_600_000,)), 3))
    with pytest.raises(DatasetError) as excinfo:
        load_mnist(folder, download=False)
    message = str(excinfo.value)
    assert "count mismatch" in message and "30 images" in message
    assert "2600000 labels" in message and str(folder / FILES[1]) in message


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_refuses_a_header_other_than_expected_before_reading(tmp_path, no_data_read,
                                                                      compress):
    path = tmp_path / "x.idx"
    head = _header(0x08, (3, 28, 28)) + bytes(3 * 784)
    path.write_bytes(gzip.compress(head) if compress else head)
    assert read_idx_header(path) == (np.dtype(np.uint8), (3, 28, 28))
    with pytest.raises(IDXError, match=r"declares shape \(3, 28, 28\), expected \(2, 28, 28\)"):
        read_idx(path, shape=(2, 28, 28))
    with pytest.raises(IDXError, match=r"declares dtype uint8, expected float32; refused before"):
        read_idx(path, dtype=np.float32)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
@pytest.mark.parametrize("read", [read_idx, read_idx_header])
def test_a_fifo_in_place_of_an_idx_file_is_refused_not_waited_on(tmp_path, read):
    fifo = tmp_path / FILES[0]
    os.mkfifo(fifo)
    message = refused_without_blocking(fifo, lambda: read(fifo), IDXError)
    assert message == (f"{fifo}: is a FIFO (named pipe), which is never read (it could block or "
                       f"never end); expected a regular IDX file")


# ----------------------------------------------------------------------------------------------
# Mirrors that trickle, or send too much
# ----------------------------------------------------------------------------------------------


class _Server:
    """A local HTTP server answering every GET with ``body(handler)``; ``sent`` counts bytes."""

    def __init__(self, body):
        server = self
        self.sent = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                try:
                    body(self, server)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def _trickle(handler, server):
    """Announces 1,000 bytes and sends one every 20 ms (for at most 3 s)."""
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    for _ in range(150):
        handler.wfile.write(b"x")
        handler.wfile.flush()
        server.sent += 1
        time.sleep(0.02)


def _flood(handler, server, announce=None):
    """Sends 64 kB chunks with no length announced (or ``announce``), for at most 64 MB."""
    handler.send_response(200)
    if announce is not None:
        handler.send_header("Content-Length", str(announce))
    handler.end_headers()
    chunk = bytes(1 << 16)
    for _ in range(1024):
        handler.wfile.write(chunk)
        server.sent += len(chunk)


def _trickle_headers(handler, server):
    """Sends a status line and headers one byte every 20 ms (for at most 3 s), never ending
    them: each read gets a byte long before any per-read timeout."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Slow: " + b"x" * 200
    for byte in head[:150]:
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        server.sent += 1
        time.sleep(0.02)


def test_a_mirror_trickling_its_headers_hits_the_overall_deadline(tmp_path, monkeypatch):
    monkeypatch.setattr(download_module, "DEADLINE_S", 0.3)
    started = time.perf_counter()
    with _Server(_trickle_headers) as server, pytest.raises(DatasetNotFoundError) as excinfo:
        load_mnist(mirrors=[server.url])
    assert time.perf_counter() - started < 2.0
    assert server.sent < 100
    message = str(excinfo.value)
    assert "TimeoutError" in message and "0.3 s deadline" in message
    assert _listing(tmp_path / "cache") == []


def test_a_trickling_mirror_hits_the_overall_deadline(tmp_path, monkeypatch):
    monkeypatch.setattr(download_module, "DEADLINE_S", 0.3)
    started = time.perf_counter()
    with _Server(_trickle) as server, pytest.raises(DatasetNotFoundError) as excinfo:
        load_mnist(mirrors=[server.url])
    assert time.perf_counter() - started < 2.5
    assert server.sent < 100
    message = str(excinfo.value)
    assert "TimeoutError" in message and "0.3 s deadline" in message
    assert _listing(tmp_path / "cache") == []


@pytest.mark.parametrize("announce", [None, 50_000_000], ids=["unannounced", "announced"])
def test_an_oversize_download_is_cut_off_at_the_known_size(tmp_path, monkeypatch, announce):
    monkeypatch.setitem(datasets.SIZES, "mnist", dict.fromkeys(FILES, 100_000))
    flood = lambda handler, server: _flood(handler, server, announce)
    with _Server(flood) as server, pytest.raises(ChecksumError) as excinfo:
        load_mnist(mirrors=[server.url])
    message = str(excinfo.value)
    assert "100,000 bytes" in message and FILES[0] in message
    assert "announces 50,000,000" in message if announce else "sent more than" in message
    assert _listing(tmp_path / "cache") == []  # nothing kept, no temporary left
    assert server.sent < 16 << 20  # cut off long before the 64 MB the server would send


# ----------------------------------------------------------------------------------------------
# A download killed outright
# ----------------------------------------------------------------------------------------------


KILLED_DOWNLOAD = """
import os, sys
from fnnet import datasets
datasets.SHA256["mnist"] = {f: (d,) for f, d in zip(datasets.FILES, sys.argv[2:])}
os.fsync = lambda fd: os.kill(os.getpid(), 9)  # killed once the first file is written
datasets.load_mnist(mirrors=[sys.argv[1]])
"""


def test_a_killed_downloads_temporary_is_removed_by_the_next_download(tmp_path, monkeypatch):
    expected = _publish(tmp_path / "www", seed=34, monkeypatch=monkeypatch)
    digests = [datasets.SHA256["mnist"][f][0] for f in FILES]
    env = dict(os.environ, PYTHONPATH=str(REPO), FNNET_CACHE_DIR=str(tmp_path / "cache"))
    child = subprocess.run([sys.executable, "-c", KILLED_DOWNLOAD, (tmp_path / "www").as_uri(),
                            *digests], env=env, capture_output=True, timeout=300)
    assert child.returncode == -9, child.stderr
    left = _listing(tmp_path / "cache")
    assert len(left) == 1 and left[0].endswith(".fnnet-tmp"), left
    loaded = load_mnist(mirrors=[(tmp_path / "www").as_uri()])
    assert np.array_equal(loaded[0][0], expected[0][0])
    assert _listing(tmp_path / "cache") == sorted(f"mnist/{f}" for f in FILES)


# ----------------------------------------------------------------------------------------------
# The validation split and the class names
# ----------------------------------------------------------------------------------------------


def test_hold_out_draws_a_seeded_split_that_keeps_the_order():
    x, y = np.arange(100).reshape(50, 2), np.arange(50)
    (xk, yk), (xh, yh) = hold_out(x, y, 10, seed=3)
    assert len(yh) == 10 and len(yk) == 40
    assert sorted(np.concatenate([yk, yh]).tolist()) == list(range(50))
    assert np.all(np.diff(yk) > 0) and np.all(np.diff(yh) > 0)
    assert np.array_equal(xh[:, 0] // 2, yh)
    assert np.array_equal(hold_out(x, y, 10, seed=3)[1][1], yh)
    assert not np.array_equal(hold_out(x, y, 10, seed=4)[1][1], yh)
    assert len(hold_out(x, y, 0)[0][1]) == 50
    (_, _), (x_none, _) = hold_out(np.zeros((5, 28, 28), np.uint8), np.arange(5), 0)
    assert datasets.flatten(x_none).shape == (0, 784)
    with pytest.raises(ValueError, match="cannot hold out 50 of 50"):
        hold_out(x, y, 50)


def test_class_names():
    assert datasets.CLASS_NAMES["fashion-mnist"][0] == "T-shirt/top"
    assert datasets.CLASS_NAMES["fashion-mnist"][9] == "Ankle boot"
    assert datasets.CLASS_NAMES["mnist"][7] == "7"
    assert all(len(names) == 10 for names in datasets.CLASS_NAMES.values())
