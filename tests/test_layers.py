"""The layers package and networks as descriptions: public names, the element-wise activation
base, Dense's description and parameters, the lookups by name, and clear errors on bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet import layers, losses, networks
from fnnet.layers import activations, initializers

F64 = jnp.float64

LAYER_NAMES = [
    "ACTIVATIONS", "INITS", "Activation", "AvgPool2D", "BatchNorm", "Conv2D", "ConvParams", "Dense",
    "DenseParams", "Dropout", "Elementwise", "Embedding", "EmbeddingParams", "Flatten", "GRU",
    "GRUParams", "Identity", "LSTM", "LastStep", "Layer", "LayerNorm", "MaxPool2D", "NormParams",
    "RNN", "ReLU", "Recurrent", "RecurrentParams", "Sigmoid", "Softmax", "Tanh", "get",
    "AttentionParams", "CausalSelfAttention", "GELU", "GPT", "GPTParams", "PositionEmbedding",
    "Residual", "Sequential", "TransformerBlock",
]
# Reference forms and helpers: importable from their own modules, not fnnet.layers' names.
HELPERS = {
    "activations": ["log_softmax", "softmax", "softmax_backward_jacobian",
                    "softmax_backward_simple"],
    "conv_forms": ["conv2d_naive", "conv2d_backward_naive", "conv2d_backward_correlation"],
    "normalization": ["normalize", "normalize_backward", "normalize_backward_staged", "NormCache"],
    "checks": ["check_features", "check_floating"],
    "attention": ["keep_p_forward", "keep_p_backward", "lean_forward", "lean_backward",
                  "attention_reference", "row_blocks"],
}


def test_the_public_names_are_the_layers_and_helpers_stay_in_their_modules():
    assert sorted(layers.__all__) == sorted(LAYER_NAMES)
    assert all(hasattr(layers, name) for name in LAYER_NAMES)
    for module, names in HELPERS.items():
        source = getattr(__import__(f"fnnet.layers.{module}").layers, module)
        assert all(hasattr(source, name) for name in names), module
        assert not set(names) & set(vars(layers)), f"{module}'s helpers leak into fnnet.layers"
    assert not hasattr(layers, "activation") and not hasattr(layers, "Stateless")
    assert fnnet.Dense is layers.Dense and fnnet.DenseParams is layers.DenseParams


def test_every_layer_is_a_layer_with_the_protocols_defaults():
    every = [fnnet.Dense(2, 3), fnnet.ReLU(), fnnet.Softmax(), fnnet.Conv2D(1, 2, 3),
             layers.MaxPool2D(2), layers.AvgPool2D(2), layers.Flatten(), layers.Dropout(0.5),
             layers.BatchNorm(3), layers.LayerNorm(3), fnnet.mlp([2, 3])]
    again = [fnnet.Dense(2, 3), fnnet.ReLU(), fnnet.Softmax(), fnnet.Conv2D(1, 2, 3),
             layers.MaxPool2D(2), layers.AvgPool2D(2), layers.Flatten(), layers.Dropout(0.5),
             layers.BatchNorm(3), layers.LayerNorm(3), fnnet.mlp([2, 3])]
    for layer, same in zip(every, again):
        assert isinstance(layer, layers.Layer), layer
        assert layer == same and hash(layer) == hash(same)  # descriptions, equal by value
    assert fnnet.ReLU().with_precision(fnnet.precision.get("bf16")) == fnnet.ReLU()
    assert fnnet.ReLU().init_state() == () and fnnet.ReLU().next_state((), None) == ()
    assert layers.Dropout(0.5).stochastic and not fnnet.Dense(2, 3).stochastic
    with pytest.raises(TypeError):
        layers.Layer()


# ---------------------------------------------------------------------------------------------
# Element-wise activations: each is f and f', the rest written once


def xs_and_dys():
    rng = np.random.default_rng(0)
    x = jnp.asarray(3 * rng.normal(size=(5, 4)), F64).at[0, 0].set(0.0)  # ReLU's kink included
    return x, jnp.asarray(rng.normal(size=(5, 4)), F64)


@pytest.mark.parametrize("layer,cached,equation", [
    (fnnet.ReLU(), "x", lambda x, y, dy: dy * (x > 0)),
    (fnnet.Sigmoid(), "y", lambda x, y, dy: dy * (y * (1 - y))),
    (fnnet.Tanh(), "y", lambda x, y, dy: dy * ((1 - y) * (1 + y))),
    (fnnet.Identity(), None, lambda x, y, dy: dy),
], ids=["ReLU", "Sigmoid", "Tanh", "Identity"])
def test_elementwise_backward_is_dy_times_the_derivative_from_the_cache(layer, cached, equation):
    x, dy = xs_and_dys()
    y, cache = layer.forward((), x)
    assert cache is {"x": x, "y": y, None: None}[cached]
    assert isinstance(layer, layers.Elementwise) and layer.cache == cached
    dparams, dx = layer.backward((), cache, dy)
    assert dparams == ()
    np.testing.assert_array_equal(dx, equation(x, y, dy))  # bit for bit


def test_softmax_shares_the_plumbing_but_keeps_its_own_backward():
    x, dy = xs_and_dys()
    for layer, form in ((fnnet.Softmax(), activations.softmax_backward_simple),
                        (fnnet.Softmax(jacobian=True), activations.softmax_backward_jacobian)):
        y, cache = layer.forward((), x)
        assert cache is y and not isinstance(layer, layers.Elementwise)
        np.testing.assert_array_equal(layer.backward((), cache, dy)[1], form(y, dy))


def test_a_new_activation_is_its_f_and_df():
    class Softplus(layers.Elementwise):
        """``f(x) = log(1 + eˣ)``, ``f'(x) = σ(x)`` from the cached input."""

        cache = "x"
        f = staticmethod(jax.nn.softplus)
        df = staticmethod(jax.nn.sigmoid)

    x, dy = xs_and_dys()
    layer = Softplus()
    y, cache = layer.forward((), x)
    _, dx = layer.backward((), cache, dy)
    _, vjp = jax.vjp(layer.apply, (), x)
    np.testing.assert_allclose(dx, vjp(dy)[1], rtol=1e-12)
    assert repr(layer) == "Softplus()" and layer == Softplus() and layer != fnnet.ReLU()
    with pytest.raises(TypeError, match="floating-point"):
        layer.apply((), jnp.arange(3))


