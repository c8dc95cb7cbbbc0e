"""Scoring trained networks on held-out data: one model, or ``K`` models trained together.

``K`` models (``fit(..., ensemble=K)``) have their params stacked along a leading axis. They are
scored two ways: each model on its own, and as an ensemble whose prediction is the average of the
models' outputs, ``p̄ = (1/K) Σ_k p_k``, with predicted class ``argmax p̄`` and loss ``L(p̄, y)``::

    probs = predict(model, params, num_models, x_test)
    model_loss, model_accuracy = model_scores(model, "cross-entropy", params, num_models,
                                              x_test, y_test)
    results = summarize_test("cross-entropy", y_test, model_loss, model_accuracy, probs)

Inputs are rows ``(N, features)`` (an MLP) or images ``(N, H, W, C)`` (a CNN). They are scored
``ROWS`` at a time, images ``IMAGE_ROWS`` at a time: a convolution's activations and patches take
about a hundred times the memory of its input, so the whole test set at once would need gigabytes.

Every function here is pure: it reads its arguments and returns new values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import checks, losses, metrics
from ..datasets import one_hot
from ..training import evaluate
from ..training.inputs import check_targets

__all__ = ["IMAGE_ROWS", "ROWS", "chunk_rows", "model_scores", "predict", "score_prediction",
           "summarize_test", "targets"]

ROWS = 10_000  # rows scored at once, flat inputs
IMAGE_ROWS = 1_000  # rows scored at once, images


def chunk_rows(x) -> int:
    """How many rows of ``x`` are scored at once: ``ROWS``, or ``IMAGE_ROWS`` for images."""
    return IMAGE_ROWS if np.ndim(x) == 4 else ROWS


def targets(loss, labels, num_classes: int) -> np.ndarray:
    """The targets ``loss`` is trained and scored against, from integer class labels.

    Args:
        loss: a loss name or ``fnnet.losses.Loss``.
        labels: integer class labels, shape ``(N,)``.
        num_classes: the number of classes (the network's output size).

    Returns:
        ``labels`` themselves for cross-entropy; one-hot rows ``(N, num_classes)`` (float32) for
        mean squared error and binary cross-entropy.

    Raises:
        ValueError: a label is not an integer in ``0 .. num_classes − 1``, naming the first such
            label and its position (every scoring function here reads its labels through this).
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"scoring: labels must be integer class indices, got dtype {labels.dtype}")
    check_targets(losses.get(loss), labels, num_classes, "scoring: labels")
    if losses.get(loss) is losses.cross_entropy:
        return labels
    return one_hot(np.asarray(labels), num_classes)


def _stacked_apply(model, num_models: int):
    """``model.apply``, mapped over a leading model axis of the params when ``num_models > 1``."""
    checks.integer("scoring", "num_models", num_models)
    return model.apply if num_models == 1 else jax.vmap(model.apply, in_axes=(0, None))


