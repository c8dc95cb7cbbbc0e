"""Optimizers: pure state transitions over any params pytree.

In the style of ``jax.example_libraries.optimizers``: an optimizer is a pair of pure functions,
nothing more::

    opt = adam(1e-3)
    state = opt.init(params)                        # or opt.init(params, lr)
    params, state = opt.update(grads, state, params)

``params`` is any pytree of floating-point arrays (tuples, NamedTuples, dicts, lists, nested);
``grads`` has the same structure. The state is a plain ``dict`` with string keys whose values are
arrays or params-shaped subtrees of arrays::

    state["lr"]     base learning rate, a scalar floating array
    state["step"]   updates applied so far, a scalar int32 array
    ...             the rule's buffers, each shaped like params with the params' dtypes:
                    momentum: "v";  adam: "m", "v";  rmsprop: "s";  sgd: none

so it can be jitted, vmapped, scanned over, and saved to ``.npz`` leaf by leaf.

The learning rate lives in the state, not in the closure, so it may differ along a vmapped model
axis::

    states = jax.vmap(opt.init)(stacked_params, jnp.array([1e-1, 1e-2, 1e-3]))
    stacked_params, states = jax.vmap(opt.update)(stacked_grads, states, stacked_params)

A schedule is a pure function of the step returning a *multiplier* of the base learning rate, so the
base rate can be batched while the schedule stays static. The update at step ``t`` (``t`` counts the
updates already applied; the first update uses ``t = 0``) uses the effective learning rate::

    lr_t = state["lr"] * schedule(t)

Weight decay, where given, is coupled L2: ``g <- g + weight_decay * p`` before the rule, so it also
enters the momentum and second-moment buffers (this is L2 regularisation, not AdamW's decoupled
decay).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "NAMES",
    "Constant",
    "CosineDecay",
    "ExponentialDecay",
    "Optimizer",
    "StepDecay",
    "adam",
    "by_name",
    "constant",
    "cosine_decay",
    "exponential_decay",
    "get",
    "lr_of",
    "momentum",
    "rmsprop",
    "sgd",
    "step_decay",
]

Schedule = Callable[[Any], Any]


class Optimizer(NamedTuple):
    """A pair of pure functions plus a description.

    ``init(params, lr=None) -> state``: zero buffers shaped like ``params``; ``lr`` (a number or a
    scalar array, possibly traced) overrides the constructor's learning rate.

    ``update(grads, state, params) -> (new_params, new_state)``: one step.

    ``name`` is the rule ("sgd", "momentum", "adam", "rmsprop"), ``hyperparams`` the constructor's
    arguments other than the schedule, ``schedule`` the learning-rate multiplier. ``str(opt)`` reads
    like the call that built it. Hashable by identity of its functions, so it can be a static
    argument.
    """

    init: Callable
    update: Callable
    name: str
    hyperparams: dict
    schedule: Schedule

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams.items())
        return f"{self.name}({args}, schedule={self.schedule!r})"

    def __hash__(self) -> int:
        return hash((self.init, self.update))


# ---------------------------------------------------------------------------------------------
# Argument checks (constructor time, on Python values only).


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_lr(where, lr):
    if _is_number(lr) and not (0 <= lr < math.inf):
        raise ValueError(f"{where}: lr must be a finite number >= 0, got {lr!r}")


def _check_unit(where, name, value):
    if not (_is_number(value) and 0 <= value < 1):
        raise ValueError(f"{where}: {name} must be a number in [0, 1), got {value!r}")


def _check_positive(where, name, value):
    if not (_is_number(value) and 0 < value < math.inf):
        raise ValueError(f"{where}: {name} must be a finite number > 0, got {value!r}")


def _check_nonnegative(where, name, value):
    if not (_is_number(value) and 0 <= value < math.inf):
        raise ValueError(f"{where}: {name} must be a finite number >= 0, got {value!r}")


def _check_count(where, name, value, minimum):
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool)) or value < minimum:
        raise ValueError(f"{where}: {name} must be an integer >= {minimum}, got {value!r}")


def _float_dtype():
    """The default floating dtype: float64 when jax_enable_x64 is on, else float32."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


