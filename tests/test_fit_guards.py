"""What fit refuses before any work, and what it treats as divergence (trust fixes)."""

import subprocess
import sys

import jax
import numpy as np
import pytest

import fnnet
from fnnet import optim
from fnnet.training import inputs

MODEL = fnnet.mlp([8, 6, 4])


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8)).astype(np.float32), rng.integers(0, 4, n).astype(np.int32)


def test_out_of_range_labels_are_refused_naming_value_and_position():
    x, y = _data()
    y[17] = 4
    with pytest.raises(ValueError, match=r"train y\[17\] = 4 is not a class label: expected "
                                         r"integers in 0..3 \(the network has 4 outputs\)"):
        fnnet.fit(MODEL, "ce", optim.sgd(0.1), (x, y), batch_size=16, progress=False)
    y[17] = -1
    with pytest.raises(ValueError, match=r"y\[17\] = -1"):
        fnnet.fit(MODEL, "ce", optim.sgd(0.1), (x, np.full(64, 0)),
                  validation=(x, y), batch_size=16, progress=False)


def test_every_label_invalid_no_longer_trains_to_a_zero_loss():
    x, _ = _data()
    with pytest.raises(ValueError, match="64 labels are out of range"):
        fnnet.fit(MODEL, "ce", optim.sgd(0.1), (x, np.full(64, 10)), batch_size=16,
                  progress=False)


def test_bce_targets_outside_zero_one_are_refused():
    x, _ = _data()
    model = fnnet.mlp([8, 4, 1], output="sigmoid")
    y = np.zeros((64, 1), np.float32)
    y[3, 0] = 2.0
    with pytest.raises(ValueError, match=r"y\[\(3, 0\)\] = 2.0 is not a valid "
                                         r"binary_cross_entropy target: expected values in \[0, 1\]"):
        fnnet.fit(model, "bce", optim.sgd(0.1), (x, y), batch_size=16, progress=False)


def test_non_finite_inputs_are_refused_before_training():
    x, y = _data()
    x[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"1 non-finite values .* first at \(5, 2\)"):
        fnnet.fit(MODEL, "ce", optim.sgd(0.1), (x, y), batch_size=16, progress=False)


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_a_loss_growing_past_the_bound_counts_as_divergence():
    x, y = _data(256)
    with pytest.warns(RuntimeWarning, match="past the divergence bound"):
        state, history = fnnet.fit(MODEL, "ce", optim.sgd(1e6), (x, y), epochs=5, batch_size=16,
                                    progress=False)
        params = state.params
    assert history["diverged"] and history["diverged"][0]["epoch"] == 1
    assert len(history["epoch"]) == 1, "training went on after the run diverged"
    loss, _ = fnnet.evaluate(MODEL, "ce", params, x, y)
    start, _ = fnnet.evaluate(MODEL, "ce", MODEL.init(jax.random.split(jax.random.PRNGKey(0))[0]),
                              x, y)
    assert float(loss) <= 1e3 * max(float(start), 1.0), "the params kept are past the bound"


def test_healthy_training_is_not_flagged():
    x, y = _data(256)
    _, history = fnnet.fit(MODEL, "ce", optim.sgd(0.1), (x, y), epochs=4, batch_size=16,
                           progress=False)
    assert "diverged" not in history and len(history["epoch"]) == 4


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_resume_refuses_a_changed_configuration(tmp_path):
    x, y = _data()
    path = tmp_path / "run.npz"
    fnnet.fit(MODEL, "ce", optim.sgd(0.1), (x, y), epochs=1, batch_size=16, progress=False,
              checkpoint=path)
    with pytest.raises(ValueError, match=r"another configuration \(optimizer "
                                         r"'sgd\(lr=0.1"):
        fnnet.fit(MODEL, "ce", optim.sgd(1e-9), (x, y), epochs=2, batch_size=16, progress=False,
                  checkpoint=path, resume=True)
    with pytest.raises(ValueError, match=r"batch_size 16 -> 32"):
        fnnet.fit(MODEL, "ce", optim.sgd(0.1), (x, y), epochs=2, batch_size=32, progress=False,
                  checkpoint=path, resume=True)
    with pytest.raises(TypeError, match=r"resume must be True or False"):
        fnnet.fit(MODEL, "ce", optim.sgd(0.1), (x, y), epochs=2, batch_size=16, progress=False,
                  resume=path)
    other = (x[::-1].copy(), y)  # issue 20: other data of the same size and type
    with pytest.raises(ValueError, match=r"another configuration \(data .*blake2b"):
        fnnet.fit(MODEL, "ce", optim.sgd(0.1), other, epochs=2, batch_size=16, progress=False,
                  checkpoint=path, resume=True)
    _, history = fnnet.fit(MODEL, "ce", optim.sgd(0.1), (x, y), epochs=2, batch_size=16,
                           progress=False, checkpoint=path, resume=True)
    assert history["epoch"] == [1, 2]
    assert history["config"]["run"]["data"]["shapes"] == [list(x.shape), list(y.shape)]


