"""Checkpoints: a pytree of arrays saved to one ``.npz`` file and loaded back, bit for bit.

::

    path = save("runs/mlp/step_1000", (params, opt_state), step=1000, lr=0.1)   # -> ...npz
    (params, opt_state), meta = load(path, like=(params0, opt_state0))

What a tree may hold: tuples, lists, dicts with ``str`` keys, ``None``, NamedTuples whose class is
registered (``DenseParams`` is; add others with :func:`register_namedtuple`), Python ``int``,
``float``, ``bool`` and ``str``, numpy and jax arrays of any numeric dtype (``bfloat16`` and the
other ``ml_dtypes`` included), and JAX PRNG keys of both kinds: legacy ``uint32`` keys are plain
arrays; typed keys from ``jax.random.key`` are stored as their ``key_data`` plus the impl name.

The file is an ordinary ``.npz``: entry ``leaf_<i>`` holds the i-th array, and entry
``__manifest__`` holds a UTF-8 JSON document (as a 1-D ``uint8`` array, never pickled)::

    {"format": "fnnet-checkpoint", "format_version": 1, "fnnet_version": "<fnnet.__version__>",
     "metadata": {...}, "tree": NODE}

where NODE describes the tree (``fnnet.checkpoint_tree`` lists the kinds of node).

Safety: :func:`load` never unpickles and builds NamedTuples only from the registry, never from a
name found in the file, so loading a checkpoint never executes code. Only a regular file is read
(a FIFO in its place is refused, not waited on). Nothing is decompressed before its size is known
to be the one expected, and every array is checked before any is read: the zip directory must
name each entry once; the manifest (at most ``MAX_MANIFEST_BYTES``, its tree at most
``fnnet.checkpoint_tree.MAX_DEPTH`` levels deep) must name each stored array once and agree with
``like=``; each array's zip entry and ``.npy`` header (shape, dtype, size) must agree with the
manifest, a deflated entry may inflate at most ``MAX_RATIO`` to 1, and all arrays together take
at most ``MAX_BYTES`` without ``like=`` (exactly what ``like=`` describes with it).

Every array comes back as a jax array (``jnp.asarray``). A leaf JAX cannot hold in its saved
dtype (``float64`` or ``int64`` while ``jax_enable_x64`` is off) is an error rather than a silent
downcast. Python scalars come back as Python scalars of the same type; metadata comes back as
plain JSON values (tuples become lists, numpy values numbers and lists, paths strings; NaN and
infinities are kept).
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from fnnet import io
from fnnet._version import __version__
from fnnet.checkpoint_tree import (
    MAX_DEPTH,
    ManifestError,
    check_like,
    from_manifest,
    register_namedtuple,
    to_manifest,
)

__all__ = ["CheckpointError", "FNNET_VERSION", "FORMAT_VERSION", "MANIFEST", "MAX_BYTES",
           "MAX_MANIFEST_BYTES", "MAX_RATIO", "RATIO_FREE_BYTES", "load", "metadata",
           "register_namedtuple", "save"]

FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 64 << 20
# The most bytes the arrays of one checkpoint may take once read by ``load`` without ``like=``
# (with it, they take exactly what the template describes); ``load(max_bytes=)`` sets another.
MAX_BYTES = 2 << 30
# A deflated entry inflating to more than RATIO_FREE_BYTES may inflate to at most MAX_RATIO times
# the bytes it is stored in. fnnet stores its arrays uncompressed; deflate packs real weights
# far less tightly, but zeros some 1,000 to 1 (a few kB of file that would become gigabytes).
MAX_RATIO = 100
RATIO_FREE_BYTES = 1 << 20
FNNET_VERSION = __version__
MANIFEST = "__manifest__"
_FORMAT = "fnnet-checkpoint"


class CheckpointError(ValueError):
    """A checkpoint file is corrupted, truncated, of a newer format, or otherwise unreadable."""


def _npz_path(path) -> Path:
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def save(path, tree, /, **metadata) -> Path:
    """Write ``tree`` and JSON-serialisable ``metadata`` to ``path`` atomically; return the path.

    ``.npz`` is appended to ``path`` unless it already ends with it. Parent directories are
    created. The file is written with ``fnnet.io.atomic_write``: on any error a checkpoint
    already at ``path`` is left as it was and no temporary file stays behind.

    Raises ``TypeError`` naming the place in ``tree`` (``['x'][0]``) or the metadata key
    (``checkpoint metadata 'cfg'['opt'][1]``) of anything that cannot be saved.
    """
    path = _npz_path(path)
    leaves: list[np.ndarray] = []
    manifest = {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        "fnnet_version": FNNET_VERSION,
        "metadata": {k: io.jsonable(v, f"checkpoint metadata {k!r}", nonfinite="keep",
                                    int_keys=False) for k, v in metadata.items()},
        "tree": to_manifest(tree, leaves),
    }
    text = json.dumps(manifest, separators=(",", ":"))
    entries = {f"leaf_{i}": leaf for i, leaf in enumerate(leaves)}
    entries[MANIFEST] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    # An open file object, so np.savez appends no ".npz" of its own.
    return io.atomic_write(path, lambda f: np.savez(f, allow_pickle=False, **entries))


def _unreadable(path: Path, what: str, e: Exception) -> CheckpointError:
    return CheckpointError(f"{path}: {what} is corrupted or truncated ({type(e).__name__}: {e})")


class _Archive:
    """An open checkpoint file: only a regular file (``fnnet.io.open_regular``), a zip archive
    whose directory names every entry once; entries are checked before they are inflated."""

    def __init__(self, path: Path):
        self.path = path
        self.file = io.open_regular(path, "a regular .npz checkpoint file", CheckpointError)
        try:
            self.size = os.fstat(self.file.fileno()).st_size
            self.zip = self._open_zip()
        except BaseException:
            self.file.close()
            raise

    def _open_zip(self) -> zipfile.ZipFile:
        path = self.path
        start = self.file.read(len(np.lib.format.MAGIC_PREFIX))
        self.file.seek(0)
        if start == np.lib.format.MAGIC_PREFIX:
            raise CheckpointError(f"{path}: not a checkpoint (a .npy array, not an .npz archive)")
        try:
            archive = zipfile.ZipFile(self.file)
        except Exception as e:  # zipfile fails in many ways on a file that is not a zip
            raise CheckpointError(f"{path}: the file is corrupted or truncated (not an .npz "
                                  f"archive: {type(e).__name__}: {e})") from e
        seen: set[str] = set()
        for name in archive.namelist():
            if name in seen:
                archive.close()
                raise CheckpointError(f"{path}: the zip directory names entry {name!r} twice; "
                                      f"expected each entry once (a checkpoint fnnet wrote)")
            seen.add(name)
        return archive

    def close(self) -> None:
        self.zip.close()
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def info(self, name: str, what: str) -> zipfile.ZipInfo:
        """The zip entry ``name.npy``, refused (from the zip directory alone) if it is missing,
        encrypted, compressed other than as numpy does, larger than the file, or compressed
        past ``MAX_RATIO``."""
        path = self.path
        try:
            info = self.zip.getinfo(f"{name}.npy")
        except KeyError:
            raise CheckpointError(f"{path}: {what} is missing (no entry {name!r})") from None
        method = info.compress_type
        if info.flag_bits & 0x1 or method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(
                f"{path}: {what}: entry {name!r} is encrypted or compressed with zip method "
                f"{method}; expected it stored or deflated, as numpy writes it")
        if info.compress_size > self.size or (method == zipfile.ZIP_STORED
                                              and info.compress_size != info.file_size):
            raise CheckpointError(
                f"{path}: {what}: entry {name!r} is corrupted or truncated (the zip directory "
                f"says {info.compress_size:,} bytes stored, {info.file_size:,} inflated, in a "
                f"file of {self.size:,} bytes)")
        if (method == zipfile.ZIP_DEFLATED and info.file_size > RATIO_FREE_BYTES
                and info.file_size > MAX_RATIO * info.compress_size):
            ratio = info.file_size / max(info.compress_size, 1)
            raise CheckpointError(
                f"{path}: {what}: entry {name!r} would inflate to {info.file_size:,} bytes from "
                f"{info.compress_size:,} stored ({ratio:,.0f} to 1); expected at most {MAX_RATIO} "
                f"to 1 for an entry over {RATIO_FREE_BYTES:,} bytes; refused before "
                f"decompressing it")
        return info

    def header(self, info: zipfile.ZipInfo, name: str):
        """``(shape, dtype, header bytes)`` of entry ``info``'s ``.npy`` header: only the header
        is inflated."""
        try:
            with self.zip.open(info) as f:
                return _npy_header(f)
        except CheckpointError:
            raise
        except Exception as e:
            raise _unreadable(self.path, f"entry {name!r}", e) from e

    def checked(self, name: str, what: str, shape=None, dtype=None):
        """``(info, shape, dtype)`` of entry ``name``, refused before it is decompressed unless
        its header says ``(shape, dtype)`` (when given) and its zip entry inflates to exactly
        what that header describes."""
        path = self.path
        info = self.info(name, what)
        stored_shape, stored_dtype, header = self.header(info, name)
        if shape is not None and (stored_shape != tuple(shape) or stored_dtype != dtype):
            raise CheckpointError(
                f"{path}: {what}: entry {name!r} holds {stored_dtype}{list(stored_shape)}, but "
                f"the manifest says {dtype}{list(shape)}; refused before reading it")
        described = header + math.prod(stored_shape) * stored_dtype.itemsize
        if info.file_size != described:
            raise CheckpointError(
                f"{path}: {what}: entry {name!r} would inflate to {info.file_size:,} bytes, but "
                f"its header describes {described:,}; refused before decompressing it")
        return info, stored_shape, stored_dtype

    def raw(self, info: zipfile.ZipInfo, name: str, size: int) -> bytes:
        """The ``size`` data bytes of entry ``info`` (checked by ``checked``), after its header."""
        try:
            with self.zip.open(info) as f:
                _npy_header(f)
                data = f.read(size)
        except Exception as e:
            raise _unreadable(self.path, f"entry {name!r}", e) from e
        if len(data) != size:
            raise CheckpointError(f"{self.path}: entry {name!r} is truncated ({len(data):,} of "
                                  f"{size:,} bytes)")
        return data

    def array(self, info: zipfile.ZipInfo, name: str, shape, dtype) -> np.ndarray:
        """The array in entry ``info`` (checked by ``checked`` to be a ``(shape, dtype)`` array
        inflating to exactly that)."""
        try:
            with self.zip.open(info) as f:
                arr = np.lib.format.read_array(f, allow_pickle=False)
        except Exception as e:
            raise _unreadable(self.path, f"entry {name!r}", e) from e
        if arr.shape != tuple(shape) or arr.dtype != dtype:  # the file changed since checked
            raise CheckpointError(f"{self.path}: entry {name!r} changed while it was read")
        return arr


def _npy_header(f):
    """``(shape, dtype, header bytes)`` from the ``.npy`` header at the start of ``f``."""
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"unsupported .npy format version {version}")
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read(f)
    return shape, dtype, f.tell()


def _read(path: Path) -> tuple[_Archive, dict]:
    """``(archive, manifest)`` of the checkpoint at ``path``; CheckpointError if it is no good."""
    archive = _Archive(path)
    try:
        return archive, _manifest(archive)
    except BaseException:
        archive.close()
        raise


def _manifest(archive: _Archive) -> dict:
    path = archive.path
    info, shape, dtype = archive.checked(MANIFEST, "the manifest")
    if dtype != np.uint8 or len(shape) != 1:
        raise CheckpointError(f"{path}: the manifest entry is not a 1-D uint8 array")
    if shape[0] > MAX_MANIFEST_BYTES:
        raise CheckpointError(f"{path}: the manifest holds {shape[0]:,} bytes; expected at most "
                              f"{MAX_MANIFEST_BYTES:,}")
    raw = archive.raw(info, MANIFEST, shape[0])
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: the manifest is not valid JSON ({e})") from e
    except RecursionError:
        raise CheckpointError(f"{path}: the manifest is nested too deeply to read; a checkpoint's "
                              f"tree has at most {MAX_DEPTH} levels") from None
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise CheckpointError(f"{path}: not an fnnet checkpoint (manifest format missing)")
    _check_version(path, manifest)
    return manifest


def _check_leaves(archive: _Archive, stored: list, max_bytes: int | None) -> dict:
    """The zip entry of each array the manifest's tree names (``stored``, as ``from_manifest``
    lists them), all checked before any is read: each named once, each entry's header the
    manifest's ``(shape, dtype)`` and inflating to exactly that, within ``MAX_RATIO``, and all of
    them together at most ``max_bytes`` (``None``: no bound)."""
    path = archive.path
    named: dict[int, str] = {}
    for i, where, _, _ in stored:
        if type(i) is not int or i < 0:
            raise CheckpointError(f"{path}: {where}: the manifest names leaf {i!r}; expected a "
                                  f"leaf number (an int >= 0)")
        if i in named:
            raise CheckpointError(
                f"{path}: the manifest names leaf {i} twice ({named[i]} and {where}); expected "
                f"each stored array named once; refused before reading any")
        named[i] = where
    infos, total = {}, 0
    for i, where, shape, dtype in stored:
        infos[i] = archive.checked(f"leaf_{i}", f"the array of {where}", shape, dtype)[0]
        total += math.prod(shape) * dtype.itemsize
    if max_bytes is not None and total > max_bytes:
        raise CheckpointError(
            f"{path}: the arrays take {total:,} bytes once read; expected at most {max_bytes:,} "
            f"(load(..., like=template) reads exactly what the template describes, or pass "
            f"max_bytes=); refused before reading any")
    return infos


def _check_version(path: Path, manifest: dict) -> None:
    version = manifest.get("format_version")
    if type(version) is not int:
        raise CheckpointError(f"{path}: manifest has no valid format_version")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} was written by a newer fnnet "
            f"({manifest.get('fnnet_version')}); this fnnet {FNNET_VERSION} reads up to "
            f"version {FORMAT_VERSION}"
        )
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} is not one fnnet "
                              f"wrote; expected version {FORMAT_VERSION}")


def _tree(path: Path, manifest: dict, leaf, stored: list | None = None):
    """``from_manifest`` of the manifest's tree; its errors become ``CheckpointError``."""
    try:
        return from_manifest(manifest["tree"], leaf, stored=stored)
    except ManifestError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except CheckpointError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise CheckpointError(f"{path}: the manifest is malformed ({e!r})") from e


