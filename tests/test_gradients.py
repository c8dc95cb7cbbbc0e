"""The hand-derived gradients against jax.grad / jax.vjp, in float64, to round-off.

The reference side always differentiates ``apply`` (plain jnp) with JAX's own autodiff; it never
calls a ``backward`` of ours.
"""

import itertools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fnnet
from fnnet import losses
from fnnet.layers.activations import softmax_backward_jacobian, softmax_backward_simple

F64 = jnp.float64
RTOL = 1e-10

HIDDEN = {"relu": fnnet.ReLU, "sigmoid": fnnet.Sigmoid, "tanh": fnnet.Tanh}
OUTPUTS = {
    "softmax+ce": ("softmax", losses.cross_entropy),
    "sigmoid+bce": ("sigmoid", losses.binary_cross_entropy),
    "linear+mse": ("linear", losses.mse),
    "softmax+mse": ("softmax", losses.mse),
    "tanh+mse": ("tanh", losses.mse),
}


def rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    scale = np.max(np.abs(b)) if b.size else 0.0
    err = np.max(np.abs(a - b)) if a.size else 0.0
    return err / scale if scale > 0 else err


def assert_trees_close(manual, reference, rtol=RTOL, what="grad"):
    paths = jax.tree_util.tree_flatten_with_path(manual)[0]
    ref_leaves = jax.tree_util.tree_leaves(reference)
    assert jax.tree_util.tree_structure(manual) == jax.tree_util.tree_structure(reference)
    for (path, m), r in zip(paths, ref_leaves):
        assert m.shape == r.shape, f"{what}{jax.tree_util.keystr(path)}: shape {m.shape} vs {r.shape}"
        e = rel_err(m, r)
        assert e <= rtol, f"{what}{jax.tree_util.keystr(path)}: relative error {e:.3e} > {rtol}"


def make_targets(rng, output, loss, batch, n_out):
    shape = (batch, n_out)
    if loss is losses.cross_entropy:
        return np.eye(n_out)[rng.integers(0, n_out, batch)]
    if loss is losses.binary_cross_entropy:
        return (rng.random(shape) < 0.5).astype(np.float64)
    if output == "tanh":
        return rng.uniform(-0.9, 0.9, shape)
    if output == "softmax":
        e = np.exp(rng.normal(size=shape))
        return e / e.sum(-1, keepdims=True)
    return rng.normal(size=shape)


def make_case(hidden, output, depth, batch, seed):
    """A random network, params, inputs and targets, drawn with numpy (no eager JAX per shape)."""
    rng = np.random.default_rng(seed)
    sizes = [int(n) for n in rng.integers(2, 9, depth + 1)]
    act, loss = OUTPUTS[output]
    model = fnnet.mlp(sizes, activation=hidden, output=act)
    params = tuple(
        fnnet.DenseParams(W=rng.normal(size=(n_out, n_in)) / np.sqrt(n_in),
                          b=0.1 * rng.normal(size=n_out))  # non-zero biases: every path used
        if isinstance(layer, fnnet.Dense) else ()
        for layer, n_in, n_out in zip(model.layers, np.repeat(sizes[:-1], 2),
                                      np.repeat(sizes[1:], 2))
    )
    params = jax.device_put(params)  # device_put: jnp.asarray compiles a copy for each new shape
    x = jax.device_put(rng.normal(size=(batch, sizes[0])))
    y = jax.device_put(make_targets(rng, act, loss, batch, sizes[-1]))
    return model, loss, params, x, y


def both_gradients(model, loss, params, x, y, fused=True):
    """Manual and autodiff (value, grads), compiled together in one program."""
    manual = fnnet.value_and_grad(model, loss, fused)
    reference = fnnet.autodiff_value_and_grad(model, loss, fused)
    return jax.jit(lambda p, x, y: (manual(p, x, y), reference(p, x, y)))(params, x, y)


# ---------------------------------------------------------------------------------------------
# The grid: hidden × output × depth × batch, float64, relative error ≤ 1e-10.


