"""The recurrent layers (RNN, LSTM, GRU), LastStep and Embedding.

Each hand-derived backward (backpropagation through time, the reverse scan) against ``jax.vjp`` of
the layer's ``apply`` in float64 over random shapes, sizes, seeds and initial states, every gradient
asserted on its own (relative error ≤ 1e-10); the forward and backward against the cell equations
written out plainly over a Python loop (no scan); Embedding's scatter-add against ``jax.vjp`` with
repeated ids; truncated BPTT through the model state; whole networks against autodiff; ``jit``,
``vmap`` over stacked models, bfloat16 products, and the errors. Shapes are small and examples few:
each example compiles its own programs.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import fnnet
from fnnet.layers import (
    GRU,
    LSTM,
    RNN,
    Dense,
    Embedding,
    EmbeddingParams,
    GRUParams,
    LastStep,
    RecurrentParams,
    Softmax,
)

F64 = jnp.float64
RTOL = 1e-10

CELLS = {
    "rnn": lambda n_in, h, **kw: RNN(n_in, h, **kw),
    "rnn_relu": lambda n_in, h, **kw: RNN(n_in, h, "relu", **kw),
    "lstm": LSTM,
    "gru": GRU,
}
SEEDS = st.integers(0, 2**16)


def rel(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    if not want.size:
        return 0.0
    err, scale = float(np.max(np.abs(got - want))), float(np.max(np.abs(want)))
    return err / scale if scale > 0 else err


def random(seed, shape, scale=1.0):
    # device_put: jnp.asarray would compile a program for every new shape
    return jax.device_put(scale * np.random.default_rng(seed).normal(size=shape))


def random_params(layer, seed, scale=0.5):
    """Params of the layer's shapes drawn in numpy (no program to compile), every bias non-zero."""
    shapes = jax.eval_shape(lambda key: layer.init(key, F64), jax.random.key(0))
    leaves, tree = jax.tree_util.tree_flatten(shapes)
    return tree.unflatten([random(seed + k, leaf.shape, scale) for k, leaf in enumerate(leaves)])


def assert_grads(got, want, what):
    """Every field of a params NamedTuple on its own."""
    assert type(got) is type(want)
    for name in want._fields:
        e = rel(getattr(got, name), getattr(want, name))
        assert e <= RTOL, f"{what} d{name}: relative error {e:.2e}"


# ---------------------------------------------------------------------------------------------
# Each cell's backward against jax.vjp of apply


@functools.cache
def vjp_check(layer):
    """One compiled program per layer (and shape): the hand-derived forward/backward, and
    jax.vjp of apply and of sequence_forward (for the initial state's gradient)."""

    def run(params, x, dy, state, initial):
        y, cache = layer.forward(params, x, state=state)
        grads, dx, d_initial = layer.sequence_backward(params, cache, dy)  # backward, + d_initial
        y_ref, pull = jax.vjp(lambda p, xs: layer.apply(p, xs, state=state), params, x)
        ref_grads, ref_dx = pull(dy)
        (ref_initial,) = jax.vjp(lambda i: layer.sequence_forward(params, x, i)[0], initial)[1](dy)
        return y, y_ref, grads, dx, d_initial, ref_grads, ref_dx, ref_initial

    return jax.jit(run)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@settings(max_examples=2, deadline=None)
@given(n=st.integers(1, 3), t=st.integers(1, 5), n_in=st.integers(1, 3), h=st.integers(1, 3),
       seed=SEEDS, carried=st.booleans(), relu=st.booleans())
