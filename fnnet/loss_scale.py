"""Loss scaling for float16 products: a pure state transition beside the precision policy.

float16's smallest normal number is 6.1e-5, and the gradients of a loss averaged over a batch are
smaller than that: they underflow. Scaling the loss by ``S`` scales every gradient of the
backward by ``S`` (the backward is linear in its seed ``dL/dZ``), so they stay representable; the
gradients are divided by ``S`` in float32 before the update::

    loss_S = S · L          dW_S = S · dW          dW = dW_S / S

``S`` is a power of two, so scaling and unscaling are exact. A step whose unscaled gradients are
not all finite overflowed: it is skipped (no update) and ``S`` is halved; after
``growth_interval`` finite steps in a row ``S`` doubles (``DynamicLossScale``, PyTorch
``GradScaler``'s defaults). bfloat16 has float32's exponent range and needs none.

Used the way DeepMind's ``jmp`` uses its loss scales, as a piece of its own that composes with any
policy, loss and optimizer: ``scaled(loss, state)`` is the loss whose value and gradients are
``S`` times the loss's (so ``fnnet.loss_output_and_grad`` of it gives ``S·L`` and ``S·dW``),
``unscale`` divides them back, ``all_finite`` says whether to apply the update, and ``update``
moves the scale. ``fnnet.train_step(..., loss_scale=DynamicLossScale())`` does exactly that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from . import losses as _losses
from .pytrees import register_namedtuple

__all__ = ["DynamicLossScale", "LossScaleState", "ScaledLoss", "all_finite", "default_for",
           "get", "scaled", "unscale"]


@register_namedtuple
class LossScaleState(NamedTuple):
    """The scale ``S`` and the count of finite steps since it last changed (a pytree)."""

    scale: Any
    good_steps: Any


@dataclass(frozen=True)
class DynamicLossScale:
    """Dynamic loss scaling: start at ``initial``; after a step with non-finite gradients
    multiply by ``backoff`` and skip the step; after ``growth_interval`` finite steps in a row
    multiply by ``growth``. The defaults are PyTorch's ``GradScaler``'s.

    Raises:
        ValueError: ``initial`` not a finite number > 0 that float32 can hold, ``growth < 1``,
            ``backoff`` outside ``(0, 1)``, or ``growth_interval`` not a positive integer.
    """

    initial: float = 2.0 ** 15
    growth: float = 2.0
    backoff: float = 0.5
    growth_interval: int = 2000

    def __post_init__(self):
        for name in ("initial", "growth", "backoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"DynamicLossScale: {name} must be a number, got {value!r}")
        if not (0 < self.initial <= float(jnp.finfo(jnp.float32).max)
                and math.isfinite(self.initial)):
            raise ValueError(f"DynamicLossScale: initial must be a finite number > 0 within "
                             f"float32's range, got {self.initial!r}")
        if not self.growth >= 1 or not 0 < self.backoff < 1:
            raise ValueError(f"DynamicLossScale: expected growth >= 1 and 0 < backoff < 1, got "
                             f"growth={self.growth!r}, backoff={self.backoff!r}")
        interval = self.growth_interval
        if isinstance(interval, bool) or int(interval) != interval or interval < 1:
            raise ValueError(f"DynamicLossScale: growth_interval must be a positive integer, "
                             f"got {interval!r}")

    def init(self):
        """The scale's state at the first step."""
        return LossScaleState(jnp.asarray(self.initial, jnp.float32), jnp.zeros((), jnp.int32))

    def update(self, state, finite):
        """The state after a step whose gradients were (``finite``) or were not all finite."""
        scale, good = state
        grow = finite & (good + 1 >= self.growth_interval)
        new_scale = jnp.where(finite, jnp.where(grow, scale * self.growth, scale),
                              jnp.maximum(scale * self.backoff, 1.0))
        new_scale = jnp.where(jnp.isfinite(new_scale), new_scale, scale)
        return LossScaleState(new_scale.astype(jnp.float32),
                              jnp.where(finite & ~grow, good + 1, 0).astype(jnp.int32))


def default_for(policy):
    """The loss scale a precision policy trains with when none is named: dynamic for float16
    products, none otherwise (``policy`` a ``fnnet.precision.Policy`` or ``None``: no policy
    named, so none; a model built under float16 beforehand needs its scale named)."""
    if policy is not None and policy.compute is not None and \
            jnp.dtype(policy.compute) == jnp.dtype(jnp.float16):
        return DynamicLossScale()
    return None


def get(loss_scale, policy=None):
    """``loss_scale`` as ``fit`` takes it: a ``DynamicLossScale``, ``None`` for none, or
    ``"auto"`` for ``default_for(policy)``."""
    if isinstance(loss_scale, str) and loss_scale == "auto":
        return default_for(policy)
    if loss_scale is None or isinstance(loss_scale, DynamicLossScale):
        return loss_scale
    raise TypeError(f"loss_scale must be 'auto', None or an fnnet.loss_scale.DynamicLossScale, "
                    f"got {loss_scale!r}")


@dataclass(frozen=True, eq=False)
class ScaledLoss(_losses.Loss):
    """``factor ×`` a loss: value, gradient and fused gradient (the backward's seed) are the
    loss's times ``factor``; targets and the fused output pairing are the loss's own."""

    base: _losses.Loss = None
    factor: Any = field(default=None, repr=False)

    @property
    def fused_activation(self):
        return self.base.fused_activation

    def targets(self, y_pred, y_true):
        return self.base.targets(y_pred, y_true)

    def _times(self, value):
        return value * jnp.asarray(self.factor).astype(value.dtype)

    def value(self, y_pred, y_true):
        return self._times(self.base.value(y_pred, y_true))

    def grad(self, y_pred, y_true):
        return self._times(self.base.grad(y_pred, y_true))

    def value_from_logits(self, z, y_true):
        return self._times(self.base.value_from_logits(z, y_true))

    def fused_grad(self, a, y_true):
        return self._times(self.base.fused_grad(a, y_true))


def scaled(loss, state):
    """The loss times the scale ``S`` of ``state`` (a ``LossScaleState``)."""
    base = _losses.get(loss)
    return ScaledLoss(base.name, base.integer_labels, base=base, factor=state.scale)


def unscale(tree, state):
    """Every leaf of ``tree`` (the scaled loss, its gradients) divided by ``S``, in the leaf's
    own float dtype."""
    return jax.tree_util.tree_map(lambda a: a / state.scale.astype(a.dtype), tree)


def all_finite(tree):
    """Whether every entry of every leaf of ``tree`` is finite (a scalar bool)."""
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)
