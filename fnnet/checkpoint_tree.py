"""A checkpoint's tree and its manifest: the JSON description of a pytree whose arrays are stored
beside it (``fnnet.checkpoints`` writes both into one ``.npz`` file).

``to_manifest`` turns a tree into a manifest NODE, appending its arrays to a list; ``from_manifest``
builds the tree back from a NODE and a reader of the stored arrays, or, without a reader, describes
it (``jax.ShapeDtypeStruct`` for each array) so that ``check_like`` can compare it with a template
before any array is read. A tree is nested at most ``MAX_DEPTH`` levels deep. The NODEs::

    {"type": "none"}
    {"type": "bool" | "int" | "float" | "str", "value": v}
    {"type": "tuple" | "list", "children": [NODE, ...]}
    {"type": "dict", "keys": ["k", ...], "children": [NODE, ...]}             insertion order kept
    {"type": "namedtuple", "name": "DenseParams", "fields": ["W", "b"], "children": [NODE, ...]}
    {"type": "array", "leaf": i, "dtype": "float32", "shape": [64, 784]}
    {"type": "key", "leaf": i, "impl": "threefry2x32", "shape": [3]}         leaf i = key_data

Arrays whose dtype numpy cannot store natively (``bfloat16`` and the other ``ml_dtypes``) are
stored as unsigned integers of the same width and viewed back on load. NamedTuples are built only
from the registry (``register_namedtuple``), never from a name found in a file.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from fnnet.pytrees import register_namedtuple, registered_namedtuple

__all__ = ["MAX_DEPTH", "ManifestError", "check_like", "from_manifest", "register_namedtuple",
           "to_manifest"]

# The deepest nesting of containers a checkpoint's tree may have, on saving and on loading.
MAX_DEPTH = 64

# dtypes numpy's .npy format cannot describe: stored as same-width unsigned ints.
_EXTENDED_DTYPES = {
    np.dtype(t).name: np.dtype(t)
    for t in vars(ml_dtypes).values()
    if isinstance(t, type) and issubclass(t, np.generic)
}

# ``leaf(i, where, shape, dtype)``: stored array i, which must be a ``(shape, dtype)`` array.
LeafReader = Callable[[int, str, tuple, np.dtype], np.ndarray]
# What ``from_manifest(..., stored=[])`` lists: ``(i, where, shape, dtype)`` of each stored array
# the tree names (as the leaf reader would be asked for it), in the order the tree names them.
StoredLeaf = tuple[object, str, tuple, np.dtype]


class ManifestError(Exception):
    """A bad manifest node; ``fnnet.checkpoints.load`` turns it into a CheckpointError naming the
    file."""


def is_typed_key(x) -> bool:
    """Whether ``x`` is a typed PRNG key array (from ``jax.random.key``)."""
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


# ---------------------------------------------------------------------------------------------
# Tree -> manifest.


def _array_node(node, leaves: list[np.ndarray], where: str) -> dict:
    if is_typed_key(node):
        leaves.append(np.asarray(jax.random.key_data(node)))
        return {"type": "key", "leaf": len(leaves) - 1, "impl": str(jax.random.key_impl(node)),
                "shape": list(node.shape)}
    arr = np.asarray(node)
    dtype = arr.dtype
    if dtype.name in _EXTENDED_DTYPES:
        arr = arr.view(np.dtype(f"u{dtype.itemsize}"))
    elif dtype.kind not in "biufc":
        raise TypeError(f"checkpoint: {where} is an array of unsupported dtype {dtype}")
    leaves.append(arr)
    return {"type": "array", "leaf": len(leaves) - 1, "dtype": dtype.name,
            "shape": list(arr.shape)}


def _namedtuple_node(node, leaves: list[np.ndarray], path: str, depth: int) -> dict:
    name = type(node).__name__
    if registered_namedtuple(name) is not type(node):
        raise TypeError(
            f"checkpoint: {path or '<root>'} is a {name}, which is not a registered NamedTuple; "
            f"call fnnet.checkpoints.register_namedtuple({name}) first"
        )
    children = [
        to_manifest(v, leaves, f"{path}.{f}", depth + 1)
        for f, v in zip(node._fields, node, strict=True)
    ]
    return {"type": "namedtuple", "name": name, "fields": list(node._fields),
            "children": children}


def _too_deep(where: str) -> str:
    return f"{where}: the tree is nested more than {MAX_DEPTH} levels deep; expected at most {MAX_DEPTH}"


def to_manifest(node, leaves: list[np.ndarray], path: str = "", depth: int = 0) -> dict:
    """Manifest NODE describing ``node``; its arrays are appended to ``leaves``.

    Raises ``TypeError`` naming the place (``['x'][0]``) of anything that cannot be stored, and
    ``ValueError`` for a tree nested more than ``MAX_DEPTH`` levels deep.
    """
    where = path or "<root>"
    if depth > MAX_DEPTH:
        raise ValueError(f"checkpoint: {_too_deep(where)}")
    if node is None:
        return {"type": "none"}
    if type(node) in (bool, int, float, str):
        return {"type": type(node).__name__, "value": node}
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return _namedtuple_node(node, leaves, path, depth)
    if type(node) in (tuple, list):
        children = [to_manifest(v, leaves, f"{path}[{i}]", depth + 1) for i, v in enumerate(node)]
        return {"type": type(node).__name__, "children": children}
    if type(node) is dict:
        for k in node:
            if type(k) is not str:
                raise TypeError(f"checkpoint: {where} has a non-str dict key {k!r}")
        children = [to_manifest(v, leaves, f"{path}[{k!r}]", depth + 1) for k, v in node.items()]
        return {"type": "dict", "keys": list(node), "children": children}
    if isinstance(node, (np.ndarray, np.generic, jax.Array)):
        return _array_node(node, leaves, where)
    raise TypeError(f"checkpoint: {where} has unsupported type {type(node).__qualname__}")


# ---------------------------------------------------------------------------------------------
# Manifest -> tree.


def _dtype(name, where: str) -> np.dtype:
    if name in _EXTENDED_DTYPES:
        return _EXTENDED_DTYPES[name]
    try:
        dtype = np.dtype(name)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "biufc" or dtype.name != name:
        raise ManifestError(f"{where}: unsupported dtype {name!r}")
    return dtype


def _shape(node: dict, where: str) -> tuple[int, ...]:
    shape = node["shape"]
    if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
        raise ManifestError(f"{where}: shape {shape!r} is not a list of sizes")
    return tuple(shape)


def _scalar(node: dict, kind: str, where: str):
    value = node["value"]
    if kind == "float" and type(value) is int:
        value = float(value)
    if type(value).__name__ != kind:
        raise ManifestError(f"{where}: {kind} node holds {value!r}")
    return value


def _namedtuple(node: dict, leaf: LeafReader | None, path: str, depth: int, stored):
    name = node["name"]
    cls = registered_namedtuple(name)
    if cls is None:
        raise ManifestError(
            f"{path or '<root>'}: NamedTuple {name!r} is not registered; register the class with "
            f"fnnet.checkpoints.register_namedtuple before loading"
        )
    if list(cls._fields) != node["fields"]:
        raise ManifestError(
            f"{path or '<root>'}: {name} has fields {node['fields']} in the checkpoint, but the "
            f"registered class has {list(cls._fields)}"
        )
    pairs = zip(cls._fields, node["children"], strict=True)
    return cls(*(from_manifest(c, leaf, f"{path}.{f}", depth + 1, stored=stored)
                 for f, c in pairs))


def _key(node: dict, leaf: LeafReader | None, where: str, stored):
    shape = _shape(node, where)
    try:
        impl = node["impl"]
        one = jax.eval_shape(lambda: jax.random.key(0, impl=impl))
        data = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl)))
    except Exception as e:
        raise ManifestError(f"{where}: cannot rebuild PRNG key ({e})") from e
    if leaf is None:
        if stored is not None:
            stored.append((node["leaf"], where, shape + data.shape, np.dtype(data.dtype)))
        return jax.ShapeDtypeStruct(shape, one.dtype)
    key_data = leaf(node["leaf"], where, shape + data.shape, np.dtype(data.dtype))
    try:
        return jax.random.wrap_key_data(jnp.asarray(key_data), impl=impl)
    except Exception as e:
        raise ManifestError(f"{where}: cannot rebuild PRNG key ({e})") from e


def _array(node: dict, leaf: LeafReader | None, where: str, stored):
    dtype, shape = _dtype(node["dtype"], where), _shape(node, where)
    extended = dtype.name in _EXTENDED_DTYPES
    as_stored = np.dtype(f"u{dtype.itemsize}") if extended else dtype
    if leaf is None:
        if stored is not None:
            stored.append((node["leaf"], where, shape, as_stored))
        return jax.ShapeDtypeStruct(shape, dtype)
    arr = leaf(node["leaf"], where, shape, as_stored)
    if extended and arr.dtype == np.dtype(f"u{dtype.itemsize}"):
        arr = arr.view(dtype)
    if arr.dtype != dtype or arr.shape != shape:
        raise ManifestError(
            f"{where}: stored array is {arr.dtype}{list(arr.shape)}, manifest says "
            f"{node['dtype']}{node['shape']}"
        )
    out = jnp.asarray(arr)
    if out.dtype != dtype:
        raise ManifestError(
            f"{where}: JAX cannot hold this {dtype} array without converting it to "
            f"{out.dtype} (for 64-bit dtypes: jax.config.update('jax_enable_x64', True))"
        )
    return out


def from_manifest(node: dict, leaf: LeafReader | None, path: str = "", depth: int = 0, *,
                  stored: list[StoredLeaf] | None = None):
    """The tree described by manifest NODE ``node``.

    ``leaf(i, where, shape, dtype)`` reads stored array i, which the manifest says is a
    ``(shape, dtype)`` array (it may refuse one that is not, before reading it). With
    ``leaf=None`` nothing is read: each array and key is described by a ``jax.ShapeDtypeStruct``,
    and ``(i, where, shape, dtype)`` of each stored array is appended to ``stored`` when it is a
    list (``i`` as the manifest has it: checking it is the caller's business), so that every
    array can be checked before any is read.

    Raises ``ManifestError`` naming the place of a node that does not make sense or lies more
    than ``MAX_DEPTH`` levels deep, and lets ``KeyError``/``TypeError``/``ValueError`` of a
    malformed node through.
    """
    where = path or "<root>"
    if depth > MAX_DEPTH:
        raise ManifestError(_too_deep(where))
    kind = node["type"]
    if kind == "none":
        return None
    if kind in ("bool", "int", "float", "str"):
        return _scalar(node, kind, where)
    if kind in ("tuple", "list"):
        items = [from_manifest(c, leaf, f"{path}[{i}]", depth + 1, stored=stored)
                 for i, c in enumerate(node["children"])]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        pairs = zip(node["keys"], node["children"], strict=True)
        return {k: from_manifest(c, leaf, f"{path}[{k!r}]", depth + 1, stored=stored)
                for k, c in pairs}
    if kind == "namedtuple":
        return _namedtuple(node, leaf, path, depth, stored)
    if kind == "key":
        return _key(node, leaf, where, stored)
    if kind == "array":
        return _array(node, leaf, where, stored)
    raise ManifestError(f"{where}: unknown node type {kind!r}")


# ---------------------------------------------------------------------------------------------
# A loaded tree against a template.


def _kind(x) -> str:
    if x is None:
        return "None"
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return "array"
    return type(x).__name__


def check_like(tree, like, path: str = "") -> None:
    """Raise ``ValueError`` at the first place where ``tree`` and template ``like`` differ in
    structure, or an array in shape or dtype."""
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
            check_like(tree[k], like[k], f"{path}[{k!r}]")
    elif isinstance(like, (tuple, list)):
        if len(tree) != len(like):
            raise ValueError(f"{where}: checkpoint has {len(tree)} items, expected {len(like)}")
        fields = getattr(like, "_fields", None)
        if fields:
            paths = [f"{path}.{f}" for f in fields]
        else:
            paths = [f"{path}[{i}]" for i in range(len(like))]
        for a, b, p in zip(tree, like, paths, strict=True):
            check_like(a, b, p)
    elif want == "array":
        if tuple(tree.shape) != tuple(like.shape):
            raise ValueError(
                f"{where}: checkpoint has shape {tuple(tree.shape)}, expected {tuple(like.shape)}"
            )
        if tree.dtype != like.dtype:
            raise ValueError(f"{where}: checkpoint has dtype {tree.dtype}, expected {like.dtype}")
