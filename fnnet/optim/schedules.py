"""Learning-rate schedules: pure, jittable functions of the step ``t`` returning a multiplier of
the base rate. Frozen dataclasses, so hashable and comparable (safe as static arguments). They
broadcast over an array of steps, e.g. ``cosine_decay(100)(jnp.arange(100))`` for a plot."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from .. import checks


def float_dtype():
    """The default floating dtype: float64 when jax_enable_x64 is on, else float32."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


@dataclass(frozen=True)
class Constant:
    """Multiplier 1 at every step."""

    def __call__(self, t):
        return jnp.ones(jnp.shape(t), float_dtype())


@dataclass(frozen=True)
class StepDecay:
    """Multiplier ``factor ** (t // every)``: multiply by ``factor`` every ``every`` steps."""

    every: int
    factor: float = 0.1

    def __call__(self, t):
        k = jnp.floor_divide(jnp.asarray(t), self.every).astype(float_dtype())
        return jnp.power(jnp.asarray(self.factor, float_dtype()), k)


@dataclass(frozen=True)
class CosineDecay:
    """Linear warmup then cosine decay from 1 to ``final``; ``final`` from ``total_steps`` on.

    For ``t < warmup``: ``t / warmup`` (so the first update, t = 0, has multiplier 0).
    Then, with ``u = clip((t - warmup) / (total_steps - warmup), 0, 1)``:
    ``final + (1 - final) * (1 + cos(pi * u)) / 2``, which is 1 at ``t = warmup`` and ``final`` at
    ``t >= total_steps``. ``total_steps`` counts the warmup steps.
    """

    total_steps: int
    final: float = 0.0
    warmup: int = 0

    def __call__(self, t):
        t = jnp.asarray(t).astype(float_dtype())
        u = jnp.clip((t - self.warmup) / (self.total_steps - self.warmup), 0.0, 1.0)
        cos = self.final + (1.0 - self.final) * 0.5 * (1.0 + jnp.cos(jnp.pi * u))
        if self.warmup == 0:
            return cos
        return jnp.where(t < self.warmup, t / self.warmup, cos)


@dataclass(frozen=True)
class ExponentialDecay:
    """Multiplier ``rate ** (t / every)`` (smooth, not staircase)."""

    rate: float
    every: int = 1

    def __call__(self, t):
        t = jnp.asarray(t).astype(float_dtype())
        return jnp.power(jnp.asarray(self.rate, float_dtype()), t / self.every)


def constant() -> Constant:
    """Schedule with multiplier 1: the learning rate is ``state["lr"]`` at every step."""
    return Constant()


def step_decay(every: int, factor: float = 0.1) -> StepDecay:
    """Schedule ``factor ** (t // every)``: multiply the learning rate by ``factor`` every
    ``every`` updates (steps 0..every-1 use the base rate)."""
    checks.integer("step_decay", "every", every, minimum=1)
    checks.real("step_decay", "factor", factor, 0, low_open=True)
    return StepDecay(every, factor)


def cosine_decay(total_steps: int, final: float = 0.0, warmup: int = 0) -> CosineDecay:
    """Schedule: optional linear warmup ``t / warmup`` for ``t < warmup``, then cosine from 1 down
    to ``final`` at ``t = total_steps`` (warmup included in ``total_steps``), ``final`` after."""
    checks.integer("cosine_decay", "total_steps", total_steps, minimum=1)
    checks.real("cosine_decay", "final", final, 0)
    checks.integer("cosine_decay", "warmup", warmup, minimum=0)
    if warmup >= total_steps:
        raise ValueError(
            f"cosine_decay: warmup must be < total_steps, got warmup={warmup!r}, "
            f"total_steps={total_steps!r}"
        )
    return CosineDecay(total_steps, final, warmup)


def exponential_decay(rate: float, every: int = 1) -> ExponentialDecay:
    """Schedule ``rate ** (t / every)``, with ``0 < rate <= 1``."""
    checks.real("exponential_decay", "rate", rate, 0, 1, low_open=True)
    checks.integer("exponential_decay", "every", every, minimum=1)
    return ExponentialDecay(rate, every)

