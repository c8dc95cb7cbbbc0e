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

Safety: :func:`load` reads with ``allow_pickle=False`` and builds NamedTuples only from the
registry, never from a name found in the file, so loading a checkpoint never executes code. Nothing
is decompressed before its size is known to be the one expected: each array's zip entry and
``.npy`` header (shape, dtype, size) must agree with the manifest, and the manifest with ``like=``,
before the array is read; the manifest itself is at most ``MAX_MANIFEST_BYTES`` and its tree at
most ``fnnet.checkpoint_tree.MAX_DEPTH`` levels deep.

Every array comes back as a jax array (``jnp.asarray``). A leaf JAX cannot hold in its saved
dtype (``float64`` or ``int64`` while ``jax_enable_x64`` is off) is an error rather than a silent
downcast. Python scalars come back as Python scalars of the same type; metadata comes back as
plain JSON values (tuples become lists, numpy values numbers and lists, paths strings; NaN and
infinities are kept).
"""

from __future__ import annotations

import json
import math
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

__all__ = ["CheckpointError", "FNNET_VERSION", "FORMAT_VERSION", "MANIFEST", "MAX_MANIFEST_BYTES",
           "load", "register_namedtuple", "save"]

FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 64 << 20
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
    if "pickle" not in str(e):
        reason = f"{type(e).__name__}: {e}"
    elif what == "the file":  # numpy's last guess for a file that is neither .npz nor .npy
        reason = "not an .npz archive; never tried as a pickle, since unpickling can execute code"
    else:
        return CheckpointError(
            f"{path}: {what} holds pickled data, which is never loaded (unpickling can execute "
            f"code); not an fnnet checkpoint"
        )
    return CheckpointError(f"{path}: {what} is corrupted or truncated ({reason})")


def _read(path: Path):
    """(npz, manifest, leaf reader) of the file at ``path``; CheckpointError if it is no good."""
    try:
        npz = np.load(path, allow_pickle=False)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as e:  # zipfile, zlib, numpy's format parser: each fails in its own way
        raise _unreadable(path, "the file", e) from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path}: not a checkpoint (a .npy array, not an .npz archive)")
    try:
        return (npz, *_manifest(path, npz))
    except BaseException:
        npz.close()
        raise


def _member_header(path: Path, npz, name: str, what: str):
    """``(shape, dtype, bytes the entry inflates to, bytes its header describes)`` of entry
    ``name``, from the zip directory and the ``.npy`` header alone: nothing else is read."""
    try:
        info = npz.zip.getinfo(f"{name}.npy")
    except KeyError:
        raise CheckpointError(f"{path}: {what} is missing (no entry {name!r})") from None
    try:
        with npz.zip.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy format version {version}")
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(f)
            header = f.tell()
    except Exception as e:
        raise _unreadable(path, f"entry {name!r}", e) from e
    return shape, dtype, info.file_size, header + math.prod(shape) * dtype.itemsize


def _entry_reader(path: Path, npz):
    """``entry(name, what, shape=None, dtype=None)``: the array in entry ``name``, refused
    before it is decompressed unless its header says ``(shape, dtype)`` (when given) and its
    zip entry inflates to exactly what that header describes."""

    def entry(name: str, what: str, shape=None, dtype=None) -> np.ndarray:
        stored_shape, stored_dtype, inflated, described = _member_header(path, npz, name, what)
        if shape is not None and (stored_shape != tuple(shape) or stored_dtype != dtype):
            raise CheckpointError(
                f"{path}: {what}: entry {name!r} holds {stored_dtype}{list(stored_shape)}, but "
                f"the manifest says {dtype}{list(shape)}; refused before reading it")
        if inflated != described:
            raise CheckpointError(
                f"{path}: {what}: entry {name!r} would inflate to {inflated:,} bytes, but its "
                f"header describes {described:,}; refused before decompressing it")
        try:
            return npz[name]
        except Exception as e:
            raise _unreadable(path, f"entry {name!r}", e) from e

    return entry


def _manifest(path: Path, npz):
    entry = _entry_reader(path, npz)
    shape, dtype, _, _ = _member_header(path, npz, MANIFEST, "the manifest")
    if dtype != np.uint8 or len(shape) != 1:
        raise CheckpointError(f"{path}: the manifest entry is not a 1-D uint8 array")
    if shape[0] > MAX_MANIFEST_BYTES:
        raise CheckpointError(f"{path}: the manifest holds {shape[0]:,} bytes; expected at most "
                              f"{MAX_MANIFEST_BYTES:,}")
    raw = entry(MANIFEST, "the manifest")
    try:
        manifest = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: the manifest is not valid JSON ({e})") from e
    except RecursionError:
        raise CheckpointError(f"{path}: the manifest is nested too deeply to read; a checkpoint's "
                              f"tree has at most {MAX_DEPTH} levels") from None
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise CheckpointError(f"{path}: not an fnnet checkpoint (manifest format missing)")
    _check_version(path, manifest)

    def leaf(i, where: str, shape, dtype) -> np.ndarray:
        return entry(f"leaf_{i}", f"the array of {where}", shape, dtype)

    return manifest, leaf


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


def _tree(path: Path, manifest: dict, leaf):
    """``from_manifest`` of the manifest's tree; its errors become ``CheckpointError``."""
    try:
        return from_manifest(manifest["tree"], leaf)
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
    npz, manifest, _ = _read(path)
    with npz:
        if not isinstance(manifest.get("metadata"), dict):
            raise CheckpointError(f"{path}: the manifest is malformed (no metadata object)")
        return dict(manifest["metadata"])


def _existing(path: Path) -> Path:
    if not path.exists() and path.suffix != ".npz" and _npz_path(path).exists():
        path = _npz_path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def load(path, like=None) -> tuple[Any, dict]:
    """Read the checkpoint at ``path``; return ``(tree, metadata)``.

    ``path`` may omit the ``.npz`` that :func:`save` appended. Arrays come back as jax arrays.
    With ``like`` (a template tree, e.g. freshly initialised params, or ``jax.eval_shape``
    output), the loaded tree must have the same structure and every array the same shape and
    dtype, else ``ValueError`` naming the first differing place, e.g.
    ``[0].W: checkpoint has shape (128, 784), expected (64, 784)``.

    Raises FileNotFoundError if there is no such file and :class:`CheckpointError` (a
    ValueError) naming the file if it is corrupted, truncated, incomplete, of another format
    version, or holds an array other than its manifest (or ``like``) describes; such an array is
    refused before it is decompressed.
    """
    path = _existing(Path(path))
    npz, manifest, leaf = _read(path)
    with npz:
        if like is not None:  # compared with the manifest's description: nothing read yet
            try:
                check_like(_tree(path, manifest, None), like)
            except CheckpointError:
                raise
            except ValueError as e:
                raise ValueError(f"{path} does not match the expected tree: {e}") from None
        tree = _tree(path, manifest, leaf)
        if not isinstance(manifest.get("metadata"), dict):
            raise CheckpointError(f"{path}: the manifest is malformed (no metadata object)")
        metadata = dict(manifest["metadata"])
    return tree, metadata