def test_activations_are_immutable_hashable_and_print_what_differs_from_the_default():
    for make in (fnnet.ReLU, fnnet.Softmax, fnnet.Identity, lambda: fnnet.Dense(2, 3)):
        layer, same = make(), make()
        assert layer == same and hash(layer) == hash(same)
        with pytest.raises(dataclasses.FrozenInstanceError):
            layer.extra = 1
    assert [repr(layer) for layer in (fnnet.ReLU(), fnnet.Sigmoid(), fnnet.Tanh(), fnnet.Identity(),
                                      fnnet.Softmax(), fnnet.Softmax(jacobian=True))] == [
        "ReLU()", "Sigmoid()", "Tanh()", "Identity()", "Softmax()", "Softmax(jacobian=True)"]
    assert fnnet.Softmax() != fnnet.Softmax(jacobian=True) and fnnet.ReLU() != fnnet.Tanh()
    with pytest.raises(ValueError, match=r"ReLU\(\): takes no parameters, got tuple"):
        fnnet.ReLU().apply((jnp.zeros(2),), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"Tanh\(\): expected an array of rank 1 or more"):
        fnnet.Tanh().apply((), jnp.float32(1.0))


# ---------------------------------------------------------------------------------------------
# Dense: the weight initialisation is part of the description, and of its repr


def test_dense_weight_init_and_repr():
    he, xavier = fnnet.Dense(784, 128), fnnet.Dense(784, 128, init="xavier")
    assert (he.weight_init, xavier.weight_init) == ("he", "xavier")
    assert repr(he) == "Dense(784, 128)" and repr(xavier) == "Dense(784, 128, init='xavier')"
    assert he != xavier and repr(he) != repr(xavier)
    assert [field.name for field in dataclasses.fields(he)] == ["n_in", "n_out", "weight_init",
                                                                "precision"]
    assert repr(fnnet.Dense(784, 128, precision="bf16")) == "Dense(784, 128, precision='bf16')"
    model = fnnet.mlp([4, 6, 3], activation="tanh")
    assert repr(model) == ("Sequential(Dense(4, 6, init='xavier'), Tanh(), "
                           "Dense(6, 3, init='xavier'), Softmax())")


def test_dense_sizes_follow_the_shared_integer_rule():
    assert fnnet.Dense(np.int64(3), 4) == fnnet.Dense(3, 4)  # numpy integers are integers
    assert type(fnnet.Dense(np.int64(3), 4).n_in) is int
    for bad in (0, -1, 2.0, True, "3"):
        with pytest.raises(ValueError, match=f"Dense: n_in must be a positive integer, got {bad!r}"):
            fnnet.Dense(bad, 4)