def test_checkpoint_that_cannot_be_written_is_refused_before_training(tmp_path):
    x, y = _data()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    calls = []
    with pytest.raises(ValueError, match=r"cannot be written: .*a-file is a file, not a folder "
                                         r"\(checked before training"):
        fnnet.fit(MODEL, "ce", optim.sgd(0.1), (x, y), batch_size=16, progress=False,
                  checkpoint=blocker / "run.npz", callbacks=[lambda *a: calls.append(a)])
    assert not calls, "an epoch ran before the checkpoint folder was checked"


def test_a_configuration_that_cannot_fit_in_memory_is_refused_with_the_figure():
    model = fnnet.mlp([784, 99_999_999, 10])
    x = np.zeros((8, 784), np.float32)
    y = np.zeros(8, np.int32)
    with pytest.raises(MemoryError, match=r"needs about [\d,.]+ GiB .* only [\d,.]+ GiB"):
        fnnet.fit(model, "ce", optim.sgd(0.1), (x, y), batch_size=8, progress=False)
    needed = inputs.training_bytes(model, optim.adam(1e-3), x[0], 8, 1000, np.float32)
    assert needed > 1000 * 784 * 99_999_999 * 4 * 5


def test_float64_without_x64_is_refused():
    code = ("import numpy as np, jax.numpy as jnp, fnnet\n"
            "try:\n"
            "    fnnet.fit(fnnet.mlp([2, 2]), 'mse', fnnet.optim.sgd(0.1),\n"
            "              (np.zeros((4, 2)), np.zeros((4, 2))), batch_size=2, dtype=jnp.float64,\n"
            "              progress=False)\n"
            "except ValueError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "dtype float64 needs JAX's 64-bit mode" in out.stdout, out.stdout + out.stderr


def test_an_optimizer_name_instead_of_an_optimizer_is_a_clear_error():
    x, y = _data()
    with pytest.raises(TypeError, match=r"optimizer must be an fnnet.optim.Optimizer .* got 'sgd' "
                                        r"\(for a name, use fnnet.optim.get\('sgd', lr\)\)"):
        fnnet.fit(MODEL, "ce", "sgd", (x, y), batch_size=16, progress=False)


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_adam_trains_low_precision_params_without_nan(dtype):
    x, y = _data(256)
    state, history = fnnet.fit(MODEL, "ce", optim.adam(1e-2), (x, y), epochs=3, batch_size=32,
                                progress=False, dtype=getattr(jax.numpy, dtype))
    params = state.params
    assert "diverged" not in history and np.isfinite(history["loss"]).all()
    assert history["loss"][-1] < history["loss"][0]
    assert params[0].W.dtype == getattr(jax.numpy, dtype)


def test_a_first_step_divergence_returns_the_params_of_the_last_finite_loss():
    """Issue 20: full batch, the only step of epoch 4 diverges; the params returned used to be
    that epoch's starting params, whose loss is NaN. They are now those before epoch 3's update,
    whose loss was epoch 3's (finite) loss; for stacked models, per model."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model = fnnet.mlp([4, 8, 3])
    with pytest.warns(RuntimeWarning):
        state, history = fnnet.fit(model, "cross_entropy", optim.sgd(30.0), (x, y), epochs=6,
                                   batch_size=None, progress=False)
    assert history["diverged"] == [{"epoch": 4, "models": [0]}]
    loss = float(fnnet.evaluate(model, "cross_entropy", state.params, x, y)[0])
    assert np.isfinite(loss) and loss == pytest.approx(history["loss"][2], rel=1e-6)
    with pytest.warns(RuntimeWarning):
        stacked, stacked_history = fnnet.fit(model, "cross_entropy", optim.sgd(1.0), (x, y),
                                             epochs=6, batch_size=None, lrs=[3.0, 30.0],
                                             progress=False)
    losses = [float(fnnet.evaluate(model, "cross_entropy",
                                   jax.tree_util.tree_map(lambda a, i=i: a[i], stacked.params),
                                   x, y)[0]) for i in range(2)]
    assert losses[1] == pytest.approx(loss, rel=1e-6)  # the diverged model, as alone
    assert losses[0] < stacked_history["loss"][-1][0]  # the healthy one trained on


def test_an_epoch_whose_every_step_is_skipped_is_said():
    """Issue 20: a loss scale that overflows at every step skipped the whole epoch silently."""
    x, y = _data()
    scale = fnnet.loss_scale.DynamicLossScale(initial=2.0 ** 127)
    with pytest.warns(RuntimeWarning, match="every step of epoch 1 was skipped"):
        state, history = fnnet.fit(MODEL, "ce", optim.sgd(0.1), (x, y), epochs=1, batch_size=32,
                                   precision="f16", loss_scale=scale, progress=False)
    assert history["skipped_steps"] == [len(x) // 32]