@example(n=1, t=1, n_in=1, h=1, seed=0, carried=True, relu=True)
def test_cell_backward_matches_vjp_of_apply(cell, n, t, n_in, h, seed, carried, relu):
    """Random N, T (1 always among them), sizes, seeds; the zero or a random carried initial
    state; the RNN with tanh or ReLU."""
    cell = "rnn_relu" if cell == "rnn" and relu else cell
    layer = CELLS[cell](n_in, h, stateful=n if carried else None)
    params = random_params(layer, seed)
    x, dy = random(seed + 10, (n, t, n_in)), random(seed + 11, (n, t, h))
    if carried:  # start from a random carried state (truncated BPTT's second window)
        state = {name: random(seed + 20 + k, (n, h), 0.5) for k, name in enumerate(layer.carries)}
        initial = tuple(state[name] for name in layer.carries)
    else:
        state, initial = (), tuple(jnp.zeros((n, h), F64) for _ in layer.carries)
    y, y_ref, grads, dx, d_initial, ref_grads, ref_dx, ref_initial = vjp_check(layer)(
        params, x, dy, state, initial)
    assert y.shape == (n, t, h) and rel(y, y_ref) == 0.0
    assert_grads(grads, ref_grads, repr(layer))
    assert rel(dx, ref_dx) <= RTOL, "dx"
    for name, got, want in zip(layer.carries, d_initial, ref_initial):
        assert rel(got, want) <= RTOL, f"d{name}0"


# ---------------------------------------------------------------------------------------------
# The cells written out plainly over a Python loop (no scan), from their docstrings


def sigmoid(a):
    return 1 / (1 + jnp.exp(-a))


def unrolled(layer, params, x, initial):
    """The cell equations of the docstrings, one step at a time, every gate block by name."""
    h_size = layer.n_hidden
    blocks = lambda w: [w[k * h_size:(k + 1) * h_size] for k in range(layer.gates)]  # noqa: E731
    Wx, Wh, b = blocks(params.W_x), blocks(params.W_h), blocks(params.b)
    h, c = initial[0], initial[-1]
    ys = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        pre = [xt @ Wx[k].T + h @ Wh[k].T + b[k] for k in range(layer.gates)]
        if isinstance(layer, LSTM):
            i, f, g, o = sigmoid(pre[0]), sigmoid(pre[1]), jnp.tanh(pre[2]), sigmoid(pre[3])
            c = f * c + i * g
            h = o * jnp.tanh(c)
        elif isinstance(layer, GRU):
            r, z = sigmoid(pre[0]), sigmoid(pre[1])
            n = jnp.tanh(xt @ Wx[2].T + b[2] + r * (h @ Wh[2].T + params.b_hn))
            h = (1 - z) * n + z * h
        else:
            h = jnp.tanh(pre[0]) if layer.activation == "tanh" else jnp.maximum(pre[0], 0)
        ys.append(h)
    return jnp.stack(ys, axis=1)


@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_matches_the_equations_unrolled_in_python(cell):
    layer, t = CELLS[cell](3, 2), 4
    params = random_params(layer, 3)
    x, dy = random(1, (2, t, 3)), random(2, (2, t, 2))
    initial = tuple(random(5 + k, (2, 2), 0.5) for k in range(len(layer.carries)))

    def run(params, x, dy, initial):
        y, cache = layer.sequence_forward(params, x, initial)
        y_loop, pull = jax.vjp(lambda p, xs, i: unrolled(layer, p, xs, i), params, x, initial)
        return (y, y_loop, layer.sequence_backward(params, cache, dy), pull(dy),
                layer.backward(params, cache, dy))

    y, y_loop, (grads, dx, d_initial), (ref_grads, ref_dx, ref_initial), protocol = jax.jit(run)(
        params, x, dy, initial)
    for got, want in zip(jax.tree_util.tree_leaves(protocol), jax.tree_util.tree_leaves((grads, dx))):
        np.testing.assert_array_equal(got, want)  # backward is sequence_backward less d_initial
    assert rel(y, y_loop) <= 1e-13, "forward differs from the unrolled equations"
    assert_grads(grads, ref_grads, f"{layer} vs the unrolled loop:")
    assert rel(dx, ref_dx) <= RTOL
    for got, want in zip(d_initial, ref_initial):
        assert rel(got, want) <= RTOL


# ---------------------------------------------------------------------------------------------
# Embedding and LastStep


@settings(max_examples=3, deadline=None)
@given(vocab=st.integers(1, 5), dim=st.integers(1, 3), n=st.integers(1, 3), t=st.integers(1, 6),
       seed=SEEDS)
