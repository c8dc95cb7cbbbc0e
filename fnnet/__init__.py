"""fnnet: neural networks from scratch in JAX, every gradient derived by hand as the notes derive it
(experiments/NOTES.md) and checked against ``jax.grad``.

Layers and networks are immutable descriptions with pure ``init``/``apply``/``forward``/``backward``
methods; parameters are pytrees; losses give a value and a gradient; ``value_and_grad`` chains the
hand-derived backward rules and ``autodiff_value_and_grad`` is the ``jax.grad`` reference.
Training is a ``TrainState`` pytree moved along by one pure ``train_step``, scanned over an epoch
by an ``EpochRunner``; ``fit`` is its outline.

Importing fnnet changes no global setting: no JAX flag, no matplotlib backend (``fnnet.plots``
and matplotlib are imported the first time ``fnnet.plots`` is used), no signal handler (only the
``fnnet`` program itself defers Ctrl-C while it starts: ``fnnet._startup``).
"""

from . import _startup  # noqa: F401, I001  (first: before JAX is imported)
from . import (
    checks,
    datasets,
    devices,
    io,
    loss_scale,
    losses,
    metrics,
    optim,
    precision,
    sampling,
)
from ._version import __version__
from .checkpoints import load, save
from .gradcheck import GradReport, check_grads
from .gradients import (
    autodiff_value_and_grad,
    loss_output_and_grad,
    manual_vjp,
    value_and_grad,
)
from .layers import (
    GELU,
    GPT,
    GRU,
    LSTM,
    RNN,
    AvgPool2D,
    BatchNorm,
    CausalSelfAttention,
    Conv2D,
    Dense,
    DenseParams,
    Dropout,
    Embedding,
    Flatten,
    Identity,
    LastStep,
    LayerNorm,
    MaxPool2D,
    PositionEmbedding,
    ReLU,
    Residual,
    Sigmoid,
    Softmax,
    Tanh,
    TransformerBlock,
)
from .networks import Sequential, cnn, gpt, language_model, mlp, sequence_classifier
from .training import (
    EpochRecord,
    EpochRunner,
    RunConfig,
    TokenWindows,
    TrainState,
    evaluate,
    fit,
    to_device,
    train_step,
)


def __getattr__(name):
    if name == "plots":  # matplotlib only when a figure is wanted
        import importlib

        return importlib.import_module(".plots", __name__)
    raise AttributeError(f"module 'fnnet' has no attribute {name!r}")


__all__ = [
    "Dense", "DenseParams", "Identity", "ReLU", "Sigmoid", "Softmax", "Tanh", "Conv2D",
    "MaxPool2D", "AvgPool2D", "Flatten", "Dropout", "BatchNorm", "LayerNorm", "Sequential", "mlp", "cnn",
    "sequence_classifier", "language_model",
    "losses", "value_and_grad", "autodiff_value_and_grad", "loss_output_and_grad", "check_grads",
    "manual_vjp", "GradReport", "optim", "metrics", "datasets", "save", "load", "fit", "devices", "plots",
    "train_step", "RunConfig", "evaluate", "to_device", "TrainState", "EpochRunner", "EpochRecord",
    "io", "checks", "precision", "loss_scale", "__version__",
    "Embedding", "RNN", "LSTM", "GRU", "LastStep",
    "CausalSelfAttention", "GELU", "GPT", "PositionEmbedding", "Residual", "TransformerBlock",
    "gpt", "TokenWindows", "sampling",
]
