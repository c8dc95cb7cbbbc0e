"""A character LSTM on tiny Shakespeare (beyond the notes): the loss per character on the training
and the validation text, epoch by epoch, and text sampled from it at three temperatures.

The model and its training are those of ``fnnet train --dataset shakespeare --model lstm`` with
its defaults; this script calls the pieces of ``fnnet/cli/train_text.py`` (the windows, the
architecture, the optimizer, the progress lines). The corpus (``fnnet.datasets.load_shakespeare``,
65 characters) is split as nanoGPT splits it: the first 90 % for training, the last 10 % for
validation (there is no test split). Each split is cut into non-overlapping windows of
``T = 64 + 1`` characters, the training windows from a random offset; ``x`` the first 64 and
``y`` the next character at every position. The network, ``fnnet.language_model``::

    Embedding(65, 64)  LSTM(64, 384)  Dense(384, 65)  Softmax

reads each window from a zero state and is trained on the mean cross-entropy over every
character (the backward through time is the LSTM's, ``fnnet/layers/lstm.py``), by ``fnnet.fit``
with Adam (lr 3e-3, ×0.7 per epoch), the gradient clipped to global norm 1, minibatches of 32
windows, 6 epochs. The loss per character, in nats and in bits::

    L = −(1/M) Σ_m log p(c_{m+1} | c_1 … c_m)   nats/char          L / ln 2   bits/char

(a model that knows nothing, ``p = 1/65``, scores ``ln 65 ≈ 4.17`` nats). The training loss of
an epoch is the mean over its minibatches while the parameters change; the validation loss is
scored on every validation window after the epoch.

Sampling (``fnnet.sampling.sample``): the trained parameters in the same network built with
``stateful=1`` (its LSTM carries its state from one call to the next), fed the prompt
``"ROMEO:"``, then each next character drawn from ``softmax(log p / τ)`` and fed back, at
``τ = 0.5``, ``0.8`` and ``1.0`` (below 1 the likelier characters are favoured).

With ``--quick``: the first 100,000 training and 10,000 validation characters, a 1×64 LSTM
(embedding 16) on windows of 32, 3 epochs, shorter samples; the corpus is not downloaded, and
when it is not found (``$FNNET_DATA_DIR/tinyshakespeare``, the cache) a small synthetic text
stands in (the metrics' ``"data"`` entry says which). A full run downloads the corpus into the
cache if it finds none, as ``fnnet train`` does.

Outputs in ``--out``: ``loss_curves.png`` (training and validation loss per epoch),
``metrics.json`` (the losses, the samples)::

    python -m experiments.char_lstm --out runs/char_lstm [--quick] [--seed 0] [--epochs E]
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import jax
import numpy as np
from matplotlib.ticker import MaxNLocator

import fnnet
from experiments import common
from fnnet import datasets
from fnnet.cli import train_text
from fnnet.datasets.shakespeare import TRAIN_FRACTION
from fnnet.plots import save_figure

NAME = "char_lstm"
PROMPT = "ROMEO:"
TEMPERATURES = (0.5, 0.8, 1.0)
SAMPLE_LENGTH, QUICK_SAMPLE_LENGTH = 400, 120
EPOCHS = train_text.TEXT_DEFAULTS["epochs"]
QUICK_EPOCHS = 3
# --quick: a slice of each split and a tiny model
QUICK = {"train_chars": 100_000, "validation_chars": 10_000, "block_size": 32, "batch_size": 32,
         "architecture": {**train_text.TEXT_ARCHITECTURE, "dim": 16, "hidden": 64}}
SYNTHETIC_CHARS = 60_000


def synthetic_corpus(seed, chars=SYNTHETIC_CHARS):
    """A small play-like text (speakers' names in capitals, lines of common words) as a
    ``CharCorpus`` split 90 % / 10 % as the real one: the stand-in when tiny Shakespeare is not
    found with ``--quick``."""
    rng = np.random.default_rng(seed)
    speakers = ("ROMEO", "JULIET", "NURSE", "MERCUTIO", "FRIAR LAURENCE")
    words = ("the and of to my thou thee thy love night light fair sweet death heaven what is in "
             "that not with me be so but for this her his will come go good o art hath").split()
    parts, length = [], 0
    while length < chars:
        lines = [" ".join(rng.choice(words, rng.integers(3, 9))).capitalize()
                 + str(rng.choice([",", ".", "!", "?", ";"])) for _ in range(rng.integers(1, 4))]
        part = f"{rng.choice(speakers)}:\n" + "\n".join(lines) + "\n\n"
        parts.append(part)
        length += len(part)
    text = "".join(parts)[:chars]
    vocab = tuple(sorted(set(text)))
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.array([index[c] for c in text], np.int32)
    split = int(len(ids) * TRAIN_FRACTION)
    return datasets.CharCorpus(text, vocab, ids[:split].copy(), ids[split:].copy())


def load_corpus(quick, seed):
    """``(corpus, source)``: tiny Shakespeare (``"tiny shakespeare"``), sliced with ``quick``;
    with ``quick`` and no corpus found, ``synthetic_corpus`` and a ``source`` that says so."""
    try:
        corpus = datasets.load_shakespeare(download=not quick)
        source = "tiny shakespeare"
    except (FileNotFoundError, OSError):
        if not quick:
            raise
        return synthetic_corpus(seed), "synthetic text (tiny Shakespeare not found)"
    if quick:
        corpus = corpus._replace(train=corpus.train[:QUICK["train_chars"]],
                                 validation=corpus.validation[:QUICK["validation_chars"]])
    return corpus, source


def recipe(args, epochs):
    """``fnnet train --dataset shakespeare --model lstm``'s settings (``QUICK``'s sizes with
    ``--quick``)."""
    defaults = train_text.TEXT_DEFAULTS
    return {"architecture": dict(QUICK["architecture"] if args.quick
                                 else train_text.TEXT_ARCHITECTURE),
            "block_size": QUICK["block_size"] if args.quick else train_text.BLOCK_SIZE,
            "batch_size": QUICK["batch_size"] if args.quick else defaults["batch_size"],
            "optimizer": defaults["optimizer"], "lr": defaults["lr"],
            "lr_decay": defaults["lr_decay"], "clip": train_text.CLIP, "epochs": epochs,
            "seed": args.seed}


def train(corpus, config):
    """Train as ``fnnet train`` does; ``(model, state, history, windows)``."""
    block, batch = config["block_size"], config["batch_size"]
    offset = int(np.random.default_rng(config["seed"]).integers(0, block))
    windows = {"train": train_text.windows(corpus.train, block, offset),
               "validation": train_text.windows(corpus.validation, block)}
    model = fnnet.language_model(len(corpus.vocab), **config["architecture"])
    steps = len(windows["train"][0]) // batch
    print(f"[{NAME}] {train_text.describe({**config, 'vocab': corpus.vocab})}, "
          f"{config['optimizer']} lr {config['lr']:g} x{config['lr_decay']:g} per epoch, clip "
          f"{config['clip']:g}, {config['epochs']} epochs of {steps} steps of {batch} windows of "
          f"{block} characters; {windows['train'][0].size:,} training and "
          f"{windows['validation'][0].size:,} validation characters", flush=True)
    state, history = fnnet.fit(
        model, "cross-entropy", train_text.lstm_optimizer(config, steps), windows["train"],
        epochs=config["epochs"], batch_size=batch, key=jax.random.PRNGKey(config["seed"]),
        validation=windows["validation"], progress=False,
        callbacks=[train_text.epoch_progress(config["epochs"], block)])
    return model, state, history, windows


def samples(corpus, config, params, length, seed):
    """``{τ: prompt + length characters}`` from ``fnnet.sampling.sample`` at every temperature
    (the same key for each)."""
    model = fnnet.language_model(len(corpus.vocab), stateful=1, **config["architecture"])
    prompt = corpus.encode(PROMPT)
    return {str(t): PROMPT + corpus.decode(np.asarray(fnnet.sampling.sample(
                model, params, prompt, length, key=jax.random.PRNGKey(seed), temperature=t)))
            for t in TEMPERATURES}


def plot_losses(path, history, config, vocab, source):
    vocab_size = len(vocab)
    fig, ax = common.subplots(figsize=(8, 4.8))
    ax.plot(history["epoch"], history["loss"], marker="o",
            label="training (mean over the epoch's minibatches)")
    ax.plot(history["epoch"], history["val_loss"], marker="o",
            label="validation (after the epoch, every validation window)")
    bits = ax.secondary_yaxis("right", functions=(lambda n: n / math.log(2),
                                                  lambda b: b * math.log(2)))
    bits.set_ylabel("bits per character")
    ax.set(xlabel="epoch", ylabel="cross-entropy, nats per character",
           title=f"{train_text.describe({**config, 'vocab': vocab})} on {source}:\n"
                 f"Adam {config['lr']:g} ×{config['lr_decay']:g} per epoch, clip "
                 f"{config['clip']:g}, batch {config['batch_size']} windows of "
                 f"{config['block_size']} (a uniform guess scores ln {vocab_size} = "
                 f"{math.log(vocab_size):.2f})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def main(argv=None):
    """Train, sample, draw; return the metrics written to ``OUT/metrics.json``."""
    p = common.parser(__doc__.splitlines()[0], NAME)
    args, epochs = common.parse_with_epochs(p, argv, EPOCHS, QUICK_EPOCHS)
    out = Path(args.out)
    corpus, source = load_corpus(args.quick, args.seed)
    config = recipe(args, epochs)
    started = time.perf_counter()
    model, state, history, windows = train(corpus, config)
    seconds = time.perf_counter() - started
    length = QUICK_SAMPLE_LENGTH if args.quick else SAMPLE_LENGTH
    texts = samples(corpus, config, state.params, length, args.seed)
    plot_losses(out / "loss_curves.png", history, config, corpus.vocab, source)

    ln2 = math.log(2)
    curves = {"epoch": history["epoch"], "train_nats_per_char": history["loss"],
              "validation_nats_per_char": history["val_loss"],
              "train_bits_per_char": [v / ln2 for v in history["loss"]],
              "validation_bits_per_char": [v / ln2 for v in history["val_loss"]],
              "validation_accuracy": history["val_accuracy"], "seconds": history["seconds"],
              "characters_per_second": [r * config["block_size"]
                                        for r in history["examples_per_second"]]}
    val = history["val_loss"][-1]
    n_train, n_val = windows["train"][0].size, windows["validation"][0].size
    data = f"{source}, {n_train:,} training / {n_val:,} validation characters"
    loss_headers = ["epoch", "train nats/char", "validation nats/char", "train bits/char",
                    "validation bits/char"]
    metrics = {
        "experiment": NAME, "quick": args.quick, "seed": args.seed, "data": source,
        "n_train_chars": n_train, "n_validation_chars": n_val, "vocab": "".join(corpus.vocab),
        "config": {**config, "model": repr(model), "loss": "cross-entropy"},
        "history": curves, "validation_nats_per_char": val, "validation_bits_per_char": val / ln2,
        "train_nats_per_char": history["loss"][-1], "train_seconds": float(np.sum(history["seconds"])),
        "compile_seconds": float(history["compile_seconds"]), "seconds": seconds,
        "prompt": PROMPT, "temperatures": list(TEMPERATURES), "sample_length": length,
        "samples": texts, "cpu": common.cpu_model(), "device": str(jax.devices()[0]),
        "figures": ["loss_curves.png"],
        "headline": {
            "validation loss (nats/char)": val, "validation loss (bits/char)": val / ln2,
            "training loss, last epoch (nats/char)": history["loss"][-1],
            "uniform guess (nats/char)": math.log(len(corpus.vocab)), "epochs": epochs,
            "training seconds": float(np.sum(history["seconds"])),
            "characters per second": curves["characters_per_second"][-1],
            "model": train_text.describe({**config, "vocab": corpus.vocab}),
            "CPU": common.cpu_model(), "data": data,
        },
        "tables": {
            "loss per character (validation: the text's last 10 %)": {
                "headers": loss_headers,
                "rows": [list(row) for row in zip(*(curves[k] for k in (
                    "epoch", "train_nats_per_char", "validation_nats_per_char",
                    "train_bits_per_char", "validation_bits_per_char")))]},
            f"samples after the prompt {PROMPT!r} (⏎ a newline)": {
                "headers": ["temperature", "text"],
                "rows": [[t, text.replace("\n", " ⏎ ")] for t, text in texts.items()]},
        },
    }
    common.write_metrics(out, metrics)
    print(common.table(metrics["tables"]["loss per character (validation: the text's last 10 %)"]
                       ["rows"], loss_headers))
    for t, text in texts.items():
        print(f"--- temperature {t} ---\n{text}")
    print(f"validation {val:.4f} nats/char ({val / ln2:.3f} bits/char) after {epochs} epochs on "
          f"{data}; outputs in {out}")
    return metrics


if __name__ == "__main__":
    main()
