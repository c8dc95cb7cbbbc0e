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

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

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


def loss_output_and_grad(model, loss, fused=True):
    """``(params, x, y_true) -> (loss, y_pred, grads)`` by the hand-derived backward only.

    ``y_pred`` is the network's output, returned so a training step can score it for free.
    """
    loss = _losses.get(loss)
    parts = _fused_parts(model, loss, fused)

    if parts is not None:
        body, leaf, split, join = parts

        def fn(params, x, y_true):
            body_params, leaf_params = split(params)
            z, cache = body.forward(body_params, x)
            a = leaf.apply(leaf_params, z)
            dz = loss.fused_grad(a, y_true)
            body_grads, _ = body.backward(body_params, cache, dz)
            return loss.value_from_logits(z, y_true), a, join(body_grads, ())

        return fn

    def fn(params, x, y_true):
        y_pred, cache = model.forward(params, x)
        grads, _ = model.backward(params, cache, loss.grad(y_pred, y_true))
        return loss.value(y_pred, y_true), y_pred, grads

    return fn


def value_and_grad(model, loss, fused=True):
    """A pure ``(params, x, y_true) -> (loss, grads)`` computed by the hand-derived backward only."""
    fn = loss_output_and_grad(model, loss, fused)

    def value_and_grad_fn(params, x, y_true):
        value, _, grads = fn(params, x, y_true)
        return value, grads

    return value_and_grad_fn


def _objective_with_output(model, loss, fused):
    """``(params, x, y_true) -> (loss, y_pred)`` in plain jnp (``apply`` only). With a fused pair the
    loss is scored on the logits, exactly as ``value_and_grad`` does."""
    loss = _losses.get(loss)
    parts = _fused_parts(model, loss, fused)
    if parts is not None:
        body, leaf, split, _ = parts

        def fused_fn(params, x, y_true):
            body_params, leaf_params = split(params)
            z = body.apply(body_params, x)
            return loss.value_from_logits(z, y_true), leaf.apply(leaf_params, z)

        return fused_fn

    def fn(params, x, y_true):
        y_pred = model.apply(params, x)
        return loss.value(y_pred, y_true), y_pred

    return fn


def objective(model, loss, fused=True):
    """``(params, x, y_true) -> loss`` in plain jnp: what ``autodiff_value_and_grad`` differentiates."""
    fn = _objective_with_output(model, loss, fused)
    return lambda params, x, y_true: fn(params, x, y_true)[0]


def autodiff_value_and_grad(model, loss, fused=True):
    """The same ``(params, x, y_true) -> (loss, grads)`` by ``jax.value_and_grad`` of ``apply``:
    the reference path, which never touches a backward rule of fnnet's."""
    return jax.value_and_grad(objective(model, loss, fused))


def autodiff_loss_output_and_grad(model, loss, fused=True):
    """``(params, x, y_true) -> (loss, y_pred, grads)`` by ``jax.value_and_grad`` (the reference)."""
    vg = jax.value_and_grad(_objective_with_output(model, loss, fused), has_aux=True)

    def fn(params, x, y_true):
        (value, y_pred), grads = vg(params, x, y_true)
        return value, y_pred, grads

    return fn


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


# ---------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class GradRow:
    """One parameter: max absolute and relative error of manual against autodiff, and optionally
    the relative error of the manual directional derivative against central finite differences."""

    name: str
    shape: tuple
    max_abs: float
    max_rel: float
    fd_rel: float | None = None