@example(vocab=3, dim=2, n=2, t=4, seed=0)
def test_embedding_scatter_add_matches_vjp_with_repeated_ids(vocab, dim, n, t, seed):
    layer = Embedding(vocab, dim)
    rng = np.random.default_rng(seed)
    params = EmbeddingParams(W=random(seed, (vocab, dim)))
    ids = jnp.asarray(rng.integers(0, vocab, (n, t)), jnp.int32)
    if n * t > 1:
        ids = ids.at[0, 0].set(ids.reshape(-1)[-1])  # at least one repeated id
    dy = random(seed + 1, (n, t, dim))

    def run(params, ids, dy):
        y, cache = layer.forward(params, ids)
        y_ref, pull = jax.vjp(lambda p: layer.apply(p, ids), params)
        return y, y_ref, layer.backward(params, cache, dy), pull(dy)[0]

    y, y_ref, (grads, dx), ref = jax.jit(run)(params, ids, dy)
    np.testing.assert_array_equal(y, params.W[ids])
    np.testing.assert_array_equal(y, y_ref)
    assert dx is None
    assert rel(grads.W, ref.W) <= RTOL
    one_hot = jax.nn.one_hot(ids.reshape(-1), vocab, dtype=F64)
    assert rel(grads.W, one_hot.T @ dy.reshape(-1, dim)) <= RTOL


def test_embedding_out_of_range_ids_raise_eagerly_and_are_clamped_under_jit():
    layer = Embedding(4, 2)
    params = EmbeddingParams(W=random(0, (4, 2)))
    ids = jnp.array([[-1, 5, 2]])
    with pytest.raises(ValueError, match=r"Embedding\(4, 2\): ids must be in \[0, 4\), got ids "
                                         r"from -1 to 5"):
        layer.apply(params, ids)
    y = jax.jit(layer.apply)(params, ids)
    np.testing.assert_array_equal(y, params.W[jnp.array([[0, 3, 2]])])
    dy = random(1, (1, 3, 2))
    grads, _ = jax.jit(lambda p, i: layer.backward(p, layer.forward(p, i)[1], dy))(params, ids)
    ref = jax.jit(lambda p, i: jax.vjp(lambda q: layer.apply(q, i), p)[1](dy)[0])(params, ids)
    assert rel(grads.W, ref.W) <= RTOL


def test_embedding_errors_and_description():
    layer = Embedding(10, 3)
    params = layer.init(jax.random.PRNGKey(0), F64)
    assert params.W.shape == (10, 3) and params.W.dtype == F64
    with pytest.raises(TypeError, match=r"Embedding\(10, 3\): expected integer ids .* got dtype "
                                        r"float32"):
        layer.apply(params, jnp.zeros((2, 3), jnp.float32))
    with pytest.raises(TypeError, match="expected integer ids"):
        jax.jit(layer.apply)(params, jnp.zeros((2, 3), bool))
    with pytest.raises(ValueError, match=r"parameter W has shape \(3, 10\), expected \(10, 3\)"):
        layer.apply(EmbeddingParams(params.W.T), jnp.zeros((2,), jnp.int32))
    with pytest.raises(ValueError, match="Embedding: vocab_size must be a positive integer"):
        Embedding(0, 3)
    assert repr(layer) == "Embedding(10, 3)" and layer == Embedding(10, 3)
    assert hash(layer) == hash(Embedding(10, 3)) and layer != Embedding(10, 4)
    assert layer.apply(params, jnp.array(4)).shape == (3,)  # any shape of ids
    assert layer.apply(params, jnp.zeros((2, 3, 4), jnp.int32)).shape == (2, 3, 4, 3)


def test_last_step_and_its_backward():
    layer = LastStep()
    x, dy = random(0, (2, 3, 4)), random(1, (2, 4))
    y, cache = layer.forward((), x)
    np.testing.assert_array_equal(y, x[:, 2])
    _, dx = layer.backward((), cache, dy)
    np.testing.assert_array_equal(dx, jax.vjp(lambda xs: layer.apply((), xs), x)[1](dy)[0])
    np.testing.assert_array_equal(dx[:, 2], dy)
    assert not np.asarray(dx[:, :2]).any()
    assert repr(layer) == "LastStep()" and layer == LastStep() and hash(layer) == hash(LastStep())
    with pytest.raises(ValueError, match=r"LastStep\(\): expected a sequence of shape \(N, T, H\)"):
        layer.apply((), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"LastStep\(\): expected at least one time step"):
        layer.apply((), jnp.ones((2, 0, 3)))


