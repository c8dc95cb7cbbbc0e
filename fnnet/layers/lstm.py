"""The LSTM layer (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000) and
its backward through time, derived by hand (beyond the notes; experiments/NOTES.md, "Beyond the
notes"). What every recurrent layer shares (the hoisted products, the stateful option, mixed
precision) is in ``recurrent``.

Forward, rows (one example per row), ``σ`` the logistic sigmoid, gates in the order i, f, g, o::

    A_t = X_t W_xᵀ + b + H_{t−1} W_hᵀ                     (N, 4H) = [A_i | A_f | A_g | A_o]
    I_t = σ(A_i)   F_t = σ(A_f)   G_t = tanh(A_g)   O_t = σ(A_o)
    C_t = F_t ⊙ C_{t−1} + I_t ⊙ G_t
    H_t = O_t ⊙ tanh(C_t)

Backward. The forward was the above, and ``H_t`` is read by the output and by step ``t+1``,
``C_t`` by step ``t+1`` only, so the reverse scan carries ``dH_next`` and ``dC_next`` (both zero
after the last step) and the backward is, for ``t = T … 1``::

    dH_t   = dY_t + dH_next
    dO_t   = dH_t ⊙ tanh(C_t)                             (H_t = O_t ⊙ tanh(C_t))
    dC_t   = dC_next + dH_t ⊙ O_t ⊙ (1 − tanh²(C_t))      (both paths into C_t)
    dI_t   = dC_t ⊙ G_t     dG_t = dC_t ⊙ I_t     dF_t = dC_t ⊙ C_{t−1}
    dC_next = dC_t ⊙ F_t                                  (for step t−1; at t = 1 it is dC_0)
    dA_t   = [dI_t ⊙ I_t(1 − I_t) | dF_t ⊙ F_t(1 − F_t) | dG_t ⊙ (1 − G_t²) | dO_t ⊙ O_t(1 − O_t)]
    dH_next = dA_t W_h                                    (for step t−1; at t = 1 it is dH_0)

and then, from the stacked ``dA`` (``recurrent``'s docstring), ``dW_x = dAᵀ X``, ``db = Σ dA``,
``dX = dA W_x``, ``dW_h = dAᵀ H_prev``, one product each.

What the forward keeps. Every factor of ``dA_t`` and ``dC_t`` above but ``dC_t`` and ``dH_t``
themselves is known in the forward, so the forward multiplies them out once, step by step, into::

    P_t = [G_t ⊙ I_t(1 − I_t) | C_{t−1} ⊙ F_t(1 − F_t) | I_t ⊙ (1 − G_t²) | tanh(C_t) ⊙ O_t(1 − O_t)]
    Q_t = O_t ⊙ (1 − tanh²(C_t))                           (N, 4H) and (N, H)

and the backward above, regrouped, is three element-wise lines and the product::

    dH_t   = dY_t + dH_next
    dC_t   = dC_next + dH_t ⊙ Q_t
    dA_t   = [dC_t | dC_t | dC_t | dH_t] ⊙ P_t
    dC_next = dC_t ⊙ F_t       dH_next = dA_t W_h

(``dA_i = dI ⊙ I(1 − I) = dC ⊙ G ⊙ I(1 − I)``, and so on: each block of ``P_t`` is the factor its
``dA`` block multiplies ``dC_t``, or for ``o`` ``dH_t``, by). One pass over ``(N, 4H)`` per step
instead of recomputing ``tanh(C_t)`` and the four slopes in the reverse loop, where every
element-wise operation waits between two products.

The cache (``LSTMSaved``, time-major): ``P`` with its four blocks stacked, ``(T, 4, N, H)``,
written block by block where the forward makes them (no ``(N, 4H)`` concatenation in the forward
loop); every ``C_t``; ``Q`` and ``F`` stacked, ``(T, 2, N, H)``; and every ``H_t``
(``recurrent``'s cache). The input product ``X_t W_xᵀ`` is hoisted out of the loop; ``b`` is
added inside the step (``Recurrent.bias_in_step``), where the addition fuses into the gates'
element-wise work instead of taking a pass over ``(T·N, 4H)`` of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .recurrent import Recurrent, RecurrentParams, sigmoid_slope, tanh_slope


def _split(a, h):
    return a[:, :h], a[:, h:2 * h], a[:, 2 * h:3 * h], a[:, 3 * h:]


class LSTMSaved(NamedTuple):
    """What the LSTM's forward keeps for its backward (``RecurrentCache.saved``), time-major (the
    module docstring): ``p`` every ``P_t``, its blocks stacked ``(T, 4, N, H)``; ``c`` every cell
    state ``C_t`` ``(T, N, H)``; ``qf`` every ``Q_t`` and forget gate ``F_t`` ``(T, 2, N, H)``."""

    p: Any
    c: Any
    qf: Any


@dataclass(frozen=True, init=False, repr=False)
class LSTM(Recurrent):
    """Long short-term memory, ``(N, T, n_in) → (N, T, H)`` (every hidden state ``H_t``); the
    equations and their backward are in this module's docstring.

    Params ``RecurrentParams``: ``W_x`` ``(4H, n_in)``, ``W_h`` ``(4H, H)``, ``b`` ``(4H,)``, the
    gate blocks stacked along the rows in the order i (input), f (forget), g (candidate),
    o (output), PyTorch's ``weight_ih_l0``/``weight_hh_l0`` layout (its two biases are one ``b``
    here). The initial state ``(H_0, C_0)`` is zeros, or the carried state with ``stateful=N``.

    Initialisation: ``W_x`` Xavier uniform per gate block, ``U(±√(6/(n_in + H)))``; ``W_h`` an
    orthogonal ``H × H`` matrix per gate block; ``b`` zeros except the forget gate's, which starts
    at 1 so ``F = σ(1) ≈ 0.73`` and the cell keeps its memory from the first step of training
    (Gers et al. 2000; Jozefowicz et al. 2015); Keras's defaults (``unit_forget_bias``). Why
    orthogonal: ``RNN``'s docstring.

    Args:
        n_in: features per step.
        n_hidden: ``H``, the hidden units.
        stateful: ``None``, or ``N``: carry ``N`` sequences' final ``(h, c)`` into the next call
            (truncated BPTT, ``recurrent``'s docstring).
        precision: the products' policy (``fnnet.precision``), as ``Dense``.
    """

    gates: ClassVar[int] = 4
    carries: ClassVar[tuple] = ("h", "c")
    bias_in_step: ClassVar[bool] = True

    def __init__(self, n_in, n_hidden, *, stateful=None, precision=None):
        self._setup(n_in, n_hidden, stateful, precision)

    def init(self, key, dtype=jnp.float32):
        W_x, W_h, b = self._init_weights(key, dtype)
        h = self.n_hidden
        return RecurrentParams(W_x=W_x, W_h=W_h, b=b.at[h:2 * h].set(1))  # forget bias 1

    def _scan(self, params, ax, initial):
        policy, h = self.precision, self.n_hidden
        W_h, b = policy.cast(params.W_h), params.b  # cast once, outside the loop

        def step(carry, ax_t):
            h_prev, c_prev = carry
            a_i, a_f, a_g, a_o = _split(ax_t + b + policy.dot(h_prev, W_h, (1, 1)), h)
            i, f, g, o = jax.nn.sigmoid(a_i), jax.nn.sigmoid(a_f), jnp.tanh(a_g), jax.nn.sigmoid(a_o)
            c = f * c_prev + i * g
            tanh_c = jnp.tanh(c)
            h_t = o * tanh_c
            p = jnp.stack([g * sigmoid_slope(i), c_prev * sigmoid_slope(f), i * tanh_slope(g),
                           tanh_c * sigmoid_slope(o)])
            qf = jnp.stack([o * tanh_slope(tanh_c), f])
            return (h_t, c), (h_t, LSTMSaved(p, c, qf))

        final, (hs, saved) = lax.scan(step, initial, ax)
        return final, hs, saved

    def _scan_backward(self, params, cache, dys):
        policy = self.precision
        W_h = policy.cast(params.W_h)
        saved = cache.saved
        dtype = jnp.result_type(dys, saved.c)

        def step(carry, inputs):
            dh_next, dc_next = carry
            dy_t, p_t, qf_t = inputs
            dh = dy_t + dh_next
            dc = dc_next + dh * qf_t[0]
            da = jnp.concatenate([dc * p_t[0], dc * p_t[1], dc * p_t[2], dh * p_t[3]], axis=1)
            return (policy.dot(da, W_h, (1, 0)).astype(dtype), (dc * qf_t[1]).astype(dtype)), da

        zeros = jnp.zeros(saved.c.shape[1:], dtype)
        d_initial, das = lax.scan(step, (zeros, zeros), (dys, saved.p, saved.qf), reverse=True)
        return d_initial, das, das, {}