@pytest.mark.parametrize(
    "hidden,output,depth,batch",
    list(itertools.product(HIDDEN, OUTPUTS, [1, 2, 3], [1, 7, 64])),
)
def test_manual_equals_autodiff_grid(hidden, output, depth, batch):
    model, loss, params, x, y = make_case(hidden, output, depth, batch, seed=depth * 100 + batch)
    (lm, gm), (la, ga) = both_gradients(model, loss, params, x, y)
    assert abs(float(lm) - float(la)) <= RTOL * max(1.0, abs(float(la)))
    assert_trees_close(gm, ga)


@given(
    hidden=st.sampled_from(sorted(HIDDEN)),
    output=st.sampled_from(sorted(OUTPUTS)),
    depth=st.integers(1, 3),
    batch=st.integers(1, 65),
    seed=st.integers(0, 2**31 - 1),
    fused=st.booleans(),
)
def test_manual_equals_autodiff_property(hidden, output, depth, batch, seed, fused):
    model, loss, params, x, y = make_case(hidden, output, depth, batch, seed)
    (lm, gm), (la, ga) = both_gradients(model, loss, params, x, y, fused)
    assert abs(float(lm) - float(la)) <= RTOL * max(1.0, abs(float(la)))
    assert_trees_close(gm, ga)


def manual_and_vjp(layer, params, x, dy):
    """``forward``+``backward`` and ``jax.vjp`` of ``apply``, compiled in one program."""

    def run(params, x, dy):
        y, cache = layer.forward(params, x)
        y_ref, vjp = jax.vjp(layer.apply, params, x)
        return y, y_ref, layer.backward(params, cache, dy), vjp(dy)

    return jax.jit(run)(params, x, dy)


# ---------------------------------------------------------------------------------------------
# Each layer's backward alone against jax.vjp of its apply; dW, db and dX asserted on their own.


@given(n_in=st.integers(1, 12), n_out=st.integers(1, 12), batch=st.integers(0, 9),
       seed=st.integers(0, 2**31 - 1))
def test_dense_backward_vs_vjp(n_in, n_out, batch, seed):
    layer = fnnet.Dense(n_in, n_out)
    rng = np.random.default_rng(seed)
    params = fnnet.DenseParams(W=rng.normal(size=(n_out, n_in)), b=rng.normal(size=n_out))
    shape = (n_in,) if batch == 0 else (batch, n_in)  # batch 0 stands for a single example
    x, dy = rng.normal(size=shape), rng.normal(size=shape[:-1] + (n_out,))
    y, y_ref, (dp_m, dx_m), (dp_a, dx_a) = manual_and_vjp(layer, params, x, dy)
    np.testing.assert_array_equal(y, y_ref)
    assert rel_err(dp_m.W, dp_a.W) <= RTOL, "dW differs from jax.vjp"
    assert rel_err(dp_m.b, dp_a.b) <= RTOL, "db differs from jax.vjp"
    assert rel_err(dx_m, dx_a) <= RTOL, "dX differs from jax.vjp"
    assert dp_m.W.shape == (n_out, n_in) and dp_m.b.shape == (n_out,) and dx_m.shape == shape


@pytest.mark.parametrize(
    "layer",
    [fnnet.ReLU(), fnnet.Sigmoid(), fnnet.Tanh(), fnnet.Softmax(), fnnet.Softmax(jacobian=True),
     fnnet.Identity()],
    ids=repr,
)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=2), seed=st.integers(0, 2**31 - 1),
       scale=st.sampled_from([0.1, 1.0, 10.0]))
