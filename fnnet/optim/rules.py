"""The rules: SGD, momentum, Adam, AdamW and RMSProp, each its update equation on one leaf, and the
lookup by name."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp

from .. import checks
from ..layers.embedding import EmbeddingParams
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


def adam_step(p, g, bufs, lr, t, b1, b2, eps):
    """Adam's update of one leaf: ``(new p, {"m", "v"})`` (``adam``'s docstring)."""
    k = (t + 1).astype(p.dtype)
    m = b1 * bufs["m"] + (1 - b1) * g
    v = b2 * bufs["v"] + (1 - b2) * (g * g)
    m_hat = m / (1 - jnp.power(jnp.asarray(b1, p.dtype), k))
    v_hat = v / (1 - jnp.power(jnp.asarray(b2, p.dtype), k))
    return p - lr * m_hat / (jnp.sqrt(v_hat) + eps), {"m": m, "v": v}


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
        return adam_step(p, g, bufs, lr, t, b1, b2, eps)

    hp = {"lr": lr, "b1": b1, "b2": b2, "eps": eps, **_regularisers("adam", weight_decay, l1)}
    return make("adam", hp, schedule, ("m", "v"), rule)


def decayed_leaves(params, embeddings=False):
    """Which leaves AdamW decays: the matrices and kernels (``ndim ≥ 2``), not biases, gains or
    (unless ``embeddings``) the tables of ``Embedding`` and ``PositionEmbedding``. A pytree of
    Python bools shaped like ``params``."""

    def flag(node):
        if isinstance(node, EmbeddingParams):
            return EmbeddingParams(W=embeddings)
        return jnp.ndim(node) >= 2

    return jax.tree_util.tree_map(flag, params,
                                  is_leaf=lambda node: isinstance(node, EmbeddingParams))


def adamw(
    lr,
    betas: tuple = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.01,
    schedule: Schedule | None = None,
    decay_embeddings: bool = False,
) -> Optimizer:
    """AdamW (Loshchilov & Hutter 2019): Adam with the weight decay decoupled from the gradient.

    With ``lr_t = state["lr"] * schedule(t)``, ``(b1, b2) = betas``, ``m`` and ``v`` starting at
    zero and ``k = t + 1``, every leaf takes Adam's step on its own gradient (no decay in ``m``
    or ``v``), and the leaves that decay also shrink toward zero by ``lr_t · weight_decay``::

        m <- b1 * m + (1 - b1) * g
        v <- b2 * v + (1 - b2) * g**2
        p <- p - lr_t * weight_decay * p  -  lr_t * m_hat / (sqrt(v_hat) + eps)     (decayed)
        p <- p                            -  lr_t * m_hat / (sqrt(v_hat) + eps)     (the rest)

    with ``m_hat``, ``v_hat`` as ``adam``'s: PyTorch's ``torch.optim.AdamW`` (the decay scaled
    by the learning rate, so a schedule scales it too). The leaves that decay are the matrices
    (``ndim ≥ 2``: ``Dense`` and attention weights, kernels); biases, LayerNorm gains and
    offsets, and embedding tables (``decay_embeddings=True`` includes them) do not
    (``decayed_leaves``).

    State: ``{"lr", "step", "m", "v"}``.
    """
    check_lr("adamw", lr)
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"adamw: betas must be a pair (b1, b2), got {betas!r}") from None
    checks.real("adamw", "b1", b1, 0, 1, high_open=True)
    checks.real("adamw", "b2", b2, 0, 1, high_open=True)
    checks.real("adamw", "eps", eps, 0, low_open=True)
    checks.real("adamw", "weight_decay", weight_decay, 0)
    decay_embeddings = bool(decay_embeddings)

    def rule(p, g, bufs, lr, t, flag):
        new_p, buffers = adam_step(p, g, bufs, lr, t, b1, b2, eps)
        return (new_p - lr * weight_decay * p if flag and weight_decay else new_p), buffers

    hp = {"lr": lr, "betas": (b1, b2), "eps": eps, "weight_decay": weight_decay,
          "decay_embeddings": decay_embeddings}
    return make("adamw", hp, schedule, ("m", "v"), rule,
                flags=lambda params: decayed_leaves(params, decay_embeddings), decoupled=True)


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

_CONSTRUCTORS = {"sgd": sgd, "momentum": momentum, "adam": adam, "adamw": adamw,
                 "rmsprop": rmsprop}
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
