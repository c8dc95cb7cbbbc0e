"""Recurrent layers: what the three cells share (``Recurrent``), the plain ``RNN``, and
``LastStep``. The ``LSTM`` is in ``lstm``, the ``GRU`` in ``gru``.

Sequences are batch first, ``x`` of shape ``(N, T, n_in)``; a recurrent layer returns every hidden
state, ``(N, T, H)`` with ``H = n_hidden``. Beyond the notes (experiments/NOTES.md, "Beyond the
notes"): the backward is backpropagation through time, derived here in fnnet's row layout
("the forward was ..., so the backward is ...", as karpathy's llm.c and cs231n's
``rnn_layers.py`` derive it).

The shape every cell shares. A cell has ``G`` gate blocks (the RNN 1, the GRU 3, the LSTM 4),
stacked along the rows of its weights: ``W_x`` ``(G·H, n_in)``, ``W_h`` ``(G·H, H)``, ``b``
``(G·H,)`` (rows, one per output unit, as every ``W`` in fnnet). Each step's pre-activations are
the sum of an input part and a recurrent part::

    A_t = X_t W_xᵀ + b  +  H_{t−1} W_hᵀ          (N, G·H)
          \\_________/     \\________/
          Ax_t: no h        the only product that needs the previous step

so the input part of every step is ONE matrix product before the time loop,
``Ax = X W_xᵀ + b`` over the ``T·N`` rows ``(T·N, n_in) × (n_in, G·H)``, and only ``H_{t−1} W_hᵀ``
stays inside the ``lax.scan`` (a cell with ``bias_in_step``, the LSTM, adds ``b`` inside its step
instead, where the addition fuses into the step's element-wise work rather than taking a pass over
``(T·N, G·H)`` of its own; the sum is the same). The rows are taken time-major (row ``t·N + n``
is example ``n`` at step ``t``) so the scan reads ``Ax[t]`` as one contiguous slab.

The backward, for any cell. The loss reaches ``H_t`` twice: from the layer's output ``dY_t`` and
from step ``t+1`` through ``H_t W_hᵀ``. A reverse scan carries ``dH_next`` (and the LSTM's
``dC_next``); each step computes the pre-activation gradient ``dA_t`` (the cell's own rule) and
passes back ``dH_{t−1} = dA_t W_h + (the cell's direct paths)``. Once every ``dA_t`` is known the
rest is Dense's rule (note 000, rows as note 004) over the stacked rows, ONE product each, after
the scan::

    A = X W_xᵀ + b + H_prev W_hᵀ   (rows t·N + n),   H_prev = [H_0; H_1; …; H_{T−1}]

    dW_x = dAᵀ X          (G·H, n_in)       db = Σ_rows dA       (G·H,)
    dW_h = dAᵀ H_prev     (G·H, H)          dX = dA W_x          (T·N, n_in) → (N, T, n_in)

Every term of ``dW_h = Σ_t dA_tᵀ H_{t−1}`` is known only after the scan has passed step ``t``, so
summing inside the scan is possible too; one product of the stacked ``H_prev`` (the cached hidden
states shifted by one step) is faster. The GRU's reset gate splits ``dA`` into an input and a
recurrent part (``gru``); the others use one ``dA`` for both.

The initial state. ``apply``/``forward`` start from zeros. A layer built with ``stateful=N``
carries ``N`` sequences' final state into the next call through the model state (truncated
backpropagation through time, as ``BatchNorm``'s running statistics travel):
``init_state(dtype)`` is ``{"h": zeros (N, H)}`` (the LSTM adds ``"c"``), ``forward(...,
state=s)`` starts from ``s``, and ``next_state(s, cache)`` is the forward's final state with its
gradient stopped, so no gradient crosses a window boundary: the next window's backward treats the
carried state as a constant, which is what truncation means. The state has a fixed shape (a
``TrainState`` is scanned), so the number of sequences ``N`` is part of the layer; a batch of
another size with such a state is refused (pass ``state=()`` to start from zeros at any batch
size). Reset the carried state by passing ``init_state()`` again. A layer without ``stateful``
keeps ``()``.

``sequence_forward(params, x, initial)``/``sequence_backward(params, cache, dy)`` run the layer
from a given initial state and also return the gradient that reaches it (``dH_0``, ``dC_0``): what
``backward`` drops at a window boundary, and what a test checks.

Mixed precision (``fnnet.precision``). Under a casting policy the two products read
``bfloat16``/``float16`` (``X`` cast once and cached in that type, ``W_x``, ``W_h`` and the
recurrent ``H_{t−1}`` cast for the product) and accumulate in float32; the hidden and cell states,
the gates and their nonlinearities, every sum and every carried gradient stay float32. The ``dW``
products write ``dAᵀ`` out row-major first (``fnnet.precision.transposed``), as ``Dense.backward``
does.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, replace
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .. import precision as _precision
from ..checks import integer
from ..pytrees import register_namedtuple
from .base import InputShape, Layer
from .checks import check_floating, check_no_params, check_param, check_params_type, lookup
from .initializers import INITS


@register_namedtuple
class RecurrentParams(NamedTuple):
    """Parameters of ``RNN`` and ``LSTM``: ``W_x`` ``(G·H, n_in)``, ``W_h`` ``(G·H, H)`` and
    ``b`` ``(G·H,)``, the ``G`` gate blocks stacked along the rows (the RNN ``G = 1``; the LSTM
    ``G = 4``, in the order i, f, g, o)."""

    W_x: Any
    W_h: Any
    b: Any


class RecurrentCache(NamedTuple):
    """What a recurrent forward keeps: ``x`` the input as time-major rows ``(T·N, n_in)`` (in the
    products' input type), ``initial`` and ``final`` the carried states (``(h,)`` or ``(h, c)``,
    each ``(N, H)``), ``hs`` every hidden state ``(T, N, H)`` time-major, and ``saved`` what the
    cell's own backward needs (its gate values, the LSTM's cell states)."""

    x: Any
    initial: tuple
    final: tuple
    hs: Any
    saved: Any


def sigmoid_slope(s):
    """``σ'(a) = s (1 − s)`` from ``s = σ(a)`` (note 004)."""
    return s * (1 - s)