# ---------------------------------------------------------------------------------------------
# Schedules: pure, jittable functions of the step t returning a multiplier of the base lr.
# Frozen dataclasses, so hashable and comparable (safe as static arguments). They broadcast over
# an array of steps, e.g. ``cosine_decay(100)(jnp.arange(100))`` for a plot.


@dataclass(frozen=True)
class Constant:
    """Multiplier 1 at every step."""

    def __call__(self, t):
        return jnp.ones(jnp.shape(t), _float_dtype())


@dataclass(frozen=True)
class StepDecay:
    """Multiplier ``factor ** (t // every)``: multiply by ``factor`` every ``every`` steps."""

    every: int
    factor: float = 0.1

    def __call__(self, t):
        k = jnp.floor_divide(jnp.asarray(t), self.every).astype(_float_dtype())
        return jnp.power(jnp.asarray(self.factor, _float_dtype()), k)


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
        t = jnp.asarray(t).astype(_float_dtype())
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
        t = jnp.asarray(t).astype(_float_dtype())
        return jnp.power(jnp.asarray(self.rate, _float_dtype()), t / self.every)


def constant() -> Constant:
    """Schedule with multiplier 1: the learning rate is ``state["lr"]`` at every step."""
    return Constant()


def step_decay(every: int, factor: float = 0.1) -> StepDecay:
    """Schedule ``factor ** (t // every)``: multiply the learning rate by ``factor`` every
    ``every`` updates (steps 0..every-1 use the base rate)."""
    _check_count("step_decay", "every", every, 1)
    _check_positive("step_decay", "factor", factor)
    return StepDecay(every, factor)


def cosine_decay(total_steps: int, final: float = 0.0, warmup: int = 0) -> CosineDecay:
    """Schedule: optional linear warmup ``t / warmup`` for ``t < warmup``, then cosine from 1 down
    to ``final`` at ``t = total_steps`` (warmup included in ``total_steps``), ``final`` after."""
    _check_count("cosine_decay", "total_steps", total_steps, 1)
    _check_nonnegative("cosine_decay", "final", final)
    _check_count("cosine_decay", "warmup", warmup, 0)
    if warmup >= total_steps:
        raise ValueError(
            f"cosine_decay: warmup must be < total_steps, got warmup={warmup!r}, "
            f"total_steps={total_steps!r}"
        )
    return CosineDecay(total_steps, final, warmup)


def exponential_decay(rate: float, every: int = 1) -> ExponentialDecay:
    """Schedule ``rate ** (t / every)``, with ``0 < rate <= 1``."""
    if not (_is_number(rate) and 0 < rate <= 1):
        raise ValueError(f"exponential_decay: rate must be a number in (0, 1], got {rate!r}")
    _check_count("exponential_decay", "every", every, 1)
    return ExponentialDecay(rate, every)


def lr_of(state, schedule=None):
    """Learning rate from a state.

    With no ``schedule``, the base rate ``state["lr"]``. With a schedule (or an ``Optimizer``,
    whose schedule is used), the effective rate of the *next* update,
    ``state["lr"] * schedule(state["step"])``.
    """
    schedule = getattr(schedule, "schedule", schedule)
    lr = state["lr"]
    if schedule is None:
        return lr
    return lr * jnp.asarray(schedule(state["step"])).astype(lr.dtype)


# ---------------------------------------------------------------------------------------------
# The shared machinery: state layout, weight decay, schedule, dtypes. Each rule is a per-leaf
# function  rule(p, g, buffers, lr, t) -> (new_p, new_buffers)  with g already weight-decayed,
# lr the effective rate in p's dtype, t the int32 count of updates already applied.


def _lr_array(lr, where):
    lr = jnp.asarray(lr)
    if jnp.ndim(lr) != 0:
        raise ValueError(f"{where}: lr must be a scalar, got shape {jnp.shape(lr)}")
    dtype = lr.dtype if jnp.issubdtype(lr.dtype, jnp.floating) else _float_dtype()
    return jax.lax.convert_element_type(lr, dtype)  # strongly typed: state dtypes stay fixed


