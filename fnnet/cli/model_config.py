"""The metadata schema of the model checkpoints ``fnnet train`` writes, and the network rebuilt
from it.

A training run is described by a configuration dict (``train_config``)::

    {"dataset": "mnist", "model": "mlp", "layers": [784, 128, 10], "activation": "relu",
     "output": "softmax", "architecture": null, "loss": "cross-entropy", "optimizer": "momentum",
     "lr": 0.1, "lr_decay": 1.0, "epochs": 10, "batch_size": 128, "grads": "manual", "seed": 0,
     "ensemble": 1, "validation": 5000, "data_dir": null}

It is the ``recipe`` ``fnnet.fit`` records in the run's ``RunConfig``
(``fnnet.training.config``), whose JSON form (these keys, and the engine's settings under
``"run"``) is saved as the run's ``config.json`` and as the metadata of its ``model.npz``
checkpoint (``fnnet.checkpoints.save(path, params, **config, ...)``); a resume compares it
there (``RunConfig.differences``). ``ensemble`` is the number of models
trained together; for more than one their params are stacked along a leading axis.
``lr_decay`` is the factor the learning rate is multiplied by per epoch (1: constant; see
``optimizer_of``). ``validation`` is the number of training examples held out to validate on;
``data_dir`` the folder the data was read from when one was named (``None``: the default
locations), so that the model can be scored on the same data later. Metadata written before a
key existed lacks it; ``LEGACY`` says what it means there.

``model`` is the kind of network (``MODELS``):

- ``"mlp"``: ``mlp(layers, activation, output)`` on flat images ``(N, 784)``; ``architecture``
  is ``None``. Checkpoints written before there was a choice have no ``model`` key: they are MLPs.
- ``"cnn"``: ``cnn(IMAGE_SHAPE, NUM_CLASSES, **architecture)`` on images ``(N, 28, 28, 1)``
  (NHWC); ``architecture`` holds ``fnnet.cnn``'s keyword arguments (``CNN_ARCHITECTURE``: its
  defaults), so that the checkpoint rebuilds the same network whatever ``cnn``'s defaults become.
  ``layers`` is ``None`` (the CNN's layers are not a list of widths), ``activation`` ``"relu"``,
  ``output`` ``"softmax"``, and the loss must be cross-entropy.
- ``"lstm"``: ``sequence_classifier(28, NUM_CLASSES, **architecture)`` on each image read row by
  row, ``(N, 28, 28)``: 28 time steps of 28 pixels (``ROWS_SHAPE``); ``architecture`` holds its
  keyword arguments (``LSTM_ARCHITECTURE``), ``activation`` is ``"tanh"`` (the cell's), the rest
  as for the CNN.

``FIXED`` holds what the CNN and the LSTM fix (their activation and output); ``input_layout``
says how a kind reads an image: ``"flat"``, ``"images"`` or ``"rows"``.

``model_from_metadata`` rebuilds the network and the model count from the ``MODEL_KEYS`` of such
metadata (and ``model``, ``architecture``), refusing what the command line would refuse;
``input_layout`` (and ``takes_images``) say which input layout it takes and ``prepare`` makes it,
``describe`` names it in one line, and
``param_template`` gives the shapes and dtypes to load the params with (``load(path, like=...)``).

Losses and outputs that make no sense together are refused (``LOSS_OUTPUTS``):

- cross-entropy, ``L = −(1/N) Σ_n Σ_i y_ni log ŷ_ni`` as note 003 (experiments/NOTES.md) derives
  it, is a negative log-likelihood only when each row ``ŷ_n`` is a probability distribution over
  the classes, so it needs a softmax output. Sigmoid outputs need not sum to 1 (the loss would
  reward pushing every output to 1) and linear or tanh outputs can be ``≤ 0``, where ``log`` is
  undefined.
- binary cross-entropy, ``L = −(1/N) Σ [y log ŷ + (1 − y) log(1 − ŷ)]`` as note 004
  (experiments/NOTES.md) derives it, needs every output in ``(0, 1)``: a sigmoid output (its fused
  rule ``dL/dZ = (Ŷ − Y)/N``) or softmax.
- mean squared error, ``E = (1/n) Σ_i (y*_i − y_i)²`` as note 000 (experiments/NOTES.md) derives
  it, works with any output.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp

from .. import checks, datasets, optim
from ..datasets import DATASETS
from ..networks import Sequential, cnn, mlp, sequence_classifier
from ..precision import NAMES as precision_names
from ..precision import with_precision

__all__ = ["CNN_ARCHITECTURE", "CONFIG_KEYS", "FIXED", "HIDDEN_ACTIVATIONS", "IMAGE_PIXELS",
           "IMAGE_SHAPE", "LAYOUTS", "LEGACY", "LOSSES", "LOSS_OUTPUTS", "LSTM_ARCHITECTURE",
           "MODELS", "MODEL_KEYS", "MetadataError", "NUM_CLASSES", "OUTPUTS", "ROWS_SHAPE",
           "check_image_layers", "check_loss_output", "check_model_settings", "describe",
           "input_layout", "model_from_metadata", "network", "optimizer_of", "param_template",
           "prepare", "takes_images", "train_config"]

IMAGE_PIXELS = 784
IMAGE_SHAPE = (28, 28, 1)  # (H, W, C) of one image as the CNN takes it
NUM_CLASSES = 10
ROWS_SHAPE = (28, 28)  # (T, features) of one image read row by row, as the LSTM takes it
MODELS = ("mlp", "cnn", "lstm")


def _defaults(factory, *given):
    """``factory``'s keyword arguments but ``given``, at their defaults (JSON-ready)."""
    return {name: list(p.default) if isinstance(p.default, tuple) else p.default
            for name, p in inspect.signature(factory).parameters.items() if name not in given}


