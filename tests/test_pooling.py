"""MaxPool2D, AvgPool2D and Flatten: the hand-derived backwards against jax.vjp of the
lax.reduce_window / reshape apply, in float64; ties in max pooling; jit and vmap; a small CNN as a
whole; clear errors on bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from test_gradients import RTOL, rel_err

from fnnet.layers import Dense, ReLU
from fnnet.layers.conv import Conv2D
from fnnet.layers.pooling import AvgPool2D, MaxPool2D
from fnnet.layers.reshape import Flatten
from fnnet.networks import Sequential

F64 = jnp.float64
POOLS = st.sampled_from([MaxPool2D, AvgPool2D])


@st.composite
def pool_cases(draw):
    """A pool (every window and stride, the stride = window tiling case included) and an input."""
    window = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 8)), draw(st.integers(1, 8)),
             draw(st.integers(1, 3)))
    assume(shape[1] >= window[0] and shape[2] >= window[1])
    return draw(POOLS)(window, stride), shape


def manual_and_vjp(layer):
    """``(x, dy) -> (y, y_ref, (dparams, dx), dx_ref)``: forward+backward and jax.vjp of apply."""

    def run(x, dy):
        y, cache = layer.forward((), x)
        y_ref, vjp = jax.vjp(lambda x: layer.apply((), x), x)
        return y, y_ref, layer.backward((), cache, dy), vjp(dy)[0]

    return jax.jit(run)


def with_dy(layer, x, rng):
    return x, jax.device_put(rng.normal(size=jax.eval_shape(lambda x: layer.apply((), x), x).shape))


@given(case=pool_cases(), seed=st.integers(0, 2**31 - 1))
def test_pool_backward_vs_vjp(case, seed):
    """Continuous random inputs (no ties) to 1e-10; for max pooling, inputs of zeros and ones (ties
    everywhere) too, where the first maximum gets dY, as in jax.vjp."""
    layer, shape = case
    rng = np.random.default_rng(seed)
    x, dy = with_dy(layer, jax.device_put(rng.normal(size=shape)), rng)
    run = manual_and_vjp(layer)
    y, y_ref, (dparams, dx), dx_ref = run(x, dy)
    assert y.shape == y_ref.shape and rel_err(y, y_ref) <= 1e-14, "forward differs from apply"
    assert dparams == () and dx.shape == shape
    assert rel_err(dx, dx_ref) <= RTOL, "dX differs from jax.vjp"
    if isinstance(layer, MaxPool2D):
        _, _, (_, dx), dx_ref = run(jax.device_put(rng.integers(0, 2, size=shape).astype(np.float64)), dy)
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-13, atol=1e-13, err_msg="ties")


@pytest.mark.parametrize("stride", [None, 1])
def test_max_pool_tie_rule_by_hand(stride):
    """Every window of ones is a tie: the first entry in row-major window order gets all of dY."""
    layer = MaxPool2D(2, stride)
    x = jnp.ones((1, 3, 4, 1), F64).at[0, 0, 0, 0].set(0.0)
    y, cache = layer.forward((), x)
    dy = jnp.arange(1.0, 1 + y.size, dtype=F64).reshape(y.shape)
    dx = layer.backward((), cache, dy)[1][0, :, :, 0]
    if stride is None:  # windows (0:2, 0:2) and (0:2, 2:4), first maxima (0, 1), (0, 2); row 2 unused
        expected = [[0, 1, 2, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    else:  # window (0, 0)'s first maximum is (0, 1); window (i, j)'s is (i, j) for the others
        expected = [[0, 1 + 2, 3, 0], [4, 5, 6, 0], [0, 0, 0, 0]]
    np.testing.assert_array_equal(dx, np.array(expected, float))


def test_average_pool_spreads_dy_evenly():
    layer = AvgPool2D((2, 3))
    x = jnp.zeros((1, 5, 7, 2), F64)
    y, cache = layer.forward((), x)
    dx = layer.backward((), cache, jnp.full(y.shape, 6.0, F64))[1]
    expected = np.zeros((5, 7))
    expected[:4, :6] = 1.0  # the last row and column: in no window
    np.testing.assert_array_equal(dx[0, :, :, 0], expected)
    np.testing.assert_array_equal(dx[0, :, :, 1], expected)


def test_flatten_is_row_major_and_its_backward_reshapes_back():
    layer = Flatten()
    x = jnp.arange(2 * 3 * 4 * 5, dtype=F64).reshape(2, 3, 4, 5)
    y, cache = layer.forward((), x)
    np.testing.assert_array_equal(y, x.reshape(2, 60))
    assert y[1, (2 * 4 + 3) * 5 + 4] == x[1, 2, 3, 4]  # (h·W + w)·C + c
    assert not jax.tree.leaves(cache)  # the shape only, static
    np.testing.assert_array_equal(layer.backward((), cache, y)[1], x)
    dy = jnp.asarray(np.random.default_rng(0).normal(size=(2, 60)))
    _, vjp = jax.vjp(lambda x: layer.apply((), x), x)
    np.testing.assert_array_equal(layer.backward((), cache, dy)[1], vjp(dy)[0])
    assert layer.apply((), jnp.zeros((0, 3, 4, 5))).shape == (0, 60)


@pytest.mark.parametrize("layer", [MaxPool2D(2), MaxPool2D(3, 2), AvgPool2D(2), AvgPool2D((2, 1), 1),
                                   Flatten()], ids=repr)
def test_jit_and_vmap_over_a_stacked_model_axis(layer):
    k, rng = 3, np.random.default_rng(1)
    xs = jnp.asarray(rng.normal(size=(k, 2, 6, 5, 3)))
    ys_shape = jax.eval_shape(lambda x: layer.apply((), x), xs[0]).shape
    dys = jnp.asarray(rng.normal(size=(k, *ys_shape)))

    def step(x, dy):
        y, cache = layer.forward((), x)
        return y, layer.backward((), cache, dy)[1]

    ys, dxs = jax.jit(jax.vmap(step))(xs, dys)
    for i in range(k):
        y_ref, vjp = jax.vjp(lambda x: layer.apply((), x), xs[i])
        assert rel_err(ys[i], y_ref) <= 1e-14 and rel_err(dxs[i], vjp(dys[i])[0]) <= RTOL


@pytest.mark.parametrize("pool,flat", [(MaxPool2D(2), 2 * 2 * 3), (AvgPool2D(2, 1), 4 * 4 * 3)], ids=repr)
def test_a_small_cnn_backward_vs_vjp(pool, flat):
    model = Sequential(Conv2D(2, 4, 3, padding="same"), ReLU(), pool, Conv2D(4, 3, 2, stride=2),
                       ReLU(), Flatten(), Dense(flat, 5))
    rng = np.random.default_rng(2)
    x, dy = jnp.asarray(rng.normal(size=(3, 9, 10, 2))), jnp.asarray(rng.normal(size=(3, 5)))
    params = model.init(jax.random.PRNGKey(0), F64)

    def run(params, x, dy):
        y, cache = model.forward(params, x)
        y_ref, vjp = jax.vjp(model.apply, params, x)
        return y, y_ref, model.backward(params, cache, dy), vjp(dy)

    y, y_ref, (grads, dx), (grads_ref, dx_ref) = jax.jit(run)(params, x, dy)
    assert y.shape == (3, 5) and rel_err(y, y_ref) <= 1e-12
    for index, (g, g_ref) in enumerate(zip(grads, grads_ref)):
        for leaf, leaf_ref in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
            assert rel_err(leaf, leaf_ref) <= RTOL, f"layer {index}"
    assert rel_err(dx, dx_ref) <= RTOL


def test_descriptions():
    assert MaxPool2D().window == (2, 2) and MaxPool2D().stride == (2, 2)
    assert MaxPool2D(3, (1, 2)).stride == (1, 2) and AvgPool2D((2, 3)).stride == (2, 3)
    assert [repr(layer) for layer in (MaxPool2D(), AvgPool2D(3, 1), MaxPool2D((2, 3)), Flatten())] == [
        "MaxPool2D(2)", "AvgPool2D(3, stride=1)", "MaxPool2D((2, 3))", "Flatten()"]
    assert MaxPool2D(2) == MaxPool2D(2, 2) and MaxPool2D(2) != AvgPool2D(2)
    assert hash(MaxPool2D(2)) == hash(MaxPool2D((2, 2)))
    for layer in (MaxPool2D(), AvgPool2D(), Flatten()):
        assert layer.init(jax.random.PRNGKey(0)) == () and layer.init_state() == ()
        x = jnp.ones((1, 4, 4, 1))
        np.testing.assert_array_equal(layer.apply((), x, state=(), key=None, train=True),
                                      layer.forward((), x, state=(), key=None, train=False)[0])


@pytest.mark.parametrize("make,message", [
    (lambda: MaxPool2D(0), "MaxPool2D: window must be a positive integer, got 0"),
    (lambda: AvgPool2D(2, (1, -1)), "AvgPool2D: stride must be a positive integer, got -1"),
    (lambda: MaxPool2D((2, 2, 2)), "MaxPool2D: window must be an integer or a pair"),
    (lambda: AvgPool2D(2.0), "AvgPool2D: window must be a positive integer, got 2.0"),
], ids=range(4))
def test_bad_descriptions_fail_when_made(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


@pytest.mark.parametrize("layer,params,x,error,message", [
    (MaxPool2D(3), (), jnp.zeros((1, 2, 5, 1)), ValueError,
     r"MaxPool2D\(3\): window \(3, 3\) is larger than the \(padded\) image \(2, 5\)"),
    (AvgPool2D(2), (), jnp.zeros((4, 4, 1)), ValueError,
     r"AvgPool2D\(2\): expected NHWC images of rank 4 \(N, H, W, C\), got shape \(4, 4, 1\)"),
    (MaxPool2D(2), (), jnp.zeros((1, 4, 4, 1), jnp.int32), TypeError,
     r"MaxPool2D\(2\): input must be a floating-point array"),
    (AvgPool2D(2), (jnp.zeros(1),), jnp.zeros((1, 4, 4, 1)), ValueError,
     r"AvgPool2D\(2\): takes no parameters"),
    (Flatten(), (), jnp.zeros(5), ValueError,
     r"Flatten\(\): expected a batch \(N, H, W, C\) of rank 2 or more .* got shape \(5,\)"),
], ids=["window", "rank", "dtype", "params", "flatten rank"])
def test_bad_input_fails_naming_the_layer(layer, params, x, error, message):
    for method in (layer.apply, layer.forward):
        with pytest.raises(error, match=message):
            method(params, x)
