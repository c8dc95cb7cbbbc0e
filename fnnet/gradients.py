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


def _manual(model, loss, fused):
    """``(params, x, y_true) -> (loss, y_pred, grads)`` by the hand-derived backward only."""
    parts = _fused_parts(model, loss, fused)
    if parts is not None:
        body, leaf, split, join = parts

        def fused_rule(params, x, y_true):
            body_params, leaf_params = split(params)
            z, cache = body.forward(body_params, x)
            a = leaf.apply(leaf_params, z)
            dz = loss.fused_grad(a, y_true)
            body_grads, _ = body.backward(body_params, cache, dz)
            return loss.value_from_logits(z, y_true), a, join(body_grads, ())

        return fused_rule

    def chain_rule(params, x, y_true):
        y_pred, cache = model.forward(params, x)
        grads, _ = model.backward(params, cache, loss.grad(y_pred, y_true))
        return loss.value(y_pred, y_true), y_pred, grads

    return chain_rule


def _autodiff(model, loss, fused):
    """The same function by ``jax.value_and_grad`` of ``apply`` (the reference)."""
    value_and_grad_fn = jax.value_and_grad(objective(model, loss, fused, with_output=True),
                                           has_aux=True)

    def reference(params, x, y_true):
        (value, y_pred), grads = value_and_grad_fn(params, x, y_true)
        return value, y_pred, grads

    return reference


GRADS = {"manual": _manual, "autodiff": _autodiff}


def loss_output_and_grad(model, loss, fused=True, *, grads="manual"):
    """The one place that chooses how gradients are computed.

    Args:
        model: a layer or network.
        loss: an ``fnnet.losses.Loss`` or its name.
        fused: use the fused softmax/cross-entropy and sigmoid/binary-cross-entropy rules.
        grads: ``"manual"``, the hand-derived backward, or ``"autodiff"``, ``jax.value_and_grad``
            of ``apply`` (the reference, which never touches a backward rule of fnnet's).

    Returns:
        A pure ``(params, x, y_true) -> (loss, y_pred, grads)``; ``y_pred`` is the network's
        output, returned so a training step can score it for free.
    """
    if grads not in GRADS:
        raise ValueError(f"grads must be one of {tuple(GRADS)}, got {grads!r}")
    return GRADS[grads](model, _losses.get(loss), fused)


def value_and_grad(model, loss, fused=True):
    """A pure ``(params, x, y_true) -> (loss, grads)`` computed by the hand-derived backward only."""
    loss_and_grads = loss_output_and_grad(model, loss, fused)

    def value_and_grad_fn(params, x, y_true):
        value, _, grads = loss_and_grads(params, x, y_true)
        return value, grads

    return value_and_grad_fn


def objective(model, loss, fused=True, *, with_output=False):
    """``(params, x, y_true) -> loss`` in plain jnp (``apply`` only): what autodiff differentiates.

    With a fused pair the loss is scored on the logits, exactly as ``value_and_grad`` does.
    ``with_output=True`` returns ``(loss, y_pred)`` instead.
    """
    loss = _losses.get(loss)
    parts = _fused_parts(model, loss, fused)

    def with_prediction(params, x, y_true):
        if parts is None:
            y_pred = model.apply(params, x)
            return loss.value(y_pred, y_true), y_pred
        body, leaf, split, _ = parts
        body_params, leaf_params = split(params)
        z = body.apply(body_params, x)
        return loss.value_from_logits(z, y_true), leaf.apply(leaf_params, z)

    if with_output:
        return with_prediction
    return lambda params, x, y_true: with_prediction(params, x, y_true)[0]


def autodiff_value_and_grad(model, loss, fused=True):
    """The same ``(params, x, y_true) -> (loss, grads)`` by ``jax.value_and_grad`` of ``apply``:
    the reference path, which never touches a backward rule of fnnet's."""
    return jax.value_and_grad(objective(model, loss, fused))


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


