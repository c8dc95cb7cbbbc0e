"""Downloading a dataset's missing files into the cache, each checked against its SHA-256.

Each file is streamed through ``fnnet.io.atomic_write`` into a temporary file beside its target
(``.NAME.PID.RANDOM.fnnet-tmp``); its SHA-256 is checked against ``SHA256`` before the temporary
is renamed into place, so a failed or mismatching download leaves nothing behind. A download
killed outright leaves its temporary, and the next download of the same file removes it.
Mirrors are tried in order; ``file://`` URLs work too.

Two bounds besides the per-read timeout ``TIMEOUT_S``: each file must arrive within
``DEADLINE_S`` seconds, the whole request included (connecting, the response's headers, the
body): a watchdog shuts the connection down at the deadline, so a server trickling its headers
or its body a byte at a time cannot keep a download going; and a mirror sending more bytes than
the largest accepted size of the file (``SIZES``) is cut off as soon as it does, so a wrong file
never fills the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path

from fnnet import io
from fnnet.datasets.sources import FILES, SHA256, SIZES, file_in

__all__ = ["ChecksumError", "download_first", "download_missing"]

TIMEOUT_S = 60  # the most one read may wait
DEADLINE_S = 600  # the most one file's download may take, from connecting to the last byte
_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A file did not match its published SHA-256 or size: a download (nothing was kept), or a
    file found on disk that is not the published one."""


def _log(message: str) -> None:
    print(f"fnnet: {message}", file=sys.stderr, flush=True)


def _check_length(response, url: str, dest: Path, max_bytes: int) -> None:
    """Refuse before reading a response whose announced length exceeds ``max_bytes``."""
    length = response.headers.get("Content-Length") if response.headers else None
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise ChecksumError(f"{dest.name}: {url} announces {int(length):,} bytes, more than the "
                            f"{max_bytes:,} bytes of the published file; nothing was downloaded")


