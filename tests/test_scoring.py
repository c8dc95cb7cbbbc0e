"""Library scoring (fnnet.cli.scoring) and the checkpoint metadata schema (fnnet.cli.model_config).

Scoring: the averaged prediction of stacked models is the mean of their outputs, each model's
scores are ``fnnet.evaluate``'s, and ``summarize_test`` reports one model and ``K`` models as
``fnnet train`` writes them. Metadata: a configuration saved with a checkpoint rebuilds the same
network and loads its params; missing or invalid keys are refused with a message naming them.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnnet
from fnnet import losses, metrics
from fnnet.cli import model_config, scoring
from fnnet.cli.model_config import MetadataError
from fnnet.training import RunConfig

SIZES = [6, 5, 4]
N = 40


@pytest.fixture(scope="module")
def problem():
    """A small network, three stacked models' params, one model's params, inputs and labels."""
    model = fnnet.mlp(SIZES, "tanh", "softmax")
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    stacked = jax.vmap(lambda key: model.init(key, jnp.float32))(keys)
    single = model.init(jax.random.PRNGKey(7), jnp.float32)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, SIZES[0])).astype(np.float32)
    labels = rng.integers(0, SIZES[-1], size=N).astype(np.int32)
    return model, stacked, single, x, labels


def random_params(template, seed=0):
    """Params of ``template``'s shapes and dtypes drawn by numpy (no init program to compile)."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda leaf: rng.normal(size=leaf.shape).astype(leaf.dtype),
                                  template)


def one_of(stacked, index):
    return jax.tree_util.tree_map(lambda leaf: leaf[index], stacked)


# ---------------------------------------------------------------------------------------------
# fnnet.cli.scoring


def test_targets_are_labels_for_cross_entropy_and_one_hot_otherwise():
    labels = np.array([0, 2, 1], np.int32)
    assert scoring.targets("cross-entropy", labels, 3) is labels
    for loss in ("mse", "binary-cross-entropy", losses.mse):
        np.testing.assert_array_equal(scoring.targets(loss, labels, 3), np.eye(3)[labels])


@pytest.mark.parametrize("labels,bad", [([0, 2, 3], "y[2] = 3"), ([-1, 0, 1], "y[0] = -1")])
def test_labels_out_of_range_are_refused_naming_value_and_position(problem, labels, bad):
    """Every scoring path reads labels through ``targets``: a label ≥ the class count (which
    cross-entropy would score as an all-zero row) or below 0 is refused."""
    labels = np.array(labels)
    for loss in ("cross-entropy", "mse"):
        with pytest.raises(ValueError, match=rf"labels {re.escape(bad)} is not a class label"):
            scoring.targets(loss, labels, 3)
    with pytest.raises(ValueError, match="integer class indices"):
        scoring.targets("mse", np.array([0.5]), 3)
    model, _, single, x, y = problem
    wrong = np.asarray(y).copy()
    wrong[5] = 10
    with pytest.raises(ValueError, match=r"y\[5\] = 10 is not a class label"):
        scoring.model_scores(model, "cross-entropy", single, 1, x, wrong)
    with pytest.raises(ValueError, match=r"y\[5\] = 10"):
        scoring.score_prediction("cross-entropy", np.full((len(wrong), 10), 0.1), wrong)


def test_predict_one_model_is_its_output(problem):
    model, _, single, x, _ = problem
    np.testing.assert_allclose(scoring.predict(model, single, 1, x), model.apply(single, x),
                               rtol=1e-6)


def test_predict_of_three_stacked_models_is_the_mean_of_their_outputs(problem):
    model, stacked, _, x, _ = problem
    manual = np.mean([np.asarray(model.apply(one_of(stacked, i), x)) for i in range(3)], axis=0)
    probs = scoring.predict(model, stacked, 3, x)
    assert probs.shape == (N, SIZES[-1])
    np.testing.assert_allclose(probs, manual, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)


