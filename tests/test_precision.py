"""Mixed precision (``fnnet.precision``): policies, casting products, loss scaling.

Tolerances, stated once: a gradient under a policy is compared with the float32 gradient of
``jax.grad`` without any policy (the reference never routes through our rules or casts), leaf by
leaf, as the relative error in the Frobenius norm ``‖g − g_ref‖ / max(‖g_ref‖, 1e-4)`` (the
floor for leaves whose gradient is zero, such as a layer behind dead ReLUs):

- ``bf16`` (8 significant bits, unit roundoff 2⁻⁸ ≈ 3.9e-3): at most ``BF16_TOL`` = 5e-2;
- ``f16`` (11 significant bits, 2⁻¹¹ ≈ 4.9e-4): at most ``F16_TOL`` = 1e-2;
- ``f32``: at most 1e-5 (float32 rounding only).

The bounds leave room for the error of a product of rounded inputs growing with depth (a few
unit roundoffs per layer, three layers here), well below what would hide a wrong rule: a
missing or transposed term gives errors of order 1. The networks compared are smooth (tanh,
average pooling): with ReLU or max pooling a rounded pre-activation near zero, or a near-tie in
a window, switches a unit, and the gradient then differs by far more than the rounding.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_mnist import load, mnist_root

import fnnet
from fnnet import gradients, optim
from fnnet import loss_scale as LS
from fnnet import precision as P
from fnnet.bench.profile import dot_signatures
from fnnet.layers import AvgPool2D, Conv2D, Dense, Flatten, ReLU, Softmax, Tanh
from fnnet.training import EpochRunner, TrainState, train_step

TOL = {"f32": 1e-5, "bf16": 5e-2, "f16": 1e-2}


def rel_errors(grads, reference):
    """Each leaf's ``‖g − r‖ / max(‖r‖, 1e-4)``, in numpy (no compile per new shape)."""
    def norm(a):
        return float(np.linalg.norm(np.asarray(a, np.float32).ravel()))
    return [norm(np.asarray(g, np.float32) - np.asarray(r, np.float32)) / max(norm(r), 1e-4)
            for g, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(reference))]


def assert_close(grads, reference, tol, what):
    for index, error in enumerate(rel_errors(grads, reference)):
        assert error <= tol, f"{what}: leaf {index} relative error {error:.2e} > {tol:.0e}"


# ---------------------------------------------------------------------------------------------
# Policies


def test_get_names_and_refusals():
    assert P.get(None) is P.POLICIES["f32"] and P.get("BF16").compute == jnp.bfloat16
    assert P.get("f16") == P.Policy("f16", jnp.float16)  # a policy is the products' type only
    custom = P.Policy("half", jnp.float16)
    assert P.get(custom) is custom and repr(custom) == "Policy('half', float16)"
    for bad in ("fp8", 16, "float32"):
        with pytest.raises(ValueError, match=r"precision must be one of \('f32', 'bf16', 'f16'\)"):
            P.get(bad)
    with pytest.raises(ValueError, match="compute must be None, bfloat16 or float16"):
        P.Policy("f8", jnp.int8)
    with pytest.raises(ValueError, match="initial must be a finite number > 0"):
        LS.DynamicLossScale(initial=0.0)
    with pytest.raises(ValueError, match="within float32's range"):
        LS.DynamicLossScale(initial=1e39)
    with pytest.raises(TypeError, match="initial must be a number"):
        LS.DynamicLossScale(initial="8")
    with pytest.raises(ValueError, match="growth_interval must be a positive integer"):
        LS.DynamicLossScale(growth_interval=0)
    with pytest.raises(ValueError, match="0 < backoff < 1"):
        LS.DynamicLossScale(backoff=1.0)


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_none_is_the_model_as_it_is_everywhere():
    """``precision=None`` never turns a model built under a policy back into float32."""
    model, params, x, y = _mlp_case(0, 16, [12, 9, 4])
    cast = P.with_precision(model, "bf16")
    assert P.with_precision(cast, None) is cast
    for make in (gradients.value_and_grad, gradients.autodiff_value_and_grad):
        as_is = jax.jit(make(cast, "cross_entropy"))(params, x, y)
        named = jax.jit(make(model, "cross_entropy", precision="bf16"))(params, x, y)
        for a, b in zip(jax.tree_util.tree_leaves(as_is), jax.tree_util.tree_leaves(named)):
            np.testing.assert_array_equal(a, b)
    scored = fnnet.evaluate(cast, "cross_entropy", params, x, y)
    np.testing.assert_array_equal(scored, fnnet.evaluate(model, "cross_entropy", params, x, y,
                                                         precision="bf16"))
    state, history = fnnet.fit(cast, "cross_entropy", optim.sgd(0.1), (x, y), epochs=1,
                               batch_size=8, progress=False)
    named, _ = fnnet.fit(model, "cross_entropy", optim.sgd(0.1), (x, y), epochs=1,
                         batch_size=8, progress=False, precision="bf16")
    for a, b in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(named.params)):
        np.testing.assert_array_equal(a, b)
    assert history["config"]["run"]["precision"] is None
    assert "precision='bf16'" in history["config"]["run"]["model"]


