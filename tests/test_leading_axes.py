"""Any number of leading axes: ``Dense``, ``LayerNorm``, ``Dropout``, the activations, the losses
and the metrics on ``(N, T, F)`` (sequence) inputs.

Each hand-derived backward is checked against ``jax.vjp`` of its ``apply`` in float64 over random
shapes and seeds (every gradient on its own, relative error ≤ 1e-10); the losses' gradients
against ``jax.grad`` of their values, the fused cross-entropy rule ``(A − Y)/(N·T)`` against
``jax.grad`` of the unfused loss; and a whole network's ``value_and_grad`` against
``autodiff_value_and_grad`` with ``(N, T)`` labels. Shapes are small and examples few: each
example compiles its own programs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fnnet
from fnnet import losses, metrics
from fnnet.layers import Dense, DenseParams, Dropout, LayerNorm
from fnnet.layers.activations import softmax
from fnnet.training import inputs

F64 = jnp.float64
RTOL = 1e-10

# leading axes: (N, T) mostly, sometimes (N, T, U); the feature axis is drawn separately
leading = st.one_of(st.tuples(st.integers(1, 4), st.integers(1, 5)),
                    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)))
seeds = st.integers(0, 2**16)


def random(seed, shape, scale=1.0, shift=0.0):
    # device_put: jnp.asarray would compile a program for every new shape
    return jax.device_put(shift + scale * np.random.default_rng(seed).normal(size=shape))


def rel(got, want, scale=0.0):
    """``max |got − want|`` relative to the reference's size (or to ``scale`` where the
    reference cancels to about 0)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    size = max(float(np.max(np.abs(want), initial=0.0)), scale, 1e-300)
    return float(np.max(np.abs(got - want), initial=0.0)) / size


def _rule(layer, p, xs, d, kwargs):
    return layer.backward(p, layer.forward(p, xs, **kwargs)[1], d)


def _pull(layer, p, xs, d, kwargs):
    apply_kwargs = {**kwargs, "train": True} if "key" in kwargs else kwargs
    return jax.vjp(lambda p_, x_: layer.apply(p_, x_, **apply_kwargs), p, xs)[1](d)


def manual(layer, params, x, dy, **kwargs):
    """``(dparams, dx)`` by the layer's forward and hand-derived backward, compiled."""
    return jax.jit(lambda p, xs, d: _rule(layer, p, xs, d, kwargs))(params, x, dy)


def reference(layer, params, x, dy, **kwargs):
    """``(dparams, dx)`` by ``jax.vjp`` of ``apply`` (in training mode where a ``key`` is
    given): never our rules."""
    return jax.jit(lambda p, xs, d: _pull(layer, p, xs, d, kwargs))(params, x, dy)


def both(layer, params, x, dy, **kwargs):
    """``(manual, reference)`` in one compiled program (one compilation per example)."""
    return jax.jit(lambda p, xs, d: (_rule(layer, p, xs, d, kwargs),
                                     _pull(layer, p, xs, d, kwargs)))(params, x, dy)


# ---------------------------------------------------------------------------------------------
# Dense


@settings(max_examples=6)
@given(lead=leading, n_in=st.integers(1, 5), n_out=st.integers(1, 5), seed=seeds)
def test_dense_backward_on_leading_axes_matches_vjp(lead, n_in, n_out, seed):
    layer = Dense(n_in, n_out)
    params = DenseParams(random(seed, (n_out, n_in)), random(seed + 1, (n_out,)))
    x, dy = random(seed + 2, lead + (n_in,)), random(seed + 3, lead + (n_out,))
    y = np.asarray(layer.apply(params, x))
    assert y.shape == lead + (n_out,)
    np.testing.assert_allclose(y, np.einsum("...i,oi->...o", x, params.W) + params.b,
                               rtol=1e-12, atol=1e-12)
    (grads, dx), (ref_grads, ref_dx) = both(layer, params, x, dy)
    assert rel(grads.W, ref_grads.W) <= RTOL
    assert rel(grads.b, ref_grads.b) <= RTOL
    assert rel(dx, ref_dx) <= RTOL


