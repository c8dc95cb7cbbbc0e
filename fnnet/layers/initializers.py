"""Weight initialisations of ``Dense``, by name (``INITS``).

Each is ``init(key, shape, n_in, n_out, dtype) -> W``; ``shape`` is ``(n_out, n_in)``. Biases are
not drawn: they start at zero.
"""

from __future__ import annotations

import math

import jax


def _normal(key, shape, dtype, std):
    return jax.random.normal(key, shape, dtype) * std


def _symmetric_uniform(key, shape, dtype, bound):
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def he(key, shape, n_in, n_out, dtype):
    """He normal, for ReLU: ``W ~ N(0, 2/n_in)``."""
    return _normal(key, shape, dtype, math.sqrt(2.0 / n_in))


def he_uniform(key, shape, n_in, n_out, dtype):
    """He uniform: ``W ~ U(−√(6/n_in), √(6/n_in))``."""
    return _symmetric_uniform(key, shape, dtype, math.sqrt(6.0 / n_in))


def xavier(key, shape, n_in, n_out, dtype):
    """Xavier/Glorot uniform, for tanh and sigmoid: ``W ~ U(±√(6/(n_in + n_out)))``."""
    return _symmetric_uniform(key, shape, dtype, math.sqrt(6.0 / (n_in + n_out)))


def xavier_normal(key, shape, n_in, n_out, dtype):
    """Xavier/Glorot normal: ``W ~ N(0, 2/(n_in + n_out))``."""
    return _normal(key, shape, dtype, math.sqrt(2.0 / (n_in + n_out)))


def lecun(key, shape, n_in, n_out, dtype):
    """LeCun normal: ``W ~ N(0, 1/n_in)``."""
    return _normal(key, shape, dtype, math.sqrt(1.0 / n_in))


def uniform(key, shape, n_in, n_out, dtype):
    """``W ~ U(−0.5, 0.5)``: note 002's ``np.random.rand(...) - 0.5`` (experiments/NOTES.md)."""
    return _symmetric_uniform(key, shape, dtype, 0.5)


def gpt2(key, shape, n_in, n_out, dtype):
    """GPT-2's ``W ~ N(0, 0.02²)`` whatever the sizes (Radford et al. 2019; nanoGPT, llm.c)."""
    return _normal(key, shape, dtype, 0.02)


INITS = {
    "he": he,
    "he_uniform": he_uniform,
    "xavier": xavier,
    "glorot": xavier,
    "xavier_normal": xavier_normal,
    "glorot_normal": xavier_normal,
    "lecun": lecun,
    "uniform": uniform,
    "gpt2": gpt2,
}
