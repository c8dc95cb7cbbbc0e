"""A run's configuration: built once by ``fit``, recorded with every checkpoint and in the
history, serialised by the command line into ``config.json``, and compared on resume by one
function.

``RunConfig`` holds what the engine runs (the model as built, the loss, the optimizer with its
rate, the data's size, the batch, the gradient path, the precision and loss scale, the stacked
models, chunking and sharding) and the caller's ``recipe``: the settings that built the model and
the data (the command line's dataset, layers, seed and so on; ``{}`` for a library call). As JSON
(``to_json``) the recipe's keys stand at the top and the engine's under ``"run"``::

    {"dataset": "mnist", "model": "mlp", "layers": [784, 128, 10], ...,
     "run": {"model": "Sequential(Dense(784, 128), ...)", "loss": "cross_entropy", ...}}

A resumed run must be the run it continues: ``differences`` names every setting in which the
saved configuration differs, except those a resume may change (``MAY_CHANGE``: more epochs, the
data read from another folder).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = ["MAY_CHANGE", "ResumeError", "RunConfig", "fingerprint"]

# What a resumed run may change: the number of epochs (more, to train on), and the data's folder.
MAY_CHANGE = frozenset({"epochs", "data_dir"})


class ResumeError(ValueError):
    """A resume that cannot continue the run it names (another configuration)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run (immutable; ``fit`` builds it once).

    Attributes:
        model: the network as built, ``repr(model)`` (its policy included).
        loss: the loss's name.
        optimizer: the optimizer, ``str(optimizer)`` (its rate and schedule included).
        examples: the number of training examples.
        batch_size: rows per step, ``None`` for full batch.
        epochs: the epochs the run trains to.
        grads: ``"manual"`` or ``"autodiff"``.
        fused: whether the fused output rules are used.
        dtype: the params' dtype name.
        precision: the precision ``fit`` was asked for (a policy's name), ``None`` for the model
            as it is.
        loss_scale: ``repr`` of the loss scale, ``None`` for none.
        ensemble: ``K`` models of an ensemble, or ``None``.
        lrs: one rate per stacked model, or ``None``.
        chunk_size: rows per full-batch chunk, or ``None``.
        shard: ``"batch"`` or ``"models"``: what the devices split.
        windows: for a token stream (``TokenWindows``), ``{"block_size", "steps"}`` (``examples``
            then counts the stream's tokens); ``None`` for a data set.
        data: the training data's fingerprint (``fingerprint``): the shapes, dtypes and a hash
            of every byte, so a resume on other data of the same size is refused.
        recipe: the caller's settings (JSON values), read-only.
    """

    model: str
    loss: str
    optimizer: str
    examples: int
    batch_size: int | None
    epochs: int
    grads: str = "manual"
    fused: bool = True
    dtype: str = "float32"
    precision: str | None = None
    loss_scale: str | None = None
    ensemble: int | None = None
    lrs: tuple | None = None
    chunk_size: int | None = None
    shard: str = "batch"
    windows: dict | None = None
    data: dict | None = None
    recipe: Any = field(default_factory=dict, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "recipe", MappingProxyType(dict(self.recipe or {})))
        if self.lrs is not None:
            object.__setattr__(self, "lrs", tuple(float(rate) for rate in self.lrs))

    def engine(self):
        """The engine's settings as a JSON-ready dict (the recipe left out)."""
        settings = {name: getattr(self, name) for name in self.names()}
        settings["lrs"] = None if self.lrs is None else list(self.lrs)
        return settings

    def to_json(self):
        """``{**recipe, "run": engine()}``: what ``config.json`` and checkpoints hold."""
        return {**copy.deepcopy(dict(self.recipe)), "run": self.engine()}

    def differences(self, saved):
        """The settings in which ``saved`` (a ``to_json`` dict of the run to continue) differs
        from this configuration, one ``"name saved -> now"`` line each; empty when this run may
        continue it. The recipe's settings are those of this configuration's recipe (a library
        call without one compares the engine alone); where they differ, only the recipe's lines
        are given (the engine's follow from them). An engine setting ``saved`` lacks (it was
        saved before the setting existed, or flat, without ``"run"``) is not compared.

        Raises:
            ResumeError: ``saved`` is not a dict.
        """
        if not isinstance(saved, dict):
            raise ResumeError(f"a saved configuration must be a JSON object, got "
                              f"{type(saved).__name__}")
        engine = saved.get("run", saved)
        engine = engine if isinstance(engine, dict) else {}
        lines = []
        if "run" in saved:
            lines = [_line(name, saved.get(name), value) for name, value in self.recipe.items()
                     if name not in MAY_CHANGE and saved.get(name) != value]
        return lines or [_line(name, engine[name], value)
                         for name, value in self.engine().items()
                         if name not in MAY_CHANGE and name in engine and engine[name] != value]

    @classmethod
    def names(cls):
        """The engine's setting names, in order."""
        return tuple(f.name for f in fields(cls) if f.name != "recipe")


def fingerprint(*arrays):
    """``{"shapes", "dtypes", "blake2b"}`` of the arrays (the training inputs and targets): a
    128-bit BLAKE2b of their shapes, dtypes and bytes, in order. Reading every byte costs about
    a tenth of a second per 100 MB; a hash of a sample could not tell two data sets that differ
    elsewhere apart."""
    digest = hashlib.blake2b(digest_size=16)
    shapes, dtypes = [], []
    for array in arrays:
        array = np.ascontiguousarray(np.asarray(array))
        shapes.append(list(array.shape))
        dtypes.append(array.dtype.name)
        digest.update(repr((array.shape, array.dtype.str)).encode())
        digest.update(memoryview(array).cast("B"))
    return {"shapes": shapes, "dtypes": dtypes, "blake2b": digest.hexdigest()}


def _line(name, saved, now):
    return f"{name} {saved!r} -> {now!r}"
