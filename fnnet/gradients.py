"""Gradients two ways: the hand-derived backward, and ``jax.grad`` of plain jnp code; and a report
comparing them.

``value_and_grad`` runs each layer's ``forward`` and then the ``backward`` rules of note 000 in reverse.
``autodiff_value_and_grad`` differentiates ``apply`` (plain jnp, no custom rule of ours) with
``jax.value_and_grad``: the two share nothing but the forward arithmetic.

Fused output rules (``fused=True``, the default): when the network ends in a softmax and the loss
is cross-entropy, or in a sigmoid and the loss is binary cross-entropy, the loss is computed from the
logits ``Z`` (log-sum-exp, softplus) and the backward starts at ``dL/dZ = (A − Y)/N`` (notes 002 and
004), never forming the softmax Jacobian. ``fused=False`` goes through ``loss.grad`` and the output
layer's own backward instead; both give the same gradient.
"""

from __future__ import annotations

import jax

from . import losses as _losses
from . import precision as _precision
from .networks import Sequential


def _peel_output(model):
    """Split ``model`` into ``(body, leaf, split, join)``: ``leaf`` is the last layer run, ``body``
    the network before it, ``split(params) -> (body_params, leaf_params)`` and
    ``join(body_grads, leaf_grads) -> grads`` rebuild the nesting. ``None`` if there is no body."""
    if not isinstance(model, Sequential):
        return Sequential(), model, lambda p: ((), p), lambda gb, gl: gl
    if not model.layers:
        return None
    *front, last = model.layers
    if isinstance(last, Sequential):
        inner = _peel_output(last)
        if inner is None:
            return None
        inner_body, leaf, inner_split, inner_join = inner

        def split(p):
            body_p, leaf_p = inner_split(p[-1])
            return p[:-1] + (body_p,), leaf_p

        def join(gb, gl):
            return gb[:-1] + (inner_join(gb[-1], gl),)

        return Sequential(*front, inner_body), leaf, split, join
    return Sequential(*front), last, lambda p: (p[:-1], p[-1]), lambda gb, gl: gb + (gl,)


def _fused_parts(model, loss, fused):
    """The peeled network when the fused rule applies, else ``None``."""
    if not fused or loss.fused_activation is None:
        return None
    parts = _peel_output(model)
    if parts is None or not isinstance(parts[1], loss.fused_activation):
        return None
    return parts


def has_state(state):
    """Whether ``state`` holds any array (``()`` and trees of ``()`` hold none)."""
    return bool(jax.tree_util.tree_leaves(state))


def _manual(model, loss, fused):
    """``(params, x, y_true, state, key) -> (loss, y_pred, grads, new_state)`` by the
    hand-derived backward only; ``new_state`` by ``next_state`` from the forward's cache."""
    parts = _fused_parts(model, loss, fused)
    if parts is not None:
        body, leaf, split, join = parts

        def fused_rule(params, x, y_true, state, key):
            body_params, leaf_params = split(params)
            body_state, leaf_state = split(state) if has_state(state) else ((), ())
            z, cache = body.forward(body_params, x, state=body_state, key=key, train=True)
            a = leaf.apply(leaf_params, z)
            dz = loss.fused_grad(a, y_true)
            body_grads, _ = body.backward(body_params, cache, dz)
            new_state = (join(body.next_state(body_state, cache), leaf_state)
                         if has_state(state) else state)
            return loss.value_from_logits(z, y_true), a, join(body_grads, ()), new_state

        return fused_rule

    def chain_rule(params, x, y_true, state, key):
        y_pred, cache = model.forward(params, x, state=state, key=key, train=True)
        grads, _ = model.backward(params, cache, loss.grad(y_pred, y_true))
        new_state = model.next_state(state, cache) if has_state(state) else state
        return loss.value(y_pred, y_true), y_pred, grads, new_state

    return chain_rule


def _autodiff(model, loss, fused):
    """The same function by ``jax.value_and_grad`` of ``apply`` (the reference). The new state,
    which no gradient flows through, comes from a training ``forward`` and ``next_state``."""
    with_output = objective(model, loss, fused, with_output=True)

    def value_and_output(params, x, y_true, state, key):
        return with_output(params, x, y_true, state=state, key=key)

    value_and_grad_fn = jax.value_and_grad(value_and_output, has_aux=True)

    def reference(params, x, y_true, state, key):
        (value, y_pred), grads = value_and_grad_fn(params, x, y_true, state, key)
        new_state = state
        if has_state(state):
            _, cache = model.forward(params, x, state=state, key=key, train=True)
            new_state = model.next_state(state, jax.lax.stop_gradient(cache))
        return value, y_pred, grads, new_state

    return reference


