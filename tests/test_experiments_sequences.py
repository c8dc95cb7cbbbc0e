"""Experiments on the recurrent layers, beyond the notes: ``rnn_by_hand`` (backpropagation through
time checked three ways, and the vanishing gradient) and ``char_lstm`` (a character LSTM on tiny
Shakespeare, the real corpus when ``FNNET_DATA_DIR`` points at it, else a synthetic text), each
run with ``--quick`` in this process."""

import json
import math

import jax
import numpy as np
import pytest
from test_experiments_notes import run_modules_help

import fnnet
from experiments import char_lstm, rnn_by_hand, run_all

pytestmark = pytest.mark.slow  # the experiment scripts

NAMES = ("rnn_by_hand", "char_lstm")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_quick(module, out, *extra):
    """``module.main(["--quick", "--out", out, *extra])``; the metrics it returned and wrote,
    every figure a real PNG, a headline and tables (the experiments beyond the notes)."""
    returned = module.main(["--quick", "--out", str(out), *extra])
    written = json.loads((out / "metrics.json").read_text())
    assert written["quick"] is True and written["experiment"] == module.NAME
    assert set(written) == set(returned)
    for name in written["figures"]:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, f"{name} is not a real PNG"
    assert written["headline"] and written["tables"]
    return written


def test_rnn_by_hand_three_checks_and_vanishing_gradients(tmp_path):
    m = run_quick(rnn_by_hand, tmp_path)
    assert m["figures"] == ["vanishing_gradients.png", "bptt_errors.png"]

    # 1. every gradient of every cell, against the three references
    rows = m["agreement"]
    shapes = rnn_by_hand.QUICK_SHAPES
    assert any(t == 1 for _, t, _, _ in rnn_by_hand.SHAPES)  # the full run's
    assert len(rows) == len(rnn_by_hand.CELLS) * len(shapes) * len(rnn_by_hand.COMPARISONS)
    assert {r["cell"] for r in rows} == set(rnn_by_hand.CELLS)
    assert {r["comparison"] for r in rows} == set(rnn_by_hand.COMPARISONS)
    exact, numeric = rnn_by_hand.COMPARISONS[:2], rnn_by_hand.COMPARISONS[2]
    for r in rows:
        present = {g for g in rnn_by_hand.GRADS if r[g] is not None}
        expected = {"dW_x", "dW_h", "db", "dx", "dh0"} | (
            {"dc0"} if r["cell"] == "LSTM" else {"db_hn"} if r["cell"] == "GRU" else set())
        assert present == expected, r
        bound = rnn_by_hand.FD_TOLERANCE if r["comparison"] == numeric else 1e-10
        for g in present:
            assert 0 <= r[g] <= bound, (r, g)
        if r["comparison"] == exact[1]:  # the Python loop's forward equals the layer's
            assert r["Y"] <= 1e-10, r
        else:
            assert r["Y"] is None
    assert m["max_rel_error"] <= 1e-10 and m["max_fd_rel_error"] <= rnn_by_hand.FD_TOLERANCE
    assert max(m["public_backward_rel_error"].values()) <= 1e-10
    assert m["all_agree"]
    table = m["tables"]["relative error of the hand-derived BPTT (float64)"]
    assert len(table["rows"]) == len(rows) and "dh0" in table["headers"]

    # 2. ‖∂L/∂H_t‖ / ‖∂L/∂H_T‖ for t = 0 … T, before and after training
    length = rnn_by_hand.QUICK_MEMORY["lengths"][-1]
    assert m["T"] == length
    chance = 1 / rnn_by_hand.TOKENS
    for label, cell in m["cells"].items():
        assert cell["loop_rel_error"] <= 1e-10, label  # reverse scan == jax.grad of our loop
        for when in ("init", "trained"):
            dh = np.asarray(cell[when]["dH"], float)
            assert dh.shape == (length + 1,) and np.all(np.isfinite(dh)) and np.all(dh >= 0)
            assert dh[-1] == pytest.approx(1.0)  # the ratio at the last step
            if label == "LSTM":
                dc = np.asarray(cell[when]["dC"], float)
                assert dc.shape == (length,) and np.all(np.isfinite(dc))
            else:
                assert "dC" not in cell[when]
        assert cell["init"]["dH"][0] < 1.0  # at initialisation less reaches the first step
        assert [s["T"] for s in cell["stages"]] == list(rnn_by_hand.QUICK_MEMORY["lengths"])
        for stage in cell["stages"]:
            assert len(stage["val_accuracy"]) == rnn_by_hand.QUICK_MEMORY["epochs"]
            assert all(math.isfinite(v) for v in stage["loss"])
    assert max(c["val_accuracy"] for c in m["cells"].values()) > 2 * chance


