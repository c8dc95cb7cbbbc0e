"""Metrics as pure functions of predictions and targets (jit- and vmap-friendly).

Targets may be integer class labels of shape ``(N,)``, one-hot rows of shape ``(N, C)``, or, for a
single output (``C = 1``), 0/1 values; predictions are the network's outputs ``(N, C)``.

Any number of leading axes: predictions ``(N, T, C)`` with labels ``(N, T)`` (or one-hot
``(N, T, C)``) are ``N·T`` predictions, each a row; ``correct`` counts over every one of them (every
token of a sequence) and ``accuracy`` divides by ``N·T``.
"""

from __future__ import annotations

import jax.numpy as jnp


def predicted_classes(y_pred):
    """The predicted class of each row (each leading position): ``argmax`` over classes, or
    ``ŷ > 0.5`` for one output; the shape of ``y_pred`` without its last axis."""
    if y_pred.shape[-1] == 1:
        return (y_pred[..., 0] > 0.5).astype(jnp.int32)
    return jnp.argmax(y_pred, axis=-1)


def true_classes(y_true, y_pred):
    """The true class of each row: integer labels as they are, one-hot rows by ``argmax``."""
    if jnp.issubdtype(y_true.dtype, jnp.integer) and y_true.ndim == y_pred.ndim - 1:
        return y_true
    if y_true.shape[-1] == 1:
        return (y_true[..., 0] > 0.5).astype(jnp.int32)
    return jnp.argmax(y_true, axis=-1)


def correct(y_pred, y_true):
    """How many rows are classified correctly (an integer count, to sum over batches): every
    leading position counts, so ``(N, T, C)`` predictions give a count out of ``N·T``."""
    return jnp.sum(predicted_classes(y_pred) == true_classes(y_true, y_pred), dtype=jnp.int32)


def accuracy(y_pred, y_true):
    """The fraction of rows classified correctly (of the ``N·T`` positions of ``(N, T, C)``)."""
    return correct(y_pred, y_true) / predicted_classes(y_pred).size


def confusion_matrix(y_pred, y_true, num_classes=None):
    """``C[i, j]`` = how many examples (positions, with leading axes) of true class ``i`` were
    predicted as class ``j``."""
    if num_classes is None:
        num_classes = max(y_pred.shape[-1], 2)
    true = true_classes(y_true, y_pred)
    predicted = predicted_classes(y_pred)
    return jnp.zeros((num_classes, num_classes), jnp.int32).at[true, predicted].add(1)
