"""Losses: each a ``value(y_pred, y_true)`` averaged over the batch and its ``grad`` dL/dy_pred.

Batch first: ``y_pred`` and ``y_true`` have shape ``(N, n)`` (or ``(n,)`` for one example, N = 1).
Every loss sums over the ``n`` outputs of an example (MSE averages them, as note 000 does) and then
averages over the ``N`` examples, so ``grad`` carries a ``1/N``.

Any number of leading axes: ``(N, T, n)`` (a sequence of ``T`` outputs per example) is ``N·T``
positions, each scored like an example, and the loss averages over every one of them, so ``grad``
carries ``1/(N·T)``: for cross-entropy on ``(N, T, V)`` outputs with ``(N, T)`` labels,
``L = −(1/(N·T)) Σ_{n,t} log ŷ[n, t, label[n, t]]``, every token weighing the same. In general the
divisor is the number of positions, the product of every axis but the last (``N`` for ``(N, n)``,
1 for ``(n,)``).

``y_true`` is one-hot (or a 0/1 matrix for binary cross-entropy) of the same shape as ``y_pred``.
Cross-entropy also accepts integer class labels of ``y_pred``'s shape without its last axis:
``(N,)`` for ``(N, n)``, ``(N, T)`` for ``(N, T, n)``, a scalar for one example; they are one-hot
encoded inside. MSE and binary cross-entropy take targets of ``y_pred``'s shape only.

Cross-entropy and binary cross-entropy each pair with the activation whose Jacobian cancels theirs
(softmax, sigmoid). Their ``value_from_logits`` computes the loss from the pre-activation ``Z``
through a log-sum-exp (or softplus), finite and correct at logits of ±1000; ``fused_grad`` is the
fused rule ``dL/dZ = (A − Y)/N`` of notes 002 and 004 (``(A − Y)/(N·T)`` over ``(N, T, n)``, the
rule of one position divided by the number of positions). ``fnnet.value_and_grad`` uses them by
default.

The notes cited are in experiments/NOTES.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .layers import Sigmoid, Softmax
from .layers.activations import log_softmax
from .layers.checks import lookup


def _tiny(x):
    return jnp.finfo(jnp.result_type(x)).tiny


def _safe_log(p):
    """``log p`` with ``p`` clipped below at the smallest normal float: ``log 0`` stays finite
    (about −87 in float32, −708 in float64) and every representable normal ``p`` is untouched."""
    return jnp.log(jnp.maximum(p, _tiny(p)))


def _batch_size(y_pred):
    """The number of positions the loss averages over: the product of every axis but the last
    (``N`` for ``(N, n)``, ``N·T`` for ``(N, T, n)``, 1 for ``(n,)``), a Python int."""
    return math.prod(jnp.shape(y_pred)[:-1])


@dataclass(frozen=True)
class Loss:
    """A loss: ``name``, and whether integer labels are accepted. Subclasses give the math."""

    name: str
    integer_labels: bool = False

    def __repr__(self):
        return f"fnnet.losses.{self.name}"

    fused_activation = None

    def targets(self, y_pred, y_true):
        """Check shapes and dtypes at trace time; return ``y_true`` as floats shaped like ``y_pred``."""
        if not jnp.issubdtype(jnp.result_type(y_pred), jnp.floating):
            raise TypeError(
                f"{self.name}: y_pred must be floating-point, got dtype {jnp.result_type(y_pred)}"
            )
        if jnp.ndim(y_pred) < 1:
            raise ValueError(
                f"{self.name}: y_pred must have shape (N, n), (n,) or (N, T, ..., n) (outputs "
                f"last), got a scalar"
            )
        pred_shape, true_shape = tuple(jnp.shape(y_pred)), tuple(jnp.shape(y_true))
        integer = jnp.issubdtype(jnp.result_type(y_true), jnp.integer)
        if self.integer_labels and integer and true_shape == pred_shape[:-1]:
            return self._one_hot(y_true, pred_shape[-1], jnp.result_type(y_pred))
        if true_shape != pred_shape:
            hint = (
                f" or integer labels of shape {pred_shape[:-1]}" if self.integer_labels else ""
            )
            raise ValueError(
                f"{self.name}: y_true has shape {true_shape}, expected {pred_shape} "
                f"(the shape of y_pred){hint}"
            )
        if not (integer or jnp.issubdtype(jnp.result_type(y_true), jnp.floating)
                or jnp.result_type(y_true) == jnp.bool_):
            raise TypeError(f"{self.name}: y_true has dtype {jnp.result_type(y_true)}")
        return jnp.asarray(y_true).astype(jnp.result_type(y_pred))

    def _one_hot(self, labels, classes, dtype):
        """Integer labels one-hot encoded. A label outside ``0 .. classes − 1`` is refused when
        the labels are concrete; traced (under ``jit``, where no error can be raised) its row is
        NaN, so its loss and gradient are NaN, never a silent 0 (``jax.nn.one_hot`` alone would
        give a row of zeros, a loss of 0)."""
        if not isinstance(labels, jax.core.Tracer):
            values = np.asarray(labels)
            bad = (values < 0) | (values >= classes)
            if bad.any():
                raise ValueError(f"{self.name}: y_true holds {int(bad.sum())} labels outside "
                                 f"0..{classes - 1} (the outputs' {classes} classes), the first "
                                 f"{values[bad].flat[0]}")
        valid = (labels >= 0) & (labels < classes)
        return jnp.where(valid[..., None], jax.nn.one_hot(labels, classes, dtype=dtype),
                         jnp.asarray(jnp.nan, dtype))


@dataclass(frozen=True, repr=False)
class MSE(Loss):
    """Mean squared error, note 000: ``E = (1/n) Σ_i (y*_i − y_i)²``, averaged over the batch
    (over every leading position: the mean of every entry)."""

    def value(self, y_pred, y_true):
        y = self.targets(y_pred, y_true)
        return jnp.mean((y_pred - y) ** 2)

    def grad(self, y_pred, y_true):
        """Note 000: ``dE/dY = (2/n)(Y − Y*)``; averaged over ``N`` examples, ``2(Y − Y*)/(N n)``
        (``2(Y − Y*)/(N T n)`` over ``(N, T, n)``: the size of ``Y`` in every case)."""
        y = self.targets(y_pred, y_true)
        return 2 * (y_pred - y) / jnp.size(y_pred)


@dataclass(frozen=True, repr=False)
class CrossEntropy(Loss):
    """Cross-entropy (negative log-likelihood), note 003: ``L = −(1/N) Σ_n Σ_i y_ni log ŷ_ni``.

    Summed over classes, then averaged over the batch; over ``(N, T, V)`` outputs averaged over
    every token, ``L = −(1/(N·T)) Σ_{n,t} Σ_i y_nti log ŷ_nti`` (with ``(N, T)`` labels,
    ``−(1/(N·T)) Σ_{n,t} log ŷ[n, t, label]``). ``value`` on probabilities treats
    ``0 · log 0`` as 0 and clips ``ŷ`` at the smallest normal float, so it is finite at
    probabilities of exactly 0 and 1.
    """

    integer_labels: bool = True
    fused_activation = Softmax

    def value(self, y_pred, y_true):
        y = self.targets(y_pred, y_true)
        terms = jnp.where((y > 0) | jnp.isnan(y), y * _safe_log(y_pred), 0)  # NaN: a bad label
        return -jnp.sum(terms) / _batch_size(y_pred)

    def grad(self, y_pred, y_true):
        """``dL/dŷ = −(1/N) Y / Ŷ`` (element-wise), zero where ``Y = 0``; ``1/(N·T)`` over
        ``(N, T, V)``."""
        y = self.targets(y_pred, y_true)
        per_element = jnp.where((y > 0) | jnp.isnan(y), -y / jnp.maximum(y_pred, _tiny(y_pred)),
                                0)
        return per_element / _batch_size(y_pred)

    def value_from_logits(self, z, y_true):
        """``L = −(1/N) Σ Y ⊙ log softmax(Z)``, with ``log softmax(Z) = Z − logsumexp(Z)`` over
        the last axis (``1/(N·T)`` over ``(N, T, V)``)."""
        y = self.targets(z, y_true)
        return -jnp.sum(y * log_softmax(z)) / _batch_size(z)

    def fused_grad(self, a, y_true):
        """Note 002: softmax followed by cross-entropy gives ``dZ = A − Y`` per example, so with the
        batch average ``dL/dZ = (A − Y)/N``: the softmax Jacobian ``diag(A) − A Aᵀ`` times
        ``−Y/A`` is ``A Σ_i y_i − Y``, which is ``A − Y`` when the row of ``Y`` sums to 1 (one-hot).
        The general form is used, so targets whose rows do not sum to 1 get the exact gradient.

        Over ``(N, T, V)`` each token's softmax sees only its own row of ``Z``, so the same
        per-row derivation holds at every position, and the average over the ``N·T`` tokens
        gives ``dL/dZ = (A − Y)/(N·T)``."""
        y = self.targets(a, y_true)
        if jnp.shape(y_true) == jnp.shape(a)[:-1]:  # integer labels (targets checked the dtype)
            # Σ_i y_i of a one-hot row is 1 (a label outside 0..n−1 has a NaN row, ``_one_hot``,
            # and so a NaN gradient): known from the label without summing the row
            labels = jnp.asarray(y_true)
            total = ((labels >= 0) & (labels < jnp.shape(a)[-1])).astype(a.dtype)[..., None]
        else:
            total = jnp.sum(y, axis=-1, keepdims=True)
        return (a * total - y) / _batch_size(a)


@dataclass(frozen=True, repr=False)
class BinaryCrossEntropy(Loss):
    """Binary cross-entropy, note 004: ``L = −(1/N) Σ_n Σ_i [y log ŷ + (1 − y) log(1 − ŷ)]``.

    Summed over outputs, averaged over the batch (note 004 averages over outputs too; this keeps
    the same per-example convention as cross-entropy, and the fused rule reads ``(Ŷ − Y)/N``).
    Over ``(N, T, n)`` averaged over the ``N·T`` positions, ``1/(N·T)`` in place of ``1/N``.
    """

    fused_activation = Sigmoid

    def value(self, y_pred, y_true):
        y = self.targets(y_pred, y_true)
        pos = jnp.where(y > 0, y * _safe_log(y_pred), 0)
        neg = jnp.where(y < 1, (1 - y) * _safe_log(1 - y_pred), 0)
        return -jnp.sum(pos + neg) / _batch_size(y_pred)

    def grad(self, y_pred, y_true):
        """``dL/dŷ = (1/N) (−Y/Ŷ + (1 − Y)/(1 − Ŷ))``, each term zero where its weight is
        (``1/(N·T)`` over ``(N, T, n)``)."""
        y = self.targets(y_pred, y_true)
        tiny = _tiny(y_pred)
        pos = jnp.where(y > 0, -y / jnp.maximum(y_pred, tiny), 0)
        neg = jnp.where(y < 1, (1 - y) / jnp.maximum(1 - y_pred, tiny), 0)
        return (pos + neg) / _batch_size(y_pred)

    def value_from_logits(self, z, y_true):
        """With ``ŷ = σ(z)``: ``−[y log σ(z) + (1 − y) log(1 − σ(z))] = softplus(z) − y z``, and
        ``softplus(z) = log(e⁰ + eᶻ)``, a two-term log-sum-exp that never overflows."""
        y = self.targets(z, y_true)
        return jnp.sum(jnp.logaddexp(0.0, z) - y * z) / _batch_size(z)

    def fused_grad(self, a, y_true):
        """Note 004: with a sigmoid output, ``dL/dZ = Ŷ − Y`` (``σ' = Ŷ(1 − Ŷ)`` cancels the
        denominator of ``dL/dŶ``); with the batch average, ``(Ŷ − Y)/N`` (``(Ŷ − Y)/(N·T)``
        over ``(N, T, n)``)."""
        y = self.targets(a, y_true)
        return (a - y) / _batch_size(a)


mse = MSE("mse")
cross_entropy = CrossEntropy("cross_entropy")
binary_cross_entropy = BinaryCrossEntropy("binary_cross_entropy")

LOSSES = {
    "mse": mse,
    "cross-entropy": cross_entropy,
    "cross_entropy": cross_entropy,
    "ce": cross_entropy,
    "binary-cross-entropy": binary_cross_entropy,
    "binary_cross_entropy": binary_cross_entropy,
    "bce": binary_cross_entropy,
}


def get(name):
    """The loss called ``name`` (``mse``, ``cross-entropy``, ``binary-cross-entropy``)."""
    if isinstance(name, Loss):
        return name
    return lookup(LOSSES, name, "loss")
