"""``TrainState``: everything that changes while a network trains, as one pytree.

One model::

    state = TrainState.create(model, optimizer, key)

or ``K`` models stacked along a leading axis (an ensemble, or a learning-rate sweep), trained by one
vmapped program::

    state = TrainState.create(model, optimizer, key, ensemble=K)
    state = TrainState.create(model, optimizer, key, lrs=[0.1, 0.01, 0.001])

``create`` splits the key once, ``init_key, run_key = split(key)``: ``init_key`` draws the
parameters, ``run_key`` is carried in the state and split again for every epoch's shuffle. Model
``k`` of an ensemble is created from ``split(key, K)[k]``, so it is exactly the model a single run
with that key would train.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import checks
from .. import loss_scale as _loss_scale


def _create_one(model, optimizer, key, lr, params, dtype, scaler):
    init_key, run_key = jax.random.split(key)
    params = model.init(init_key, dtype) if params is None else params
    scale_state = () if scaler is None else scaler.init()
    return TrainState(params, optimizer.init(params, lr), run_key, jnp.zeros((), bool),
                      model.init_state(dtype), jnp.array(jnp.nan, jnp.float32), scale_state)


def model_count(ensemble=None, lrs=None, where="fit"):
    """The number of stacked models ``ensemble``/``lrs`` ask for, or ``None`` for one model.

    Raises:
        ValueError: ``ensemble`` not a positive integer; ``lrs`` empty, negative or not finite;
            both given with different counts.
    """
    if ensemble is not None:
        ensemble = checks.integer(where, "ensemble", ensemble)
    if lrs is None:
        return ensemble
    rates = np.atleast_1d(np.asarray(lrs, dtype=float))
    if rates.ndim != 1 or rates.size == 0 or not np.all(np.isfinite(rates)) or np.any(rates < 0):
        raise ValueError(f"{where}: lrs must be a non-empty list of finite rates >= 0, "
                         f"got {list(np.ravel(rates))}")
    if ensemble is not None and ensemble != rates.size:
        raise ValueError(f"{where}: ensemble={ensemble} but {rates.size} learning rates were given")
    return int(rates.size)


class TrainState(NamedTuple):
    """The training state, a pytree (jit, vmap, scan and checkpoint it as it is).

    Attributes:
        params: the network's parameters (stacked along a leading model axis for K models).
        opt_state: the optimizer's state (``fnnet.optim``), learning rate included.
        key: the run key, split for every epoch's shuffle (and, for layers that draw random
            numbers, their keys).
        stopped: ``bool``, shape ``()`` or ``(K,)``: set when the model's loss went non-finite;
            a stopped model is no longer updated.
        model_state: the model's non-trainable state (running statistics of normalisation
            layers), ``()`` for a model that keeps none.
        loss_limit: float32, shape ``()`` or ``(K,)``: a step whose loss exceeds it counts as
            diverged (see ``fnnet.training.epoch.DIVERGENCE_FACTOR``); NaN until the run's first
            step sets it, ``inf`` for no bound.
        loss_scale: the state of the run's loss scale (``fnnet.loss_scale.LossScaleState``),
            ``()`` for a run without one.
    """

    params: Any
    opt_state: Any
    key: Any
    stopped: Any
    model_state: Any = ()
    loss_limit: Any = float("inf")
    loss_scale: Any = ()

    @property
    def num_models(self):
        """``None`` for one model, ``K`` for ``K`` models stacked along a leading axis."""
        return None if jnp.ndim(self.stopped) == 0 else int(jnp.shape(self.stopped)[0])

    @classmethod
    def create(cls, model, optimizer, key, *, params=None, ensemble=None, lrs=None,
               dtype=jnp.float32, loss_scale=None):
        """A fresh state for one model, or for ``K`` stacked models.

        Args:
            model: a layer or network (``init(key, dtype)``).
            optimizer: an ``fnnet.optim.Optimizer``.
            key: a ``jax.random`` key.
            params: start from these parameters instead of ``model.init`` (stacked along a
                leading axis of ``K`` when several models are asked for).
            ensemble: ``K`` models with keys ``jax.random.split(key, K)``.
            lrs: one model per learning rate; without ``ensemble`` every model starts from the
                same ``key`` (same initial parameters and shuffles), so only the rate differs.
            dtype: the parameters' floating dtype.
            loss_scale: the run's loss scale (``fnnet.loss_scale.DynamicLossScale``), whose
                state starts here; ``None`` for none.

        Returns:
            A ``TrainState``; for ``K`` models every leaf has a leading axis of size ``K``.
        """
        models = model_count(ensemble, lrs, "TrainState.create")
        scaler = _loss_scale.get(loss_scale)

        def create_one(run_key, lr, start_params):
            return _create_one(model, optimizer, run_key, lr, start_params, dtype, scaler)

        if models is None:
            return jax.jit(create_one)(key, None, params)
        keys = jax.random.split(key, models) if ensemble else jnp.stack([key] * models)
        rates = None if lrs is None else jnp.asarray(np.asarray(lrs, float), dtype)
        create = jax.vmap(create_one, in_axes=(0, None if rates is None else 0,
                                               None if params is None else 0))
        return jax.jit(create)(keys, rates, params)