def test_activation_backward_vs_vjp(layer, shape, seed, scale):
    rng = np.random.default_rng(seed)
    x, dy = scale * rng.normal(size=shape), rng.normal(size=shape)
    y, y_ref, (dp, dx), (_, dx_ref) = manual_and_vjp(layer, (), x, dy)
    np.testing.assert_array_equal(y, y_ref)
    assert dp == ()
    # round-off in dX = J dY scales with |dY| (every |J_ij| ≤ 1), not with |dX|, which a saturated
    # softmax makes tiny: measure the error on that scale
    err = np.max(np.abs(np.asarray(dx) - np.asarray(dx_ref)))
    scale = max(np.max(np.abs(np.asarray(dx_ref))), np.max(np.abs(dy)))
    assert err <= RTOL * scale, f"{layer}: dX differs from jax.vjp by {err:.3e} (scale {scale:.3e})"


@given(depth=st.integers(1, 3), batch=st.integers(1, 9), seed=st.integers(0, 2**31 - 1))
def test_sequential_backward_vs_vjp_including_dx(depth, batch, seed):
    model, _, params, x, _ = make_case("tanh", "softmax+mse", depth, batch, seed)
    dy = np.random.default_rng(seed + 1).normal(size=(batch, model.layers[-2].n_out))
    y, y_ref, (dp_m, dx_m), (dp_a, dx_a) = manual_and_vjp(model, params, x, dy)
    np.testing.assert_array_equal(y, y_ref)
    assert_trees_close(dp_m, dp_a)
    assert rel_err(dx_m, dx_a) <= RTOL, "dX of the whole network differs from jax.vjp"


def test_relu_derivative_at_zero_is_zero_on_both_paths():
    # zero-initialised biases behind zero inputs: pre-activations are exactly 0
    model = fnnet.Sequential(fnnet.Dense(3, 4), fnnet.ReLU(), fnnet.Dense(4, 2), fnnet.Softmax())
    params = model.init(jax.random.PRNGKey(0), F64)
    x = jax.device_put(np.zeros((5, 3)))
    y = jax.device_put(np.eye(2)[np.arange(5) % 2])
    _, gm = jax.jit(fnnet.value_and_grad(model, losses.cross_entropy))(params, x, y)
    _, ga = jax.jit(fnnet.autodiff_value_and_grad(model, losses.cross_entropy))(params, x, y)
    assert_trees_close(gm, ga)
    z = jax.device_put(np.zeros(4))
    relu_grad = jax.jit(jax.grad(lambda v: jnp.sum(fnnet.ReLU().apply((), v))))(z)
    relu_backward = jax.jit(lambda v: fnnet.ReLU().backward((), v, jnp.ones(4, F64))[1])(z)
    assert not np.any(np.asarray(relu_grad)) and not np.any(np.asarray(relu_backward))
    # the first layer's bias gradient is exactly zero: every hidden unit is dead at 0
    assert not np.any(np.asarray(gm[0].b))


# ---------------------------------------------------------------------------------------------
# Softmax: Jacobian form against the O(n) form; fused against unfused


@given(n=st.integers(1, 12), batch=st.integers(0, 6), seed=st.integers(0, 2**31 - 1))
def test_softmax_jacobian_form_equals_simple_form(n, batch, seed):
    rng = np.random.default_rng(seed)
    shape = (n,) if batch == 0 else (batch, n)
    e = np.exp(3 * rng.normal(size=shape))
    y, dy = e / e.sum(-1, keepdims=True), rng.normal(size=shape)
    a, b = jax.jit(lambda y, dy: (softmax_backward_jacobian(y, dy),
                                  softmax_backward_simple(y, dy)))(y, dy)
    assert rel_err(a, b) <= RTOL


# the Jacobian form is Softmax's own: sigmoid + BCE has one unfused rule
@pytest.mark.parametrize("output, jacobian", [("softmax+ce", False), ("softmax+ce", True),
                                              ("sigmoid+bce", False)])
@given(depth=st.integers(1, 3), batch=st.integers(1, 33), seed=st.integers(0, 2**31 - 1))
def test_fused_equals_unfused(jacobian, output, depth, batch, seed):
    model, loss, params, x, y = make_case("relu", output, depth, batch, seed)
    if jacobian and output == "softmax+ce":
        model = fnnet.Sequential(*model.layers[:-1], fnnet.Softmax(jacobian=True))
    fused_vg = fnnet.value_and_grad(model, loss, fused=True)
    unfused_vg = fnnet.value_and_grad(model, loss, fused=False)
    (lf, gf), (lu, gu) = jax.jit(lambda *a: (fused_vg(*a), unfused_vg(*a)))(params, x, y)
    assert abs(float(lf) - float(lu)) <= 1e-12 * max(1.0, abs(float(lu)))
    assert_trees_close(gf, gu, what="fused vs unfused ")


