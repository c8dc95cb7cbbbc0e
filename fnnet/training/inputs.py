"""Checks on what enters training, made before any work is done: the targets, the dtype, the
memory a configuration needs, and the folder a checkpoint goes to.

Each raises ``ValueError`` (``MemoryError`` for memory) naming what was wrong and what was
expected; none of them runs inside a compiled program (the pure losses keep their documented
behaviour for traced code).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import io


def _host(a):
    return np.asarray(jax.device_get(a))


def _first_bad(mask):
    """The index (a tuple for 2-D) of the first True in ``mask``."""
    flat = int(np.argmax(mask))
    index = np.unravel_index(flat, mask.shape)
    return index[0] if len(index) == 1 else tuple(int(i) for i in index)


def check_finite(x, where):
    """Refuse inputs holding NaN or ±inf (they would make the first loss NaN)."""
    bad = ~np.isfinite(_host(x))
    if bad.any():
        raise ValueError(f"{where} x holds {int(bad.sum())} non-finite values (NaN or inf), the "
                         f"first at {_first_bad(bad)}; clean or impute the data first")


def check_targets(loss, y, outputs, where):
    """Refuse targets ``loss`` cannot score against a network with ``outputs`` outputs.

    Integer labels must lie in ``0 .. outputs − 1`` (cross-entropy); binary cross-entropy
    targets in ``[0, 1]``; cross-entropy target rows must be non-negative; every float target
    finite. The error names the first bad value and its position.

    Any number of leading axes: labels ``(N,)`` for ``(N, outputs)`` outputs, ``(N, T)`` (one
    per token) for ``(N, T, outputs)``, one-hot or float targets of the outputs' shape; every
    entry is checked, and a position past the first axis is named as a tuple (``y[(3, 0)]``).
    Shapes themselves are the loss's to check (``Loss.targets``, at trace time).
    """
    y = _host(y)
    if np.issubdtype(y.dtype, np.integer):
        bad = (y < 0) | (y >= outputs)
        if bad.any():
            i = _first_bad(bad)
            raise ValueError(f"{where} y[{i}] = {y[i]} is not a class label: expected integers "
                             f"in 0..{outputs - 1} (the network has {outputs} outputs); "
                             f"{int(bad.sum())} labels are out of range")
        return
    checks = [(~np.isfinite(y), "finite")]
    if loss.name == "binary_cross_entropy":
        checks.append(((y < 0) | (y > 1), "in [0, 1] (probabilities)"))
    elif loss.name == "cross_entropy":
        checks.append((y < 0, ">= 0 (a distribution over the classes)"))
    for bad, expected in checks:
        if bad.any():
            i = _first_bad(bad)
            raise ValueError(f"{where} y[{i}] = {y[i]} is not a valid {loss.name} target: "
                             f"expected values {expected}; {int(bad.sum())} values are not")


def output_width(model, params, x, rows):
    """The number of outputs the network gives for ``rows`` rows of ``x`` (shapes only: nothing
    is computed)."""
    batch = jax.ShapeDtypeStruct((rows,) + tuple(x.shape[1:]), x.dtype)
    model_state = model.init_state(x.dtype)
    out = jax.eval_shape(lambda p, b: model.apply(p, b, state=model_state), params, batch)
    return int(out.shape[-1])


def require_dtype(dtype, where):
    """Refuse a dtype JAX would silently narrow (float64 without ``jax_enable_x64``)."""
    wanted = np.dtype(dtype)
    actual = np.dtype(jax.dtypes.canonicalize_dtype(dtype))
    if actual != wanted:
        raise ValueError(f"{where}: dtype {wanted.name} needs JAX's 64-bit mode, which is off, so "
                         f"JAX would train in {actual.name}; turn it on first with "
                         f"jax.config.update('jax_enable_x64', True), or pass dtype=jnp.float32")
    if not jnp.issubdtype(wanted, jnp.floating):
        raise ValueError(f"{where}: dtype must be a floating-point type, got {wanted.name}")


def _tree_bytes(tree):
    return sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
               for leaf in jax.tree_util.tree_leaves(tree))


def training_bytes(model, optimizer, x_row, batch_rows, models, dtype):
    """An estimate of the memory training needs beyond the data, in bytes.

    Parameters, their gradient, the last good copy and the optimizer's buffers (all times the
    number of models), plus the forward cache and output of one batch, twice (the backward's
    gradients are of the same sizes). Computed from shapes only: nothing is allocated.
    """
    params = jax.eval_shape(lambda key: model.init(key, dtype), jax.random.PRNGKey(0))
    opt_state = jax.eval_shape(optimizer.init, params)
    batch = jax.ShapeDtypeStruct((batch_rows,) + tuple(x_row.shape),
                                 jnp.int32 if model.takes_ids else dtype)
    model_state = model.init_state(dtype)
    cache = jax.eval_shape(lambda p, b: model.forward(p, b, state=model_state,
                                                      key=jax.random.PRNGKey(0)), params, batch)
    per_model = 3 * _tree_bytes(params) + _tree_bytes(opt_state) + 2 * _tree_bytes(cache)
    return per_model * (models or 1)


def available_bytes(device=None):
    """Memory free for a new allocation: the device's limit less what it holds (accelerators),
    or the host's available memory (the CPU). ``None`` when it cannot be told."""
    device = device or jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(needed, where, available=None):
    """Refuse, with the figures, a configuration needing more memory than is available."""
    available = available_bytes() if available is None else available
    if available is not None and needed > available:
        raise MemoryError(f"{where}: this configuration needs about {needed / 2**30:,.1f} GiB "
                          f"for its parameters, optimizer state and one batch, but only "
                          f"{available / 2**30:,.1f} GiB is available; use fewer or smaller "
                          f"layers, fewer models or a smaller batch")


def check_writable(path, what):
    """Make sure a file can be written at ``path`` (creating its folder) before any work."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; expected a file path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{what} {path} cannot be written: {parent} is a file, not a "
                                 f"folder (checked before training, so no work is lost)")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = io.temporary_path(path)
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as e:
        raise ValueError(f"{what} {path} cannot be written: {e.strerror or e} "
                         f"(checked before training, so no work is lost)") from None