def test_loss_scale_grows_after_interval_and_halves_on_overflow():
    scaler = LS.DynamicLossScale(initial=8.0, growth_interval=3)
    state = scaler.init()
    for _ in range(2):
        state = scaler.update(state, jnp.array(True))
    assert float(state.scale) == 8.0 and int(state.good_steps) == 2
    state = scaler.update(state, jnp.array(True))
    assert float(state.scale) == 16.0 and int(state.good_steps) == 0
    state = scaler.update(state, jnp.array(False))
    assert float(state.scale) == 8.0 and int(state.good_steps) == 0
    low = scaler.update(LS.LossScaleState(jnp.float32(1.0), jnp.int32(0)), jnp.array(False))
    assert float(low.scale) == 1.0  # never below 1


def test_with_precision_rebuilds_product_layers_only():
    model = fnnet.Sequential(Conv2D(1, 2, 3), ReLU(), Flatten(),
                             fnnet.Sequential(Dense(8, 3, init="xavier"), Softmax()))
    cast = P.with_precision(model, "bf16")
    assert repr(cast) == ("Sequential(Conv2D(1, 2, 3, precision='bf16'), ReLU(), Flatten(), "
                          "Sequential(Dense(8, 3, init='xavier', precision='bf16'), Softmax()))")
    assert cast.layers[1] is model.layers[1]
    assert P.with_precision(cast, "f32") == model
    assert P.with_precision(ReLU(), "bf16") == ReLU()


# ---------------------------------------------------------------------------------------------
# Gradients under each policy against the float32 reference


def _mlp_case(seed, batch, widths):
    model = fnnet.mlp(widths, activation="tanh")
    params = jax.jit(model.init)(jax.random.PRNGKey(seed))
    x = np.random.default_rng(seed).standard_normal((batch, widths[0]), np.float32)
    y = (np.arange(batch) % widths[-1]).astype(np.int32)
    return model, params, x, y


@pytest.mark.parametrize("policy", ["f32", "bf16", "f16"])
@settings(max_examples=4)
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 48),
       widths=st.lists(st.integers(2, 40), min_size=3, max_size=4))
def test_mlp_gradients_within_policy_tolerance(policy, seed, batch, widths):
    model, params, x, y = _mlp_case(seed, batch, widths)
    reference, results = _policy_gradients(model, policy)(params, x, y)
    for grads, (value, g) in results.items():
        assert jnp.isfinite(value)
        for leaf in jax.tree_util.tree_leaves(g):
            assert leaf.dtype == jnp.float32  # accumulated and returned in float32
        assert_close(g, reference, TOL[policy], f"{policy} {grads}")


def _policy_gradients(model, policy):
    """One compiled program: float32 ``jax.grad`` of the objective (the reference) and the
    policy's gradients by hand and by autodiff, ``{"manual": (loss, grads), "autodiff": ...}``."""
    reference = jax.grad(gradients.objective(model, "cross_entropy"))
    fns = {grads: gradients.loss_output_and_grad(model, "cross_entropy", grads=grads,
                                                 precision=policy)
           for grads in ("manual", "autodiff")}

    @jax.jit
    def run(params, x, y):
        results = {grads: fn(params, x, y) for grads, fn in fns.items()}
        return reference(params, x, y), {k: (v[0], v[2]) for k, v in results.items()}

    return run


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
@pytest.mark.parametrize("policy", ["bf16", "f16"])
@settings(max_examples=3)
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 6), size=st.integers(7, 11),
       channels=st.integers(1, 3), stride=st.integers(1, 2))
