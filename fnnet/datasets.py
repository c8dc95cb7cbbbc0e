"""MNIST and Fashion-MNIST: IDX files, where to find them, how to download them, and helpers.

Everything here is plain numpy plus the standard library; nothing imports jax.

Reading and writing
    ``read_idx(path)`` reads any IDX file, gzipped or raw (decided by the gzip magic bytes
    ``1f 8b``, never by the file name). ``write_idx(path, array)`` writes one atomically.

Loading
    ``load_mnist()`` and ``load_fashion_mnist()`` return ``(x_train, y_train), (x_test, y_test)``
    with uint8 images of shape ``(N, 28, 28)`` and int64 labels in ``0..9``. Both datasets use the
    same four file names (``FILES``). The first *location* that holds all four files is used, so
    files from two different places are never mixed. Locations, in this order:

    1. ``data_dir`` (argument): the folder holding that dataset's four files;
    2. ``$FNNET_DATA_DIR/<dataset>/``: ``FNNET_DATA_DIR`` is a *root* with one folder per dataset,
       ``mnist/`` and ``fashion-mnist/``; the two are never mixed;
    3. ``<cache>/<dataset>/`` where ``<cache>`` is ``$FNNET_CACHE_DIR`` if set, else
       ``$XDG_CACHE_HOME/fnnet``, else ``~/.cache/fnnet``.

    In each location a file may also be present un-gzipped, without its ``.gz`` suffix
    (``train-images-idx3-ubyte``); the gzipped name is preferred when both exist.

Downloading
    When no location is complete and ``download=True``, the missing files are downloaded into
    ``<cache>/<dataset>/``, trying the mirrors in order (``MIRRORS``, overridden by the
    ``FNNET_MNIST_MIRROR`` / ``FNNET_FASHION_MNIST_MIRROR`` environment variables, overridden
    by the ``mirrors=`` argument; ``file://`` URLs work too). Each file goes to a temporary file
    in the cache folder, its SHA-256 is checked against ``SHA256``, and only then is it renamed
    into place with ``os.replace``; a failed or mismatching download leaves nothing behind.

Helpers
    ``flatten``, ``scale``, ``one_hot`` and ``prepare`` turn the arrays into model inputs;
    ``synthetic_mnist`` makes small learnable stand-in data and ``write_mnist_files`` writes it
    (or any arrays) as the four IDX files, for tests and smoke runs without the real data.
"""

from __future__ import annotations

import gzip as gziplib
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "DATASETS",
    "FILES",
    "MIRRORS",
    "MIRROR_ENV",
    "SHA256",
    "ChecksumError",
    "DatasetError",
    "DatasetNotFoundError",
    "IDXError",
    "cache_dir",
    "flatten",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "one_hot",
    "prepare",
    "read_idx",
    "scale",
    "search_dirs",
    "synthetic_mnist",
    "write_idx",
    "write_mnist_files",
]

# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


class IDXError(ValueError):
    """A file is not a well-formed IDX file (the message names the file and the problem)."""


class DatasetError(ValueError):
    """IDX files that are well formed but are not a valid image/label dataset."""


class ChecksumError(ValueError):
    """A downloaded file did not match its published SHA-256 (nothing was kept)."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset files are in none of the searched locations and could not be downloaded."""


