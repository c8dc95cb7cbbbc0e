"""The GPT: ``fnnet.gpt`` against autodiff, tied weights, causality, AdamW, training on a token
stream (``TokenWindows``) with checkpoints and a bit-exact resume, windowed sampling, and the
command line's ``train --dataset shakespeare --model gpt`` and ``sample``.

Gradients in float64, every leaf on its own (relative error ≤ 1e-10). The command-line tests
train a tiny GPT for a few steps on the stand-in corpus of ``test_text`` (no download)."""

from __future__ import annotations

import contextlib
import functools
import io
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_attention import assert_tree, random_params, rel
from test_cli import assert_one_line_error, read_json, run
from test_text import corpus_root, monkeypatch_module  # noqa: F401  (fixtures)

import fnnet
from fnnet import optim
from fnnet.layers import GPTParams
from fnnet.sampling import sample

F64 = jnp.float64
SEEDS = st.integers(0, 2**16)


@functools.cache
def both_gradients(model):
    manual = fnnet.value_and_grad(model, "cross_entropy")
    reference = fnnet.autodiff_value_and_grad(model, "cross_entropy")

    def run(params, ids, labels, key):
        return manual(params, ids, labels, key=key), reference(params, ids, labels, key=key)

    return jax.jit(run)


@settings(max_examples=3, deadline=None)
@given(vocab=st.integers(2, 9), t=st.integers(1, 7), extra=st.integers(0, 2),
       layers=st.integers(1, 2), heads=st.integers(1, 2), d=st.integers(1, 3),
       tie=st.booleans(), dropout=st.sampled_from([0.0, 0.3]), form=st.sampled_from(
           ["lean", "keep_p"]), seed=SEEDS)
@example(vocab=3, t=1, extra=0, layers=1, heads=1, d=1, tie=True, dropout=0.0, form="lean",
         seed=0)
def test_gpt_gradient_matches_autodiff_leaf_by_leaf(vocab, t, extra, layers, heads, d, tie,
                                                    dropout, form, seed):
    """The whole GPT (embeddings, blocks, final LayerNorm, tied or untied head, fused
    softmax/cross-entropy over every token) against jax.grad of apply."""
    model = fnnet.gpt(vocab, t + extra, layers, heads, heads * d, dropout, tie,
                      backward_form=form, block=2)
    params = random_params(model, seed, 0.3)
    rng = np.random.default_rng(seed)
    ids = jnp.asarray(rng.integers(0, vocab, (2, t)), jnp.int32)
    labels = jnp.asarray(rng.integers(0, vocab, (2, t)), jnp.int32)
    (value, grads), (ref_value, ref_grads) = both_gradients(model)(params, ids, labels,
                                                                   jax.random.key(seed))
    assert abs(float(value - ref_value)) <= 1e-12 * abs(float(ref_value))
    assert isinstance(grads[0], GPTParams)
    assert_tree(grads, ref_grads, repr(model))


def test_tied_gradient_is_the_sum_of_the_lookup_and_the_head():
    """dW_te of the tied model equals the untied model's dW_te plus its head's dW, when the
    untied head holds the same matrix (and a zero bias)."""
    tied = fnnet.gpt(7, 6, 1, 2, 4, tie_weights=True)
    untied = fnnet.gpt(7, 6, 1, 2, 4, tie_weights=False)
    params = random_params(tied, 1, 0.3)
    body = params[0]
    head = fnnet.DenseParams(W=body.wte.W, b=jnp.zeros((7,), F64))
    untied_params = (body._replace(head=head), ())
    ids = jnp.asarray(np.random.default_rng(2).integers(0, 7, (3, 6)), jnp.int32)
    labels = jnp.asarray(np.random.default_rng(3).integers(0, 7, (3, 6)), jnp.int32)
    value, grads = jax.jit(fnnet.value_and_grad(tied, "cross_entropy"))(params, ids, labels)
    value_u, grads_u = jax.jit(fnnet.value_and_grad(untied, "cross_entropy"))(untied_params, ids,
                                                                              labels)
    assert float(value) == pytest.approx(float(value_u), rel=1e-13)
    want = grads_u[0].wte.W + grads_u[0].head.W
    assert rel(grads[0].wte.W, want) <= 1e-12
    assert rel(grads[0].wpe.W, grads_u[0].wpe.W) <= 1e-12


