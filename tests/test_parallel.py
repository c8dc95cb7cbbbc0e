"""Data parallelism across devices, the chunked full-batch gradient, and no host transfer inside an
epoch.

The multi-device tests run in a subprocess started with ``XLA_FLAGS=--xla_force_host_platform_
device_count=8``: the flag has to be set before JAX starts, and this process has one CPU device.
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
from fnnet import losses
from fnnet.devices import parallel
from fnnet.gradients import loss_output_and_grad

F64 = jnp.float64
ROOT = Path(__file__).resolve().parents[1]


def _data(n, n_in, n_out, seed=0, labels=True, dtype=F64):
    """Random inputs and integer labels (or targets in [0, 1]), made with numpy: no compile."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, n_in)), dtype)
    if labels:
        return x, jnp.asarray(rng.integers(0, n_out, n), jnp.int32)
    return x, jnp.asarray(rng.random((n, n_out)), dtype)


def _params(model, seed=0, dtype=F64):
    """Random params shaped as ``model.init`` makes them, drawn with numpy (nothing to compile)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), dtype))
    return jax.tree_util.tree_map(lambda s: jnp.asarray(rng.standard_normal(s.shape) * 0.5, dtype),
                                  shapes)


def _max_rel(a, b):
    errs = [np.max(np.abs(np.asarray(u) - np.asarray(v))) / max(np.max(np.abs(np.asarray(v))), 1e-300)
            for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))]
    return max(errs)


# ---------------------------------------------------------------------------------------------
# Chunked full-batch gradient


@pytest.mark.parametrize("output, loss, grads, n, chunk", [
    ("softmax", losses.cross_entropy, "manual", 96, 32),      # chunks divide n
    ("softmax", losses.cross_entropy, "manual", 103, 16),     # a last partial chunk of 7 rows
    ("sigmoid", losses.binary_cross_entropy, "manual", 103, 16),
    ("linear", losses.mse, "manual", 50, 64),                 # chunk larger than n: one call
    ("softmax", losses.cross_entropy, "autodiff", 103, 16),
])
@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_chunked_gradient_equals_unchunked(output, loss, grads, n, chunk):
    model = fnnet.mlp([12, 9, 7, 4], output=output)
    params = _params(model, 1)
    x, y = _data(n, 12, 4, labels=output == "softmax")
    fn = loss_output_and_grad(model, loss, True, grads=grads)
    value, y_pred, g = jax.jit(fn)(params, x, y)
    c_value, c_pred, c_g = jax.jit(parallel.chunked(fn, n, chunk))(params, x, y)
    assert c_pred.shape == y_pred.shape
    assert abs(float(c_value) - float(value)) <= 1e-12 * abs(float(value))
    assert _max_rel(c_pred, y_pred) < 1e-12
    assert _max_rel(c_g, g) < 1e-12


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_full_batch_epoch_chunked_equals_unchunked():
    n = 200
    model = fnnet.mlp([10, 8, 3])
    x, y = _data(n, 10, 3)
    opt = fnnet.optim.momentum(0.1)
    out = {}
    for chunk in (None, 48):
        params = _params(model)
        epoch = jax.jit(fnnet.training.epoch_program(model, "cross-entropy", opt, n, None,
                                                     chunk_size=chunk))
        state = fnnet.TrainState(params, opt.init(params), jax.random.PRNGKey(2),
                                 jnp.zeros((), bool))
        for _ in range(2):
            state, stats = epoch(state, x, y)
        out[chunk] = (state.params, stats)
    assert _max_rel(out[48][0], out[None][0]) < 1e-12
    assert int(out[48][1]["correct"]) == int(out[None][1]["correct"])
    np.testing.assert_allclose(out[48][1]["loss_sum"], out[None][1]["loss_sum"], rtol=1e-12)


def test_auto_chunks_a_full_batch_only_where_memory_needs_it_and_matches_unchunked():
    """Issue 20: "auto" chunks by what the machine has: X above a sixteenth of the device's
    memory is chunked, below it not (unchunked was the faster step wherever measured)."""
    n = parallel.MIN_CHUNKED_ROWS
    x, y = _data(n, 256, 3)
    nbytes = x.size * x.dtype.itemsize  # 16 MiB of float64
    small, large = 16 * nbytes - 1, 16 * nbytes
    assert parallel.resolve_chunk_size("auto", n, None, x, memory_bytes=small) == 4096  # 8 MiB
    assert parallel.resolve_chunk_size("auto", n, None, x, memory_bytes=large) is None
    host = parallel.device_memory_bytes(jax.devices("cpu")[0])
    assert host == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") > 0
    assert parallel.resolve_chunk_size("auto", n, None, x) == (4096 if 16 * nbytes > host else None)
    model = fnnet.mlp([256, 5, 3])
    runs = {c: fnnet.fit(model, "cross-entropy", fnnet.optim.sgd(0.5), (x, y), epochs=2,
                         batch_size=None, progress=False, dtype=F64, chunk_size=c)
            for c in (4096, None)}
    assert _max_rel(runs[4096][0].params, runs[None][0].params) < 1e-12
    np.testing.assert_allclose(runs[4096][1]["loss"], runs[None][1]["loss"], rtol=1e-12)


def test_chunk_size_choices_and_errors():
    x = jnp.zeros((60_000, 784), jnp.float32)
    gib = 2**30
    auto = parallel.resolve_chunk_size("auto", 60_000, None, x, memory_bytes=gib)
    assert parallel.resolve_chunk_size("auto", 60_000, None, x, memory_bytes=64 * gib) is None
    assert 256 <= auto < 60_000 and auto * 784 * 4 <= parallel.CHUNK_BYTES
    assert parallel.resolve_chunk_size("auto", 60_000, 128, x) is None  # minibatches: no chunking
    assert parallel.resolve_chunk_size("auto", 1000, None, x[:1000], memory_bytes=1) is None  # cache
    assert parallel.resolve_chunk_size(None, 60_000, None, x) is None
    assert parallel.resolve_chunk_size(500, 60_000, None, x) == 500
    assert auto == 2672  # 8 MiB of float32 MNIST rows, a multiple of 8
    assert parallel.auto_chunk_size(60_000, 784, 4, multiple_of=6) % 24 == 0
    with pytest.raises(ValueError, match="full-batch training only"):
        parallel.resolve_chunk_size(500, 60_000, 128, x)
    with pytest.raises(ValueError, match="chunk_size must be 'auto', None or a positive integer"):
        parallel.resolve_chunk_size("big", 60_000, None, x)
    with pytest.raises(ValueError, match="chunk_size must be 'auto', None or a positive integer"):
        parallel.resolve_chunk_size(0, 60_000, None, x)
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        parallel.chunked(lambda p, x, y: None, 10, 0)
    fn = parallel.chunked(lambda p, x, y: (jnp.sum(x), x, p), 10, 4)
    with pytest.raises(ValueError, match="built for 10 rows"):
        fn((), jnp.zeros((12, 2)), jnp.zeros((12,)))


# ---------------------------------------------------------------------------------------------
# Device lists (this process has a single CPU device)


def test_bad_device_configurations_give_clear_errors():
    count = len(jax.devices())
    with pytest.raises(ValueError, match=f"asked for {count + 1} devices but only {count} exist"):
        parallel.resolve_devices(count + 1)
    with pytest.raises(ValueError, match="at least 1"):
        parallel.resolve_devices(0)
    with pytest.raises(ValueError, match="list of devices is empty"):
        parallel.resolve_devices([])
    with pytest.raises(ValueError, match="expected 'all'"):
        parallel.resolve_devices("gpus")
    with pytest.raises(TypeError, match="entry 0 is 'cpu:0'.*expected a jax.Device"):
        parallel.resolve_devices(["cpu:0"])
    with pytest.raises(ValueError, match="names a device twice"):
        parallel.resolve_devices([jax.devices()[0]] * 2)
    with pytest.raises(TypeError, match="expected 'all', an int or a list"):
        parallel.resolve_devices(2.0)
    assert parallel.resolve_devices("all") == jax.devices()
    assert parallel.resolve_devices(1) == jax.devices()[:1]
    x, y = _data(16, 4, 2)
    with pytest.raises(ValueError, match="asked for"):
        fnnet.fit(fnnet.mlp([4, 2]), "cross-entropy", fnnet.optim.sgd(0.1), (x, y), batch_size=8,
                  devices=count + 1, progress=False)


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_one_device_mesh_trains_like_no_mesh():
    x, y = _data(64, 10, 3)
    model = fnnet.mlp([10, 8, 3])
    kw = dict(epochs=1, batch_size=16, progress=False, dtype=F64, key=jax.random.PRNGKey(3))
    state, _ = fnnet.fit(model, "cross-entropy", fnnet.optim.sgd(0.1), (x, y), devices=1, **kw)
    p_mesh = state.params
    state, _ = fnnet.fit(model, "cross-entropy", fnnet.optim.sgd(0.1), (x, y), **kw)
    p_plain = state.params
    assert _max_rel(p_mesh, p_plain) < 1e-12


# ---------------------------------------------------------------------------------------------
# No host <-> device transfer inside an epoch


@pytest.mark.parametrize("batch_size, chunk", [(16, None), (None, 24)])
def test_epoch_makes_no_host_device_transfer(batch_size, chunk):
    n = 96
    model = fnnet.mlp([10, 8, 3])
    opt = fnnet.optim.adam(1e-2)
    epoch = fnnet.training.epoch_program(model, "cross-entropy", opt, n, batch_size,
                                         chunk_size=chunk)
    x, y = _data(n, 10, 3)
    params = _params(model)
    state = fnnet.TrainState(params, opt.init(params), jax.random.PRNGKey(1), jnp.zeros((), bool),
                             loss_limit=jnp.float32(jnp.inf))
    state, x, y = jax.device_put((state, x, y))
    compiled = jax.jit(epoch, donate_argnums=(0,)).lower(state, x, y).compile()
    with jax.transfer_guard("disallow"):
        out = compiled(state, x, y)
        out = compiled(out[0], x, y)
        jax.block_until_ready(out)
    assert int(jax.device_get(out[1]["seen"])) == (n // (batch_size or n)) * (batch_size or n)


# ---------------------------------------------------------------------------------------------
# Eight CPU devices, in a subprocess

EIGHT_DEVICES = textwrap.dedent("""
    import json, re
    import jax, jax.numpy as jnp, numpy as np
    import fnnet
    from fnnet.devices import parallel

    assert len(jax.devices()) == 8, jax.devices()
    out = {}
    kx, ky = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, (256, 20), jnp.float32)
    y = jax.random.randint(ky, (256,), 0, 4, jnp.int32)
    model = fnnet.mlp([20, 16, 4])

    def run(devices, batch_size, **kw):
        state, history = fnnet.fit(model, "cross-entropy", fnnet.optim.momentum(0.05), (x, y),
                                   epochs=3, batch_size=batch_size, key=jax.random.PRNGKey(1),
                                   progress=False, devices=devices, **kw)
        return state.params, history

    def rel(a, b):
        return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))) / np.max(np.abs(np.asarray(v))))
                   for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))

    p8, h8 = run(8, 32, validation=(x[:64], y[:64]))  # evaluation with replicated params works too
    p1, h1 = run(None, 32)
    out["minibatch_rel"] = rel(p8, p1)
    out["loss_rel"] = float(np.max(np.abs(np.array(h8["loss"]) - np.array(h1["loss"]))))
    out["val_acc"] = h8["val_accuracy"][-1]
    W = p8[0].W
    out["params_devices"] = len(W.sharding.device_set)
    out["params_replicated"] = bool(W.sharding.is_fully_replicated)

    p8f, _ = run(jax.devices(), None, chunk_size=64)
    p1f, _ = run(None, None, chunk_size=None)
    out["fullbatch_chunked_rel"] = rel(p8f, p1f)

    # the minibatch inside the compiled step is split 8 ways
    mesh, constrain, (xs, ys) = parallel.setup(8, 32, (x, y))
    seen = []
    def step(x, idx):
        xb = constrain(x[idx])
        jax.debug.inspect_array_sharding(xb, callback=seen.append)
        return xb.sum()
    jax.jit(step)(xs, jnp.arange(32)).block_until_ready()
    sharding = seen[0]
    out["batch_shards"] = len(sharding.device_set)
    out["shard_shape"] = list(sharding.shard_shape((32, 20)))

    # and the compiled epoch sums the gradient across devices
    opt = fnnet.optim.sgd(0.1)
    epoch = fnnet.training.epoch_program(model, "cross-entropy", opt, 256, 32,
                                         shard_batch=constrain)
    params = model.init(jax.random.PRNGKey(0))
    state = parallel.replicate(fnnet.TrainState(params, opt.init(params), jax.random.PRNGKey(1),
                                                jnp.zeros((), bool), loss_limit=jnp.float32(jnp.inf)),
                               mesh)
    compiled = jax.jit(epoch, donate_argnums=(0,)).lower(state, xs, ys).compile()
    out["all_reduce"] = "all-reduce" in compiled.as_text()
    with jax.transfer_guard("disallow"):
        res = compiled(state, xs, ys)
        jax.block_until_ready(res)
    out["guarded_epoch_seen"] = int(jax.device_get(res[1]["seen"]))

    errors = {}
    for name, call in {
        "indivisible": lambda: run(8, 30),
        "too_many": lambda: run(9, 32),
        "empty": lambda: run([], 32),
        "chunk": lambda: run(8, None, chunk_size=12),
        "fullbatch_indivisible": lambda: fnnet.fit(model, "cross-entropy", fnnet.optim.sgd(0.1),
                                                   (x[:250], y[:250]), batch_size=None,
                                                   devices=8, progress=False),
    }.items():
        try:
            call()
            errors[name] = None
        except (ValueError, TypeError) as e:
            errors[name] = str(e)
    out["errors"] = errors
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def eight_devices():
    env = dict(os.environ, XLA_FLAGS=xla_flags_with("--xla_force_host_platform_device_count=8"),
               JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", EIGHT_DEVICES], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow  # a subprocess with eight CPU devices
def test_eight_devices_train_like_one(eight_devices):
    r = eight_devices
    assert r["minibatch_rel"] < 1e-4, r
    assert r["loss_rel"] < 1e-4, r
    assert r["fullbatch_chunked_rel"] < 1e-4, r
    assert 0 <= r["val_acc"] <= 1
    assert r["params_devices"] == 8 and r["params_replicated"]


@pytest.mark.slow  # a subprocess with eight CPU devices
def test_eight_devices_split_the_batch(eight_devices):
    r = eight_devices
    assert r["batch_shards"] == 8
    assert r["shard_shape"] == [4, 20]
    assert r["all_reduce"]
    assert r["guarded_epoch_seen"] == 256


@pytest.mark.slow  # a subprocess with eight CPU devices
def test_eight_devices_bad_configurations(eight_devices):
    e = eight_devices["errors"]
    assert "batch size 30 is not divisible by the 8 devices" in e["indivisible"]
    assert "e.g. 24 or 32" in e["indivisible"]
    assert "asked for 9 devices but only 8 exist" in e["too_many"]
    assert "list of devices is empty" in e["empty"]
    assert "chunk_size 12 is not divisible by the 8 devices" in e["chunk"]
    assert "batch size 250 is not divisible by the 8 devices" in e["fullbatch_indivisible"]