def test_fused_rule_is_used_by_default_and_survives_extreme_logits():
    # logits of ±1000: the unfused path cannot recover (softmax saturates to exactly 0 and 1),
    # the fused one gives the exact gradient and a finite, correct loss
    model = fnnet.Sequential(fnnet.Dense(2, 2), fnnet.Softmax())
    params = (fnnet.DenseParams(W=jnp.array([[1000.0, 0.0], [-1000.0, 0.0]], F64),
                                b=jnp.zeros(2, F64)), ())
    x = jnp.array([[1.0, 0.0]], F64)
    y = jnp.array([[0.0, 1.0]], F64)  # the wrong class is certain
    value, grads = fnnet.value_and_grad(model, losses.cross_entropy)(params, x, y)
    assert float(value) == pytest.approx(2000.0)
    np.testing.assert_allclose(grads[0].b, [1.0, -1.0])
    ref_value, ref = fnnet.autodiff_value_and_grad(model, losses.cross_entropy)(params, x, y)
    assert float(ref_value) == pytest.approx(2000.0)
    assert_trees_close(grads, ref)


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_fused_rule_found_in_nested_sequential():
    inner = fnnet.Sequential(fnnet.Dense(4, 3), fnnet.Softmax())
    model = fnnet.Sequential(fnnet.Dense(5, 4), fnnet.Tanh(), inner)
    params = model.init(jax.random.PRNGKey(3), F64)
    x = jax.random.normal(jax.random.PRNGKey(4), (6, 5), F64)
    y = jax.device_put(np.arange(6) % 3)  # integer labels, accepted by cross-entropy
    lm, gm = jax.jit(fnnet.value_and_grad(model, losses.cross_entropy))(params, x, y)
    la, ga = jax.jit(fnnet.autodiff_value_and_grad(model, losses.cross_entropy, fused=False))(
        params, x, y)
    assert float(lm) == pytest.approx(float(la), rel=1e-12)
    assert_trees_close(gm, ga)
    assert jax.tree_util.tree_structure(gm) == jax.tree_util.tree_structure(params)


@pytest.mark.parametrize("batch", [True, False])
def test_fused_rule_with_integer_labels_matches_autodiff(batch):
    """Integer labels take a shortcut (a one-hot row sums to 1); it must give what the general
    rule and jax.grad give, row by row."""
    model = fnnet.mlp([5, 4, 3])
    params = model.init(jax.random.PRNGKey(6), F64)
    x = jax.random.normal(jax.random.PRNGKey(7), (6, 5), F64)
    labels = jnp.array([0, 2, 1, 1, 0, 2])
    one_hot = jax.nn.one_hot(labels, 3, dtype=F64)
    if not batch:
        x, labels, one_hot = x[0], labels[0], one_hot[0]
    lm, gm = jax.jit(fnnet.value_and_grad(model, losses.cross_entropy))(params, x, labels)
    lh, gh = jax.jit(fnnet.value_and_grad(model, losses.cross_entropy))(params, x, one_hot)
    la, ga = fnnet.autodiff_value_and_grad(model, losses.cross_entropy, fused=False)(params, x, labels)
    for what, (l_ref, g_ref) in {"one-hot targets": (lh, gh), "jax.grad": (la, ga)}.items():
        assert float(lm) == pytest.approx(float(l_ref), rel=1e-12), what
        assert_trees_close(gm, g_ref)
    a = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(8), (6, 3), F64))
    rows = losses.cross_entropy.fused_grad(a, jnp.array([0, 2, 1, 1, 0, 2]))
    per_example = jax.vmap(losses.cross_entropy.fused_grad)(a, jnp.array([0, 2, 1, 1, 0, 2]))
    np.testing.assert_allclose(per_example / 6, rows, rtol=1e-15, err_msg="vmap over single examples")


