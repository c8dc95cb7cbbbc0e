"""Checks the layers run at trace time: shapes and dtypes are static under ``jit``, so a wrong
input fails when the program is traced, with a message naming the layer and the shapes.

Each takes the ``layer`` (or its name) first, for the message, and returns nothing or raises.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def check_floating(layer, x, what="input"):
    """Raise ``TypeError`` unless ``x`` is a floating-point array."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{layer}: {what} must be a floating-point array, got dtype {dtype} "
            f"(convert with x.astype(jnp.float32), e.g. after scaling pixels to [0, 1])"
        )


def check_features(layer, x, n, what="input"):
    """Raise unless ``x`` is floating-point of shape ``(N, n)`` or ``(n,)``."""
    check_floating(layer, x, what)
    shape = jnp.shape(x)
    if len(shape) not in (1, 2) or shape[-1] != n:
        raise ValueError(
            f"{layer}: expected {what} of shape (N, {n}) or ({n},), got shape {tuple(shape)}"
        )


def check_param(layer, name, value, expected):
    """Raise ``ValueError`` unless the parameter ``name`` has the shape ``expected``."""
    if tuple(jnp.shape(value)) != expected:
        raise ValueError(
            f"{layer}: parameter {name} has shape {tuple(jnp.shape(value))}, expected {expected}"
        )


def is_key(key):
    """Whether ``key`` is a ``jax.random`` key: a typed key array, or the raw ``uint32[2]`` of
    ``jax.random.PRNGKey``."""
    if not hasattr(key, "dtype") or not hasattr(key, "shape"):
        return False
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return True
    return key.dtype == jnp.uint32 and tuple(key.shape)[-1:] == (2,)


def check_params_type(layer, params, kind):
    """Raise ``ValueError`` unless ``params`` is a ``kind`` (the layer's params NamedTuple), so a
    ``None`` or another layer's params is named, not an ``AttributeError``."""
    if not isinstance(params, kind):
        fields = ", ".join(kind._fields)
        raise ValueError(f"{layer}: params must be {kind.__name__}({fields}) (from "
                         f"layer.init(key)), got {type(params).__name__}")


def check_dy(layer, dy, expected):
    """Raise ``ValueError`` unless ``dy`` (a backward's ``dE/dY``) has the forward output's
    shape ``expected``."""
    if tuple(jnp.shape(dy)) != tuple(expected):
        raise ValueError(f"{layer}: backward expected dy of the forward output's shape "
                         f"{tuple(expected)}, got shape {tuple(jnp.shape(dy))}")


def check_no_params(layer, params):
    """Raise ``ValueError`` unless ``params`` is the empty params of a parameterless layer."""
    if params != () and params is not None:
        raise ValueError(f"{layer}: takes no parameters, got {type(params).__name__}")


def check_array(layer, x):
    """Raise unless ``x`` is a floating-point array of rank 1 or more."""
    check_floating(layer, x)
    if jnp.ndim(x) < 1:
        raise ValueError(f"{layer}: expected an array of rank 1 or more, got a scalar")


def lookup(table, name, what, where=None):
    """``table[name]``, or a ``ValueError`` naming ``what`` was unknown and the names there are.

    ``where`` (e.g. ``"Dense"``) prefixes the message when given.
    """
    try:
        return table[name]
    except (KeyError, TypeError):
        prefix = f"{where}: " if where else ""
        raise ValueError(
            f"{prefix}unknown {what} {name!r}; expected one of {sorted(table)}"
        ) from None