GRADS = {"manual": _manual, "autodiff": _autodiff}


def loss_output_and_grad(model, loss, fused=True, *, grads="manual", with_state=False,
                         precision=None):
    """The one place that chooses how gradients are computed.

    Args:
        model: a layer or network.
        loss: an ``fnnet.losses.Loss`` or its name.
        fused: use the fused softmax/cross-entropy and sigmoid/binary-cross-entropy rules.
        grads: ``"manual"``, the hand-derived backward, or ``"autodiff"``, ``jax.value_and_grad``
            of ``apply`` (the reference, which never touches a backward rule of fnnet's).
        with_state: also return the model's state after this training step.
        precision: the products' policy (``fnnet.precision``: ``"f32"``, ``"bf16"``, ``"f16"``),
            applied to ``model`` (``with_precision``) on both paths; ``None``: the model as it is.

    Returns:
        A pure ``(params, x, y_true, *, state=(), key=None) -> (loss, y_pred, grads)``, with
        ``new_state`` appended when ``with_state``. ``y_pred`` is the network's output, returned
        so a training step can score it for free. ``key`` draws dropout masks (the same key draws
        the same masks on both paths); ``state`` holds running statistics (``init_state()``).
        For loss scaling, pass the scaled loss (``fnnet.loss_scale.scaled``).
    """
    if grads not in GRADS:
        raise ValueError(f"grads must be one of {tuple(GRADS)}, got {grads!r}")
    compute = GRADS[grads](_precision.with_precision(model, precision), _losses.get(loss), fused)

    def loss_output_and_grad_fn(params, x, y_true, *, state=(), key=None):
        out = compute(params, x, y_true, state, key)
        return out if with_state else out[:3]

    return loss_output_and_grad_fn


def value_and_grad(model, loss, fused=True, *, precision=None):
    """A pure ``(params, x, y_true, *, state=(), key=None) -> (loss, grads)`` computed by the
    hand-derived backward only, its products under ``precision`` (``fnnet.precision``;
    ``None``: the model as it is)."""
    compute = loss_output_and_grad(model, loss, fused, precision=precision)

    def value_and_grad_fn(params, x, y_true, *, state=(), key=None):
        value, _, grads = compute(params, x, y_true, state=state, key=key)
        return value, grads

    return value_and_grad_fn


def objective(model, loss, fused=True, *, with_output=False):
    """``(params, x, y_true, *, state=(), key=None, train=True) -> loss`` in plain jnp (``apply``
    only): what autodiff differentiates.

    With a fused pair the loss is scored on the logits, exactly as ``value_and_grad`` does.
    ``with_output=True`` returns ``(loss, y_pred)`` instead. ``train=False`` scores the network
    in inference mode (no dropout, running statistics).
    """
    loss = _losses.get(loss)
    parts = _fused_parts(model, loss, fused)

    def with_prediction(params, x, y_true, *, state=(), key=None, train=True):
        if parts is None:
            y_pred = model.apply(params, x, state=state, key=key, train=train)
            return loss.value(y_pred, y_true), y_pred
        body, leaf, split, _ = parts
        body_params, leaf_params = split(params)
        body_state = split(state)[0] if has_state(state) else ()
        z = body.apply(body_params, x, state=body_state, key=key, train=train)
        return loss.value_from_logits(z, y_true), leaf.apply(leaf_params, z)

    if with_output:
        return with_prediction

    def loss_only(params, x, y_true, *, state=(), key=None, train=True):
        return with_prediction(params, x, y_true, state=state, key=key, train=train)[0]

    return loss_only


def autodiff_value_and_grad(model, loss, fused=True, *, precision=None):
    """The same ``(params, x, y_true, *, state=(), key=None) -> (loss, grads)`` by
    ``jax.value_and_grad`` of ``apply`` (its products under ``precision``; ``None``: the model as
    it is): the reference path, which never touches a backward rule of fnnet's."""
    return jax.value_and_grad(objective(_precision.with_precision(model, precision), loss, fused))


def manual_vjp(model):
    """``apply(params, x)`` whose VJP is fnnet's hand-derived backward (``jax.custom_vjp``).

    Other JAX code can then call ``jax.grad``/``jax.vjp`` through an fnnet network and get our
    gradients: forward keeps the cache as residuals, backward returns ``(dparams, dx)``.
    """

    @jax.custom_vjp
    def apply(params, x):
        return model.apply(params, x)

    def fwd(params, x):
        y, cache = model.forward(params, x)
        return y, (params, cache)

    def bwd(residuals, dy):
        params, cache = residuals
        return model.backward(params, cache, dy)

    apply.defvjp(fwd, bwd)
    return apply
