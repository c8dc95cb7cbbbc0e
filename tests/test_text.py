"""Character models: ``fnnet.language_model``, ``fnnet.sampling.sample`` and the command line's
``train --dataset shakespeare`` and ``sample``.

The command-line tests train a tiny model for one epoch on a stand-in corpus of the real one's
size and vocabulary (written into a temporary data folder), so they need no download."""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_cli import assert_one_line_error, read_json, run

import fnnet
from fnnet.cli import train_text
from fnnet.datasets import shakespeare
from fnnet.sampling import sample

TINY = ["--dim", "8", "--hidden", "16", "--block-size", "16", "--batch-size", "512",
        "--epochs", "1", "--quiet"]


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_sampling_carries_the_state_as_recomputing_the_sequence_would():
    model = fnnet.language_model(11, dim=6, hidden=12, depth=2)
    carried = fnnet.language_model(11, dim=6, hidden=12, depth=2, stateful=1)
    params = model.init(jax.random.PRNGKey(0))
    prompt = [3, 1, 4, 1, 5]
    greedy = sample(carried, params, prompt, 12, key=jax.random.PRNGKey(1), temperature=1e-6)
    # the whole sequence recomputed from a zero state by apply: each drawn id is the most likely
    # one after the ids before it
    sequence = jnp.asarray([prompt + greedy.tolist()[:-1]])
    best = jnp.argmax(model.apply(params, sequence)[0], axis=-1)
    assert greedy.tolist() == best[len(prompt) - 1:].tolist()
    a = sample(carried, params, prompt, 30, key=jax.random.PRNGKey(2), temperature=1.0)
    b = sample(carried, params, prompt, 30, key=jax.random.PRNGKey(2), temperature=1.0)
    c = sample(carried, params, prompt, 30, key=jax.random.PRNGKey(3), temperature=1.0)
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    assert a.dtype == jnp.int32 and 0 <= int(a.min()) and int(a.max()) < 11
    for bad, match in (([], "at least one id"), ([[1, 2]], "1-D")):
        with pytest.raises(ValueError, match=match):
            sample(carried, params, bad, 3, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample(carried, params, prompt, 3, key=jax.random.PRNGKey(0), temperature=0.0)


def test_windows_cut_the_text_into_next_character_pairs():
    ids = np.arange(20, dtype=np.int32)
    x, y = train_text.windows(ids, 4, offset=1)
    assert x.shape == y.shape == (4, 4)
    np.testing.assert_array_equal(x[0], [1, 2, 3, 4])
    np.testing.assert_array_equal(y[0], [2, 3, 4, 5])
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    with pytest.raises(ValueError, match="holds no window"):
        train_text.windows(ids[:3], 4)


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory, monkeypatch_module):
    """A data folder whose ``tinyshakespeare/input.txt`` the loader accepts: a stand-in text of
    the real one's size and 65 characters, its size and hash put in place of the published
    ones for this module."""
    vocab = sorted(set("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
    size = shakespeare.SIZE
    text = "".join(np.random.default_rng(0).choice(vocab, size))
    data = text.encode()
    root = tmp_path_factory.mktemp("text")
    (root / "tinyshakespeare").mkdir()
    (root / "tinyshakespeare" / "input.txt").write_bytes(data)
    monkeypatch_module.setattr(shakespeare, "SHA256", hashlib.sha256(data).hexdigest())
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def trained(corpus_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("char") / "run"
    code = fnnet.cli.main(["train", "--dataset", "shakespeare", "--model", "lstm", "--data-dir",
                           str(corpus_root), "--no-download", "--out", str(out), *TINY])
    return code, out


@pytest.mark.slow  # seconds of training or compiling: the full suite runs it
def test_train_writes_a_character_model_with_losses_per_character(trained):
    code, out = trained
    assert code == 0
    config = read_json(out / "config.json")
    assert config["dataset"] == "shakespeare" and len(config["vocab"]) == 65
    assert config["architecture"] == {"dim": 8, "hidden": 16, "depth": 1, "cell": "lstm"}
    assert "clip_by_global_norm(adam" in config["run"]["optimizer"]
    metrics = read_json(out / "metrics.json")
    assert metrics["validation_bits_per_char"] == pytest.approx(
        metrics["validation_loss"] / np.log(2))
    assert 0 < metrics["validation_loss"] < np.log(65) + 0.5
    for name in ("train_state.npz", "model.npz", "curves.png"):
        assert (out / name).is_file()


def test_sample_prints_the_prompt_and_is_deterministic(trained, capsys):
    _, out = trained
    texts = []
    for seed in ("4", "4", "5"):
        code, stdout, err = run(capsys, "sample", out, "--prompt", "ROMEO:", "--length", "40",
                                "--seed", seed)
        assert code == 0, err
        texts.append(stdout)
    assert texts[0] == texts[1] != texts[2]
    assert texts[0].startswith("ROMEO:") and len(texts[0].rstrip("\n")) >= 40


@pytest.mark.parametrize("argv, message", [
    (["--prompt", "ROMEO{"], "argument --prompt: expected at least one character"),
    (["--prompt", ""], "got an empty prompt"),
    (["--length", "0"], "argument --length"),
    (["--temperature", "-1"], "argument --temperature"),
])
def test_sample_refuses_bad_input_in_one_line(trained, capsys, argv, message):
    _, out = trained
    code, _, err = run(capsys, "sample", out, *argv)
    assert_one_line_error(code, err, mentions=message)


def test_sample_refuses_what_is_not_a_character_model(tmp_path, capsys):
    fnnet.save(tmp_path / "model.npz", {"W": np.zeros(2)}, dataset="mnist")
    code, _, err = run(capsys, "sample", tmp_path)
    assert_one_line_error(code, err, mentions="is not a character model")
    code, _, err = run(capsys, "sample", tmp_path / "nothing")
    assert_one_line_error(code, err, mentions="is not a file")


@pytest.mark.parametrize("argv, message", [
    (["--model", "mlp"], "argument --model: --dataset shakespeare trains a character LSTM"),
    (["--model", "lstm", "--validation", "10"], "argument --validation: not for --dataset"),
    (["--model", "lstm", "--batch-size", "full"], "--batch-size full: not for --dataset"),
    (["--model", "lstm", "--ensemble", "2"], "--ensemble: not for --dataset"),
])
def test_train_text_refuses_what_it_cannot_honour(tmp_path, capsys, argv, message):
    code, _, err = run(capsys, "train", "--dataset", "shakespeare", "--out", tmp_path / "o",
                       "--no-download", *argv)
    assert_one_line_error(code, err, mentions=message)
    assert not (tmp_path / "o").exists()


def test_the_text_flags_are_refused_for_images(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--hidden", "64", "--out", tmp_path / "o")
    assert_one_line_error(code, err, mentions="argument --hidden: only for --dataset shakespeare")
