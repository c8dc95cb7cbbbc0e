"""Conv2D: the hand-derived im2col backward against jax.vjp of the lax.conv apply, in float64, over
random shapes, kernels, strides and paddings; the naive-loop, im2col and correlation forms agree;
jit and vmap over stacked params; clear errors on bad input."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from test_gradients import RTOL, rel_err

from fnnet.layers import conv_forms as conv  # the reference forms
from fnnet.layers import windows
from fnnet.layers.conv import Conv2D, ConvParams

F64 = jnp.float64
PADDINGS = st.sampled_from(["valid", "same", 0, 1, 2])
SIZES = st.integers(1, 3)
SEEDS = st.integers(0, 2**31 - 1)


@st.composite
def conv_cases(draw):
    """A layer and an input it accepts: every kernel, stride and padding, small sizes."""
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(SIZES), draw(SIZES))
    padding = draw(PADDINGS)
    shape = (draw(SIZES), draw(st.integers(1, 7)), draw(st.integers(1, 7)), draw(SIZES))
    pads = windows.conv_pads(padding, shape[1:3], kernel, stride)
    assume(all(n + lo + hi >= k for n, (lo, hi), k in zip(shape[1:3], pads, kernel)))
    return Conv2D(shape[3], draw(SIZES), kernel, stride, padding), shape


def random_case(layer, shape, seed):
    """Params (with a non-zero bias), an input and a ``dY`` of the output's shape, float64."""
    rng = np.random.default_rng(seed)
    kh, kw = layer.kernel_size
    params = ConvParams(W=jax.device_put(rng.normal(size=(kh, kw, layer.in_channels, layer.out_channels))),
                        b=jax.device_put(rng.normal(size=layer.out_channels)))
    x = jax.device_put(rng.normal(size=shape))
    out = jax.eval_shape(layer.apply, params, x).shape
    return params, x, jax.device_put(rng.normal(size=out))


def all_forms(layer, params, x, dy):
    """``forward``+``backward`` (im2col), ``jax.vjp`` of ``apply`` and the correlation form, compiled
    in one program, and the naive loops in numpy."""

    def run(params, x, dy):
        y, cache = layer.forward(params, x)
        y_ref, vjp = jax.vjp(layer.apply, params, x)
        correlation = conv.conv2d_backward_correlation(x, params.W, dy, layer.stride, layer.padding)
        return y, y_ref, layer.backward(params, cache, dy), vjp(dy), correlation

    y, y_ref, im2col, reference, correlation = jax.jit(run)(params, x, dy)
    naive = (conv.conv2d_naive(x, params.W, params.b, layer.stride, layer.padding),
             conv.conv2d_backward_naive(x, params.W, dy, layer.stride, layer.padding))
    return y, y_ref, im2col, reference, correlation, naive


@given(case=conv_cases(), seed=SEEDS)
def test_conv_backward_vs_vjp_and_the_three_forms_agree(case, seed):
    layer, shape = case
    params, x, dy = random_case(layer, shape, seed)
    y, y_ref, (dp_m, dx_m), (dp_a, dx_a), correlation, (y_naive, naive) = all_forms(layer, params, x, dy)
    assert y.shape == y_ref.shape and rel_err(y, y_ref) <= 1e-12, "im2col forward differs from apply"
    assert rel_err(dp_m.W, dp_a.W) <= RTOL, "dW differs from jax.vjp"
    assert rel_err(dp_m.b, dp_a.b) <= RTOL, "db differs from jax.vjp"
    assert rel_err(dx_m, dx_a) <= RTOL, "dX differs from jax.vjp"
    assert dp_m.W.shape == params.W.shape and dp_m.b.shape == params.b.shape and dx_m.shape == shape
    assert rel_err(y_naive, y_ref) <= 1e-12, "the naive loops' forward differs from apply"
    for name, (dp, dx) in (("naive loops", naive), ("correlation form", correlation)):
        assert rel_err(dp.W, dp_m.W) <= RTOL, f"dW: the {name} and im2col differ"
        assert rel_err(dp.b, dp_m.b) <= RTOL, f"db: the {name} and im2col differ"
        assert rel_err(dx, dx_m) <= RTOL, f"dX: the {name} and im2col differ"