def test_predict_refuses_a_model_count_that_is_not_a_positive_integer(problem):
    model, stacked, _, x, _ = problem
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="num_models"):
            scoring.predict(model, stacked, bad, x)


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
def test_model_scores_are_each_models_evaluate(problem, loss):
    model, stacked, single, x, labels = problem
    targets = scoring.targets(loss, labels, SIZES[-1])
    value, accuracy = scoring.model_scores(model, loss, single, 1, x, labels)
    expected = fnnet.evaluate(model, loss, single, jnp.asarray(x), jnp.asarray(targets))
    assert np.ndim(value) == 0 and np.ndim(accuracy) == 0
    assert value == pytest.approx(float(expected[0]), rel=1e-5)
    assert accuracy == pytest.approx(float(expected[1]))

    values, accuracies = scoring.model_scores(model, loss, stacked, 3, x, labels)
    assert values.shape == (3,) and accuracies.shape == (3,)
    for i in range(3):
        one = fnnet.evaluate(model, loss, one_of(stacked, i), jnp.asarray(x), jnp.asarray(targets))
        assert values[i] == pytest.approx(float(one[0]), rel=1e-5)
        assert accuracies[i] == pytest.approx(float(one[1]))


def test_evaluate_compiles_one_program_once(problem, caplog):
    """40 rows in chunks of 13: the scanned chunks and the last row are one compiled program
    (the rest once ran op by op, a program for every operation), and a second call with the
    same shapes compiles nothing; the score is the unchunked one."""
    _, _, single, x, labels = problem
    model = fnnet.mlp(SIZES, "tanh", "softmax")  # its own: programs are kept per model object
    x, labels = jax.device_put(x), jax.device_put(labels)
    whole = fnnet.evaluate(model, "cross-entropy", single, x, labels)

    def compiled(**kwargs):
        caplog.clear()
        with jax.log_compiles(True), caplog.at_level(logging.WARNING):
            result = fnnet.evaluate(model, "cross-entropy", single, x, labels, **kwargs)
        return result, [r.getMessage().split(" with ")[0] for r in caplog.records
                        if r.getMessage().startswith("Compiling ")]

    chunked, programs = compiled(batch_size=13)
    assert programs == ["Compiling jit(scores)"]
    assert compiled(batch_size=13)[1] == []
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)


def test_evaluate_keeps_a_program_per_loss_object_not_per_equal_loss():
    """Two losses that compare equal but compute differently (a setting kept outside the
    dataclass fields) are each scored by their own program."""
    class Scaled(losses.MSE):
        def __init__(self, scale):
            super().__init__("mse")
            object.__setattr__(self, "scale", scale)

        def value(self, y_pred, y_true):
            return self.scale * super().value(y_pred, y_true)

    model = fnnet.mlp([3, 2])
    params = model.init(jax.random.PRNGKey(0))
    x = np.ones((4, 3), np.float32)
    y = np.full((4, 2), 0.5, np.float32)
    one, hundred = Scaled(1.0), Scaled(100.0)
    assert one == hundred
    small = float(fnnet.evaluate(model, one, params, x, y)[0])
    large = float(fnnet.evaluate(model, hundred, params, x, y)[0])
    assert large == pytest.approx(100 * small, rel=1e-5)


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
@pytest.mark.parametrize("num_models", [1, 2])
def test_images_are_scored_in_chunks_with_the_same_result(monkeypatch, num_models):
    """A CNN's inputs ``(N, H, W, C)`` go through ``IMAGE_ROWS`` at a time (20 rows in chunks
    of 7 here): the prediction and the scores are those of the whole batch at once."""
    model = fnnet.cnn(input_shape=(6, 6, 1), classes=3, channels=(2,), hidden=None, dropout=0.25)
    params = random_params(model_config.param_template(model, num_models))
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(20, 6, 6, 1)).astype(np.float32)
    labels = rng.integers(0, 3, size=20).astype(np.int32)
    assert scoring.chunk_rows(x) == scoring.IMAGE_ROWS and scoring.chunk_rows(x[:, :, 0, 0]) == \
        scoring.ROWS
    whole_probs = scoring.predict(model, params, num_models, x)
    whole_scores = scoring.model_scores(model, "cross-entropy", params, num_models, x, labels)
    monkeypatch.setattr(scoring, "IMAGE_ROWS", 7)
    probs = scoring.predict(model, params, num_models, x)
    assert probs.shape == (20, 3)
    np.testing.assert_allclose(probs, whole_probs, rtol=1e-6, atol=1e-7)
    apply = model.apply if num_models == 1 else jax.vmap(model.apply, in_axes=(0, None))
    outputs = np.asarray(apply(params, jnp.asarray(x)))
    np.testing.assert_allclose(probs, outputs if num_models == 1 else outputs.mean(axis=0),
                               rtol=1e-5, atol=1e-6)
    for got, want in zip(scoring.model_scores(model, "cross-entropy", params, num_models, x,
                                              labels), whole_scores):
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_summarize_test_one_model():
    results = scoring.summarize_test("cross-entropy", np.array([0, 1]), np.float32(0.25),
                                     np.float32(0.5))
    assert results == {"test_accuracy": 0.5, "test_loss": 0.25}
    assert all(type(v) is float for v in results.values())