# ----------------------------------------------------------------------------------------------
# IDX format
# ----------------------------------------------------------------------------------------------

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


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into a native-endian numpy array.

    The file is treated as gzip when it starts with the gzip magic bytes ``1f 8b``, whatever its
    name. The IDX layout is: two zero bytes, a dtype code (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, one big-endian uint32 per
    dimension, then the data in C order, big-endian.

    Returns a writable array with the header's shape and the native byte order.
    Raises ``IDXError`` (a ``ValueError``) naming the file for: a gzip stream that does not
    decompress, a wrong magic number or unknown dtype code, a header cut short, data shorter
    than the header declares, or bytes left over after the data.
    """
    path = Path(path)
    raw = path.read_bytes()
    where = f"{path}"
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gziplib.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise IDXError(
                f"{path}: starts with the gzip magic bytes 1f 8b but does not decompress "
                f"({type(exc).__name__}: {exc}); expected a complete gzip file "
                "(re-download it, or replace it with an uncompressed IDX file)"
            ) from exc
        where = f"{path} (after gzip decompression)"

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
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header_len
    if got < expected:
        raise IDXError(
            f"{where}: truncated data: the header declares shape {shape} of {dtype.name}, "
            f"expected {expected} bytes of data after the {header_len}-byte header, got {got}"
        )
    if got > expected:
        raise IDXError(
            f"{where}: trailing garbage: the header declares shape {shape} of {dtype.name}, "
            f"expected {expected} bytes of data after the {header_len}-byte header, got {got} "
            f"({got - expected} extra bytes)"
        )
    data = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header_len)
    return data.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def _idx_code(dtype: np.dtype) -> int | None:
    for code, idx_dtype in IDX_DTYPES.items():
        if dtype.kind == idx_dtype.kind and dtype.itemsize == idx_dtype.itemsize:
            return code
    return None


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, then rename it onto ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


def write_idx(path: str | os.PathLike, array: np.ndarray, gzip: bool = True) -> Path:
    """Write ``array`` as an IDX file at ``path`` (gzipped unless ``gzip=False``), atomically.

    Supported dtypes are exactly IDX's: uint8, int8, int16, int32, float32, float64 (any byte
    order; the file is always big-endian). At most 255 dimensions, each below 2**32. The data
    goes to a temporary file in the same folder that is then renamed onto ``path``, so readers
    never see a half-written file. The gzip stream has a zero timestamp, so the bytes depend
    only on the array. The parent folder must exist. Returns ``path`` as a ``Path``.
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
    _atomic_write_bytes(path, payload)
    return path


# ----------------------------------------------------------------------------------------------
# Dataset description: files, checksums, mirrors
# ----------------------------------------------------------------------------------------------

DATASETS = ("mnist", "fashion-mnist")

# The four files, in the order (train images, train labels, test images, test labels).
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# Accepted SHA-256 digests of each downloaded .gz file (any one of the tuple matches).
#
# MNIST: the published digests, as listed in tensorflow-datasets' url_checksums/mnist.txt for
# the cvdf-datasets mirror (the same files as LeCun's originals, also served by ossci-datasets).
# The extra train-images digest (0b3670...) is of the recompressed copy kept in the shared data
# folder of this project: its gzip stream differs but it decompresses to exactly the standard
# IDX bytes (SHA-256 of the uncompressed file ba891046...25776db), so a file:// mirror pointing
# there is accepted too.
#
# Fashion-MNIST: tensorflow-datasets' url_checksums/fashion_mnist.txt for
# http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ (the files whose MD5s are listed in
# zalandoresearch/fashion-mnist's README; the same files are in that repository's data/fashion/).
SHA256: dict[str, dict[str, tuple[str, ...]]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
        ),
        "train-labels-idx1-ubyte.gz": (
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        ),
        "t10k-images-idx3-ubyte.gz": (
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        ),
        "train-labels-idx1-ubyte.gz": (
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        ),
        "t10k-images-idx3-ubyte.gz": (
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        ),
    },
}

# Base URLs tried in order; a file's URL is the base URL followed by its name.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}

# Environment variables that replace MIRRORS[dataset]: one or more base URLs separated by
# commas or whitespace (http://, https:// or file://).
MIRROR_ENV = {"mnist": "FNNET_MNIST_MIRROR", "fashion-mnist": "FNNET_FASHION_MNIST_MIRROR"}

_DOWNLOAD_TIMEOUT_S = 60
_CHUNK = 1 << 20


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")


