"""Where training runs: the device code, in one room.

- ``parallel``: data parallelism (each minibatch split across a mesh of devices, the params
  replicated), ``chunked`` full-batch gradients, and the mesh helpers.
- ``placement``: what ``fit(devices=..., shard=...)`` splits, ``"batch"`` or ``"models"`` (the
  K stacked models of an ensemble across the devices), as one ``Placement``.
- ``distributed``: several processes training as one (``jax.distributed``), joined with a
  bounded wait and watched by a heartbeat; ``fnnet launch`` starts them.

Importing this package imports ``parallel`` and ``placement``; ``distributed`` is imported
when used (``from fnnet.devices import distributed``), and neither changes a JAX setting.
"""

from . import parallel, placement

__all__ = ["parallel", "placement"]
