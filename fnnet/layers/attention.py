"""Causal self-attention, its backward derived by hand in two forms (beyond the notes;
experiments/NOTES.md, "Beyond the notes"), as karpathy's llm.c derives it in C and the
FlashAttention-2 paper (Dao 2023, Algorithm 2) derives the memory-lean one.

Shapes: ``N`` sequences, ``T`` steps, ``C = dim`` features, ``h`` heads of ``d = C/h`` each.
Sequences are batch first, ``(N, T, C)``. The forward, per head (``Q``, ``K``, ``V`` ``(T, d)``)::

    [Q | K | V] = X W_qkvᵀ + b_qkv                    (N, T, 3C), one Dense, split into heads
    S = Q Kᵀ / √d                                     (T, T)   scores
    S_ij = −∞ for j > i                               the causal mask: step i reads steps ≤ i
    P = softmax(S) row by row                         (T, T)   P_ij = e^{S_ij − ℓ_i}
    ℓ_i = log Σ_j e^{S_ij}                            (T,)     each row's log-sum-exp
    Y = P V                                           (T, d)   (with dropout: P̃ = P ⊙ M̃, Y = P̃ V)
    Out = merge_heads(Y) W_oᵀ + b_o                    (N, T, C), one Dense

The backward. The two ``Dense`` layers are note 000's rule. In between, per head, from ``dY``:

    Y = P̃ V, so                 dV = P̃ᵀ dY                   (T, d)
                                 dP̃ = dY Vᵀ,   dP = dP̃ ⊙ M̃     (T, T)
    P = softmax(S) row by row, and note 000's softmax Jacobian (``Softmax``'s O(n) form),
    applied to each row, is      dS = P ⊙ (dP − rowsum(dP ⊙ P))
    S = Q Kᵀ/√d, so              dQ = dS K / √d,   dK = dSᵀ Q / √d

The masked entries have ``P_ij = 0`` exactly, so ``dS_ij = 0`` there: no gradient reaches a
step from a later one (the causal property, which a test checks to the bit).

Two forms of that backward (``backward_form``):

``"keep_p"``: the forward keeps ``P`` ``(N, h, T, T)`` and the backward is the five lines above,
as llm.c's ``attention_backward``. Memory O(T²) per head.

``"lean"`` (the default): the forward keeps only ``Y`` and each row's log-sum-exp ``ℓ``
``(N, h, T)``; the backward recomputes ``P_ij = e^{S_ij − ℓ_i}`` block of rows by block of rows.
One more identity removes the last T×T quantity::

    rowsum(dP ⊙ P)_i = Σ_j (dY Vᵀ)_ij M̃_ij P_ij = Σ_j (dY Vᵀ)_ij P̃_ij = Σ_c dY_ic (P̃ V)_ic
                     = rowsum(dY ⊙ Y)_i =: D_i

so ``dS = P ⊙ (dP − D)`` with ``D`` from ``(T, d)`` arrays only (FlashAttention-2's ``D``). A
block ``b`` of ``B`` query rows needs ``Q_b``, ``dY_b``, ``ℓ_b``, ``D_b`` and every key::

    S_b = Q_b Kᵀ/√d (masked)   P_b = e^{S_b − ℓ_b}   dP_b = (dY_b Vᵀ) ⊙ M̃_b
    dS_b = P_b ⊙ (dP_b − D_b)  dQ_b = dS_b K/√d
    dK += dS_bᵀ Q_b/√d         dV += P̃_bᵀ dY_b

The forward runs by the same blocks (each block's ``ℓ_b`` is its rows' own, exact: a block holds
whole rows). A ``T`` of one block is one step; a longer one is a ``lax.scan`` over the blocks
(the backward's carrying ``dK``, ``dV``), so one block's ``(N, h, B, T)`` temporaries are alive at
a time and the training step's memory grows as O(T·B) = O(T) for a fixed ``B``, not O(T²). (An
unrolled loop over blocks would let each block read only the keys up to its last row, half the
products, but XLA may then schedule every block's scores at once, back to O(T²); the scan reads
every key and lets the mask zero the later ones.)
``jax.grad`` of ``apply`` keeps every T×T matrix: this is where a backward by hand beats
autodiff on memory (``experiments/attention_by_hand.py`` measures it).

Attention dropout (``dropout > 0``, training only): the mask of block ``b`` of query rows is
drawn from ``fold_in(key, b)`` with shape ``(N, h, B, T)`` (the rows past ``T`` of a last, shorter
block dropped), the same bits in ``apply``, in both forms' forwards and in the lean backward,
which draws it again instead of keeping it.
The output projection's result is dropped with the same rate (nanoGPT's ``resid_dropout``),
its mask drawn from ``fold_in(key, number of blocks)`` and kept.

Forms the CPU runs fast. The two products that sum over query rows, ``dV = P̃ᵀ dY`` and
``dK = dSᵀ Q/√d``, contract both operands over their leading (row) axis, and XLA:CPU runs such a
batched product faster when its left operand is the narrow ``(T, d)`` one: both forms compute
the transposes ``dVᵀ = dYᵀ P̃`` and ``dKᵀ = (Q/√d)ᵀ dS`` ``(N, h, d, T)`` (the same sums,
``dV_jc = Σ_i P̃_ij dY_ic``) and transpose them back behind an optimisation barrier (which stops
XLA from folding the transpose into the product again; the transpose itself folds into the
copy that lays ``dQ``, ``dK``, ``dV`` back out as the fused ``(N, T, 3C)`` gradient). The lean
backward carries ``dKᵀ``, ``dVᵀ`` through its scan. Each row's log-sum-exp is
``ℓ = m + log Σ_j e^{S_ij − m}`` with ``m`` the row's maximum (``row_logsumexp``): a causal row
always holds its own step, so ``m`` is finite and ``jax.scipy``'s guard against an all-``−∞`` row
(two more passes over the scores) is not needed. On W6 (``fnnet.bench.gpt``, nanoGPT's 4×4×128
step on a 2-core Zen 5) the two together made the training step 0.7–1.6 % faster (four paired
runs of 30–80 interleaved rounds on the quiet machine; within the noise under load;
experiments/BENCHMARKS.md, "W6").

Mixed precision: under a casting policy the four products read ``bfloat16``/``float16`` and
accumulate in float32; the scores, the softmax, ``ℓ`` and ``D`` stay float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .. import precision as _precision
from ..checks import choice, integer, real
from ..pytrees import register_namedtuple
from .base import Layer
from .checks import check_dy, check_floating
from .dense import Dense

BACKWARD_FORMS = ("lean", "keep_p")


@register_namedtuple
class AttentionParams(NamedTuple):
    """Parameters of ``CausalSelfAttention``: ``qkv`` the fused projection ``DenseParams``
    (``W`` ``(3C, C)``, rows ``[Q | K | V]``, each split into heads of ``d`` rows), and ``proj``
    the output projection ``DenseParams`` (``W`` ``(C, C)``)."""

    qkv: Any
    proj: Any


class AttentionCache(NamedTuple):
    """What the forward keeps: the two Dense caches, ``q``, ``k``, ``v`` ``(N, h, T, d)``, ``y``
    the heads' outputs ``(N, h, T, d)``, ``saved`` (``P`` for ``"keep_p"``, ``ℓ`` ``(N, h, T)``
    for ``"lean"``), the dropout ``key`` (``None`` without dropout) and the output's dropout
    mask (``None`` without)."""

    qkv: Any
    q: Any
    k: Any
    v: Any
    y: Any
    saved: Any
    proj: Any
    key: Any
    out_mask: Any


def _products(policy, spec, a, b):
    """``einsum(spec, a, b)``, under a casting policy with narrow inputs, float32 accumulation."""
    if policy.casts:
        return jnp.einsum(spec, policy.cast(a), policy.cast(b),
                          preferred_element_type=jnp.float32)
    return jnp.einsum(spec, a, b)


def row_blocks(t, block):
    """The blocks of query rows ``[(s, e), ...]`` covering ``0 … t`` in steps of ``block``."""
    return [(s, min(s + block, t)) for s in range(0, t, block)]


def row_logsumexp(s):
    """``ℓ_i = log Σ_j e^{S_ij}`` of masked scores, shifted by each row's maximum ``m_i`` so that
    no ``e^x`` overflows: ``ℓ = m + log Σ_j e^{S_ij − m_i}``. Every row of a causal block holds at
    least one unmasked score (its own step; a padded row past ``T`` sees every key), so ``m`` is
    finite and no guard against an all-``−∞`` row is needed (``jax.scipy``'s has one: two more
    passes over the scores)."""
    m = jnp.max(s, axis=-1)
    return m + jnp.log(jnp.sum(jnp.exp(s - m[..., None]), axis=-1))


def transposed_product(policy, spec, a, b):
    """``einsum(spec, a, b)`` of a ``(…, d, T)`` result wanted as ``(…, T, d)`` (``dVᵀ``, ``dKᵀ``:
    the module docstring's forms), transposed behind an optimisation barrier, which keeps XLA
    from folding the transpose back into the product."""
    return jnp.swapaxes(lax.optimization_barrier(_products(policy, spec, a, b)), -1, -2)


def causal_scores(q, k, start, policy):
    """``S = Q Kᵀ`` for query rows ``start …`` (``q`` already divided by ``√d``), masked with
    ``−∞`` where the key comes after the query. ``(N, h, rows, keys)``, float32 at least."""
    s = _products(policy, "nhqd,nhkd->nhqk", q, k)
    rows = start + jnp.arange(q.shape[2])[:, None]
    return jnp.where(jnp.arange(k.shape[2])[None, :] <= rows, s, -jnp.inf)


def dropout_mask(key, rate, n, h, t, block, index):
    """The scaled mask ``M̃ = M/(1 − p)`` of block ``index`` of query rows, ``(N, h, block, T)``
    float32, drawn from ``fold_in(key, index)`` at that shape whatever the block's real rows
    (the last block may hold fewer), so every form draws the same bits (module docstring)."""
    keep = jax.random.bernoulli(jax.random.fold_in(key, index), 1.0 - rate, (n, h, block, t))
    return keep.astype(jnp.float32) / (1.0 - rate)


def full_dropout_mask(key, rate, n, h, t, block):
    """Every block's ``M̃`` stacked: the ``(N, h, T, T)`` mask of the forms on whole matrices."""
    blocks = row_blocks(t, block)
    return jnp.concatenate([dropout_mask(key, rate, n, h, t, block, i)[:, :, :e - s]
                            for i, (s, e) in enumerate(blocks)], axis=2)


def attention_reference(q, k, v, *, policy, key=None, rate=0.0, block=128):
    """``Y = softmax(QKᵀ/√d, causal) V`` in plain jnp on whole ``(T, T)`` matrices: what
    ``apply`` computes and ``jax.grad`` differentiates (the dropout mask by blocks of query rows,
    the bits the hand-written forms draw)."""
    p = jax.nn.softmax(causal_scores(q / math.sqrt(q.shape[-1]), k, 0, policy), axis=-1)
    if key is not None:
        p = p * full_dropout_mask(key, rate, *p.shape[:3], block)
    return _products(policy, "nhqk,nhkd->nhqd", p, v)


# --- "keep_p": P kept, the backward on whole (T, T) matrices --------------------------------


def keep_p_forward(q, k, v, *, policy, key=None, rate=0.0, block=128):
    """``(Y, P)``: the forward keeping ``P`` ``(N, h, T, T)``."""
    s = causal_scores(q / math.sqrt(q.shape[-1]), k, 0, policy)
    p = jnp.exp(s - row_logsumexp(s)[..., None])
    p_dropped = p
    if key is not None:
        p_dropped = p * full_dropout_mask(key, rate, *p.shape[:3], block)
    return _products(policy, "nhqk,nhkd->nhqd", p_dropped, v), p


def keep_p_backward(dy, q, k, v, p, *, policy, key=None, rate=0.0, block=128):
    """``(dQ, dK, dV)`` from ``dY`` and the kept ``P`` (module docstring)::

        dV = P̃ᵀ dY    dP = (dY Vᵀ) ⊙ M̃    dS = P ⊙ (dP − rowsum(dP ⊙ P))
        dQ = dS K/√d   dK = dSᵀ Q/√d
    """
    scale = 1 / math.sqrt(q.shape[-1])
    mask = 1.0 if key is None else full_dropout_mask(key, rate, *p.shape[:3], block)
    dv = transposed_product(policy, "nhqd,nhqk->nhdk", dy, p * mask)
    dp = _products(policy, "nhqd,nhkd->nhqk", dy, v) * mask
    ds = p * (dp - jnp.sum(dp * p, axis=-1, keepdims=True))
    dq = _products(policy, "nhqk,nhkd->nhqd", ds, k) * scale
    dk = transposed_product(policy, "nhqd,nhqk->nhdk", q, ds) * scale
    return dq, dk, dv


# --- "lean": only ℓ kept, P recomputed by blocks of query rows ------------------------------


def _query_blocks(a, block):
    """``(N, h, T, ·)`` rows as ``(n_blocks, N, h, block, ·)``, the last block padded with zero
    rows (rows past ``T``, computed and dropped)."""
    n, h, t = a.shape[:3]
    count = -(-t // block)
    a = jnp.pad(a, [(0, 0), (0, 0), (0, count * block - t)] + [(0, 0)] * (a.ndim - 3))
    return jnp.moveaxis(a.reshape(n, h, count, block, *a.shape[3:]), 2, 0)


def _rows_back(blocks, t):
    """The inverse of ``_query_blocks``: ``(n_blocks, N, h, block, ·)`` → ``(N, h, T, ·)``."""
    count, n, h, block = blocks.shape[:4]
    return jnp.moveaxis(blocks, 0, 2).reshape(n, h, count * block, *blocks.shape[4:])[:, :, :t]


def _block_probabilities(qs_b, k, start, lse_b, policy, key, rate, index, shape):
    """``(P_b, M̃_b)`` of one block of query rows from ``start``: ``P_b = e^{S_b − ℓ_b}`` over
    every key (the causal mask zeroes the later ones), and its dropout mask (1 without)."""
    p = jnp.exp(causal_scores(qs_b, k, start, policy) - lse_b[..., None])
    mask = 1.0 if key is None else dropout_mask(key, rate, *shape, index)
    return p, mask


def lean_forward(q, k, v, *, policy, key=None, rate=0.0, block=128):
    """``(Y, ℓ)``: the forward by blocks of ``block`` query rows, keeping each row's
    log-sum-exp ``ℓ`` ``(N, h, T)`` instead of ``P``.

    A ``T`` of one block is one step; longer ones are a ``lax.scan`` over the blocks, each
    against every key (the mask zeroes the later ones: twice the products of skipping them, in
    exchange for one block's ``(N, h, block, T)`` temporaries alive at a time, which an unrolled
    loop does not guarantee: XLA may schedule every block's scores first)."""
    n, h, t, d = q.shape
    qs = q * (1 / math.sqrt(d))  # the backward's expression: XLA shares the scores between them
    if t <= block:
        scores = causal_scores(qs, k, 0, policy)
        lse = row_logsumexp(scores)
        p = jnp.exp(scores - lse[..., None])
        if key is not None:
            p = p * dropout_mask(key, rate, n, h, t, block, 0)[:, :, :t]
        return _products(policy, "nhqk,nhkd->nhqd", p, v), lse

    def one_block(_, inputs):
        index, qs_b = inputs
        scores = causal_scores(qs_b, k, index * block, policy)
        lse = row_logsumexp(scores)
        p = jnp.exp(scores - lse[..., None])
        if key is not None:
            p = p * dropout_mask(key, rate, n, h, t, block, index)
        return None, (_products(policy, "nhqk,nhkd->nhqd", p, v), lse)

    blocks = _query_blocks(qs, block)
    _, (ys, lses) = lax.scan(one_block, None, (jnp.arange(blocks.shape[0]), blocks))
    return _rows_back(ys, t), _rows_back(lses, t)


def lean_backward(dy, q, k, v, y, lse, *, policy, key=None, rate=0.0, block=128):
    """``(dQ, dK, dV)`` from ``dY``, ``Y`` and ``ℓ``, recomputing ``P`` by blocks (module
    docstring)::

        D = rowsum(dY ⊙ Y)
        per block b of query rows:  P_b = e^{S_b − ℓ_b}   dP_b = (dY_b Vᵀ) ⊙ M̃_b
            dS_b = P_b ⊙ (dP_b − D_b)   dQ_b = dS_b K/√d
            dK += dS_bᵀ Q_b/√d          dV += P̃_bᵀ dY_b

    by the blocks ``lean_forward`` used: one step for a ``T`` of one block, else a
    ``lax.scan`` carrying ``dKᵀ`` and ``dVᵀ`` (the forms of the module docstring; padded rows
    have ``dY = 0``: they add nothing).
    """
    n, h, t, d = q.shape
    scale = 1 / math.sqrt(d)
    qs = q * scale
    d_rows = jnp.sum(dy.astype(jnp.float32) * y, axis=-1) if policy.casts else jnp.sum(dy * y, -1)
    dtype = jnp.result_type(q, k, v, jnp.float32 if policy.casts else q.dtype)

    def one_block(carry, inputs):
        dk_t, dv_t = carry  # dKᵀ, dVᵀ (N, h, d, T): see the docstring
        index, qs_b, dy_b, lse_b, d_b = inputs
        p, mask = _block_probabilities(qs_b, k, index * block, lse_b, policy, key, rate, index,
                                       (n, h, t, block))
        if key is not None and t <= block:
            mask = mask[:, :, :t]
        dv_t = dv_t + _products(policy, "nhqd,nhqk->nhdk", dy_b, p * mask)
        dp = _products(policy, "nhqd,nhkd->nhqk", dy_b, v) * mask
        ds = p * (dp - d_b[..., None])
        dk_t = dk_t + _products(policy, "nhqd,nhqk->nhdk", qs_b, ds)
        dq_b = _products(policy, "nhqk,nhkd->nhqd", ds, k) * scale
        return (dk_t.astype(dtype), dv_t.astype(dtype)), dq_b

    zeros = (jnp.zeros((n, h, d, t), dtype), jnp.zeros((n, h, d, t), dtype))
    if t <= block:
        (dk_t, dv_t), dq = one_block(zeros, (0, qs, dy, lse, d_rows))
    else:
        rows = [_query_blocks(a, block) for a in (qs, dy, lse[..., None], d_rows[..., None])]
        (dk_t, dv_t), dqs = lax.scan(one_block, zeros, (jnp.arange(rows[0].shape[0]), rows[0],
                                                        rows[1], rows[2][..., 0],
                                                        rows[3][..., 0]))
        dq = _rows_back(dqs, t)
    dk, dv = (jnp.swapaxes(lax.optimization_barrier(a), -1, -2) for a in (dk_t, dv_t))
    return dq, dk, dv


@dataclass(frozen=True, init=False)
class CausalSelfAttention(Layer):
    """Multi-head causal self-attention, ``(N, T, C) → (N, T, C)``: one fused Q/K/V ``Dense``,
    scaled dot-product attention under the causal mask per head, heads merged, an output
    ``Dense``. Equations and both backward forms: this module's docstring.

    Params ``AttentionParams(qkv, proj)``, two ``DenseParams``; initialised as GPT-2 (``W ~
    N(0, 0.02²)``, biases zero; ``fnnet.gpt`` scales the output projection's by ``1/√(2L)``).

    Args:
        dim: ``C``, the features per step.
        heads: ``h``, which must divide ``dim``.
        dropout: the rate of attention dropout (on ``P``) and of the output's dropout, in
            ``[0, 1)``; training needs ``key=`` when it is above 0.
        backward_form: ``"lean"`` (keep only each row's log-sum-exp, recompute ``P`` by blocks:
            memory O(T)) or ``"keep_p"`` (keep ``P``: memory O(T²)).
        block: the query rows per block of the lean form (and of the dropout masks).
        precision: the products' policy (``fnnet.precision``), as ``Dense``.
    """

    dim: int
    heads: int
    dropout: float
    backward_form: str
    block: int
    precision: _precision.Policy

    def __init__(self, dim, heads, dropout=0.0, *, backward_form="lean", block=128,
                 precision=None):
        where = "CausalSelfAttention"
        object.__setattr__(self, "dim", integer(where, "dim", dim))
        object.__setattr__(self, "heads", integer(where, "heads", heads))
        if dim % heads:
            raise ValueError(f"{where}: heads ({heads}) must divide dim ({dim})")
        object.__setattr__(self, "dropout", real(where, "dropout", dropout, 0, 1,
                                                 high_open=True))
        object.__setattr__(self, "backward_form", choice(where, "backward_form", backward_form,
                                                         BACKWARD_FORMS))
        object.__setattr__(self, "block", integer(where, "block", block))
        object.__setattr__(self, "precision", _precision.get(precision))

    def __repr__(self):
        extra = f", dropout={self.dropout}" if self.dropout else ""
        if self.backward_form != "lean":
            extra += f", backward_form={self.backward_form!r}"
        if self.precision.casts:
            extra += f", precision={self.precision!r}"
        return f"CausalSelfAttention({self.dim}, {self.heads}{extra})"

    @property
    def stochastic(self):
        return self.dropout > 0

    @property
    def qkv(self):
        """The fused Q/K/V projection, ``Dense(C, 3C)``."""
        return Dense(self.dim, 3 * self.dim, "gpt2", precision=self.precision)

    @property
    def proj(self):
        """The output projection, ``Dense(C, C)``."""
        return Dense(self.dim, self.dim, "gpt2", precision=self.precision)

    def with_precision(self, policy):
        return replace(self, precision=_precision.get(policy))

    def init(self, key, dtype=jnp.float32):
        kq, kp = jax.random.split(key)
        return AttentionParams(qkv=self.qkv.init(kq, dtype), proj=self.proj.init(kp, dtype))

    def _check(self, params, x):
        check_floating(self, x)
        shape = tuple(jnp.shape(x))
        if len(shape) != 3 or shape[2] != self.dim:
            raise ValueError(f"{self}: expected input of shape (N, T, {self.dim}) (batch, time, "
                             f"features), got shape {shape}")
        if shape[1] == 0:
            raise ValueError(f"{self}: expected at least one time step (T >= 1), got shape "
                             f"{shape}")
        if not isinstance(params, AttentionParams):
            raise ValueError(f"{self}: params must be AttentionParams(qkv, proj), got "
                             f"{type(params).__name__}")

    def _keys(self, key, train, t):
        """``(attention key, output key)``, or ``(None, None)`` without dropout."""
        if not train or self.dropout == 0:
            return None, None
        if key is None:
            raise ValueError(f"{self}: training with dropout draws masks and needs key= (a "
                             f"jax.random key); pass train=False for inference")
        n_blocks = len(row_blocks(t, self.block))
        return key, jax.random.fold_in(key, n_blocks)

    def _split_heads(self, qkv):
        """``(N, T, 3C)`` → ``q, k, v`` each ``(N, h, T, d)``."""
        n, t, _ = qkv.shape
        parts = qkv.reshape(n, t, 3, self.heads, self.dim // self.heads)
        return tuple(jnp.transpose(parts, (2, 0, 3, 1, 4)))

    def _merge_heads(self, y):
        """``(N, h, T, d)`` → ``(N, T, C)``."""
        n, _, t, _ = y.shape
        return jnp.transpose(y, (0, 2, 1, 3)).reshape(n, t, self.dim)

    def _out_mask(self, out_key, shape, dtype):
        keep = jax.random.bernoulli(out_key, 1.0 - self.dropout, shape)
        return keep.astype(dtype) / jnp.asarray(1.0 - self.dropout, dtype)

    def apply(self, params, x, *, state=(), key=None, train=False):
        """The plain-jnp forward on whole ``(T, T)`` matrices: what autodiff differentiates."""
        self._check(params, x)
        attn_key, out_key = self._keys(key, train, x.shape[1])
        q, k, v = self._split_heads(self.qkv.apply(params.qkv, x))
        y = attention_reference(q, k, v, policy=self.precision, key=attn_key,
                                rate=self.dropout, block=self.block)
        out = self.proj.apply(params.proj, self._merge_heads(y.astype(x.dtype)))
        return out if out_key is None else out * self._out_mask(out_key, out.shape, out.dtype)

    def forward(self, params, x, *, state=(), key=None, train=True):
        self._check(params, x)
        attn_key, out_key = self._keys(key, train, x.shape[1])
        qkv, qkv_cache = self.qkv.forward(params.qkv, x)
        q, k, v = self._split_heads(qkv)
        form = lean_forward if self.backward_form == "lean" else keep_p_forward
        y, saved = form(q, k, v, policy=self.precision, key=attn_key, rate=self.dropout,
                        block=self.block)
        y = y.astype(x.dtype)
        out, proj_cache = self.proj.forward(params.proj, self._merge_heads(y))
        out_mask = None
        if out_key is not None:
            out_mask = self._out_mask(out_key, out.shape, out.dtype)
            out = out * out_mask
        return out, AttentionCache(qkv_cache, q, k, v, y, saved, proj_cache, attn_key, out_mask)

    def backward(self, params, cache, dy):
        """The output's dropout, the output ``Dense``, the attention backward of the layer's form
        (module docstring), the fused ``Dense``; returns ``(AttentionParams, dX)``."""
        check_dy(self, dy, tuple(jnp.shape(cache.proj)))  # the output has the input's shape
        if cache.out_mask is not None:
            dy = dy * cache.out_mask
        d_proj, d_merged = self.proj.backward(params.proj, cache.proj, dy)
        n, t, _ = d_merged.shape
        dy_heads = jnp.transpose(d_merged.reshape(n, t, self.heads, -1), (0, 2, 1, 3))
        options = dict(policy=self.precision, key=cache.key, rate=self.dropout, block=self.block)
        if self.backward_form == "lean":
            dq, dk, dv = lean_backward(dy_heads, cache.q, cache.k, cache.v, cache.y, cache.saved,
                                       **options)
        else:
            dq, dk, dv = keep_p_backward(dy_heads, cache.q, cache.k, cache.v, cache.saved,
                                         **options)
        dqkv = jnp.transpose(jnp.stack([dq, dk, dv]), (1, 3, 0, 2, 4)).reshape(n, t, 3 * self.dim)
        d_qkv, dx = self.qkv.backward(params.qkv, cache.qkv, dqkv.astype(dy.dtype))
        return AttentionParams(qkv=d_qkv, proj=d_proj), dx