def test_labels_outside_the_classes_are_refused_or_nan_never_a_loss_of_zero():
    """Issue 20: labels all 99 scored a loss of 0. Concrete labels are refused (value, grad,
    the fused rule, evaluate); traced ones (under jit, where nothing can be raised) give a NaN
    loss and gradient on both gradient paths."""
    model = fnnet.mlp([5, 3])
    params = model.init(jax.random.PRNGKey(6), F64)
    x = jax.random.normal(jax.random.PRNGKey(7), (4, 5), F64)
    bad = jnp.array([0, 99, 1, -1])
    y_pred = model.apply(params, x)
    for call in (losses.cross_entropy.value, losses.cross_entropy.grad,
                 losses.cross_entropy.value_from_logits, losses.cross_entropy.fused_grad):
        with pytest.raises(ValueError, match=r"2 labels outside 0..2"):
            call(y_pred, bad)
        assert np.isnan(np.asarray(jax.jit(call)(y_pred, bad))).any()
    with pytest.raises(ValueError, match="is not a class label"):
        fnnet.evaluate(model, "cross_entropy", params, x, jnp.full((4,), 99))
    for gradient in (fnnet.value_and_grad, fnnet.autodiff_value_and_grad):
        value, grads = jax.jit(gradient(model, "cross_entropy"))(params, x, bad)
        assert np.isnan(float(value)) and np.isnan(np.asarray(grads[0].W)).any()


# ---------------------------------------------------------------------------------------------
# manual_vjp: jax.grad through an fnnet network gets our backward


def test_manual_vjp_under_jax_grad_equals_autodiff():
    model, loss, params, x, y = make_case("sigmoid", "tanh+mse", 2, 9, seed=5)
    f = fnnet.manual_vjp(model)

    def outer(apply):
        return lambda p, x: jnp.sum(jnp.sin(apply(p, x)) * y)

    gp_m, gx_m = jax.grad(outer(f), argnums=(0, 1))(params, x)
    gp_a, gx_a = jax.grad(outer(model.apply), argnums=(0, 1))(params, x)
    assert_trees_close(gp_m, gp_a)
    assert rel_err(gx_m, gx_a) <= RTOL
    np.testing.assert_array_equal(f(params, x), model.apply(params, x))


def test_manual_vjp_really_calls_our_backward():
    # a layer whose backward is deliberately wrong makes manual_vjp's gradient wrong: proof that
    # jax.grad goes through the hand-written rule and not through JAX's own
    class Doubled(fnnet.Tanh):
        def backward(self, params, cache, dy):
            return (), 2 * super().backward(params, cache, dy)[1]

    model = fnnet.Sequential(fnnet.Dense(3, 2), Doubled())
    params = model.init(jax.random.PRNGKey(0), F64)
    x = jnp.ones((1, 3), F64)
    g_m = jax.grad(lambda p: jnp.sum(fnnet.manual_vjp(model)(p, x)))(params)
    g_a = jax.grad(lambda p: jnp.sum(model.apply(p, x)))(params)
    np.testing.assert_allclose(g_m[0].W, 2 * g_a[0].W)


# ---------------------------------------------------------------------------------------------
# Stability at the extremes


@pytest.mark.parametrize("dtype", [jnp.float32, F64])
def test_losses_finite_at_probabilities_zero_and_one(dtype):
    p = jnp.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype)
    y_right = p
    y_wrong = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype)
    for loss in (losses.cross_entropy, losses.binary_cross_entropy, losses.mse):
        assert float(loss.value(p, y_right)) == 0.0, f"{loss}: a perfect prediction costs 0"
        v = loss.value(p, y_wrong)
        g = loss.grad(p, y_wrong)
        assert jnp.isfinite(v) and v > 0, f"{loss}: value at certain-and-wrong is {v}"
        assert bool(jnp.all(jnp.isfinite(g))), f"{loss}: grad not finite"
        assert bool(jnp.all(jnp.isfinite(loss.grad(p, y_right)))), f"{loss}: grad not finite"
    # wrong and certain: −log(tiny), the clipped maximum, about 87 (f32) or 708 (f64) per example
    expected = -np.log(np.finfo(np.dtype(dtype)).tiny)
    assert float(losses.cross_entropy.value(p, y_wrong)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, F64])
