"""Networks: a Sequential of layers is itself a layer (note 000's sequential model).

Forward feeds each layer's output into the next and keeps every layer's cache; backward runs the
list in reverse, handing each layer the ``dE/dY`` its successor returned as ``dE/dX``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from .layers import Dense, Identity, activation


def _in_layer(i, layer, fn):
    """Run ``fn()`` and prefix any shape/type error with the position of the layer that raised it."""
    try:
        return fn()
    except (ValueError, TypeError) as e:
        raise type(e)(f"layer {i}: {e}") from None


@dataclass(frozen=True, init=False)
class Sequential:
    """``Sequential(*layers)``: params are the tuple of the layers' params; networks nest."""

    layers: tuple

    def __init__(self, *layers):
        for i, layer in enumerate(layers):
            if not all(hasattr(layer, m) for m in ("init", "apply", "forward", "backward")):
                raise TypeError(f"Sequential: argument {i} ({layer!r}) is not a layer")
        object.__setattr__(self, "layers", tuple(layers))

    def __repr__(self):
        return "Sequential(" + ", ".join(map(repr, self.layers)) + ")"

    def init(self, key, dtype=jnp.float32):
        keys = jax.random.split(key, max(len(self.layers), 1))
        return tuple(layer.init(k, dtype) for layer, k in zip(self.layers, keys))

    def _check_params(self, params):
        if not isinstance(params, tuple) or len(params) != len(self.layers):
            got = f"{len(params)} entries" if isinstance(params, tuple) else type(params).__name__
            raise ValueError(
                f"{self}: params must be a tuple of {len(self.layers)} entries (one per layer), "
                f"got {got}"
            )

    def apply(self, params, x):
        self._check_params(params)
        for i, (layer, p) in enumerate(zip(self.layers, params)):
            x = _in_layer(i, layer, lambda layer=layer, p=p, x=x: layer.apply(p, x))
        return x

    def forward(self, params, x):
        self._check_params(params)
        caches = []
        for i, (layer, p) in enumerate(zip(self.layers, params)):
            x, cache = _in_layer(i, layer, lambda layer=layer, p=p, x=x: layer.forward(p, x))
            caches.append(cache)
        return x, tuple(caches)

    def backward(self, params, cache, dy):
        """Note 000: backward runs the layers in reverse; each maps ``dE/dY`` to ``dE/dX``, which is
        the ``dE/dY`` of the layer before it. Returns every layer's gradient and ``dE/dX``."""
        grads = [None] * len(self.layers)
        for i in reversed(range(len(self.layers))):
            grads[i], dy = self.layers[i].backward(params[i], cache[i], dy)
        return tuple(grads), dy


DEFAULT_INIT = {"relu": "he", "sigmoid": "xavier", "tanh": "xavier", "linear": "xavier"}


def mlp(sizes, activation="relu", output="softmax", init=None):
    """A multilayer perceptron: ``Dense`` layers of the given ``sizes``, ``activation`` between them
    and ``output`` after the last (``softmax``, ``sigmoid``, ``tanh``, ``relu`` or ``linear``/``None``).

    ``mlp([784, 128, 10])`` is ``Sequential(Dense(784, 128), ReLU(), Dense(128, 10), Softmax())``.
    ``init`` defaults to He for ReLU hidden layers and Xavier/Glorot for tanh and sigmoid.
    """
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"mlp: sizes needs at least an input and an output size, got {sizes}")
    hidden = _activation_layer(activation, "activation")
    out = Identity() if output is None else _activation_layer(output, "output")
    if init is None:
        init = DEFAULT_INIT.get(activation if isinstance(activation, str) else "", "he")
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Dense(n_in, n_out, init=init))
        layers.append(hidden if i < len(sizes) - 2 else out)
    return Sequential(*layers)


def _activation_layer(name, what):
    try:
        return activation(name)
    except ValueError as e:
        raise ValueError(f"mlp: {what}: {e}") from None
