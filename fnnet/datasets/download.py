"""Downloading a dataset's missing files into the cache, each checked against its SHA-256.

Each file is streamed through ``fnnet.io.atomic_write`` into a temporary file beside its target
(``.NAME.PID.RANDOM.fnnet-tmp``); its SHA-256 is checked against ``SHA256`` before the temporary
is renamed into place, so a failed or mismatching download leaves nothing behind. A download
killed outright leaves its temporary, and the next download of the same file removes it.
Mirrors are tried in order; ``file://`` URLs work too.

Two bounds besides the per-read timeout ``TIMEOUT_S``: each file must arrive within
``DEADLINE_S`` seconds (checked after every read, so it is overshot by at most one read's
timeout), and a mirror sending more bytes than the largest accepted size of the file
(``SIZES``) is cut off as soon as it does, so a wrong file never fills the folder.
"""

from __future__ import annotations

import hashlib
import http.client
import sys
import time
import urllib.request
from pathlib import Path

from fnnet import io
from fnnet.datasets.sources import FILES, SHA256, SIZES, file_in

__all__ = ["ChecksumError", "download_first", "download_missing"]

TIMEOUT_S = 60  # the most one read may wait
DEADLINE_S = 600  # the most one file's download may take
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


def _stream(response, out, url: str, dest: Path, max_bytes: int, deadline: float, digest) -> int:
    """Copy ``response`` into ``out`` (and ``digest``), refusing more than ``max_bytes`` bytes
    or a copy still running at ``deadline`` (``time.monotonic``); return the bytes copied."""
    read = getattr(response, "read1", response.read)  # one read per call: the deadline is kept
    size = 0
    while chunk := read(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise ChecksumError(f"{dest.name}: {url} sent more than the {max_bytes:,} bytes of "
                                f"the published file; cut off, nothing was kept")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}: not finished within the {DEADLINE_S:g} s deadline "
                               f"({size:,} bytes received); nothing was kept")
        out.write(chunk)
        digest.update(chunk)
    return size


def _download_one(url: str, dest: Path, accepted: tuple[str, ...], max_bytes: int) -> None:
    """Stream ``url`` into ``dest`` atomically, keeping it only if its SHA-256 is ``accepted``.

    On any failure nothing is left at ``dest`` and the exception propagates; a checksum
    mismatch or a body over ``max_bytes`` raises ``ChecksumError``, a download still running
    after ``DEADLINE_S`` seconds ``TimeoutError``.
    """
    _log(f"downloading {url}")
    deadline = time.monotonic() + DEADLINE_S
    digest = hashlib.sha256()
    size = 0

    def write(out) -> None:
        nonlocal size
        size = _stream(response, out, url, dest, max_bytes, deadline, digest)
        got = digest.hexdigest()
        if got not in accepted:
            raise ChecksumError(
                f"{dest.name}: checksum mismatch for {url}: SHA-256 {got} ({size} bytes), "
                f"expected {' or '.join(accepted)}; the download was discarded"
            )

    with urllib.request.urlopen(url, timeout=min(TIMEOUT_S, DEADLINE_S)) as response:
        _check_length(response, url, dest, max_bytes)
        io.atomic_write(dest, write)
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