def test_cnn_gradients_within_policy_tolerance(policy, seed, batch, size, channels, stride):
    model = fnnet.Sequential(Conv2D(channels, 4, 3, stride=stride, padding="same"), Tanh(),
                             AvgPool2D(2), Flatten(), Dense(4 * (-(-size // stride) // 2) ** 2, 3),
                             Softmax())
    params = jax.jit(model.init)(jax.random.PRNGKey(seed))
    x = np.random.default_rng(seed).standard_normal((batch, size, size, channels), np.float32)
    y = (np.arange(batch) % 3).astype(np.int32)
    reference, results = _policy_gradients(model, policy)(params, x, y)
    for grads, (_, g) in results.items():
        assert_close(g, reference, TOL[policy], f"{policy} {grads}")


def test_f32_policy_is_the_unchanged_program():
    model, params, x, y = _mlp_case(0, 16, [12, 9, 4])
    plain = jax.jit(gradients.value_and_grad(model, "cross_entropy"))(params, x, y)
    policy = jax.jit(gradients.value_and_grad(model, "cross_entropy", precision="f32"))(params, x, y)
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(policy)):
        np.testing.assert_array_equal(a, b)


def test_loss_scale_is_divided_out_exactly():
    model, params, x, y = _mlp_case(1, 16, [12, 9, 4])
    plain = jax.jit(gradients.value_and_grad(model, "cross_entropy", precision="f16"))
    v1, g1 = plain(params, x, y)

    def scaled(scale):
        state = LS.LossScaleState(jnp.float32(scale), jnp.int32(0))
        fn = gradients.value_and_grad(model, LS.scaled("cross_entropy", state), precision="f16")
        return LS.unscale(jax.jit(fn)(params, x, y), state)

    v2, g2 = scaled(1024.0)  # a power of two: exact in f16 too
    assert float(v1) == float(v2)
    assert_close(g2, g1, 1e-3, "scaled")
    v3, g3 = scaled(1e30)  # overflows float16
    assert jnp.isfinite(v3) and not bool(LS.all_finite(g3))


def _dot_operand_types(compiled_text):
    """The element types of every matrix product's inputs in an optimised XLA:CPU program."""
    types = []
    for line in compiled_text.splitlines():
        if re.search(r"= \w+\[[^\]]*\]\S* dot\(", line):
            types.append(line)
    return types


def test_manual_bf16_products_read_bf16_on_the_cpu():
    """The layout fix: in the hand-derived bf16 step no product is upcast to float32 (XLA:CPU
    converts a bf16 product whose left operand is contracted over its first axis)."""
    if jax.default_backend() != "cpu":
        pytest.skip("the layout rule is XLA:CPU's")
    model, params, x, y = _mlp_case(0, 128, [784, 64, 10])
    fn = gradients.value_and_grad(model, "cross_entropy", precision="bf16")
    text = jax.jit(fn).lower(params, x, y).compile().as_text()
    computations = {m.group(1): m.group(0) for m in re.finditer(
        r"%(\S+) \([^)]*\) -> [^{]*\{.*?\n\}", text, re.S)}
    dots = [c for c in computations.values() if " dot(" in c]
    assert len(dots) == 5  # forward 2, dW 2, dX 1
    for body in dots:
        params_types = re.findall(r"parameter\(\d\)", body)
        assert params_types
        assert re.search(r"= f32\[[^\]]*\]\{[^}]*\} parameter", body) is None, body


def test_bf16_conv_kernel_gradient_has_the_patches_transposed_on_the_left():
    """``dWmat = Pᵀ·dY`` with ``Pᵀ`` written out even where the patches are the wider operand
    (``kh·kw·C = 72`` against ``O = 4``): one product of 72 rows, bf16 inputs, no ``(dYᵀ·P)ᵀ``
    (4 rows by the long contraction, which XLA:CPU runs at half the speed)."""
    if jax.default_backend() != "cpu":
        pytest.skip("the layout rule is XLA:CPU's")
    layer = Conv2D(8, 4, 3, precision="bf16")
    params = jax.eval_shape(layer.init, jax.random.PRNGKey(0))
    x, dy = jax.ShapeDtypeStruct((2, 6, 6, 8), jnp.float32), jnp.ones((2, 4, 4, 4))
    backward = jax.jit(lambda p, x, dy: layer.backward(p, layer.forward(p, x)[1], dy))
    products = dot_signatures(backward.lower(params, x, dy).compile().as_text())
    assert len(products) == 2, products  # dW and dP (the forward's own product is not needed)
    assert [p for p in products if p.startswith("f32[72,4]")], products
    assert not [p for p in products if p.startswith("f32[4,72]")], products
    assert all(re.search(r"dot\(bf16\[\S*, bf16\[", p) for p in products), products


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_concatenate_joins_narrow_floats_as_bits(dtype):
    """``precision.concatenate`` is ``jnp.concatenate`` bit for bit (NaN, infinities and signed
    zeros included), and on the CPU a narrow type's concatenate runs without any float32 pass
    (XLA's float normalisation converts a bf16 concatenate to float32 and back)."""
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-3], np.float32)
    parts = [jnp.asarray(np.concatenate([special, np.random.default_rng(k).normal(size=9)])
                         .reshape(3, 5)).astype(dtype) for k in range(3)]
    joined = P.concatenate(parts, axis=1)
    want = jnp.concatenate(parts, axis=1)
    assert joined.dtype == want.dtype and joined.shape == want.shape
    assert np.array_equal(np.asarray(joined).view(np.uint8), np.asarray(want).view(np.uint8))
    if jax.default_backend() == "cpu" and dtype != jnp.float32:
        text = jax.jit(lambda *a: P.concatenate(a, axis=1)).lower(*parts).compile().as_text()
        assert "f32[" not in text, text