def metadata(path) -> dict:
    """The metadata ``save`` stored with the checkpoint at ``path``, read from its manifest
    without reading any array (errors as for :func:`load`)."""
    path = _existing(Path(path))
    archive, manifest = _read(path)
    with archive:
        if not isinstance(manifest.get("metadata"), dict):
            raise CheckpointError(f"{path}: the manifest is malformed (no metadata object)")
        return dict(manifest["metadata"])


def _existing(path: Path) -> Path:
    if not path.exists() and path.suffix != ".npz" and _npz_path(path).exists():
        path = _npz_path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def load(path, like=None, *, max_bytes: int | None = None) -> tuple[Any, dict]:
    """Read the checkpoint at ``path``; return ``(tree, metadata)``.

    ``path`` may omit the ``.npz`` that :func:`save` appended. Arrays come back as jax arrays.
    With ``like`` (a template tree, e.g. freshly initialised params, or ``jax.eval_shape``
    output), the loaded tree must have the same structure and every array the same shape and
    dtype, else ``ValueError`` naming the first differing place, e.g.
    ``[0].W: checkpoint has shape (128, 784), expected (64, 784)``.

    Nothing is read before everything is checked: the file must be a regular file, its zip
    directory must name each entry once, the manifest must name each stored array once (and
    match ``like``), every array's entry must be what the manifest says and inflate to exactly
    that (deflated at most ``MAX_RATIO`` to 1), and the arrays together must take at most
    ``max_bytes`` bytes: by default ``MAX_BYTES`` without ``like`` and no further bound with it
    (the arrays are then exactly what ``like`` describes).

    Raises FileNotFoundError if there is no such file and :class:`CheckpointError` (a
    ValueError) naming the file if it is not a regular file, corrupted, truncated, incomplete,
    of another format version, holds an array other than its manifest (or ``like``) describes,
    or is over these bounds; such a file is refused before any array is decompressed.
    """
    path = _existing(Path(path))
    if max_bytes is None and like is None:
        max_bytes = MAX_BYTES
    archive, manifest = _read(path)
    with archive:
        stored: list = []
        described = _tree(path, manifest, None, stored)  # nothing read yet
        if like is not None:
            try:
                check_like(described, like)
            except ValueError as e:
                raise ValueError(f"{path} does not match the expected tree: {e}") from None
        infos = _check_leaves(archive, stored, max_bytes)

        def leaf(i, where: str, shape, dtype) -> np.ndarray:
            return archive.array(infos[i], f"leaf_{i}", shape, dtype)

        tree = _tree(path, manifest, leaf)
        if not isinstance(manifest.get("metadata"), dict):
            raise CheckpointError(f"{path}: the manifest is malformed (no metadata object)")
        metadata = dict(manifest["metadata"])
    return tree, metadata
