"""The rules: SGD, momentum, Adam and RMSProp, each its update equation on one leaf, and the
lookup by name."""

from __future__ import annotations

import inspect

import jax.numpy as jnp

from .. import checks
from .base import Optimizer, Schedule, check_lr, make


def _regularisers(name, weight_decay, l1):
    """The checked regularisation hyperparameters; ``l1`` listed only when it is used."""
    checks.real(name, "weight_decay", weight_decay, 0)
    checks.real(name, "l1", l1, 0)
    return {"weight_decay": weight_decay, **({"l1": l1} if l1 else {})}


def sgd(lr, weight_decay: float = 0.0, schedule: Schedule | None = None,
        l1: float = 0.0) -> Optimizer:
    """Stochastic gradient descent.

    With ``lr_t = state["lr"] * schedule(t)`` and coupled L2 ``g <- g + weight_decay * p``::

        p <- p - lr_t * g

    State: ``{"lr", "step"}``.
    """
    check_lr("sgd", lr)

    def rule(p, g, bufs, lr, t):
        return p - lr * g, {}

    return make("sgd", {"lr": lr, **_regularisers("sgd", weight_decay, l1)}, schedule, (), rule)


def momentum(
    lr,
    beta: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    schedule: Schedule | None = None,
    l1: float = 0.0,
) -> Optimizer:
    """Heavy-ball momentum (the PyTorch form, no dampening), optionally Nesterov.

    With ``lr_t = state["lr"] * schedule(t)``, coupled L2 ``g <- g + weight_decay * p``, and
    ``v`` starting at zero::

        v <- beta * v + g
        p <- p - lr_t * v                   (nesterov=False)
        p <- p - lr_t * (g + beta * v)      (nesterov=True, with the new v)

    State: ``{"lr", "step", "v"}``.
    """
    check_lr("momentum", lr)
    checks.real("momentum", "beta", beta, 0, 1, high_open=True)
    nesterov = bool(nesterov)

    def rule(p, g, bufs, lr, t):
        v = beta * bufs["v"] + g
        step = g + beta * v if nesterov else v
        return p - lr * step, {"v": v}

    hp = {"lr": lr, "beta": beta, "nesterov": nesterov, **_regularisers("momentum", weight_decay, l1)}
    return make("momentum", hp, schedule, ("v",), rule)


def adam(
    lr,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    schedule: Schedule | None = None,
    l1: float = 0.0,
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
    check_lr("adam", lr)
    checks.real("adam", "b1", b1, 0, 1, high_open=True)
    checks.real("adam", "b2", b2, 0, 1, high_open=True)
    checks.real("adam", "eps", eps, 0, low_open=True)

    def rule(p, g, bufs, lr, t):
        k = (t + 1).astype(p.dtype)
        m = b1 * bufs["m"] + (1 - b1) * g
        v = b2 * bufs["v"] + (1 - b2) * (g * g)
        m_hat = m / (1 - jnp.power(jnp.asarray(b1, p.dtype), k))
        v_hat = v / (1 - jnp.power(jnp.asarray(b2, p.dtype), k))
        return p - lr * m_hat / (jnp.sqrt(v_hat) + eps), {"m": m, "v": v}

    hp = {"lr": lr, "b1": b1, "b2": b2, "eps": eps, **_regularisers("adam", weight_decay, l1)}
    return make("adam", hp, schedule, ("m", "v"), rule)


def rmsprop(
    lr,
    decay: float = 0.9,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    schedule: Schedule | None = None,
    l1: float = 0.0,
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
    check_lr("rmsprop", lr)
    checks.real("rmsprop", "decay", decay, 0, 1, high_open=True)
    checks.real("rmsprop", "eps", eps, 0, low_open=True)

    def rule(p, g, bufs, lr, t):
        s = decay * bufs["s"] + (1 - decay) * (g * g)
        return p - lr * g / (jnp.sqrt(s) + eps), {"s": s}

    hp = {"lr": lr, "decay": decay, "eps": eps, **_regularisers("rmsprop", weight_decay, l1)}
    return make("rmsprop", hp, schedule, ("s",), rule)


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
