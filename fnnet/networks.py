"""Networks: a Sequential of layers is itself a layer (note 000's sequential model, in
experiments/NOTES.md).

Forward feeds each layer's output into the next and keeps every layer's cache; backward runs the
list in reverse, handing each layer the ``dE/dY`` its successor returned as ``dE/dX``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from .layers import Dense, Identity
from .layers import get as get_activation


@contextmanager
def _naming_layer(index):
    """Prefix a shape or type error raised inside with the position of the layer that raised it."""
    try:
        yield
    except (ValueError, TypeError) as error:
        raise type(error)(f"layer {index}: {error}") from None


@dataclass(frozen=True, init=False)
class Sequential:
    """``Sequential(*layers)``: params are the tuple of the layers' params; networks nest."""

    layers: tuple

    def __init__(self, *layers):
        for index, layer in enumerate(layers):
            if not all(hasattr(layer, method) for method in ("init", "apply", "forward", "backward")):
                raise TypeError(f"Sequential: argument {index} ({layer!r}) is not a layer")
        object.__setattr__(self, "layers", tuple(layers))

    def __repr__(self):
        return "Sequential(" + ", ".join(map(repr, self.layers)) + ")"

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

    def apply(self, params, x):
        self._check_params(params)
        for index, (layer, layer_params) in enumerate(zip(self.layers, params)):
            with _naming_layer(index):
                x = layer.apply(layer_params, x)
        return x

    def forward(self, params, x):
        self._check_params(params)
        caches = []
        for index, (layer, layer_params) in enumerate(zip(self.layers, params)):
            with _naming_layer(index):
                x, cache = layer.forward(layer_params, x)
            caches.append(cache)
        return x, tuple(caches)

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
