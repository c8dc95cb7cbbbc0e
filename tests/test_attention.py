"""Causal self-attention, GELU, Residual, PositionEmbedding and TransformerBlock.

Each hand-derived backward against ``jax.vjp`` of the layer's ``apply`` in float64 (relative error
≤ 1e-10) over random shapes, heads, lengths (T = 1 among them), block sizes and seeds, every
gradient asserted on its own; the two attention backward forms ("keep_p", "lean") against each
other; dropout's masks the same in apply, forward and backward; the causal property to the bit;
bfloat16 products; the errors. Shapes are small and examples few: each compiles its programs.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_recurrent import random, random_params, rel

import fnnet
from fnnet.layers import (
    GELU,
    AttentionParams,
    CausalSelfAttention,
    Dense,
    DenseParams,
    EmbeddingParams,
    LayerNorm,
    PositionEmbedding,
    Residual,
    Sequential,
    TransformerBlock,
)
from fnnet.layers.attention import keep_p_backward, keep_p_forward, lean_backward, lean_forward

F64 = jnp.float64
RTOL = 1e-10
SEEDS = st.integers(0, 2**16)


def assert_tree(got, want, what):
    """Every leaf on its own, named by its path."""
    got_leaves = jax.tree_util.tree_leaves_with_path(got)
    want_leaves = jax.tree_util.tree_leaves_with_path(want)
    assert len(got_leaves) == len(want_leaves)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for (path, g), (_, w) in zip(got_leaves, want_leaves):
        e = rel(g, w)
        assert e <= RTOL, f"{what} d{jax.tree_util.keystr(path)}: relative error {e:.2e}"


@functools.cache
def vjp_check(layer, train=True):
    """The hand-derived forward/backward and jax.vjp of apply, one program per layer."""

    def run(params, x, dy, key):
        y, cache = layer.forward(params, x, key=key, train=train)
        grads, dx = layer.backward(params, cache, dy)
        y_ref, pull = jax.vjp(lambda p, xs: layer.apply(p, xs, key=key, train=train), params, x)
        ref_grads, ref_dx = pull(dy)
        return y, y_ref, grads, dx, ref_grads, ref_dx

    return jax.jit(run)


def check_layer(layer, params, x, seed, key=None):
    y, y_ref, grads, dx, ref_grads, ref_dx = vjp_check(layer)(
        params, x, random(seed + 99, x.shape[:-1] + (layer_out(layer, x),)), key)
    assert rel(y, y_ref) <= 1e-13, "forward"
    assert_tree(grads, ref_grads, repr(layer))
    assert rel(dx, ref_dx) <= RTOL, f"{layer!r} dX"
    return grads


def layer_out(layer, x):
    return jax.eval_shape(lambda p, x: layer.apply(p, x),
                          jax.eval_shape(lambda k: layer.init(k, F64), jax.random.key(0)),
                          x).shape[-1]


# ---------------------------------------------------------------------------------------------
# Attention: each form against jax.vjp of apply, and against each other


@pytest.mark.parametrize("form", ["lean", "keep_p"])
@settings(max_examples=3, deadline=None)
@given(n=st.integers(1, 3), t=st.integers(1, 9), heads=st.integers(1, 3), d=st.integers(1, 4),
       block=st.integers(1, 5), seed=SEEDS)
@example(n=1, t=1, heads=1, d=1, block=1, seed=0)
def test_attention_backward_matches_vjp_of_apply(form, n, t, heads, d, block, seed):
    """dW_qkv, db_qkv, dW_o, db_o and dX each on its own; the lean form over several blocks."""
    layer = CausalSelfAttention(heads * d, heads, backward_form=form, block=block)
    params = random_params(layer, seed)
    grads = check_layer(layer, params, random(seed + 1, (n, t, heads * d)), seed)
    assert isinstance(grads, AttentionParams) and isinstance(grads.qkv, DenseParams)


@settings(max_examples=3, deadline=None)
@given(n=st.integers(1, 2), t=st.integers(1, 12), heads=st.integers(1, 3), d=st.integers(1, 4),
       block=st.integers(1, 6), seed=SEEDS)
def test_the_two_backward_forms_agree(n, t, heads, d, block, seed):
    """keep_p and lean on the same q, k, v, dY: the same Y, dQ, dK, dV (the lean form by blocks,
    with D = rowsum(dY ⊙ Y) for rowsum(dP ⊙ P))."""
    policy = fnnet.precision.get("f32")
    q, k, v, dy = (random(seed + i, (n, heads, t, d)) for i in range(4))

    @jax.jit
    def both_forms(q, k, v, dy):
        y_keep, p = keep_p_forward(q, k, v, policy=policy)
        y_lean, lse = lean_forward(q, k, v, policy=policy, block=block)
        return (y_keep, y_lean, lse, keep_p_backward(dy, q, k, v, p, policy=policy),
                lean_backward(dy, q, k, v, y_lean, lse, policy=policy, block=block))

    y_keep, y_lean, lse, keep, lean = both_forms(q, k, v, dy)
    assert rel(y_lean, y_keep) <= 1e-13
    assert lse.shape == (n, heads, t)
    for name, a, b in zip("QKV", lean, keep):
        assert rel(a, b) <= RTOL, f"d{name}"


@pytest.mark.parametrize("form", ["lean", "keep_p"])
def test_attention_dropout_masks_agree_between_apply_forward_and_backward(form):
    """With dropout the hand-written forward draws apply's bits (by blocks of query rows), the
    lean backward draws them again: the gradient still equals jax.vjp of apply."""
    layer = CausalSelfAttention(6, 2, 0.4, backward_form=form, block=2)
    params = random_params(layer, 3)
    x = random(4, (2, 7, 6))
    check_layer(layer, params, x, 5, key=jax.random.key(11))
    y1, y2, inference, no_key = jax.jit(lambda p, xs: (
        layer.apply(p, xs, key=jax.random.key(11), train=True),
        layer.apply(p, xs, key=jax.random.key(12), train=True),
        layer.apply(p, xs), layer.apply(p, xs, train=False)))(params, x)
    assert rel(y1, y2) > 1e-3  # the masks come from the key
    assert rel(inference, no_key) == 0


@pytest.mark.parametrize("form", ["lean", "keep_p"])
def test_causal_output_ignores_later_steps_and_their_gradient_is_zero(form):
    """Y_t depends on X_{≤t} only: changing later steps leaves it unchanged, and the gradient of
    Y_t with respect to every later step is exactly zero (hand-derived and autodiff alike)."""
    layer = CausalSelfAttention(4, 2, backward_form=form, block=3)
    params = random_params(layer, 7)
    x = random(8, (2, 8, 4))
    t = 3
    changed = np.array(x)
    changed[:, t + 1:] = np.asarray(random(9, (2, 8 - t - 1, 4)))
    dy = np.zeros((2, 8, 4))
    dy[:, t] = np.asarray(random(10, (2, 4)))

    @jax.jit
    def outputs_and_gradients(x, changed, dy):
        _, cache = layer.forward(params, x)
        _, pull = jax.vjp(lambda xs: layer.apply(params, xs), x)
        return (layer.apply(params, x), layer.apply(params, changed),
                layer.backward(params, cache, dy)[1], pull(dy)[0])

    y, y_changed, dx, ref_dx = (np.asarray(a) for a in outputs_and_gradients(
        x, jax.device_put(changed), jax.device_put(dy)))
    assert np.array_equal(y[:, :t + 1], y_changed[:, :t + 1])
    assert np.all(dx[:, t + 1:] == 0)
    assert np.any(dx[:, :t + 1] != 0)
    assert np.all(ref_dx[:, t + 1:] == 0)


def test_lean_form_keeps_no_t_by_t_matrix():
    """The lean forward's cache holds (T, d) arrays and the (N, h, T) log-sum-exp only."""
    n, t, c, h = 2, 16, 8, 2
    for form, square in (("lean", False), ("keep_p", True)):
        layer = CausalSelfAttention(c, h, backward_form=form, block=4)
        params = layer.init(jax.random.key(0))
        _, cache = jax.eval_shape(lambda p, x, layer=layer: layer.forward(p, x), params,
                                  jax.ShapeDtypeStruct((n, t, c), jnp.float32))
        shapes = [leaf.shape for leaf in jax.tree_util.tree_leaves(cache)]
        assert ((n, h, t, t) in shapes) is square, (form, shapes)