@dataclass(frozen=True)
class GradReport:
    """What ``check_grads`` found; ``str(report)`` is a table, ``report.max_rel`` the worst error."""

    rows: tuple
    dtype: str
    loss_manual: float
    loss_autodiff: float

    @property
    def max_rel(self):
        return max((r.max_rel for r in self.rows), default=0.0)

    @property
    def max_abs(self):
        return max((r.max_abs for r in self.rows), default=0.0)

    def ok(self, rtol=None):
        """Whether every relative error is within ``rtol`` (default 1e-10 in float64, 1e-4 in
        float32)."""
        if rtol is None:
            rtol = 1e-10 if self.dtype == "float64" else 1e-4
        return self.max_rel <= rtol

    def __str__(self):
        fd = any(r.fd_rel is not None for r in self.rows)
        head = f"{'parameter':<16}{'shape':>14}{'max abs err':>14}{'max rel err':>14}"
        head += f"{'fin.diff rel':>14}" if fd else ""
        lines = [f"gradient check ({self.dtype}): manual backward vs jax.grad", head,
                 "-" * len(head)]
        for r in self.rows:
            line = f"{r.name:<16}{str(r.shape):>14}{r.max_abs:>14.3e}{r.max_rel:>14.3e}"
            if fd:
                line += f"{r.fd_rel:>14.3e}" if r.fd_rel is not None else f"{'-':>14}"
            lines.append(line)
        lines.append(f"loss: manual {self.loss_manual:.10g}, autodiff {self.loss_autodiff:.10g}")
        return "\n".join(lines)


def _rel(a, b):
    """``‖a − b‖∞ / ‖b‖∞`` (the error relative to the reference's scale)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.max(np.abs(b)) if b.size else 0.0
    err = np.max(np.abs(a - b)) if a.size else 0.0
    return float(err / scale) if scale > 0 else float(err)


def check_grads(model, loss, params, x, y_true, fused=True, finite_differences=False, eps=None,
                seed=0):
    """Compare the hand-derived gradient with ``jax.grad`` per parameter; return a ``GradReport``.

    With ``finite_differences=True`` each parameter is also checked along a random unit direction
    ``v`` (drawn with numpy from ``seed``): ``(L(p + εv) − L(p − εv)) / 2ε`` against ``⟨dL/dp, v⟩``.
    """
    loss_m, grads_m = jax.jit(value_and_grad(model, loss, fused))(params, x, y_true)
    loss_a, grads_a = jax.jit(autodiff_value_and_grad(model, loss, fused))(params, x, y_true)
    leaves_m, treedef = jax.tree_util.tree_flatten_with_path(grads_m)
    leaves_a = jax.tree_util.tree_leaves(grads_a)
    param_leaves = jax.tree_util.tree_leaves(params)
    dtype = str(jnp.result_type(*param_leaves)) if param_leaves else str(jnp.result_type(x))
    f = jax.jit(objective(model, loss, fused))
    rng = np.random.default_rng(seed)
    flat_params, ptree = jax.tree_util.tree_flatten(params)
    rows = []
    for i, ((path, gm), ga) in enumerate(zip(leaves_m, leaves_a)):
        fd_rel = None
        if finite_differences:
            v = rng.normal(size=gm.shape)
            v = jnp.asarray(v / max(np.linalg.norm(v), 1e-300), gm.dtype)
            h = eps if eps is not None else (1e-6 if gm.dtype == jnp.float64 else 1e-2)

            def shifted(s, i=i, v=v, h=h):
                leaves = list(flat_params)
                leaves[i] = leaves[i] + s * h * v
                return f(jax.tree_util.tree_unflatten(ptree, leaves), x, y_true)

            fd = float((shifted(1) - shifted(-1)) / (2 * h))
            dd = float(jnp.vdot(gm, v))
            fd_rel = abs(fd - dd) / max(abs(fd), abs(dd), 1e-30)
        gm_np, ga_np = np.asarray(gm), np.asarray(ga)
        max_abs = float(np.max(np.abs(gm_np - ga_np))) if gm_np.size else 0.0
        rows.append(GradRow(jax.tree_util.keystr(path), tuple(gm.shape), max_abs,
                            _rel(gm_np, ga_np), fd_rel))
    return GradReport(tuple(rows), dtype, float(loss_m), float(loss_a))
