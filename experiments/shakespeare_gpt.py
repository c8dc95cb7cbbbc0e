"""A character GPT on tiny Shakespeare (beyond the notes): nanoGPT's CPU recipe with every
gradient derived by hand, its loss curves, text sampled from it, and what its heads attend to.

The model and its training are those of ``fnnet train --dataset shakespeare --model gpt`` with
its defaults (nanoGPT's character-level recipe for a CPU); this script calls the pieces of
``fnnet/cli/train_text.py`` (the recipe, the optimizer, the validation windows, the progress
lines). The network, ``fnnet.gpt(65, 64, 4, 4, 128)``: token and position embeddings, 4
pre-LayerNorm blocks of 4-head causal self-attention (width 128, context ``T = 64``) and a
128-512-128 GELU MLP, a final LayerNorm, and the head tied to the token table::

    X₀ = W_te[ids] + W_pe[:T]      X_l = X_l' + MLP(LN(X_l')),  X_l' = X_{l−1} + Attn(LN(X_{l−1}))
    p(c_{t+1} | c_1 … c_t) = softmax(LN(X_L) W_teᵀ)_t

Each head's attention, ``P = softmax(Q Kᵀ/√d)`` under the causal mask (``P_ij = 0`` for
``j > i``), and the backward of every layer are fnnet's hand-derived rules
(``fnnet/layers/attention.py``, ``transformer.py``; ``experiments/attention_by_hand.py`` checks
them). Training: ``fnnet.fit`` on a ``fnnet.TokenWindows`` stream of the training text (each
step 12 windows of 64 + 1 characters at random starts, drawn inside the compiled program), the
mean cross-entropy over every character, 2,000 steps of AdamW (lr 1e-3, 100 warmup steps then a
cosine to 1e-4, β = (0.9, 0.99), weight decay 0.1, the gradient clipped to global norm 1, no
dropout). The corpus (``fnnet.datasets.load_shakespeare``, 65 characters) is split as nanoGPT
splits it: the first 90 % for training, the last 10 % for validation (there is no test split).

Every 250 steps: the training loss (the mean over those 250 steps' minibatches, while the
parameters change) and the validation loss on 512 validation windows spread evenly over the
validation text; after training, the validation loss over every non-overlapping window of the
whole validation text (the figure reported), in nats and in bits per character::

    L = −(1/M) Σ_m log p(c_{m+1} | c_1 … c_m)   nats/char          L / ln 2   bits/char

(a model that knows nothing scores ``ln 65 ≈ 4.17`` nats). Samples (``fnnet.sampling.sample``
with ``context=64``) from the prompt ``"ROMEO:"`` at ``τ = 0.5``, ``0.8`` and ``1.0``. The
attention maps: ``P`` of every head of the first and the last block for the first 32 characters
of a line of the validation text.

With ``--quick``: a tiny GPT (2 blocks of 2 heads, width 32, context 32) for 40 steps on the
first 100,000 training and 10,000 validation characters; the corpus is not downloaded, and when
it is not found a small synthetic text stands in (the metrics' ``"data"`` entry says which).

Outputs in ``--out``: ``loss_curves.png``, ``attention_maps.png``, ``attention_maps.npz`` (the
maps drawn), ``metrics.json``::

    python -m experiments.shakespeare_gpt --out runs/shakespeare_gpt [--quick] [--seed 0]
"""

from __future__ import annotations

import math
import os
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.colors import PowerNorm

import fnnet
from experiments import common
from experiments.char_lstm import load_corpus
from fnnet.cli import train_text
from fnnet.layers.attention import keep_p_forward
from fnnet.layers.embedding import Embedding, PositionEmbedding
from fnnet.plots import save_figure

NAME = "shakespeare_gpt"
PROMPT = "ROMEO:"
TEMPERATURES = (0.5, 0.8, 1.0)
SAMPLE_LENGTH, QUICK_SAMPLE_LENGTH = 500, 100
MAP_CHARS = 32  # the attention maps' prompt: the first 32 characters of a validation line
# --quick: a tiny GPT and a few dozen steps (the other settings are the CLI's)
QUICK = {"depth": 2, "heads": 2, "dim": 32, "block_size": 32, "batch_size": 8, "steps": 40,
         "eval_every": 10, "warmup": 2}
SHOWN = {" ": "␣", "\n": "⏎"}