# ---------------------------------------------------------------------------------------------
# Truncated backpropagation through time: the state carried through the model state


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_two_windows_carry_the_state_and_stop_the_gradient(cell):
    n, t1, t2, n_in, h = 2, 3, 2, 3, 4
    layer = CELLS[cell](n_in, h, stateful=n)
    params = random_params(layer, 7)
    x = random(0, (n, t1 + t2, n_in))
    x1, x2 = x[:, :t1], x[:, t1:]
    dy2 = random(1, (n, t2, h))
    state0 = layer.init_state(F64)
    assert set(state0) == set(layer.carries) and state0["h"].shape == (n, h)

    @jax.jit
    def run(params):
        whole = layer.apply(params, x)  # one run from zeros, over the concatenated sequence
        y1, cache1 = layer.forward(params, x1, state=state0)
        state1 = layer.next_state(state0, cache1)
        y2, cache2 = layer.forward(params, x2, state=state1)
        grads, dx2 = layer.backward(params, cache2, dy2)
        # the reference: autodiff of window 2 with the carried state held constant ...
        pull = jax.vjp(lambda p, xs: layer.apply(p, xs, state=state1), params, x2)[1]
        # ... which is also what autodiff of the two windows chained through next_state gives
        def chained(p):
            s1 = layer.next_state(state0, layer.forward(p, x1, state=state0)[1])
            return jnp.sum(layer.apply(p, x2, state=s1) * dy2)
        return whole, y1, y2, state1, grads, dx2, pull(dy2), jax.grad(chained)(params)

    whole, y1, y2, state1, grads, dx2, (ref_grads, ref_dx2), chained = run(params)
    assert rel(jnp.concatenate([y1, y2], axis=1), whole) <= 1e-13
    np.testing.assert_array_equal(state1["h"], y1[:, -1])
    assert_grads(grads, ref_grads, "second window")
    assert rel(dx2, ref_dx2) <= RTOL
    assert_grads(grads, chained, "second window, chained through next_state")
    # the zero state at another batch size, and a stateless layer's () state
    assert layer.apply(params, x[:1], state=()).shape == (1, t1 + t2, h)
    assert CELLS[cell](n_in, h).init_state() == ()


def stateful_network():
    return fnnet.Sequential(Embedding(6, 3), LSTM(3, 4, stateful=3), GRU(4, 3, stateful=3),
                            LastStep(), Dense(3, 2), Softmax())