class _Deadline:
    """A watchdog for one download: ``seconds`` after it starts, it shuts down every connection
    opened under it (``watch``), which ends any read blocked on them at once; ``expired`` says
    whether it has fired."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = False
        self.received = 0  # body bytes received so far, for the message
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()

    def left(self) -> float:
        return self.end - time.monotonic()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def error(self, url: str) -> TimeoutError:
        return TimeoutError(f"{url}: not finished within the {self.seconds:g} s deadline "
                            f"({self.received:,} bytes received); nothing was kept")


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # a socket already closed needs no shutdown
        sock.shutdown(socket.SHUT_RDWR)


def _watched(base, deadline: _Deadline):
    """A ``base`` (``HTTPConnection`` or ``HTTPSConnection``) subclass whose connections connect
    within what is left of ``deadline`` and are handed to its watchdog: the TCP socket as soon as
    it is connected (a TLS handshake included), the socket then used once connected."""

    class Connection(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            create = self._create_connection

            def create_connection(*args, **kwargs):
                sock = create(*args, **kwargs)
                deadline.watch(sock)
                return sock

            self._create_connection = create_connection

        def connect(self):
            timeout = self.timeout if isinstance(self.timeout, (int, float)) else TIMEOUT_S
            self.timeout = max(min(timeout, deadline.left()), 0.001)
            super().connect()
            deadline.watch(self.sock)
            self.sock.settimeout(TIMEOUT_S)  # each read's own bound; the watchdog ends the rest

    return Connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._connection = _watched(http.client.HTTPConnection, deadline)

    def http_open(self, req):
        return self.do_open(self._connection, req)


_HANDLERS = [_HTTPHandler]
if hasattr(urllib.request, "HTTPSHandler"):  # Python built with ssl

    class _HTTPSHandler(urllib.request.HTTPSHandler):
        def __init__(self, deadline: _Deadline):
            super().__init__()
            self._connection = _watched(http.client.HTTPSConnection, deadline)

        def https_open(self, req):
            return self.do_open(self._connection, req, context=self._context)

    _HANDLERS.append(_HTTPSHandler)


def _open(url: str, deadline: _Deadline):
    """``urlopen(url)``, every HTTP(S) connection it opens (redirects too) under ``deadline``."""
    opener = urllib.request.build_opener(*(handler(deadline) for handler in _HANDLERS))
    return opener.open(url, timeout=max(min(TIMEOUT_S, deadline.left()), 0.001))


def _stream(response, out, url: str, dest: Path, max_bytes: int, deadline: _Deadline,
            digest) -> int:
    """Copy ``response`` into ``out`` (and ``digest``), refusing more than ``max_bytes`` bytes
    or a copy still running past ``deadline``; return the bytes copied."""
    read = getattr(response, "read1", response.read)  # one read per call: the deadline is kept
    size = 0
    while chunk := read(_CHUNK):
        size += len(chunk)
        deadline.received = size
        if size > max_bytes:
            raise ChecksumError(f"{dest.name}: {url} sent more than the {max_bytes:,} bytes of "
                                f"the published file; cut off, nothing was kept")
        if deadline.expired or deadline.left() < 0:
            raise deadline.error(url)
        out.write(chunk)
        digest.update(chunk)
    return size


def _download_one(url: str, dest: Path, accepted: tuple[str, ...], max_bytes: int) -> None:
    """Stream ``url`` into ``dest`` atomically, keeping it only if its SHA-256 is ``accepted``.

    On any failure nothing is left at ``dest`` and the exception propagates; a checksum
    mismatch or a body over ``max_bytes`` raises ``ChecksumError``, a download (connection,
    headers and body) still running after ``DEADLINE_S`` seconds ``TimeoutError``.
    """
    _log(f"downloading {url}")
    digest = hashlib.sha256()
    size = 0

    def write(out) -> None:
        nonlocal size
        size = _stream(response, out, url, dest, max_bytes, deadline, digest)
        if deadline.expired:  # the watchdog ended the body early: not a checksum problem
            raise deadline.error(url)
        got = digest.hexdigest()
        if got not in accepted:
            raise ChecksumError(
                f"{dest.name}: checksum mismatch for {url}: SHA-256 {got} ({size} bytes), "
                f"expected {' or '.join(accepted)}; the download was discarded"
            )

    with _Deadline(DEADLINE_S) as deadline:
        try:
            with _open(url, deadline) as response:
                _check_length(response, url, dest, max_bytes)
                io.atomic_write(dest, write)
        except TimeoutError:
            raise
        except Exception as exc:  # whatever a shut-down connection raised
            if deadline.expired or deadline.left() <= 0:
                raise deadline.error(url) from exc
            raise
    _log(f"  saved {dest} ({size / 1e6:.1f} MB, SHA-256 ok)")


def download_first(urls: list[str], dest: Path, accepted: tuple[str, ...], max_bytes: int,
                   what: str) -> list[str]:
    """Try each of ``urls`` in order for one file, kept at ``dest`` only if its SHA-256 is one
    of ``accepted`` and it has at most ``max_bytes`` bytes; return ``[]`` on success, else one
    line per attempt. ``what`` names the file in the error (``"input.txt of tinyshakespeare"``).

    Raises ``ChecksumError`` (listing every attempt) when no URL succeeded and at least one of
    them served the file with a wrong checksum or size. Nothing but the verified file is ever
    left at ``dest`` or beside it.
    """
    attempts = []
    saw_mismatch = False
    for url in urls:
        try:
            _download_one(url, dest, accepted, max_bytes)
            return []
        except ChecksumError as exc:
            attempts.append(f"{url}: {exc}")
            saw_mismatch = True
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # URLError/HTTPError, timeouts, connection resets, cut-short bodies, bad URLs.
            attempts.append(f"{url}: {type(exc).__name__}: {exc}")
        _log(f"  failed: {attempts[-1]}")
    if saw_mismatch:
        raise ChecksumError(
            f"could not download {what} into {dest.parent}: "
            + "; ".join(attempts)
            + f". Nothing was kept for {dest.name}."
        )
    return attempts or [f"{dest.name}: no mirrors configured"]


def _download_file(name: str, filename: str, target: Path, mirrors: list[str]) -> list[str]:
    """Try each mirror for one file of dataset ``name`` (``download_first``)."""
    return download_first([base + filename for base in mirrors], target / filename,
                          SHA256[name][filename], SIZES[name][filename], f"{filename} of {name}")


def download_missing(name: str, target: Path, mirrors: list[str]) -> list[str]:
    """Download every file of dataset ``name`` missing from folder ``target``.

    Each file is tried on each mirror in order until one succeeds; the first file that fails
    on every mirror ends the run (files already verified stay in ``target``, an empty folder
    created here is removed). Returns ``[]`` on success, else one line per failed attempt.
    Raises ``ChecksumError`` when a file failed and some mirror served it with a wrong SHA-256.
    """
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    try:
        for filename in FILES:
            if file_in(target, filename) is None:
                failures = _download_file(name, filename, target, mirrors)
                if failures:
                    return failures  # the dataset cannot be complete: skip the other files
        return []
    finally:
        if created and not any(target.iterdir()):
            target.rmdir()