def test_logits_at_plus_minus_1000(dtype):
    z = jnp.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 1000.0]], dtype)
    a = fnnet.Softmax().apply((), z)
    assert bool(jnp.all(jnp.isfinite(a)))
    np.testing.assert_allclose(a, [[1, 0, 0], [0, 0.5, 0.5]], atol=1e-7)
    s = fnnet.Sigmoid().apply((), z)
    np.testing.assert_allclose(s, [[1, 0, 0.5], [0, 1, 1]], atol=1e-7)
    y = jnp.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], dtype)
    ce = losses.cross_entropy.value_from_logits(z, y)
    assert float(ce) == pytest.approx((2000 + np.log(2)) / 2, rel=1e-6)
    bce = losses.binary_cross_entropy.value_from_logits(z, y)
    # per row: softplus(z) − y z summed; row 0: 1000 + 1000 + log 2, row 1: 0 + 0 + 1000
    assert float(bce) == pytest.approx((2000 + np.log(2) + 1000) / 2, rel=1e-6)
    for loss, act in ((losses.cross_entropy, a), (losses.binary_cross_entropy, s)):
        g = jax.grad(loss.value_from_logits)(z, y)
        assert bool(jnp.all(jnp.isfinite(g)))
        np.testing.assert_allclose(loss.fused_grad(act, y), g, atol=1e-6)


def test_integer_labels_only_for_cross_entropy():
    p = jnp.full((4, 3), 1 / 3)
    labels = jnp.array([0, 1, 2, 1])
    assert float(losses.cross_entropy.value(p, labels)) == pytest.approx(np.log(3))
    with pytest.raises(ValueError, match=r"mse: y_true has shape \(4,\), expected \(4, 3\)"):
        losses.mse.value(p, labels)


# ---------------------------------------------------------------------------------------------
# Composition: jit, vmap over examples, vmap over stacked params, grad of apply, nesting