def test_a_stateful_network_matches_autodiff_and_moves_its_state():
    model = stateful_network()
    params = random_params(model, 2)
    state = model.init_state(F64)
    ids, labels = jnp.asarray(np.random.default_rng(0).integers(0, 6, (3, 4))), jnp.array([0, 1, 1])
    manual = fnnet.loss_output_and_grad(model, "ce", with_state=True)
    reference = fnnet.loss_output_and_grad(model, "ce", grads="autodiff", with_state=True)
    both = jax.jit(lambda p, s: (manual(p, ids, labels, state=s), reference(p, ids, labels, state=s)))
    for _ in range(2):  # the second window starts from the first one's final state
        (value, _, grads, new_state), (ref_value, _, ref_grads, ref_state) = both(params, state)
        assert abs(float(value) - float(ref_value)) <= 1e-12 * abs(float(ref_value))
        for got, want in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
            assert rel(got, want) <= RTOL
        for got, want in zip(jax.tree_util.tree_leaves(new_state),
                             jax.tree_util.tree_leaves(ref_state)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
        assert not np.allclose(new_state[1]["c"], state[1]["c"]), "the state did not move"
        state = new_state
    with pytest.raises(ValueError, match=r"layer 1: LSTM\(3, 4, stateful=3\): carries the state "
                                         r"of 3 sequences, got a batch of 2"):
        model.apply(params, ids[:2], state=state)


# ---------------------------------------------------------------------------------------------
# Whole networks


def test_embedding_lstm_network_matches_autodiff(fused=True):
    model = fnnet.Sequential(Embedding(7, 4), LSTM(4, 5), LastStep(), Dense(5, 3), Softmax())
    params = random_params(model, 4)
    ids = jnp.asarray(np.random.default_rng(1).integers(0, 7, (4, 5)), jnp.int32)
    labels = jnp.array([0, 2, 1, 2])
    value, grads = jax.jit(fnnet.value_and_grad(model, "ce", fused))(params, ids, labels)
    ref_value, ref_grads = jax.jit(fnnet.autodiff_value_and_grad(model, "ce", fused))(
        params, ids, labels)
    assert abs(float(value) - float(ref_value)) <= 1e-12 * abs(float(ref_value))
    paths = jax.tree_util.tree_flatten_with_path(grads)[0]
    for (path, got), want in zip(paths, jax.tree_util.tree_leaves(ref_grads)):
        assert rel(got, want) <= RTOL, jax.tree_util.keystr(path)


def test_a_sequence_to_sequence_network_matches_autodiff():
    """Dense on every step of a (N, T, H) sequence, cross-entropy over every token."""
    model = fnnet.Sequential(Embedding(5, 3), GRU(3, 4), RNN(4, 3), Dense(3, 5), Softmax())
    params = random_params(model, 6)
    ids = jnp.asarray(np.random.default_rng(2).integers(0, 5, (3, 4)), jnp.int32)
    targets = jnp.roll(ids, -1, axis=1)  # next-token labels (N, T)
    value, grads = jax.jit(fnnet.value_and_grad(model, "ce"))(params, ids, targets)
    ref_value, ref_grads = jax.jit(fnnet.autodiff_value_and_grad(model, "ce"))(params, ids, targets)
    assert abs(float(value) - float(ref_value)) <= 1e-12 * abs(float(ref_value))
    for got, want in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
        assert rel(got, want) <= RTOL


def test_manual_vjp_with_an_embedding_first():
    model = fnnet.Sequential(Embedding(5, 3), RNN(3, 4), LastStep())
    params = random_params(model, 1)
    ids = jnp.array([[1, 1, 4], [0, 2, 1]])
    apply = fnnet.manual_vjp(model)

    def loss(f):
        return lambda p: jnp.sum(jnp.sin(f(p, ids)))

    ours = jax.jit(jax.grad(loss(apply)))(params)
    ref = jax.jit(jax.grad(loss(model.apply)))(params)
    for got, want in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(ref)):
        assert rel(got, want) <= RTOL
    _, pull = jax.vjp(apply, params, ids)
    _, d_ids = pull(jnp.ones((2, 4), F64))
    assert d_ids.dtype == jax.dtypes.float0 and d_ids.shape == ids.shape


# ---------------------------------------------------------------------------------------------
# jit, vmap over stacked models, mixed precision


def test_vmap_over_stacked_params_matches_each_model():
    layer, k = LSTM(3, 2), 3
    stacked = jax.jit(jax.vmap(lambda key: layer.init(key, F64)))(
        jax.random.split(jax.random.PRNGKey(0), k))
    stacked = jax.tree_util.tree_map(lambda a: a + random(1, a.shape, 0.3), stacked)
    x, dy = random(2, (2, 4, 3)), random(3, (2, 4, 2))

    def grads(params):
        y, cache = layer.forward(params, x)
        return (y,) + layer.backward(params, cache, dy)

    ys, dps, dxs = jax.jit(jax.vmap(grads))(stacked)
    one = jax.jit(grads)
    for m in range(k):
        params = jax.tree_util.tree_map(lambda a, m=m: a[m], stacked)
        y, dp, dx = one(params)
        assert rel(ys[m], y) <= 1e-13 and rel(dxs[m], dx) <= 1e-12
        assert_grads(jax.tree_util.tree_map(lambda a, m=m: a[m], dps), dp, f"model {m}")