@pytest.mark.parametrize("name", sorted(layers.INITS))
def test_every_init_draws_a_matrix_of_the_right_shape_and_dtype(name):
    W = fnnet.Dense(5, 3, init=name).init(jax.random.PRNGKey(0), F64).W
    assert W.shape == (3, 5) and W.dtype == F64 and bool(jnp.all(jnp.isfinite(W)))
    assert layers.INITS[name] is getattr(initializers, name.replace("glorot", "xavier"))


def test_layers_are_hashable_descriptions_usable_as_static_args():
    model = fnnet.mlp([3, 4, 2])
    same = fnnet.mlp([3, 4, 2])
    assert model == same and hash(model) == hash(same)
    assert fnnet.Dense(3, 4, init="xavier") != fnnet.Dense(3, 4)
    with pytest.raises(AttributeError):
        model.layers = ()
    apply = jax.jit(lambda model, params, x: model.apply(params, x), static_argnums=0)
    params = model.init(jax.random.PRNGKey(0))
    assert apply(model, params, jnp.ones((2, 3))).shape == (2, 2)


def test_params_layout():
    model = fnnet.mlp([784, 128, 10])
    params = model.init(jax.random.PRNGKey(0))
    assert len(params) == 4 and params[1] == () and params[3] == ()
    assert params[0].W.shape == (128, 784) and params[0].b.shape == (128,)
    assert params[2].W.shape == (10, 128) and params[0].W.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(params[0].b))) == 0.0
    # He: std √(2/784); Xavier: bound √(6/(n_in + n_out))
    assert float(jnp.std(params[0].W)) == pytest.approx(np.sqrt(2 / 784), rel=0.05)
    W = fnnet.Dense(784, 128, init="xavier").init(jax.random.PRNGKey(1)).W
    assert float(jnp.max(jnp.abs(W))) <= np.sqrt(6 / (784 + 128))
    assert float(jnp.max(jnp.abs(W))) > 0.95 * np.sqrt(6 / (784 + 128))


# ---------------------------------------------------------------------------------------------
# One verb for every lookup by name: get


def test_get_is_the_lookup_everywhere():
    assert layers.get("relu") == fnnet.ReLU() and layers.get("linear") == fnnet.Identity()
    softmax = fnnet.Softmax(jacobian=True)
    assert layers.get(softmax) is softmax  # an activation is returned as it is
    assert losses.get("ce") is losses.cross_entropy and losses.get(losses.mse) is losses.mse
    for lookup, what in ((layers.get, "activation"), (losses.get, "loss")):
        with pytest.raises(ValueError, match=f"unknown {what} 'nope'; expected one of"):
            lookup("nope")
    with pytest.raises(ValueError, match=r"Dense: unknown init 'kaiming'; expected one of \["):
        fnnet.Dense(3, 3, init="kaiming")


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors naming the layer, its position in the network and the shapes, at trace
# time


def test_errors_name_the_failing_layer_through_nesting():
    inner = fnnet.Sequential(fnnet.Tanh(), fnnet.Dense(3, 2))
    model = fnnet.Sequential(fnnet.Dense(2, 4), fnnet.ReLU(), inner)
    params = model.init(jax.random.PRNGKey(0))
    for run in (model.apply, lambda p, x: model.forward(p, x)[0]):
        with pytest.raises(ValueError, match=r"^layer 2: layer 1: Dense\(3, 2\): expected input "
                                             r"of shape \(N, 3\)"):
            run(params, jnp.zeros((1, 2)))
    with pytest.raises(TypeError, match=r"^layer 0: Dense\(2, 4\): input must be a floating-point"):
        model.apply(params, jnp.zeros((1, 2), jnp.int32))
    assert networks.DEFAULT_INIT["tanh"] == "xavier"


def test_wrong_feature_count_names_layer_and_shapes():
    model = fnnet.mlp([784, 10])
    params = model.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"Dense\(784, 10\).*\(N, 784\).*\(32, 783\)"):
        model.apply(params, jnp.zeros((32, 783)))
    with pytest.raises(ValueError, match=r"\(N, 784\).*\(32, 783\)"):
        jax.jit(model.apply)(params, jnp.zeros((32, 783)))  # at trace time
    with pytest.raises(ValueError, match=r"\(N, 784\).*\(32, 783\)"):
        fnnet.value_and_grad(model, losses.cross_entropy)(params, jnp.zeros((32, 783)),
                                                          jnp.zeros((32, 10)))


def test_wrong_rank():
    model = fnnet.mlp([784, 10])
    params = model.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"Dense\(784, 10\).*got shape \(2, 28, 28\)"):
        model.apply(params, jnp.zeros((2, 28, 28)))


