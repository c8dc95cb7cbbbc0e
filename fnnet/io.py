"""Files written so that a reader never sees half of one: the one atomic write, and JSON data.

Every file fnnet writes (checkpoints, downloads, IDX files, metrics, figures, experiment results)
goes through ``atomic_write``:

1. a temporary file is made in the target's own folder (so the rename cannot cross file systems),
   named ``.NAME.PID.RANDOM.fnnet-tmp``;
2. the caller's ``write(f)`` fills it; it is flushed and ``fsync``-ed;
3. it is renamed onto the target with ``os.replace`` (atomic on POSIX and Windows), and the folder
   is ``fsync``-ed where the platform allows, so the rename itself is durable.

On any failure, ``KeyboardInterrupt`` included, the temporary is removed and a file already at the
target is left exactly as it was. A process killed outright (``kill -9``) cannot clean up after
itself; the next write to the same target removes the temporaries of that target whose process is
gone (``remove_stale_temporaries``).

Every file fnnet reads that a user names (checkpoints, JSON, IDX files) is opened with
``open_regular``: only a regular file is read, so a FIFO or a device in its place is refused at
once instead of blocking, or streaming, forever.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np

SUFFIX = ".fnnet-tmp"

__all__ = ["SUFFIX", "NotARegularFileError", "atomic_write", "jsonable", "open_regular",
           "read_json", "remove_stale_temporaries", "temporary_path", "write_bytes", "write_json",
           "write_text"]


def temporary_path(path) -> Path:
    """A fresh temporary name for ``path``, in its folder: ``.NAME.PID.RANDOM.fnnet-tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{SUFFIX}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # on Windows os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or no way to tell: leave its file alone
    return True