def dot_operand_dtypes(fn, *args):
    """The (lhs, rhs, out) dtypes of every dot_general in ``fn``'s program, scans included."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                found.append(tuple(v.aval.dtype for v in eqn.invars) + (eqn.outvars[0].aval.dtype,))
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                        walk(sub.jaxpr)
                    elif hasattr(sub, "eqns"):
                        walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def float32_case(layer, seed):
    f32 = lambda a: a.astype(jnp.float32)  # noqa: E731
    n, t = 3, 6
    return (jax.tree_util.tree_map(f32, random_params(layer, seed)),
            f32(random(seed + 50, (n, t, layer.n_in))), f32(random(seed + 51, (n, t, layer.n_hidden))))


def forward_backward(layer):
    def run(params, x, dy):
        y, cache = layer.forward(params, x)
        return (y,) + layer.backward(params, cache, dy)
    return run


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_under_bf16_every_product_reads_bfloat16_and_accumulates_in_float32(cell):
    layer = CELLS[cell](4, 8)
    bf16 = layer.with_precision("bf16")
    assert bf16.precision.name == "bf16" and layer.precision.name == "f32"
    assert repr(bf16) == repr(layer)[:-1] + ", precision='bf16')"
    case = float32_case(layer, 0)
    dots = dot_operand_dtypes(forward_backward(bf16), *case)
    assert len(dots) == 6  # forward: input, recurrent; backward: recurrent, dW_x, dW_h, dx
    assert all(d == (jnp.bfloat16, jnp.bfloat16, jnp.float32) for d in dots), dots
    assert all(d == (jnp.float32,) * 3 for d in dot_operand_dtypes(forward_backward(layer), *case))
    out = jax.eval_shape(forward_backward(bf16), *case)  # states, gates, sums: float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(out))


def test_bf16_products_are_close_to_float32():
    layers = (LSTM(4, 8), GRU(4, 8))
    cases = [float32_case(layer, 1) for layer in layers]

    @jax.jit
    def run(cases):
        return [(forward_backward(layer)(*case), forward_backward(layer.with_precision("bf16"))(*case))
                for layer, case in zip(layers, cases)]

    for (y, dp, dx), (y16, dp16, dx16) in run(cases):
        assert rel(y16, y) <= 3e-2 and rel(dx16, dx) <= 5e-2
        for name in dp._fields:
            assert rel(getattr(dp16, name), getattr(dp, name)) <= 5e-2, name


# ---------------------------------------------------------------------------------------------
# Description, initialisation, errors


def test_description_init_and_protocol():
    lstm = LSTM(3, 5)
    assert repr(lstm) == "LSTM(3, 5)" and repr(GRU(2, 4, stateful=8)) == "GRU(2, 4, stateful=8)"
    assert repr(RNN(1, 2, "relu")) == "RNN(1, 2, activation='relu')" and repr(RNN(1, 2)) == "RNN(1, 2)"
    assert lstm == LSTM(3, 5) and hash(lstm) == hash(LSTM(3, 5)) and lstm != GRU(3, 5)
    assert lstm != LSTM(3, 5, stateful=2) and RNN(1, 2) != RNN(1, 2, "relu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        lstm.n_hidden = 3
    assert RNN(1, 2, "relu", stateful=4).with_precision("bf16") == RNN(
        1, 2, "relu", stateful=4, precision="bf16")
    assert not lstm.stochastic and lstm.init_state() == ()

    params = jax.jit(lambda key: LSTM(16, 32).init(key, F64))(jax.random.key(0))
    assert isinstance(params, RecurrentParams) and params.W_x.dtype == F64
    assert params.W_x.shape == (128, 16) and params.W_h.shape == (128, 32)
    np.testing.assert_array_equal(params.b, np.r_[np.zeros(32), np.ones(32), np.zeros(64)])
    assert float(jnp.abs(params.W_x).max()) <= np.sqrt(6 / (16 + 32))
    for k in range(4):  # W_h: an orthogonal matrix per gate block
        block = params.W_h[32 * k:32 * (k + 1)]
        np.testing.assert_allclose(block @ block.T, np.eye(32), atol=1e-12)
    gru = jax.jit(GRU(3, 2).init)(jax.random.key(0))
    assert isinstance(gru, GRUParams) and gru.W_x.shape == (6, 3) and gru.b_hn.shape == (2,)
    assert not np.asarray(gru.b).any() and random_params(RNN(3, 2), 0).W_h.shape == (2, 2)
    state = LSTM(3, 5, stateful=4).init_state(F64)
    assert set(state) == {"h", "c"} and state["c"].shape == (4, 5) and state["h"].dtype == F64


def test_clear_errors_name_the_layer():
    layer = LSTM(3, 4)
    params = random_params(layer, 0)
    with pytest.raises(ValueError, match=r"LSTM\(3, 4\): expected input of shape \(N, T, 3\) "
                                         r"\(batch, time, features\), got shape \(2, 3\)"):
        layer.apply(params, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, T, 3\).*got shape \(2, 5, 2\)"):
        jax.jit(layer.apply)(params, jnp.ones((2, 5, 2)))
    with pytest.raises(ValueError, match=r"LSTM\(3, 4\): expected at least one time step"):
        layer.apply(params, jnp.ones((2, 0, 3)))
    with pytest.raises(TypeError, match=r"LSTM\(3, 4\): input must be a floating-point array"):
        layer.apply(params, jnp.ones((2, 5, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"GRU\(3, 4\): parameter b_hn has shape"):
        GRU(3, 4).apply(random_params(GRU(3, 4), 0)._replace(b_hn=jnp.ones(3)),
                        jnp.ones((1, 2, 3)))
    with pytest.raises(ValueError, match=r"parameter W_h has shape \(16, 3\), expected \(16, 4\)"):
        layer.apply(params._replace(W_h=jnp.ones((16, 3))), jnp.ones((1, 2, 3)))
    with pytest.raises(ValueError, match=r"LSTM\(3, 4\): not stateful, so its state is \(\)"):
        layer.apply(params, jnp.ones((2, 5, 3)), state={"h": jnp.zeros((2, 4))})
    stateful = LSTM(3, 4, stateful=2)
    with pytest.raises(ValueError, match=r"state must be \(\) or a dict with keys \['h', 'c'\]"):
        stateful.apply(params, jnp.ones((2, 5, 3)), state={"h": jnp.zeros((2, 4))})
    with pytest.raises(ValueError, match="unknown activation 'sigmoid'"):
        RNN(3, 4, "sigmoid")
    with pytest.raises(ValueError, match="LSTM: stateful must be None or the number of sequences"):
        LSTM(3, 4, stateful=True)
    with pytest.raises(ValueError, match="GRU: n_hidden must be a positive integer"):
        GRU(3, 0)


@pytest.mark.slow  # compiles a training program twice
def test_a_stateful_model_checkpoints_its_carried_state_and_resumes_bit_exactly(tmp_path):
    """Truncated BPTT through fit: the carried (h, c) of the N sequences is the model state,
    saved with the checkpoint; 1 epoch, then a resume to 2, ends bit-identical (params and the
    carried state) to 2 epochs in one run."""
    model = fnnet.language_model(11, dim=4, hidden=6, stateful=4)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 11, (16, 8)).astype(np.int32)
    y = np.roll(x, -1, axis=1)
    opt = fnnet.optim.clip_by_global_norm(fnnet.optim.adam(1e-2), 1.0)
    kw = dict(batch_size=4, key=jax.random.PRNGKey(0), progress=False)
    whole, _ = fnnet.fit(model, "cross-entropy", opt, (x, y), epochs=2, **kw)
    carried = whole.model_state[1]
    assert set(carried) == {"h", "c"} and np.abs(np.asarray(carried["h"])).max() > 0
    path = tmp_path / "state.npz"
    fnnet.fit(model, "cross-entropy", opt, (x, y), epochs=1, checkpoint=path, **kw)
    resumed, history = fnnet.fit(model, "cross-entropy", opt, (x, y), epochs=2, checkpoint=path,
                                 resume=True, **kw)
    assert history["epoch"] == [1, 2]
    for a, b in zip(jax.tree_util.tree_leaves((resumed.params, resumed.model_state)),
                    jax.tree_util.tree_leaves((whole.params, whole.model_state))):
        np.testing.assert_array_equal(a, b)
