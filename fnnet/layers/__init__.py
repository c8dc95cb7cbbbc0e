"""Layers: each one a forward and the hand-derived backward of note 000, side by side.

A layer is an immutable, hashable description (sizes and choices, never arrays) with pure
methods::

    init(key, dtype)               -> params
    apply(params, x)               -> y                 plain jnp, the autodiff reference path
    forward(params, x)             -> (y, cache)        what backward needs, kept
    backward(params, cache, dy)    -> (dparams, dx)     the note's equations, nothing else
    init_state(dtype)              -> state             () unless the layer keeps statistics
    next_state(state, cache)       -> state             after a training forward

``apply`` and ``forward`` also take keyword-only ``state=``, ``key=`` and ``train=`` (``apply``
defaults to inference, ``forward`` to training); layers that need none ignore them (``base``).

Layout is batch first (note 004): ``x`` has shape ``(N, n_in)``; a single example of shape ``(n_in,)``
works too. Notes 000, 001 and 002 write samples as columns; each backward's docstring gives the
note's column equation and the transposition used here. The notes are in experiments/NOTES.md.

``apply`` never calls ``backward`` and uses no custom derivative rule of ours, so ``jax.grad`` of
``apply`` is an independent reference for every rule written here.

Images are batch first and channels last, ``(N, H, W, C)``.

Modules: ``base`` (the state half of the protocol), ``dense`` (``Dense``), ``conv``
(``Conv2D``), ``pooling`` (``MaxPool2D``, ``AvgPool2D``), ``reshape`` (``Flatten``), ``dropout``
(``Dropout``), ``normalization`` (``BatchNorm``, ``LayerNorm``), ``activations`` (``ReLU``,
``Sigmoid``, ``Tanh``, ``Identity``, ``Softmax``; ``get`` an activation by name),
``initializers`` (``INITS``), ``checks`` (the input checks run at trace time).
"""

from .activations import (
    ACTIVATIONS,
    Activation,
    Elementwise,
    Identity,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
    activation,
    get,
    log_softmax,
    softmax,
    softmax_backward_jacobian,
    softmax_backward_simple,
)
from .base import Stateless
from .checks import check_features, check_floating
from .conv import (
    Conv2D,
    ConvParams,
    conv2d_backward_correlation,
    conv2d_backward_naive,
    conv2d_naive,
)
from .dense import Dense, DenseParams
from .dropout import Dropout
from .initializers import INITS
from .normalization import (
    BatchNorm,
    LayerNorm,
    NormCache,
    NormParams,
    normalize,
    normalize_backward,
    normalize_backward_staged,
)
from .pooling import AvgPool2D, MaxPool2D
from .reshape import Flatten

__all__ = [
    "ACTIVATIONS", "INITS", "Activation", "Dense", "DenseParams", "Elementwise", "Identity", "ReLU",
    "Sigmoid", "Softmax", "Tanh", "activation", "check_features", "check_floating", "get",
    "log_softmax", "softmax", "softmax_backward_jacobian", "softmax_backward_simple",
    "AvgPool2D", "BatchNorm", "Conv2D", "ConvParams", "Dropout", "Flatten", "LayerNorm",
    "MaxPool2D", "NormCache", "NormParams", "Stateless", "conv2d_backward_correlation",
    "conv2d_backward_naive", "conv2d_naive", "normalize", "normalize_backward",
    "normalize_backward_staged",
]