def test_the_python_loop_is_an_independent_reference():
    """The loop reproduces each layer's forward, and a loop that walks time backwards does not:
    the comparison (b) would catch a scan that read the steps in the wrong order."""
    rng = np.random.default_rng(1)
    with jax.enable_x64(True):
        for cell in rnn_by_hand.LAYERS:
            layer, params, x, initial, _ = rnn_by_hand.random_problem(cell, (2, 4, 3, 5), rng)
            y = layer.sequence_forward(params, x, initial)[0]
            np.testing.assert_allclose(rnn_by_hand.loop_forward(cell, params, x, initial), y,
                                       rtol=1e-12, atol=1e-12)
            backwards = rnn_by_hand.loop_forward(cell, params, x[:, ::-1], initial)[:, ::-1]
            assert np.max(np.abs(backwards - y)) > 1e-3


def test_char_lstm_learns_and_samples(tmp_path):
    m = run_quick(char_lstm, tmp_path)
    assert m["figures"] == ["loss_curves.png"]
    assert m["data"] in ("tiny shakespeare", "synthetic text (tiny Shakespeare not found)")
    vocab = m["vocab"]
    if m["data"] == "tiny shakespeare":
        assert len(vocab) == 65
    h = m["history"]
    epochs = char_lstm.QUICK_EPOCHS
    assert h["epoch"] == list(range(1, epochs + 1))
    train, val = np.asarray(h["train_nats_per_char"]), np.asarray(h["validation_nats_per_char"])
    assert train.shape == val.shape == (epochs,)
    assert np.all(np.isfinite(train)) and np.all(np.isfinite(val))
    assert np.all(np.diff(train) < 0) and np.all(np.diff(val) < 0), (train, val)
    assert val[-1] < math.log(len(vocab))  # better than a uniform guess
    assert h["validation_bits_per_char"] == pytest.approx(list(val / math.log(2)))
    assert m["validation_nats_per_char"] == val[-1]
    assert m["validation_bits_per_char"] == pytest.approx(val[-1] / math.log(2))
    assert m["config"]["architecture"] == char_lstm.QUICK["architecture"]
    assert m["n_train_chars"] > m["n_validation_chars"] > 0
    # samples: the prompt, then the requested number of characters, all in the vocabulary
    assert set(m["samples"]) == {str(t) for t in char_lstm.TEMPERATURES}
    for text in m["samples"].values():
        assert isinstance(text, str) and text.startswith(char_lstm.PROMPT)
        assert len(text) == len(char_lstm.PROMPT) + char_lstm.QUICK_SAMPLE_LENGTH
        assert set(text) <= set(vocab)
    assert "validation" in " ".join(m["tables"])
    assert not any("test" in key for key in m["headline"])  # no test split: validation only


def test_char_lstm_falls_back_to_synthetic_text_only_in_quick(tmp_path, monkeypatch):
    monkeypatch.setenv("FNNET_DATA_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("FNNET_CACHE_DIR", str(tmp_path / "cache"))
    corpus, source = char_lstm.load_corpus(True, seed=0)
    assert source.startswith("synthetic")
    assert isinstance(corpus, fnnet.datasets.CharCorpus)
    assert set(char_lstm.PROMPT) <= set(corpus.vocab)
    n = len(corpus.train) + len(corpus.validation)
    assert n == len(corpus.text) and len(corpus.train) == int(n * 0.9)
    assert corpus.decode(corpus.train[:20]) == corpus.text[:20]
    assert not (tmp_path / "cache").exists()  # --quick downloads nothing


def test_registered_and_run_as_modules():
    names = list(run_all.EXPERIMENTS)
    assert set(NAMES) <= set(names)
    assert names.index("batchnorm_by_hand") < names.index("rnn_by_hand") < \
        names.index("char_lstm") < names.index("mnist_cnn")
    out = run_modules_help(list(NAMES))
    assert out.count("--quick") >= len(NAMES) and out.count("--seed") >= len(NAMES)


@pytest.mark.parametrize("module, argv", [(char_lstm, ["--epochs", "0"]),
                                          (char_lstm, ["--no-such-flag"]),
                                          (rnn_by_hand, ["--no-such-flag"])])
def test_bad_flags_are_refused(module, argv):
    with pytest.raises(SystemExit):
        module.main(argv)