CNN_ARCHITECTURE = _defaults(cnn, "input_shape", "classes")
LSTM_ARCHITECTURE = _defaults(sequence_classifier, "n_in", "classes")
# What the networks other than the MLP fix: their hidden activation and their output.
FIXED = {"cnn": {"activation": "relu", "output": "softmax"},
         "lstm": {"activation": "tanh", "output": "softmax"}}
LAYOUTS = {"mlp": "flat", "cnn": "images", "lstm": "rows"}
HIDDEN_ACTIVATIONS = ("relu", "sigmoid", "tanh", "linear")
OUTPUTS = ("softmax", "sigmoid", "tanh", "linear")
LOSSES = ("cross-entropy", "mse", "binary-cross-entropy")
# The outputs each loss accepts (see the module docstring).
LOSS_OUTPUTS = {
    "cross-entropy": ("softmax",),
    "binary-cross-entropy": ("sigmoid", "softmax"),
    "mse": OUTPUTS,
}
# Every key of a training configuration, in the order written.
CONFIG_KEYS = ("dataset", "model", "layers", "activation", "output", "architecture", "loss",
               "optimizer", "lr", "lr_decay", "epochs", "batch_size", "grads", "precision", "seed",
               "ensemble", "validation", "data_dir")
# The keys ``model_from_metadata`` needs to rebuild the network (and ``LEGACY``'s, if present).
MODEL_KEYS = ("dataset", "layers", "activation", "output", "loss", "ensemble")
# What a key added since the first checkpoints means where it is absent.
LEGACY = {"model": "mlp", "architecture": None, "lr_decay": 1.0, "precision": "f32"}


class MetadataError(ValueError):
    """Metadata (or a configuration) that does not describe a network ``fnnet train`` builds."""