def remove_stale_temporaries(path) -> list[Path]:
    """Remove the temporaries ``atomic_write`` left for ``path`` in processes that no longer run.

    Only files named ``.NAME.PID.RANDOM.fnnet-tmp`` for this ``NAME`` are considered, and only
    those whose ``PID`` is not a running process: a write in progress elsewhere is never touched.
    PIDs are this machine's, so a folder written from several machines at once is not a place
    for it; on Windows, where probing a process is not safe, nothing is removed.
    Returns the paths removed.
    """
    path = Path(path)
    prefix = f".{path.name}."
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(SUFFIX)):
            continue
        parts = name[len(prefix):-len(SUFFIX)].split(".")
        if len(parts) != 2 or not parts[0].isdigit() or _pid_alive(int(parts[0])):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # not every platform or file system allows it
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write: Callable, *, binary: bool = True, mode: int = 0o644,
                 make_parents: bool = True) -> Path:
    """Write the file ``path`` through ``write(f)`` atomically; return ``path`` as a ``Path``.

    Args:
        path: the target file.
        write: called once with the open temporary file (binary unless ``binary=False``, then
            text in UTF-8).
        mode: the permission bits of the new file (a temporary file is private until renamed).
        make_parents: create missing parent folders first.

    Raises whatever ``write`` or the file system raises, after removing the temporary.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temporary_path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
        raise
    _fsync_folder(path.parent)
    return path


def write_bytes(path, data: bytes, **kwargs) -> Path:
    """``data`` to ``path``, atomically (see ``atomic_write``)."""
    return atomic_write(path, lambda f: f.write(data), **kwargs)


def write_text(path, text: str, **kwargs) -> Path:
    """``text`` to ``path`` in UTF-8, atomically (see ``atomic_write``)."""
    return atomic_write(path, lambda f: f.write(text), binary=False, **kwargs)


def jsonable(value, where: str = "value", nonfinite: str = "null", *, int_keys: bool = True):
    """``value`` as plain JSON data: numpy and JAX arrays and scalars become numbers and lists,
    paths strings, tuples lists; dict keys must be strings.

    Args:
        value: the data.
        where: how errors name the value (``"metadata['history']"``).
        nonfinite: ``"null"`` turns NaN and ±inf into ``None`` (strict JSON), ``"keep"`` keeps
            them (Python's ``json`` reads its ``NaN``/``Infinity`` back exactly).
        int_keys: integer dict keys become strings (as ``json.dumps`` does); ``False`` refuses
            them, for data that must come back with the keys it had.

    Raises:
        TypeError: naming ``where`` and the type, for anything else (an object, a PRNG key
            array, a string array), or naming ``where`` and the key, for a key that is no string.
    """
    if nonfinite not in ("null", "keep"):
        raise ValueError(f"jsonable: nonfinite must be 'null' or 'keep', got {nonfinite!r}")
    return _jsonable(value, where, nonfinite, int_keys)


def _jsonable(value, where: str, nonfinite: str, int_keys: bool):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return None if nonfinite == "null" and not math.isfinite(value) else float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]", nonfinite, int_keys) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if int_keys and isinstance(k, (int, np.integer)) and not isinstance(k, bool):
                k = str(int(k))
            if not isinstance(k, str):
                raise TypeError(f"{where}: dict key {k!r} is not a string")
            out[k] = _jsonable(v, f"{where}[{k!r}]", nonfinite, int_keys)
        return out
    if isinstance(value, (np.ndarray, np.generic)) or type(value).__module__.startswith("jax"):
        try:
            arr = np.asarray(value)
        except Exception:  # a typed PRNG key array, say
            arr = None
        if arr is not None and arr.dtype.kind in "biuf":
            return _jsonable(arr.tolist(), where, nonfinite, int_keys)
    raise TypeError(f"{where}: a value of type {type(value).__qualname__} is not JSON data")


def write_json(path, data, *, indent: int | None = 2, nonfinite: str = "null") -> Path:
    """``data`` (see ``jsonable``) as JSON to ``path``, atomically; return the path."""
    text = json.dumps(jsonable(data, "data", nonfinite), indent=indent,
                      allow_nan=nonfinite == "keep")
    return write_text(path, text + "\n")


class NotARegularFileError(ValueError):
    """A path to read names a FIFO, a socket or a device instead of a regular file."""


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def open_regular(path, what: str = "a regular file",
                 error: type[ValueError] = NotARegularFileError):
    """``path`` opened for reading in binary mode, refused unless it is a regular file.

    The file is opened without blocking (``O_NONBLOCK``: opening a FIFO that no one writes to
    returns at once) and checked with ``fstat`` on the open descriptor, so what is read is what
    was checked. A folder raises ``IsADirectoryError`` (as ``open`` does); a FIFO, socket or
    device raises ``error`` (a ``ValueError``) in one line naming the file, what it is and
    ``what`` was expected. Missing files and permissions raise ``open``'s ``OSError``.
    """
    flags = (os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
             | getattr(os, "O_NOCTTY", 0))
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)),
                        "neither a regular file nor a folder")
            raise error(f"{os.fspath(path)}: is {kind}, which is never read (it could block or "
                        f"never end); expected {what}")
        if getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_json(path, max_bytes: int = 64 << 20):
    """The JSON data in ``path``, refusing a file over ``max_bytes`` before reading it.

    Raises ``ValueError`` naming the file for one too large, not JSON, nested too deeply for
    Python's JSON reader, or not a regular file (a FIFO, say: see ``open_regular``).
    """
    path = Path(path)
    with open_regular(path, "a regular JSON file") as f:
        size = os.fstat(f.fileno()).st_size
        data = b"" if size > max_bytes else f.read(max_bytes + 1)  # +1: a file grown since
    size = max(size, len(data))
    if size > max_bytes:
        raise ValueError(f"{path}: {size:,} bytes of JSON is more than the {max_bytes:,} allowed")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not JSON ({e}); expected a UTF-8 JSON document") from None
    except RecursionError:
        raise ValueError(f"{path}: the JSON is nested too deeply to read") from None
