"""Training: the step, fit, ensembles and sweeps, checkpoints and resume, the NaN guard, determinism."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet import losses, metrics, optim

F64 = jnp.float64

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float64)
XOR_Y = np.array([[0], [1], [1], [0]], np.float64)
XOR_NET = fnnet.Sequential(fnnet.Dense(2, 3, init="xavier"), fnnet.Tanh(),
                           fnnet.Dense(3, 1, init="xavier"), fnnet.Tanh())


def spiral(n=100, seed=0):
    """Two interleaved spirals, ``n`` points each, in 2-D; labels 0 and 1."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.25, 3.0, n) * np.pi
    arms = []
    for c in (0, 1):
        r = t / (3.0 * np.pi)
        angle = t + c * np.pi
        pts = np.stack([r * np.cos(angle), r * np.sin(angle)], 1) + 0.01 * rng.normal(size=(n, 2))
        arms.append(pts)
    return np.concatenate(arms), np.repeat([0, 1], n)


def tree_max_abs_diff(a, b):  # in numpy: no compile per new shape
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in
               zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def tree_equal(a, b):
    return all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in
               zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


# ---------------------------------------------------------------------------------------------
# Learning what the notes learn


def test_xor_reaches_100_percent():
    state, history = fnnet.fit(XOR_NET, losses.mse, optim.sgd(0.5), (XOR_X, XOR_Y), epochs=600,
                                batch_size=None, key=jax.random.PRNGKey(1), progress=False,
                                dtype=F64)
    params = state.params
    out = XOR_NET.apply(params, jnp.asarray(XOR_X))
    assert float(metrics.accuracy(out, jnp.asarray(XOR_Y))) == 1.0, out
    assert history["train_accuracy"][-1] == 1.0
    assert history["loss"][-1] < 0.05 < history["loss"][0]


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_spiral_reaches_100_percent():
    x, y = spiral()
    model = fnnet.mlp([2, 32, 32, 2], activation="tanh")
    state, history = fnnet.fit(model, losses.cross_entropy, optim.adam(0.02), (x, y), epochs=400,
                                batch_size=None, key=jax.random.PRNGKey(0), progress=False)
    params = state.params
    acc = float(metrics.accuracy(model.apply(params, jnp.asarray(x, jnp.float32)), jnp.asarray(y)))
    assert acc == 1.0, f"spiral training accuracy {acc}"


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_full_batch_mode_is_plain_gradient_descent():
    # batch_size=None: each epoch is one step on all N examples, exactly W -= alpha dW (note 002)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 4)), rng.integers(0, 3, 50)
    model = fnnet.mlp([4, 5, 3])
    params0 = model.init(jax.random.PRNGKey(0), F64)
    state, history = fnnet.fit(model, losses.cross_entropy, optim.sgd(0.1), (x, y), epochs=5,
                                batch_size=None, params=params0, progress=False, dtype=F64)
    params = state.params
    vg = fnnet.value_and_grad(model, losses.cross_entropy)
    p = params0
    for _ in range(5):
        value, g = vg(p, jnp.asarray(x), jnp.asarray(y))
        p = jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, p, g)
    assert tree_max_abs_diff(params, p) < 1e-13
    assert len(history["loss"]) == 5


# ---------------------------------------------------------------------------------------------
# Manual and autodiff gradients follow the same trajectory


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_manual_and_autodiff_training_follow_the_same_trajectory():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(64, 6)), rng.integers(0, 4, 64)
    model = fnnet.mlp([6, 16, 4], activation="sigmoid")
    runs = {}
    for grads in ("manual", "autodiff"):
        runs[grads] = fnnet.fit(model, losses.cross_entropy, optim.momentum(0.1), (x, y),
                                epochs=40, batch_size=8, key=jax.random.PRNGKey(3), grads=grads,
                                progress=False, dtype=F64)  # 40 epochs × 8 steps = 320 steps
    (sm, hm), (sa, ha) = runs["manual"], runs["autodiff"]
    pm, pa = sm.params, sa.params
    np.testing.assert_allclose(hm["loss"], ha["loss"], rtol=1e-10)
    assert tree_max_abs_diff(pm, pa) < 1e-10


