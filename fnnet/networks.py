"""Networks: the factories of whole models (``mlp``, ``cnn``, ``sequence_classifier``,
``language_model``, ``gpt``), each a ``Sequential`` of layers (``fnnet.layers.sequential``, note
000's sequential model in experiments/NOTES.md), re-exported here.
"""

from __future__ import annotations

from .checks import integer
from .layers import (
    GPT,
    GRU,
    LSTM,
    RNN,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    Identity,
    LastStep,
    MaxPool2D,
    ReLU,
    Sequential,
    Softmax,
)
from .layers import get as get_activation

__all__ = ["Sequential", "cnn", "gpt", "language_model", "mlp", "sequence_classifier"]

DEFAULT_INIT = {"relu": "he", "sigmoid": "xavier", "tanh": "xavier", "linear": "xavier"}


def mlp(sizes, activation="relu", output="softmax", init=None):
    """A multilayer perceptron: ``Dense`` layers with an activation after each.

    ``mlp([784, 128, 10])`` is ``Sequential(Dense(784, 128), ReLU(), Dense(128, 10), Softmax())``.

    Args:
        sizes: the layer widths, input first: at least two.
        activation: the activation between ``Dense`` layers, a name or an activation layer.
        output: the activation after the last (``softmax``, ``sigmoid``, ``tanh``, ``relu`` or
            ``linear``/``None``).
        init: the weight initialisation of every ``Dense``; by default He for ReLU hidden layers
            and Xavier/Glorot for tanh, sigmoid and linear (``DEFAULT_INIT``).
    """
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"mlp: sizes needs at least an input and an output size, got {sizes}")
    hidden = _activation_layer(activation, "activation")
    output_layer = Identity() if output is None else _activation_layer(output, "output")
    if init is None:
        init = DEFAULT_INIT.get(activation if isinstance(activation, str) else "", "he")
    layers = []
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Dense(n_in, n_out, init=init))
        layers.append(hidden if index < len(sizes) - 2 else output_layer)
    return Sequential(*layers)


def _activation_layer(name, what):
    try:
        return get_activation(name)
    except ValueError as error:
        raise ValueError(f"mlp: {what}: {error}") from None


def cnn(input_shape=(28, 28, 1), classes=10, channels=(32, 64), kernel_size=3, pool=2,
        hidden=128, dropout=0.5):
    """A small LeNet-style convolutional network for images ``(N, H, W, C)``.

    ``cnn()`` is, for MNIST (the shapes after each stage in brackets)::

        Conv2D(1, 32, 3) ReLU MaxPool2D(2)       (26, 26, 32) -> (13, 13, 32)
        Conv2D(32, 64, 3) ReLU MaxPool2D(2)      (11, 11, 64) -> (5, 5, 64)
        Flatten Dropout(0.5)                     (1600,)
        Dense(1600, 128) ReLU Dense(128, 10) Softmax

    Args:
        input_shape: ``(H, W, C)`` of one image.
        classes: the number of outputs.
        channels: the output channels of each conv/ReLU/pool stage (valid 3×3 convolutions).
        kernel_size: the convolutions' kernel size.
        pool: the max pools' window (and stride).
        hidden: the width of the dense layer before the output; ``None`` for none.
        dropout: the dropout rate before the dense head (0 for none).
    """
    height, width, in_channels = (checks_positive("cnn", "input_shape", input_shape, 3))
    layers = []
    for out_channels in channels:
        layers += [Conv2D(in_channels, out_channels, kernel_size), ReLU(), MaxPool2D(pool)]
        height, width = (height - kernel_size + 1) // pool, (width - kernel_size + 1) // pool
        if height < 1 or width < 1:
            raise ValueError(f"cnn: an image of {input_shape} is too small for {len(channels)} "
                             f"stages of {kernel_size}×{kernel_size} convolution and {pool}×{pool} "
                             f"pooling")
        in_channels = out_channels
    layers.append(Flatten())
    if dropout:
        layers.append(Dropout(dropout))
    features = height * width * in_channels
    if hidden:
        layers += [Dense(features, hidden), ReLU()]
        features = hidden
    layers += [Dense(features, classes), Softmax()]
    return Sequential(*layers)


CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}


def sequence_classifier(n_in, classes, hidden=128, cell="lstm"):
    """A recurrent network that reads a sequence ``(N, T, n_in)`` and classifies it from its last
    hidden state::

        LSTM(n_in, hidden)  LastStep  Dense(hidden, classes)  Softmax

    MNIST read row by row is such a sequence: 28 time steps of 28 pixels.

    Args:
        n_in: features per time step.
        classes: the number of outputs.
        hidden: the recurrent layer's width.
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (a tanh RNN).
    """
    if cell not in CELLS:
        raise ValueError(f"sequence_classifier: cell must be one of {', '.join(CELLS)}, got "
                         f"{cell!r}")
    return Sequential(CELLS[cell](n_in, integer("sequence_classifier", "hidden", hidden)),
                      LastStep(), Dense(hidden, classes), Softmax())


def language_model(vocab_size, dim=64, hidden=256, depth=1, cell="lstm", stateful=None):
    """A character (or token) language model: ids ``(N, T)`` to next-token probabilities
    ``(N, T, vocab_size)``::

        Embedding(vocab_size, dim)  LSTM(dim, hidden) [LSTM(hidden, hidden) ...]
        Dense(hidden, vocab_size)  Softmax

    trained with cross-entropy over every token (``dZ = (A − Y)/(N·T)``).

    Args:
        vocab_size: the number of ids.
        dim: the embedding's width.
        hidden: each recurrent layer's width.
        depth: the number of recurrent layers.
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"``.
        stateful: ``N`` to carry the recurrent state of ``N`` sequences from one call to the
            next (truncated backpropagation through time; generation with ``N = 1``), or
            ``None``.
    """
    if cell not in CELLS:
        raise ValueError(f"language_model: cell must be one of {', '.join(CELLS)}, got {cell!r}")
    integer("language_model", "depth", depth)
    widths = [integer("language_model", "dim", dim)] + [hidden] * depth
    recurrent = [CELLS[cell](n_in, n_out, stateful=stateful)
                 for n_in, n_out in zip(widths[:-1], widths[1:])]
    return Sequential(Embedding(vocab_size, dim), *recurrent, Dense(hidden, vocab_size),
                      Softmax())


def gpt(vocab_size, block_size, layers, heads, dim, dropout=0.0, tie_weights=True, *,
        backward_form="lean", block=128):
    """A GPT (``fnnet.layers.transformer``, its derivation there): ids ``(N, T)`` with
    ``T ≤ block_size`` to next-token probabilities ``(N, T, vocab_size)``::

        Sequential(GPT(vocab_size, block_size, layers, heads, dim, ...), Softmax())

    trained with cross-entropy over every token (the fused ``dZ = (A − Y)/(N·T)``).
    nanoGPT's character-level Shakespeare model is ``gpt(65, 64, 4, 4, 128)``.

    Args:
        vocab_size: the number of ids.
        block_size: the longest context.
        layers: transformer blocks.
        heads: attention heads per block (dividing ``dim``).
        dim: the width of the residual stream.
        dropout: the rate of every dropout, ``[0, 1)``.
        tie_weights: share the token embedding with the output head.
        backward_form: the attention's backward: ``"lean"`` (memory O(T)) or ``"keep_p"``.
        block: the lean attention's query rows per block.
    """
    return Sequential(GPT(vocab_size, block_size, layers, heads, dim, dropout, tie_weights,
                          backward_form=backward_form, block=block), Softmax())


def checks_positive(where, name, values, length):
    """``values`` as a tuple of ``length`` positive integers."""
    values = tuple(values)
    if len(values) != length:
        raise ValueError(f"{where}: {name} must have {length} entries, got {values!r}")
    return tuple(integer(where, name, value) for value in values)