def cache_dir() -> Path:
    """The per-user cache root: ``$FNNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/fnnet``, else
    ``~/.cache/fnnet``. Each dataset lives in a sub-folder named after it (``mnist/``)."""
    if os.environ.get("FNNET_CACHE_DIR"):
        return Path(os.environ["FNNET_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "fnnet"
    return Path.home() / ".cache" / "fnnet"


def search_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The folders searched for dataset ``name``, in order, as ``(label, folder)`` pairs.

    ``data_dir`` (when given), then ``$FNNET_DATA_DIR/<name>`` (when the variable is set),
    then ``<cache_dir()>/<name>``. The label says where each folder came from.
    """
    _check_name(name)
    dirs = []
    if data_dir is not None:
        dirs.append(("data_dir argument", Path(data_dir).expanduser()))
    if os.environ.get("FNNET_DATA_DIR"):
        root = Path(os.environ["FNNET_DATA_DIR"]).expanduser()
        dirs.append((f"$FNNET_DATA_DIR/{name}", root / name))
    dirs.append((f"cache ({_describe_cache_source()})", cache_dir() / name))
    return dirs


def _describe_cache_source() -> str:
    if os.environ.get("FNNET_CACHE_DIR"):
        return "$FNNET_CACHE_DIR"
    if os.environ.get("XDG_CACHE_HOME"):
        return "$XDG_CACHE_HOME/fnnet"
    return "~/.cache/fnnet"


def _file_in(folder: Path, filename: str) -> Path | None:
    """``folder/filename``, or the same name without ``.gz``, whichever exists first."""
    for candidate in (folder / filename, folder / filename.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _mirrors_for(name: str, mirrors: Sequence[str] | str | None) -> list[str]:
    if mirrors is None:
        env = os.environ.get(MIRROR_ENV[name], "").strip()
        mirrors = env if env else MIRRORS[name]
    if isinstance(mirrors, str):
        mirrors = mirrors.replace(",", " ").split()
    return [m if m.endswith("/") else m + "/" for m in mirrors]


# ----------------------------------------------------------------------------------------------
# Downloading
# ----------------------------------------------------------------------------------------------


def _remove_quietly(path: str | os.PathLike) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _download_one(url: str, dest: Path, accepted: tuple[str, ...]) -> None:
    """Fetch ``url`` into a temp file beside ``dest``, check its SHA-256, rename onto ``dest``.

    On any failure the temporary file is removed and the exception propagates; a checksum
    mismatch raises ``ChecksumError``.
    """
    print(f"fnnet: downloading {url}", file=sys.stderr, flush=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        size = 0
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response,
        ):
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        got = digest.hexdigest()
        if got not in accepted:
            raise ChecksumError(
                f"{dest.name}: checksum mismatch for {url}: SHA-256 {got} ({size} bytes), "
                f"expected {' or '.join(accepted)}; the download was discarded"
            )
        os.replace(tmp, dest)
    except BaseException:
        _remove_quietly(tmp)
        raise
    print(f"fnnet:   saved {dest} ({size / 1e6:.1f} MB, SHA-256 ok)", file=sys.stderr, flush=True)


def _download_missing(name: str, target: Path, mirrors: list[str]) -> list[str]:
    """Download every file of ``name`` missing from ``target``; return failure descriptions.

    Each file is tried on each mirror in order until one succeeds; the first file that fails
    on every mirror ends the run (files already verified stay in ``target``, an empty folder
    created here is removed). Returns ``[]`` on success, else one line per failed attempt;
    ``ChecksumError`` propagates from ``_download_file``.
    """
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    try:
        for filename in FILES:
            if _file_in(target, filename) is None:
                failures = _download_file(name, filename, target, mirrors)
                if failures:
                    return failures  # the dataset cannot be complete: skip the other files
        return []
    finally:
        if created and not any(target.iterdir()):
            target.rmdir()


def _download_file(name: str, filename: str, target: Path, mirrors: list[str]) -> list[str]:
    """Try each mirror for one file; return ``[]`` on success, else one line per attempt.

    Raises ``ChecksumError`` (listing every attempt) when no mirror succeeded and at least one
    of them served the file with a wrong checksum.
    """
    attempts = []
    saw_mismatch = False
    for base in mirrors:
        url = base + filename
        try:
            _download_one(url, target / filename, SHA256[name][filename])
            return []
        except ChecksumError as exc:
            attempts.append(f"{url}: {exc}")
            saw_mismatch = True
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # URLError/HTTPError, timeouts, connection resets, cut-short bodies, bad URLs.
            attempts.append(f"{url}: {type(exc).__name__}: {exc}")
        print(f"fnnet:   failed: {attempts[-1]}", file=sys.stderr, flush=True)
    if saw_mismatch:
        raise ChecksumError(
            f"could not download {filename} of {name} into {target}: "
            + "; ".join(attempts)
            + f". Nothing was kept for {filename}."
        )
    return attempts or [f"{filename}: no mirrors configured"]


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def _not_found_message(
    name: str,
    data_dir: str | os.PathLike | None,
    download: bool,
    mirrors: list[str],
    failures: list[str],
) -> str:
    lines = [f"{name} not found: no searched location holds all four files {', '.join(FILES)}."]
    lines.append("Searched, in order:")
    searched: list[tuple[str, Path | str]] = list(search_dirs(name, data_dir))
    if data_dir is None:
        searched.insert(0, ("data_dir argument", "not given"))
    if not os.environ.get("FNNET_DATA_DIR"):
        searched.insert(1, ("$FNNET_DATA_DIR", "not set"))
    for label, folder in searched:
        if isinstance(folder, str):
            lines.append(f"  - {label}: {folder}")
        elif not folder.is_dir():
            lines.append(f"  - {label}: {folder} (folder does not exist)")
        else:
            missing = ", ".join(f for f in FILES if _file_in(folder, f) is None)
            lines.append(f"  - {label}: {folder} (missing {missing})")
    root = os.environ.get("FNNET_DATA_DIR")
    if root and any(_file_in(Path(root).expanduser(), f) for f in FILES):
        lines.append(
            f"  note: $FNNET_DATA_DIR={root} itself holds dataset files, but FNNET_DATA_DIR is a "
            f"root with one folder per dataset; move them into {Path(root) / name}/"
        )
    if not download:
        lines.append("Downloading is disabled (download=False).")
    elif failures:
        lines.append(f"Downloading into {cache_dir() / name} failed from every mirror:")
        lines.extend(f"  - {f}" for f in failures)
    lines.append("To use files you already have:")
    lines.append(
        f'  - pass data_dir="/folder/with/the/four/files" to load_{name.replace("-", "_")}(), or'
    )
    lines.append(
        f"  - set FNNET_DATA_DIR=/some/root with the files in /some/root/{name}/ "
        "(FNNET_DATA_DIR is a root holding one folder per dataset: mnist/, fashion-mnist/), or"
    )
    lines.append(f"  - copy them into {cache_dir() / name}/")
    lines.append(
        f"or point the downloader at another mirror with ${MIRROR_ENV[name]}=<base URL> "
        f"(tried: {', '.join(mirrors) or 'none'})."
    )
    return "\n".join(lines)


def _find_complete(name: str, data_dir: str | os.PathLike | None) -> list[Path] | None:
    for _label, folder in search_dirs(name, data_dir):
        paths = [_file_in(folder, f) for f in FILES]
        if all(p is not None for p in paths):
            return paths  # type: ignore[return-value]
    return None


def _validate_split(images: np.ndarray, labels: np.ndarray, image_path: Path, label_path: Path):
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetError(
            f"{image_path}: expected uint8 images of shape (N, 28, 28), got {images.dtype} "
            f"array of shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DatasetError(
            f"{label_path}: expected a 1-D uint8 label array, got {labels.dtype} array of shape "
            f"{labels.shape}"
        )
    if len(images) != len(labels):
        raise DatasetError(
            f"count mismatch: {image_path} has {len(images)} images but {label_path} has "
            f"{len(labels)} labels; expected the same number"
        )
    if labels.size and labels.max() > 9:
        bad = np.flatnonzero(labels > 9)
        raise DatasetError(
            f"{label_path}: labels must be in 0..9, found {labels[bad[0]]} at index {bad[0]} "
            f"({len(bad)} labels out of range)"
        )


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    *,
    mirrors: Sequence[str] | str | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load ``"mnist"`` or ``"fashion-mnist"``; see ``load_mnist`` for the details."""
    _check_name(name)
    mirror_list = _mirrors_for(name, mirrors)
    paths = _find_complete(name, data_dir)
    failures: list[str] = []
    if paths is None and download:
        failures = _download_missing(name, cache_dir() / name, mirror_list)
        paths = _find_complete(name, data_dir)
    if paths is None:
        raise DatasetNotFoundError(
            _not_found_message(name, data_dir, download, mirror_list, failures)
        )

    arrays = [read_idx(p) for p in paths]
    splits = []
    for (images, labels), (image_path, label_path) in zip(
        (arrays[0:2], arrays[2:4]), (paths[0:2], paths[2:4]), strict=True
    ):
        _validate_split(images, labels, image_path, label_path)
        splits.append((images, labels.astype(np.int64)))
    return splits[0], splits[1]


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    *,
    mirrors: Sequence[str] | str | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load MNIST as ``(x_train, y_train), (x_test, y_test)``.

    Images are uint8 arrays of shape ``(N, 28, 28)`` (60000 and 10000 for the real data);
    labels are **int64** arrays of shape ``(N,)`` with values in ``0..9``.

    Files are taken from the first of these folders that holds all four (never mixed across
    folders): ``data_dir``; ``$FNNET_DATA_DIR/mnist``; ``<cache>/mnist`` with ``<cache>`` from
    ``cache_dir()``. If none does and ``download`` is true, the missing files are downloaded into
    ``<cache>/mnist`` from ``mirrors`` (default: ``$FNNET_MNIST_MIRROR`` if set, else
    ``MIRRORS["mnist"]``), each checked against ``SHA256["mnist"]`` before it is kept.

    Raises ``DatasetNotFoundError`` (a ``FileNotFoundError``) listing every folder searched and
    how to point fnnet at local files; ``ChecksumError`` when a mirror served a file with the
    wrong SHA-256; ``IDXError`` / ``DatasetError`` (``ValueError``\\ s) naming the bad file when a
    file is malformed, images are not ``(N, 28, 28)`` uint8, counts differ or a label is > 9.
    """
    return load_dataset("mnist", data_dir, download, mirrors=mirrors)


def load_fashion_mnist(
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    *,
    mirrors: Sequence[str] | str | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load Fashion-MNIST as ``(x_train, y_train), (x_test, y_test)``.

    Exactly like ``load_mnist`` (uint8 images ``(N, 28, 28)``, **int64** labels in ``0..9``),
    with the folder ``fashion-mnist`` instead of ``mnist`` under ``$FNNET_DATA_DIR`` and the
    cache, ``$FNNET_FASHION_MNIST_MIRROR`` / ``MIRRORS["fashion-mnist"]`` as mirrors and
    ``SHA256["fashion-mnist"]`` as checksums. MNIST's files are never used for Fashion-MNIST.
    """
    return load_dataset("fashion-mnist", data_dir, download, mirrors=mirrors)


# ----------------------------------------------------------------------------------------------
# Array helpers
# ----------------------------------------------------------------------------------------------


def flatten(x: np.ndarray) -> np.ndarray:
    """Reshape a batch ``(N, ...)`` to ``(N, prod(...))``: ``(N, 28, 28)`` becomes ``(N, 784)``.

    Returns a view when possible; a 2-D input comes back unchanged in shape.
    """
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"flatten expects a batch of shape (N, ...), got a scalar {x!r}")
    return x.reshape(x.shape[0], -1)


def scale(x: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Map integer pixel values ``0..255`` to floats in ``[0, 1]`` (divide by 255), any shape.

    Floating input is refused (it was probably scaled already), as are values outside 0..255.
    The result is 64-byte aligned (``aligned_empty``), so ``fnnet.fit`` uses it on the CPU without
    copying it.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"scale expects integer pixel values 0..255, got dtype {x.dtype}")
    if x.size and (x.min() < 0 or x.max() > 255):
        raise ValueError(f"scale expects pixel values in 0..255, got range {x.min()}..{x.max()}")
    out = aligned_empty(x.shape, dtype)
    np.divide(x, np.asarray(255, dtype=dtype), out=out, dtype=dtype)
    return out


ALIGNMENT = 64


def aligned_empty(shape, dtype=np.float32, alignment=ALIGNMENT) -> np.ndarray:
    """An uninitialised numpy array whose data (if any) start on an ``alignment``-byte boundary.

    numpy aligns only to 16 bytes; XLA's CPU client takes a 64-byte-aligned host array as the
    device array itself (``jax.device_put`` without a copy), so the data is held once.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes == 0:  # numpy gives an empty slice the pointer of its base: nothing to align
        return np.empty(shape, dtype)
    raw = np.empty(nbytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def one_hot(labels: np.ndarray, num_classes: int = 10, dtype=np.float32) -> np.ndarray:
    """One-hot encode integer ``labels`` of shape ``(N,)`` as ``(N, num_classes)`` of ``dtype``.

    Raises ``ValueError`` if a label is outside ``0..num_classes-1``.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"one_hot expects integer labels, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"one_hot: labels must be in 0..{num_classes - 1}, "
            f"got range {labels.min()}..{labels.max()}"
        )
    return np.eye(num_classes, dtype=dtype)[labels]