def _make(name, hyperparams, schedule, slots, rule) -> Optimizer:
    base_lr = hyperparams["lr"]
    weight_decay = hyperparams["weight_decay"]
    schedule = constant() if schedule is None else schedule
    if not callable(schedule):
        raise ValueError(f"{name}: schedule must be callable (t -> multiplier), got {schedule!r}")

    def init(params, lr=None):
        lr = base_lr if lr is None else lr
        _check_lr(name, lr)
        for leaf in jax.tree_util.tree_leaves(params):
            dtype = jnp.result_type(leaf)
            if not jnp.issubdtype(dtype, jnp.floating):
                raise TypeError(f"{name}: params must be floating-point arrays, got dtype {dtype}")
        state = {"lr": _lr_array(lr, name), "step": jnp.zeros((), jnp.int32)}
        for s in slots:
            state[s] = jax.tree_util.tree_map(jnp.zeros_like, params)
        return state

    def update(grads, state, params):
        p_leaves, treedef = jax.tree_util.tree_flatten(params)
        g_leaves = treedef.flatten_up_to(grads)
        bufs = {s: treedef.flatten_up_to(state[s]) for s in slots}
        t = state["step"]
        lr = state["lr"] * jnp.asarray(schedule(t)).astype(state["lr"].dtype)
        new_p, new_bufs = [], {s: [] for s in slots}
        for i, (p, g) in enumerate(zip(p_leaves, g_leaves, strict=True)):
            p = jnp.asarray(p)
            g = jnp.asarray(g).astype(p.dtype)
            if weight_decay:  # static Python float
                g = g + weight_decay * p
            p2, b2 = rule(p, g, {s: bufs[s][i] for s in slots}, lr.astype(p.dtype), t)
            new_p.append(p2.astype(p.dtype))
            for s in slots:
                new_bufs[s].append(b2[s].astype(p.dtype))
        new_state = {"lr": state["lr"], "step": t + 1}
        for s in slots:
            new_state[s] = treedef.unflatten(new_bufs[s])
        return treedef.unflatten(new_p), new_state

    return Optimizer(init, update, name, dict(hyperparams), schedule)


# ---------------------------------------------------------------------------------------------
# The rules.


def sgd(lr, weight_decay: float = 0.0, schedule: Schedule | None = None) -> Optimizer:
    """Stochastic gradient descent.

    With ``lr_t = state["lr"] * schedule(t)`` and coupled L2 ``g <- g + weight_decay * p``::

        p <- p - lr_t * g

    State: ``{"lr", "step"}``.
    """
    _check_lr("sgd", lr)
    _check_nonnegative("sgd", "weight_decay", weight_decay)

    def rule(p, g, bufs, lr, t):
        return p - lr * g, {}

    return _make("sgd", {"lr": lr, "weight_decay": weight_decay}, schedule, (), rule)


def momentum(
    lr,
    beta: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    schedule: Schedule | None = None,
) -> Optimizer:
    """Heavy-ball momentum (the PyTorch form, no dampening), optionally Nesterov.

    With ``lr_t = state["lr"] * schedule(t)``, coupled L2 ``g <- g + weight_decay * p``, and
    ``v`` starting at zero::

        v <- beta * v + g
        p <- p - lr_t * v                   (nesterov=False)
        p <- p - lr_t * (g + beta * v)      (nesterov=True, with the new v)

    State: ``{"lr", "step", "v"}``.
    """
    _check_lr("momentum", lr)
    _check_unit("momentum", "beta", beta)
    _check_nonnegative("momentum", "weight_decay", weight_decay)
    nesterov = bool(nesterov)

    def rule(p, g, bufs, lr, t):
        v = beta * bufs["v"] + g
        step = g + beta * v if nesterov else v
        return p - lr * step, {"v": v}

    hp = {"lr": lr, "beta": beta, "nesterov": nesterov, "weight_decay": weight_decay}
    return _make("momentum", hp, schedule, ("v",), rule)