def test_dense_on_leading_axes_is_dense_on_the_flattened_rows():
    """The backward's one product over the ``(N·T, F)`` rows, written out: exactly (bit for
    bit) the 2-D layer's gradients on the flattened arrays, and ``dX`` keeps the leading axes."""
    layer = Dense(4, 3)
    params = DenseParams(random(0, (3, 4)), random(1, (3,)))
    x, dy = random(2, (2, 5, 4)), random(3, (2, 5, 3))
    grads, dx = manual(layer, params, x, dy)
    flat_grads, flat_dx = manual(layer, params, x.reshape(10, 4), dy.reshape(10, 3))
    np.testing.assert_array_equal(grads.W, flat_grads.W)
    np.testing.assert_array_equal(grads.b, flat_grads.b)
    assert dx.shape == (2, 5, 4)
    np.testing.assert_array_equal(dx.reshape(10, 4), flat_dx)
    np.testing.assert_allclose(grads.W, np.einsum("nto,nti->oi", dy, x), rtol=1e-12)
    np.testing.assert_allclose(grads.b, np.sum(dy, axis=(0, 1)), rtol=1e-12)


@pytest.mark.parametrize("policy", ["bf16", "f16"])
def test_dense_mixed_precision_on_leading_axes(policy):
    """Under a casting policy the 3-D backward runs the same products as the 2-D one on the
    flattened rows (bit for bit), float32 results, and agrees with ``jax.vjp`` of the casting
    ``apply``."""
    layer = Dense(6, 5, precision=policy)
    key = jax.random.split(jax.random.PRNGKey(0), 4)
    f32 = jnp.float32
    params = DenseParams(jax.random.normal(key[0], (5, 6), f32), jax.random.normal(key[1], (5,), f32))
    x, dy = jax.random.normal(key[2], (3, 4, 6), f32), jax.random.normal(key[3], (3, 4, 5), f32)
    grads, dx = manual(layer, params, x, dy)
    flat_grads, flat_dx = manual(layer, params, x.reshape(12, 6), dy.reshape(12, 5))
    assert grads.W.dtype == grads.b.dtype == dx.dtype == jnp.float32
    np.testing.assert_array_equal(grads.W, flat_grads.W)
    np.testing.assert_array_equal(grads.b, flat_grads.b)
    np.testing.assert_array_equal(dx.reshape(12, 6), flat_dx)
    # against jax.vjp of the casting apply, within the policy's rounding (test_precision.py's
    # bounds: the two paths round the cotangent at different places)
    ref_grads, ref_dx = reference(layer, params, x, dy)
    tol = {"bf16": 5e-2, "f16": 1e-2}[policy]
    assert rel(grads.W, ref_grads.W) <= tol
    assert rel(grads.b, ref_grads.b) <= 1e-6  # a float32 sum on both paths
    assert rel(dx, ref_dx) <= tol


def test_dense_names_the_shapes_of_a_wrong_sequence_input():
    layer = Dense(5, 2)
    params = layer.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"Dense\(5, 2\): expected input of shape \(N, 5\), "
                                         r"\(5,\) or \(N, \.\.\., 5\).*got shape \(2, 3, 4\)"):
        layer.apply(params, jnp.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match=r"Dense\(5, 2\).*floating-point"):
        layer.apply(params, jnp.zeros((2, 3, 5), jnp.int32))


# ---------------------------------------------------------------------------------------------
# LayerNorm, Dropout, activations


@settings(max_examples=6)
@given(lead=leading, features=st.integers(2, 6), seed=seeds)
def test_layernorm_backward_on_leading_axes_matches_vjp(lead, features, seed):
    layer = LayerNorm(features)
    params = layer.init(None, F64)
    params = type(params)(random(seed, (features,), 0.5, 1.0), random(seed + 1, (features,)))
    x, dy = random(seed + 2, lead + (features,), 2.0, -0.3), random(seed + 3, lead + (features,))
    (grads, dx), (ref_grads, ref_dx) = both(layer, params, x, dy)
    assert rel(grads.gamma, ref_grads.gamma) <= RTOL
    assert rel(grads.beta, ref_grads.beta) <= RTOL
    # dX cancels towards 0 for two features (they normalise to ±1 whatever they are): measured
    # against the size of its terms, dY γ / σ
    x_, dy_, gamma = np.asarray(x), np.asarray(dy), np.asarray(params.gamma)
    natural = float(np.max(np.abs(dy_ * gamma / (np.std(x_, axis=-1, keepdims=True) + 1e-3))))
    assert rel(dx, ref_dx, natural) <= RTOL


