"""The IDX file format: ``read_idx`` and ``write_idx``.

The layout: two zero bytes, a dtype code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64), the number of dimensions, one big-endian uint32 per dimension, then
the data in C order, big-endian. A file may be gzipped; that is told by the gzip magic bytes
``1f 8b``, never by the file name.
"""

from __future__ import annotations

import gzip as gziplib
import math
import os
import sys
import zlib
from pathlib import Path

import numpy as np

from fnnet import io

__all__ = ["IDX_DTYPES", "IDXError", "read_idx", "read_idx_header", "write_idx"]


class IDXError(ValueError):
    """A file is not a well-formed IDX file (the message names the file and the problem)."""


# IDX dtype code -> numpy dtype (big-endian, as stored in the file).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
# numpy holds at most 64 dimensions; a header claiming more is refused.
MAX_DIMS = 64
# Deflate turns at most about 1032 bytes into one: a gzip file of M bytes never holds more than
# this many times M (plus a little), so a header promising more is refused before reading.
_MAX_DEFLATE_RATIO = 1100
_CHUNK = 1 << 20


def _describe_codes() -> str:
    return ", ".join(f"0x{code:02X} ({dt.name})" for code, dt in IDX_DTYPES.items())


def _not_gzip(path: Path, exc: Exception) -> IDXError:
    return IDXError(
        f"{path}: starts with the gzip magic bytes 1f 8b but does not decompress "
        f"({type(exc).__name__}: {exc}); expected a complete gzip file "
        "(re-download it, or replace it with an uncompressed IDX file)"
    )


def _read_exactly(stream, n: int) -> bytes:
    data = stream.read(n)
    return data if data is not None else b""


