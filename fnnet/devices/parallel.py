"""Speed and scale: data parallelism across devices, and the full-batch gradient in chunks.

Data parallel (``fit(..., devices=...)``)
    One step on a minibatch ``X_B`` (``B`` rows) with ``D`` devices: the batch is split into ``D``
    shards of ``B/D`` rows, every device holds the same params, and the gradient, a mean over the
    batch, is the weighted sum of the shards' gradients::

        dL/dW = (1/B) Σ_n g_n = Σ_d (B_d/B) · [(1/B_d) Σ_{n ∈ shard d} g_n]

    Nothing in the step is written for devices: ``data_parallel`` places the data and ``fit`` the
    params replicated (``NamedSharding(mesh, P())``), and ``shard_batch`` marks each minibatch as split
    along a mesh axis called ``"batch"`` (``P("batch")``). XLA's SPMD partitioner then runs each
    layer's forward and backward on the local rows and inserts the all-reduce that sums ``dW`` and
    ``db`` across devices, so every device applies the same update and the params stay replicated.

    The data are replicated, not sharded: each epoch's shuffle draws any example into any
    minibatch, so a device may need any row, and a gather from a sharded array would move rows
    between devices at every step. MNIST (188 MB in float32) fits on any accelerator many times.

    Multi-host: start every process with ``jax.distributed.initialize()`` (or
    ``jax.distributed.initialize(coordinator_address="host0:1234", num_processes=P,
    process_id=i)`` where the cluster is not auto-detected) before any other JAX call; then
    ``jax.devices()`` lists the devices of all hosts, and every process runs the same
    ``fit(..., devices="all")`` with the same data, key and arguments. Each host holds a full copy
    of the data, each minibatch is split across all devices of all hosts, the gradient all-reduce
    crosses hosts, and every process ends with the same params. The batch size must be divisible
    by the total number of devices.

Models across devices (``fit(..., ensemble=K, devices=..., shard="models")``)
    Each device trains ``K/D`` whole models instead of a part of every minibatch:
    ``fnnet.devices.placement``, which also chooses between the two for ``fit``.

Chunked full-batch gradient (``chunked``)
    Full-batch gradient descent over ``X`` (``N × n_in``) reads ``X`` twice per iteration: in the
    forward ``Z = X Wᵀ`` and again in the backward ``dW = dZᵀ X`` (note 004). When ``X`` is much
    larger than the caches, both reads come from memory. ``chunked`` computes the same gradient as
    a sum over chunks of ``c`` rows: the forward and the hand-derived backward of one chunk run
    while it is in cache, so ``X`` comes from memory once. Every loss of fnnet is a mean over
    examples, so with chunks ``C_k`` of ``c_k`` rows::

        L = Σ_k (c_k/N) L_k           dL/dθ = Σ_k (c_k/N) dL_k/dθ

    where ``L_k`` is the loss of chunk ``k`` alone (a mean over its ``c_k`` rows).
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "batch"

#: The rows of a full-batch chunk are chosen so one chunk of ``X`` takes at most this many bytes:
#: a few MiB stay in the last-level cache while the chunk's forward and backward read them.
CHUNK_BYTES = 8 * 2**20

#: ``fit`` chunks a full batch only from this many rows on: below it ``X`` is cache-sized anyway.
MIN_CHUNKED_ROWS = 8192

#: ``chunk_size="auto"`` chunks a full batch only when ``X`` takes more than this fraction of the
#: memory of the device holding it (``device_memory_bytes``): then the unchunked step's
#: activations, each ``n`` rows by a layer's width, may not fit beside it. Below it the unchunked
#: step is the faster one wherever it was measured (chunked 0.85–0.94× on W1, Zen 3 and Sapphire
#: Rapids: there the step is compute-bound, and reading X once instead of twice buys nothing).
CHUNK_MEMORY_FRACTION = 1 / 16


def resolve_devices(devices):
    """The list of devices that ``devices`` names.

    ``devices`` is ``"all"`` (every device of ``jax.devices()``), a positive int ``n`` (the first
    ``n`` of ``jax.devices()``) or a non-empty list/tuple of distinct ``jax.Device`` objects.
    """
    available = jax.devices()
    if isinstance(devices, str):
        if devices != "all":
            raise ValueError(f"devices: expected 'all', an int or a list of jax devices, got {devices!r}")
        return list(available)
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if devices < 1:
            raise ValueError(f"devices: asked for {devices} devices; expected a count of at least 1")
        if devices > len(available):
            raise ValueError(
                f"devices: asked for {devices} devices but only {len(available)} exist "
                f"({_names(available)}); on the CPU, XLA_FLAGS=--xla_force_host_platform_device_count"
                f"={devices} set before importing jax makes {devices} host devices")
        return list(available[:devices])
    if isinstance(devices, (list, tuple)):
        if not devices:
            raise ValueError("devices: the list of devices is empty; pass at least one jax device, "
                             "an int count, or 'all'")
        for i, d in enumerate(devices):
            if not isinstance(d, jax.Device):
                raise TypeError(f"devices: entry {i} is {d!r} ({type(d).__name__}), expected a "
                                f"jax.Device such as jax.devices()[0]")
        if len(set(devices)) != len(devices):
            raise ValueError(f"devices: the list names a device twice: {_names(devices)}")
        return list(devices)
    raise TypeError(f"devices: expected 'all', an int or a list of jax devices, got "
                    f"{type(devices).__name__} {devices!r}")


def _names(devices):
    return "[" + ", ".join(str(d) for d in devices) + "]"


def make_mesh(devices, axis=AXIS):
    """A one-axis ``Mesh`` named ``axis`` (``"batch"``, or ``"models"``) over
    ``resolve_devices(devices)``."""
    return Mesh(np.array(resolve_devices(devices), dtype=object), (axis,))


def replicated(mesh):
    """The sharding that puts a full copy on every device of ``mesh``: ``NamedSharding(mesh, P())``."""
    return NamedSharding(mesh, P())


def batch_sharded(mesh):
    """The sharding that splits the leading (batch) axis across ``mesh``: ``P("batch")``."""
    return NamedSharding(mesh, P(AXIS))


def replicate(tree, mesh):
    """``tree`` (params, optimizer state, keys, data) copied onto every device of ``mesh``.

    With several processes (``jax.distributed``) every process holds the same values, and each
    global array is built from this process's copy (``jax.make_array_from_callback``):
    ``jax.device_put`` would first all-gather every array to check that the processes agree,
    which moves the whole dataset between processes and fails on a NaN (``NaN != NaN``), such
    as ``TrainState.loss_limit`` before the first step.
    """
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(leaf):
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(put, tree)


def data_parallel(devices, batch_size, data):
    """Prepare data-parallel training: ``(mesh, shard_batch, data)``.

    ``data`` (a pytree of arrays, ``(x, y)``) comes back replicated on every device of the mesh;
    ``shard_batch(a)`` is ``with_sharding_constraint(a, P("batch"))``, to be applied to each
    minibatch inside the compiled step so that its rows are split evenly across the devices.
    ``batch_size`` must be divisible by the number of devices.
    """
    mesh = make_mesh(devices)
    count = mesh.devices.size
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"devices: batch_size must be a positive integer, got {batch_size!r}")
    if batch_size % count:
        lower, upper = (batch_size // count) * count, (batch_size // count + 1) * count
        hint = f"{lower} or {upper}" if lower else f"{upper}"
        raise ValueError(
            f"devices: batch size {batch_size} is not divisible by the {count} devices (each device "
            f"takes batch_size / {count} rows of every minibatch); use a multiple of {count}, "
            f"e.g. {hint}")
    sharding = batch_sharded(mesh)

    def shard_batch(a):
        return jax.lax.with_sharding_constraint(a, sharding)

    return mesh, shard_batch, replicate(data, mesh)


setup = data_parallel  # the name of earlier releases


# ---------------------------------------------------------------------------------------------
# The full-batch gradient in chunks


def auto_chunk_size(n, n_features, itemsize=4, multiple_of=1, chunk_bytes=CHUNK_BYTES,
                    min_rows=MIN_CHUNKED_ROWS):
    """Rows per chunk for a full batch of ``n × n_features``, or ``None`` (no chunking).

    At most ``chunk_bytes`` of ``X`` per chunk, a multiple of 8 and of ``multiple_of`` (the device
    count); ``None`` when ``n < min_rows``, where the whole batch is small enough to stay in
    cache, or when one chunk would hold all ``n`` rows. The default, 8 MiB (2,672 MNIST rows), is
    a fraction of a typical last-level cache (README.md, "Full batch in chunks", has the
    measurements behind it).
    """
    if n < min_rows:
        return None
    step = math.lcm(8, int(multiple_of))
    rows = chunk_bytes // max(n_features * itemsize, 1)
    rows = max(step, (rows // step) * step)
    return rows if rows < n else None


def device_memory_bytes(device):
    """The memory of ``device`` in bytes: the host's physical memory for a CPU device, the
    allocator's limit (``memory_stats()["bytes_limit"]``) for an accelerator; ``None`` when
    neither is known."""
    if device.platform == "cpu":
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            return None
    try:
        stats = device.memory_stats() or {}
    except Exception:  # a backend without memory statistics
        return None
    return stats.get("bytes_limit")


def needs_chunks(x, memory_bytes, fraction=CHUNK_MEMORY_FRACTION):
    """Whether ``"auto"`` chunks a full batch ``x``: its bytes exceed ``fraction`` of
    ``memory_bytes`` (unknown memory: no)."""
    return memory_bytes is not None and x.size * x.dtype.itemsize > fraction * memory_bytes


def resolve_chunk_size(chunk_size, n, batch_size, x, mesh=None, memory_bytes=None):
    """The ``chunk_size`` ``fit`` passes to ``EpochRunner``: rows per chunk, or ``None``.

    Chunking applies to full-batch training only (``batch_size`` ``None`` or ``>= n``).
    ``"auto"`` chunks where the machine needs it: when ``x`` takes more than
    ``CHUNK_MEMORY_FRACTION`` of ``memory_bytes`` (``None``: the memory of the device holding
    ``x``'s first shard, ``device_memory_bytes``), with ``auto_chunk_size`` rows (a multiple of
    the mesh's device count); else not at all. ``None`` turns chunking off; an int is checked
    (positive, divisible by the device count).
    """
    count = 1 if mesh is None else mesh.devices.size
    full_batch = batch_size is None or batch_size >= n
    if isinstance(chunk_size, str):
        if chunk_size != "auto":
            raise ValueError(f"fit: chunk_size must be 'auto', None or a positive integer, got "
                             f"{chunk_size!r}")
        if not full_batch:
            return None
        if memory_bytes is None:
            memory_bytes = device_memory_bytes(_first_device(x))
        if not needs_chunks(x, memory_bytes):
            return None
        return auto_chunk_size(n, x.shape[1], jnp.dtype(x.dtype).itemsize, count)
    if chunk_size is None:
        return None
    if not isinstance(chunk_size, (int, np.integer)) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"fit: chunk_size must be 'auto', None or a positive integer, got "
                         f"{chunk_size!r}")
    if not full_batch:
        raise ValueError(f"fit: chunk_size={chunk_size} applies to full-batch training only "
                         f"(batch_size=None), but batch_size={batch_size}")
    if chunk_size % count:
        raise ValueError(f"fit: chunk_size {chunk_size} is not divisible by the {count} devices; "
                         f"use a multiple of {count}")
    return int(chunk_size)


def _first_device(x):
    """The device holding ``x`` (its first shard's), or the default device for a host array."""
    return x.addressable_shards[0].device if isinstance(x, jax.Array) else jax.devices()[0]


def chunked(grad_fn, n, chunk, shard_batch=None):
    """Turn ``grad_fn(params, x, y) -> (loss, y_pred, grads)`` on a batch into the same function
    over ``n`` rows computed ``chunk`` rows at a time.

    A ``lax.scan`` runs ``grad_fn`` (forward and backward) on each chunk of ``chunk`` rows and
    sums ``L = Σ_k (c_k/N) L_k`` and ``dL/dθ = Σ_k (c_k/N) dL_k/dθ``; a last partial chunk of
    ``n mod chunk`` rows gets its own call. ``y_pred`` is the concatenation of the chunks' outputs
    (all ``n`` rows, in order), so it scores exactly like the unchunked output. ``shard_batch``, if
    given, is applied to every chunk (a sharding constraint, for data parallelism): ``chunk``
    must then be divisible by the device count.

    Exact for losses that are a mean over examples (all of fnnet's); the sums differ from the
    unchunked gradient only by the order of floating-point additions.
    """
    if not isinstance(chunk, (int, np.integer)) or isinstance(chunk, bool) or chunk < 1:
        raise ValueError(f"chunked: chunk must be a positive integer, got {chunk!r}")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"chunked: n must be a positive integer, got {n!r}")
    chunk = min(int(chunk), int(n))
    steps, rest = divmod(int(n), chunk)

    def on_chunk(params, xc, yc):
        if shard_batch is not None:
            xc, yc = shard_batch(xc), shard_batch(yc)
        return grad_fn(params, xc, yc)

    def fn(params, x, y):
        if x.shape[0] != n or y.shape[0] != n:
            raise ValueError(f"chunked: built for {n} rows, got x with {x.shape[0]} and y with "
                             f"{y.shape[0]}")
        shapes = jax.eval_shape(on_chunk, params, x[:chunk], y[:chunk])
        value_dtype, grads_shape = shapes[0].dtype, shapes[2]
        weight = jnp.asarray(chunk / n, value_dtype)

        def body(acc, i):
            xc = jax.lax.dynamic_slice_in_dim(x, i * chunk, chunk)
            yc = jax.lax.dynamic_slice_in_dim(y, i * chunk, chunk)
            value, y_pred, g = on_chunk(params, xc, yc)
            total, grads = acc
            grads = jax.tree_util.tree_map(lambda s, gi: s + weight.astype(gi.dtype) * gi, grads, g)
            return (total + weight * value, grads), y_pred

        zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), grads_shape)
        (value, grads), preds = jax.lax.scan(body, (jnp.zeros((), value_dtype), zeros),
                                             jnp.arange(steps))
        y_pred = preds.reshape((steps * chunk,) + preds.shape[2:])
        if rest:
            v, yp, g = on_chunk(params, x[steps * chunk:], y[steps * chunk:])
            w = jnp.asarray(rest / n, value_dtype)
            value = value + w * v
            grads = jax.tree_util.tree_map(lambda s, gi: s + w.astype(gi.dtype) * gi, grads, g)
            y_pred = jnp.concatenate([y_pred, yp], axis=0)
        return value, y_pred, grads

    return fn

