"""Tests of fnnet.checkpoints: bit-exact round trips, template checks, corrupt files, atomicity."""

from __future__ import annotations

import json
import math
import os
import pickle
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fnnet import checkpoints as ckpt
from fnnet import layers
from fnnet.checkpoints import CheckpointError, load, register_namedtuple, save
from fnnet.layers import DenseParams


@pytest.fixture(autouse=True, scope="module")
def x64():
    """float64 on for this module only: restored afterwards so other test modules are unaffected."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


# ---------------------------------------------------------------------------------------------
# Helpers.


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def assert_same(got, want):
    """Identical treedef, and every leaf equal bit for bit with the same type, dtype and shape."""
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(want), strict=True
    ):
        where = jax.tree_util.keystr(path)
        if type(b) in (bool, int, str):
            assert type(a) is type(b) and a == b, where
        elif type(b) is float:
            assert type(a) is float, where
            assert (math.isnan(a) and math.isnan(b)) or a.hex() == b.hex(), where
        elif _is_key(b):
            assert _is_key(a), where
            assert jax.random.key_impl(a) == jax.random.key_impl(b), where
            assert a.shape == b.shape, where
            assert np.array_equal(jax.random.key_data(a), jax.random.key_data(b)), where
        else:
            assert isinstance(a, jax.Array), where
            assert a.dtype == np.asarray(b).dtype, where
            assert a.shape == np.shape(b), where
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), where


def round_trip(tmp_path, tree, **metadata):
    path = save(tmp_path / "ckpt", tree, **metadata)
    got, meta = load(path)
    assert_same(got, tree)
    return got, meta


def mlp_params(sizes, seed=0, dtype=np.float32):
    """(Dense, (), Dense, (), ...) params of a network of Dense + activation layers."""
    rng = np.random.default_rng(seed)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        W = jnp.asarray(rng.normal(size=(n_out, n_in)).astype(dtype))
        layers += [DenseParams(W, jnp.zeros(n_out, dtype)), ()]
    return tuple(layers)


def write_npz(path, **entries):
    with open(path, "wb") as f:
        np.savez(f, **entries)
    return path


def manifest_of(path) -> dict:
    with np.load(path, allow_pickle=False) as npz:
        return json.loads(npz[ckpt.MANIFEST].tobytes().decode())


def rewrite(path, manifest=None, drop=()):
    """Rewrite checkpoint ``path`` with another manifest and/or some entries left out."""
    with np.load(path, allow_pickle=False) as npz:
        entries = {k: npz[k] for k in npz.files if k not in drop}
    if manifest is not None:
        entries[ckpt.MANIFEST] = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    write_npz(path, **entries)


# ---------------------------------------------------------------------------------------------
# Round trips.


def test_round_trip_network_params(tmp_path):
    params = mlp_params([784, 64, 32, 10])
    got, meta = round_trip(tmp_path, params)
    assert isinstance(got[0], DenseParams) and got[1] == ()
    assert meta == {}


def test_round_trip_optimizer_state(tmp_path):
    params = mlp_params([5, 4, 3])
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = {"step": jnp.array(7, jnp.int32), "mu": zeros, "nu": params, "count": 3, "lr": 0.01}
    round_trip(tmp_path, (params, state))


def test_round_trip_dtypes_and_shapes(tmp_path):
    rng = np.random.default_rng(0)
    tree = {
        "f64": rng.normal(size=(3, 4)),
        "f32": jnp.asarray(rng.normal(size=(2,)), jnp.float32),
        "f16": np.float16([1.5, -0.0, np.inf]),
        "bf16": jnp.asarray([1.0, np.nan, -3.25], jnp.bfloat16),
        "i64": np.array([-(2**62), 2**62], np.int64),
        "u8": np.arange(256, dtype=np.uint8).reshape(16, 16),
        "bool": np.array([True, False]),
        "c128": np.array([1 + 2j, -3j]),
        "scalar0d": np.float64(np.pi),
        "empty": np.zeros((0, 3), np.float32),
        "nan_payload": np.array([0x7FF8DEADBEEF0001], np.uint64).view(np.float64),
    }
    round_trip(tmp_path, tree)


def test_round_trip_python_scalars_none_and_containers(tmp_path):
    tree = [
        None,
        0,
        -(2**80),
        True,
        False,
        1.0,
        -0.0,
        float("inf"),
        float("nan"),
        "text ünïcode",
        (),
        [],
        {},
        {"a": [None, (1, 2.5)], "b": {"c": ()}},
    ]
    got, _ = round_trip(tmp_path, tree)
    assert type(got) is list and type(got[10]) is tuple and type(got[11]) is list
    assert [type(x) for x in got[1:9]] == [int, int, bool, bool, float, float, float, float]
    assert list(got[13]) == ["a", "b"]


def test_round_trip_prng_keys(tmp_path):
    typed = jax.random.key(42)
    tree = {
        "typed": typed,
        "split": jax.random.split(typed, 3),
        "rbg": jax.random.key(1, impl="rbg"),
        "legacy": jax.random.PRNGKey(7),
    }
    got, _ = round_trip(tmp_path, tree)
    assert got["legacy"].dtype == jnp.uint32 and got["legacy"].shape == (2,)
    assert jax.random.key_impl(got["rbg"]) == jax.random.key_impl(tree["rbg"])
    # The restored keys draw the same numbers.
    for name in ("typed", "legacy"):
        assert np.array_equal(
            jax.random.normal(got[name], (4,)), jax.random.normal(tree[name], (4,))
        )


def test_metadata_round_trip(tmp_path):
    _, meta = round_trip(
        tmp_path,
        mlp_params([3, 2]),
        step=np.int64(1000),
        loss=np.float32(0.5),
        history=np.array([1.0, 0.5]),
        best=jnp.array(0.25),
        config={"sizes": (784, 64, 10), "act": "relu", "decay": None, "flag": np.bool_(True)},
    )
    assert meta == {
        "step": 1000,
        "loss": 0.5,
        "history": [1.0, 0.5],
        "best": 0.25,
        "config": {"sizes": [784, 64, 10], "act": "relu", "decay": None, "flag": True},
    }
    assert type(meta["step"]) is int and type(meta["config"]["flag"]) is bool


def test_file_layout_and_manifest(tmp_path):
    path = save(tmp_path / "c", mlp_params([3, 2]), step=1)
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["__manifest__", "leaf_0", "leaf_1"]
        assert npz["__manifest__"].dtype == np.uint8
    manifest = manifest_of(path)
    assert manifest["format_version"] == ckpt.FORMAT_VERSION == 1
    assert manifest["fnnet_version"] == "0.1.0"
    assert manifest["metadata"] == {"step": 1}
    dense = manifest["tree"]["children"][0]
    assert dense["type"] == "namedtuple" and dense["name"] == "DenseParams"
    assert dense["children"][0] == {"type": "array", "leaf": 0, "dtype": "float32", "shape": [2, 3]}


def test_npz_suffix_paths_and_parent_dirs(tmp_path):
    tree = (np.arange(3),)
    p = save(str(tmp_path / "a" / "b" / "run"), tree)
    assert p == tmp_path / "a" / "b" / "run.npz" and p.exists()
    assert save(tmp_path / "x.npz", tree) == tmp_path / "x.npz"
    assert save(tmp_path / "model.ckpt", tree) == tmp_path / "model.ckpt.npz"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a", "model.ckpt.npz", "x.npz"]
    for name in ("a/b/run", "a/b/run.npz", "model.ckpt", "x.npz", "x"):
        assert_same(load(tmp_path / name)[0], tree)
        assert_same(load(str(tmp_path / name))[0], tree)


# ---------------------------------------------------------------------------------------------
# Saving what cannot be saved.


class NotRegistered(NamedTuple):
    a: object


class RegisteredForTest(NamedTuple):
    mu: object
    nu: object


register_namedtuple(RegisteredForTest)


@pytest.mark.parametrize(
    "tree, where",
    [
        ({"x": [NotRegistered(1)]}, "['x'][0]"),
        ({"x": {1: 2}}, "['x']"),
        ((np.array([{}], dtype=object),), "[0]"),
        ((np.array(["str"]),), "[0]"),
        ({"s": {1, 2}}, "['s']"),
    ],
)
def test_save_rejects_unsupported_leaves(tmp_path, tree, where):
    with pytest.raises(TypeError, match=r"\[") as e:
        save(tmp_path / "c", tree)
    assert where in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_registered_namedtuple_round_trip(tmp_path):
    state = RegisteredForTest(mu=mlp_params([3, 2]), nu=np.ones(2))
    got, _ = round_trip(tmp_path, state)
    assert type(got) is RegisteredForTest


def test_register_namedtuple_checks():
    with pytest.raises(TypeError, match="not a NamedTuple"):
        register_namedtuple(tuple)

    class DenseParams(NamedTuple):  # same name, another class
        W: object
        b: object

    with pytest.raises(ValueError, match="already registered"):
        register_namedtuple(DenseParams)
    assert register_namedtuple(layers.DenseParams) is layers.DenseParams  # idempotent


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(TypeError, match=r"'cfg'\['opt'\]\[1\].*object"):
        save(tmp_path / "c", (), cfg={"opt": [1, object()]})
    with pytest.raises(TypeError, match="'fn'"):
        save(tmp_path / "c", (), fn=print)
    with pytest.raises(TypeError, match="key 3"):
        save(tmp_path / "c", (), d={3: 1})
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Loading into a template: `like=`.


def test_like_accepts_matching_template(tmp_path):
    params = mlp_params([784, 64, 10], seed=1)
    path = save(tmp_path / "c", params)
    got, _ = load(path, like=mlp_params([784, 64, 10], seed=2))
    assert_same(got, params)
    shapes = jax.eval_shape(lambda: mlp_params([784, 64, 10]))
    assert_same(load(path, like=shapes)[0], params)


def test_like_shape_mismatch_names_the_leaf(tmp_path):
    path = save(tmp_path / "c", mlp_params([784, 128, 10]))
    with pytest.raises(ValueError) as e:
        load(path, like=mlp_params([784, 64, 10]))
    assert "[0].W: checkpoint has shape (128, 784), expected (64, 784)" in str(e.value)
    assert str(path) in str(e.value)


def test_like_structure_mismatch_names_the_place(tmp_path):
    path = save(tmp_path / "c", mlp_params([4, 3, 2]))
    with pytest.raises(ValueError, match=r"<root>: checkpoint has 4 items, expected 6"):
        load(path, like=mlp_params([4, 3, 3, 2]))
    with pytest.raises(ValueError, match=r"\[1\]: checkpoint has tuple, expected DenseParams"):
        load(path, like=(mlp_params([4, 3])[0],) * 2 + mlp_params([3, 2]))
    path = save(tmp_path / "d", {"mu": 1, "nu": 2})
    with pytest.raises(ValueError, match=r"dict keys \['mu', 'nu'\], expected \['mu', 'v'\]"):
        load(path, like={"mu": 1, "v": 2})
    with pytest.raises(ValueError, match=r"\['nu'\]: checkpoint has int, expected array"):
        load(path, like={"mu": 1, "nu": np.int64(2)})


def test_like_dtype_mismatch_names_the_leaf(tmp_path):
    params = mlp_params([3, 2], dtype=np.float64)
    path = save(tmp_path / "c", {"mu": params})
    with pytest.raises(ValueError, match=r"\['mu'\]\[0\]\.W: checkpoint has dtype float64, "):
        load(path, like={"mu": mlp_params([3, 2], dtype=np.float32)})


def test_float64_without_x64_is_an_error_not_a_downcast(tmp_path):
    path = save(tmp_path / "c", {"w": np.ones(2)})
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(CheckpointError, match=r"\['w'\].*float64.*jax_enable_x64"):
            load(path)
    finally:
        jax.config.update("jax_enable_x64", True)


# ---------------------------------------------------------------------------------------------
# Broken files.


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="nope"):
        load(tmp_path / "nope")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "tail_cut", "npy"])
def test_corrupted_files_raise_checkpoint_error(tmp_path, damage):
    path = save(tmp_path / "c", mlp_params([30, 20, 10]), step=5)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(1000))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "tail_cut":
        path.write_bytes(data[:-10])
    else:
        np.save(path.open("wb"), np.ones(3))
    with pytest.raises(CheckpointError) as e:
        load(path)
    assert isinstance(e.value, ValueError)
    assert str(path) in str(e.value)
    if damage != "npy":
        assert "corrupted or truncated" in str(e.value)


def test_every_truncation_is_a_checkpoint_error(tmp_path):
    path = save(tmp_path / "c", {"w": np.arange(6.0), "k": jax.random.key(0)}, note="x")
    data = path.read_bytes()
    bad = tmp_path / "bad.npz"
    for n in range(0, len(data), 11):
        bad.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match="bad.npz"):
            load(bad)


def test_missing_manifest(tmp_path):
    path = write_npz(tmp_path / "c.npz", leaf_0=np.ones(3))
    with pytest.raises(CheckpointError, match=r"c\.npz: the manifest is missing"):
        load(path)


def test_missing_leaf(tmp_path):
    path = save(tmp_path / "c", mlp_params([3, 2]))
    rewrite(path, drop=["leaf_1"])
    with pytest.raises(CheckpointError, match=r"c\.npz: the array of \[0\]\.b is missing"):
        load(path)


def saved_with_manifest(tmp_path, edit):
    """A checkpoint of small params whose manifest ``edit(manifest)`` changed in place."""
    path = save(tmp_path / "c", mlp_params([3, 2]))
    manifest = manifest_of(path)
    edit(manifest)
    rewrite(path, manifest)
    return path


def test_newer_format_version(tmp_path):
    path = saved_with_manifest(
        tmp_path, lambda m: m.update(format_version=ckpt.FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match=r"c\.npz: checkpoint format version 2 .*newer"):
        load(path)


def test_malformed_manifest(tmp_path):
    path = saved_with_manifest(
        tmp_path, lambda m: m["tree"]["children"][0]["children"][0].update(dtype="i4,O"))
    with pytest.raises(CheckpointError, match=r"c\.npz: \[0\]\.W: unsupported dtype"):
        load(path)
    path = saved_with_manifest(tmp_path, lambda m: m.pop("tree"))
    with pytest.raises(CheckpointError, match=r"c\.npz: the manifest is malformed"):
        load(path)


def test_unregistered_namedtuple_name_in_file(tmp_path):
    path = saved_with_manifest(
        tmp_path, lambda m: m["tree"]["children"][0].update(name="os.system"))
    with pytest.raises(CheckpointError, match=r"\[0\]: NamedTuple 'os.system' is not registered"):
        load(path)


_UNPICKLED = []


def _mark():
    _UNPICKLED.append(True)
    return "boom"


class Boom:
    def __reduce__(self):
        return (_mark, ())


def test_pickled_object_array_is_refused(tmp_path):
    path = save(tmp_path / "c", (np.ones(2),))
    with np.load(path, allow_pickle=False) as npz:
        manifest = npz[ckpt.MANIFEST]
    write_npz(path, __manifest__=manifest, leaf_0=np.array([Boom()], dtype=object))
    with pytest.raises(CheckpointError, match=r"c\.npz: .*entry 'leaf_0' holds object\[1\]"):
        load(path)
    raw = tmp_path / "raw.npz"
    raw.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError, match=r"raw\.npz: the file is corrupted.*not an \.npz"):
        load(raw)
    assert _UNPICKLED == []


# ---------------------------------------------------------------------------------------------
# Atomicity.


def test_failed_save_leaves_old_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    old_tree = mlp_params([3, 2])
    path = save(tmp_path / "c", old_tree, step=1)
    before = path.read_bytes()

    def failing_savez(f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path / "c", mlp_params([5, 4]), step=2)
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path / "new", mlp_params([5, 4]))
    assert os.listdir(tmp_path) == ["c.npz"]
    assert path.read_bytes() == before
    monkeypatch.undo()
    got, meta = load(path)
    assert_same(got, old_tree) and meta == {"step": 1}


def test_interrupted_save_leaves_no_temp_file(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path / "c", mlp_params([3, 2]))
    assert os.listdir(tmp_path) == []


def test_overwrite_replaces(tmp_path):
    save(tmp_path / "c", mlp_params([3, 2]))
    new = mlp_params([5, 4])
    path = save(tmp_path / "c", new, step=2)
    assert_same(load(path)[0], new)
    assert os.listdir(tmp_path) == ["c.npz"]


# ---------------------------------------------------------------------------------------------
# Property: any tree of supported things survives bit for bit.

_DTYPES = [
    np.float64,
    np.float32,
    np.float16,
    ml_dtypes.bfloat16,
    np.int8,
    np.int32,
    np.int64,
    np.uint8,
    np.uint32,
    np.complex64,
]


@st.composite
def raw_arrays(draw):
    """Arrays of any bit pattern (NaN payloads, infinities, subnormals included)."""
    dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    data = draw(st.binary(min_size=dtype.itemsize * math.prod(shape), max_size=4096))
    arr = np.frombuffer(data[: dtype.itemsize * math.prod(shape)], dtype=dtype).reshape(shape)
    return arr if draw(st.booleans()) else jnp.asarray(arr)


leaves = st.one_of(
    raw_arrays(),
    hnp.arrays(np.bool_, hnp.array_shapes(min_dims=0, max_dims=2)),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.integers(0, 2**32 - 1).map(lambda s: jax.random.key(s)),
)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(tuple),
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=4), children, max_size=3),
        st.builds(DenseParams, children, children),
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(tree=trees)
def test_property_round_trip_is_bit_exact(tmp_path_factory, tree):
    directory = tmp_path_factory.mktemp("prop")
    path = save(directory / "c", tree, n=1)
    got, meta = load(path, like=tree)
    assert_same(got, tree)
    assert meta == {"n": 1}
