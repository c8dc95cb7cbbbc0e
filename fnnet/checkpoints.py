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

    {"format": "fnnet-checkpoint", "format_version": 1, "fnnet_version": "0.1.0",
     "metadata": {...}, "tree": NODE}

where NODE is one of::

    {"type": "none"}
    {"type": "bool" | "int" | "float" | "str", "value": v}
    {"type": "tuple" | "list", "children": [NODE, ...]}
    {"type": "dict", "keys": ["k", ...], "children": [NODE, ...]}             insertion order kept
    {"type": "namedtuple", "name": "DenseParams", "fields": ["W", "b"], "children": [NODE, ...]}
    {"type": "array", "leaf": i, "dtype": "float32", "shape": [64, 784]}
    {"type": "key", "leaf": i, "impl": "threefry2x32", "shape": [3]}         leaf i = key_data

Arrays whose dtype numpy cannot store natively (``bfloat16`` ...) are written as unsigned
integers of the same width and viewed back on load.

Safety: :func:`load` reads with ``allow_pickle=False`` and builds NamedTuples only from the
registry, never from a name found in the file, so loading a checkpoint never executes code.

Every array comes back as a jax array (``jnp.asarray``). A leaf JAX cannot hold in its saved
dtype (``float64`` or ``int64`` while ``jax_enable_x64`` is off) is an error rather than a silent
downcast. Python scalars come back as Python scalars of the same type; metadata comes back as
plain JSON values (tuples become lists, numpy values become numbers and lists).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from fnnet.layers import DenseParams

__all__ = ["CheckpointError", "FORMAT_VERSION", "load", "register_namedtuple", "save"]

FORMAT_VERSION = 1
FNNET_VERSION = "0.1.0"
MANIFEST = "__manifest__"
_FORMAT = "fnnet-checkpoint"

# dtypes numpy's .npy format cannot describe: stored as same-width unsigned ints.
_EXTENDED_DTYPES = {
    np.dtype(t).name: np.dtype(t)
    for t in vars(ml_dtypes).values()
    if isinstance(t, type) and issubclass(t, np.generic)
}

_NAMEDTUPLES: dict[str, type] = {}


class CheckpointError(ValueError):
    """A checkpoint file is corrupted, truncated, of a newer format, or otherwise unreadable."""


class _ManifestError(Exception):
    """A bad manifest node; :func:`load` turns it into a CheckpointError naming the file."""


def register_namedtuple(cls: type) -> type:
    """Allow NamedTuple class ``cls`` in checkpoints, under its ``__name__``. Usable as decorator.

    Loading looks classes up here by name only, so registering is what makes a type loadable.
    """
    if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")):
        raise TypeError(f"register_namedtuple: {cls!r} is not a NamedTuple class")
    other = _NAMEDTUPLES.get(cls.__name__)
    if other is not None and other is not cls:
        raise ValueError(
            f"register_namedtuple: another NamedTuple named {cls.__name__!r} is already "
            f"registered ({other.__module__}.{other.__qualname__})"
        )
    _NAMEDTUPLES[cls.__name__] = cls
    return cls


register_namedtuple(DenseParams)


# ---------------------------------------------------------------------------------------------
# Saving.


