"""Where ``fit`` trains: one device, each minibatch split across devices, or the models of an
ensemble or sweep placed on the devices.

``fit(..., devices=D, shard=...)`` (``shard=None`` means ``"batch"`` when devices are given)
    ``"batch"``: each minibatch is split across the devices and the params are replicated
    (``fnnet.devices.parallel.data_parallel``); every step all-reduces the gradient. ``"models"``: the
    ``K`` models of ``ensemble=K`` or ``lrs=[...]`` are placed on the devices, ``K/D`` whole
    models on each. A multi-GPU sweep wants the second: its models share only the data, so a
    device can train its models without hearing from the others.

Models across devices (``shard="models"``)
    A ``TrainState`` of ``K`` models has every leaf stacked along a leading model axis
    (``TrainState.create`` vmaps them all). That axis is split across a one-axis mesh named
    ``"models"`` (``NamedSharding(mesh, P("models"))`` on every leaf), so device ``d`` holds
    models ``d·K/D … (d+1)·K/D − 1``, and the data are replicated (each model shuffles and draws
    its own minibatches from all of them). The epoch program is the same vmapped one that trains
    the ``K`` models on one device (``EpochRunner``); the axis vmap adds is the sharded one, and
    XLA's SPMD partitioner compiles for each device the program of its ``K/D`` models. Every
    model's shuffle, gather, forward, backward and update read only its own state and the
    replicated data, so the compiled step holds no collective (the tests read its HLO). The
    models equal those one device trains up to float rounding: the ``K/D``-model program is
    compiled on its own, and XLA may order a few float operations differently in it.

    ``K`` must be divisible by ``D``: a mesh axis splits an array into equal parts, and padding
    ``K`` up would train models nobody asked for. Validation scores each device's models where
    they are; a checkpoint gathers the state to the host (``np.asarray`` of a sharded array), and
    a resumed run places it again. One host only: another host's models could be neither
    checkpointed nor scored from this process, so ``shard="models"`` is refused when
    ``jax.process_count() > 1``.

A ``shard`` the run cannot honour is refused, never ignored: without ``devices`` there is nothing
to split across, and one model cannot be split by model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .. import checks
from . import parallel

#: The mesh axis that ``shard="models"`` splits the leading (model) axis of a ``TrainState`` over.
MODELS_AXIS = "models"

#: What ``fit(..., shard=...)`` may split across devices: each minibatch, or the stacked models.
SHARDS = ("batch", "models")


def resolve_shard(shard, devices, models, where="fit"):
    """What ``fit(..., shard=shard, devices=devices)`` splits: ``None`` (no devices given),
    ``"batch"`` or ``"models"``.

    ``shard=None`` means ``"batch"`` with devices (what ``devices`` did before ``shard``
    existed). Refused: a value other than ``SHARDS``; any ``shard`` without ``devices``;
    ``"models"`` for one model (``models`` is ``None``) or across several processes.
    """
    if shard is None:
        return None if devices is None else "batch"
    checks.choice(where, "shard", shard, SHARDS)
    if devices is None:
        raise ValueError(f"{where}: shard={shard!r} splits work across devices, but devices=None; "
                         f"pass devices= (a count, a list of jax devices or 'all'), or leave "
                         f"shard out to train on the default device")
    if shard == "models" and models is None:
        raise ValueError(f"{where}: shard='models' places the K models of ensemble=K or lrs=[...] "
                         f"on the devices, but this run trains one model; pass ensemble=K or "
                         f"lrs=[...], or use shard='batch' to split each minibatch")
    if shard == "models" and jax.process_count() > 1:
        raise ValueError(f"{where}: shard='models' runs on one host only, but "
                         f"{jax.process_count()} processes take part; use shard='batch'")
    return shard


def model_parallel(devices, models, data):
    """Prepare training ``models`` stacked models across devices: ``(mesh, data)``.

    ``mesh`` has one axis, ``"models"``, over ``parallel.resolve_devices(devices)``; ``data`` (a
    pytree of arrays, ``(x, y)``) comes back replicated on every device of it. ``models`` must be
    divisible by the device count (the error names both and what would do); ``shard_models``
    then places the state.
    """
    mesh = parallel.make_mesh(devices, MODELS_AXIS)
    count = mesh.devices.size
    if models % count:
        fewer = max(d for d in range(1, count + 1) if models % d == 0)
        more = sorted({(models // count) * count, (models // count + 1) * count} - {0})
        raise ValueError(
            f"devices: shard='models' needs the number of models, K={models}, to be divisible by "
            f"the D={count} devices (each device trains K/D whole models); train "
            f"{' or '.join(map(str, more))} models, use devices={fewer} (a divisor of K), or use "
            f"shard='batch' to split each minibatch instead")
    return mesh, parallel.replicate(data, mesh)


def models_sharded(mesh):
    """The sharding that splits the leading (model) axis across ``mesh``: ``P("models")``."""
    return NamedSharding(mesh, P(MODELS_AXIS))


def shard_models(tree, mesh):
    """``tree`` (a ``TrainState`` of ``K`` stacked models) with the leading axis of every leaf
    split across ``mesh`` (``models_sharded``): each device holds ``K/D`` whole models.

    A leaf without a leading axis the devices divide is refused rather than guessed at (every
    leaf of a stacked state has one, so such a leaf means the tree is not one).

    The state goes through the host: ``device_put`` of a host array copies each device's slice
    to it and compiles nothing, where moving a device array to a new sharding compiles a slicing
    program per leaf shape (0.7 s for a small MLP on the 2-core CPU, more than the epoch).
    Each device receives only its ``K/D`` models.
    """
    count = mesh.devices.size
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        shape = np.shape(leaf)
        if not shape or shape[0] % count:
            raise ValueError(f"shard_models: leaf {jax.tree_util.keystr(path)} of shape {shape} "
                             f"has no leading model axis divisible by the {count} devices")
    return jax.device_put(jax.device_get(tree), models_sharded(mesh))


class Placement(NamedTuple):
    """Where ``fit`` trains, as ``plan`` decides it.

    Attributes:
        shard: ``None`` (the default device), ``"batch"`` or ``"models"``.
        mesh: the one-axis ``Mesh`` (axis ``"batch"`` or ``"models"``), ``None`` without devices.
        shard_batch: ``"batch"``'s sharding constraint for each minibatch, else ``None``.
    """

    shard: str | None = None
    mesh: Mesh | None = None
    shard_batch: Callable | None = None

    @property
    def batch_mesh(self):
        """The mesh each minibatch (or full-batch chunk) is split over, ``None`` if none is."""
        return self.mesh if self.shard == "batch" else None

    @property
    def recorded(self):
        """The ``shard`` a run's configuration records, ``"models"`` or ``"batch"`` (one device
        holds all of each batch), so that a resume which changes it is refused."""
        return "models" if self.shard == "models" else "batch"

    def place(self, state):
        """``state`` on the devices: replicated for ``"batch"``, split by model for ``"models"``
        (``shard_models``), as it is without devices."""
        if self.shard == "models":
            return shard_models(state, self.mesh)
        return state if self.mesh is None else parallel.replicate(state, self.mesh)


def plan(devices, shard, batch_rows, models, data):
    """``(Placement, data)`` for ``fit(..., devices=devices, shard=shard)``: the checks
    (``resolve_shard``, then ``data_parallel``'s or ``model_parallel``'s), the mesh, and ``data``
    replicated on it (as given, without devices). ``batch_rows``: rows per step; ``models``:
    ``K``, or ``None`` for one model."""
    shard = resolve_shard(shard, devices, models)
    if shard == "batch":
        mesh, shard_batch, data = parallel.data_parallel(devices, batch_rows, data)
        return Placement(shard, mesh, shard_batch), data
    if shard == "models":
        mesh, data = model_parallel(devices, models, data)
        return Placement(shard, mesh), data
    return Placement(), data