def test_gpt_is_causal_to_the_bit():
    """The output at step t ignores the tokens after t, and a loss on steps ≤ t gives exactly
    zero gradient to the position vectors of later steps (hand-derived backward)."""
    model = fnnet.gpt(11, 10, 2, 2, 8)
    layer = model.layers[0]
    params = random_params(model, 4, 0.3)
    ids = jnp.asarray(np.random.default_rng(5).integers(0, 11, (2, 10)), jnp.int32)
    t = 4
    changed = ids.at[:, t + 1:].set((ids[:, t + 1:] + 3) % 11)
    apply = jax.jit(model.apply)
    assert np.array_equal(apply(params, ids)[:, :t + 1], apply(params, changed)[:, :t + 1])
    dz = jnp.zeros((2, 10, 11), F64).at[:, :t + 1].set(
        jnp.asarray(np.random.default_rng(6).normal(size=(2, t + 1, 11))))

    @jax.jit
    def backward(params, ids, dz):  # the hand-derived backward of the layer's own forward
        logits, cache = layer.forward(params, ids)
        return layer.backward(params, cache, dz)[0]

    grads = backward(params[0], ids, dz)
    assert np.all(np.asarray(grads.wpe.W[t + 1:]) == 0)
    assert np.any(np.asarray(grads.wpe.W[:t + 1]) != 0)


@pytest.mark.slow  # compiles a vmapped and two bf16 programs
def test_gpt_runs_under_jit_vmap_over_stacked_models_and_bf16():
    model = fnnet.gpt(9, 8, 1, 2, 8)
    keys = jax.random.split(jax.random.key(0), 3)
    stacked = jax.jit(jax.vmap(lambda k: model.init(k)))(keys)
    ids = jax.device_put(np.random.default_rng(1).integers(0, 9, (4, 8)).astype(np.int32))
    grad = jax.jit(jax.vmap(fnnet.value_and_grad(model, "cross_entropy"), in_axes=(0, None, None)))
    values, grads = grad(stacked, ids, ids)
    take = jax.jit(lambda i: jax.tree_util.tree_map(lambda a: a[i], stacked))
    single = jax.jit(fnnet.value_and_grad(model, "cross_entropy"))  # one model, no vmap
    for i in range(3):
        v, g = single(take(i), ids, ids)
        assert float(values[i]) == pytest.approx(float(v), rel=1e-5)
        for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(g)):
            np.testing.assert_allclose(np.asarray(a)[i], b, rtol=1e-4, atol=1e-6)
    one = take(0)
    v32, g32 = single(one, ids, ids)
    v16, g16 = jax.jit(fnnet.value_and_grad(model, "cross_entropy", precision="bf16"))(one, ids, ids)
    assert v16.dtype == jnp.float32 and abs(float(v16) - float(v32)) < 2e-2
    for a, b in zip(jax.tree_util.tree_leaves(g16), jax.tree_util.tree_leaves(g32)):
        assert a.dtype == jnp.float32 and rel(a, b) < 0.1


# ---------------------------------------------------------------------------------------------
# AdamW


