"""Models across devices: ``fit(..., ensemble=K, devices=D, shard="models")`` trains ``K/D`` whole
models on each device (``fnnet.devices.placement``).

The eight-device tests run in one subprocess started with ``XLA_FLAGS=--xla_force_host_platform_
device_count=8`` (the flag has to be set before JAX starts; this process has one CPU device), as
in test_parallel.py. Its fits share compiled programs through JAX's persistent compilation cache
in a temporary folder: ``TrainState.create`` compiles anew in every ``fit`` (about 2 s on the
2-core CPU), and the same programs come back in several fits here. A cached program is the one
the same HLO would compile to, so no comparison below is between a program and itself unless it
says so (the resumed run against the uninterrupted one, which run the same epoch program).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import xla_flags_with

import fnnet
from fnnet.devices import parallel, placement

ROOT = Path(__file__).resolve().parents[1]

MODELS = textwrap.dedent("""
    import json, os, sys
    import jax, jax.numpy as jnp, numpy as np
    import fnnet
    from fnnet import checkpoints
    from fnnet.devices import placement
    from fnnet.training.epoch import EpochRunner

    assert len(jax.devices()) == 8, jax.devices()
    out, tmp = {}, sys.argv[1]
    kx, ky = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, (128, 12), jnp.float32)
    y = jax.random.randint(ky, (128,), 0, 3, jnp.int32)
    val = (x[:64], y[:64])
    model = fnnet.mlp([12, 10, 3])  # W1 of 8 stacked models: f32[8,10,12]; one model: [1,10,12]
    RATES = [float(r) for r in np.geomspace(0.3, 0.003, 16)]
    opt = fnnet.optim.momentum(0.05)

    def run(devices=None, **kw):
        kw = {"batch_size": 32, "epochs": 3, **kw}
        return fnnet.fit(model, "cross-entropy", opt, (x, y), key=jax.random.PRNGKey(1),
                         progress=False, devices=devices, **kw)

    def rel(a, b):
        pairs = [(np.asarray(u), np.asarray(v)) for u, v in
                 zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))]
        return max(float(np.max(np.abs(u - v)) / max(np.max(np.abs(v)), 1e-30))
                   for u, v in pairs if v.dtype.kind == "f")

    def same(a, b):
        return all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in
                   zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))

    def placed(state):
        # per leaf: its spec, and (device id, first model, models) of each shard
        return [[list(leaf.sharding.spec),
                 sorted([s.device.id, s.index[0].start or 0, s.data.shape[0]]
                        for s in leaf.addressable_shards)]
                for leaf in jax.tree_util.tree_leaves(state)]

    def history_gap(a, b, name):
        return float(np.max(np.abs(np.array(a[name]) - np.array(b[name]))))

    # K=8 models with validation: 8 devices against one
    s8, h8 = run(8, shard="models", ensemble=8, validation=val)
    s1, h1 = run(None, ensemble=8, validation=val)
    out["ens"] = {"rel": rel(s8, s1), "same_ints": same(s8.key, s1.key) and same(s8.stopped, s1.stopped),
                  "loss": history_gap(h8, h1, "loss"), "val_loss": history_gap(h8, h1, "val_loss"),
                  "val_acc": history_gap(h8, h1, "val_accuracy"), "placed": placed(s8),
                  "val_models": len(h8["val_loss"][-1])}

    # checkpoint after 2 epochs, resume to 3 on the 8 devices: the uninterrupted run, exactly
    ck = os.path.join(tmp, "run")
    run(8, shard="models", ensemble=8, validation=val, epochs=2, checkpoint=ck)
    saved, meta = checkpoints.load(ck)
    sr, hr = run(8, shard="models", ensemble=8, validation=val, checkpoint=ck, resume=True)
    out["resume"] = {"saved_epoch": meta["epoch"], "saved_shard": meta["config"]["run"]["shard"],
                     "same": same(sr, s8), "history_same": hr["loss"] == h8["loss"]
                     and hr["val_loss"] == h8["val_loss"], "placed": placed(sr)}
    try:
        run(8, ensemble=8, checkpoint=ck, resume=True)
        out["resume"]["as_batch"] = None
    except ValueError as e:
        out["resume"]["as_batch"] = str(e)

    # a 16-rate sweep, full batch in chunks: 2 models on each device
    kw = dict(lrs=RATES, batch_size=None, chunk_size=32)
    f8, g8 = run(8, shard="models", **kw)
    f1, g1 = run(None, **kw)
    out["sweep"] = {"rel": rel(f8, f1), "loss": history_gap(g8, g1, "loss"),
                    "placed": placed(f8), "lr": np.asarray(f8.opt_state["lr"]).tolist()}

    # the compiled epoch program fit runs: partitioned per device, no collective
    def compiled_text(state, models, batch_size, chunk):
        mesh, (xs, ys) = placement.model_parallel(8, models, (x, y))
        runner = EpochRunner(model, "cross-entropy", opt, 128, batch_size, chunk_size=chunk,
                             models=models)
        return jax.jit(runner.program()).lower(state, xs, ys).compile().as_text()

    ops = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter",
           "collective-broadcast")
    for name, text in {"ens": compiled_text(s8, 8, 32, None),
                       "sweep": compiled_text(f8, 16, None, 32)}.items():
        out[name]["collectives"] = [op for op in ops if op in text]
        out[name]["shapes"] = {shape: shape in text for shape in
                               ("f32[1,10,12]", "f32[2,10,12]", "f32[8,10,12]", "f32[16,10,12]")}

    errors = {}
    for name, call in {"K6": lambda: run(8, shard="models", ensemble=6),
                       "K12": lambda: run(8, shard="models", ensemble=12),
                       "K4": lambda: run(8, shard="models", ensemble=4),
                       "lrs3": lambda: run(8, shard="models", lrs=[0.1, 0.2, 0.3])}.items():
        try:
            call()
            errors[name] = None
        except ValueError as e:
            errors[name] = str(e)
    out["errors"] = errors
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def models_on_eight(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    env = dict(os.environ, XLA_FLAGS=xla_flags_with("--xla_force_host_platform_device_count=8"),
               JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=str(tmp / "cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", MODELS, str(tmp)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _assert_split(placed, models):
    """Every leaf split along ``"models"``: device d holds models d·K/8 … (d+1)·K/8 − 1."""
    per = models // 8
    for spec, shards in placed:
        assert spec == ["models"], spec
        assert shards == [[d, d * per, per] for d in range(8)], shards


@pytest.mark.slow  # a subprocess with eight CPU devices
def test_eight_devices_train_the_ensemble_like_one(models_on_eight):
    r = models_on_eight["ens"]
    assert r["rel"] < 1e-5, r
    assert r["same_ints"]  # keys and stop flags: bit-identical
    assert r["loss"] < 1e-5 and r["val_loss"] < 1e-5 and r["val_acc"] <= 1 / 64, r
    assert r["val_models"] == 8


@pytest.mark.slow  # a subprocess with eight CPU devices
def test_eight_devices_train_a_sweep_like_one(models_on_eight):
    r = models_on_eight["sweep"]
    assert r["rel"] < 1e-5, r
    assert r["loss"] < 1e-5, r
    np.testing.assert_allclose(r["lr"], np.geomspace(0.3, 0.003, 16), rtol=1e-6)


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_each_device_holds_its_models(models_on_eight):
    r = models_on_eight
    _assert_split(r["ens"]["placed"], 8)
    _assert_split(r["sweep"]["placed"], 16)
    _assert_split(r["resume"]["placed"], 8)  # a resumed run is placed again


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_model_sharded_step_has_no_collective(models_on_eight):
    r = models_on_eight
    assert r["ens"]["collectives"] == [] and r["sweep"]["collectives"] == []
    # the program is partitioned: each device's part holds its K/D models' weights only
    assert r["ens"]["shapes"] == {"f32[1,10,12]": True, "f32[2,10,12]": False,
                                  "f32[8,10,12]": False, "f32[16,10,12]": False}
    assert r["sweep"]["shapes"] == {"f32[1,10,12]": False, "f32[2,10,12]": True,
                                    "f32[8,10,12]": False, "f32[16,10,12]": False}


def test_model_sharded_run_resumes_exactly(models_on_eight):
    r = models_on_eight["resume"]
    assert r["saved_epoch"] == 2 and r["saved_shard"] == "models"
    assert r["same"] and r["history_same"]
    assert "shard 'models' -> 'batch'" in r["as_batch"]


def test_models_not_divisible_by_devices(models_on_eight):
    e = models_on_eight["errors"]
    for name, k, advice in [("K6", 6, "train 8 models, use devices=6"),
                            ("K12", 12, "train 8 or 16 models, use devices=6"),
                            ("K4", 4, "train 8 models, use devices=4"),
                            ("lrs3", 3, "train 8 models, use devices=3")]:
        assert f"K={k}, to be divisible by the D=8 devices" in e[name], e[name]
        assert advice in e[name] and "shard='batch'" in e[name], e[name]


# ---------------------------------------------------------------------------------------------
# Refusals that need no second device


def _fit(**kw):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((16, 4)), jnp.float32)
    y = jnp.asarray(np.arange(16) % 2, jnp.int32)
    return fnnet.fit(fnnet.mlp([4, 2]), "cross-entropy", fnnet.optim.sgd(0.1), (x, y),
                     batch_size=8, progress=False, **kw)


@pytest.mark.parametrize("shard", ["batch", "models"])
def test_shard_without_devices_is_refused(shard):
    with pytest.raises(ValueError, match=f"shard='{shard}' splits work across devices, but "
                                         f"devices=None"):
        _fit(ensemble=2, shard=shard)


def test_shard_models_for_one_model_is_refused():
    with pytest.raises(ValueError, match="shard='models' places the K models .* this run trains "
                                         "one model"):
        _fit(devices=1, shard="models")


def test_unknown_shard_is_refused():
    with pytest.raises(ValueError, match=r"shard must be one of \('batch', 'models'\), got 'model'"):
        _fit(devices=1, ensemble=2, shard="model")


def test_shard_models_across_processes_is_refused(monkeypatch):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ValueError, match="shard='models' runs on one host only, but 2 processes"):
        _fit(devices=1, ensemble=2, shard="models")


def test_shard_models_refuses_a_leaf_without_a_model_axis():
    mesh = parallel.make_mesh(1, placement.MODELS_AXIS)
    with pytest.raises(ValueError, match=r"leaf \['b'\] of shape \(\) has no leading model axis"):
        placement.shard_models({"a": np.zeros((2, 3)), "b": np.zeros(())}, mesh)


def test_shard_none_keeps_the_old_meaning():
    assert placement.resolve_shard(None, None, 4) is None
    assert placement.resolve_shard(None, 2, 4) == "batch"
    assert placement.resolve_shard(None, 2, None) == "batch"
    assert placement.Placement().recorded == "batch"