def _is_typed_key(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _flatten(node, leaves: list[np.ndarray], path: str) -> dict:
    """Manifest NODE describing ``node``; its arrays are appended to ``leaves``."""
    where = path or "<root>"
    if node is None:
        return {"type": "none"}
    if type(node) in (bool, int, float, str):
        return {"type": type(node).__name__, "value": node}
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        name = type(node).__name__
        if _NAMEDTUPLES.get(name) is not type(node):
            raise TypeError(
                f"checkpoint: {where} is a {name}, which is not a registered NamedTuple; "
                f"call fnnet.checkpoints.register_namedtuple({name}) first"
            )
        children = [
            _flatten(v, leaves, f"{path}.{f}") for f, v in zip(node._fields, node, strict=True)
        ]
        return {
            "type": "namedtuple",
            "name": name,
            "fields": list(node._fields),
            "children": children,
        }
    if type(node) in (tuple, list):
        children = [_flatten(v, leaves, f"{path}[{i}]") for i, v in enumerate(node)]
        return {"type": type(node).__name__, "children": children}
    if type(node) is dict:
        for k in node:
            if type(k) is not str:
                raise TypeError(f"checkpoint: {where} has a non-str dict key {k!r}")
        children = [_flatten(v, leaves, f"{path}[{k!r}]") for k, v in node.items()]
        return {"type": "dict", "keys": list(node), "children": children}
    if _is_typed_key(node):
        leaves.append(np.asarray(jax.random.key_data(node)))
        return {
            "type": "key",
            "leaf": len(leaves) - 1,
            "impl": str(jax.random.key_impl(node)),
            "shape": list(node.shape),
        }
    if isinstance(node, (np.ndarray, np.generic, jax.Array)):
        arr = np.asarray(node)
        dtype = arr.dtype
        if dtype.name in _EXTENDED_DTYPES:
            arr = arr.view(np.dtype(f"u{dtype.itemsize}"))
        elif dtype.kind not in "biufc":
            raise TypeError(f"checkpoint: {where} is an array of unsupported dtype {dtype}")
        leaves.append(arr)
        return {
            "type": "array",
            "leaf": len(leaves) - 1,
            "dtype": dtype.name,
            "shape": list(arr.shape),
        }
    raise TypeError(f"checkpoint: {where} has unsupported type {type(node).__qualname__}")


def _jsonable(value, where: str):
    """``value`` as plain JSON data (numpy/jax values converted); TypeError naming ``where``."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, (np.ndarray, np.generic, jax.Array)) and not _is_typed_key(value):
        arr = np.asarray(value)
        if arr.dtype.kind in "biuf":
            return arr.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise TypeError(f"checkpoint metadata {where}: dict key {k!r} is not a str")
            out[k] = _jsonable(v, f"{where}[{k!r}]")
        return out
    raise TypeError(
        f"checkpoint metadata {where}: value of type {type(value).__qualname__} is not "
        f"JSON-serialisable"
    )


def _npz_path(path) -> Path:
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def save(path, tree, /, **metadata) -> Path:
    """Write ``tree`` and JSON-serialisable ``metadata`` to ``path`` atomically; return the path.

    ``.npz`` is appended to ``path`` unless it already ends with it. Parent directories are
    created. The file is written to a temporary file in the same directory, flushed, fsynced and
    renamed onto ``path`` with ``os.replace``: on any error the temporary file is removed and a
    checkpoint already at ``path`` is left as it was.
    """
    path = _npz_path(path)
    leaves: list[np.ndarray] = []
    manifest = {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        "fnnet_version": FNNET_VERSION,
        "metadata": {k: _jsonable(v, repr(k)) for k, v in metadata.items()},
        "tree": _flatten(tree, leaves, ""),
    }
    text = json.dumps(manifest, separators=(",", ":"))
    entries = {f"leaf_{i}": leaf for i, leaf in enumerate(leaves)}
    entries[MANIFEST] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            # An open file object, so np.savez appends no ".npz" of its own.
            np.savez(f, allow_pickle=False, **entries)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0o600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable; best effort (not possible on every platform)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


# ---------------------------------------------------------------------------------------------
# Loading.


def _dtype(name, where: str) -> np.dtype:
    if name in _EXTENDED_DTYPES:
        return _EXTENDED_DTYPES[name]
    try:
        dtype = np.dtype(name)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "biufc" or dtype.name != name:
        raise _ManifestError(f"{where}: unsupported dtype {name!r}")
    return dtype


def _unflatten(node: dict, leaf, path: str):
    """The tree described by manifest NODE ``node``; ``leaf(i, where)`` reads array entry i."""
    where = path or "<root>"
    kind = node["type"]
    if kind == "none":
        return None
    if kind in ("bool", "int", "float", "str"):
        value = node["value"]
        if kind == "float" and type(value) is int:
            value = float(value)
        if type(value).__name__ != kind:
            raise _ManifestError(f"{where}: {kind} node holds {value!r}")
        return value
    if kind in ("tuple", "list"):
        items = [_unflatten(c, leaf, f"{path}[{i}]") for i, c in enumerate(node["children"])]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        pairs = zip(node["keys"], node["children"], strict=True)
        return {k: _unflatten(c, leaf, f"{path}[{k!r}]") for k, c in pairs}
    if kind == "namedtuple":
        name = node["name"]
        cls = _NAMEDTUPLES.get(name)
        if cls is None:
            raise _ManifestError(
                f"{where}: NamedTuple {name!r} is not registered; register the class with "
                f"fnnet.checkpoints.register_namedtuple before loading"
            )
        if list(cls._fields) != node["fields"]:
            raise _ManifestError(
                f"{where}: {name} has fields {node['fields']} in the checkpoint, but the "
                f"registered class has {list(cls._fields)}"
            )
        pairs = zip(cls._fields, node["children"], strict=True)
        return cls(*(_unflatten(c, leaf, f"{path}.{f}") for f, c in pairs))
    if kind == "key":
        data = leaf(node["leaf"], where)
        try:
            key = jax.random.wrap_key_data(jnp.asarray(data), impl=node["impl"])
        except Exception as e:
            raise _ManifestError(f"{where}: cannot rebuild PRNG key ({e})") from e
        if list(key.shape) != node["shape"]:
            raise _ManifestError(f"{where}: key shape {key.shape} != manifest {node['shape']}")
        return key
    if kind == "array":
        arr = leaf(node["leaf"], where)
        dtype = _dtype(node["dtype"], where)
        if dtype.name in _EXTENDED_DTYPES and arr.dtype == np.dtype(f"u{dtype.itemsize}"):
            arr = arr.view(dtype)
        if arr.dtype != dtype or list(arr.shape) != node["shape"]:
            raise _ManifestError(
                f"{where}: stored array is {arr.dtype}{list(arr.shape)}, manifest says "
                f"{node['dtype']}{node['shape']}"
            )
        out = jnp.asarray(arr)
        if out.dtype != dtype:
            raise _ManifestError(
                f"{where}: JAX cannot hold this {dtype} array without converting it to "
                f"{out.dtype} (for 64-bit dtypes: jax.config.update('jax_enable_x64', True))"
            )
        return out
    raise _ManifestError(f"{where}: unknown node type {kind!r}")


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


def _manifest(path: Path, npz):
    def entry(name: str, what: str) -> np.ndarray:
        if name not in npz.files:
            raise CheckpointError(f"{path}: {what} is missing (no entry {name!r})")
        try:
            return npz[name]
        except Exception as e:
            raise _unreadable(path, f"entry {name!r}", e) from e

    raw = entry(MANIFEST, "the manifest")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path}: the manifest entry is not a 1-D uint8 array")
    try:
        manifest = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: the manifest is not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise CheckpointError(f"{path}: not an fnnet checkpoint (manifest format missing)")
    version = manifest.get("format_version")
    if type(version) is not int:
        raise CheckpointError(f"{path}: manifest has no valid format_version")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} was written by a newer fnnet "
            f"({manifest.get('fnnet_version')}); this fnnet {FNNET_VERSION} reads up to "
            f"version {FORMAT_VERSION}"
        )

    def leaf(i, where: str) -> np.ndarray:
        return entry(f"leaf_{i}", f"the array of {where}")

    return manifest, leaf


def _kind(x) -> str:
    if x is None:
        return "None"
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return "array"
    return type(x).__name__


def _check_like(tree, like, path: str = "") -> None:
    """Raise ValueError at the first place where ``tree`` and template ``like`` differ."""
    where = path or "<root>"
    got, want = _kind(tree), _kind(like)
    if got != want:
        raise ValueError(f"{where}: checkpoint has {got}, expected {want}")
    if isinstance(like, dict):
        if set(tree) != set(like):
            raise ValueError(
                f"{where}: checkpoint has dict keys {sorted(tree)}, expected {sorted(like)}"
            )
        for k in like:
            _check_like(tree[k], like[k], f"{path}[{k!r}]")
    elif isinstance(like, (tuple, list)):
        if len(tree) != len(like):
            raise ValueError(f"{where}: checkpoint has {len(tree)} items, expected {len(like)}")
        fields = getattr(like, "_fields", None)
        if fields:
            paths = [f"{path}.{f}" for f in fields]
        else:
            paths = [f"{path}[{i}]" for i in range(len(like))]
        for a, b, p in zip(tree, like, paths, strict=True):
            _check_like(a, b, p)
    elif want == "array":
        if tuple(tree.shape) != tuple(like.shape):
            raise ValueError(
                f"{where}: checkpoint has shape {tuple(tree.shape)}, expected {tuple(like.shape)}"
            )
        if tree.dtype != like.dtype:
            raise ValueError(f"{where}: checkpoint has dtype {tree.dtype}, expected {like.dtype}")


def load(path, like=None) -> tuple[Any, dict]:
    """Read the checkpoint at ``path``; return ``(tree, metadata)``.

    ``path`` may omit the ``.npz`` that :func:`save` appended. Arrays come back as jax arrays.
    With ``like`` (a template tree, e.g. freshly initialised params, or ``jax.eval_shape``
    output), the loaded tree must have the same structure and every array the same shape and
    dtype, else ``ValueError`` naming the first differing place, e.g.
    ``[0].W: checkpoint has shape (128, 784), expected (64, 784)``.

    Raises FileNotFoundError if there is no such file and :class:`CheckpointError` (a
    ValueError) naming the file if it is corrupted, truncated, incomplete or of a newer format.
    """
    path = Path(path)
    if not path.exists() and path.suffix != ".npz" and _npz_path(path).exists():
        path = _npz_path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    npz, manifest, leaf = _read(path)
    with npz:
        try:
            tree = _unflatten(manifest["tree"], leaf, "")
            metadata = dict(manifest["metadata"])
        except _ManifestError as e:
            raise CheckpointError(f"{path}: {e}") from None
        except CheckpointError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise CheckpointError(f"{path}: the manifest is malformed ({e!r})") from e
    if like is not None:
        try:
            _check_like(tree, like)
        except ValueError as e:
            raise ValueError(f"{path} does not match the expected tree: {e}") from None
    return tree, metadata
