"""Networks: a Sequential of layers is itself a layer (note 000's sequential model, in
experiments/NOTES.md).

Forward feeds each layer's output into the next and keeps every layer's cache; backward runs the
list in reverse, handing each layer the ``dE/dY`` its successor returned as ``dE/dX``.
``Sequential`` is a ``Layer`` (``fnnet.layers.base``) and takes only ``Layer`` instances.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from .checks import integer
from .layers import (
    GRU,
    LSTM,
    RNN,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    Identity,
    LastStep,
    Layer,
    MaxPool2D,
    ReLU,
    Softmax,
)
from .layers import get as get_activation


@contextmanager
def _naming_layer(index):
    """Prefix a shape or type error raised inside with the position of the layer that raised it."""
    try:
        yield
    except (ValueError, TypeError) as error:
        raise type(error)(f"layer {index}: {error}") from None


@dataclass(frozen=True, init=False)
class Sequential(Layer):
    """``Sequential(*layers)``: params are the tuple of the layers' params; networks nest."""

    layers: tuple

    def __init__(self, *layers):
        for index, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: argument {index} ({layer!r}) is not a layer")
        object.__setattr__(self, "layers", tuple(layers))

    def __repr__(self):
        return "Sequential(" + ", ".join(map(repr, self.layers)) + ")"

    @property
    def stochastic(self):
        """Whether a layer draws random numbers in training (and so needs ``key=``)."""
        return any(layer.stochastic for layer in self.layers)

    @property
    def takes_ids(self):
        """Whether the network's input is integer ids (its first layer's)."""
        return bool(self.layers) and self.layers[0].takes_ids

    def with_precision(self, policy):
        """The network with every layer's products under ``policy`` (``fnnet.precision``);
        layers without products come back as they are."""
        return Sequential(*(layer.with_precision(policy) for layer in self.layers))

    def init(self, key, dtype=jnp.float32):
        keys = jax.random.split(key, max(len(self.layers), 1))
        return tuple(layer.init(layer_key, dtype) for layer, layer_key in zip(self.layers, keys))

    def _check_params(self, params):
        if not isinstance(params, tuple) or len(params) != len(self.layers):
            got = f"{len(params)} entries" if isinstance(params, tuple) else type(params).__name__
            raise ValueError(
                f"{self}: params must be a tuple of {len(self.layers)} entries (one per layer), "
                f"got {got}"
            )

    def init_state(self, dtype=jnp.float32):
        """The tuple of the layers' states (``()`` entries for layers that keep none)."""
        return tuple(layer.init_state(dtype) for layer in self.layers)

    def _layer_inputs(self, params, state, key):
        """Each layer's ``(index, layer, params, state, key)``. ``state=()`` gives every layer
        ``()``; a key is folded with the layer's position, so layer ``i`` draws from
        ``fold_in(key, i)`` however the network is split or nested."""
        self._check_params(params)
        if isinstance(state, tuple) and not state:
            state = ((),) * len(self.layers)
        elif not isinstance(state, tuple) or len(state) != len(self.layers):
            raise ValueError(f"{self}: state must be a tuple of {len(self.layers)} entries (one "
                             f"per layer, as init_state() gives), got {type(state).__name__}")
        keys = ([None] * len(self.layers) if key is None
                else [jax.random.fold_in(key, index) for index in range(len(self.layers))])
        return zip(range(len(self.layers)), self.layers, params, state, keys)

    def apply(self, params, x, *, state=(), key=None, train=False):
        for index, layer, layer_params, layer_state, layer_key in self._layer_inputs(
                params, state, key):
            with _naming_layer(index):
                x = layer.apply(layer_params, x, state=layer_state, key=layer_key, train=train)
        return x

    def forward(self, params, x, *, state=(), key=None, train=True):
        caches = []
        for index, layer, layer_params, layer_state, layer_key in self._layer_inputs(
                params, state, key):
            with _naming_layer(index):
                x, cache = layer.forward(layer_params, x, state=layer_state, key=layer_key,
                                         train=train)
            caches.append(cache)
        return x, tuple(caches)

    def next_state(self, state, cache):
        """Each layer's state after a training forward, from its cache (``()`` stays ``()``
        when no layer keeps state)."""
        given = state
        if isinstance(state, tuple) and not state:
            state = ((),) * len(self.layers)
        new = tuple(layer.next_state(layer_state, layer_cache)
                    for layer, layer_state, layer_cache in zip(self.layers, state, cache))
        return given if given == () and not jax.tree_util.tree_leaves(new) else new

    def backward(self, params, cache, dy):
        """Note 000: backward runs the layers in reverse; each maps ``dE/dY`` to ``dE/dX``, which is
        the ``dE/dY`` of the layer before it. Returns every layer's gradient and ``dE/dX``."""
        grads = [None] * len(self.layers)
        for index in reversed(range(len(self.layers))):
            grads[index], dy = self.layers[index].backward(params[index], cache[index], dy)
        return tuple(grads), dy


DEFAULT_INIT = {"relu": "he", "sigmoid": "xavier", "tanh": "xavier", "linear": "xavier"}


