"""Gradient clipping by the global norm: a wrapper around any optimizer.

``clip_by_global_norm(optimizer, max_norm)`` is an ``Optimizer`` whose update first rescales the
gradients as one vector, every leaf by the same factor::

    ‖g‖₂ = √(Σ_leaves Σ_entries g²)                  (the global norm, in float32)
    g ← g · min(1, max_norm / ‖g‖₂)

and then runs the wrapped optimizer's update on them. The direction of the step is kept; only its
length is bounded (Pascanu, Mikolov & Bengio 2013, for recurrent networks whose gradients
explode). Gradients whose norm is at most ``max_norm`` reach the wrapped optimizer unchanged, bit
for bit (the factor is exactly 1).

The state is the wrapped optimizer's own (``init`` is its ``init``), so everything that reads a
state (``lr_of``, checkpoints, ``jax.vmap`` over a model axis) works unchanged. Being the
gradients' first transformation, it composes with every rule, schedule and weight decay (the
decay is added by the rule, after clipping), and with loss scaling, whose gradients are unscaled
before any optimizer sees them.

The norm is computed in float32 whatever the gradients' dtype, and without overflow: with
``m = max |g|`` over every entry, ``‖g‖₂ = m √(Σ (g/m)²)``, and the factor is formed as
``(max_norm / m) / √(Σ (g/m)²)``, so float32 gradients whose squares would overflow (entries
beyond ~1.8e19) are still clipped correctly. Non-finite gradients (NaN or ±inf anywhere) are
passed through unscaled, as the wrapped optimizer would have seen them: clipping never turns a
finite gradient into a non-finite one, nor hides a non-finite one (loss scaling's overflow check
still sees it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import checks
from .base import Optimizer

__all__ = ["ClippedOptimizer", "clip_by_global_norm", "clip_factor", "global_norm"]


class ClippedOptimizer(Optimizer):
    """An ``Optimizer`` whose gradients are clipped by their global norm before the wrapped
    optimizer's update: ``name`` is ``"clip_by_global_norm"``, ``hyperparams`` holds the wrapped
    ``optimizer`` and ``max_norm``, ``schedule`` is the wrapped optimizer's. ``str`` and ``repr``
    read like the call that built it, naming both."""

    __slots__ = ()

    @property
    def wrapped(self) -> Optimizer:
        """The optimizer whose update runs on the clipped gradients."""
        return self.hyperparams["optimizer"]

    @property
    def max_norm(self) -> float:
        return self.hyperparams["max_norm"]

    def __str__(self) -> str:
        return f"clip_by_global_norm({self.wrapped}, max_norm={self.max_norm!r})"

    __repr__ = __str__

    def __hash__(self) -> int:
        return hash((self.init, self.update))


def _norm_parts(grads):
    """``(peak, m, r, ok)`` with ``‖g‖₂ = m · r`` where ``ok``: ``peak = max |g|`` over every
    entry of every leaf (NaN if any entry is), ``ok`` where it is finite and > 0, ``m`` the peak
    where ``ok`` (else 1), ``r = √(Σ (g/m)²)`` (in ``[1, √n]`` where ``ok``); all float32.
    Nothing is squared before it is divided by ``m``, so nothing overflows."""
    leaves = [jnp.asarray(g).astype(jnp.float32) for g in jax.tree_util.tree_leaves(grads)]
    if not leaves:
        zero = jnp.float32(0)
        return zero, jnp.float32(1), zero, jnp.array(False)
    peak = jnp.max(jnp.stack([jnp.max(jnp.abs(g), initial=0.0) for g in leaves]))
    ok = jnp.isfinite(peak) & (peak > 0)
    m = jnp.where(ok, peak, jnp.float32(1))
    r = jnp.sqrt(sum(jnp.sum(jnp.square(g / m)) for g in leaves))
    return peak, m, r, ok


def global_norm(grads):
    """``‖g‖₂`` over every entry of every leaf of ``grads``, a float32 scalar, computed without
    overflowing in the squares (module docstring): 0 for zero gradients or no leaves, inf or NaN
    where an entry is."""
    peak, m, r, ok = _norm_parts(grads)
    return jnp.where(ok, m * r, peak)


def clip_factor(grads, max_norm):
    """``min(1, max_norm / ‖g‖₂)`` as a float32 scalar, formed as ``(max_norm / m) / r``
    (``_norm_parts``): exactly 1 when ``‖g‖₂ ≤ max_norm``, for zero gradients and for
    non-finite ones (module docstring)."""
    _, m, r, ok = _norm_parts(grads)
    factor = (jnp.float32(max_norm) / m) / r
    return jnp.where(ok & jnp.isfinite(r) & (factor < 1), factor, jnp.float32(1))


def clip_by_global_norm(optimizer: Optimizer, max_norm) -> ClippedOptimizer:
    """``optimizer`` with its gradients first rescaled by ``min(1, max_norm / ‖g‖₂)``, the
    global norm ``‖g‖₂`` over every leaf computed in float32 (module docstring).

    Args:
        optimizer: any ``fnnet.optim.Optimizer`` (a rule, a scheduled rule, or another wrapper).
        max_norm: the largest global norm let through, a finite number > 0.

    Returns:
        A ``ClippedOptimizer`` (an ``Optimizer``): ``init`` is the wrapped optimizer's, ``update``
        clips then updates; jittable and vmappable like every optimizer. ``str`` reads
        ``clip_by_global_norm(adam(lr=0.001, ...), max_norm=1.0)``.
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"clip_by_global_norm: optimizer must be an fnnet.optim.Optimizer such as "
                        f"fnnet.optim.adam(1e-3), got {optimizer!r}")
    max_norm = checks.real("clip_by_global_norm", "max_norm", max_norm, 0, low_open=True)
    inner_update = optimizer.update

    def update(grads, state, params):
        factor = clip_factor(grads, max_norm)
        clipped = jax.tree_util.tree_map(
            lambda g: jnp.asarray(g) * factor.astype(jnp.result_type(g)), grads)
        return inner_update(clipped, state, params)

    return ClippedOptimizer(optimizer.init, update, "clip_by_global_norm",
                            {"optimizer": optimizer, "max_norm": max_norm}, optimizer.schedule)