def recipe(args):
    """``fnnet train --dataset shakespeare --model gpt``'s flags with their defaults
    (``QUICK``'s with ``--quick``; ``--steps`` when given), as the namespace its pieces read."""
    flags = {**train_text.GPT_DEFAULTS, **(QUICK if args.quick else {})}
    if args.steps is not None:
        flags["steps"] = args.steps
        flags["warmup"] = min(flags["warmup"], args.steps // 20)
    return SimpleNamespace(**flags, grads="manual", precision=None, seed=args.seed)


def train(corpus, flags):
    """Train as ``train_text.run_gpt`` does: ``(model, state, history, config, seconds,
    every validation window)``."""
    config = train_text.gpt_config(flags, corpus, None)
    block, every = config["block_size"], config["eval_every"]
    model = fnnet.gpt(len(corpus.vocab), block, **config["architecture"])
    every_window = train_text.windows(corpus.validation, block)
    validation = train_text.spread(*every_window, train_text.EVAL_WINDOWS)
    print(f"[{NAME}] {train_text.gpt_recipe(config, len(validation[0]))}", flush=True)
    started = time.perf_counter()
    state, history = fnnet.fit(
        model, "cross-entropy", train_text.gpt_optimizer(config),
        fnnet.TokenWindows(corpus.train, block, every), epochs=config["steps"] // every,
        batch_size=config["batch_size"], key=jax.random.PRNGKey(config["seed"]),
        validation=validation, progress=False,
        callbacks=[train_text.step_progress(config["steps"], every, block)])
    seconds = time.perf_counter() - started
    return model, state, history, config, seconds, every_window


def samples(corpus, model, params, block, length, seed):
    """``{τ: prompt + length characters}`` from ``fnnet.sampling.sample`` at every temperature
    (the same key for each)."""
    prompt = corpus.encode(PROMPT)
    return {str(t): PROMPT + corpus.decode(np.asarray(fnnet.sampling.sample(
                model, params, prompt, length, key=jax.random.PRNGKey(seed), temperature=t,
                context=block)))
            for t in TEMPERATURES}


def map_prompt(corpus, chars):
    """The first ``chars`` characters of the first line of the validation text that holds
    that many (a line of verse, not a speaker's name)."""
    text = corpus.decode(corpus.validation)
    line = next((line for line in text.split("\n") if len(line) >= chars), text)
    return line[:chars]


def attention_maps(model, params, ids, layers):
    """``{layer: P}`` for the blocks ``layers`` (0-based): ``P`` ``(heads, T, T)`` of each head
    for the ids ``(T,)``, the softmax of the causal scores that block's attention computes
    (``keep_p_forward``, the kept ``P``), from the residual stream as the model builds it; and
    the largest difference between the attention's output rebuilt from those ``P`` and its
    ``apply`` (0 up to rounding: the maps are what the model uses)."""
    maps, mismatch = _attention_maps(model, tuple(layers), params, jnp.asarray(ids))
    return {layer: np.asarray(p) for layer, p in maps.items()}, float(mismatch)


@partial(jax.jit, static_argnums=(0, 1))
def _attention_maps(model, layers, params, ids):
    gpt, gpt_params = model.layers[0], params[0]
    block = gpt.transformer_block
    ln1, attention = block.body.layers[0].layer.layers
    h = Embedding(gpt.vocab_size, gpt.dim).apply(gpt_params.wte, ids[None, :])
    h = PositionEmbedding(gpt.block_size, gpt.dim).apply(gpt_params.wpe, h)
    maps, mismatch = {}, jnp.zeros(())
    for index, block_params in enumerate(gpt_params.blocks):
        if index in layers:
            (ln1_params, attention_params), _ = block_params
            x = ln1.apply(ln1_params, h)
            q, k, v = attention._split_heads(attention.qkv.apply(attention_params.qkv, x))
            _, p = keep_p_forward(q, k, v, policy=attention.precision)
            rebuilt = attention.proj.apply(attention_params.proj, attention._merge_heads(
                jnp.einsum("nhqk,nhkd->nhqd", p, v)))
            mismatch = jnp.maximum(mismatch, jnp.max(jnp.abs(
                rebuilt - attention.apply(attention_params, x))))
            maps[index] = p[0]
        h = block.apply(block_params, h)
    return maps, mismatch


def shown(c):
    return SHOWN.get(c, c)


def plot_attention(path, maps, prompt, config):
    layers = sorted(maps)
    heads = maps[layers[0]].shape[0]
    fig, axes = common.subplots(len(layers), heads,
                                figsize=(3.4 * heads + 1, 3.5 * len(layers) + 1))
    fig.set_layout_engine("constrained")
    axes = np.asarray(axes).reshape(len(layers), heads)
    labels = [shown(c) for c in prompt]
    ticks = np.arange(len(prompt))
    for row, layer in enumerate(layers):
        for head in range(heads):
            ax = axes[row, head]
            image = ax.imshow(maps[layer][head], cmap="viridis",
                              norm=PowerNorm(0.5, vmin=0, vmax=1))
            ax.set_xticks(ticks, labels, fontsize=6, family="monospace")
            ax.set_yticks(ticks, labels, fontsize=6, family="monospace")
            ax.tick_params(length=0, pad=1)
            ax.set_title(f"block {layer + 1}, head {head + 1}", fontsize=9)
            if head == 0:
                ax.set_ylabel("query: the character read up to", fontsize=8)
            if row == len(layers) - 1:
                ax.set_xlabel("key: the character attended to", fontsize=8)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6,
                 label="P_ij (square-root colour scale; each row sums to 1)")
    fig.suptitle(f"P = softmax(QKᵀ/√d) under the causal mask, every head of blocks "
                 f"{', '.join(str(layer + 1) for layer in layers)} of the trained "
                 f"{train_text.describe(config)}\nprompt {prompt!r} (from the validation text; "
                 f"␣ a space); row i: the weights query i puts on keys j ≤ i")
    return save_figure(fig, path)