def test_adamw_follows_its_published_rule():
    """Three steps against PyTorch's AdamW written out in numpy: decoupled decay ``p ← p −
    lr·λ·p`` on the matrices only (not biases, gains, embeddings), Adam's step on the gradient,
    under a warmup-cosine schedule."""
    model = fnnet.gpt(5, 4, 1, 1, 4)
    params = jax.jit(lambda k: jax.tree_util.tree_map(lambda a: a.astype(F64), model.init(k)))(
        jax.random.key(0))
    schedule = optim.cosine_decay(10, final=0.1, warmup=2)
    opt = optim.adamw(1e-2, (0.9, 0.95), eps=1e-8, weight_decay=0.5, schedule=schedule)
    state = opt.init(params)
    update = jax.jit(opt.update)
    flags = jax.tree_util.tree_leaves(optim.decayed_leaves(params))
    assert sum(flags) == 4  # qkv, proj, fc and the MLP's projection: the four matrices
    leaves, tree = jax.tree_util.tree_flatten(params)
    want = [np.asarray(leaf) for leaf in leaves]
    m = [np.zeros_like(w) for w in want]
    v = [np.zeros_like(w) for w in want]
    rng = np.random.default_rng(0)
    for t in range(3):
        g = [rng.normal(size=w.shape) for w in want]
        params, state = update(tree.unflatten([jax.device_put(a) for a in g]), state, params)
        lr = 1e-2 * float(schedule(t))
        for i, flag in enumerate(flags):
            m[i] = 0.9 * m[i] + 0.1 * g[i]
            v[i] = 0.95 * v[i] + 0.05 * g[i] ** 2
            m_hat, v_hat = m[i] / (1 - 0.9 ** (t + 1)), v[i] / (1 - 0.95 ** (t + 1))
            decayed = want[i] * (1 - lr * 0.5) if flag else want[i]
            want[i] = decayed - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
    for got, w in zip(jax.tree_util.tree_leaves(params), want):
        np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-15)
    every = jax.tree_util.tree_leaves(optim.decayed_leaves(params, embeddings=True))
    assert sum(every) == 6
    assert "adamw(lr=0.01, betas=(0.9, 0.95)" in str(opt)
    with pytest.raises(ValueError, match="betas must be a pair"):
        optim.adamw(1e-3, 0.9)
    assert optim.get("adamw", 1e-3).name == "adamw"


# ---------------------------------------------------------------------------------------------
# Training on a token stream


def test_draw_windows_reads_next_token_pairs_inside_the_stream():
    tokens = jnp.arange(50, dtype=jnp.int32)
    x, y = jax.jit(fnnet.training.draw_windows, static_argnums=(2, 3))(
        tokens, jax.random.key(0), 16, 8)
    assert x.shape == y.shape == (16, 8)
    np.testing.assert_array_equal(y, x + 1)  # the stream counts up: y is x one step later
    np.testing.assert_array_equal(x[:, 1:], x[:, :-1] + 1)
    assert int(x.min()) >= 0 and int(y.max()) <= 49


def test_token_windows_refuses_what_it_cannot_train_on():
    with pytest.raises(ValueError, match="1-D array of integer ids"):
        fnnet.TokenWindows(np.zeros((4, 4), np.int32), 2, 1)
    with pytest.raises(ValueError, match="1-D array of integer ids"):
        fnnet.TokenWindows(np.zeros(10, np.float32), 2, 1)
    with pytest.raises(ValueError, match="holds no window"):
        fnnet.TokenWindows(np.zeros(4, np.int32), 4, 1)
    stream = fnnet.TokenWindows(np.zeros(40, np.int32), 4, 2)
    opt = optim.adam(1e-3)
    with pytest.raises(ValueError, match="reads ids"):
        fnnet.fit(fnnet.mlp([4, 3]), "cross_entropy", opt, stream, progress=False)
    with pytest.raises(ValueError, match="full batch"):
        fnnet.fit(fnnet.gpt(3, 4, 1, 1, 2), "cross_entropy", opt, stream, batch_size=None,
                  progress=False)
    with pytest.raises(ValueError, match="not a class label"):
        fnnet.fit(fnnet.gpt(3, 4, 1, 1, 2), "cross_entropy", opt,
                  fnnet.TokenWindows(np.full(40, 5, np.int32), 4, 2), batch_size=2,
                  progress=False)