def test_y_true_shape_mismatch():
    model = fnnet.mlp([4, 3])
    params = model.init(jax.random.PRNGKey(0))
    x = jnp.zeros((5, 4))
    for loss in (losses.cross_entropy, losses.mse, losses.binary_cross_entropy):
        for fused in (True, False):
            with pytest.raises(ValueError, match=r"y_true has shape \(5, 4\), expected \(5, 3\)"):
                fnnet.value_and_grad(model, loss, fused)(params, x, jnp.zeros((5, 4)))
            with pytest.raises(ValueError, match=r"y_true has shape \(5, 4\)"):
                fnnet.autodiff_value_and_grad(model, loss, fused)(params, x, jnp.zeros((5, 4)))


def test_non_floating_input():
    model = fnnet.mlp([4, 3])
    params = model.init(jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match=r"Dense\(4, 3\).*floating-point.*uint8"):
        model.apply(params, jnp.zeros((5, 4), jnp.uint8))
    with pytest.raises(TypeError, match=r"ReLU\(\).*floating-point"):
        fnnet.ReLU().apply((), jnp.zeros(3, jnp.int32))


def test_wrong_params():
    model = fnnet.mlp([4, 3, 2])
    params = model.init(jax.random.PRNGKey(0))
    other = fnnet.mlp([4, 5, 2]).init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"Dense\(4, 3\): parameter W has shape \(5, 4\)"):
        model.apply(other, jnp.zeros((1, 4)))
    with pytest.raises(ValueError, match="tuple of 4 entries"):
        model.apply(params[:2], jnp.zeros((1, 4)))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="n_in must be a positive integer"):
        fnnet.Dense(0, 3)
    with pytest.raises(ValueError, match="unknown init 'kaiming'"):
        fnnet.Dense(3, 3, init="kaiming")
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        fnnet.mlp([3, 3], activation="swish")
    with pytest.raises(TypeError, match="not a layer"):
        fnnet.Sequential(fnnet.Dense(3, 3), "relu")


def _backward_with(layer, x, dy_shape):
    """``layer.backward`` after a forward of ``x``, given a ``dy`` of ``dy_shape``: traced only
    (``jax.eval_shape``), since the checks look at shapes before any work."""
    def backward(key, x):
        params = layer.init(key)
        _, cache = layer.forward(params, x)
        return layer.backward(params, cache, jnp.ones(dy_shape))

    return jax.eval_shape(backward, jax.random.PRNGKey(0), x)