def tanh_slope(t):
    """``tanh'(a) = 1 − t² = (1 − t)(1 + t)`` from ``t = tanh(a)`` (as ``Tanh.df``)."""
    return (1 - t) * (1 + t)


def relu_slope(y):
    """``relu'(a) = [a > 0] = [y > 0]`` from ``y = relu(a)`` (0 at 0, as ``jax.nn.relu``)."""
    return y > 0


# The RNN's activations: f, and f' from the output (so only the hidden states are cached).
RNN_ACTIVATIONS = {"tanh": (jnp.tanh, tanh_slope), "relu": (jax.nn.relu, relu_slope)}


def rows_transposed(a, policy):
    """``aᵀ`` of a ``(rows, G·H)`` matrix, written out row-major whatever the policy (behind
    ``fnnet.precision.transposed``'s two barriers; for float32 the same barriers without the cast).

    The weight gradients ``dW_x = dAᵀ X`` and ``dW_h = dAᵀ H_prev`` contract over the rows. Left
    to itself XLA:CPU folds the transpose into the product, which then contracts both operands
    over their first axis (a slower library path); computed as ``(A_inᵀ dA)ᵀ`` instead, the
    transposed ``(G·H, k)`` result is read column by column by every fusion of the optimizer's
    clipping and update. Writing ``dAᵀ`` out once (a copy of ``(T·N, G·H)``) makes both products
    plain row-major ones. On W5's whole float32 training step (``fnnet.bench.lstm``, 2-core
    Zen 5) it was 4–5 % faster than ``(A_inᵀ dA)ᵀ``, which was itself 8 % faster than the folded
    form."""
    if policy.casts:
        return _precision.transposed(a, policy)
    return lax.optimization_barrier(lax.optimization_barrier(a).T)