def test_layernorm_takes_a_single_example():
    layer = LayerNorm(4)
    params = layer.init(None, F64)
    x, dy = random(0, (4,), 2.0), random(1, (4,))
    grads, dx = manual(layer, params, x, dy)
    ref_grads, ref_dx = reference(layer, params, x, dy)
    assert rel(grads.gamma, ref_grads.gamma) <= RTOL and rel(grads.beta, ref_grads.beta) <= RTOL
    assert rel(dx, ref_dx) <= RTOL
    with pytest.raises(ValueError, match=r"LayerNorm\(4\): expected input of shape \(\.\.\., 4\)"):
        layer.apply(params, jnp.zeros((2, 3, 5)))


@settings(max_examples=5)
@given(lead=leading, features=st.integers(1, 5), seed=seeds,
       rate=st.sampled_from([0.0, 0.3, 0.7]))
def test_dropout_backward_on_leading_axes_matches_vjp(lead, features, seed, rate):
    layer = Dropout(rate)
    key = jax.random.PRNGKey(seed)
    shape = lead + (features,)
    x, dy = random(seed, shape), random(seed + 1, shape)
    kwargs = {"key": key}
    (_, dx), (_, ref_dx), mask = jax.jit(lambda xs, d: (  # one program: one draw of the mask
        _rule(layer, (), xs, d, kwargs), _pull(layer, (), xs, d, kwargs),
        layer.forward((), xs, key=key)[1]))(x, dy)
    assert rel(dx, ref_dx) <= RTOL
    # the mask has the input's shape: one draw per unit of every step
    assert mask is None if rate == 0 else mask.shape == shape


ACTIVATION_LAYERS = [fnnet.ReLU(), fnnet.Sigmoid(), fnnet.Tanh(), fnnet.Identity(), fnnet.Softmax(),
                     fnnet.Softmax(jacobian=True)]


@settings(max_examples=4)
@given(lead=leading, features=st.integers(1, 5), seed=seeds)
def test_activation_backwards_on_leading_axes_match_vjp(lead, features, seed):
    shape = lead + (features,)
    x, dy = random(seed, shape, 3.0), random(seed + 1, shape)
    results = jax.jit(lambda xs, d: [(_rule(layer, (), xs, d, {}), _pull(layer, (), xs, d, {}))
                                     for layer in ACTIVATION_LAYERS])(x, dy)
    for layer, ((_, dx), (_, ref_dx)) in zip(ACTIVATION_LAYERS, results):
        assert rel(dx, ref_dx) <= RTOL, layer
    a = np.asarray(softmax(x))
    np.testing.assert_allclose(a.sum(axis=-1), 1.0, rtol=1e-12)  # a distribution per step


# ---------------------------------------------------------------------------------------------
# Losses


def token_labels(seed, lead, classes):
    return jnp.asarray(np.random.default_rng(seed).integers(0, classes, size=lead), jnp.int32)


def np_one_hot(labels, classes):
    return jnp.asarray(np.eye(classes)[np.asarray(labels)], F64)


@settings(max_examples=5)
@given(lead=leading, classes=st.integers(2, 6), seed=seeds)
def test_fused_cross_entropy_on_tokens_matches_grad_of_the_unfused_loss(lead, classes, seed):
    ce = losses.cross_entropy
    z = random(seed, lead + (classes,), 2.0)
    labels = token_labels(seed + 1, lead, classes)
    one_hot = np_one_hot(labels, classes)

    @jax.jit
    def everything(z, labels, one_hot):
        a = softmax(z)
        return {"a": a, "value": ce.value(a, labels), "from_logits": ce.value_from_logits(z, labels),
                "unfused": jax.grad(lambda z_: ce.value(softmax(z_), labels))(z),
                "fused": ce.fused_grad(a, labels), "fused_one_hot": ce.fused_grad(a, one_hot),
                "grad_from_logits": jax.grad(ce.value_from_logits)(z, labels)}

    out = everything(z, labels, one_hot)
    positions = int(np.prod(lead))
    # L = −(1/(N·T)) Σ log ŷ[label], every token weighing the same
    log_probs = np.log(np.asarray(out["a"]))
    picked = np.take_along_axis(log_probs, np.asarray(labels)[..., None], axis=-1)
    expected = -picked.sum() / positions
    assert float(out["value"]) == pytest.approx(expected, rel=1e-12)
    assert float(out["from_logits"]) == pytest.approx(expected, rel=1e-12)
    # dZ = (A − Y)/(N·T), against jax.grad of the unfused loss (softmax, then cross-entropy)
    assert rel(out["fused"], out["unfused"]) <= RTOL
    np.testing.assert_allclose(out["fused"], (np.asarray(out["a"]) - np.asarray(one_hot)) / positions,
                               rtol=1e-14, atol=1e-16)
    assert rel(out["fused_one_hot"], out["unfused"]) <= RTOL  # one-hot (N, T, V) targets alike
    assert rel(out["grad_from_logits"], out["unfused"]) <= RTOL