def test_jit_equals_eager():
    model, loss, params, x, y = make_case("relu", "softmax+ce", 2, 16, seed=1)
    vg = fnnet.value_and_grad(model, loss)
    le, ge = vg(params, x, y)
    lj, gj = jax.jit(vg)(params, x, y)
    assert float(le) == pytest.approx(float(lj), rel=1e-14)
    assert_trees_close(gj, ge, rtol=1e-14)


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_vmap_over_examples_gives_per_example_gradients():
    model, loss, params, x, y = make_case("tanh", "softmax+ce", 2, 8, seed=2)
    vg = fnnet.value_and_grad(model, loss)
    per_value, per_grads = jax.vmap(vg, in_axes=(None, 0, 0))(params, x, y)
    for i in range(x.shape[0]):
        v, g = vg(params, x[i], y[i])  # a single example, shape (n_in,)
        assert float(per_value[i]) == pytest.approx(float(v), rel=1e-13)
        assert_trees_close(jax.tree_util.tree_map(lambda a, i=i: a[i], per_grads), g, rtol=1e-13)
    # the batch gradient is the mean of the per-example ones
    _, batch_grads = vg(params, x, y)
    assert_trees_close(jax.tree_util.tree_map(lambda a: a.mean(0), per_grads), batch_grads)


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_vmap_over_stacked_params_trains_many_networks_at_once():
    model = fnnet.mlp([4, 6, 3], activation="sigmoid")
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    stacked = jax.jit(jax.vmap(lambda k: model.init(k, F64)))(keys)
    x = jax.random.normal(jax.random.PRNGKey(1), (7, 4), F64)
    y = jax.device_put(np.arange(7) % 3)
    vg = jax.jit(jax.vmap(fnnet.value_and_grad(model, losses.cross_entropy),
                          in_axes=(0, None, None)))
    values, grads = vg(stacked, x, y)
    assert values.shape == (5,)
    reference = fnnet.autodiff_value_and_grad(model, losses.cross_entropy)
    model_k = jax.jit(lambda k: reference(jax.tree_util.tree_map(lambda a: a[k], stacked), x, y))
    for k in range(5):  # model k on its own, each against its slice of the vmapped gradients
        _, ref = model_k(k)
        assert_trees_close(jax.tree_util.tree_map(lambda a, k=k: np.asarray(a)[k], grads), ref)


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_grad_of_apply_and_nested_sequential():
    inner = fnnet.Sequential(fnnet.Dense(3, 3), fnnet.Tanh())
    model = fnnet.Sequential(fnnet.Dense(2, 3), fnnet.ReLU(), inner, fnnet.Dense(3, 1))
    params = model.init(jax.random.PRNGKey(0), F64)
    assert isinstance(params[2], tuple) and isinstance(params[2][0], fnnet.DenseParams)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 2), F64)
    y = jax.random.normal(jax.random.PRNGKey(2), (4, 1), F64)
    lm, gm = jax.jit(fnnet.value_and_grad(model, losses.mse))(params, x, y)
    la, ga = jax.jit(fnnet.autodiff_value_and_grad(model, losses.mse))(params, x, y)
    assert_trees_close(gm, ga)
    gx = jax.jit(jax.grad(lambda x: jnp.sum(model.apply(params, x))))(x)
    assert gx.shape == x.shape


def test_check_grads_report(caplog):
    model, loss, params, x, y = make_case("relu", "softmax+ce", 2, 5, seed=0)
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        report = fnnet.check_grads(model, loss, params, x, y, finite_differences=True)
    compiled = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Compiling ")]
    assert len(compiled) == 2, compiled  # both gradients in one program, and the loss: no more
    assert report.ok() and report.dtype == "float64"
    assert [r.name for r in report.rows] == ["[0].W", "[0].b", "[2].W", "[2].b"]
    assert all(r.fd_rel is not None and r.fd_rel < 1e-5 for r in report.rows)
    text = str(report)
    assert "[0].W" in text and "max rel err" in text and "fin.diff" in text


def test_check_grads_catches_a_wrong_rule():
    class Wrong(fnnet.Sigmoid):
        def backward(self, params, cache, dy):
            return (), dy * cache  # forgot the (1 − Y) factor

    model = fnnet.Sequential(fnnet.Dense(3, 4), Wrong(), fnnet.Dense(4, 2))
    params = model.init(jax.random.PRNGKey(0), F64)
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 3), F64)
    y = jax.random.normal(jax.random.PRNGKey(2), (6, 2), F64)
    report = fnnet.check_grads(model, losses.mse, params, x, y)
    assert not report.ok()
    assert report.rows[0].max_rel > 1e-3 and report.rows[2].max_rel < 1e-12


def test_fused_cross_entropy_exact_for_targets_whose_rows_do_not_sum_to_one():
    # (A − Y)/N holds for one-hot rows; the fused rule uses A·ΣY − Y, exact for any targets
    model, _, params, x, _ = make_case("relu", "softmax+ce", 1, 6, seed=9)
    y = 0.5 * jax.nn.one_hot(jnp.arange(6) % model.layers[-2].n_out, model.layers[-2].n_out,
                             dtype=F64)
    (lf, gf), (la, ga) = both_gradients(model, losses.cross_entropy, params, x, y, fused=True)
    _, gu = fnnet.value_and_grad(model, losses.cross_entropy, fused=False)(params, x, y)
    assert abs(float(lf) - float(la)) <= 1e-12
    assert_trees_close(gf, ga)
    assert_trees_close(gf, gu, what="fused vs unfused ")