@pytest.mark.parametrize("size,kernel,stride", [(5, 3, 1), (6, 3, 2), (7, 2, 3), (2, 5, 1), (4, 4, 4)])
def test_same_padding_is_ceil_of_size_over_stride_with_the_extra_pad_at_the_end(size, kernel, stride):
    pads = windows.conv_pads("same", (size, size), (kernel, kernel), (stride, stride))
    assert pads == tuple(jax.lax.padtype_to_pads((size, size), (kernel, kernel), (stride, stride),
                                                 "SAME"))
    (top, bottom), _ = pads
    assert bottom - top in (0, 1)
    layer = Conv2D(1, 1, kernel, stride, "same")
    y = jax.eval_shape(layer.apply, layer.init(jax.random.PRNGKey(0)), jnp.zeros((1, size, size, 1)))
    assert y.shape == (1, math.ceil(size / stride), math.ceil(size / stride), 1)


def test_description_init_and_protocol():
    layer = Conv2D(3, 8, (3, 5), stride=2, padding="SAME")
    assert (layer.kernel_size, layer.stride) == ((3, 5), (2, 2))
    assert (layer.padding, layer.weight_init) == ("same", "he")
    assert repr(layer) == "Conv2D(3, 8, (3, 5), stride=2, padding='same')"
    assert repr(Conv2D(1, 2, 3)) == "Conv2D(1, 2, 3)" and Conv2D(1, 2, 3) == Conv2D(1, 2, (3, 3), 1)
    assert repr(Conv2D(1, 2, 3, padding=1, init="xavier")) == "Conv2D(1, 2, 3, padding=1, init='xavier')"
    assert hash(layer) == hash(Conv2D(3, 8, (3, 5), 2, "same"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.stride = 1
    params = Conv2D(16, 64, 3).init(jax.random.PRNGKey(0), F64)
    assert params.W.shape == (3, 3, 16, 64) and params.W.dtype == F64 and not params.b.any()
    assert float(params.W.std()) == pytest.approx(math.sqrt(2 / (3 * 3 * 16)), rel=0.05)  # fan_in
    bound = math.sqrt(6 / (3 * 3 * 16 + 3 * 3 * 64))
    assert float(jnp.abs(Conv2D(16, 64, 3, init="xavier").init(jax.random.PRNGKey(0)).W).max()) <= bound
    assert layer.init_state() == () and layer.next_state((), None) == ()
    small = Conv2D(1, 2, 2)
    p, x = small.init(jax.random.PRNGKey(1)), jnp.ones((1, 3, 3, 1))
    y = small.apply(p, x, state=(), key=jax.random.PRNGKey(2), train=True)
    np.testing.assert_array_equal(small.forward(p, x, state=(), key=None, train=False)[0], y)


def test_jit_and_vmap_over_stacked_params():
    layer, k = Conv2D(2, 3, 3, stride=2, padding="same"), 3
    stacked = jax.vmap(lambda key: layer.init(key, F64))(jax.random.split(jax.random.PRNGKey(0), k))
    stacked = stacked._replace(b=jnp.arange(k * 3, dtype=F64).reshape(k, 3))
    rng = np.random.default_rng(0)
    x, dy = jnp.asarray(rng.normal(size=(2, 5, 6, 2))), jnp.asarray(rng.normal(size=(k, 2, 3, 3, 3)))

    def step(params, dy):
        y, cache = layer.forward(params, x)
        return y, layer.backward(params, cache, dy)

    ys, (dps, dxs) = jax.jit(jax.vmap(step))(stacked, dy)
    assert ys.shape == (k, 2, 3, 3, 3) and dps.W.shape == (k, 3, 3, 2, 3) and dxs.shape == (k, *x.shape)
    for i in range(k):
        params = jax.tree.map(lambda leaf, i=i: leaf[i], stacked)
        y_ref, vjp = jax.vjp(layer.apply, params, x)
        dp_ref, dx_ref = vjp(dy[i])
        assert rel_err(ys[i], y_ref) <= 1e-12
        assert rel_err(dps.W[i], dp_ref.W) <= RTOL and rel_err(dps.b[i], dp_ref.b) <= RTOL
        assert rel_err(dxs[i], dx_ref) <= RTOL


@pytest.mark.parametrize("make,message", [
    (lambda: Conv2D(0, 2, 3), "Conv2D: in_channels must be a positive integer, got 0"),
    (lambda: Conv2D(1, -2, 3), "Conv2D: out_channels must be a positive integer, got -2"),
    (lambda: Conv2D(1, 2, (3, 0)), "Conv2D: kernel_size must be a positive integer, got 0"),
    (lambda: Conv2D(1, 2, (3, 3, 3)), "Conv2D: kernel_size must be an integer or a pair"),
    (lambda: Conv2D(1, 2, 3, stride=0), "Conv2D: stride must be a positive integer, got 0"),
    (lambda: Conv2D(1, 2, 3, stride=1.5), "Conv2D: stride must be a positive integer, got 1.5"),
    (lambda: Conv2D(1, 2, 3, padding="full"), "Conv2D: padding must be 'valid', 'same' or a non-"),
    (lambda: Conv2D(1, 2, 3, padding=-1), "Conv2D: padding must be an integer >= 0, got -1"),
    (lambda: Conv2D(1, 2, 3, init="zeros"), "Conv2D: unknown init 'zeros'"),
], ids=range(9))
def test_bad_descriptions_fail_when_made(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


@pytest.mark.parametrize("layer,x,params,error,message", [
    (Conv2D(1, 2, 3), jnp.zeros((5, 5, 1)), None, ValueError,
     r"Conv2D\(1, 2, 3\): expected NHWC images of rank 4 \(N, H, W, C\), got shape \(5, 5, 1\) "
     r"\(a single image needs its batch axis"),
    (Conv2D(3, 2, 3), jnp.zeros((1, 5, 5, 1)), None, ValueError,
     r"Conv2D\(3, 2, 3\): expected 3 input channels .* got shape \(1, 5, 5, 1\)"),
    (Conv2D(1, 2, 4), jnp.zeros((1, 3, 5, 1)), None, ValueError,
     r"Conv2D\(1, 2, 4\): kernel \(4, 4\) is larger than the \(padded\) image \(3, 5\)"),
    (Conv2D(1, 2, 4, padding=1), jnp.zeros((1, 1, 5, 1)), None, ValueError,
     r"kernel \(4, 4\) is larger than the \(padded\) image \(3, 7\)"),
    (Conv2D(1, 2, 3), jnp.zeros((1, 5, 5, 1), jnp.int32), None, TypeError,
     r"Conv2D\(1, 2, 3\): input must be a floating-point array"),
    (Conv2D(1, 2, 3), jnp.zeros((1, 5, 5, 1)), ConvParams(jnp.zeros((3, 3, 2, 1)), jnp.zeros(2)),
     ValueError, r"Conv2D\(1, 2, 3\): parameter W has shape \(3, 3, 2, 1\), expected \(3, 3, 1, 2\)"),
    (Conv2D(1, 2, 3), jnp.zeros((1, 5, 5, 1)), ConvParams(jnp.zeros((3, 3, 1, 2)), jnp.zeros(3)),
     ValueError, r"parameter b has shape \(3,\), expected \(2,\)"),
], ids=["rank", "channels", "kernel", "padded kernel", "dtype", "W", "b"])
def test_bad_input_fails_naming_the_layer(layer, x, params, error, message):
    params = layer.init(jax.random.PRNGKey(0)) if params is None else params
    for method in (layer.apply, layer.forward):
        with pytest.raises(error, match=message):
            method(params, x)


def test_same_padding_fits_any_kernel():
    layer = Conv2D(1, 2, 4, padding="same")  # larger than the image, but padded to fit
    assert layer.apply(layer.init(jax.random.PRNGKey(0)), jnp.zeros((1, 1, 3, 1))).shape == (1, 1, 3, 2)
