"""``Sequential``: a list of layers is itself a layer (note 000's sequential model, in
experiments/NOTES.md).

Forward feeds each layer's output into the next and keeps every layer's cache; backward runs the
list in reverse, handing each layer the ``dE/dY`` its successor returned as ``dE/dX``.
``Sequential`` is a ``Layer`` (``base``) and takes only ``Layer`` instances; networks nest.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from .base import Layer


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