@pytest.mark.slow  # compiles a training program three times
def test_fit_on_token_windows_learns_and_resumes_bit_exactly(tmp_path):
    """A stream with a pattern to learn; 2 epochs of 10 steps; then 1 epoch, a checkpoint and
    a resume to 2: the same params to the bit."""
    tokens = np.tile(np.array([0, 1, 2, 3, 2, 1], np.int32), 50)
    model = fnnet.gpt(4, 8, 1, 2, 8)
    opt = optim.clip_by_global_norm(optim.adamw(2e-2, weight_decay=0.1), 1.0)
    stream = fnnet.TokenWindows(tokens, 8, 10)
    kw = dict(batch_size=4, key=jax.random.key(0), progress=False)
    state, history = fnnet.fit(model, "cross_entropy", opt, stream, epochs=2, **kw)
    assert history["loss"][-1] < 0.85 * history["loss"][0]
    assert history["config"]["run"]["windows"] == {"block_size": 8, "steps": 10}
    path = tmp_path / "state.npz"
    fnnet.fit(model, "cross_entropy", opt, stream, epochs=1, checkpoint=path, **kw)
    resumed, resumed_history = fnnet.fit(model, "cross_entropy", opt, stream, epochs=2,
                                         checkpoint=path, resume=True, **kw)
    assert resumed_history["epoch"] == [1, 2]
    for a, b in zip(jax.tree_util.tree_leaves(resumed.params), jax.tree_util.tree_leaves(
            state.params)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(fnnet.training.config.ResumeError, match="windows"):
        fnnet.fit(model, "cross_entropy", opt, fnnet.TokenWindows(tokens, 8, 5), epochs=4,
                  checkpoint=path, resume=True, **kw)


def test_windowed_sampling_is_deterministic_and_reads_the_last_window():
    model = fnnet.gpt(7, 5, 1, 1, 4)
    params = model.init(jax.random.key(0))
    prompt = [1, 2, 3, 4, 5, 6, 0, 1]  # longer than the context: its last 5 ids are read
    a = sample(model, params, prompt, 20, key=jax.random.key(1), context=5)
    b = sample(model, params, prompt, 20, key=jax.random.key(1), context=5)
    c = sample(model, params, prompt, 20, key=jax.random.key(2), context=5)
    assert a.tolist() == b.tolist() != c.tolist()
    greedy = sample(model, params, prompt, 8, key=jax.random.key(1), temperature=1e-6, context=5)
    sequence = list(prompt)
    last_output = jax.jit(lambda ids: model.apply(params, ids)[0, -1])
    for drawn in greedy.tolist():  # each draw is the most likely id after the last 5
        p = last_output(jax.device_put(np.asarray([sequence[-5:]], np.int32)))
        assert drawn == int(np.argmax(np.asarray(p)))
        sequence.append(drawn)


# ---------------------------------------------------------------------------------------------
# The command line

GPT_TINY = ["--model", "gpt", "--depth", "1", "--heads", "2", "--dim", "8", "--block-size", "16",
            "--batch-size", "4", "--steps", "6", "--eval-every", "3", "--quiet"]


@pytest.fixture(scope="module")
def gpt_run(corpus_root, tmp_path_factory):  # noqa: F811
    """The tiny run, not quiet: ``(exit status, folder, what it printed)``."""
    out = tmp_path_factory.mktemp("gpt") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = fnnet.cli.main(["train", "--dataset", "shakespeare", "--data-dir",
                               str(corpus_root), "--no-download", "--out", str(out),
                               *GPT_TINY[:-1]])
    return code, out, printed.getvalue()


@pytest.mark.slow  # seconds of compiling: the full suite runs it
def test_train_gpt_writes_a_resumable_run_and_samples(gpt_run, corpus_root, capsys):  # noqa: F811
    code, out, printed = gpt_run
    assert code == 0
    # the recipe announced, then the training and validation loss per character as it goes
    lines = printed.splitlines()
    assert lines[0].startswith("fnnet train: shakespeare ") and "adamw lr 0.001" in lines[0]
    progress = [line for line in lines if line.startswith("step ")]
    assert [line.split()[1] for line in progress] == ["3/6", "6/6"], printed
    for line in progress:
        assert re.search(r"train \d+\.\d{4} nats/char  val \d+\.\d{4} nats/char", line), line
    config = read_json(out / "config.json")
    assert config["model"] == "gpt" and config["steps"] == 6 and config["eval_every"] == 3
    assert config["architecture"] == {"layers": 1, "heads": 2, "dim": 8, "dropout": 0.0}
    assert "clip_by_global_norm(adamw(lr=0.001, betas=(0.9, 0.99)" in config["run"]["optimizer"]
    assert "CosineDecay(total_steps=6, final=0.1, warmup=0)" in config["run"]["optimizer"]
    metrics = read_json(out / "metrics.json")
    assert metrics["steps_trained"] == 6 and len(metrics["history"]["val_loss"]) == 2
    assert 0 < metrics["validation_loss"] < np.log(65) + 0.5
    texts = []
    for seed in ("1", "1", "2"):
        code, stdout, err = run(capsys, "sample", out, "--prompt", "ROMEO:", "--length", "30",
                                "--seed", seed)
        assert code == 0, err
        texts.append(stdout)
    assert texts[0] == texts[1] != texts[2] and texts[0].startswith("ROMEO:")
    code, _, err = run(capsys, "train", "--dataset", "shakespeare", "--data-dir", corpus_root,
                       "--no-download", "--out", out, *GPT_TINY, "--resume")
    assert code == 0, err  # nothing left to train: the run is complete
    code, _, err = run(capsys, "train", "--dataset", "shakespeare", "--data-dir", corpus_root,
                       "--no-download", "--out", out, *GPT_TINY[:-5], "--steps", "9",
                       "--eval-every", "3", "--quiet", "--resume")
    assert_one_line_error(code, err, mentions="argument --resume")


def test_the_gpt_defaults_are_nanogpts_cpu_recipe():
    """``fnnet train --dataset shakespeare --model gpt`` with no other flag: nanoGPT's
    ``train_shakespeare_char`` for a CPU (4 layers, 4 heads, width 128, context 64, batch 12,
    2,000 steps, lr 1e-3 with 100 warmup steps and cosine to 1e-4, AdamW β₂ 0.99, weight decay
    0.1, clipping at 1, no dropout)."""
    from fnnet.cli import train, train_text
    args = fnnet.cli.build_parser().parse_args(["train", "--dataset", "shakespeare", "--model",
                                                "gpt"])
    args.prog = "fnnet train"
    train_text.check_flags(args, train.DEFAULT_LR)
    corpus = types.SimpleNamespace(vocab=[chr(32 + k) for k in range(65)])
    config = train_text.gpt_config(args, corpus, None)
    assert config["architecture"] == {"layers": 4, "heads": 4, "dim": 128, "dropout": 0.0}
    assert (config["block_size"], config["batch_size"], config["steps"]) == (64, 12, 2000)
    assert (config["lr"], config["warmup"], config["min_lr"]) == (1e-3, 100, pytest.approx(1e-4))
    assert (config["betas"], config["weight_decay"], config["clip"]) == ([0.9, 0.99], 0.1, 1.0)
    opt = train_text.gpt_optimizer(config)
    assert "adamw(lr=0.001, betas=(0.9, 0.99)" in repr(opt) and "decay_embeddings=True" in repr(opt)
    assert "CosineDecay(total_steps=2000, final=0.1, warmup=100)" in repr(opt)
    assert repr(opt).startswith("clip_by_global_norm(") and repr(opt).endswith("max_norm=1.0)")


@pytest.mark.parametrize("argv, message", [
    (["--model", "gpt", "--hidden", "8"], "argument --hidden: not for --model gpt"),
    (["--model", "gpt", "--epochs", "2"], "argument --epochs: not for --model gpt"),
    (["--model", "gpt", "--optimizer", "sgd"], "argument --optimizer: not for --model gpt"),
    (["--model", "lstm", "--heads", "2"], "argument --heads: not for --model lstm"),
    (["--model", "lstm", "--steps", "2"], "argument --steps: not for --model lstm"),
    (["--model", "gpt", "--steps", "10", "--eval-every", "3"], "argument --eval-every: must "
                                                               "divide --steps"),
    (["--model", "gpt", "--steps", "10", "--eval-every", "5", "--warmup", "10"],
     "argument --warmup"),
    (["--model", "gpt", "--heads", "3"], "argument --heads: must divide --dim"),
    (["--model", "gpt", "--dropout", "1"], "argument --dropout"),
    (["--model", "cnn"], "--model lstm) or a GPT (--model gpt)"),
    (["--model", "gpt", "--layers", "4"], "(the number of a GPT's blocks or of an LSTM's layers "
                                          "is --depth)"),
    (["--model", "gpt", "--layers", "4,4"], "one model; the number of blocks or layers is --depth"),
])
def test_train_gpt_refuses_what_it_cannot_honour(tmp_path, capsys, argv, message):
    code, _, err = run(capsys, "train", "--dataset", "shakespeare", "--out", tmp_path / "o",
                       "--no-download", *argv)
    assert_one_line_error(code, err, mentions=message)
    assert not (tmp_path / "o").exists()