def adam(
    lr,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    schedule: Schedule | None = None,
) -> Optimizer:
    """Adam (Kingma & Ba 2015, Algorithm 1) with bias correction.

    With ``lr_t = state["lr"] * schedule(t)``, coupled L2 ``g <- g + weight_decay * p``, ``m`` and
    ``v`` starting at zero, and ``k = t + 1`` the 1-based number of this update::

        m <- b1 * m + (1 - b1) * g
        v <- b2 * v + (1 - b2) * g**2
        m_hat = m / (1 - b1**k)
        v_hat = v / (1 - b2**k)
        p <- p - lr_t * m_hat / (sqrt(v_hat) + eps)

    ``eps`` is added *outside* the square root, to the bias-corrected ``sqrt(v_hat)`` (as in the
    paper). The weight decay is L2 through the gradient, not AdamW's decoupled decay.

    State: ``{"lr", "step", "m", "v"}``.
    """
    _check_lr("adam", lr)
    _check_unit("adam", "b1", b1)
    _check_unit("adam", "b2", b2)
    _check_positive("adam", "eps", eps)
    _check_nonnegative("adam", "weight_decay", weight_decay)

    def rule(p, g, bufs, lr, t):
        k = (t + 1).astype(p.dtype)
        m = b1 * bufs["m"] + (1 - b1) * g
        v = b2 * bufs["v"] + (1 - b2) * (g * g)
        m_hat = m / (1 - jnp.power(jnp.asarray(b1, p.dtype), k))
        v_hat = v / (1 - jnp.power(jnp.asarray(b2, p.dtype), k))
        return p - lr * m_hat / (jnp.sqrt(v_hat) + eps), {"m": m, "v": v}

    hp = {"lr": lr, "b1": b1, "b2": b2, "eps": eps, "weight_decay": weight_decay}
    return _make("adam", hp, schedule, ("m", "v"), rule)


def rmsprop(
    lr,
    decay: float = 0.9,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    schedule: Schedule | None = None,
) -> Optimizer:
    """RMSProp (Tieleman & Hinton 2012), no momentum, no centering.

    With ``lr_t = state["lr"] * schedule(t)``, coupled L2 ``g <- g + weight_decay * p``, and ``s``
    starting at zero::

        s <- decay * s + (1 - decay) * g**2
        p <- p - lr_t * g / (sqrt(s) + eps)

    ``eps`` is added *outside* the square root, to ``sqrt(s)`` (as in PyTorch; note that
    ``jax.example_libraries.optimizers.rmsprop`` puts it inside, ``sqrt(s + eps)``).

    State: ``{"lr", "step", "s"}``.
    """
    _check_lr("rmsprop", lr)
    _check_unit("rmsprop", "decay", decay)
    _check_positive("rmsprop", "eps", eps)
    _check_nonnegative("rmsprop", "weight_decay", weight_decay)

    def rule(p, g, bufs, lr, t):
        s = decay * bufs["s"] + (1 - decay) * (g * g)
        return p - lr * g / (jnp.sqrt(s) + eps), {"s": s}

    hp = {"lr": lr, "decay": decay, "eps": eps, "weight_decay": weight_decay}
    return _make("rmsprop", hp, schedule, ("s",), rule)


# ---------------------------------------------------------------------------------------------
# Lookup by name (for a CLI).

_CONSTRUCTORS = {"sgd": sgd, "momentum": momentum, "adam": adam, "rmsprop": rmsprop}
NAMES = tuple(_CONSTRUCTORS)


def get(name: str, lr, **options) -> Optimizer:
    """The optimizer called ``name`` (one of ``NAMES``) with base learning rate ``lr``.

    ``get("adam", 1e-3, b1=0.8)`` is ``adam(1e-3, b1=0.8)``; ``options`` are the constructor's
    keyword arguments, and one it does not take is a ``TypeError`` listing those it does.
    """
    try:
        constructor = _CONSTRUCTORS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(NAMES)}") from None
    accepted = [arg for arg in inspect.signature(constructor).parameters if arg != "lr"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(
            f"{name}: unexpected argument(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}"
        )
    return constructor(lr, **options)


by_name = get
"""The old name of ``get``."""