def test_summarize_test_of_k_models_scores_the_averaged_prediction(problem):
    model, stacked, _, x, labels = problem
    probs = scoring.predict(model, stacked, 3, x)
    model_loss, model_accuracy = scoring.model_scores(model, "cross-entropy", stacked, 3, x,
                                                      labels)
    results = scoring.summarize_test("cross-entropy", labels, model_loss, model_accuracy, probs)
    expected_accuracy = float(np.mean(np.argmax(probs, axis=1) == labels))
    expected_loss = float(losses.cross_entropy.value(jnp.asarray(probs), jnp.asarray(labels)))
    assert results["test_accuracy"] == pytest.approx(expected_accuracy)
    assert results["test_loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert results["model_test_accuracy"] == pytest.approx(model_accuracy.tolist())
    assert results["model_test_loss"] == pytest.approx(model_loss.tolist())
    assert results["mean_test_accuracy"] == pytest.approx(float(np.mean(model_accuracy)))
    assert results["mean_test_loss"] == pytest.approx(float(np.mean(model_loss)))
    assert scoring.score_prediction("cross-entropy", probs, labels) == pytest.approx(
        (results["test_loss"], results["test_accuracy"]))
    assert float(metrics.accuracy(jnp.asarray(probs), jnp.asarray(labels))) == pytest.approx(
        results["test_accuracy"])


def test_summarize_test_of_k_models_needs_their_prediction():
    with pytest.raises(ValueError, match="averaged prediction"):
        scoring.summarize_test("mse", np.array([0, 1]), [0.1, 0.2], [0.5, 1.0])


# ---------------------------------------------------------------------------------------------
# fnnet.cli.model_config


def config(**changes):
    settings = dict(dataset="mnist", layers=[784, 8, 10], activation="relu", output="softmax",
                    loss="cross-entropy", optimizer="momentum", lr=0.1, epochs=2, batch_size=64,
                    grads="manual", seed=3, ensemble=1)
    settings.update(changes)
    return model_config.train_config(**settings)


def test_train_config_has_every_key_in_order():
    made = config(layers=(784, 8, 10), batch_size=None)
    assert tuple(made) == model_config.CONFIG_KEYS
    assert made["layers"] == [784, 8, 10] and made["batch_size"] is None
    assert set(model_config.MODEL_KEYS) <= set(made)
    assert made["validation"] == 0 and made["data_dir"] is None
    assert config(data_dir=Path("/d"), validation=5)["data_dir"] == "/d"


@pytest.mark.parametrize("changes,named", [
    ({"optimizer": "lbfgs"}, "optimizer"),
    ({"optimizer": fnnet.optim.sgd(0.1)}, "optimizer"),
    ({"lr": float("nan")}, "lr"),
    ({"lr": "0.1"}, "lr"),
    ({"validation": -1}, "validation"),
    ({"lr_decay": 0}, "lr_decay"),
    ({"lr_decay": 1.01}, "lr_decay"),
])
def test_train_config_refuses_a_bad_optimizer_rate_or_split(changes, named):
    with pytest.raises(MetadataError, match=f"train_config: {named} must be"):
        config(**changes)


@pytest.mark.parametrize("num_models", [1, 3])
def test_metadata_round_trip_rebuilds_the_same_model(tmp_path, num_models):
    made = config(ensemble=num_models, activation="tanh", output="sigmoid", loss="mse")
    model, count = model_config.model_from_metadata(made)
    assert count == num_models
    assert model == fnnet.mlp([784, 8, 10], "tanh", "sigmoid")
    template = model_config.param_template(model, num_models)
    keys = jax.random.split(jax.random.PRNGKey(1), num_models)
    params = (model.init(keys[0], jnp.float32) if num_models == 1
              else jax.vmap(lambda key: model.init(key, jnp.float32))(keys))
    assert jax.tree_util.tree_structure(template) == jax.tree_util.tree_structure(params)
    for want, got in zip(jax.tree_util.tree_leaves(template), jax.tree_util.tree_leaves(params)):
        assert (want.shape, want.dtype) == (got.shape, got.dtype)

    assert_checkpoint_round_trip(tmp_path / "model.npz", params, made, model, num_models)


def assert_checkpoint_round_trip(path, params, config, model, num_models):
    """Saved with ``config`` as metadata, ``params`` load back unchanged into the network that
    metadata rebuilds, ``model``."""
    path = fnnet.save(path, params, **config, test_accuracy=0.5)
    _, meta = fnnet.load(path)
    rebuilt, rebuilt_count = model_config.model_from_metadata(meta)
    assert rebuilt == model and rebuilt_count == num_models
    loaded, _ = fnnet.load(path, like=model_config.param_template(rebuilt, rebuilt_count))
    for want, got in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded)):
        np.testing.assert_array_equal(np.asarray(want), np.asarray(got))