def prepare(x: np.ndarray, y: np.ndarray, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Model-ready arrays: ``(scale(flatten(x), dtype), y as int32)``.

    ``x`` uint8 ``(N, 28, 28)`` becomes ``(N, 784)`` floats in ``[0, 1]``; labels stay integer
    class indices (int32, JAX's default integer), not one-hot — use ``one_hot`` for that.
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"prepare: {len(x)} images but {len(y)} labels")
    return scale(flatten(x), dtype), y.astype(np.int32)


# ----------------------------------------------------------------------------------------------
# Synthetic data
# ----------------------------------------------------------------------------------------------


def _synthetic_split(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.permutation(np.arange(n) % 10).astype(np.int64)
    # Class c is a Gaussian blob centred on a circle of radius 8 around the image centre at
    # angle 2*pi*c/10, with class-dependent width; each example jitters the centre, width and
    # brightness and adds pixel noise.
    angle = 2 * np.pi * labels / 10
    cy = 13.5 + 8 * np.sin(angle) + rng.normal(0, 0.7, n)
    cx = 13.5 + 8 * np.cos(angle) + rng.normal(0, 0.7, n)
    sigma = (2.0 + 0.15 * labels) * rng.uniform(0.9, 1.1, n)
    peak = rng.uniform(180, 255, n)
    grid = np.arange(28, dtype=np.float64)
    dy2 = (grid[None, :] - cy[:, None]) ** 2
    dx2 = (grid[None, :] - cx[:, None]) ** 2
    blobs = np.exp(-(dy2[:, :, None] + dx2[:, None, :]) / (2 * sigma[:, None, None] ** 2))
    images = peak[:, None, None] * blobs + rng.normal(0, 12, (n, 28, 28))
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels


def synthetic_mnist(
    n_train: int, n_test: int, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Small MNIST-shaped stand-in data: ``(x_train, y_train), (x_test, y_test)``.

    Same structure and dtypes as ``load_mnist`` (uint8 ``(N, 28, 28)`` images, int64 labels in
    ``0..9``, each class equally often up to rounding). Each class is a noisy bright blob at its
    own place in the image, so even a linear model separates the classes well. The result
    depends only on the arguments. Write it to disk with ``write_mnist_files``.
    """
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train and n_test must be >= 0, got {n_train}, {n_test}")
    rng = np.random.default_rng(seed)
    return _synthetic_split(rng, n_train), _synthetic_split(rng, n_test)


def write_mnist_files(
    directory: str | os.PathLike,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    gzip: bool = True,
) -> Path:
    """Write ``train`` and ``test`` (``(images, labels)`` pairs) as the four files of ``FILES``.

    Images are stored as uint8 ``(N, 28, 28)``, labels as uint8 ``(N,)`` (values must fit), so
    the folder can be passed as ``data_dir`` to ``load_mnist`` / ``load_fashion_mnist`` or used
    as ``$FNNET_DATA_DIR/<dataset>``. Creates ``directory`` if needed; returns it as a ``Path``.
    Gzipped files keep the ``.gz`` names; with ``gzip=False`` the names drop the suffix.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = (train[0], train[1], test[0], test[1])
    for filename, array, kind in zip(FILES, arrays, ("images", "labels") * 2, strict=True):
        array = np.asarray(array)
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"{filename}: {kind} must fit uint8 (0..255)")
        target = directory / (filename if gzip else filename.removesuffix(".gz"))
        write_idx(target, array.astype(np.uint8), gzip=gzip)
    return directory
