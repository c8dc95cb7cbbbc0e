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
    ...             the rule's buffers, each shaped like params, in the params' dtype but at
                    least float32 (``compute_dtype``):
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
decay; ``adamw`` decouples it). L1 regularisation, ``l1``, adds the gradient of ``l1 · Σ|p|`` the same way:
``g <- g + l1 * sign(p)`` (the subgradient 0 at ``p = 0``).

Low-precision params (bfloat16, float16) are updated in float32 arithmetic and rounded back to
their dtype, and their buffers are kept in float32 (``base.compute_dtype``).

Gradient clipping wraps any optimizer: ``clip_by_global_norm(adam(1e-3), 1.0)`` rescales the
gradients by ``min(1, max_norm / ‖g‖₂)`` (the global norm over every leaf, in float32) before the
wrapped update; its state is the wrapped optimizer's, and ``str`` names both.

Modules: ``base`` (the ``Optimizer`` pair and the machinery every rule shares), ``schedules``,
``rules`` (the five rules and the lookup by name), ``clip`` (``clip_by_global_norm``).
"""

from .base import Optimizer, compute_dtype, lr_of
from .clip import ClippedOptimizer, clip_by_global_norm, global_norm
from .rules import NAMES, adam, adamw, decayed_leaves, get, momentum, rmsprop, sgd
from .schedules import (
    Constant,
    CosineDecay,
    ExponentialDecay,
    StepDecay,
    constant,
    cosine_decay,
    exponential_decay,
    step_decay,
)

__all__ = [
    "NAMES",
    "ClippedOptimizer",
    "Constant",
    "CosineDecay",
    "ExponentialDecay",
    "Optimizer",
    "StepDecay",
    "adam",
    "adamw",
    "decayed_leaves",
    "clip_by_global_norm",
    "compute_dtype",
    "constant",
    "cosine_decay",
    "exponential_decay",
    "get",
    "global_norm",
    "lr_of",
    "momentum",
    "rmsprop",
    "sgd",
    "step_decay",
]