def train_config(*, dataset: str, loss: str, optimizer: str, lr: float, epochs: int,
                 batch_size: int | None, grads: str, seed: int, ensemble: int, model: str = "mlp",
                 layers=None, activation: str | None = None, output: str | None = None,
                 architecture: dict | None = None, lr_decay: float = 1.0, validation: int = 0,
                 data_dir=None, precision: str = "f32") -> dict:
    """The configuration of a training run, as saved in ``config.json`` and checkpoint metadata.

    Args:
        dataset: one of ``fnnet.datasets.DATASETS``.
        loss: one of ``LOSSES``, accepting ``output`` (``LOSS_OUTPUTS``); cross-entropy for a CNN.
        optimizer: an ``fnnet.optim.NAMES`` entry (a name: an optimizer object is refused).
        lr: the learning rate, a finite number > 0.
        epochs: the number of epochs.
        batch_size: the minibatch size, ``None`` for full-batch gradient descent.
        grads: ``"manual"`` or ``"autodiff"``.
        precision: the products' policy, one of ``fnnet.precision.NAMES``.
        seed: the random seed.
        ensemble: the number of models trained together.
        model: one of ``MODELS``.
        layers: the MLP's layer sizes, input first (required for an MLP; ``None`` for a CNN).
        activation: the MLP's hidden-layer activation, one of ``HIDDEN_ACTIVATIONS`` (required for
            an MLP; a CNN's is ``"relu"``).
        output: the output activation, one of ``OUTPUTS`` (required for an MLP; a CNN's is
            ``"softmax"``).
        architecture: a CNN's ``fnnet.cnn`` keyword arguments (default ``CNN_ARCHITECTURE``);
            ``None`` for an MLP.
        lr_decay: the factor ``0 < lr_decay <= 1`` the learning rate is multiplied by per epoch.
        validation: the number of training examples held out for validation.
        data_dir: the folder the data was read from, or ``None`` for the default locations.

    Returns:
        A dict with the ``CONFIG_KEYS`` in that order; ``layers`` as a list of ints (or ``None``),
        ``data_dir`` as a string.

    Raises:
        MetadataError: the network settings are not ones ``model_from_metadata`` rebuilds, or
            the optimizer is not one of ``fnnet.optim.NAMES`` or the learning rate not > 0.
    """
    try:
        checks.choice("train_config", "optimizer", optimizer, optim.NAMES)
        checks.real("train_config", "lr", lr, low=0, low_open=True)
        checks.real("train_config", "lr_decay", lr_decay, low=0, high=1, low_open=True)
        checks.integer("train_config", "validation", validation, minimum=0)
        checks.choice("train_config", "precision", precision, precision_names)
    except ValueError as e:
        raise MetadataError(str(e)) from None
    if model in FIXED:
        activation = FIXED[model]["activation"] if activation is None else activation
        output = FIXED[model]["output"] if output is None else output
        architecture = dict(_ARCHITECTURES[model]) if architecture is None else architecture
    config = {"dataset": dataset, "model": model,
              "layers": None if layers is None else list(layers), "activation": activation,
              "output": output, "architecture": architecture, "loss": loss,
              "optimizer": optimizer, "lr": lr, "lr_decay": lr_decay, "epochs": epochs,
              "batch_size": batch_size, "grads": grads, "precision": precision, "seed": seed,
              "ensemble": ensemble,
              "validation": validation, "data_dir": None if data_dir is None else str(data_dir)}
    check_model_settings(config)
    return config


def check_loss_output(loss: str, output: str, prefix: str = "") -> None:
    """Refuse a loss and output that make no sense together (see the module docstring).

    Args:
        loss: one of ``LOSSES``.
        output: the output activation.
        prefix: put before each setting's name in the message (``"--"`` for command-line flags).

    Raises:
        MetadataError: ``output`` is not in ``LOSS_OUTPUTS[loss]``.
    """
    allowed = LOSS_OUTPUTS[loss]
    if output not in allowed:
        raise MetadataError(f"{prefix}loss {loss} needs {prefix}output {' or '.join(allowed)} "
                            f"(outputs that are probabilities), got {prefix}output {output}")


def check_image_layers(layers, dataset: str) -> None:
    """Refuse layer sizes that do not map a ``dataset`` image to its classes.

    Args:
        layers: layer sizes, input first.
        dataset: one of ``fnnet.datasets.DATASETS`` (all are 28×28 images of 10 classes).

    Raises:
        MetadataError: the first size is not ``IMAGE_PIXELS`` or the last not ``NUM_CLASSES``.
    """
    if layers[0] != IMAGE_PIXELS or layers[-1] != NUM_CLASSES:
        raise MetadataError(
            f"{dataset} images have {IMAGE_PIXELS} pixels and {NUM_CLASSES} classes, so the layers "
            f"must start at {IMAGE_PIXELS} and end at {NUM_CLASSES}; got "
            f"{','.join(map(str, layers))}")