def test_train_step_jit_and_vmap_over_models():
    model = fnnet.mlp([3, 4, 2])
    opt = optim.sgd(0.1)
    step = jax.jit(jax.vmap(fnnet.train_step(model, losses.cross_entropy, opt),
                            in_axes=(0, None, None, None)))
    states = fnnet.TrainState.create(model, opt, jax.random.PRNGKey(0), lrs=[0.0, 0.1, 1.0],
                                     dtype=F64)
    params = states.params
    x = jax.device_put(np.ones((5, 3)))
    y = jax.device_put(np.arange(5) % 2)
    new, stats = step(states, x, y, jax.random.PRNGKey(1))
    assert stats["loss"].shape == (3,) and bool(np.all(stats["ok"]))
    params, new_params = jax.device_get((params, new.params))  # numpy: sliced without compiling
    assert tree_equal(jax.tree_util.tree_map(lambda a: a[0], new_params),
                      jax.tree_util.tree_map(lambda a: a[0], params))  # lr 0 leaves model 0 alone
    value_and_grad = jax.jit(fnnet.value_and_grad(model, losses.cross_entropy))
    for k, lr in ((1, 0.1), (2, 1.0)):
        pk = jax.tree_util.tree_map(lambda a, k=k: a[k], params)
        value, g = jax.device_get(value_and_grad(pk, x, y))
        assert float(stats["loss"][k]) == pytest.approx(float(value), rel=1e-14)
        expected = jax.tree_util.tree_map(lambda p, g, lr=lr: p - lr * g, pk, g)
        assert tree_max_abs_diff(jax.tree_util.tree_map(lambda a, k=k: a[k], new_params),
                                 expected) < 1e-14