# ---------------------------------------------------------------------------------------------
# Training: the step, loss scaling, ensembles


def _data(n=512, features=20, classes=5, seed=1):
    x = jax.random.normal(jax.random.PRNGKey(seed), (n, features), jnp.float32)
    return x, jnp.argmax(x[:, :classes], axis=1).astype(jnp.int32)


def test_train_step_with_loss_scaling_skips_overflow_and_is_vmappable():
    model, params, x, y = _mlp_case(2, 32, [12, 16, 4])
    opt = optim.sgd(0.1)
    model = P.with_precision(model, "f16")
    scaler = LS.DynamicLossScale()
    step = jax.jit(train_step(model, "cross_entropy", opt, loss_scale=scaler))
    start = TrainState.create(model, opt, jax.random.PRNGKey(0), params=params, loss_scale=scaler)
    key = jax.random.PRNGKey(1)
    huge = start._replace(loss_scale=LS.LossScaleState(jnp.float32(2.0 ** 60), jnp.int32(0)))
    after, stats = step(huge, x, y, key)
    assert jnp.isfinite(stats["loss"]) and float(after.loss_scale.scale) == 2.0 ** 59
    assert bool(stats["ok"]) and bool(stats["skipped"]) and not bool(after.stopped)
    for a, b in zip(jax.tree_util.tree_leaves(after.params), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(a, b)  # skipped
    moved, stats = step(start, x, y, key)
    assert int(moved.loss_scale.good_steps) == 1 and not bool(stats["skipped"])
    assert not np.array_equal(moved.params[0].W, params[0].W)
    both = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), start)
    both = both._replace(loss_scale=LS.LossScaleState(jnp.array([2.0 ** 60, 2.0 ** 10], jnp.float32),
                                                      jnp.zeros(2, jnp.int32)))
    out, _ = jax.vmap(step, in_axes=(0, None, None, None))(both, x, y, key)
    np.testing.assert_array_equal(out.loss_scale.scale, [2.0 ** 59, 2.0 ** 10])
    np.testing.assert_array_equal(out.params[0].W[0], params[0].W)
    np.testing.assert_allclose(out.params[0].W[1], moved.params[0].W, rtol=1e-6, atol=1e-7)


def test_float16_recovers_from_a_forced_overflow():
    model, opt = fnnet.mlp([20, 32, 5]), optim.sgd(0.5)
    x, y = _data()
    scaler = LS.DynamicLossScale(initial=2.0 ** 40, growth_interval=5)
    model = P.with_precision(model, "f16")
    state = TrainState.create(model, opt, jax.random.PRNGKey(0), loss_scale=scaler)
    runner = EpochRunner(model, "cross_entropy", opt, 512, 32, loss_scale=scaler)
    first = None
    skipped = 0
    for _ in range(3):
        state, stats = runner(state, x, y)
        first = first if first is not None else float(stats["loss_sum"]) / 16
        skipped += int(stats["skipped"])
    assert not bool(state.stopped), "an overflow is not divergence"
    assert skipped >= 10  # 2⁴⁰ down to below f16's range takes many halvings
    assert float(state.loss_scale.scale) < 2.0 ** 25
    assert float(stats["loss_sum"]) / 16 < 0.6 * first  # and training went on