def shifted(first, stacked):
    """``[first; stacked[0]; …; stacked[T−2]]``: the previous step's value at every step."""
    return jnp.concatenate([first[None], stacked[:-1]], axis=0)


@dataclass(frozen=True, init=False)
class Recurrent(Layer):
    """What ``RNN``, ``LSTM`` and ``GRU`` share: sizes, the stateful option, the precision policy,
    the hoisted input and weight products, and the checks. Derivation: this module's docstring.

    A subclass names its ``gates`` (``G``) and ``carries`` (``("h",)`` or ``("h", "c")``) and
    gives ``_scan`` (the forward over time from ``Ax``) and ``_scan_backward`` (the reverse scan
    giving every ``dA_t``).
    """

    n_in: int
    n_hidden: int
    stateful: Any
    precision: _precision.Policy

    gates: ClassVar[int] = 1
    carries: ClassVar[tuple] = ("h",)
    params_type: ClassVar[type] = RecurrentParams
    #: Whether the cell's ``_scan`` adds ``b`` itself inside its step (the LSTM: the addition
    #: fuses into the step's element-wise work), so that ``Ax`` is ``X W_xᵀ`` alone.
    bias_in_step: ClassVar[bool] = False

    def _setup(self, n_in, n_hidden, stateful, precision):
        name = type(self).__name__
        object.__setattr__(self, "n_in", integer(name, "n_in", n_in))
        object.__setattr__(self, "n_hidden", integer(name, "n_hidden", n_hidden))
        if stateful is not None:
            try:
                stateful = integer(name, "stateful", stateful)
            except ValueError:
                raise ValueError(f"{name}: stateful must be None or the number of sequences whose "
                                 f"state is carried (a positive integer), got {stateful!r}"
                                 ) from None
        object.__setattr__(self, "stateful", stateful)
        object.__setattr__(self, "precision", _precision.get(precision))

    def _extra_repr(self):
        return ""

    def __repr__(self):
        args = f"{self.n_in}, {self.n_hidden}{self._extra_repr()}"
        if self.stateful is not None:
            args += f", stateful={self.stateful}"
        if self.precision.casts:
            args += f", precision={self.precision!r}"
        return f"{type(self).__name__}({args})"

    def with_precision(self, policy):
        """This layer with its products under ``policy`` (a ``fnnet.precision`` policy or its
        name)."""
        return replace(self, precision=_precision.get(policy))

    # --- parameters -------------------------------------------------------------------------

    def _init_weights(self, key, dtype):
        """``W_x`` Xavier uniform per gate block (fan-in ``n_in``, fan-out ``H``), ``W_h`` an
        orthogonal ``H × H`` matrix per gate block, ``b`` zeros."""
        g, h = self.gates, self.n_hidden
        kx, kh = jax.random.split(key)
        W_x = INITS["xavier"](kx, (g * h, self.n_in), self.n_in, h, dtype)
        W_h = jax.random.orthogonal(kh, h, (g,), dtype).reshape(g * h, h)
        return W_x, W_h, jnp.zeros((g * h,), dtype)

    def _check_params(self, params):
        check_params_type(self, params, self.params_type)
        g, h = self.gates, self.n_hidden
        check_param(self, "W_x", params.W_x, (g * h, self.n_in))
        check_param(self, "W_h", params.W_h, (g * h, h))
        check_param(self, "b", params.b, (g * h,))

    # --- state ------------------------------------------------------------------------------

    def init_state(self, dtype=jnp.float32):
        """``()``, or for ``stateful=N`` the carried state ``{"h": zeros (N, H)}`` (the LSTM adds
        ``"c"``): the zero initial state of ``N`` sequences."""
        if self.stateful is None:
            return ()
        return {name: jnp.zeros((self.stateful, self.n_hidden), dtype) for name in self.carries}

    def _initial(self, state, n, dtype):
        """The initial carry ``(h0,)`` or ``(h0, c0)``: zeros, or the carried state (gradient
        stopped) of a stateful layer."""
        zeros = tuple(jnp.zeros((n, self.n_hidden), dtype) for _ in self.carries)
        if state is None or (isinstance(state, tuple) and not state):
            return zeros
        if self.stateful is None:
            raise ValueError(f"{self}: not stateful, so its state is () (build it with "
                             f"stateful=N to carry a state between calls), got "
                             f"{type(state).__name__}")
        if not isinstance(state, dict) or set(state) != set(self.carries):
            raise ValueError(f"{self}: state must be () or a dict with keys {list(self.carries)} "
                             f"(from init_state()), got {state!r}")
        expected = (self.stateful, self.n_hidden)
        for name in self.carries:
            check_param(self, f"state[{name!r}]", state[name], expected)
        if n != self.stateful:
            raise ValueError(f"{self}: carries the state of {self.stateful} sequences, got a batch "
                             f"of {n} (pass state=() to start a batch of another size from zeros)")
        return tuple(lax.stop_gradient(state[name]).astype(dtype) for name in self.carries)

    def next_state(self, state, cache):
        """The state after a forward: the final ``h`` (and ``c``) from the cache, gradient
        stopped (no gradient crosses a window boundary); ``()`` stays ``()``."""
        if self.stateful is None or not isinstance(state, dict):
            return state
        return {name: lax.stop_gradient(value).astype(state[name].dtype)
                for name, value in zip(self.carries, cache.final)}

    # --- checks -----------------------------------------------------------------------------

    def _check(self, params, x):
        check_floating(self, x)
        shape = tuple(jnp.shape(x))
        if len(shape) != 3 or shape[2] != self.n_in:
            raise ValueError(f"{self}: expected input of shape (N, T, {self.n_in}) (batch, time, "
                             f"features), got shape {shape}")
        if shape[1] == 0:
            raise ValueError(f"{self}: expected at least one time step (T >= 1), got shape "
                             f"{shape}")
        self._check_params(params)

    def _check_initial(self, initial, n):
        if not isinstance(initial, tuple) or len(initial) != len(self.carries):
            raise ValueError(f"{self}: initial must be a tuple {self.carries} of (N, H) arrays, "
                             f"got {type(initial).__name__}")
        for name, value in zip(self.carries, initial):
            check_param(self, f"initial {name}", value, (n, self.n_hidden))

    # --- the cell: given by subclasses ------------------------------------------------------

    @abc.abstractmethod
    def _scan(self, params, ax, initial):
        """``(final, hs, saved)``: the forward over time from ``Ax`` ``(T, N, G·H)``."""

    @abc.abstractmethod
    def _scan_backward(self, params, cache, dys):
        """``(d_initial, dA_x, dA_h, extra)``: the reverse scan from ``dY`` ``(T, N, H)``; ``dA_x``
        and ``dA_h`` ``(T, N, G·H)`` reach ``W_x``/``b`` and ``W_h``; ``extra`` the gradients of
        the cell's other parameters (a dict)."""

    # --- the layer --------------------------------------------------------------------------

    def init(self, key, dtype=jnp.float32):
        W_x, W_h, b = self._init_weights(key, dtype)
        return RecurrentParams(W_x=W_x, W_h=W_h, b=b)

    def sequence_forward(self, params, x, initial):
        """``(y, cache)`` from the given initial state ``initial`` (``(h0,)``, or ``(h0, c0)``
        for the LSTM, each ``(N, H)``), which is not stopped: ``sequence_backward`` returns the
        gradient reaching it."""
        self._check(params, x)
        n, t, _ = x.shape
        self._check_initial(initial, n)
        policy = self.precision
        # time-major rows, cast once: the product and the cache share them
        x_rows = jnp.swapaxes(policy.cast(x), 0, 1).reshape(t * n, self.n_in)
        ax = policy.dot(x_rows, params.W_x, (1, 1))  # ONE product for all steps
        if not self.bias_in_step:
            ax = ax + params.b
        ax = ax.reshape(t, n, self.gates * self.n_hidden)
        initial = tuple(value.astype(ax.dtype) for value in initial)
        final, hs, saved = self._scan(params, ax, initial)
        return jnp.swapaxes(hs, 0, 1), RecurrentCache(x_rows, initial, final, hs, saved)

    def forward(self, params, x, *, state=(), key=None, train=True):
        """``(Y, cache)``: every hidden state ``(N, T, H)``, from zeros or the carried state."""
        self._check(params, x)
        # the carry's type: the products' accumulator (float32 under a casting policy)
        dtype = (jnp.result_type(jnp.float32, params.b) if self.precision.casts
                 else jnp.result_type(x, params.W_x, params.b))
        return self.sequence_forward(params, x, self._initial(state, x.shape[0], dtype))

    def apply(self, params, x, *, state=(), key=None, train=False):
        """``Y``: the same scan in plain ``jnp`` (no rule of ours), what autodiff differentiates."""
        return self.forward(params, x, state=state)[0]

    def sequence_backward(self, params, cache, dy):
        """``(dparams, dx, d_initial)``: ``backward`` and the gradient reaching the initial state
        (``(dh0,)`` or ``(dh0, dc0)``). Derivation: the module's docstring and the cell's."""
        policy = self.precision
        t, n, _ = cache.hs.shape
        dys = jnp.swapaxes(dy, 0, 1)  # time-major, as the scan reads it
        d_initial, dax, dah, extra = self._scan_backward(params, cache, dys)
        rows, shared = t * n, dah is dax  # one dA for both products (RNN, LSTM)
        dax = dax.reshape(rows, -1)
        h_prev = shifted(cache.initial[0], cache.hs).reshape(rows, self.n_hidden)
        daxc = policy.cast(dax)
        dahc = daxc if shared else policy.cast(dah.reshape(rows, -1))
        daxt = rows_transposed(daxc, policy)  # (G·H, T·N), written out once for both products
        daht = daxt if shared else rows_transposed(dahc, policy)
        dW_x = policy.dot(daxt, cache.x, (1, 0))
        dW_h = policy.dot(daht, policy.cast(h_prev), (1, 0))
        dx = policy.dot(daxc, params.W_x, (1, 0)).reshape(t, n, self.n_in)
        grads = type(params)(W_x=dW_x, W_h=dW_h, b=jnp.sum(dax, axis=0), **extra)
        return grads, jnp.swapaxes(dx, 0, 1), d_initial

    def backward(self, params, cache, dy):
        """``(dparams, dx)``: backpropagation through time (module docstring, and the cell's own
        ``dA_t``). The gradient reaching the initial state is dropped: zeros, or a carried state
        that is a constant of this window."""
        grads, dx, _ = self.sequence_backward(params, cache, dy)
        return grads, dx


