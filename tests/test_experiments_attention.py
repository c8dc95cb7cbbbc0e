"""Experiments beyond the notes on attention: ``attention_by_hand`` (the backward worked on
explicit matrices, both forms against ``jax.vjp``, the memory and time of a training step against
the context) and ``shakespeare_gpt`` (nanoGPT's CPU recipe: curves, samples, attention maps),
each run with ``--quick`` in this process (tiny Shakespeare when ``FNNET_DATA_DIR`` points at it,
else a synthetic text)."""


import numpy as np
import pytest
from test_experiments_notes import run_modules_help
from test_experiments_sequences import run_quick

from experiments import attention_by_hand, run_all, shakespeare_gpt

pytestmark = pytest.mark.slow  # the experiment scripts

NAMES = ("attention_by_hand", "shakespeare_gpt")


def test_attention_by_hand_derivation_forms_and_memory(tmp_path):
    m = run_quick(attention_by_hand, tmp_path)
    assert m["figures"] == ["memory_and_time.png"]
    # the derivation, line by line, without and with dropout
    steps = m["derivation"]
    assert {r["step"] for r in steps} == set(attention_by_hand.STEPS)
    assert {r["case"].rsplit(" ", 1)[1] for r in steps} == {"0", f"{attention_by_hand.DROPOUT:g}"}
    assert all(r["error"] <= attention_by_hand.TOLERANCE for r in steps), steps
    assert m["causal_leak"] == 0  # no gradient from a later step, to the bit
    # both forms of the layer against jax.vjp of apply
    rows = m["agreement"]
    assert {(r["form"], r["block"]) for r in rows} == set(attention_by_hand.QUICK_FORMS)
    assert len(rows) == len(attention_by_hand.QUICK_CASES) * len(attention_by_hand.QUICK_FORMS)
    for r in rows:
        assert max(r[k] for k in attention_by_hand.ERROR_COLUMNS) <= 1e-10, r
    assert m["all_agree"] and m["max_rel_error"] <= 1e-10
    # the memory table: the three implementations at every length
    sweep = m["memory"]
    assert [r["T"] for r in sweep] == list(attention_by_hand.QUICK_LENGTHS)
    for r in sweep:
        for name in attention_by_hand.IMPLEMENTATIONS:
            assert r[name]["temp_mib"] > 0 and r[name]["ms"] > 0
            assert len(r[name]["seconds"]) == r["rounds"] >= 2
        assert r["loss_spread"] < 1e-5  # the three compute the same loss
    first, last = sweep[0], sweep[-1]
    lean = last["lean backward"]["temp_mib"] / first["lean backward"]["temp_mib"]
    autodiff = last["jax.grad"]["temp_mib"] / first["jax.grad"]["temp_mib"]
    assert lean < autodiff, (lean, autodiff)  # the lean step's memory grows slower
    assert last["lean backward"]["temp_mib"] < last["jax.grad"]["temp_mib"]
    table = m["tables"]["one training step: MiB of temporaries and ms per step"]
    assert len(table["rows"]) == len(sweep) and len(table["headers"]) == 8
    assert any("lean / jax.grad" in k for k in m["headline"])


def test_shakespeare_gpt_curves_samples_and_maps(tmp_path):
    m = run_quick(shakespeare_gpt, tmp_path)
    assert m["figures"] == ["loss_curves.png", "attention_maps.png"]
    assert m["data"] in ("tiny shakespeare", "synthetic text (tiny Shakespeare not found)")
    quick = shakespeare_gpt.QUICK
    assert m["config"]["steps"] == quick["steps"] and m["config"]["optimizer"] == "adamw"
    curves = m["curves"]
    every = quick["eval_every"]
    assert curves["step"] == list(range(every, quick["steps"] + 1, every))
    vocab = m["vocab"]
    uniform = np.log(len(vocab))
    assert all(np.isfinite(curves["train_nats_per_char"]))
    assert m["validation_nats_per_char"] < uniform  # it learned something
    assert curves["validation_nats_per_char"][-1] < curves["validation_nats_per_char"][0]
    assert m["validation_bits_per_char"] == pytest.approx(m["validation_nats_per_char"]
                                                          / np.log(2))
    assert not any("test" in key.lower() for key in m["headline"])  # validation, never "test"
    # samples: strings over the vocabulary, the prompt first
    assert set(m["samples"]) == {str(t) for t in shakespeare_gpt.TEMPERATURES}
    for text in m["samples"].values():
        assert isinstance(text, str) and text.startswith(shakespeare_gpt.PROMPT)
        assert len(text) == len(shakespeare_gpt.PROMPT) + shakespeare_gpt.QUICK_SAMPLE_LENGTH
        assert set(text) <= set(vocab)
    # attention maps: each row a distribution over the keys up to the query
    a = m["attention"]
    assert a["blocks"] == [1, quick["depth"]] and a["heads"] == quick["heads"]
    with np.load(tmp_path / a["file"]) as maps:
        prompt = str(maps["prompt"])
        assert prompt == a["prompt"] and len(prompt) == min(32, quick["block_size"])
        for block in a["blocks"]:
            p = maps[f"block_{block}"]
            assert p.shape == (quick["heads"], len(prompt), len(prompt))
            np.testing.assert_allclose(p.sum(-1), 1, atol=1e-5)
            assert np.all(np.triu(p, 1) == 0) and np.all(p >= 0)
    assert a["row_sum_max_error"] < 1e-5 and a["max_above_diagonal"] == 0
    assert a["rebuilt_output_max_difference"] < 1e-5  # the maps are what the model uses


def test_registered_and_run_as_modules():
    assert set(NAMES) <= set(run_all.EXPERIMENTS)
    out = run_modules_help(list(NAMES))
    assert out.count("--quick") >= len(NAMES) and out.count("--seed") >= len(NAMES)


def test_bad_steps_are_refused():
    with pytest.raises(SystemExit):
        shakespeare_gpt.main(["--quick", "--steps", "15"])  # not a multiple of 10