def test_missing_keys_are_named():
    meta = config()
    del meta["layers"], meta["ensemble"]
    with pytest.raises(MetadataError, match="not a model checkpoint.*lacks layers, ensemble"):
        model_config.model_from_metadata(meta)
    with pytest.raises(MetadataError, match="must be a dict"):
        model_config.model_from_metadata(["dataset"])


@pytest.mark.parametrize("key,value", [
    ("dataset", "cifar10"), ("layers", [784]), ("layers", [784, 0, 10]), ("layers", "784,10"),
    ("activation", "swish"), ("output", "softplus"), ("loss", "hinge"), ("ensemble", 0),
    ("ensemble", True),
])
def test_wrong_values_are_named(key, value):
    meta = dict(config(), **{key: value})
    with pytest.raises(MetadataError, match=f"invalid metadata.*{key}="):
        model_config.model_from_metadata(meta)


def test_inconsistent_settings_are_refused():
    with pytest.raises(MetadataError, match="must start at 784 and end at 10; got 100,10"):
        model_config.model_from_metadata(dict(config(), layers=[100, 10]))
    with pytest.raises(MetadataError, match="loss cross-entropy needs output softmax"):
        model_config.model_from_metadata(dict(config(), output="sigmoid"))
    with pytest.raises(MetadataError, match="--loss binary-cross-entropy needs --output sigmoid "
                                            "or softmax .*got --output linear"):
        model_config.check_loss_output("binary-cross-entropy", "linear", prefix="--")
    with pytest.raises(MetadataError, match="invalid metadata"):
        config(activation="swish")
    assert issubclass(MetadataError, ValueError)


def test_one_function_compares_a_resume_recipe_first():
    """The CLI's configuration is the ``recipe`` of the run's ``RunConfig``: a resume is
    compared by ``RunConfig.differences`` alone, recipe first, engine after."""
    engine = dict(model="Sequential(Dense(784, 8), ReLU())", loss="cross_entropy",
                  optimizer="momentum(lr=0.1)", examples=100, batch_size=64, epochs=2)
    saved = RunConfig(**engine, recipe=config()).to_json()
    assert saved["dataset"] == "mnist" and saved["run"]["batch_size"] == 64
    moved = RunConfig(**dict(engine, epochs=5), recipe=config(epochs=5, data_dir="/moved"))
    assert moved.differences(saved) == []
    assert RunConfig(**engine, recipe=config(lr=0.5, seed=4)).differences(saved) == [
        "lr 0.1 -> 0.5", "seed 3 -> 4"]
    assert RunConfig(**dict(engine, batch_size=32), recipe=config()).differences(saved) == [
        "batch_size 64 -> 32"]
    older = {k: v for k, v in saved["run"].items() if k != "loss_scale"}  # flat, before recipes
    assert RunConfig(**engine, recipe=config()).differences(older) == []
    with pytest.raises(ValueError, match="JSON object"):
        RunConfig(**engine).differences([1, 2])
    frozen = RunConfig(**engine, recipe=config())
    with pytest.raises(AttributeError):
        frozen.epochs = 3
    with pytest.raises(TypeError):
        frozen.recipe["lr"] = 3