@dataclass(frozen=True, init=False, repr=False)
class RNN(Recurrent):
    """The plain (Elman) recurrent layer, ``(N, T, n_in) → (N, T, H)``::

        H_t = f(X_t W_xᵀ + H_{t−1} W_hᵀ + b),      H_0 = 0 (or the carried state)

    ``f`` is ``tanh`` (the default) or ``relu``, as PyTorch's ``nn.RNN``. Params
    ``RecurrentParams``: ``W_x`` ``(H, n_in)``, ``W_h`` ``(H, H)``, ``b`` ``(H,)`` (PyTorch's
    ``b_ih + b_hh`` in one).

    Backward. The forward was ``A_t = Ax_t + H_{t−1} W_hᵀ``, ``H_t = f(A_t)``, and ``H_t`` is read
    by the output and by step ``t+1``, so the backward is, for ``t = T … 1``::

        dH_t     = dY_t + dH_next                 (dH_next = 0 after the last step)
        dA_t     = dH_t ⊙ f'(A_t)                 f' from H_t: 1 − H_t² (tanh), [H_t > 0] (relu)
        dH_next  = dA_t W_h                       (for step t−1; at t = 1 it is dH_0)

    then ``dW_x``, ``db``, ``dX``, ``dW_h`` from the stacked ``dA`` (module docstring).

    Initialisation: ``W_x`` Xavier uniform ``U(±√(6/(n_in + H)))`` (for tanh, as Dense's
    ``xavier``), ``W_h`` a random orthogonal matrix, ``b`` zeros (Keras's defaults). An orthogonal
    ``W_h`` has every singular value 1: at the start the recurrence neither grows nor shrinks the
    state (nor, in the backward, ``dH``) through time by its linear part, so long sequences start
    trainable (Saxe et al. 2014; Le et al. 2015).

    Args:
        n_in: features per step.
        n_hidden: ``H``, the hidden units.
        activation: ``"tanh"`` or ``"relu"``.
        stateful: ``None``, or ``N``: carry ``N`` sequences' final state into the next call
            (truncated BPTT, module docstring).
        precision: the products' policy (``fnnet.precision``), as ``Dense``.
    """

    activation: str

    gates: ClassVar[int] = 1
    carries: ClassVar[tuple] = ("h",)

    def __init__(self, n_in, n_hidden, activation="tanh", *, stateful=None, precision=None):
        self._setup(n_in, n_hidden, stateful, precision)
        lookup(RNN_ACTIVATIONS, activation, "activation", where="RNN")
        object.__setattr__(self, "activation", activation)

    def _extra_repr(self):
        return "" if self.activation == "tanh" else f", activation={self.activation!r}"

    def _scan(self, params, ax, initial):
        f = RNN_ACTIVATIONS[self.activation][0]
        policy = self.precision
        W_h = policy.cast(params.W_h)  # cast once, outside the loop

        def step(h, ax_t):
            h = f(ax_t + policy.dot(h, W_h, (1, 1)))
            return h, h

        h_last, hs = lax.scan(step, initial[0], ax)
        return (h_last,), hs, ()

    def _scan_backward(self, params, cache, dys):
        df = RNN_ACTIVATIONS[self.activation][1]
        policy = self.precision
        W_h = policy.cast(params.W_h)
        dtype = jnp.result_type(dys, cache.hs)

        def step(dh_next, inputs):
            dy_t, h_t = inputs
            da = (dy_t + dh_next) * df(h_t)
            return policy.dot(da, W_h, (1, 0)).astype(dtype), da

        dh0, das = lax.scan(step, jnp.zeros(cache.hs.shape[1:], dtype), (dys, cache.hs),
                            reverse=True)
        return (dh0,), das, das, {}


