"""The training core's public pieces: TrainState, EpochRunner, EpochRecord and the callbacks."""

import io as _io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet import optim
from fnnet.training import callbacks as cb

MODEL = fnnet.mlp([6, 5, 3])


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)


def _leaves_equal(a, b):
    """Same structure and bit-equal leaves (NaN equal to NaN)."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    if len(la) != len(lb):
        return False
    try:
        for u, v in zip(la, lb):
            np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    except AssertionError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# TrainState


def test_train_state_is_a_pytree_with_the_documented_fields():
    opt = optim.momentum(0.1)
    state = fnnet.TrainState.create(MODEL, opt, jax.random.PRNGKey(0))
    assert state._fields == ("params", "opt_state", "key", "stopped", "model_state", "loss_limit",
                             "loss_scale")
    assert state.loss_scale == ()  # no loss scaling outside a float16 policy
    assert state.num_models is None and state.model_state == ((),) * 4  # one () per layer
    assert state.stopped.shape == () and not bool(state.stopped)
    doubled = jax.jit(lambda s: jax.tree_util.tree_map(lambda v: v, s))(state)
    assert isinstance(doubled, fnnet.TrainState) and _leaves_equal(doubled, state)


def test_create_matches_what_fit_trains_from():
    x, y = _data()
    key = jax.random.PRNGKey(3)
    params_state, _ = fnnet.fit(MODEL, "ce", optim.sgd(0.1), (x, y), epochs=0, batch_size=32, key=key,
                          progress=False)
    params = params_state.params
    state = fnnet.TrainState.create(MODEL, optim.sgd(0.1), key)
    assert _leaves_equal(state.params, params)


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_ensemble_member_k_is_the_single_model_of_key_k():
    opt = optim.adam(1e-2)
    key = jax.random.PRNGKey(7)
    stacked = fnnet.TrainState.create(MODEL, opt, key, ensemble=4)
    assert stacked.num_models == 4 and stacked.stopped.shape == (4,)
    for k, sub in enumerate(jax.random.split(key, 4)):
        one = fnnet.TrainState.create(MODEL, opt, sub)
        assert _leaves_equal(jax.tree_util.tree_map(lambda v, k=k: v[k], stacked), one)


def test_a_sweep_shares_the_initial_params_and_differs_in_rate():
    state = fnnet.TrainState.create(MODEL, optim.sgd(0.1), jax.random.PRNGKey(0),
                                    lrs=[0.1, 0.01, 0.001])
    np.testing.assert_allclose(state.opt_state["lr"], [0.1, 0.01, 0.001], rtol=1e-6)
    W = state.params[0].W
    assert np.array_equal(W[0], W[1]) and np.array_equal(W[1], W[2])


@pytest.mark.parametrize("kwargs, match", [
    ({"ensemble": 0}, "ensemble must be a positive integer"),
    ({"ensemble": True}, "ensemble must be a positive integer"),
    ({"lrs": []}, "lrs must be a non-empty list"),
    ({"lrs": [0.1, float("nan")]}, "finite"),
    ({"lrs": [0.1, -1.0]}, ">= 0"),
    ({"lrs": [0.1, 0.2], "ensemble": 3}, "ensemble=3 but 2 learning rates"),
])
def test_create_refuses_bad_model_counts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fnnet.TrainState.create(MODEL, optim.sgd(0.1), jax.random.PRNGKey(0), **kwargs)


# ---------------------------------------------------------------------------------------------
# EpochRunner


def test_runner_epochs_are_the_epochs_fit_runs():
    x, y = _data()
    opt = optim.momentum(0.05)
    key = jax.random.PRNGKey(1)
    params_state, history = fnnet.fit(MODEL, "ce", opt, (x, y), epochs=3, batch_size=16, key=key,
                                progress=False)
    params = params_state.params
    xd, yd = fnnet.to_device(x, y)
    state = fnnet.TrainState.create(MODEL, opt, key)
    runner = fnnet.EpochRunner(MODEL, "ce", opt, len(x), 16)
    for epoch in range(3):
        state, stats = runner(state, xd, yd)
        assert int(stats["seen"]) == (96 // 16) * 16
        np.testing.assert_allclose(stats["loss_sum"] / 6, history["loss"][epoch], rtol=1e-6)
    assert _leaves_equal(state.params, params)


def test_runner_compiles_once_and_its_program_is_pure():
    x, y = fnnet.to_device(*_data())
    opt = optim.sgd(0.1)
    state = fnnet.TrainState.create(MODEL, opt, jax.random.PRNGKey(0), ensemble=2)
    runner = fnnet.EpochRunner(MODEL, "ce", opt, 96, 32, models=2).compile(state, x, y)
    first = runner.compile_seconds
    assert first > 0
    after, _ = runner(state, x, y)
    again, _ = runner(state, x, y)
    assert runner.compile_seconds == first, "a second call compiled again"
    assert _leaves_equal(after, again), "the same inputs gave different outputs"
    program_out, _ = jax.jit(runner.program())(state, x, y)
    assert _leaves_equal(program_out, after)


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_runner_replays_a_diverged_epoch_and_keeps_the_last_finite_params():
    x, y = fnnet.to_device(*_data())
    opt = optim.sgd(1e30)
    state = fnnet.TrainState.create(MODEL, opt, jax.random.PRNGKey(0))
    runner = fnnet.EpochRunner(MODEL, "ce", opt, 96, 16)
    new_state, stats = runner(state, x, y)
    assert bool(new_state.stopped) and int(stats["bad_step"]) >= 0
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(new_state.params))
    unguarded, _ = jax.jit(runner.program(keep_last_good=False))(state, x, y)
    guarded_loss, _ = fnnet.evaluate(MODEL, "ce", new_state.params, x, y)
    unguarded_loss, _ = fnnet.evaluate(MODEL, "ce", unguarded.params, x, y)
    assert np.isfinite(float(guarded_loss)), "the replay should return the last finite params"
    assert not np.isfinite(float(unguarded_loss)), "the fast program should stop at the bad params"


# ---------------------------------------------------------------------------------------------
# Records and callbacks


def test_fit_calls_each_callback_with_the_record_state_and_history():
    x, y = _data()
    seen = []

    def callback(record, state, history):
        seen.append((record.epoch, type(state).__name__, len(history["epoch"])))
        assert record.loss == history["loss"][-1] and record.seconds > 0

    fnnet.fit(MODEL, "ce", optim.sgd(0.1), (x, y), epochs=3, batch_size=32, progress=False,
              callbacks=[callback])
    assert seen == [(1, "TrainState", 1), (2, "TrainState", 2), (3, "TrainState", 3)]


def test_epoch_record_and_history_from_stats():
    stats = {"loss_sum": np.array([3.0, np.nan]), "correct": np.array([40, 0]),
             "seen": np.array([64, 0]), "ok_steps": np.array([2, 0]),
             "bad_step": np.array([-1, 2]), "last_loss": np.array([0.5, 0.7])}
    record = cb.epoch_record(4, stats, 0.5, 128)
    assert record.loss[0] == pytest.approx(1.5) and np.isnan(record.loss[1])
    assert record.train_accuracy[0] == pytest.approx(40 / 64) and record.diverged == [1]
    assert record.examples_per_second == pytest.approx(256)
    history = cb.new_history()
    cb.append(history, record)
    assert history["epoch"] == [4] and history["diverged"] == [{"epoch": 4, "models": [1]}]
    assert set(cb.saved_history(history)) == set(cb.HISTORY_KEYS)


def test_print_progress_prints_first_last_and_about_thirty_lines():
    out = _io.StringIO()
    printer = cb.print_progress(90, file=out)
    for epoch in range(1, 91):
        printer(cb.EpochRecord(epoch, 0.5, 0.9, 1000.0, 0.1), None, None)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("epoch  1/90") and lines[-1].startswith("epoch 90/90")
    assert 25 <= len(lines) <= 35


def test_warn_diverged_names_the_model_step_and_last_loss():
    record = cb.EpochRecord(2, [0.1, float("nan")], [1.0, float("nan")], 1.0, 1.0, diverged=[1],
                            stats={"bad_step": np.array([-1, 5]), "last_loss": np.array([0.1, 0.25]),
                                   "bad_loss": np.array([np.nan, np.nan])})
    state = fnnet.TrainState(None, None, None, None, (), np.array([10.0, 20.0]))
    with pytest.warns(RuntimeWarning, match=r"model 1: loss became non-finite at epoch 2, step 5 "
                                            r"\(last finite loss 0.25\)"):
        cb.warn_diverged(models=2)(record, state, None)
    record.stats["bad_loss"] = np.array([np.nan, 1e5])
    with pytest.warns(RuntimeWarning, match=r"model 1: loss reached 1e\+05, past the divergence "
                                            r"bound 20, at epoch 2, step 5"):
        cb.warn_diverged(models=2)(record, state, None)


def test_numpy_integer_batch_size_is_accepted_and_bool_refused():
    x, y = _data()
    state, _ = fnnet.fit(MODEL, "ce", optim.sgd(0.1), (x, y), batch_size=np.int64(32),
                          progress=False)
    params = state.params
    assert params[0].W.shape == (5, 6)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        fnnet.fit(MODEL, "ce", optim.sgd(0.1), (x, y), batch_size=True, progress=False)


def test_evaluate_on_no_rows_is_a_clear_error():
    params = MODEL.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="no rows"):
        fnnet.evaluate(MODEL, "ce", params, jnp.zeros((0, 6)), jnp.zeros((0,), jnp.int32))