def check_model_settings(metadata: dict) -> None:
    """Check the ``MODEL_KEYS`` of ``metadata`` (and ``model``, ``architecture`` where present):
    present, each valid, and consistent together.

    Raises:
        MetadataError: naming the missing keys, or the invalid values as ``key=value``, or why
            the layers or the loss and output do not go together.
    """
    if not isinstance(metadata, dict):
        raise MetadataError(f"metadata must be a dict, got {type(metadata).__name__}")
    if metadata.get("dataset") == "shakespeare":
        raise MetadataError("a character model of tiny Shakespeare, not an image classifier: "
                            "read it with 'fnnet sample'")
    missing = [key for key in MODEL_KEYS if key not in metadata]
    if missing:
        raise MetadataError(f"not a model checkpoint written by fnnet train (its metadata lacks "
                            f"{', '.join(missing)})")
    kind = metadata.get("model", LEGACY["model"])
    if kind not in MODELS:
        raise MetadataError(f"invalid metadata (model={kind!r}; expected one of "
                            f"{', '.join(MODELS)})")
    num_models = metadata["ensemble"]
    valid = {
        "dataset": metadata["dataset"] in DATASETS,
        "loss": metadata["loss"] in LOSSES,
        "ensemble": type(num_models) is int and num_models >= 1,
        **(_mlp_validity(metadata) if kind == "mlp" else _fixed_validity(metadata, kind)),
    }
    bad = [f"{key}={metadata.get(key)!r}" for key, ok in valid.items() if not ok]
    if bad:
        raise MetadataError(f"invalid metadata ({', '.join(bad)})")
    if kind == "mlp":
        check_image_layers(metadata["layers"], metadata["dataset"])
    check_loss_output(metadata["loss"], metadata["output"])


def _mlp_validity(metadata):
    """Whether each MLP setting is valid: ``{key: ok}``."""
    layers = metadata["layers"]
    return {
        "layers": isinstance(layers, list) and len(layers) >= 2
        and all(type(size) is int and size > 0 for size in layers),
        "activation": metadata["activation"] in HIDDEN_ACTIVATIONS,
        "output": metadata["output"] in OUTPUTS,
        "architecture": metadata.get("architecture") is None,
    }


def _fixed_validity(metadata, kind):
    """Whether each setting of a CNN or an LSTM is valid: ``{key: ok}``; the architecture must
    build a network for the dataset's images."""
    architecture = metadata.get("architecture")
    builds = isinstance(architecture, dict) and set(architecture) == set(_ARCHITECTURES[kind])
    if builds:
        try:
            _BUILDERS[kind](architecture)
        except (ValueError, TypeError):
            builds = False
    fixed = FIXED[kind]
    return {"layers": metadata["layers"] is None,
            "activation": metadata["activation"] == fixed["activation"],
            "output": metadata["output"] == fixed["output"], "architecture": builds,
            "loss": metadata["loss"] == "cross-entropy"}


def _build_cnn(architecture):
    settings = dict(architecture, channels=tuple(architecture["channels"]))
    return cnn(IMAGE_SHAPE, NUM_CLASSES, **settings)


def _build_lstm(architecture):
    return sequence_classifier(ROWS_SHAPE[1], NUM_CLASSES, **architecture)


_ARCHITECTURES = {"cnn": CNN_ARCHITECTURE, "lstm": LSTM_ARCHITECTURE}
_BUILDERS = {"cnn": _build_cnn, "lstm": _build_lstm}


def model_from_metadata(metadata: dict) -> tuple[Sequential, int]:
    """The network a checkpoint holds, rebuilt from its metadata.

    Args:
        metadata: a checkpoint's metadata (or a ``train_config`` dict); only the ``MODEL_KEYS``,
            ``model``, ``architecture`` and ``precision`` are read.

    Returns:
        ``(model, num_models)``: ``mlp(layers, activation, output)`` or
        ``cnn(IMAGE_SHAPE, NUM_CLASSES, **architecture)``, its products under the run's
        ``precision`` (``fnnet.precision``), and the number of models whose params are stacked
        in the checkpoint (1: not stacked).

    Raises:
        MetadataError: as ``check_model_settings``, or an unknown ``precision``.
    """
    policy = metadata.get("precision", LEGACY["precision"]) if isinstance(metadata, dict) else None
    model = network(metadata)
    if policy not in precision_names:
        raise MetadataError(f"invalid metadata (precision={policy!r}; expected one of "
                            f"{', '.join(precision_names)})")
    return with_precision(model, policy), metadata["ensemble"]