def plot_losses(path, curves, config, vocab, final, source):
    fig, ax = common.subplots(figsize=(8.5, 4.8))
    every = config["eval_every"]
    ax.plot(curves["step"], curves["train_nats_per_char"], marker="o",
            label=f"training (mean over the preceding {every} steps' minibatches)")
    ax.plot(curves["step"], curves["validation_nats_per_char"], marker="o",
            label=f"validation ({train_text.EVAL_WINDOWS} windows spread over the validation "
                  f"text)")
    ax.plot([curves["step"][-1]], [final], marker="*", ms=14, ls="none", color="k",
            label=f"validation, every window of the validation text: {final:.3f}")
    ax.axhline(math.log(len(vocab)), color="gray", ls="--", lw=1,
               label=f"uniform over {len(vocab)} characters: ln {len(vocab)} = "
                     f"{math.log(len(vocab)):.2f}")
    bits = ax.secondary_yaxis("right", functions=(lambda n: n / math.log(2),
                                                  lambda b: b * math.log(2)))
    bits.set_ylabel("bits per character")
    ax.set(xlabel="training step", ylabel="cross-entropy, nats per character",
           title=f"{train_text.describe(config)} on {source}:\nAdamW {config['lr']:g}, warmup "
                 f"{config['warmup']}, cosine to {config['min_lr']:g}, batch "
                 f"{config['batch_size']} windows, weight decay {config['weight_decay']:g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def main(argv=None):
    """Train, score, sample, draw; return the metrics written to ``OUT/metrics.json``."""
    p = common.parser(__doc__.splitlines()[0], NAME)
    p.add_argument("--steps", type=int, default=None,
                   help=f"training steps (default {train_text.GPT_DEFAULTS['steps']}, "
                        f"{QUICK['steps']} with --quick); a multiple of the validation interval")
    args = p.parse_args(argv)
    flags = recipe(args)
    if flags.steps < flags.eval_every or flags.steps % flags.eval_every:
        p.error(f"--steps must be a positive multiple of {flags.eval_every}, got {flags.steps}")
    out = Path(args.out)
    load_before = os.getloadavg()
    corpus, source = load_corpus(args.quick, args.seed)
    model, state, history, config, seconds, every_window = train(corpus, flags)
    block = config["block_size"]
    val_loss, val_acc = fnnet.evaluate(model, "cross-entropy", state.params, *every_window,
                                       batch_size=256)
    val_loss, val_acc = float(val_loss), float(val_acc)
    texts = samples(corpus, model, state.params, block,
                    QUICK_SAMPLE_LENGTH if args.quick else SAMPLE_LENGTH, args.seed)
    prompt = map_prompt(corpus, min(MAP_CHARS, block))
    layers = sorted({0, config["architecture"]["layers"] - 1})
    maps, mismatch = attention_maps(model, state.params, corpus.encode(prompt), layers)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "attention_maps.npz", prompt=np.asarray(prompt),
             **{f"block_{layer + 1}": maps[layer] for layer in layers})
    curves_data = {
        "step": [e * config["eval_every"] for e in history["epoch"]],
        "train_nats_per_char": history["loss"], "validation_nats_per_char": history["val_loss"],
        "validation_bits_per_char": [v / math.log(2) for v in history["val_loss"]],
        "validation_accuracy": history["val_accuracy"], "seconds": history["seconds"],
        "characters_per_second": [r * block for r in history["examples_per_second"]]}
    plot_losses(out / "loss_curves.png", curves_data, config, corpus.vocab, val_loss, source)
    plot_attention(out / "attention_maps.png", maps, prompt, config)
    load_after = os.getloadavg()
    ln2 = math.log(2)
    stacked = np.stack([maps[layer] for layer in layers])
    metrics = {
        "experiment": NAME, "quick": args.quick, "seed": args.seed, "data": source,
        "n_train_characters": int(len(corpus.train)),
        "n_validation_characters": int(len(corpus.validation)),
        "config": {k: v for k, v in config.items() if k != "data_dir"},
        "model": repr(model), "curves": curves_data,
        "train_nats_per_char": history["loss"][-1], "validation_nats_per_char": val_loss,
        "validation_bits_per_char": val_loss / ln2, "validation_accuracy": val_acc,
        "validation_windows": int(len(every_window[0])),
        "train_seconds": seconds, "compile_seconds": float(history["compile_seconds"]),
        "samples": texts, "prompt": PROMPT, "temperatures": list(TEMPERATURES),
        "vocab": "".join(corpus.vocab),
        "attention": {"prompt": prompt, "blocks": [layer + 1 for layer in layers],
                      "heads": int(stacked.shape[1]), "file": "attention_maps.npz",
                      "row_sum_max_error": float(np.max(np.abs(stacked.sum(-1) - 1))),
                      "max_above_diagonal": float(np.max(np.triu(stacked, 1))),
                      "rebuilt_output_max_difference": mismatch},
        "cpu": common.cpu_model(), "device": str(jax.devices()[0]),
        "load_average": {"before": list(load_before), "after": list(load_after)},
        "figures": ["loss_curves.png", "attention_maps.png"],
        "headline": {
            "validation loss, whole validation text (nats/char)": val_loss,
            "validation loss (bits/char)": val_loss / ln2,
            "validation next-character accuracy": val_acc,
            f"training loss, mean over the last {config['eval_every']} steps (nats/char)":
                history["loss"][-1],
            "model": train_text.describe(config),
            "recipe": f"{config['steps']} steps of {config['batch_size']} windows, AdamW "
                      f"{config['lr']:g} (warmup {config['warmup']}, cosine to "
                      f"{config['min_lr']:g}), β {tuple(config['betas'])}, weight decay "
                      f"{config['weight_decay']:g}, clip {config['clip']:g}",
            "training seconds (wall, compiling included)": seconds,
            "CPU": common.cpu_model(),
            "load average (1 min) before / after":
                f"{load_before[0]:.2f} / {load_after[0]:.2f}",
            "data": f"{source}, {len(corpus.train):,} training / {len(corpus.validation):,} "
                    f"validation characters",
        },
        "tables": {"loss per character every "
                   f"{config['eval_every']} steps": {
                       "headers": ["step", "train (nats)", "validation (nats)",
                                   "validation (bits)", "validation accuracy"],
                       "rows": [list(row) for row in zip(
                           curves_data["step"], curves_data["train_nats_per_char"],
                           curves_data["validation_nats_per_char"],
                           curves_data["validation_bits_per_char"],
                           curves_data["validation_accuracy"])]},
                   f"samples after the prompt {PROMPT!r} (⏎ a newline)": {
                       "headers": ["temperature", "text"],
                       "rows": [[float(t), text.replace("\n", " ⏎ ")]
                                for t, text in texts.items()]}},
    }
    common.write_metrics(out, metrics)
    losses = next(iter(metrics["tables"].values()))
    print(common.table(losses["rows"], losses["headers"]))
    for t, text in texts.items():
        print(f"--- τ = {t} ---\n{text}")
    print(f"validation {val_loss:.4f} nats/char ({val_loss / ln2:.3f} bits/char) over "
          f"{every_window[1].size:,} characters; trained in {seconds:.1f}s; outputs in {out}")
    return metrics


if __name__ == "__main__":
    main()