def predict(model, params, num_models: int, x) -> np.ndarray:
    """The network's outputs on ``x``; for stacked models, their averaged prediction.

    Args:
        model: the network (``fnnet.mlp(...)``).
        params: its params; for ``num_models > 1``, stacked along a leading axis.
        num_models: how many models ``params`` holds (1: not stacked).
        x: inputs ``(N, features)`` or images ``(N, H, W, C)``.

    Returns:
        ``(N, outputs)``: ``model.apply(params, x)`` for one model, else
        ``p̄ = (1/K) Σ_k p_k`` over the ``K = num_models`` models (computed ``chunk_rows(x)`` rows
        at a time).
    """
    apply = _stacked_apply(model, num_models)
    average = jax.jit(lambda p, xs: apply(p, xs) if num_models == 1
                      else jnp.mean(apply(p, xs), axis=0))
    rows = chunk_rows(x)
    parts = [np.asarray(average(params, jnp.asarray(x[start:start + rows])))
             for start in range(0, max(len(x), 1), rows)]
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def model_scores(model, loss, params, num_models: int, x, labels) -> tuple[np.ndarray, np.ndarray]:
    """Each model's own ``(loss, accuracy)`` on ``x``, by ``fnnet.evaluate``.

    Args:
        model: the network.
        loss: a loss name or ``fnnet.losses.Loss``.
        params: its params; for ``num_models > 1``, stacked along a leading axis.
        num_models: how many models ``params`` holds (1: not stacked).
        x: inputs ``(N, features)`` or images ``(N, H, W, C)``.
        labels: integer class labels ``(N,)`` (turned into the loss's ``targets``).

    Returns:
        ``(loss, accuracy)``: scalars (0-d arrays) for one model, arrays of ``num_models``
        values for stacked models.
    """
    objective = losses.get(loss)
    x = jnp.asarray(x)
    num_classes = jax.eval_shape(_stacked_apply(model, num_models), params, x).shape[-1]
    rows = chunk_rows(x)
    score = lambda model_params, inputs, wanted: evaluate(model, objective, model_params, inputs,
                                                          wanted, batch_size=rows)
    if num_models > 1:
        score = jax.vmap(score, in_axes=(0, None, None))
    value, accuracy = jax.jit(score)(params, x, jnp.asarray(targets(objective, labels, num_classes)))
    return np.asarray(value), np.asarray(accuracy)


def score_prediction(loss, probs, labels) -> tuple[float, float]:
    """``(loss, accuracy)`` of a prediction, e.g. an ensemble's averaged one.

    Args:
        loss: a loss name or ``fnnet.losses.Loss``.
        probs: the prediction ``(N, classes)``.
        labels: integer class labels ``(N,)``.

    Returns:
        ``(L(probs, y), fraction of rows whose argmax is the label)`` as floats.
    """
    objective = losses.get(loss)
    probs = jnp.asarray(probs)
    wanted = jnp.asarray(targets(objective, labels, probs.shape[-1]))
    value, accuracy = jax.jit(lambda p, y: (objective.value(p, y), metrics.accuracy(p, y)))(
        probs, wanted)
    return float(value), float(accuracy)


def summarize_test(loss, labels, model_loss, model_accuracy, probs=None) -> dict:
    """The test metrics of one model or of stacked models, as ``fnnet train`` reports them.

    Args:
        loss: a loss name or ``fnnet.losses.Loss``.
        labels: integer class labels ``(N,)`` of the test set.
        model_loss: each model's own test loss: a scalar for one model, a sequence of ``K``.
        model_accuracy: likewise, each model's own test accuracy.
        probs: for ``K`` models, their averaged prediction ``p̄`` (``predict``); unused for one.

    Returns:
        One model: ``{"test_accuracy", "test_loss"}``. ``K`` models: ``test_accuracy`` and
        ``test_loss`` of the ensemble's averaged prediction (class ``argmax p̄``, loss
        ``L(p̄, y)``); each model's own ``model_test_accuracy`` and ``model_test_loss`` (lists);
        their means ``mean_test_accuracy`` and ``mean_test_loss``. Every number a Python float.

    Raises:
        ValueError: ``K`` models without ``probs``.
    """
    if np.ndim(model_accuracy) == 0:
        return {"test_accuracy": float(model_accuracy), "test_loss": float(model_loss)}
    if probs is None:
        raise ValueError("summarize_test: the scores of several models need their averaged "
                         "prediction probs")
    value, accuracy = score_prediction(loss, probs, labels)
    return {
        "test_accuracy": accuracy,
        "test_loss": value,
        "model_test_accuracy": np.asarray(model_accuracy, float).tolist(),
        "model_test_loss": np.asarray(model_loss, float).tolist(),
        "mean_test_accuracy": float(np.mean(model_accuracy)),
        "mean_test_loss": float(np.mean(model_loss)),
    }