def mlp(sizes, activation="relu", output="softmax", init=None):
    """A multilayer perceptron: ``Dense`` layers with an activation after each.

    ``mlp([784, 128, 10])`` is ``Sequential(Dense(784, 128), ReLU(), Dense(128, 10), Softmax())``.

    Args:
        sizes: the layer widths, input first: at least two.
        activation: the activation between ``Dense`` layers, a name or an activation layer.
        output: the activation after the last (``softmax``, ``sigmoid``, ``tanh``, ``relu`` or
            ``linear``/``None``).
        init: the weight initialisation of every ``Dense``; by default He for ReLU hidden layers
            and Xavier/Glorot for tanh, sigmoid and linear (``DEFAULT_INIT``).
    """
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"mlp: sizes needs at least an input and an output size, got {sizes}")
    hidden = _activation_layer(activation, "activation")
    output_layer = Identity() if output is None else _activation_layer(output, "output")
    if init is None:
        init = DEFAULT_INIT.get(activation if isinstance(activation, str) else "", "he")
    layers = []
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Dense(n_in, n_out, init=init))
        layers.append(hidden if index < len(sizes) - 2 else output_layer)
    return Sequential(*layers)


def _activation_layer(name, what):
    try:
        return get_activation(name)
    except ValueError as error:
        raise ValueError(f"mlp: {what}: {error}") from None


def cnn(input_shape=(28, 28, 1), classes=10, channels=(32, 64), kernel_size=3, pool=2,
        hidden=128, dropout=0.5):
    """A small LeNet-style convolutional network for images ``(N, H, W, C)``.

    ``cnn()`` is, for MNIST (the shapes after each stage in brackets)::

        Conv2D(1, 32, 3) ReLU MaxPool2D(2)       (26, 26, 32) -> (13, 13, 32)
        Conv2D(32, 64, 3) ReLU MaxPool2D(2)      (11, 11, 64) -> (5, 5, 64)
        Flatten Dropout(0.5)                     (1600,)
        Dense(1600, 128) ReLU Dense(128, 10) Softmax

    Args:
        input_shape: ``(H, W, C)`` of one image.
        classes: the number of outputs.
        channels: the output channels of each conv/ReLU/pool stage (valid 3×3 convolutions).
        kernel_size: the convolutions' kernel size.
        pool: the max pools' window (and stride).
        hidden: the width of the dense layer before the output; ``None`` for none.
        dropout: the dropout rate before the dense head (0 for none).
    """
    height, width, in_channels = (checks_positive("cnn", "input_shape", input_shape, 3))
    layers = []
    for out_channels in channels:
        layers += [Conv2D(in_channels, out_channels, kernel_size), ReLU(), MaxPool2D(pool)]
        height, width = (height - kernel_size + 1) // pool, (width - kernel_size + 1) // pool
        if height < 1 or width < 1:
            raise ValueError(f"cnn: an image of {input_shape} is too small for {len(channels)} "
                             f"stages of {kernel_size}×{kernel_size} convolution and {pool}×{pool} "
                             f"pooling")
        in_channels = out_channels
    layers.append(Flatten())
    if dropout:
        layers.append(Dropout(dropout))
    features = height * width * in_channels
    if hidden:
        layers += [Dense(features, hidden), ReLU()]
        features = hidden
    layers += [Dense(features, classes), Softmax()]
    return Sequential(*layers)


CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


def sequence_classifier(n_in, classes, hidden=128, cell="lstm"):
    """A recurrent network that reads a sequence ``(N, T, n_in)`` and classifies it from its last
    hidden state::

        LSTM(n_in, hidden)  LastStep  Dense(hidden, classes)  Softmax

    MNIST read row by row is such a sequence: 28 time steps of 28 pixels.

    Args:
        n_in: features per time step.
        classes: the number of outputs.
        hidden: the recurrent layer's width.
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (a tanh RNN).
    """
    if cell not in CELLS:
        raise ValueError(f"sequence_classifier: cell must be one of {', '.join(CELLS)}, got "
                         f"{cell!r}")
    return Sequential(CELLS[cell](n_in, integer("sequence_classifier", "hidden", hidden)),
                      LastStep(), Dense(hidden, classes), Softmax())


def language_model(vocab_size, dim=64, hidden=256, depth=1, cell="lstm", stateful=None):
    """A character (or token) language model: ids ``(N, T)`` to next-token probabilities
    ``(N, T, vocab_size)``::

        Embedding(vocab_size, dim)  LSTM(dim, hidden) [LSTM(hidden, hidden) ...]
        Dense(hidden, vocab_size)  Softmax

    trained with cross-entropy over every token (``dZ = (A − Y)/(N·T)``).

    Args:
        vocab_size: the number of ids.
        dim: the embedding's width.
        hidden: each recurrent layer's width.
        depth: the number of recurrent layers.
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"``.
        stateful: ``N`` to carry the recurrent state of ``N`` sequences from one call to the
            next (truncated backpropagation through time; generation with ``N = 1``), or
            ``None``.
    """
    if cell not in CELLS:
        raise ValueError(f"language_model: cell must be one of {', '.join(CELLS)}, got {cell!r}")
    integer("language_model", "depth", depth)
    widths = [integer("language_model", "dim", dim)] + [hidden] * depth
    recurrent = [CELLS[cell](n_in, n_out, stateful=stateful)
                 for n_in, n_out in zip(widths[:-1], widths[1:])]
    return Sequential(Embedding(vocab_size, dim), *recurrent, Dense(hidden, vocab_size),
                      Softmax())


def checks_positive(where, name, values, length):
    """``values`` as a tuple of ``length`` positive integers."""
    values = tuple(values)
    if len(values) != length:
        raise ValueError(f"{where}: {name} must have {length} entries, got {values!r}")
    return tuple(integer(where, name, value) for value in values)