def _header(stream, where: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """``(dtype, shape, header length)`` read from the start of ``stream``; ``IDXError`` if the
    header is malformed or claims more dimensions than numpy holds."""
    magic = _read_exactly(stream, 4)
    if len(magic) < 4:
        raise IDXError(
            f"{where}: only {len(magic)} bytes; an IDX file starts with a 4-byte magic number "
            "00 00 <dtype code> <ndim>"
        )
    zero0, zero1, code, ndim = magic
    if zero0 != 0 or zero1 != 0 or code not in IDX_DTYPES:
        got = " ".join(f"{b:02x}" for b in magic)
        raise IDXError(
            f"{where}: not an IDX file: magic number is {got}; expected 00 00 <dtype code> "
            f"<ndim> with dtype code one of {_describe_codes()}"
        )
    if ndim > MAX_DIMS:
        raise IDXError(f"{where}: the header claims {ndim} dimensions; expected at most "
                       f"{MAX_DIMS} (numpy's limit)")
    header_len = 4 + 4 * ndim
    dims = _read_exactly(stream, 4 * ndim)
    if len(dims) < 4 * ndim:
        raise IDXError(
            f"{where}: truncated header: {ndim} dimensions need a {header_len}-byte header, "
            f"but the file has only {4 + len(dims)} bytes"
        )
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
    return IDX_DTYPES[code], shape, header_len


def _declared(dtype: np.dtype, shape, header_len: int, expected: int) -> str:
    return (f"the header declares shape {shape} of {dtype.name}, expected {expected} bytes of "
            f"data after the {header_len}-byte header")


def _data_size(where: str, dtype: np.dtype, shape: tuple[int, ...], header_len: int, size: int,
               compressed: bool) -> int:
    """The bytes of data the header declares, checked against the file's ``size`` before any
    is read: exactly the rest of a raw file; for gzip, no more than deflate packs into it."""
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    declared = _declared(dtype, shape, header_len, expected)
    if expected > sys.maxsize:
        raise IDXError(f"{where}: {declared}, more than any array can hold")
    if not compressed and size - header_len != expected:
        got = size - header_len
        problem = "truncated data" if got < expected else "trailing garbage"
        extra = f" ({got - expected} extra bytes)" if got > expected else ""
        raise IDXError(f"{where}: {problem}: {declared}, got {got}{extra}")
    if compressed and expected > _MAX_DEFLATE_RATIO * size:
        raise IDXError(f"{where}: truncated data: {declared}, but a gzip file of {size} bytes "
                       f"cannot hold that much (deflate packs at most about 1032 bytes into one)")
    return expected


def _read_data(stream, where: str, dtype: np.dtype, shape, header_len: int,
               expected: int) -> np.ndarray:
    """The ``expected`` data bytes of ``stream`` as a native-endian array of ``shape``, read
    into one buffer; ``IDXError`` for fewer bytes or for more (one extra byte is read, no more)."""
    out = np.empty(expected // dtype.itemsize, dtype.newbyteorder("="))
    buffer, got = memoryview(out).cast("B"), 0
    while got < expected:
        n = stream.readinto(buffer[got:got + _CHUNK])
        if not n:
            raise IDXError(f"{where}: truncated data: "
                           f"{_declared(dtype, shape, header_len, expected)}, got {got}")
        got += n
    if _read_exactly(stream, 1):
        raise IDXError(f"{where}: trailing garbage: "
                       f"{_declared(dtype, shape, header_len, expected)}, got more (the rest "
                       f"was not read)")
    if not dtype.isnative:
        out.byteswap(inplace=True)
    return out.reshape(shape)


def read_idx(path: str | os.PathLike, *, dtype=None, shape=None) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into a native-endian numpy array.

    Returns a writable array with the header's shape and the native byte order. The file is
    read as a stream, header first, into one buffer of the size the header declares: no more
    than that (plus one byte, to tell trailing garbage) is ever read or decompressed, and a
    header declaring more than the file can hold is refused before any data is read. With
    ``dtype`` and/or ``shape`` (what ``read_idx_header`` found, say), a header declaring other
    ones is refused before any data is read. Only a regular file is read: a FIFO is refused.

    Raises ``IDXError`` (a ``ValueError``) naming the file for: a gzip stream that does not
    decompress, a wrong magic number or unknown dtype code, more than ``MAX_DIMS`` dimensions,
    a header cut short, a header other than the ``dtype``/``shape`` expected, data shorter than
    the header declares, bytes left over after the data, or a path that is no regular file.
    """
    want = (None if dtype is None else np.dtype(dtype).newbyteorder("="),
            None if shape is None else tuple(int(d) for d in shape))
    return _open(Path(path), want)


def read_idx_header(path: str | os.PathLike) -> tuple[np.dtype, tuple[int, ...]]:
    """``(dtype, shape)`` the IDX file ``path`` declares (the dtype native-endian), read from
    its header alone: at most ``4 + 4 * MAX_DIMS`` bytes are read or decompressed. Errors as for
    ``read_idx``, except those about the data."""
    return _open(Path(path), None)


def _open(path: Path, want):
    """``_read_stream`` of the file at ``path`` (gzipped or not)."""
    with io.open_regular(path, "a regular IDX file", IDXError) as f:
        size = os.fstat(f.fileno()).st_size
        compressed = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        if not compressed:
            return _read_stream(f, f"{path}", size, compressed, want)
        try:
            with gziplib.GzipFile(fileobj=f, mode="rb") as stream:
                return _read_stream(stream, f"{path} (after gzip decompression)", size,
                                    compressed, want)
        except (OSError, EOFError, zlib.error) as exc:
            raise _not_gzip(path, exc) from exc


def _read_stream(stream, where: str, size: int, compressed: bool, want):
    """The array in ``stream``; only the header's ``(native dtype, shape)`` when ``want`` is
    None, else the data too, once the header is ``want``'s ``(dtype, shape)`` (None: any)."""
    dtype, shape, header_len = _header(stream, where)
    if want is None:
        return dtype.newbyteorder("="), shape
    for expected, got, what in ((want[0], dtype.newbyteorder("="), "dtype"),
                                (want[1], shape, "shape")):
        if expected is not None and expected != got:
            raise IDXError(f"{where}: the header declares {what} {got}, expected {expected}; "
                           f"refused before reading the data")
    expected = _data_size(where, dtype, shape, header_len, size, compressed)
    return _read_data(stream, where, dtype, shape, header_len, expected)


def _idx_code(dtype: np.dtype) -> int | None:
    for code, idx_dtype in IDX_DTYPES.items():
        if dtype.kind == idx_dtype.kind and dtype.itemsize == idx_dtype.itemsize:
            return code
    return None


def write_idx(path: str | os.PathLike, array: np.ndarray, gzip: bool = True) -> Path:
    """Write ``array`` as an IDX file at ``path`` (gzipped unless ``gzip=False``), atomically.

    Supported dtypes are exactly IDX's: uint8, int8, int16, int32, float32, float64 (any byte
    order; the file is always big-endian). At most 255 dimensions, each below 2**32. The file is
    written with ``fnnet.io.write_bytes``, so readers never see half of it. The gzip stream has a
    zero timestamp, so the bytes depend only on the array. The parent folder must exist.
    Returns ``path`` as a ``Path``.
    """
    path = Path(path)
    array = np.asarray(array)
    code = _idx_code(array.dtype)
    if code is None:
        raise ValueError(
            f"{path}: cannot write dtype {array.dtype} as IDX; expected one of {_describe_codes()}"
        )
    if array.ndim > 255 or any(d >= 2**32 for d in array.shape):
        raise ValueError(
            f"{path}: shape {array.shape} does not fit IDX (at most 255 dimensions, each < 2**32)"
        )
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if gzip:
        payload = gziplib.compress(payload, mtime=0)
    return io.write_bytes(path, payload, make_parents=False)