@settings(max_examples=4)
@given(lead=leading, outputs=st.integers(1, 4), seed=seeds)
def test_loss_gradients_on_leading_axes_match_grad_of_their_values(lead, outputs, seed):
    shape = lead + (outputs,)
    positions = int(np.prod(lead))
    rng = np.random.default_rng(seed)
    e = np.exp(np.asarray(random(seed, shape, 2.0)))
    probs = jnp.asarray(e / e.sum(axis=-1, keepdims=True))
    z = random(seed + 1, shape, 2.0)
    sig = jnp.asarray(1 / (1 + np.exp(-np.asarray(z))))
    binary = jnp.asarray(rng.random(shape), F64)  # soft 0..1 targets
    labels = token_labels(seed + 2, lead, outputs)
    one_hot = np_one_hot(labels, outputs)
    y_pred, y_true = random(seed + 3, shape), random(seed + 4, shape)
    cases = [(losses.mse, y_pred, y_true), (losses.cross_entropy, probs, one_hot),
             (losses.cross_entropy, probs, labels), (losses.binary_cross_entropy, sig, binary)]
    bce = losses.binary_cross_entropy
    objectives = [loss for loss, _, _ in cases]

    @jax.jit
    def everything(arrays, z, binary):
        grads = [(loss.grad(p, t), jax.grad(loss.value)(p, t))
                 for loss, (p, t) in zip(objectives, arrays)]
        values = [loss.value(p, t) for loss, (p, t) in zip(objectives, arrays)]
        unfused = jax.grad(lambda z_: bce.value(jax.nn.sigmoid(z_), binary))(z)
        return grads, values, bce.fused_grad(jax.nn.sigmoid(z), binary), unfused

    grads, values, fused, unfused = everything([(p, t) for _, p, t in cases], z, binary)
    for (loss, _, _), (got, want) in zip(cases, grads):
        assert rel(got, want) <= RTOL, loss
    # MSE and binary cross-entropy average over every position (as over the examples of 2-D)
    assert float(values[0]) == pytest.approx(
        float(np.mean((np.asarray(y_pred) - np.asarray(y_true)) ** 2)), rel=1e-12)
    p, t = np.asarray(sig), np.asarray(binary)
    expected_bce = -(t * np.log(p) + (1 - t) * np.log(1 - p)).sum() / positions
    assert float(values[3]) == pytest.approx(float(expected_bce), rel=1e-12)
    assert rel(fused, unfused) <= RTOL


