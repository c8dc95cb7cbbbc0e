"""Mixed precision: the type each matrix product reads and accumulates in, and loss scaling.

A policy keeps the parameters, the optimizer's state, the loss, the softmax, normalisation
statistics and every reduction in float32 (the master copy), and gives the matrix products and
convolutions ``bfloat16`` or ``float16`` inputs with float32 accumulation::

    Z = X Wᵀ + b        computed as   Z = f32( bf16(X) · bf16(W)ᵀ ) + b

``Dense`` and ``Conv2D`` carry the policy (``layer.with_precision("bf16")``, or
``with_precision(model, "bf16")`` for a whole network); every other layer works on the float32
products it is given. The hand-derived backward writes its three products the same way, with
the casts and layouts chosen by hand (``dot``, ``transposed``)::

    dW = f32( bf16(dY)ᵀ · bf16(X) )      dX = f32( bf16(dY) · bf16(W) )      db = Σ_n dY_n (f32)

``apply`` uses the same casting products, so ``jax.grad`` of it (the reference) runs under the
same policy and the two paths stay comparable.

Layouts on the CPU. XLA:CPU runs a product with bfloat16 inputs and a float32 result in its
matrix library only when the left operand is contracted over its last axis in row-major memory;
otherwise an early pass (the operand upcaster) converts both inputs to float32 and the product
runs at float32 speed. ``dW = dYᵀ X`` contracts both operands over the batch axis, their first,
and a ``transpose`` inside a program is only a change of layout, so ``dYᵀ`` must be written out
row-major: ``transposed`` does it, with an optimisation barrier that keeps XLA from folding the
copy back into the product. README.md ("Mixed precision") has the measurements.

A policy says only what the products read. ``None`` means one thing wherever a precision is
asked for (``fit``, ``train_step``'s model, the gradient functions, ``evaluate``): the model as it
is, its layers under whatever policy they were built with. A policy is applied to a model once,
by ``with_precision``, where the model is prepared (``fit`` does it before building anything).

float16 also needs its loss scaled, which is not the policy's business: ``fnnet.loss_scale``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

# The products' input types a policy may cast to.
NARROW = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


@dataclass(frozen=True)
class Policy:
    """A precision policy: ``name`` (``"f32"``, ``"bf16"``, ``"f16"``) and the products' input
    dtype ``compute`` (``None``: no casts, products in the operands' own dtype, float32 or the
    float64 of gradient checks). Nothing else: loss scaling is ``fnnet.loss_scale``'s."""

    name: str
    compute: Any = None

    def __post_init__(self):
        if self.compute is not None and jnp.dtype(self.compute) not in NARROW:
            raise ValueError(f"Policy: compute must be None, bfloat16 or float16, got "
                             f"{self.compute!r}")

    def __repr__(self):
        return repr(self.name) if self == POLICIES.get(self.name) else (
            f"Policy({self.name!r}, {jnp.dtype(self.compute).name})")

    @property
    def casts(self):
        """Whether the products read a narrower type than the parameters."""
        return self.compute is not None

    def cast(self, a):
        """``a`` in the products' input type (unchanged for ``f32``)."""
        return a if self.compute is None else a.astype(self.compute)

    def dot(self, a, b, contract):
        """``lax.dot_general`` of ``a`` and ``b`` contracting ``contract = (axis_a, axis_b)``,
        inputs cast to ``compute`` and accumulated in float32."""
        dims = (((contract[0],), (contract[1],)), ((), ()))
        if self.compute is None:
            return lax.dot_general(a, b, dims)
        return lax.dot_general(self.cast(a), self.cast(b), dims,
                               preferred_element_type=jnp.float32)


POLICIES = {
    "f32": Policy("f32"),
    "bf16": Policy("bf16", jnp.bfloat16),
    "f16": Policy("f16", jnp.float16),
}
NAMES = tuple(POLICIES)


def get(precision):
    """The ``Policy`` that ``precision`` names (``"f32"``, ``"bf16"``, ``"f16"``), or
    ``precision`` itself if it is a ``Policy``. A layer built with ``precision=None`` has no
    casts: ``get(None)`` is ``"f32"`` (for a model, ``None`` is "as it is": ``with_precision``)."""
    if precision is None:
        return POLICIES["f32"]
    if isinstance(precision, Policy):
        return precision
    if isinstance(precision, str) and precision.lower() in POLICIES:
        return POLICIES[precision.lower()]
    raise ValueError(f"precision must be one of {NAMES} or an fnnet.precision.Policy, got "
                     f"{precision!r}")


def transposed(a, policy):
    """``aᵀ`` of a matrix, written out row-major when the policy casts (see the module
    docstring: a transposed layout would send the product back to float32).

    Two optimisation barriers: the outer keeps XLA from folding the copy into the product
    that reads it, the inner from moving the transpose into the product that made ``a`` (a
    product it would then build with a float32 result from narrow inputs and a leading
    contracted axis, which XLA:CPU's fallback cannot run).
    """
    if not policy.casts:
        return a.T
    rows, cols = a.shape
    flat = lax.optimization_barrier(a).T.reshape(rows * cols)
    return lax.optimization_barrier(flat).reshape(cols, rows)


def concatenate(arrays, axis):
    """``jnp.concatenate(arrays, axis)``; arrays of a narrow float type are joined as their 16-bit
    patterns (``uint16``), since XLA:CPU's float normalisation otherwise converts each input to
    float32, joins them there and converts the result back: three passes over the data where a
    concatenate is one copy of bits (im2col's patches under a bf16 policy;
    experiments/BENCHMARKS.md, W4)."""
    dtype = jnp.result_type(*arrays)
    if dtype not in NARROW:
        return jnp.concatenate(arrays, axis=axis)
    bits = [lax.bitcast_convert_type(a.astype(dtype), jnp.uint16) for a in arrays]
    return lax.bitcast_convert_type(jnp.concatenate(bits, axis=axis), dtype)


def with_precision(model, precision):
    """``model`` with its products under ``precision``: the one place a policy is applied to a
    model. ``None`` returns ``model`` as it is; a policy or its name rebuilds every layer that
    has products (``Dense``, ``Conv2D``) under it (``Layer.with_precision``; layers without
    products return themselves)."""
    if precision is None:
        return model
    return model.with_precision(get(precision))


def check_master_dtype(dtype, policy, where):
    """A casting policy keeps a float32 master copy: refuse a narrower parameter dtype."""
    if policy.casts and jnp.finfo(dtype).bits < 32:
        raise ValueError(f"{where}: precision={policy.name!r} keeps a float32 master copy of the "
                         f"parameters, got dtype={jnp.dtype(dtype).name} (use dtype=float32)")


def check_params_dtype(params, policy, where):
    """A casting policy keeps a float32 master copy: refuse narrower parameters."""
    if not policy.casts:
        return
    for leaf in jax.tree_util.tree_leaves(params):
        if jnp.issubdtype(leaf.dtype, jnp.floating) and jnp.finfo(leaf.dtype).bits < 32:
            raise ValueError(f"{where}: precision={policy.name!r} keeps the parameters in "
                             f"float32 and casts only the products' inputs; got {leaf.dtype} "
                             f"parameters (use dtype=float32, or precision='f32' to train "
                             f"{leaf.dtype} parameters as they are)")
