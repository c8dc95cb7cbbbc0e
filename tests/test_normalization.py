"""BatchNorm, LayerNorm and Dropout: each backward against jax.vjp of apply in float64 over random
shapes and seeds, the two batch-norm backward forms, state and keys through networks, training
and inference modes, and clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fnnet
from fnnet.layers import BatchNorm, Dropout, LayerNorm
from fnnet.layers.normalization import normalize, normalize_backward, normalize_backward_staged

F64 = jnp.float64
RTOL = 1e-10


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def random(seed, shape, scale=1.0, shift=0.0):
    # device_put: jnp.asarray would compile a program for every new shape
    return jax.device_put(shift + scale * np.random.default_rng(seed).normal(size=shape))


shapes = st.one_of(
    st.tuples(st.integers(2, 9), st.integers(1, 6)),
    st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 5)))


def layer_vjp(layer, params, x, dy, **kwargs):
    """``(dparams, dx)`` by jax.vjp of ``apply``: the reference, never our rules."""
    return jax.vjp(lambda p_, x_: layer.apply(p_, x_, **kwargs), params, x)[1](dy)


def manual(layer, params, x, dy, **kwargs):
    """``(dparams, dx)`` by the layer's forward and hand-derived backward."""
    return layer.backward(params, layer.forward(params, x, **kwargs)[1], dy)


def manual_and_vjp(layer, params, x, dy, rule=None, reference=None):
    """``(manual(...), layer_vjp(...))`` (``rule`` and ``reference`` their keyword arguments),
    computed side by side in one compiled program."""
    return jax.jit(lambda p, xs, d: (manual(layer, p, xs, d, **(rule or {})),
                                     layer_vjp(layer, p, xs, d, **(reference or {}))))(
        params, x, dy)


