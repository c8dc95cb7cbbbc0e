"""The IDX file format: ``read_idx`` and ``write_idx``.

The layout: two zero bytes, a dtype code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64), the number of dimensions, one big-endian uint32 per dimension, then
the data in C order, big-endian. A file may be gzipped; that is told by the gzip magic bytes
``1f 8b``, never by the file name.
"""

from __future__ import annotations

import gzip as gziplib
import os
import zlib
from pathlib import Path

import numpy as np

from fnnet import io

__all__ = ["IDX_DTYPES", "IDXError", "read_idx", "write_idx"]


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


def _describe_codes() -> str:
    return ", ".join(f"0x{code:02X} ({dt.name})" for code, dt in IDX_DTYPES.items())


def _decompressed(path: Path, raw: bytes) -> tuple[bytes, str]:
    """``(the IDX bytes, how errors name them)``: ``raw`` gunzipped when it starts ``1f 8b``."""
    if raw[:2] != _GZIP_MAGIC:
        return raw, f"{path}"
    try:
        return gziplib.decompress(raw), f"{path} (after gzip decompression)"
    except (OSError, EOFError, zlib.error) as exc:
        raise IDXError(
            f"{path}: starts with the gzip magic bytes 1f 8b but does not decompress "
            f"({type(exc).__name__}: {exc}); expected a complete gzip file "
            "(re-download it, or replace it with an uncompressed IDX file)"
        ) from exc


def _header(raw: bytes, where: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """``(dtype, shape, header length)`` of the IDX bytes ``raw``; ``IDXError`` if malformed."""
    if len(raw) < 4:
        raise IDXError(
            f"{where}: only {len(raw)} bytes; an IDX file starts with a 4-byte magic number "
            "00 00 <dtype code> <ndim>"
        )
    zero0, zero1, code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or code not in IDX_DTYPES:
        got = " ".join(f"{b:02x}" for b in raw[:4])
        raise IDXError(
            f"{where}: not an IDX file: magic number is {got}; expected 00 00 <dtype code> "
            f"<ndim> with dtype code one of {_describe_codes()}"
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise IDXError(
            f"{where}: truncated header: {ndim} dimensions need a {header_len}-byte header, "
            f"but the file has only {len(raw)} bytes"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    return IDX_DTYPES[code], shape, header_len


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into a native-endian numpy array.

    Returns a writable array with the header's shape and the native byte order.
    Raises ``IDXError`` (a ``ValueError``) naming the file for: a gzip stream that does not
    decompress, a wrong magic number or unknown dtype code, a header cut short, data shorter
    than the header declares, or bytes left over after the data.
    """
    path = Path(path)
    raw, where = _decompressed(path, path.read_bytes())
    dtype, shape, header_len = _header(raw, where)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header_len
    if got != expected:
        problem = "truncated data" if got < expected else "trailing garbage"
        extra = f" ({got - expected} extra bytes)" if got > expected else ""
        raise IDXError(
            f"{where}: {problem}: the header declares shape {shape} of {dtype.name}, "
            f"expected {expected} bytes of data after the {header_len}-byte header, got {got}"
            f"{extra}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header_len)
    return data.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


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