@dataclass(frozen=True)
class LastStep(Layer):
    """The last time step of a sequence, ``(N, T, H) → (N, H)``: ``Y = X[:, T−1]``, the head of a
    many-to-one recurrent network (``LSTM`` then ``LastStep`` then ``Dense``).

    ``Y`` copies one slice, so ``dX`` is ``dY`` at step ``T−1`` and zero at every other step.
    The cache is the input's shape (static, no arrays).
    """

    def init(self, key, dtype=jnp.float32):
        return ()

    def _check(self, params, x):
        check_no_params(self, params)
        check_floating(self, x)
        shape = tuple(jnp.shape(x))
        if len(shape) != 3:
            raise ValueError(f"{self}: expected a sequence of shape (N, T, H), got shape {shape}")
        if shape[1] == 0:
            raise ValueError(f"{self}: expected at least one time step (T >= 1), got shape "
                             f"{shape}")

    def apply(self, params, x, *, state=(), key=None, train=False):
        self._check(params, x)
        return x[:, -1]

    def forward(self, params, x, *, state=(), key=None, train=True):
        return self.apply(params, x), InputShape(tuple(x.shape))

    def backward(self, params, cache, dy):
        """``dX[:, T−1] = dY``, ``dX[:, t] = 0`` for ``t < T−1``."""
        return (), jnp.zeros(cache.shape, dy.dtype).at[:, -1].set(dy)