def test_train_step_refuses_what_is_not_a_train_state():
    model = fnnet.mlp([3, 2])
    step = fnnet.train_step(model, "cross-entropy", optim.sgd(0.1))
    params = model.init(jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match=r"train_step: state must be a TrainState"):
        step(params, jnp.ones((2, 3)), jnp.zeros(2, int), jax.random.PRNGKey(0))
    scaled = fnnet.train_step(model, "cross-entropy", optim.sgd(0.1),
                              loss_scale=fnnet.loss_scale.DynamicLossScale())
    state = fnnet.TrainState.create(model, optim.sgd(0.1), jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match=r"loss_scale is set.*TrainState.create"):
        scaled(state, jnp.ones((2, 3)), jnp.zeros(2, int), jax.random.PRNGKey(0))


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
@pytest.mark.parametrize("dropout", [False, True])
def test_the_epoch_is_the_step_scanned(dropout):
    """One step, one meaning: the epoch ``fit`` compiles equals calling ``train_step`` in a
    Python loop over the same minibatches with the same keys, step by step and at the end."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(40, 5)), F64)
    y = jnp.asarray(rng.integers(0, 3, 40))
    layers = [fnnet.Dense(5, 8), fnnet.ReLU()] + ([fnnet.layers.Dropout(0.3)] if dropout else [])
    model = fnnet.Sequential(*layers, fnnet.Dense(8, 3), fnnet.Softmax())
    opt = optim.momentum(0.1)
    state = fnnet.TrainState.create(model, opt, jax.random.PRNGKey(2), dtype=F64)
    epoch = jax.jit(fnnet.training.epoch_program(model, "cross-entropy", opt, 40, 8))
    after, stats = epoch(state, x, y)

    step = jax.jit(fnnet.train_step(model, "cross-entropy", opt))
    _, shuffle_key, steps_key = jax.random.split(state.key, 3)
    order = jnp.argsort(jax.random.bits(shuffle_key, (40,))).reshape(5, 8)
    current = state._replace(loss_limit=jnp.asarray(state.loss_limit, jnp.float32))
    for t, idx in enumerate(order):
        current, one = step(current, x[idx], y[idx], jax.random.fold_in(steps_key, t))
        for name, value in one.items():
            np.testing.assert_array_equal(stats["steps"][name][t], value, err_msg=f"{name}, step {t}")
    assert tree_equal(after.params, current.params)
    assert tree_equal(after.opt_state, current.opt_state)
    assert float(stats["loss_sum"]) == pytest.approx(float(np.sum(stats["steps"]["loss"])))


# ---------------------------------------------------------------------------------------------
# Ensembles and sweeps: K models in one program equal the K trained one by one


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_ensemble_equals_models_trained_one_by_one():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(60, 5)), rng.integers(0, 3, 60)
    model = fnnet.mlp([5, 8, 3])
    key = jax.random.PRNGKey(7)
    state, history = fnnet.fit(model, losses.cross_entropy, optim.adam(0.01), (x, y), epochs=3,
                                 batch_size=16, key=key, ensemble=3, validation=(x, y),
                                 progress=False, dtype=F64)
    stacked = state.params
    assert np.shape(history["loss"]) == (3, 3) and np.shape(history["val_accuracy"]) == (3, 3)
    for k, subkey in enumerate(jax.random.split(key, 3)):
        state, h = fnnet.fit(model, losses.cross_entropy, optim.adam(0.01), (x, y), epochs=3,
                              batch_size=16, key=subkey, validation=(x, y), progress=False,
                              dtype=F64)
        params = state.params
        assert tree_max_abs_diff(jax.tree_util.tree_map(lambda a, k=k: a[k], stacked),
                                 params) < 1e-12, f"model {k} differs from its solo run"
        np.testing.assert_allclose(np.asarray(history["loss"])[:, k], h["loss"], rtol=1e-12)
    # different keys give different models
    assert tree_max_abs_diff(jax.tree_util.tree_map(lambda a: a[0], stacked),
                             jax.tree_util.tree_map(lambda a: a[1], stacked)) > 1e-3


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_learning_rate_sweep_equals_separate_runs():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 4)), rng.integers(0, 2, 40)
    model = fnnet.mlp([4, 6, 2], activation="tanh")
    lrs = [0.01, 0.1, 0.5]
    state, _ = fnnet.fit(model, losses.cross_entropy, optim.sgd(1.0), (x, y), epochs=2,
                           batch_size=10, key=jax.random.PRNGKey(0), lrs=lrs, progress=False,
                           dtype=F64)
    stacked = state.params
    for k, lr in enumerate(lrs):
        state, _ = fnnet.fit(model, losses.cross_entropy, optim.sgd(lr), (x, y), epochs=2,
                              batch_size=10, key=jax.random.PRNGKey(0), progress=False, dtype=F64)
        params = state.params
        assert tree_max_abs_diff(jax.tree_util.tree_map(lambda a, k=k: a[k], stacked),
                                 params) < 1e-12, f"lr {lr}"


# ---------------------------------------------------------------------------------------------
# Checkpoints and resume


def test_checkpoint_round_trip(tmp_path):
    model = fnnet.mlp([4, 3, 2])
    params = model.init(jax.random.PRNGKey(0))
    state = optim.adam(1e-3).init(params)
    path = fnnet.save(tmp_path / "ckpt.npz", {"params": params, "opt_state": state},
                      epoch=3, note="hello")
    tree, meta = fnnet.load(path, like={"params": params, "opt_state": state})
    assert tree_equal(tree["params"], params) and tree_equal(tree["opt_state"], state)
    assert meta == {"epoch": 3, "note": "hello"}
    other = fnnet.mlp([4, 5, 2]).init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"\[0\]\.W: checkpoint has shape \(3, 4\), expected \(5, 4\)"):
        fnnet.load(path, like={"params": other, "opt_state": optim.adam(1e-3).init(other)})


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_resumed_run_equals_uninterrupted_run(tmp_path):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(48, 5)), rng.integers(0, 3, 48)
    model = fnnet.mlp([5, 7, 3])
    kw = dict(batch_size=12, key=jax.random.PRNGKey(5), progress=False, validation=(x, y))
    state, h_full = fnnet.fit(model, "cross-entropy", optim.momentum(0.05), (x, y), epochs=4, **kw)
    full = state.params
    ckpt = tmp_path / "run.npz"
    fnnet.fit(model, "cross-entropy", optim.momentum(0.05), (x, y), epochs=2, checkpoint=ckpt, **kw)
    state, h_res = fnnet.fit(model, "cross-entropy", optim.momentum(0.05), (x, y), epochs=4,
                               checkpoint=ckpt, resume=True, **kw)
    resumed = state.params
    assert tree_equal(full, resumed), "resumed params differ from the uninterrupted run"
    assert h_res["loss"] == h_full["loss"] and h_res["epoch"] == [1, 2, 3, 4]
    _, meta = fnnet.load(ckpt)
    assert meta["epoch"] == 4


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_resume_from_corrupted_or_truncated_checkpoint_is_a_clear_error(tmp_path):
    x, y = np.ones((8, 2)), np.zeros(8, int)
    model = fnnet.mlp([2, 2])
    ckpt = tmp_path / "run.npz"
    fnnet.fit(model, "cross-entropy", optim.sgd(0.1), (x, y), epochs=1, batch_size=4,
              checkpoint=ckpt, progress=False)
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"run\.npz.*(corrupted|truncated)"):
        fnnet.fit(model, "cross-entropy", optim.sgd(0.1), (x, y), epochs=2, batch_size=4,
                  checkpoint=ckpt, resume=True, progress=False)
    ckpt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=r"run\.npz"):
        fnnet.fit(model, "cross-entropy", optim.sgd(0.1), (x, y), epochs=2, batch_size=4,
                  checkpoint=ckpt, resume=True, progress=False)
    # a checkpoint of another network
    other = tmp_path / "other.npz"
    fnnet.fit(fnnet.mlp([2, 3, 2]), "cross-entropy", optim.sgd(0.1), (x, y), epochs=1,
              batch_size=4, checkpoint=other, progress=False)
    with pytest.raises(ValueError, match=r"another configuration \(model 'Sequential\(Dense\(2, 3\)"):
        fnnet.fit(model, "cross-entropy", optim.sgd(0.1), (x, y), epochs=2, batch_size=4,
                  checkpoint=other, resume=True, progress=False)


# ---------------------------------------------------------------------------------------------
# Safety: the NaN guard, determinism


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_non_finite_loss_stops_training_and_keeps_last_finite_params():
    rng = np.random.default_rng(5)
    x, y = 10 * rng.normal(size=(32, 3)), rng.normal(size=(32, 1))
    model = fnnet.mlp([3, 16, 1], output="linear")
    with pytest.warns(RuntimeWarning, match=r"(became non-finite|past the divergence bound [\d.e+]+,) at "
                                          r"epoch \d+, step \d+ \(last finite loss"):
        state, history = fnnet.fit(model, losses.mse, optim.sgd(10.0), (x, y), epochs=50,
                                    batch_size=8, key=jax.random.PRNGKey(0), progress=False)
        params = state.params
    assert len(history["epoch"]) < 50, "training went on after the loss diverged"
    assert history["diverged"]
    leaves = jax.tree_util.tree_leaves(params)
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in leaves)
    # the params returned are ones whose loss is finite
    assert bool(jnp.isfinite(losses.mse.value(model.apply(params, jnp.asarray(x[:8], jnp.float32)),
                                              jnp.asarray(y[:8], jnp.float32))))


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_ensemble_member_that_diverges_is_frozen_others_go_on():
    rng = np.random.default_rng(6)
    x, y = 10 * rng.normal(size=(32, 3)), rng.normal(size=(32, 1))
    model = fnnet.mlp([3, 8, 1], output="linear")
    with pytest.warns(RuntimeWarning, match="model 1: loss (became non-finite|reached .* past the "
                                          "divergence bound)"):
        state, history = fnnet.fit(model, losses.mse, optim.sgd(1.0), (x, y), epochs=6,
                                    batch_size=8, lrs=[1e-4, 10.0], progress=False)
        params = state.params
    assert len(history["epoch"]) == 6
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree_util.tree_leaves(params))


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_same_key_gives_bit_identical_params():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(100, 6)).astype(np.float32), rng.integers(0, 3, 100)
    model = fnnet.mlp([6, 10, 3])
    runs = [fnnet.fit(model, "cross-entropy", optim.adam(1e-2), (x, y), epochs=3, batch_size=20,
                      key=jax.random.PRNGKey(11), progress=False)[0].params for _ in range(2)]
    assert tree_equal(*runs)
    state, _ = fnnet.fit(model, "cross-entropy", optim.adam(1e-2), (x, y), epochs=3, batch_size=20,
                         key=jax.random.PRNGKey(12), progress=False)
    other = state.params
    assert not tree_equal(runs[0], other)


# ---------------------------------------------------------------------------------------------
# The loop's interface: progress, history, the last partial batch, bad arguments


def test_progress_line_and_quiet(capsys):
    x, y = np.ones((10, 2)), np.zeros(10, int)
    fnnet.fit(fnnet.mlp([2, 2]), "cross-entropy", optim.sgd(0.1), (x, y), epochs=2, batch_size=5,
              validation=(x, y))
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "ex/s" in err and "val acc" in err
    fnnet.fit(fnnet.mlp([2, 2]), "cross-entropy", optim.sgd(0.1), (x, y), epochs=2, batch_size=5,
              progress=False)
    assert capsys.readouterr().err == ""


def test_history_and_last_partial_batch_dropped():
    x, y = np.random.default_rng(0).normal(size=(23, 2)), np.zeros(23, int)
    _, history = fnnet.fit(fnnet.mlp([2, 2]), "cross-entropy", optim.sgd(0.1), (x, y), epochs=2,
                           batch_size=10, progress=False)
    for name in ("epoch", "loss", "train_accuracy", "val_loss", "val_accuracy",
                 "examples_per_second", "seconds"):
        assert len(history[name]) == 2, name
    assert history["compile_seconds"] > 0
    assert history["val_accuracy"] == [None, None]


def test_bad_arguments_give_clear_errors():
    x, y = np.ones((10, 2)), np.zeros(10, int)
    model = fnnet.mlp([2, 2])
    with pytest.raises(ValueError, match="batch_size 11 is larger than the 10 training examples"):
        fnnet.fit(model, "cross-entropy", optim.sgd(0.1), (x, y), batch_size=11, progress=False)
    with pytest.raises(ValueError, match="grads must be one of"):
        fnnet.fit(model, "cross-entropy", optim.sgd(0.1), (x, y), batch_size=5, grads="numeric",
                  progress=False)
    with pytest.raises(ValueError, match="x has 10 rows but y has 9"):
        fnnet.fit(model, "cross-entropy", optim.sgd(0.1), (x, y[:9]), progress=False)
    with pytest.raises(TypeError, match="floating-point"):
        fnnet.fit(model, "cross-entropy", optim.sgd(0.1), (x.astype(np.uint8), y), batch_size=5,
                  progress=False)
    with pytest.raises(ValueError, match=r"Dense\(2, 2\).*\(N, 2\).*\(5, 3\)"):
        fnnet.fit(model, "cross-entropy", optim.sgd(0.1), (np.ones((10, 3)), y), batch_size=5,
                  progress=False)
    with pytest.raises(ValueError, match="ensemble=2 but 3 learning rates"):
        fnnet.fit(model, "cross-entropy", optim.sgd(0.1), (x, y), batch_size=5, ensemble=2,
                  lrs=[1, 2, 3], progress=False)
    with pytest.raises(ValueError, match="unknown loss"):
        fnnet.fit(model, "hinge", optim.sgd(0.1), (x, y), batch_size=5, progress=False)


# ---------------------------------------------------------------------------------------------
# Metrics


def test_accuracy_and_confusion_matrix():
    y_pred = jnp.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    labels = jnp.array([0, 1, 1, 2])
    assert float(metrics.accuracy(y_pred, labels)) == 0.5
    assert float(metrics.accuracy(y_pred, jax.nn.one_hot(labels, 3))) == 0.5
    cm = metrics.confusion_matrix(y_pred, labels, 3)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 1, 1], [1, 0, 0]])
    assert int(cm.sum()) == 4
    # one output: thresholded at 0.5
    assert float(metrics.accuracy(jnp.array([[0.2], [0.8]]), jnp.array([[0.0], [0.0]]))) == 0.5
    jitted = jax.jit(metrics.confusion_matrix, static_argnums=2)(y_pred, labels, 3)
    np.testing.assert_array_equal(jitted, cm)


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_a_stopped_model_reports_nan_not_a_perfect_loss():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(64, 4)), rng.integers(0, 2, 64)
    with pytest.warns(RuntimeWarning, match="model 1"):
        _, history = fnnet.fit(fnnet.mlp([4, 8, 2]), losses.cross_entropy, optim.sgd(0.1), (x, y),
                               epochs=3, batch_size=16, lrs=[0.1, 1e30], progress=False)
    loss = np.asarray(history["loss"], dtype=float)
    acc = np.asarray(history["train_accuracy"], dtype=float)
    assert np.all(np.isfinite(loss[:, 0])) and np.all(np.isnan(loss[1:, 1]))
    assert np.all(np.isnan(acc[1:, 1]))


def test_to_device_checks_converts_and_shares_aligned_host_arrays():
    x = fnnet.datasets.aligned_empty((50, 4), np.float32)
    x[:] = np.random.default_rng(0).random((50, 4))
    y = np.arange(50) % 3  # int64 labels become int32
    xd, yd = fnnet.to_device(x, y)
    assert xd.dtype == jnp.float32 and yd.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(xd), x)
    np.testing.assert_array_equal(np.asarray(yd), y)
    if jax.devices()[0].platform == "cpu":  # the data is held once, not copied
        assert xd.unsafe_buffer_pointer() == x.ctypes.data
    x64, t = fnnet.to_device(x.astype(np.float64), np.eye(3)[y], dtype=jnp.float64)
    assert x64.dtype == jnp.float64 and t.dtype == jnp.float64  # float targets take the dtype
    xs, _ = fnnet.to_device(x.astype(np.float16), y)
    assert xs.dtype == jnp.float32
    with pytest.raises(ValueError, match="validation x must have shape"):
        fnnet.to_device(x[:, 0], y, where="validation")
    with pytest.raises(ValueError, match="50 rows but y has 49"):
        fnnet.to_device(x, y[:49])
    with pytest.raises(TypeError, match="floating-point"):
        fnnet.to_device(x.astype(np.uint8), y)


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_fit_trains_sequence_models_and_scores_every_token():
    """Ids ``(N, T)`` stay integer for an embedding; ``(N, T, F)`` sequences are floats; the
    accuracy of a model with ``(N, T, V)`` outputs is over every token, in fit and evaluate."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 7, (48, 6)).astype(np.int32)
    labels = np.roll(ids, -1, axis=1)
    model = fnnet.Sequential(fnnet.Embedding(7, 8), fnnet.LSTM(8, 12), fnnet.Dense(12, 7),
                             fnnet.Softmax())
    state, history = fnnet.fit(model, "ce", optim.adam(1e-2), (ids, labels), epochs=2,
                               batch_size=16, validation=(ids, labels), progress=False)
    assert history["loss"][1] < history["loss"][0]
    expected = float(jax.jit(lambda p, x, y: metrics.accuracy(model.apply(p, x), y))(
        state.params, jax.device_put(ids), jax.device_put(labels)))
    _, accuracy = fnnet.evaluate(model, "ce", state.params, ids, labels, batch_size=20)
    assert 0 <= float(accuracy) <= 1 and float(accuracy) == pytest.approx(expected, abs=1e-6)
    assert history["val_accuracy"][-1] == pytest.approx(expected, abs=1e-6)
    assert all(0 <= a <= 1 for a in history["train_accuracy"])
    with pytest.raises(TypeError, match="x must hold integer ids"):
        fnnet.fit(model, "ce", optim.sgd(0.1), (ids.astype(np.float32), labels), progress=False)

    x = rng.normal(size=(32, 5, 3)).astype(np.float32)
    y = (x.sum(axis=(1, 2)) > 0).astype(np.int32)
    classifier = fnnet.Sequential(fnnet.GRU(3, 8), fnnet.LastStep(), fnnet.Dense(8, 2),
                                  fnnet.Softmax())
    _, history = fnnet.fit(classifier, "ce", optim.adam(1e-2), (x, y), epochs=3, batch_size=8,
                           progress=False)
    assert history["loss"][-1] < history["loss"][0]
