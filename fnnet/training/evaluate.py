"""Data onto the device, and scoring a network on it.

``to_device`` is how ``fit`` holds the data (checked, converted once, no second copy on the CPU);
``evaluate`` scores params in chunks inside one compiled program.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .. import losses as _losses
from .. import metrics
from .. import precision as _precision
from ..gradients import objective
from . import inputs
from .epoch import float_dtype


def evaluate(model, loss, params, x, y, batch_size=10_000, fused=True, *, state=(),
             precision=None):
    """``(mean loss, accuracy)`` of ``params`` on ``x, y`` (accuracy over every prediction: one
    per row, or per token of a sequence model), in chunks of ``batch_size`` rows, in
    inference mode (no dropout; normalisation with the running statistics in ``state``), the
    products under ``precision`` (``fnnet.precision``; ``None``: the model as it is), in one
    compiled program (compiled once per model, loss, chunk and shapes)."""
    policy_model = _precision.with_precision(model, precision)
    loss_fn = _losses.get(loss)
    n = x.shape[0]
    if n == 0:
        raise ValueError("evaluate: x has no rows; there is nothing to score")
    if not isinstance(y, jax.core.Tracer):  # labels enter here: checked as fit checks them
        score_fn = objective(policy_model, loss_fn, fused, with_output=True)
        outputs = jax.eval_shape(lambda: score_fn(params, x[:1], y[:1], state=state,
                                                  train=False))[1].shape[-1]
        inputs.check_targets(loss_fn, y, outputs, "evaluate:")
    chunk = min(batch_size, n)
    key = (id(model), id(loss_fn), None if precision is None else _precision.get(precision),
           fused, chunk)
    held = _PROGRAMS.get(key)
    if held is None or held[0] is not model or held[1] is not loss_fn:
        held = (model, loss_fn, jax.jit(_scores(policy_model, loss_fn, fused, chunk)))
        _PROGRAMS[key] = held
        while len(_PROGRAMS) > 32:
            _PROGRAMS.pop(next(iter(_PROGRAMS)))
    return held[2](params, x, y, state)


#: ``evaluate``'s compiled programs, by the identity of the model and the loss (the very objects
#: are held with each, so an identity is not reused while its program is kept), the precision,
#: ``fused`` and the chunk: the 32 latest.
_PROGRAMS = {}


def _scores(model, loss, fused, chunk):
    """``scores(params, x, y, state) -> (mean loss, accuracy)``: a scan over the full chunks of
    ``chunk`` rows, then the rest."""
    score_fn = objective(model, loss, fused, with_output=True)

    def scores(params, x, y, state):
        def score(xb, yb):
            value, y_pred = score_fn(params, xb, yb, state=state, train=False)
            return value * xb.shape[0], metrics.correct(y_pred, yb)

        def body(acc, i):
            xb = jax.lax.dynamic_slice_in_dim(x, i * chunk, chunk)
            yb = jax.lax.dynamic_slice_in_dim(y, i * chunk, chunk)
            loss_sum, correct = score(xb, yb)
            return (acc[0] + loss_sum, acc[1] + correct), None

        n = x.shape[0]
        full = n // chunk
        per_row = jax.eval_shape(lambda: score_fn(params, x[:1], y[:1], state=state,
                                                  train=False))[1]
        predictions = n * math.prod(per_row.shape[1:-1])  # one per row, or per token
        (loss_sum, correct), _ = jax.lax.scan(
            body, (jnp.zeros((), float_dtype(params)), jnp.zeros((), jnp.int32)),
            jnp.arange(full))
        if full * chunk < n:
            rest_loss, rest_correct = score(x[full * chunk:], y[full * chunk:])
            loss_sum, correct = loss_sum + rest_loss, correct + rest_correct
        return loss_sum / n, correct / predictions

    return scores


def to_device(x, y, dtype=jnp.float32, where="train", *, ids=False):
    """``(x, y)`` on the default device, as ``fit`` holds them: ``x`` as ``dtype`` (as int32 with
    ``ids``, for a model whose first layer reads integer ids), integer labels as int32, float
    targets as ``dtype``. ``x`` is ``(N, features)``, sequences ``(N, T, features)`` (or ids
    ``(N, T)``) or a batch of images ``(N, H, W, C)``; shapes and dtypes are checked (``where``
    names the split in the error; the shape is checked against the model's first layer where the
    model is known, in ``fit``).

    One copy at most: an array that already has the dtype is handed to ``jax.device_put`` as it
    is, and on the CPU a numpy array aligned to 64 bytes (``fnnet.datasets.prepare`` makes them
    so) becomes the device array without a copy, so the data is held once, not twice. Such an
    array must not be written to while the device array is in use.
    """
    x = np.asarray(x) if not isinstance(x, jax.Array) else x
    y = np.asarray(y) if not isinstance(y, jax.Array) else y
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"fit: {where} x must have shape (N, features), (N, T, features) for "
                         f"sequences, (N, T) for ids or (N, H, W, C) for images, got "
                         f"{tuple(x.shape)}")
    if len(x) != len(y):
        raise ValueError(f"fit: {where} x has {len(x)} rows but y has {len(y)}")
    if len(x) == 0:
        raise ValueError(f"fit: {where} data is empty")
    if ids and not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"fit: {where} x must hold integer ids (the model's first layer reads "
                        f"ids), got {x.dtype}")
    if not ids and not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"fit: {where} x must be floating-point, got {x.dtype} "
                        f"(scale pixels to [0, 1] first, e.g. fnnet.datasets.scale)")
    y_dtype = jnp.int32 if jnp.issubdtype(y.dtype, jnp.integer) else dtype
    dtype = jnp.int32 if ids else jax.dtypes.canonicalize_dtype(dtype)
    y_dtype = jax.dtypes.canonicalize_dtype(y_dtype)
    return (jax.device_put(x if x.dtype == dtype else x.astype(dtype)),
            jax.device_put(y if y.dtype == y_dtype else y.astype(y_dtype)))