def close(got, want, scale=0.0):
    """Within RTOL of the reference's size (or of ``scale``, where the result cancels to ~0)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    size = max(float(np.max(np.abs(want))), scale, 1e-300)
    return float(np.max(np.abs(got - want))) <= RTOL * size


def params_for(layer, seed):
    params = layer.init(jax.random.PRNGKey(0), F64)
    return type(params)(random(seed + 1, params.gamma.shape, 0.5, 1.0),
                        random(seed + 2, params.beta.shape))


@settings(max_examples=12)
@given(shape=shapes, seed=st.integers(0, 2**16), form=st.sampled_from(["simplified", "staged"]))
def test_batchnorm_training_backward_matches_vjp(shape, seed, form):
    layer = BatchNorm(shape[-1], backward_form=form)
    if np.prod(shape[:-1]) < 2:
        shape = (2,) + shape[1:]
    params = params_for(layer, seed)
    x, dy = random(seed, shape, 2.0, 0.5), random(seed + 3, shape)
    (dparams, dx), (ref_params, ref_dx) = manual_and_vjp(layer, params, x, dy,
                                                         reference=dict(train=True))
    assert close(dparams.gamma, ref_params.gamma)
    assert close(dparams.beta, ref_params.beta)
    # dX cancels to ~0 for tiny batches (two values normalise to ±1 whatever they are)
    xs, dys, gamma = (np.asarray(a) for a in (x, dy, params.gamma))  # numpy: no compile
    natural = float(np.max(np.abs(dys * gamma / np.std(xs, axis=tuple(range(xs.ndim - 1))))))
    assert close(dx, ref_dx, natural)


@settings(max_examples=12)
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_the_two_batchnorm_backward_forms_agree(shape, seed):
    axes = tuple(range(len(shape) - 1))
    x, dx_hat = random(seed, shape, 3.0), random(seed + 1, shape)

    @jax.jit
    def both_forms(xs, d):  # one program: no op-by-op forward
        c = normalize(xs, axes, 1e-5)
        return c, normalize_backward_staged(d, c, axes), normalize_backward(d, c, axes)

    cache, staged, simplified = both_forms(x, dx_hat)
    assert close(staged, simplified, float(np.max(np.abs(np.asarray(dx_hat) * np.asarray(cache.inv_std)))))


@settings(max_examples=8)
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_batchnorm_inference_uses_running_statistics_and_its_backward_matches_vjp(shape, seed):
    layer = BatchNorm(shape[-1])
    params = params_for(layer, seed)
    variance = np.asarray(random(seed + 5, shape[-1:])) ** 2 + 0.1
    state = {"mean": random(seed + 4, shape[-1:]), "var": jax.device_put(variance)}
    x, dy = random(seed, shape), random(seed + 3, shape)
    y = jax.jit(lambda p, xs, s: layer.apply(p, xs, state=s))(params, x, state)
    gamma, beta, xs, mean = (np.asarray(a) for a in (params.gamma, params.beta, x, state["mean"]))
    expected = gamma * (xs - mean) / np.sqrt(variance + 1e-5) + beta  # numpy: no compile
    assert rel(y, expected) <= 1e-12
    options = dict(state=state, train=False)
    (dparams, dx), (ref_params, ref_dx) = manual_and_vjp(layer, params, x, dy, options, options)
    assert close(dx, ref_dx) and close(dparams.gamma, ref_params.gamma)
    cache = layer.forward(params, x, state=state, train=False)[1]
    assert layer.next_state(state, cache) is state, "an inference batch moved the statistics"


def test_batchnorm_running_statistics_follow_the_momentum():
    layer = BatchNorm(3, momentum=0.75)
    x = random(0, (8, 2, 2, 3), 2.0, 1.0)
    _, cache = layer.forward(layer.init(None, F64), x)
    state = layer.next_state(layer.init_state(F64), cache)
    np.testing.assert_allclose(state["mean"], 0.25 * x.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(state["var"], 0.75 + 0.25 * x.var(axis=(0, 1, 2)), rtol=1e-12)


@settings(max_examples=12)
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_layernorm_backward_matches_vjp(shape, seed):
    layer = LayerNorm(shape[-1])
    params = params_for(layer, seed)
    x, dy = random(seed, shape, 2.0, -0.3), random(seed + 3, shape)
    (dparams, dx), (ref_params, ref_dx) = manual_and_vjp(layer, params, x, dy)
    xs, dys, gamma = (np.asarray(a) for a in (x, dy, params.gamma))  # numpy: no compile
    natural = float(np.max(np.abs(dys * gamma / (np.std(xs, axis=-1, keepdims=True) + 1e-3))))
    assert close(dparams.gamma, ref_params.gamma) and close(dparams.beta, ref_params.beta)
    assert close(dx, ref_dx, natural)
    inference, training = jax.jit(lambda p, xs: (layer.apply(p, xs),
                                                 layer.apply(p, xs, train=True)))(params, x)
    assert np.allclose(inference, training)


@settings(max_examples=12)
@given(shape=shapes, seed=st.integers(0, 2**16), rate=st.sampled_from([0.0, 0.1, 0.5, 0.9]))
def test_dropout_backward_matches_vjp_with_the_same_key(shape, seed, rate):
    layer = Dropout(rate)
    key = jax.random.PRNGKey(seed)
    x, dy = random(seed, shape), random(seed + 1, shape)

    @jax.jit
    def both_paths(xs, d, k):  # one program: the mask is drawn from the key on each path
        y, cache = layer.forward((), xs, key=k)
        pull = jax.vjp(lambda x_: layer.apply((), x_, key=k, train=True), xs)[1]
        return y, layer.apply((), xs, key=k, train=True), layer.backward((), cache, d)[1], pull(d)[0]

    y, y_apply, dx, ref_dx = both_paths(x, dy, key)
    np.testing.assert_array_equal(y, y_apply)
    np.testing.assert_array_equal(dx, ref_dx)
    kept = np.asarray(y) != 0
    np.testing.assert_allclose(np.asarray(y)[kept], np.asarray(x)[kept] / (1 - rate), rtol=1e-12)


def test_dropout_keeps_the_expected_fraction_and_is_the_identity_at_inference():
    layer = Dropout(0.3)
    x = jnp.ones((200, 100), F64)
    y = layer.apply((), x, key=jax.random.PRNGKey(0), train=True)
    assert abs(float((y != 0).mean()) - 0.7) < 0.01
    assert abs(float(y.mean()) - 1.0) < 0.02  # inverted: the expectation is the input
    assert layer.apply((), x) is x and layer.forward((), x, train=False)[1] is None


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, "0.5", True])
def test_dropout_rate_outside_zero_one_is_refused(rate):
    with pytest.raises(ValueError, match=r"Dropout: rate must be a finite number in \[0, 1\)"):
        Dropout(rate)


def test_a_missing_key_in_training_names_the_layer():
    model = fnnet.Sequential(fnnet.Dense(3, 4), fnnet.ReLU(), Dropout(0.5), fnnet.Dense(4, 2))
    params = model.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"layer 2: Dropout\(rate=0.5\): training .* needs key="):
        model.forward(params, jnp.ones((2, 3)))
    assert model.apply(params, jnp.ones((2, 3))).shape == (2, 2)  # inference needs no key
    assert model.stochastic and not fnnet.mlp([3, 2]).stochastic


def test_normalisation_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"BatchNorm\(4\): expected input of shape \(N, ..., 4\)"):
        BatchNorm(4).apply(BatchNorm(4).init(None), jnp.ones((2, 3)), train=True)
    with pytest.raises(ValueError, match=r"BatchNorm\(4\): inference .* pass state="):
        BatchNorm(4).apply(BatchNorm(4).init(None), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="momentum must be a finite number in"):
        BatchNorm(4, momentum=1.0)
    with pytest.raises(ValueError, match="backward_form must be one of"):
        BatchNorm(4, backward_form="fast")
    with pytest.raises(ValueError, match="LayerNorm: num_features must be a positive integer"):
        LayerNorm(0)


# ---------------------------------------------------------------------------------------------
# Whole networks: state and keys through Sequential, the gradient paths and training


def mixed_network():
    return fnnet.Sequential(
        fnnet.Dense(6, 8), BatchNorm(8), fnnet.ReLU(), Dropout(0.25),
        fnnet.Sequential(fnnet.Dense(8, 5), LayerNorm(5), fnnet.Tanh()),
        fnnet.Dense(5, 3), fnnet.Softmax())


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
@pytest.mark.parametrize("fused", [True, False])
def test_a_mixed_network_matches_autodiff_with_the_same_key(fused):
    model = mixed_network()
    params = model.init(jax.random.PRNGKey(1), F64)
    state = model.init_state(F64)
    x, y = random(0, (12, 6), 2.0), jax.device_put(np.arange(12) % 3)
    key = jax.random.PRNGKey(7)
    manual = jax.jit(fnnet.loss_output_and_grad(model, "ce", fused, with_state=True))
    reference = jax.jit(fnnet.loss_output_and_grad(model, "ce", fused, grads="autodiff",
                                                   with_state=True))
    value, y_pred, grads, new_state = manual(params, x, y, state=state, key=key)
    ref_value, ref_pred, ref_grads, ref_state = reference(params, x, y, state=state, key=key)
    assert abs(float(value) - float(ref_value)) <= 1e-12 * abs(float(ref_value))
    assert rel(y_pred, ref_pred) <= 1e-12
    scale = max(float(np.max(np.abs(g))) for g in jax.tree_util.tree_leaves(ref_grads))
    for got, want in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
        assert float(np.max(np.abs(np.asarray(got) - np.asarray(want)))) <= 1e-10 * scale
    for got, want in zip(jax.tree_util.tree_leaves(new_state),
                         jax.tree_util.tree_leaves(ref_state)):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert not np.allclose(new_state[1]["mean"], state[1]["mean"]), "the statistics did not move"
    report = fnnet.check_grads(model, "ce", params, x, y, fused, state=state, key=key)
    assert report.max_abs <= 1e-10 * scale


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_stacked_models_jit_and_vmap_through_state_and_keys():
    model = mixed_network()
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    params = jax.jit(jax.vmap(lambda k: model.init(k, F64)))(keys)
    state = jax.jit(jax.vmap(lambda _: model.init_state(F64)))(keys)
    x, y = random(0, (10, 6)), jax.device_put(np.arange(10) % 3)
    step = fnnet.loss_output_and_grad(model, "ce", with_state=True)
    batched = jax.jit(jax.vmap(lambda p, s, k: step(p, x, y, state=s, key=k)))
    values, _, grads, states = batched(params, state, keys)

    def model_k(k):  # model k of the stack on its own, in one compiled program for every k
        take = lambda tree: jax.tree_util.tree_map(lambda a: a[k], tree)  # noqa: E731
        return step(take(params), x, y, state=take(state), key=keys[k])

    one_model = jax.jit(model_k)
    for k in range(3):
        one = one_model(k)
        assert abs(float(one[0]) - float(values[k])) < 1e-12
        np.testing.assert_allclose(one[3][1]["var"], states[1]["var"][k], rtol=1e-12)


def test_fit_trains_with_state_and_scores_with_running_statistics():
    model = fnnet.Sequential(fnnet.Dense(4, 16), BatchNorm(16), fnnet.ReLU(), Dropout(0.2),
                             fnnet.Dense(16, 2), fnnet.Softmax())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 4)).astype(np.float32) * 3 + 1
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int32)
    state, history = fnnet.fit(model, "ce", fnnet.optim.adam(1e-2), (x, y), epochs=15,
                               batch_size=32, validation=(x, y), progress=False)
    assert isinstance(state, fnnet.TrainState)  # one return type: the state keeps model_state
    assert history["val_accuracy"][-1] > 0.85
    loss, accuracy = fnnet.evaluate(model, "ce", state.params, x, y, state=state.model_state)
    assert float(accuracy) == pytest.approx(history["val_accuracy"][-1])
    running = state.model_state[1]
    hidden = np.asarray(x @ np.asarray(state.params[0].W).T + np.asarray(state.params[0].b))
    np.testing.assert_allclose(running["mean"], hidden.mean(0), atol=0.5)


def conv_network():
    return fnnet.Sequential(
        fnnet.Conv2D(2, 4, 3, padding="same"), BatchNorm(4), fnnet.ReLU(), fnnet.MaxPool2D(2),
        fnnet.Conv2D(4, 3, 2, stride=2), LayerNorm(3), fnnet.AvgPool2D(1), fnnet.Flatten(),
        Dropout(0.3), fnnet.Dense(12, 5), fnnet.Tanh(), fnnet.Dense(5, 3), fnnet.Softmax())


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_a_conv_network_mixing_every_layer_matches_autodiff_with_the_same_key():
    model = conv_network()
    params = model.init(jax.random.PRNGKey(3), F64)
    state = model.init_state(F64)
    x, y = random(1, (4, 8, 8, 2)), jnp.array([0, 1, 2, 1])
    key = jax.random.PRNGKey(11)
    manual = jax.jit(lambda p, s, k: fnnet.loss_output_and_grad(model, "ce", with_state=True)(
        p, x, y, state=s, key=k))
    reference = jax.jit(lambda p, s, k: fnnet.loss_output_and_grad(
        model, "ce", grads="autodiff", with_state=True)(p, x, y, state=s, key=k))
    value, _, grads, new_state = manual(params, state, key)
    ref_value, _, ref_grads, ref_state = reference(params, state, key)
    assert abs(float(value) - float(ref_value)) <= 1e-12 * abs(float(ref_value))
    # a bias followed by batch norm has a gradient of exactly 0: judge every leaf on one scale
    scale = max(float(np.max(np.abs(g))) for g in jax.tree_util.tree_leaves(ref_grads))
    for got, want in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
        assert close(got, want, scale), (got, want)
    for got, want in zip(jax.tree_util.tree_leaves(new_state),
                         jax.tree_util.tree_leaves(ref_state)):
        np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_a_model_with_state_checkpoints_and_resumes_exactly(tmp_path):
    model = fnnet.Sequential(fnnet.Conv2D(1, 3, 3), BatchNorm(3), fnnet.ReLU(), fnnet.Flatten(),
                             Dropout(0.2), fnnet.Dense(48, 2), fnnet.Softmax())
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 6, 6, 1)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int32)
    args = (model, "ce", fnnet.optim.momentum(0.05), (x, y))
    kwargs = dict(batch_size=16, progress=False, key=jax.random.PRNGKey(4))
    state, _ = fnnet.fit(*args, epochs=4, **kwargs)
    straight = state.params
    path = tmp_path / "run.npz"
    fnnet.fit(*args, epochs=2, checkpoint=path, **kwargs)
    state, history = fnnet.fit(*args, epochs=4, checkpoint=path, resume=True, **kwargs)
    resumed = state.params
    assert history["epoch"] == [1, 2, 3, 4]
    for got, want in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(straight)):
        np.testing.assert_array_equal(got, want)
    saved, _ = fnnet.load(path)
    assert set(saved["model_state"][1]) == {"mean", "var"}
