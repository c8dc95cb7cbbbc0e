"""Batch and layer normalisation, each with its backward derived by hand.

Derivation (beyond the notes; cs231n's ``batchnorm_backward`` and ``batchnorm_backward_alt`` derive
the same two forms). Normalise ``X`` over a set of axes holding ``m`` values per feature::

    μ = (1/m) Σ X          X_c = X − μ          σ² = (1/m) Σ X_c²          (biased)
    s = 1/√(σ² + ε)        X̂ = X_c · s          Y = γ ⊙ X̂ + β

Parameters: ``dγ = Σ dY ⊙ X̂``, ``dβ = Σ dY`` (sums over the normalised axes, and for layer norm
over the batch too). For the input, with ``dX̂ = dY ⊙ γ``:

*Step by step through the graph* (``normalize_backward_staged``), each line the chain rule of one
node, reverse order::

    ds   = Σ dX̂ ⊙ X_c                       (X̂ = X_c · s)
    dX_c = dX̂ · s                            (the direct path)
    dσ²  = ds · (−½) s³                      (s = (σ² + ε)^(−½))
    dX_c += (2/m) X_c · dσ²                  (σ² = (1/m) Σ X_c²)
    dμ   = −Σ dX_c                           (X_c = X − μ)
    dX   = dX_c + dμ/m                       (μ = (1/m) Σ X)

*Simplified* (``normalize_backward``): substituting ``X_c = X̂/s`` and collecting terms, everything
but ``dX̂``, ``X̂`` and ``s`` cancels::

    dX = (s/m) · (m dX̂ − Σ dX̂ − X̂ ⊙ Σ(dX̂ ⊙ X̂))

which for batch norm, where ``γ`` is constant along the normalised axes, is
``dX = (γ/σ)/N · (N·dY − ΣdY − X̂·Σ(dY·X̂))``. Both forms are exact; the tests show they agree.

Batch norm normalises every axis but the last (the batch, and space for images) and keeps
running statistics for inference; layer norm normalises the last axis, per example, the same in
training and inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..checks import choice, integer, real
from ..pytrees import register_namedtuple
from .base import Layer
from .checks import check_dy, check_floating, check_param, check_params_type


@register_namedtuple
class NormParams(NamedTuple):
    """Parameters of ``BatchNorm`` and ``LayerNorm``: scale ``gamma`` (ones) and shift ``beta``
    (zeros), each of shape ``(num_features,)``."""

    gamma: Any
    beta: Any


class NormCache(NamedTuple):
    """What a normalising forward keeps: ``X̂``, ``s = 1/√(σ² + ε)`` and ``X_c``, plus the batch
    mean and variance (for the running statistics)."""

    x_hat: Any
    inv_std: Any
    x_centred: Any
    mean: Any
    var: Any


def normalize(x, axes, eps):
    """``NormCache`` of ``x`` normalised over ``axes`` (statistics kept with their axes)."""
    mean = jnp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    var = jnp.mean(centred * centred, axis=axes, keepdims=True)
    inv_std = 1 / jnp.sqrt(var + eps)
    return NormCache(centred * inv_std, inv_std, centred, mean, var)


def normalize_backward(dx_hat, cache, axes):
    """The simplified form: ``dX = (s/m) (m dX̂ − Σ dX̂ − X̂ ⊙ Σ(dX̂ ⊙ X̂))``."""
    m = math.prod(dx_hat.shape[a] for a in axes)
    total = jnp.sum(dx_hat, axis=axes, keepdims=True)
    projection = jnp.sum(dx_hat * cache.x_hat, axis=axes, keepdims=True)
    return (cache.inv_std / m) * (m * dx_hat - total - cache.x_hat * projection)


def normalize_backward_staged(dx_hat, cache, axes):
    """The step-by-step form through the computational graph (module docstring)."""
    m = math.prod(dx_hat.shape[a] for a in axes)
    d_inv_std = jnp.sum(dx_hat * cache.x_centred, axis=axes, keepdims=True)
    d_centred = dx_hat * cache.inv_std
    d_var = d_inv_std * (-0.5) * cache.inv_std ** 3
    d_centred = d_centred + (2.0 / m) * cache.x_centred * d_var
    d_mean = -jnp.sum(d_centred, axis=axes, keepdims=True)
    return d_centred + d_mean / m


def _check(layer, params, x, num_features, min_ndim=2):
    check_floating(layer, x)
    check_params_type(layer, params, NormParams)
    if jnp.ndim(x) < min_ndim or jnp.shape(x)[-1] != num_features:
        shape = f"(N, ..., {num_features})" if min_ndim == 2 else (
            f"(..., {num_features}): any leading axes, ({num_features},) included")
        raise ValueError(f"{layer}: expected input of shape {shape} (features last), got shape "
                         f"{tuple(jnp.shape(x))}")
    check_param(layer, "gamma", params.gamma, (num_features,))
    check_param(layer, "beta", params.beta, (num_features,))


def _init(num_features, dtype):
    return NormParams(jnp.ones((num_features,), dtype), jnp.zeros((num_features,), dtype))


def _param_grads(dy, cache, axes):
    return NormParams(gamma=jnp.sum(dy * cache.x_hat, axis=axes),
                      beta=jnp.sum(dy, axis=axes))


BACKWARD_FORMS = {"simplified": normalize_backward, "staged": normalize_backward_staged}


@dataclass(frozen=True, init=False)
class BatchNorm(Layer):
    """Batch normalisation over every axis but the last: the batch for ``(N, F)``, batch and space
    for ``(N, H, W, C)``. Derivation: this module's docstring.

    Training (``train=True``) normalises with the batch's mean and biased variance; inference
    with the running statistics in ``state`` (``{"mean", "var"}``, from ``init_state``: zeros
    and ones), which ``next_state`` moves towards each training batch's::

        mean ← momentum · mean + (1 − momentum) · μ_B,   var ← momentum · var + (1 − momentum) · σ²_B

    Args:
        num_features: the size of the last axis.
        momentum: the running statistics' decay, in ``[0, 1)``.
        eps: added to the variance, > 0.
        backward_form: ``"simplified"`` (the default) or ``"staged"``: the two derivations.
    """

    num_features: int
    momentum: float
    eps: float
    backward_form: str

    def __init__(self, num_features, momentum=0.9, eps=1e-5, backward_form="simplified"):
        object.__setattr__(self, "num_features", integer("BatchNorm", "num_features",
                                                         num_features))
        object.__setattr__(self, "momentum", real("BatchNorm", "momentum", momentum, 0, 1,
                                                  high_open=True))
        object.__setattr__(self, "eps", real("BatchNorm", "eps", eps, 0, low_open=True))
        object.__setattr__(self, "backward_form", choice("BatchNorm", "backward_form",
                                                         backward_form, BACKWARD_FORMS))

    def __repr__(self):
        return f"BatchNorm({self.num_features})"

    def init(self, key, dtype=jnp.float32):
        return _init(self.num_features, dtype)

    def init_state(self, dtype=jnp.float32):
        """The running statistics: ``{"mean": zeros, "var": ones}``, each ``(num_features,)``."""
        return {"mean": jnp.zeros((self.num_features,), dtype),
                "var": jnp.ones((self.num_features,), dtype)}

    def _inference_cache(self, x, state):
        if not isinstance(state, dict) or set(state) != {"mean", "var"}:
            raise ValueError(f"{self}: inference (train=False) uses the running statistics: pass "
                             f"state= (from model.init_state(), updated by training)")
        self._check_state(state)
        inv_std = 1 / jnp.sqrt(state["var"] + self.eps)
        return NormCache((x - state["mean"]) * inv_std, inv_std, None, None, None)

    def _check_state(self, state):
        """The running statistics checked as params are: each ``(num_features,)`` (never
        broadcast), and a variance that is not negative where it can be seen (concrete)."""
        if set(state) != {"mean", "var"}:
            raise ValueError(f"{self}: state must be {{'mean', 'var'}} (from init_state()), got "
                             f"keys {sorted(state)}")
        for name in ("mean", "var"):
            check_param(self, f"state[{name!r}]", state[name], (self.num_features,))
        var = state["var"]
        if not isinstance(var, jax.core.Tracer) and np.any(np.asarray(var) < 0):
            raise ValueError(f"{self}: state['var'] holds negative variances (the smallest "
                             f"{float(np.min(np.asarray(var))):g}); expected running variances "
                             f">= 0")

    def forward(self, params, x, *, state=(), key=None, train=True):
        _check(self, params, x, self.num_features)
        if isinstance(state, dict) and state:
            self._check_state(state)
        axes = tuple(range(jnp.ndim(x) - 1))
        cache = normalize(x, axes, self.eps) if train else self._inference_cache(x, state)
        return params.gamma * cache.x_hat + params.beta, cache

    def apply(self, params, x, *, state=(), key=None, train=False):
        return self.forward(params, x, state=state, train=train)[0]

    def backward(self, params, cache, dy):
        """``dγ = Σ dY ⊙ X̂``, ``dβ = Σ dY``; in training ``dX`` by the chosen form (module
        docstring) with ``dX̂ = dY ⊙ γ``; at inference the statistics are constants, so
        ``dX = dY ⊙ γ ⊙ s``."""
        check_dy(self, dy, cache.x_hat.shape)
        axes = tuple(range(dy.ndim - 1))
        dx_hat = dy * params.gamma
        if cache.x_centred is None:
            dx = dx_hat * cache.inv_std
        else:
            dx = BACKWARD_FORMS[self.backward_form](dx_hat, cache, axes)
        return _param_grads(dy, cache, axes), dx

    def next_state(self, state, cache):
        """The running statistics after a training batch (unchanged after an inference one, and
        ``()`` stays ``()``)."""
        if cache.mean is None or not isinstance(state, dict):
            return state
        keep = self.momentum
        return {"mean": keep * state["mean"] + (1 - keep) * cache.mean.reshape(-1),
                "var": keep * state["var"] + (1 - keep) * cache.var.reshape(-1)}


@dataclass(frozen=True, init=False)
class LayerNorm(Layer):
    """Layer normalisation over the last axis, per example, the same in training and inference.
    Derivation: this module's docstring (``m`` is the number of features).

    Any number of leading axes: ``(N, F)``, one example ``(F,)``, or ``(N, T, ..., F)``, where
    each position (each step of a sequence) is normalised on its own over its ``F`` features,
    and ``γ``, ``β`` are shared by every position.

    Args:
        num_features: the size of the last axis.
        eps: added to the variance, > 0.
    """

    num_features: int
    eps: float

    def __init__(self, num_features, eps=1e-5):
        object.__setattr__(self, "num_features", integer("LayerNorm", "num_features",
                                                         num_features))
        object.__setattr__(self, "eps", real("LayerNorm", "eps", eps, 0, low_open=True))

    def __repr__(self):
        return f"LayerNorm({self.num_features})"

    def init(self, key, dtype=jnp.float32):
        return _init(self.num_features, dtype)

    def forward(self, params, x, *, state=(), key=None, train=True):
        _check(self, params, x, self.num_features, min_ndim=1)
        cache = normalize(x, (jnp.ndim(x) - 1,), self.eps)
        return params.gamma * cache.x_hat + params.beta, cache

    def apply(self, params, x, *, state=(), key=None, train=False):
        return self.forward(params, x)[0]

    def backward(self, params, cache, dy):
        """``dγ = Σ dY ⊙ X̂`` and ``dβ = Σ dY`` over every axis but the last (every leading
        position shares ``γ`` and ``β``, so their gradients sum over all of them: ``Σ_{n,t}``
        for ``(N, T, F)``); ``dX`` by the simplified form over the last axis with
        ``dX̂ = dY ⊙ γ``, each position on its own (``m = F``)."""
        check_dy(self, dy, cache.x_hat.shape)
        dx = normalize_backward(dy * params.gamma, cache, (dy.ndim - 1,))
        return _param_grads(dy, cache, tuple(range(dy.ndim - 1))), dx
