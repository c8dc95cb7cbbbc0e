"""The GRU layer (Cho et al. 2014) in PyTorch's convention, and its backward through time, derived
by hand (beyond the notes; experiments/NOTES.md, "Beyond the notes"). What every recurrent layer
shares (the hoisted products, the stateful option, mixed precision) is in ``recurrent``.

The convention, PyTorch's ``nn.GRU``: gates in the order r (reset), z (update), n (candidate); the
reset gate multiplies the candidate's *recurrent product* (bias included), not ``H_{t−1}`` before
the product; and the update gate keeps the old state, ``H_t = (1 − Z)⊙N + Z⊙H_{t−1}``. (Cho et al.
write ``r ⊙ H_{t−1}`` inside the product and ``z`` on the new candidate; both forms are GRUs, not
the same function. This one needs a bias ``b_hn`` of the candidate's recurrent product apart from
the input one, because ``R`` multiplies it.) Rows, one example per row, ``σ`` the logistic
sigmoid::

    Ax_t = X_t W_xᵀ + b           (N, 3H) = [Ax_r | Ax_z | Ax_n]     before the loop, one product
    Ah_t = H_{t−1} W_hᵀ           (N, 3H) = [Ah_r | Ah_z | Ah_n]     the recurrent product
    R_t  = σ(Ax_r + Ah_r)     Z_t = σ(Ax_z + Ah_z)
    M_t  = Ah_n + b_hn                                               the reset gate's operand
    N_t  = tanh(Ax_n + R_t ⊙ M_t)
    H_t  = (1 − Z_t) ⊙ N_t + Z_t ⊙ H_{t−1}

Backward. The forward was the above: ``H_{t−1}`` is read twice (by the product ``Ah`` and by the
update ``Z ⊙ H_{t−1}``), and ``H_t`` by the output and by step ``t+1``, so the
reverse scan carries ``dH_next`` (zero after the last step) and the backward is, for
``t = T … 1``::

    dH_t   = dY_t + dH_next
    dN_t   = dH_t ⊙ (1 − Z_t)              dZ_t = dH_t ⊙ (H_{t−1} − N_t)
    dAn_t  = dN_t ⊙ (1 − N_t²)                                      (the candidate's pre-activation)
    dR_t   = dAn_t ⊙ M_t                   dM_t = dAn_t ⊙ R_t
    dAr_t  = dR_t ⊙ R_t(1 − R_t)           dAz_t = dZ_t ⊙ Z_t(1 − Z_t)
    dAx_t  = [dAr_t | dAz_t | dAn_t]       dAh_t = [dAr_t | dAz_t | dM_t]
    dH_next = dH_t ⊙ Z_t + dAh_t W_h                                (for step t−1; dH_0 at t = 1)

so the input and the recurrent products get different gradients (they differ in the n block,
where ``R`` sits between them): ``dW_x = dAxᵀ X``, ``db = Σ dAx``, ``dX = dAx W_x``,
``dW_h = dAhᵀ H_prev``, ``db_hn = Σ dM``, one product or sum each after the scan. The forward
caches the gates' values ``[R|Z|N]`` ``(T, N, 3H)``, ``M`` ``(T, N, H)`` and every ``H_t``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ..pytrees import register_namedtuple
from .checks import check_param
from .recurrent import Recurrent, shifted, sigmoid_slope, tanh_slope


@register_namedtuple
class GRUParams(NamedTuple):
    """Parameters of a GRU: ``W_x`` ``(3H, n_in)``, ``W_h`` ``(3H, H)``, ``b`` ``(3H,)`` (gate
    blocks in the order r, z, n along the rows) and ``b_hn`` ``(H,)``, the bias of the candidate's
    recurrent product, inside the reset gate. From PyTorch's ``nn.GRU``: ``W_x = weight_ih_l0``,
    ``W_h = weight_hh_l0``, ``b = bias_ih_l0 + [bias_hh_l0[:2H], 0]``, ``b_hn = bias_hh_l0[2H:]``."""

    W_x: Any
    W_h: Any
    b: Any
    b_hn: Any


@dataclass(frozen=True, init=False, repr=False)
class GRU(Recurrent):
    """Gated recurrent unit, ``(N, T, n_in) → (N, T, H)`` (every hidden state), PyTorch's
    convention: ``H_t = (1 − Z)⊙N + Z⊙H_{t−1}``, the reset gate on the candidate's recurrent
    product. Equations and backward: this module's docstring.

    Params ``GRUParams``. Initialisation: ``W_x`` Xavier uniform per gate block,
    ``U(±√(6/(n_in + H)))``; ``W_h`` an orthogonal ``H × H`` matrix per gate block; ``b`` and
    ``b_hn`` zeros (Keras's defaults; why orthogonal: ``RNN``'s docstring). The initial state is
    zeros, or the carried state with ``stateful=N``.

    Args:
        n_in: features per step.
        n_hidden: ``H``, the hidden units.
        stateful: ``None``, or ``N``: carry ``N`` sequences' final ``h`` into the next call
            (truncated BPTT, ``recurrent``'s docstring).
        precision: the products' policy (``fnnet.precision``), as ``Dense``.
    """

    gates: ClassVar[int] = 3
    carries: ClassVar[tuple] = ("h",)
    params_type: ClassVar[type] = GRUParams

    def __init__(self, n_in, n_hidden, *, stateful=None, precision=None):
        self._setup(n_in, n_hidden, stateful, precision)

    def init(self, key, dtype=jnp.float32):
        W_x, W_h, b = self._init_weights(key, dtype)
        return GRUParams(W_x=W_x, W_h=W_h, b=b, b_hn=jnp.zeros((self.n_hidden,), dtype))

    def _check_params(self, params):
        super()._check_params(params)
        check_param(self, "b_hn", params.b_hn, (self.n_hidden,))

    def _scan(self, params, ax, initial):
        policy, h = self.precision, self.n_hidden
        W_h = policy.cast(params.W_h)  # cast once, outside the loop

        def step(h_prev, ax_t):
            ah = policy.dot(h_prev, W_h, (1, 1))
            r = jax.nn.sigmoid(ax_t[:, :h] + ah[:, :h])
            z = jax.nn.sigmoid(ax_t[:, h:2 * h] + ah[:, h:2 * h])
            m = ah[:, 2 * h:] + params.b_hn
            n = jnp.tanh(ax_t[:, 2 * h:] + r * m)
            h_t = (1 - z) * n + z * h_prev
            return h_t, (h_t, jnp.concatenate([r, z, n], axis=1), m)

        h_last, (hs, gates, ms) = lax.scan(step, initial[0], ax)
        return (h_last,), hs, (gates, ms)

    def _scan_backward(self, params, cache, dys):
        policy, h = self.precision, self.n_hidden
        W_h = policy.cast(params.W_h)
        gates, ms = cache.saved
        dtype = jnp.result_type(dys, cache.hs)

        def step(dh_next, inputs):
            dy_t, gates_t, m, h_prev = inputs
            r, z, n = gates_t[:, :h], gates_t[:, h:2 * h], gates_t[:, 2 * h:]
            dh = dy_t + dh_next
            dan = dh * (1 - z) * tanh_slope(n)
            dar = dan * m * sigmoid_slope(r)
            daz = dh * (h_prev - n) * sigmoid_slope(z)
            dm = dan * r
            dah = jnp.concatenate([dar, daz, dm], axis=1)
            dh_prev = dh * z + policy.dot(dah, W_h, (1, 0))
            return dh_prev.astype(dtype), (jnp.concatenate([dar, daz, dan], axis=1), dm)

        h_prevs = shifted(cache.initial[0], cache.hs)
        dh0, (dax, dms) = lax.scan(step, jnp.zeros(cache.hs.shape[1:], dtype),
                                   (dys, gates, ms, h_prevs), reverse=True)
        dah = jnp.concatenate([dax[..., :2 * h], dms], axis=-1)
        return (dh0,), dax, dah, {"b_hn": jnp.sum(dms, axis=(0, 1))}
