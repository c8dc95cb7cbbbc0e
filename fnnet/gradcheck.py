"""The gradient check: the hand-derived gradient against ``jax.grad``, parameter by parameter,
and optionally against central finite differences along a random direction."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .gradients import autodiff_value_and_grad, objective, value_and_grad


@dataclass(frozen=True)
class GradRow:
    """One parameter: max absolute and relative error of manual against autodiff, and optionally
    the relative error of the manual directional derivative against central finite differences."""

    name: str
    shape: tuple
    max_abs: float
    max_rel: float
    fd_rel: float | None = None
    scale: float = 1.0  # the reference gradient's largest magnitude, ‖g_jax‖∞


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

    @property
    def all_zero(self):
        """Whether every reference gradient is exactly zero: then agreement proves nothing (a
        softmax over one output, say, is constant)."""
        return bool(self.rows) and all(r.scale == 0 for r in self.rows)

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
                seed=0, *, state=(), key=None):
    """Compare the hand-derived gradient with ``jax.grad`` per parameter; return a ``GradReport``.

    With ``finite_differences=True`` each parameter is also checked along a random unit direction
    ``v`` (drawn with numpy from ``seed``): ``(L(p + εv) − L(p − εv)) / 2ε`` against ``⟨dL/dp, v⟩``.
    """
    extra = {"state": state, "key": key}
    manual, reference = value_and_grad(model, loss, fused), autodiff_value_and_grad(model, loss,
                                                                                   fused)
    (loss_m, grads_m), (loss_a, grads_a) = jax.jit(  # side by side in one program
        lambda p, xs, ys: (manual(p, xs, ys, **extra), reference(p, xs, ys, **extra)))(
            params, x, y_true)
    leaves_m, treedef = jax.tree_util.tree_flatten_with_path(grads_m)
    leaves_a = jax.tree_util.tree_leaves(grads_a)
    param_leaves = jax.tree_util.tree_leaves(params)
    dtype = str(jnp.result_type(*param_leaves)) if param_leaves else str(jnp.result_type(x))
    f = jax.jit(lambda p, xs, ys: objective(model, loss, fused)(p, xs, ys, **extra))
    rng = np.random.default_rng(seed)
    flat_params, ptree = jax.tree_util.tree_flatten(params)
    rows = []
    for i, ((path, gm), ga) in enumerate(zip(leaves_m, leaves_a)):
        fd_rel = None
        if finite_differences:
            v = rng.normal(size=gm.shape)
            v = (v / max(np.linalg.norm(v), 1e-300)).astype(gm.dtype)
            h = eps if eps is not None else (1e-6 if gm.dtype == jnp.float64 else 1e-2)

            def shifted(s, i=i, v=v, h=h):  # in numpy: no program compiled for each leaf
                leaves = list(flat_params)
                leaves[i] = np.asarray(leaves[i]) + (s * h * v).astype(v.dtype)
                return f(jax.tree_util.tree_unflatten(ptree, leaves), x, y_true)

            fd = (float(shifted(1)) - float(shifted(-1))) / (2 * h)
            dd = float(np.vdot(np.asarray(gm, np.float64), v.astype(np.float64)))
            fd_rel = abs(fd - dd) / max(abs(fd), abs(dd), 1e-30)
        gm_np, ga_np = np.asarray(gm), np.asarray(ga)
        max_abs = float(np.max(np.abs(gm_np - ga_np))) if gm_np.size else 0.0
        scale = float(np.max(np.abs(ga_np))) if ga_np.size else 0.0
        rows.append(GradRow(jax.tree_util.keystr(path), tuple(gm.shape), max_abs,
                            _rel(gm_np, ga_np), fd_rel, scale))
    return GradReport(tuple(rows), dtype, float(loss_m), float(loss_a))
