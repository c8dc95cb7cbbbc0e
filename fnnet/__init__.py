"""fnnet: neural networks from scratch in JAX, every gradient derived by hand as the notes derive it
and checked against ``jax.grad``.

Layers and networks are immutable descriptions with pure ``init``/``apply``/``forward``/``backward``
methods; parameters are pytrees; losses give a value and a gradient; ``value_and_grad`` chains the
hand-derived backward rules and ``autodiff_value_and_grad`` is the ``jax.grad`` reference.
"""

from . import datasets, losses, metrics, optim, parallel, plots
from .checkpoints import load, save
from .gradients import (
    GradReport,
    autodiff_value_and_grad,
    check_grads,
    loss_output_and_grad,
    manual_vjp,
    value_and_grad,
)
from .layers import Dense, DenseParams, Identity, ReLU, Sigmoid, Softmax, Tanh
from .networks import Sequential, mlp
from .training import evaluate, fit, make_epoch, to_device, train_step

__version__ = "0.1.0"

__all__ = [
    "Dense", "DenseParams", "Identity", "ReLU", "Sigmoid", "Softmax", "Tanh", "Sequential", "mlp",
    "losses", "value_and_grad", "autodiff_value_and_grad", "loss_output_and_grad", "check_grads",
    "manual_vjp", "GradReport", "optim", "metrics", "datasets", "save", "load", "fit", "parallel", "plots",
    "train_step", "make_epoch", "evaluate", "to_device",
]