def test_attention_bf16_products_accumulate_in_float32():
    """Under bf16 the forward and both backward forms stay close to float32 (products read
    bfloat16, the softmax stays float32) and every gradient comes back float32."""
    x = jax.random.normal(jax.random.key(1), (2, 10, 8), jnp.float32)
    dy = jax.random.normal(jax.random.key(2), (2, 10, 8), jnp.float32)
    for form in ("lean", "keep_p"):
        layer = CausalSelfAttention(8, 2, backward_form=form, block=4)
        params = layer.init(jax.random.key(0))
        low = layer.with_precision("bf16")

        @jax.jit
        def both(params, x, dy, layer=layer, low=low):
            y32, c32 = layer.forward(params, x)
            y16, c16 = low.forward(params, x)
            return y32, layer.backward(params, c32, dy), y16, low.backward(params, c16, dy)

        y32, (g32, dx32), y16, (g16, dx16) = both(params, x, dy)
        assert y16.dtype == jnp.float32 and dx16.dtype == jnp.float32
        assert rel(y16, y32) < 3e-2 and rel(dx16, dx32) < 5e-2
        for a, b in zip(jax.tree_util.tree_leaves(g16), jax.tree_util.tree_leaves(g32)):
            assert a.dtype == jnp.float32 and rel(a, b) < 5e-2


