"""The optimizer's shape: a pair of pure functions, the state they share, and the machinery
every rule is written on (state layout, weight decay, schedule, dtypes)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .. import checks
from .schedules import constant, float_dtype

Schedule = Callable[[Any], Any]


class Optimizer(NamedTuple):
    """A pair of pure functions plus a description.

    ``init(params, lr=None) -> state``: zero buffers shaped like ``params``; ``lr`` (a number or a
    scalar array, possibly traced) overrides the constructor's learning rate.

    ``update(grads, state, params) -> (new_params, new_state)``: one step.

    ``name`` is the rule ("sgd", "momentum", "adam", "adamw", "rmsprop"), ``hyperparams`` the constructor's
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


def check_lr(where, lr):
    """``lr``: a finite number ``>= 0`` or a scalar array (possibly traced); never a string."""
    if checks.is_real(lr):
        if not 0 <= lr < math.inf:
            raise ValueError(f"{where}: lr must be a finite number >= 0, got {lr!r}")
    elif not hasattr(lr, "dtype"):
        raise ValueError(f"{where}: lr must be a number or a scalar array, got {lr!r}")


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
# everything in the leaf's compute dtype, t the int32 count of updates already applied.


def compute_dtype(dtype):
    """The dtype an update is computed and its buffers kept in: the params' dtype, but at least
    float32. In bfloat16 ``1 − 0.999`` rounds to 0 and in float16 ``eps = 1e-8`` underflows, so
    Adam and RMSProp would divide by zero at the first step; float32 arithmetic, with the new
    params rounded back to their own dtype at the end, avoids both."""
    return jnp.promote_types(dtype, jnp.float32)


def _lr_array(lr, where):
    lr = jnp.asarray(lr)
    if jnp.ndim(lr) != 0:
        raise ValueError(f"{where}: lr must be a scalar, got shape {jnp.shape(lr)}")
    dtype = lr.dtype if jnp.issubdtype(lr.dtype, jnp.floating) else float_dtype()
    return jax.lax.convert_element_type(lr, dtype)  # strongly typed: state dtypes stay fixed


def _check_params(name, params):
    for leaf in jax.tree_util.tree_leaves(params):
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"{name}: params must be floating-point arrays, got dtype {dtype}")


def make(name, hyperparams, schedule, slots, rule, flags=None, decoupled=False) -> Optimizer:
    """An ``Optimizer`` from a per-leaf ``rule`` and the names of its buffers (``slots``).

    ``flags``, if given, is ``params -> a pytree of Python bools`` (read from the structure and
    shapes only, so static under ``jit``), and each leaf's flag reaches the rule as ``flag=``
    (AdamW's which-leaves-decay). ``decoupled``: the rule applies ``hyperparams["weight_decay"]``
    itself, so it is not added to the gradient as L2."""
    base_lr = hyperparams["lr"]
    weight_decay = 0.0 if decoupled else hyperparams["weight_decay"]
    l1 = checks.real(name, "l1", hyperparams.get("l1", 0.0), 0)
    schedule = constant() if schedule is None else schedule
    if not callable(schedule):
        raise ValueError(f"{name}: schedule must be callable (t -> multiplier), got {schedule!r}")

    def init(params, lr=None):
        lr = base_lr if lr is None else lr
        check_lr(name, lr)
        _check_params(name, params)
        state = {"lr": _lr_array(lr, name), "step": jnp.zeros((), jnp.int32)}
        for slot in slots:
            state[slot] = jax.tree_util.tree_map(
                lambda p: jnp.zeros(jnp.shape(p), compute_dtype(jnp.result_type(p))), params)
        return state

    def update_leaf(p, g, buffers, lr, t, flag):
        p = jnp.asarray(p)
        dtype = compute_dtype(p.dtype)
        p_wide, g = p.astype(dtype), jnp.asarray(g).astype(dtype)
        if weight_decay:  # static Python floats
            g = g + weight_decay * p_wide
        if l1:
            g = g + l1 * jnp.sign(p_wide)
        extra = {} if flags is None else {"flag": flag}
        new_p, new_buffers = rule(p_wide, g, buffers, lr.astype(dtype), t, **extra)
        return new_p.astype(p.dtype), {s: new_buffers[s].astype(dtype) for s in slots}

    def update(grads, state, params):
        p_leaves, treedef = jax.tree_util.tree_flatten(params)
        g_leaves = treedef.flatten_up_to(grads)
        buffers = {s: treedef.flatten_up_to(state[s]) for s in slots}
        t = state["step"]
        lr = state["lr"] * jnp.asarray(schedule(t)).astype(state["lr"].dtype)
        leaf_flags = (treedef.flatten_up_to(flags(params)) if flags is not None
                      else [None] * len(p_leaves))
        new_p, new_buffers = [], {s: [] for s in slots}
        for i, (p, g) in enumerate(zip(p_leaves, g_leaves, strict=True)):
            p2, b2 = update_leaf(p, g, {s: buffers[s][i] for s in slots}, lr, t, leaf_flags[i])
            new_p.append(p2)
            for s in slots:
                new_buffers[s].append(b2[s])
        new_state = {"lr": state["lr"], "step": t + 1}
        for s in slots:
            new_state[s] = treedef.unflatten(new_buffers[s])
        return treedef.unflatten(new_p), new_state

    return Optimizer(init, update, name, dict(hyperparams), schedule)