def test_losses_keep_the_single_example_and_refuse_what_does_not_fit():
    ce = losses.cross_entropy
    p = jnp.asarray([0.2, 0.5, 0.3], F64)
    assert float(ce.value(p, jnp.asarray(1))) == pytest.approx(-np.log(0.5))
    np.testing.assert_allclose(ce.fused_grad(p, jnp.asarray(1)), [0.2, -0.5, 0.3], rtol=1e-15)
    y_pred = jnp.full((2, 3, 4), 0.25, F64)
    with pytest.raises(ValueError, match=r"cross_entropy: y_true has shape \(2, 4\), expected "
                                         r"\(2, 3, 4\) \(the shape of y_pred\) or integer labels "
                                         r"of shape \(2, 3\)"):
        ce.value(y_pred, jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match=r"mse: y_true has shape \(2, 3\), expected \(2, 3, 4\)"):
        losses.mse.value(y_pred, jnp.zeros((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="y_pred must have shape .* got a scalar"):
        losses.mse.value(jnp.asarray(1.0), jnp.asarray(1.0))


# ---------------------------------------------------------------------------------------------
# A network over sequences


SEQUENCE_MODELS = {
    "dense-relu-layernorm-dense-softmax": lambda f, h, v: fnnet.Sequential(
        Dense(f, h), fnnet.ReLU(), LayerNorm(h), Dense(h, v), fnnet.Softmax()),
    "with-dropout-and-tanh": lambda f, h, v: fnnet.Sequential(
        Dense(f, h), fnnet.Tanh(), Dropout(0.3), LayerNorm(h), Dense(h, v), fnnet.Softmax()),
}


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("name", list(SEQUENCE_MODELS))
def test_sequence_network_value_and_grad_matches_autodiff(name, fused):
    n, t, f, h, v = 3, 4, 5, 6, 7
    model = SEQUENCE_MODELS[name](f, h, v)
    params = model.init(jax.random.PRNGKey(1), F64)
    x = random(2, (n, t, f))
    labels = token_labels(3, (n, t), v)
    key = jax.random.PRNGKey(4)
    value, grads = jax.jit(fnnet.value_and_grad(model, "cross-entropy", fused))(
        params, x, labels, key=key)
    ref_value, ref_grads = jax.jit(fnnet.autodiff_value_and_grad(model, "cross-entropy", fused))(
        params, x, labels, key=key)
    assert float(value) == pytest.approx(float(ref_value), rel=1e-12)
    flat, treedef = jax.tree_util.tree_flatten(grads)
    ref_flat, ref_treedef = jax.tree_util.tree_flatten(ref_grads)
    assert treedef == ref_treedef
    for leaf, (got, want) in enumerate(zip(flat, ref_flat, strict=True)):
        assert rel(got, want) <= RTOL, f"gradient leaf {leaf}"
    # the loss is the mean over every token: as if the N·T tokens were N·T examples
    if "dropout" not in name:
        tokens = model.apply(params, x.reshape(n * t, f))
        expected = losses.cross_entropy.value(tokens, labels.reshape(n * t))
        assert float(value) == pytest.approx(float(expected), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Metrics and the targets check


def test_metrics_count_every_token():
    y_pred = jnp.asarray([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]],
                          [[0.3, 0.7], [0.5, 0.5], [0.1, 0.9]]], F64)  # (N=2, T=3, V=2)
    labels = jnp.asarray([[0, 1, 1], [1, 1, 0]], jnp.int32)
    # predicted: [[0, 1, 0], [1, 0, 1]] (argmax takes the first of a tie)
    assert metrics.predicted_classes(y_pred).shape == (2, 3)
    assert int(metrics.correct(y_pred, labels)) == 3
    assert float(metrics.accuracy(y_pred, labels)) == pytest.approx(3 / 6)
    one_hot = np_one_hot(labels, 2)
    assert int(metrics.correct(y_pred, one_hot)) == 3
    confusion = metrics.confusion_matrix(y_pred, labels)
    np.testing.assert_array_equal(confusion, [[1, 1], [2, 2]])
    assert int(confusion.sum()) == 6


def test_check_targets_takes_token_labels_and_names_a_bad_one_by_position():
    ce = losses.cross_entropy
    labels = np.zeros((4, 5), np.int32)
    inputs.check_targets(ce, labels, 7, "train")  # (N, T) labels for (N, T, 7) outputs
    inputs.check_targets(ce, np.eye(7, dtype=np.float32)[labels], 7, "train")  # one-hot
    labels[2, 3] = 7
    with pytest.raises(ValueError, match=r"train y\[\(2, 3\)\] = 7 is not a class label: expected "
                                         r"integers in 0..6 .*1 labels are out of range"):
        inputs.check_targets(ce, labels, 7, "train")
    soft = np.full((4, 5, 7), 1 / 7)
    soft[1, 2, 3] = -0.5
    with pytest.raises(ValueError, match=r"y\[\(1, 2, 3\)\] = -0.5 is not a valid cross_entropy"):
        inputs.check_targets(ce, soft, 7, "train")