def network(metadata: dict) -> Sequential:
    """The network of ``metadata`` as built, before any precision policy: ``mlp(layers,
    activation, output)`` or ``cnn(IMAGE_SHAPE, NUM_CLASSES, **architecture)``.

    Raises:
        MetadataError: as ``check_model_settings``.
    """
    check_model_settings(metadata)
    kind = metadata.get("model", LEGACY["model"])
    if kind in _BUILDERS:
        return _BUILDERS[kind](metadata["architecture"])
    return mlp(metadata["layers"], metadata["activation"], metadata["output"])


def input_layout(metadata: dict) -> str:
    """How the network of ``metadata`` reads an image: ``"flat"`` rows ``(N, 784)`` (an MLP),
    ``"images"`` ``(N, 28, 28, 1)`` (a CNN) or ``"rows"`` ``(N, 28, 28)``, 28 time steps of 28
    pixels (an LSTM)."""
    return LAYOUTS[metadata.get("model", LEGACY["model"])]


def takes_images(metadata: dict) -> bool:
    """Whether the network of ``metadata`` takes images ``(N, 28, 28, 1)`` (a CNN)."""
    return input_layout(metadata) == "images"


def prepare(metadata: dict, x, y):
    """``(x, y)`` of a data set (uint8 images, labels) as the network of ``metadata`` reads
    them (``input_layout``), through ``fnnet.datasets.prepare``."""
    layout = input_layout(metadata)
    x, y = datasets.prepare(x, y, images=layout != "flat")
    return (x.reshape((len(x), *ROWS_SHAPE)) if layout == "rows" else x), y


def describe(metadata: dict) -> str:
    """The network of ``metadata`` in a few words: ``"784-128-10 relu/softmax"`` or
    ``"cnn conv 32-64 (3x3, pool 2), dense 128, dropout 0.5"``."""
    layout = input_layout(metadata)
    if layout == "flat":
        return (f"{'-'.join(map(str, metadata['layers']))} "
                f"{metadata['activation']}/{metadata['output']}")
    arch = metadata["architecture"]
    if layout == "rows":
        return f"{arch['cell']} {arch['hidden']} over 28 rows of 28 pixels, dense 10"
    size = arch["kernel_size"]
    head = f", dense {arch['hidden']}" if arch["hidden"] else ""
    drop = f", dropout {arch['dropout']:g}" if arch["dropout"] else ""
    return (f"cnn conv {'-'.join(map(str, arch['channels']))} ({size}x{size}, pool "
            f"{arch['pool']}){head}{drop}")


def optimizer_of(config: dict, steps_per_epoch: int) -> optim.Optimizer:
    """The optimizer a configuration trains with: ``optim.get(optimizer, lr)``, and for
    ``lr_decay < 1`` the schedule ``lr_t = lr · lr_decay^(t / steps_per_epoch)`` at update ``t``
    (smooth, so the rate is ``lr · lr_decay^e`` at the start of epoch ``e + 1``). The schedule
    depends on neither the epoch count nor the epoch, so a resumed run with more epochs follows
    the same rates as an uninterrupted one.

    Args:
        config: a ``train_config`` dict (``lr_decay`` absent: 1).
        steps_per_epoch: the updates per epoch (``N // batch_size``; 1 for full batch).
    """
    decay = config.get("lr_decay", LEGACY["lr_decay"])
    if decay == 1:
        return optim.get(config["optimizer"], config["lr"])
    schedule = optim.exponential_decay(decay, every=steps_per_epoch)
    return optim.get(config["optimizer"], config["lr"], schedule=schedule)


def param_template(model, num_models: int, dtype=jnp.float32):
    """The shapes and dtypes of the params ``fnnet train`` saves, for ``checkpoints.load(like=)``.

    Args:
        model: the network (``model_from_metadata``).
        num_models: 1 for one model's params; more for params stacked along a leading axis.
        dtype: the params' floating dtype.

    Returns:
        A pytree of ``jax.ShapeDtypeStruct``; nothing is computed or allocated.
    """
    init = lambda key: model.init(key, dtype)
    if num_models == 1:
        return jax.eval_shape(init, jax.random.PRNGKey(0))
    return jax.eval_shape(jax.vmap(init), jax.random.split(jax.random.PRNGKey(0), num_models))