def test_fit_refuses_narrow_master_params():
    x, y = _data(n=64, features=3, classes=2)
    with pytest.raises(ValueError, match="keeps a float32 master copy.*bfloat16"):
        fnnet.fit(fnnet.mlp([3, 2]), "ce", optim.sgd(0.1), (x, y), dtype=jnp.bfloat16,
                  precision="bf16", progress=False)
    params = fnnet.mlp([3, 2]).init(jax.random.PRNGKey(0), jnp.float16)
    with pytest.raises(ValueError, match="float16 parameters"):
        fnnet.fit(fnnet.mlp([3, 2]), "ce", optim.sgd(0.1), (x, y), params=params,
                  precision="f16", progress=False)


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_ensembles_and_checkpoints_keep_the_policy(tmp_path):
    model, opt = fnnet.mlp([20, 16, 5]), optim.momentum(0.1)
    x, y = _data()
    common = dict(epochs=2, batch_size=64, ensemble=2, progress=False, precision="f16")
    whole, history = fnnet.fit(model, "ce", opt, (x, y), **common)
    assert whole.loss_scale.scale.shape == (2,)
    assert history["skipped_steps"] == [[0, 0], [0, 0]] and len(history["loss_scale"]) == 2
    ckpt = tmp_path / "run.npz"
    fnnet.fit(model, "ce", opt, (x, y), checkpoint=ckpt,
              **dict(common, epochs=1))
    resumed, _ = fnnet.fit(model, "ce", opt, (x, y), checkpoint=ckpt, resume=True, **common)
    for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(whole)):
        np.testing.assert_array_equal(a, b)  # the loss scale came back with the params
    with pytest.raises(ValueError, match="precision 'f16' -> 'bf16'"):
        fnnet.fit(model, "ce", opt, (x, y), checkpoint=ckpt, resume=True,
                  **dict(common, precision="bf16"))
    # one model of a bf16 ensemble is the model a single bf16 run trains
    keys = jax.random.split(jax.random.PRNGKey(5), 2)
    state, _ = fnnet.fit(model, "ce", opt, (x, y), key=jax.random.PRNGKey(5),
                        **dict(common, precision="bf16"))
    both = state.params
    state, _ = fnnet.fit(model, "ce", opt, (x, y), key=keys[1],
                       **dict(common, precision="bf16", ensemble=None))
    one = state.params
    for a, b in zip(jax.tree_util.tree_leaves(both), jax.tree_util.tree_leaves(one)):
        np.testing.assert_allclose(a[1], b, rtol=1e-5, atol=1e-6)


def test_fit_refuses_what_the_policy_cannot_do():
    x, y = _data(n=64)
    with pytest.raises(ValueError, match="precision must be one of"):
        fnnet.fit(fnnet.mlp([20, 5]), "ce", optim.sgd(0.1), (x, y), precision="fp8",
                  progress=False)
    with pytest.raises(ValueError, match="keeps a float32 master copy"):
        fnnet.fit(fnnet.mlp([20, 5]), "ce", optim.sgd(0.1), (x, y), precision="bf16",
                  dtype=jnp.bfloat16, progress=False)
    with pytest.raises(TypeError, match="loss_scale must be 'auto', None or"):
        fnnet.fit(fnnet.mlp([20, 5]), "ce", optim.sgd(0.1), (x, y), precision="f16",
                  loss_scale=1024.0, progress=False)


def test_loss_scaling_composes_with_chunked_full_batches():
    """A loss scale is a transform of the loss, so the chunked full-batch gradient takes it as
    any other: the same params as the unchunked run."""
    x, y = _data(n=64)
    runs = [fnnet.fit(fnnet.mlp([20, 5]), "ce", optim.sgd(0.1), (x, y), precision="f16",
                      batch_size=None, chunk_size=chunk, progress=False, epochs=3)
            for chunk in (16, None)]
    (chunked, h_chunked), (whole, h_whole) = runs
    assert h_chunked["skipped_steps"] == h_whole["skipped_steps"] == [0, 0, 0]
    for a, b in zip(jax.tree_util.tree_leaves(chunked.params),
                    jax.tree_util.tree_leaves(whole.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.fixture
def mnist(monkeypatch):
    root = mnist_root()
    monkeypatch.setenv("FNNET_DATA_DIR", str(root))
    return load(root)


@pytest.mark.slow
def test_bf16_mnist_784_128_10_within_0_3_points_of_f32(mnist):
    """5 epochs of 784-128-10 on real MNIST (momentum 0.1, batch 128, the CLI's recipe), scored
    on the test set once per run: bfloat16 products land within 0.3 points of float32."""
    (xtr, ytr), (xte, yte) = mnist
    accuracy = {}
    for policy in ("f32", "bf16"):
        state, _ = fnnet.fit(fnnet.mlp([784, 128, 10]), "ce", optim.momentum(0.1), (xtr, ytr),
                              epochs=5, batch_size=128, key=jax.random.PRNGKey(0),
                              progress=False, precision=policy)
        params = state.params
        _, accuracy[policy] = fnnet.evaluate(fnnet.mlp([784, 128, 10]), "ce", params, xte, yte,
                                             precision=policy)
    assert float(accuracy["f32"]) > 0.97
    assert abs(float(accuracy["bf16"]) - float(accuracy["f32"])) <= 0.003, accuracy