MISUSES = {
    "Conv2D params None": (lambda: fnnet.Conv2D(1, 2, 3).apply(None, jnp.ones((1, 5, 5, 1))),
                           ValueError, r"Conv2D\(1, 2, 3\): params must be ConvParams\(W, b\)"),
    "Dense params None": (lambda: fnnet.Dense(3, 2).apply(None, jnp.ones((1, 3))),
                          ValueError, r"Dense\(3, 2\): params must be DenseParams"),
    "LayerNorm params None": (lambda: fnnet.LayerNorm(3).apply(None, jnp.ones((2, 3))),
                              ValueError, "params must be NormParams"),
    "Embedding params None": (lambda: fnnet.Embedding(3, 2).apply(None, jnp.ones((2, 3), jnp.int32)),
                              ValueError, "params must be EmbeddingParams"),
    "GRU given LSTM params": (lambda: fnnet.GRU(3, 2).apply(
        fnnet.LSTM(3, 2).init(jax.random.PRNGKey(0)), jnp.ones((2, 3, 3))),
        ValueError, r"GRU\(3, 2\): params must be GRUParams.*got RecurrentParams"),
    "Dense dy": (lambda: fnnet.Dense(3, 2).backward(fnnet.Dense(3, 2).init(jax.random.PRNGKey(0)),
                                                    jnp.ones((4, 3)), jnp.ones((4, 5))),
                 ValueError, r"Dense\(3, 2\): backward expected dy .* \(4, 2\), got shape \(4, 5\)"),
    "Conv2D dy": (lambda: fnnet.Conv2D(1, 2, 3).backward(
        fnnet.Conv2D(1, 2, 3).init(jax.random.PRNGKey(0)),
        fnnet.Conv2D(1, 2, 3).forward(fnnet.Conv2D(1, 2, 3).init(jax.random.PRNGKey(0)),
                                      jnp.ones((1, 5, 5, 1)))[1], jnp.ones((1, 4, 4, 2))),
        ValueError, r"backward expected dy of the forward output's shape \(1, 3, 3, 2\)"),
    "BatchNorm dy": (lambda: fnnet.BatchNorm(3).backward(
        fnnet.BatchNorm(3).init(None), fnnet.BatchNorm(3).forward(
            fnnet.BatchNorm(3).init(None), jnp.ones((4, 3)))[1], jnp.ones((4, 5))),
        ValueError, r"BatchNorm\(3\): backward expected dy"),
    "Softmax dy": (lambda: fnnet.Softmax().backward((), fnnet.Softmax().forward(
        (), jnp.ones((4, 3)))[1], jnp.ones((4, 5))), ValueError, r"Softmax\(\): backward expected"),
    "ReLU dy": (lambda: fnnet.ReLU().backward((), jnp.ones((4, 3)), jnp.ones((4, 5))),
                ValueError, r"ReLU\(\): backward expected"),
    "AvgPool2D dy": (lambda: fnnet.AvgPool2D(2).backward((), fnnet.AvgPool2D(2).forward(
        (), jnp.ones((1, 4, 4, 2)))[1], jnp.ones((1, 3, 3, 2))),
        ValueError, r"AvgPool2D\(2\): backward expected dy of the forward output's shape \(1, 2, 2, 2\)"),
    "MaxPool2D dy": (lambda: fnnet.MaxPool2D(2).backward((), fnnet.MaxPool2D(2).forward(
        (), jnp.ones((1, 4, 4, 2)))[1], jnp.ones((1, 3, 3, 2))),
        ValueError, r"MaxPool2D\(2\): backward expected dy"),
    "Embedding dy": (lambda: _backward_with(fnnet.Embedding(5, 3), jnp.ones((2, 4), jnp.int32),
                                            (3,)),
                     ValueError, r"Embedding\(5, 3\): backward expected dy .* \(2, 4, 3\), got "
                                 r"shape \(3,\)"),
    "PositionEmbedding dy": (lambda: _backward_with(fnnet.PositionEmbedding(4, 3),
                                                    jnp.ones((2, 4, 3)), (1, 4, 3)),
                             ValueError, r"PositionEmbedding\(4, 3\): backward expected dy .* "
                                         r"\(2, 4, 3\), got shape \(1, 4, 3\)"),
    "CausalSelfAttention dy": (lambda: _backward_with(fnnet.CausalSelfAttention(4, 2),
                                                      jnp.ones((2, 3, 4)), (2, 3, 5)),
                               ValueError, r"CausalSelfAttention\(4, 2\): backward "
                                           r"expected dy .* \(2, 3, 4\)"),
    "GPT dy": (lambda: _backward_with(fnnet.GPT(5, 4, 1, 1, 4), jnp.ones((2, 3), jnp.int32),
                                      (2, 3, 4)),
               ValueError, r"GPT\(5, 4, .*\): backward expected dy .* \(2, 3, 5\), got shape "
                           r"\(2, 3, 4\)"),
    "Dropout int key": (lambda: fnnet.Dropout(0.5).apply((), jnp.ones(3), key=5, train=True),
                        TypeError, r"Dropout\(rate=0.5\): key must be a jax.random key"),
    "BatchNorm state (1,)": (lambda: fnnet.BatchNorm(3).apply(
        fnnet.BatchNorm(3).init(None), jnp.ones((4, 3)),
        state={"mean": jnp.zeros(1), "var": jnp.ones(3)}),
        ValueError, r"state\['mean'\] has shape \(1,\), expected \(3,\)"),
    "BatchNorm state (8, 1)": (lambda: fnnet.BatchNorm(3).apply(
        fnnet.BatchNorm(3).init(None), jnp.ones((4, 3)),
        state={"mean": jnp.zeros(3), "var": jnp.ones((8, 1))}),
        ValueError, r"state\['var'\] has shape \(8, 1\)"),
    "BatchNorm negative variance": (lambda: fnnet.BatchNorm(3).apply(
        fnnet.BatchNorm(3).init(None), jnp.ones((4, 3)),
        state={"mean": jnp.zeros(3), "var": -jnp.ones(3)}),
        ValueError, "negative variances"),
}


@pytest.mark.parametrize("name", list(MISUSES))
def test_misuse_of_the_layer_api_is_an_error_naming_the_layer(name):
    """Issue 20: these raised raw JAX or attribute errors (NoneType has no attribute W, dot_general
    shapes, invalid PRNG key data) or were accepted (broadcast running statistics, a negative
    variance, a wrong-shaped dy of AvgPool2D)."""
    call, error, message = MISUSES[name]
    with pytest.raises(error, match=message):
        call()
