"""``Embedding``: integer ids to learned vectors, a table lookup, and its backward, a scatter-add.

Derivation (beyond the notes; experiments/NOTES.md, "Beyond the notes"). With ``W`` of shape
``(V, D)`` (one row per id) and integer ids ``I`` of any shape, the forward copies rows::

    Y[p] = W[I[p]]                 for every position p of I        Y: I.shape + (D,)

``Y[p]`` depends on row ``I[p]`` of ``W`` only, with derivative 1, so the chain rule sums the
``dY`` rows of every position that read a row::

    dW[v] = Σ_{p : I[p] = v} dY[p]           (a scatter-add: jnp.zeros_like(W).at[I].add(dY))

which is ``dW = onehot(I)ᵀ dY`` (the lookup is the product ``onehot(I) W``) without forming the
``(positions, V)`` one-hot matrix. An id that appears twice receives both rows' ``dY``.

The input is integers, so there is no ``dX``: ``backward`` returns ``None`` in its place.
``Sequential.backward`` passes it on unused (an embedding is a network's first layer), and
``fnnet.manual_vjp`` hands it to ``jax.custom_vjp``, which takes ``None`` as the zero (``float0``)
cotangent of an integer input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..checks import integer
from ..pytrees import register_namedtuple
from .base import InputShape, Layer
from .checks import check_dy, check_param, check_params_type


@register_namedtuple
class EmbeddingParams(NamedTuple):
    """Parameters of an Embedding: ``W`` of shape ``(vocab_size, dim)``, row ``v`` the vector of
    id ``v``."""

    W: Any


@dataclass(frozen=True, init=False)
class Embedding(Layer):
    """A learned vector per id: integer ids of any shape, e.g. ``(N, T)``, to ``(N, T, dim)``,
    ``Y[n, t] = W[ids[n, t]]``; backward the scatter-add ``dW = zeros.at[ids].add(dY)`` (this
    module's docstring). ``dx`` is ``None``: the ids have no gradient.

    Ids must be integers (a float input is a ``TypeError`` at trace time). Ids outside
    ``[0, vocab_size)`` cannot be seen at trace time: called on concrete arrays (outside ``jit``)
    the layer raises a ``ValueError``; under ``jit`` (traced ids) an id is clamped into range,
    a negative one reads (and trains) row 0 and one ``>= vocab_size`` row ``vocab_size − 1``, in
    ``apply``, ``forward`` and ``backward`` alike (no wrap-around from the end as Python indexing
    would, no NaN as ``jnp.take``'s default would).

    Initialisation: ``W ~ N(0, 1)``, as PyTorch's ``nn.Embedding`` (the vectors start at the
    scale of standardised inputs, which the recurrent layers' Xavier ``W_x`` expects).

    Args:
        vocab_size: ``V``, the number of ids.
        dim: ``D``, the length of each vector.
    """

    vocab_size: int
    dim: int
    takes_ids = True

    def __init__(self, vocab_size, dim):
        object.__setattr__(self, "vocab_size", integer("Embedding", "vocab_size", vocab_size))
        object.__setattr__(self, "dim", integer("Embedding", "dim", dim))

    def __repr__(self):
        return f"Embedding({self.vocab_size}, {self.dim})"

    def init(self, key, dtype=jnp.float32):
        return EmbeddingParams(W=jax.random.normal(key, (self.vocab_size, self.dim), dtype))

    def _check(self, params, ids):
        """``ids`` as an array, checked: integer dtype and ``W``'s shape at trace time, and the
        range when the ids are concrete (outside ``jit``)."""
        ids = jnp.asarray(ids)
        dtype = ids.dtype
        if not jnp.issubdtype(dtype, jnp.integer):
            raise TypeError(f"{self}: expected integer ids (e.g. int32 of shape (N, T)), got "
                            f"dtype {dtype}")
        check_params_type(self, params, EmbeddingParams)
        check_param(self, "W", params.W, (self.vocab_size, self.dim))
        if not isinstance(ids, jax.core.Tracer) and np.size(ids):
            values = np.asarray(ids)
            low, high = values.min(), values.max()
            if low < 0 or high >= self.vocab_size:
                raise ValueError(f"{self}: ids must be in [0, {self.vocab_size}), got ids from "
                                 f"{low} to {high} (under jit they would be clamped into range)")
        return ids

    def _clamped(self, ids):
        return jnp.clip(ids, 0, self.vocab_size - 1)

    def apply(self, params, x, *, state=(), key=None, train=False):
        ids = self._clamped(self._check(params, x))
        return jnp.take(params.W, ids, axis=0, mode="clip")

    def forward(self, params, x, *, state=(), key=None, train=True):
        """``(Y, cache)``: the rows, and the (clamped) ids they came from."""
        ids = self._clamped(self._check(params, x))
        return jnp.take(params.W, ids, axis=0, mode="clip"), ids

    def backward(self, params, cache, dy):
        """``dW[v] = Σ_{p: ids[p] = v} dY[p]``, a scatter-add (no one-hot product); ``dx`` is
        ``None`` (integer ids have no gradient)."""
        check_dy(self, dy, tuple(jnp.shape(cache)) + (self.dim,))
        dW = jnp.zeros_like(params.W).at[cache].add(dy.astype(params.W.dtype))
        return EmbeddingParams(W=dW), None


@dataclass(frozen=True, init=False)
class PositionEmbedding(Layer):
    """A learned vector per position, added to a sequence (GPT-2's ``wpe``): ``(N, T, dim) →
    (N, T, dim)``, ``Y[n, t] = X[n, t] + W[t]`` for ``T ≤ block_size``.

    The forward was ``Y = X + W_{:T}`` (``W_{:T}`` the same for every sequence ``n``), so the
    backward is ``dX = dY`` and ``dW[t] = Σ_n dY[n, t]`` for ``t < T``, zero for the rows beyond
    ``T`` that this input did not read.

    Params ``EmbeddingParams(W)`` with ``W`` ``(block_size, dim)``, ``W ~ N(0, 0.02²)`` (GPT-2).

    Args:
        block_size: the longest sequence, ``T ≤ block_size``.
        dim: the features per step.
    """

    block_size: int
    dim: int

    def __init__(self, block_size, dim):
        object.__setattr__(self, "block_size", integer("PositionEmbedding", "block_size",
                                                       block_size))
        object.__setattr__(self, "dim", integer("PositionEmbedding", "dim", dim))

    def __repr__(self):
        return f"PositionEmbedding({self.block_size}, {self.dim})"

    def init(self, key, dtype=jnp.float32):
        return EmbeddingParams(W=0.02 * jax.random.normal(key, (self.block_size, self.dim), dtype))

    def _check(self, params, x):
        check_params_type(self, params, EmbeddingParams)
        check_param(self, "W", params.W, (self.block_size, self.dim))
        shape = tuple(jnp.shape(x))
        if len(shape) != 3 or shape[2] != self.dim or not 1 <= shape[1] <= self.block_size:
            raise ValueError(f"{self}: expected input of shape (N, T, {self.dim}) with "
                             f"1 <= T <= {self.block_size}, got shape {shape}")

    def apply(self, params, x, *, state=(), key=None, train=False):
        self._check(params, x)
        return x + params.W[:x.shape[1]]

    def forward(self, params, x, *, state=(), key=None, train=True):
        """``(Y, cache)``: the cache is the input's length ``T`` (static)."""
        return self.apply(params, x), InputShape(tuple(x.shape))

    def backward(self, params, cache, dy):
        """``dW[t] = Σ_n dY[n, t]`` for ``t < T`` (zero beyond), ``dX = dY``."""
        check_dy(self, dy, cache.shape)
        t = cache.shape[1]
        dW = jnp.zeros_like(params.W).at[:t].set(jnp.sum(dy, axis=0).astype(params.W.dtype))
        return EmbeddingParams(W=dW), dy