def test_attention_errors_name_the_layer():
    with pytest.raises(ValueError, match="heads .3. must divide dim .8."):
        CausalSelfAttention(8, 3)
    with pytest.raises(ValueError, match="backward_form"):
        CausalSelfAttention(8, 2, backward_form="fast")
    with pytest.raises(ValueError, match="dropout"):
        CausalSelfAttention(8, 2, dropout=1.0)
    layer = CausalSelfAttention(8, 2)
    params = layer.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"CausalSelfAttention\(8, 2\): expected input of shape"):
        layer.apply(params, jnp.zeros((2, 5, 6)))
    with pytest.raises(ValueError, match="at least one time step"):
        layer.apply(params, jnp.zeros((2, 0, 8)))
    with pytest.raises(TypeError, match="floating-point"):
        layer.apply(params, jnp.zeros((2, 5, 8), jnp.int32))
    with pytest.raises(ValueError, match="needs key="):
        CausalSelfAttention(8, 2, 0.1).forward(params, jnp.zeros((2, 5, 8)))
    with pytest.raises(ValueError, match="AttentionParams"):
        layer.apply((), jnp.zeros((2, 5, 8)))


# ---------------------------------------------------------------------------------------------
# GELU, Residual, PositionEmbedding, TransformerBlock


@pytest.mark.parametrize("approximate,jax_form", [("tanh", True), ("none", False)])
def test_gelu_matches_jax_and_its_derivative(approximate, jax_form):
    x = jnp.linspace(-6, 6, 241, dtype=F64)
    layer = GELU(approximate)
    assert rel(layer.apply((), x), jax.nn.gelu(x, approximate=jax_form)) <= 1e-15
    y, cache = layer.forward((), x)
    dy = random(1, x.shape)
    _, dx = layer.backward((), cache, dy)
    ref = jax.vjp(lambda z: jax.nn.gelu(z, approximate=jax_form), x)[1](dy)[0]
    assert rel(dx, ref) <= RTOL
    with pytest.raises(ValueError, match="GELU: unknown approximate"):
        GELU("erf")
    assert fnnet.layers.get("gelu") == GELU()


@pytest.mark.parametrize("approximate", ["tanh", "none"])
@settings(max_examples=3, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3), seed=SEEDS)
@example(shape=[1], seed=0)
def test_gelu_backward_matches_vjp_over_shapes_and_seeds(approximate, shape, seed):
    """Both forms' ``f'`` against ``jax.vjp`` of ``apply``, inputs of random shape and scale 3
    (the tanh's saturated tails included)."""
    check_layer(GELU(approximate), (), random(seed, tuple(shape), 3.0), seed)


@settings(max_examples=3, deadline=None)
@given(n=st.integers(1, 3), t=st.integers(1, 6), c=st.integers(1, 5), seed=SEEDS)
def test_residual_adds_the_identity_path(n, t, c, seed):
    """dX = dY + f.backward(dY), f a LayerNorm then a Dense."""
    layer = Residual(Sequential(LayerNorm(c), Dense(c, c)))
    check_layer(layer, random_params(layer, seed), random(seed + 1, (n, t, c)), seed)
    with pytest.raises(ValueError, match="keep its input's shape"):
        Residual(Dense(c, c + 1)).apply(Dense(c, c + 1).init(jax.random.key(0), F64),
                                        jnp.zeros((n, c), F64))
    with pytest.raises(TypeError, match="Residual: layer must be"):
        Residual(lambda x: x)


@settings(max_examples=3, deadline=None)
@given(n=st.integers(1, 3), t=st.integers(1, 6), extra=st.integers(0, 3), c=st.integers(1, 4),
       seed=SEEDS)
def test_position_embedding_backward(n, t, extra, c, seed):
    """dW[t] = Σ_n dY[n, t] for t < T, zero for the unread rows; dX = dY."""
    layer = PositionEmbedding(t + extra, c)
    grads = check_layer(layer, random_params(layer, seed), random(seed + 1, (n, t, c)), seed)
    assert isinstance(grads, EmbeddingParams)
    assert np.all(np.asarray(grads.W[t:]) == 0)
    with pytest.raises(ValueError, match=rf"1 <= T <= {t + extra}"):
        layer.apply(layer.init(jax.random.key(0)), jnp.zeros((n, t + extra + 1, c)))


@pytest.mark.parametrize("form", ["lean", "keep_p"])
@settings(max_examples=2, deadline=None)
@given(n=st.integers(1, 2), t=st.integers(1, 6), heads=st.integers(1, 2), d=st.integers(1, 3),
       seed=SEEDS)
@example(n=1, t=1, heads=1, d=2, seed=0)
def test_transformer_block_backward_matches_vjp(form, n, t, heads, d, seed):
    """Both residual branches, LayerNorms, attention, GELU MLP: every leaf on its own."""
    layer = TransformerBlock(heads * d, heads, mlp_ratio=2, backward_form=form, block=2)
    check_layer(layer, random_params(layer, seed, 0.3), random(seed + 1, (n, t, heads * d)), seed)


def test_transformer_block_dropout_gradient_matches_vjp():
    layer = TransformerBlock(4, 2, dropout=0.3, block=2)
    check_layer(layer, random_params(layer, 1, 0.3), random(2, (2, 5, 4)), 3, key=jax.random.key(4))
    assert layer.stochastic and not TransformerBlock(4, 2).stochastic
