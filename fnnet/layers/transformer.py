"""The transformer: ``TransformerBlock`` (GPT-2's pre-LayerNorm block) and ``GPT``, the whole
decoder with tied token embedding and output head (beyond the notes; experiments/NOTES.md,
"Beyond the notes"; karpathy's llm.c derives the same backward in C, nanoGPT is the reference
for the architecture). Shapes ``(N, T, C)``: ``N`` sequences of ``T`` steps, ``C = dim``.

A block is two residual branches (``Residual``: ``dX = dY + f.backward(dY)``)::

    X₁ = X  + Attn(LN₁(X))                          causal self-attention (``attention``)
    Y  = X₁ + W₂ᵀ-Dense(GELU(W₁-Dense(LN₂(X₁))))    the MLP, C → mlp_ratio·C → C

so its backward is, from ``dY``: the MLP branch's backward gives ``dX₁ = dY + LN₂.backward(…)``,
then the attention branch's ``dX = dX₁ + LN₁.backward(Attn.backward(dX₁))``: each sublayer's own
rule (LayerNorm, Dense, GELU, attention), in reverse order.

The GPT (``GPT``; ``fnnet.gpt`` adds the softmax)::

    E = W_te[ids] + W_pe[:T]                        (N, T, C)   Embedding, PositionEmbedding
    X = Block_L(… Block_1(E))                       (N, T, C)
    Z = LN_f(X) W_teᵀ                               (N, T, V)   the head: the token table again

Tied weights (Press & Wolf 2017, GPT-2): the token table ``W_te`` ``(V, C)`` is read twice, as a
lookup at the bottom and as the head's matrix at the top, so its gradient is the sum of both
uses' gradients::

    dW_te = dZ_flatᵀ LN_f(X)_flat  +  scatter_add(ids, dE)        (V, C)
            \\_ the head (Dense's dW) _/   \\_ the lookup (Embedding's dW) _/

with ``dZ`` from the loss (the fused ``(A − Y)/(N·T)``) and ``dE`` what comes back through
every block. Untied (``tie_weights=False``) the head is its own ``Dense(C, V)``.

Initialisation as GPT-2 (nanoGPT): every matrix and both tables ``N(0, 0.02²)``, biases zero,
LayerNorm gains one; the two projections that end a residual branch (attention's output, the
MLP's second ``Dense``) ``N(0, (0.02/√(2L))²)``, so the residual stream's variance does not grow
with the depth ``L``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .. import precision as _precision
from ..checks import choice, integer, real
from ..pytrees import register_namedtuple
from .activations import GELU
from .attention import BACKWARD_FORMS, CausalSelfAttention
from .base import Layer
from .checks import check_dy
from .dense import Dense
from .dropout import Dropout
from .embedding import Embedding, EmbeddingParams, PositionEmbedding
from .normalization import LayerNorm
from .residual import Residual
from .sequential import Sequential


@dataclass(frozen=True, init=False)
class TransformerBlock(Layer):
    """GPT-2's block, ``(N, T, C) → (N, T, C)``: ``x + attn(ln1(x))``, then
    ``x + mlp(ln2(x))`` with the MLP ``Dense(C, r·C)``, ``GELU``, ``Dense(r·C, C)``, dropout.
    Derivation: this module's docstring.

    The block is ``body``, a ``Sequential`` of two ``Residual`` branches, so its params are that
    network's nested tuple: ``((ln1, attn), (ln2, fc, (), proj, ()))``.

    Args:
        dim: ``C``.
        heads: the attention heads (dividing ``dim``).
        mlp_ratio: the MLP's hidden width over ``C``.
        dropout: attention dropout, and dropout at the end of each branch, in ``[0, 1)``.
        backward_form: the attention's backward (``"lean"`` or ``"keep_p"``).
        block: the lean attention's query rows per block.
        precision: the products' policy (``fnnet.precision``).
    """

    dim: int
    heads: int
    mlp_ratio: int
    dropout: float
    backward_form: str
    block: int
    precision: _precision.Policy

    def __init__(self, dim, heads, mlp_ratio=4, dropout=0.0, *, backward_form="lean",
                 block=128, precision=None):
        where = "TransformerBlock"
        object.__setattr__(self, "dim", integer(where, "dim", dim))
        object.__setattr__(self, "heads", integer(where, "heads", heads))
        object.__setattr__(self, "mlp_ratio", integer(where, "mlp_ratio", mlp_ratio))
        object.__setattr__(self, "dropout", real(where, "dropout", dropout, 0, 1,
                                                 high_open=True))
        object.__setattr__(self, "backward_form", choice(where, "backward_form", backward_form,
                                                         BACKWARD_FORMS))
        object.__setattr__(self, "block", integer(where, "block", block))
        object.__setattr__(self, "precision", _precision.get(precision))
        CausalSelfAttention(dim, heads)  # checks that the heads divide dim

    def __repr__(self):
        extra = f", mlp_ratio={self.mlp_ratio}" if self.mlp_ratio != 4 else ""
        extra += f", dropout={self.dropout}" if self.dropout else ""
        return f"TransformerBlock({self.dim}, {self.heads}{extra})"

    @property
    def body(self):
        """``Sequential(Residual(LN₁, Attn), Residual(LN₂, Dense, GELU, Dense, Dropout))``."""
        c, policy = self.dim, self.precision
        hidden = self.mlp_ratio * c
        attention = CausalSelfAttention(c, self.heads, self.dropout,
                                        backward_form=self.backward_form, block=self.block,
                                        precision=policy)
        mlp = Sequential(LayerNorm(c), Dense(c, hidden, "gpt2", precision=policy), GELU(),
                         Dense(hidden, c, "gpt2", precision=policy), Dropout(self.dropout))
        return Sequential(Residual(Sequential(LayerNorm(c), attention)), Residual(mlp))

    @property
    def stochastic(self):
        return self.dropout > 0

    def with_precision(self, policy):
        return replace(self, precision=_precision.get(policy))

    def init(self, key, dtype=jnp.float32):
        return self.body.init(key, dtype)

    def apply(self, params, x, *, state=(), key=None, train=False):
        return self.body.apply(params, x, key=key, train=train)

    def forward(self, params, x, *, state=(), key=None, train=True):
        return self.body.forward(params, x, key=key, train=train)

    def backward(self, params, cache, dy):
        """The two branches in reverse, each ``dX = dY + f.backward(dY)`` (module docstring)."""
        return self.body.backward(params, cache, dy)


def scale_branch_ends(block_params, factor):
    """A block's params with the two projections that end a residual branch scaled by
    ``factor`` (GPT-2's ``1/√(2L)``)."""
    (ln1, attn), (ln2, fc, gelu, proj, drop) = block_params
    attn = attn._replace(proj=attn.proj._replace(W=attn.proj.W * factor))
    return ((ln1, attn), (ln2, fc, gelu, proj._replace(W=proj.W * factor), drop))


@register_namedtuple
class GPTParams(NamedTuple):
    """Parameters of ``GPT``: ``wte`` the token table ``EmbeddingParams`` ``(V, C)`` (also the
    head's matrix when tied), ``wpe`` the position table ``(block_size, C)``, ``blocks`` one
    ``TransformerBlock``'s params per layer, ``ln_f`` the final ``NormParams``, and ``head``
    ``()`` when tied, else the head's ``DenseParams``."""

    wte: Any
    wpe: Any
    blocks: Any
    ln_f: Any
    head: Any


class GPTCache(NamedTuple):
    """What ``GPT.forward`` keeps: the ids, each sublayer's cache, and ``x`` the final
    LayerNorm's output (the tied head's input)."""

    ids: Any
    pos: Any
    drop: Any
    blocks: Any
    ln_f: Any
    x: Any
    head: Any


@dataclass(frozen=True, init=False)
class GPT(Layer):
    """A GPT decoder, ids ``(N, T)`` (``T ≤ block_size``) to logits ``(N, T, V)``: token and
    position embeddings, dropout, ``layers`` ``TransformerBlock``s, a final ``LayerNorm``, the
    head (tied to the token table by default). Derivation and initialisation: this module's
    docstring. ``fnnet.gpt`` puts a ``Softmax`` after it, so cross-entropy takes the fused rule.

    Args:
        vocab_size: ``V``.
        block_size: the longest context ``T``.
        layers: ``L``, the number of blocks.
        heads: attention heads per block.
        dim: ``C``.
        dropout: the rate of every dropout (embeddings, attention, each branch's end).
        tie_weights: share the token table with the head.
        backward_form: the attention's backward, ``"lean"`` or ``"keep_p"``.
        block: the lean attention's query rows per block.
        precision: the products' policy (``fnnet.precision``).
    """

    vocab_size: int
    block_size: int
    layers: int
    heads: int
    dim: int
    dropout: float
    tie_weights: bool
    backward_form: str
    block: int
    precision: _precision.Policy
    takes_ids = True

    def __init__(self, vocab_size, block_size, layers, heads, dim, dropout=0.0,
                 tie_weights=True, *, backward_form="lean", block=128, precision=None):
        where = "GPT"
        for name, value in (("vocab_size", vocab_size), ("block_size", block_size),
                            ("layers", layers), ("heads", heads), ("dim", dim),
                            ("block", block)):
            object.__setattr__(self, name, integer(where, name, value))
        object.__setattr__(self, "dropout", real(where, "dropout", dropout, 0, 1,
                                                 high_open=True))
        if not isinstance(tie_weights, bool):
            raise ValueError(f"{where}: tie_weights must be True or False, got {tie_weights!r}")
        object.__setattr__(self, "tie_weights", tie_weights)
        object.__setattr__(self, "backward_form", choice(where, "backward_form", backward_form,
                                                         BACKWARD_FORMS))
        object.__setattr__(self, "precision", _precision.get(precision))
        CausalSelfAttention(dim, heads)  # checks that the heads divide dim

    def __repr__(self):
        extra = f", dropout={self.dropout}" if self.dropout else ""
        extra += "" if self.tie_weights else ", tie_weights=False"
        return (f"GPT({self.vocab_size}, {self.block_size}, layers={self.layers}, "
                f"heads={self.heads}, dim={self.dim}{extra})")

    @property
    def stochastic(self):
        return self.dropout > 0

    @property
    def transformer_block(self):
        return TransformerBlock(self.dim, self.heads, 4, self.dropout,
                                backward_form=self.backward_form, block=self.block,
                                precision=self.precision)

    @property
    def head(self):
        """The untied head, ``Dense(C, V)``."""
        return Dense(self.dim, self.vocab_size, "gpt2", precision=self.precision)

    def with_precision(self, policy):
        return replace(self, precision=_precision.get(policy))

    def init(self, key, dtype=jnp.float32):
        k_te, k_pe, k_blocks, k_head = jax.random.split(key, 4)
        block = self.transformer_block
        factor = 1 / math.sqrt(2 * self.layers)
        blocks = tuple(scale_branch_ends(block.init(k, dtype), factor)
                       for k in jax.random.split(k_blocks, self.layers))
        return GPTParams(
            wte=EmbeddingParams(W=0.02 * jax.random.normal(k_te, (self.vocab_size, self.dim),
                                                           dtype)),
            wpe=PositionEmbedding(self.block_size, self.dim).init(k_pe, dtype),
            blocks=blocks, ln_f=LayerNorm(self.dim).init(None, dtype),
            head=() if self.tie_weights else self.head.init(k_head, dtype))

    def _check(self, params):
        if not isinstance(params, GPTParams):
            raise ValueError(f"{self}: params must be GPTParams, got {type(params).__name__}")
        if not isinstance(params.blocks, tuple) or len(params.blocks) != self.layers:
            raise ValueError(f"{self}: params.blocks must hold {self.layers} blocks' params")

    def _keys(self, key, train):
        """Each sublayer's key, ``fold_in(key, i)``: 0 the embeddings' dropout, ``1 … L`` the
        blocks; ``None`` without dropout or out of training."""
        if not train or self.dropout == 0:
            return [None] * (self.layers + 1)
        if key is None:
            raise ValueError(f"{self}: training with dropout draws masks and needs key= (a "
                             f"jax.random key); pass train=False for inference")
        return [jax.random.fold_in(key, i) for i in range(self.layers + 1)]

    def _logits(self, params, x):
        if not self.tie_weights:
            return self.head.apply(params.head, x)
        return self.precision.dot(x, params.wte.W, (2, 1))

    def apply(self, params, x, *, state=(), key=None, train=False):
        self._check(params)
        keys = self._keys(key, train)
        h = Embedding(self.vocab_size, self.dim).apply(params.wte, x)
        h = PositionEmbedding(self.block_size, self.dim).apply(params.wpe, h)
        h = Dropout(self.dropout).apply((), h, key=keys[0], train=train)
        block = self.transformer_block
        for block_params, block_key in zip(params.blocks, keys[1:]):
            h = block.apply(block_params, h, key=block_key, train=train)
        return self._logits(params, LayerNorm(self.dim).apply(params.ln_f, h))

    def forward(self, params, x, *, state=(), key=None, train=True):
        self._check(params)
        keys = self._keys(key, train)
        h, ids = Embedding(self.vocab_size, self.dim).forward(params.wte, x)
        h, pos = PositionEmbedding(self.block_size, self.dim).forward(params.wpe, h)
        h, drop = Dropout(self.dropout).forward((), h, key=keys[0], train=train)
        block, caches = self.transformer_block, []
        for block_params, block_key in zip(params.blocks, keys[1:]):
            h, cache = block.forward(block_params, h, key=block_key, train=train)
            caches.append(cache)
        h, ln_f = LayerNorm(self.dim).forward(params.ln_f, h)
        head = None
        if self.tie_weights:
            h = self.precision.cast(h)
            logits = self._logits(params, h)
        else:
            logits, head = self.head.forward(params.head, h)
        return logits, GPTCache(ids, pos, drop, tuple(caches), ln_f, h, head)

    def _head_backward(self, params, cache, dz):
        """``(dW_te from the head, or the head's DenseParams; dX)``: ``Z = X W_teᵀ`` was the
        forward, so ``dW_te = dZ_flatᵀ X_flat`` and ``dX = dZ W_te`` (Dense's rule, no bias)."""
        if not self.tie_weights:
            return self.head.backward(params.head, cache.head, dz)
        policy, x = self.precision, cache.x
        rows, dz_rows = x.reshape(-1, self.dim), policy.cast(dz.reshape(-1, self.vocab_size))
        dW = policy.dot(_precision.transposed(dz_rows, policy), rows, (1, 0))
        return dW, policy.dot(dz_rows, params.wte.W, (1, 0)).reshape(x.shape)

    def backward(self, params, cache, dy):
        """The head, the final LayerNorm, the blocks in reverse, the dropout, the position
        table, the token table; with tied weights ``dW_te`` sums the head's and the lookup's
        gradients (module docstring)."""
        check_dy(self, dy, tuple(jnp.shape(cache.ids)) + (self.vocab_size,))
        d_head, dh = self._head_backward(params, cache, dy)
        d_ln_f, dh = LayerNorm(self.dim).backward(params.ln_f, cache.ln_f, dh)
        block, d_blocks = self.transformer_block, [None] * self.layers
        for i in reversed(range(self.layers)):
            d_blocks[i], dh = block.backward(params.blocks[i], cache.blocks[i], dh)
        _, dh = Dropout(self.dropout).backward((), cache.drop, dh)
        d_wpe, dh = PositionEmbedding(self.block_size, self.dim).backward(params.wpe,
                                                                          cache.pos, dh)
        d_wte, _ = Embedding(self.vocab_size, self.dim).backward(params.wte, cache.ids, dh)
        if self.tie_weights:
            d_wte, d_head = EmbeddingParams(W=d_wte.W + d_head.astype(d_wte.W.dtype)), ()
        return GPTParams(wte=d_wte, wpe=d_wpe, blocks=tuple(d_blocks), ln_f=d_ln_f,
                         head=d_head), None
