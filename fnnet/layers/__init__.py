"""Layers: each one a forward and the hand-derived backward of note 000, side by side.

A layer is an immutable, hashable description (sizes and choices, never arrays) with pure
methods::

    init(key, dtype)               -> params
    apply(params, x)               -> y                 plain jnp, the autodiff reference path
    forward(params, x)             -> (y, cache)        what backward needs, kept
    backward(params, cache, dy)    -> (dparams, dx)     the note's equations, nothing else
    init_state(dtype)              -> state             () unless the layer keeps statistics
    next_state(state, cache)       -> state             after a training forward
    with_precision(policy)         -> layer             its products under a precision policy
    stochastic                     -> bool              whether training needs key=

``apply`` and ``forward`` also take keyword-only ``state=``, ``key=`` and ``train=`` (``apply``
defaults to inference, ``forward`` to training); layers that need none ignore them (``base``).

Layout is batch first (note 004): ``x`` has shape ``(N, n_in)``; a single example of shape ``(n_in,)``
works too. Notes 000, 001 and 002 write samples as columns; each backward's docstring gives the
note's column equation and the transposition used here. The notes are in experiments/NOTES.md.

``apply`` never calls ``backward`` and uses no custom derivative rule of ours, so ``jax.grad`` of
``apply`` is an independent reference for every rule written here.

Images are batch first and channels last, ``(N, H, W, C)``.

Every layer subclasses ``Layer`` (``base``), which states the protocol, makes ``init``, ``apply``,
``forward`` and ``backward`` abstract and gives the rest (``init_state``, ``next_state``,
``with_precision``, ``stochastic``) defaults for a layer without state, randomness or products.

Modules: ``base`` (``Layer``, the protocol), ``dense`` (``Dense``, ``DenseParams``), ``conv``
(``Conv2D``, ``ConvParams``), ``conv_forms`` (the convolution's reference forms: ``conv2d_naive``,
``conv2d_backward_naive``, ``conv2d_backward_correlation``), ``windows`` (the window geometry
``conv`` and ``pooling`` share), ``pooling`` (``MaxPool2D``, ``AvgPool2D``), ``reshape``
(``Flatten``), ``dropout`` (``Dropout``), ``normalization`` (``BatchNorm``, ``LayerNorm``,
``NormParams``; ``normalize`` and its two backward forms), ``activations`` (``ReLU``, ``Sigmoid``,
``Tanh``, ``Identity``, ``Softmax``, their bases ``Activation`` and ``Elementwise``; ``get`` an
activation by name; ``softmax``, ``log_softmax`` and the softmax backward forms), ``initializers``
(``INITS``), ``checks`` (the input checks run at trace time), ``embedding`` (``Embedding``,
``EmbeddingParams``), ``recurrent`` (``Recurrent``, the recurrent layers' shared part and
backpropagation through time; ``RNN``, ``RecurrentParams``, ``LastStep``), ``lstm`` (``LSTM``),
``gru`` (``GRU``, ``GRUParams``), ``attention`` (``CausalSelfAttention``, ``AttentionParams``;
its two backward forms), ``residual`` (``Residual``), ``transformer`` (``TransformerBlock``,
``GPT``, ``GPTParams``), ``sequential`` (``Sequential``, a network of layers that is a layer);
``embedding`` also has ``PositionEmbedding`` and ``activations`` ``GELU``. Sequences are batch
first, ``(N, T, F)``.

This package exports the layers, their params types, ``Layer``, the activation bases,
``ACTIVATIONS``, ``INITS`` and ``get``; the reference forms and helpers are imported from their
own modules (``from fnnet.layers.conv_forms import conv2d_naive``). Each params NamedTuple
registers itself for checkpoints where it is defined (``fnnet.pytrees.register_namedtuple``).
"""

from .activations import (
    ACTIVATIONS,
    GELU,
    Activation,
    Elementwise,
    Identity,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
    get,
)
from .attention import AttentionParams, CausalSelfAttention
from .base import Layer
from .conv import Conv2D, ConvParams
from .dense import Dense, DenseParams
from .dropout import Dropout
from .embedding import Embedding, EmbeddingParams, PositionEmbedding
from .gru import GRU, GRUParams
from .initializers import INITS
from .lstm import LSTM
from .normalization import BatchNorm, LayerNorm, NormParams
from .pooling import AvgPool2D, MaxPool2D
from .recurrent import RNN, LastStep, Recurrent, RecurrentParams
from .reshape import Flatten
from .residual import Residual
from .sequential import Sequential
from .transformer import GPT, GPTParams, TransformerBlock

__all__ = [
    "ACTIVATIONS", "INITS", "Activation", "AvgPool2D", "BatchNorm", "Conv2D", "ConvParams", "Dense",
    "DenseParams", "Dropout", "Elementwise", "Flatten", "Identity", "Layer", "LayerNorm",
    "MaxPool2D", "NormParams", "ReLU", "Sigmoid", "Softmax", "Tanh", "get",
    "Embedding", "EmbeddingParams", "GRU", "GRUParams", "LSTM", "LastStep", "RNN", "Recurrent",
    "RecurrentParams", "AttentionParams", "CausalSelfAttention", "GELU", "GPT", "GPTParams",
    "PositionEmbedding", "Residual", "Sequential", "TransformerBlock",
]
