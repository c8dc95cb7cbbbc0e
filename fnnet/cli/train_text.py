"""``fnnet train --dataset shakespeare --model lstm|gpt``: a character LSTM or a GPT on tiny
Shakespeare.

``--model gpt`` is ``fnnet.gpt`` trained as nanoGPT's character-level recipe for a CPU
(``GPT_DEFAULTS``: 4 blocks of 4 heads, width 128, context 64, 2,000 steps of 12 windows, AdamW
lr 1e-3 with 100 warmup steps and cosine decay to 1e-4, β₂ 0.99, weight decay 0.1 on the
matrices and embeddings as nanoGPT decays them, clipping at 1, no dropout): ``fnnet.fit`` on a
``fnnet.TokenWindows`` stream of the training text, each step drawing its windows inside the
compiled program; every ``--eval-every`` steps it scores a fixed set of ``EVAL_WINDOWS``
validation windows spread evenly over the validation text (the figures printed as it goes), and
once training ends the whole validation text (the figure reported).

The character LSTM (``--model lstm``):

The corpus (``fnnet.datasets.load_shakespeare``: 65 characters, the first 90 % training, the
last 10 % validation, nanoGPT's split) is cut into windows of ``--block-size + 1`` characters,
``x`` the first ``block-size`` and ``y`` the next character at every position; the training
windows are non-overlapping and start at a random offset drawn with ``--seed``, the validation
windows are the non-overlapping windows of the validation text from its start.
``fnnet.language_model`` (an embedding, LSTM layers, dense to the vocabulary, softmax) trains
with cross-entropy over every character by ``fnnet.fit``, each window from a zero state, its
gradient clipped to ``--clip`` (global norm).
Losses are in nats per character (the mean of ``−log p`` over every character) and in bits per
character (divided by ``ln 2``). Writes what ``fnnet train`` writes for images but the test
scores (the corpus has no test split): ``config.json``, ``train_state.npz``, ``model.npz``,
``metrics.json`` and ``curves.png``; ``fnnet sample`` reads ``model.npz``.
"""

from __future__ import annotations

import math
import time

import jax
import numpy as np

from .. import checkpoints, datasets, optim
from ..devices import distributed
from ..io import write_json
from ..networks import gpt, language_model
from ..training import TokenWindows, evaluate, fit
from .common import (
    DataUnavailable,
    UsageError,
    count,
    dropout_rate,
    non_negative_float,
    positive_float,
    positive_int,
)

TEXT = "shakespeare"
# The defaults: sized for a 10-minute budget on a 2-core CPU (README has the measured run; no
# sweep over them was made).
TEXT_DEFAULTS = {"optimizer": "adam", "lr": 3e-3, "lr_decay": 0.7, "epochs": 6, "batch_size": 32}
TEXT_ARCHITECTURE = {"dim": 64, "hidden": 384, "depth": 1, "cell": "lstm"}
BLOCK_SIZE = 64
CLIP = 1.0
# Flags only the image models take; refused with --dataset shakespeare when given.
IMAGE_ONLY = ("layers", "activation", "output", "validation")
TEXT_ONLY = ("block_size", "dim", "hidden", "depth", "clip", "heads", "steps", "warmup",
             "weight_decay", "dropout", "eval_every")
GPT_ONLY = ("heads", "steps", "warmup", "weight_decay", "dropout", "eval_every")
LSTM_ONLY = ("hidden", "epochs", "lr_decay")
# nanoGPT's character-level Shakespeare recipe for a CPU (its README): the --model gpt defaults.
GPT_DEFAULTS = {"depth": 4, "heads": 4, "dim": 128, "block_size": 64, "batch_size": 12,
                "steps": 2000, "lr": 1e-3, "warmup": 100, "weight_decay": 0.1, "clip": 1.0,
                "dropout": 0.0, "eval_every": 250}
MIN_LR_FRACTION = 0.1  # the cosine decays to lr/10 at the last step (nanoGPT's min_lr 1e-4)
BETAS = (0.9, 0.99)
EVAL_WINDOWS = 512  # the validation windows scored every --eval-every steps


def add_text_flags(parser):
    """The flags of the character model (refused for the image data sets)."""
    group = parser.add_argument_group("--dataset shakespeare (a character LSTM)")
    group.add_argument("--block-size", type=positive_int, metavar="T",
                       help=f"characters per training window (default: {BLOCK_SIZE})")
    group.add_argument("--dim", type=positive_int, metavar="D",
                       help=f"embedding width (default: {TEXT_ARCHITECTURE['dim']})")
    group.add_argument("--hidden", type=positive_int, metavar="H",
                       help=f"LSTM width (default: {TEXT_ARCHITECTURE['hidden']})")
    group.add_argument("--depth", type=positive_int, metavar="L",
                       help=f"LSTM layers (default: {TEXT_ARCHITECTURE['depth']})")
    group.add_argument("--clip", type=positive_float, metavar="NORM",
                       help=f"clip the gradient to this global norm (default: {CLIP:g})")
    gpt = parser.add_argument_group("--dataset shakespeare --model gpt (nanoGPT's CPU recipe; "
                                    "--depth is the number of blocks, --dim the width)")
    gpt.add_argument("--heads", type=positive_int, metavar="H",
                     help=f"attention heads per block (default: {GPT_DEFAULTS['heads']})")
    gpt.add_argument("--steps", type=positive_int, metavar="S",
                     help=f"training steps (default: {GPT_DEFAULTS['steps']})")
    gpt.add_argument("--warmup", type=count, metavar="S",
                     help=f"steps of linear learning-rate warmup before the cosine decay to "
                          f"lr/10 (default: {GPT_DEFAULTS['warmup']}, at most a twentieth of "
                          f"--steps)")
    gpt.add_argument("--weight-decay", type=non_negative_float, metavar="W",
                     help=f"AdamW's decoupled weight decay (default: "
                          f"{GPT_DEFAULTS['weight_decay']:g})")
    gpt.add_argument("--dropout", type=dropout_rate, metavar="P",
                     help=f"dropout rate in [0, 1) (default: {GPT_DEFAULTS['dropout']:g})")
    gpt.add_argument("--eval-every", type=positive_int, metavar="S",
                     help=f"score the validation windows every S steps; must divide --steps "
                          f"(default: {GPT_DEFAULTS['eval_every']})")


def refuse_text_flags(args):
    """Image data sets: the character model's flags are refused when given."""
    given = [f"--{name.replace('_', '-')}" for name in TEXT_ONLY if getattr(args, name) is not None]
    if given:
        raise UsageError(args.prog, f"argument {', '.join(given)}: only for --dataset {TEXT}")


def check_flags(args, default_lr):
    """``--model lstm`` or ``gpt``; the image flags, full batch, ensembles and several processes
    refused, and the other text model's flags; the defaults filled in (``--lr`` for an
    optimizer other than Adam is ``default_lr``'s)."""
    if args.model not in ("lstm", "gpt"):
        raise UsageError(args.prog, f"argument --model: --dataset {TEXT} trains a character "
                                    f"LSTM (--model lstm) or a GPT (--model gpt); got --model "
                                    f"{args.model}")
    others = LSTM_ONLY if args.model == "gpt" else GPT_ONLY
    given = [f"--{name.replace('_', '-')}" for name in others
             if getattr(args, name, None) is not None]
    if args.model == "gpt" and args.optimizer not in (None, "adamw"):
        given.append("--optimizer")
    if given:
        raise UsageError(args.prog, f"argument {', '.join(given)}: not for --model "
                                    f"{args.model}" + (" (it trains with AdamW for --steps, "
                                                       "the learning rate by warmup and cosine)"
                                                       if args.model == "gpt" else ""))
    given = [f"--{name}" for name in IMAGE_ONLY if getattr(args, name, None) is not None]
    if args.loss != "cross-entropy":
        given.append("--loss")
    if args.ensemble != 1:
        given.append("--ensemble")
    if hasattr(args, "batch_size") and args.batch_size is None:
        given.append("--batch-size full")
    if given:
        depth = "; the number of blocks or layers is --depth" if "--layers" in given else ""
        raise UsageError(args.prog, f"argument {', '.join(given)}: not for --dataset {TEXT} (its "
                                    f"validation split is the last 10% of the text, its loss "
                                    f"cross-entropy over every character, its batches windows of "
                                    f"text; one model{depth})")
    if args.model == "gpt":
        _gpt_defaults(args)
        return
    for name in ("optimizer", "lr_decay", "epochs", "batch_size"):
        if getattr(args, name, None) is None:
            setattr(args, name, TEXT_DEFAULTS[name])
    if args.lr is None:
        args.lr = (TEXT_DEFAULTS["lr"] if args.optimizer == TEXT_DEFAULTS["optimizer"]
                   else default_lr[args.optimizer])


def _gpt_defaults(args):
    """``GPT_DEFAULTS`` for the flags not given; ``--eval-every`` must divide ``--steps``."""
    args.optimizer = "adamw"
    if args.warmup is None and args.steps is not None:  # 100 of 2,000: a twentieth at most
        args.warmup = min(GPT_DEFAULTS["warmup"], args.steps // 20)
    for name, value in GPT_DEFAULTS.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    if args.steps % args.eval_every:
        raise UsageError(args.prog, f"argument --eval-every: must divide --steps ({args.steps}) "
                                    f"so that every validation comes after as many steps; got "
                                    f"{args.eval_every}")
    if args.warmup >= args.steps:
        raise UsageError(args.prog, f"argument --warmup: expected fewer warmup steps than "
                                    f"--steps ({args.steps}), got {args.warmup}")
    if args.dim % args.heads:
        raise UsageError(args.prog, f"argument --heads: must divide --dim ({args.dim}), got "
                                    f"{args.heads}")


def windows(ids, block, offset=0):
    """``(x, y)``: the non-overlapping windows of ``block + 1`` ids from ``offset``, ``x`` the
    first ``block`` of each and ``y`` the ids one step later, both ``(count, block)``."""
    count = (len(ids) - offset - 1) // block
    if count < 1:
        raise ValueError(f"a text of {len(ids)} characters holds no window of {block + 1}")
    span = ids[offset:offset + count * block + 1]
    return (span[:-1].reshape(count, block).copy(), span[1:].reshape(count, block).copy())


def architecture(args):
    """The network's settings: the flags given, else ``TEXT_ARCHITECTURE``'s."""
    return {name: getattr(args, name) if getattr(args, name, None) is not None else default
            for name, default in TEXT_ARCHITECTURE.items()}


def _config(args, corpus, folder, arch, block, clip):
    return {"dataset": TEXT, "model": "lstm", "architecture": arch, "block_size": block,
            "vocab": "".join(corpus.vocab), "loss": "cross-entropy", "optimizer": args.optimizer,
            "lr": args.lr, "lr_decay": args.lr_decay, "clip": clip, "epochs": args.epochs,
            "batch_size": args.batch_size, "grads": args.grads, "precision": args.precision,
            "seed": args.seed, "ensemble": 1,
            "data_dir": None if folder is None else str(folder)}


def lstm_optimizer(config, steps_per_epoch):
    """The character LSTM's optimizer: ``config``'s rule and rate, decayed by ``lr_decay`` per
    epoch of ``steps_per_epoch`` steps, its gradient clipped to ``clip``."""
    schedule = (None if config["lr_decay"] == 1
                else optim.exponential_decay(config["lr_decay"], every=steps_per_epoch))
    inner = optim.get(config["optimizer"], config["lr"], schedule=schedule)
    return optim.clip_by_global_norm(inner, config["clip"])


def epoch_progress(epochs, block):
    """A callback printing each epoch's training and validation loss per character."""
    def callback(record, state, history):
        train, val = record.loss, record.val_loss
        print(f"epoch {record.epoch:>{len(str(epochs))}}/{epochs}  train {train:.4f} nats/char "
              f"({train / math.log(2):.3f} bits)  val {val:.4f} nats/char "
              f"({val / math.log(2):.3f} bits)  {record.examples_per_second * block:>9,.0f} "
              f"chars/s  {record.seconds:.1f}s", flush=True)
    return callback


def _quiet(args):
    """No progress lines: ``--quiet``, or a process other than 0 of a distributed run."""
    return args.quiet or not distributed.is_main()


def _devices(args):
    """``"all"`` for ``--distributed`` (each batch split across every process's devices),
    else ``None``."""
    return "all" if args.distributed else None


def _on_host(args, state):
    """``state`` with its params as this process's copy (replicated by a distributed run)."""
    if not args.distributed:
        return state
    return state._replace(params=distributed.to_host(state.params))


def _corpus(args):
    try:
        return datasets.load_shakespeare(args.data_dir, download=not args.no_download)
    except (OSError, ValueError) as e:
        raise DataUnavailable(args.prog, " ".join(str(e).split())) from None


def run(args, out, write_config):
    """Train the character model (flags checked by ``check_flags``); write its files into
    ``out``; return the history. ``write_config`` is the train command's callback writing
    ``config.json`` after the first epoch."""
    if args.model == "gpt":
        return run_gpt(args, out, write_config)
    block = args.block_size or BLOCK_SIZE
    clip = args.clip or CLIP
    corpus = _corpus(args)
    offset = int(np.random.default_rng(args.seed).integers(0, block))
    train, validation = windows(corpus.train, block, offset), windows(corpus.validation, block)
    if args.batch_size > len(train[0]):
        raise UsageError(args.prog, f"argument --batch-size: expected at most the "
                                    f"{len(train[0])} training windows")
    arch = architecture(args)
    folder = None if args.data_dir is None else args.data_dir.resolve()
    config = _config(args, corpus, folder, arch, block, clip)
    model = language_model(len(corpus.vocab), **arch)
    steps = len(train[0]) // args.batch_size
    if not _quiet(args):
        print(f"fnnet train: {TEXT} {describe(config)}, {args.optimizer} lr {args.lr:g}"
              f"{'' if args.lr_decay == 1 else f' x{args.lr_decay:g} per epoch'}, clip {clip:g}, "
              f"{args.epochs} epochs of {steps} steps of {args.batch_size} windows of {block} "
              f"characters, seed {args.seed}; {train[0].size:,} training and "
              f"{validation[0].size:,} validation characters -> {out}", flush=True)
    started = time.perf_counter()
    callbacks = [write_config] + ([] if _quiet(args) else [epoch_progress(args.epochs, block)])
    state, history = fit(
        model=model, loss="cross-entropy", optimizer=lstm_optimizer(config, steps), train=train,
        epochs=args.epochs, batch_size=args.batch_size, key=jax.random.PRNGKey(args.seed),
        validation=validation, grads=args.grads, progress=False,
        checkpoint=out / "train_state.npz", resume=args.resume, precision=args.precision,
        recipe=config, callbacks=callbacks, devices=_devices(args))
    seconds = time.perf_counter() - started
    if not distributed.is_main():
        return history
    return _results(history["config"], _on_host(args, state), history, out, seconds,
                    validation[1].size, history["val_loss"][-1])


def gpt_config(args, corpus, folder):
    """The recipe of a ``--model gpt`` run (``config.json``'s top level)."""
    return {"dataset": TEXT, "model": "gpt",
            "architecture": {"layers": args.depth, "heads": args.heads, "dim": args.dim,
                             "dropout": args.dropout},
            "block_size": args.block_size, "vocab": "".join(corpus.vocab),
            "loss": "cross-entropy", "optimizer": "adamw", "lr": args.lr, "betas": list(BETAS),
            "warmup": args.warmup, "min_lr": args.lr * MIN_LR_FRACTION,
            "weight_decay": args.weight_decay, "clip": args.clip, "steps": args.steps,
            "eval_every": args.eval_every, "batch_size": args.batch_size, "grads": args.grads,
            "precision": args.precision, "seed": args.seed, "ensemble": 1,
            "data_dir": None if folder is None else str(folder)}


def gpt_recipe(config, validation_windows):
    """The run a ``gpt_config`` describes, in one line (what ``fnnet train`` announces)."""
    return (f"{describe(config)}, adamw lr {config['lr']:g} (warmup {config['warmup']}, cosine "
            f"to {config['min_lr']:g}), weight decay {config['weight_decay']:g}, clip "
            f"{config['clip']:g}, {config['steps']} steps of {config['batch_size']} random "
            f"windows of {config['block_size']} characters; validation every "
            f"{config['eval_every']} steps on {validation_windows} windows")


def gpt_optimizer(config):
    """AdamW under warmup and cosine decay to ``min_lr``, clipped: nanoGPT's."""
    schedule = optim.cosine_decay(config["steps"], final=MIN_LR_FRACTION, warmup=config["warmup"])
    inner = optim.adamw(config["lr"], tuple(config["betas"]), weight_decay=config["weight_decay"],
                        schedule=schedule, decay_embeddings=True)
    return optim.clip_by_global_norm(inner, config["clip"])


def spread(x, y, count):
    """``count`` of the windows ``x, y``, spread evenly from the first to the last (all of them
    if there are fewer)."""
    index = np.unique(np.linspace(0, len(x) - 1, min(count, len(x))).astype(int))
    return x[index], y[index]


def step_progress(steps, every, block):
    """A callback printing the training and validation loss per character every ``every``
    steps."""
    def callback(record, state, history):
        train, val = record.loss, record.val_loss
        print(f"step {record.epoch * every:>{len(str(steps))}}/{steps}  train {train:.4f} "
              f"nats/char  val {val:.4f} nats/char ({val / math.log(2):.3f} bits)  "
              f"{record.examples_per_second * block:>9,.0f} chars/s  {record.seconds:.1f}s",
              flush=True)
    return callback


def run_gpt(args, out, write_config):
    """``--model gpt``: ``fnnet.gpt`` on a ``TokenWindows`` stream of the training text (the
    module docstring); the files as ``run`` writes them."""
    corpus = _corpus(args)
    block = args.block_size
    folder = None if args.data_dir is None else args.data_dir.resolve()
    config = gpt_config(args, corpus, folder)
    arch = config["architecture"]
    model = gpt(len(corpus.vocab), block, **arch)
    every_window = windows(corpus.validation, block)
    validation = spread(*every_window, EVAL_WINDOWS)
    if not _quiet(args):
        print(f"fnnet train: {TEXT} {gpt_recipe(config, len(validation[0]))}, seed "
              f"{args.seed} -> {out}", flush=True)
    started = time.perf_counter()
    callbacks = [write_config] + ([] if _quiet(args) else
                                  [step_progress(args.steps, args.eval_every, block)])
    state, history = fit(
        model=model, loss="cross-entropy", optimizer=gpt_optimizer(config),
        train=TokenWindows(corpus.train, block, args.eval_every),
        epochs=args.steps // args.eval_every, batch_size=args.batch_size,
        key=jax.random.PRNGKey(args.seed), validation=validation, grads=args.grads,
        progress=False, checkpoint=out / "train_state.npz", resume=args.resume,
        precision=args.precision, recipe=config, callbacks=callbacks, devices=_devices(args))
    seconds = time.perf_counter() - started
    if not distributed.is_main():
        return history
    state = _on_host(args, state)
    loss, _ = evaluate(model, "cross-entropy", state.params, *every_window, batch_size=256,
                       precision=args.precision)
    return _results(history["config"], state, history, out, seconds, every_window[1].size,
                    float(loss))


def describe(config):
    """``"char lstm 1x384 (embedding 64, 65 characters)"``, ``"char gpt 4 blocks x 4 heads,
    width 128, context 64 (65 characters)"``."""
    arch = config["architecture"]
    if config.get("model") == "gpt":
        return (f"char gpt {arch['layers']} blocks x {arch['heads']} heads, width {arch['dim']}, "
                f"context {config['block_size']} ({len(config['vocab'])} characters)")
    return (f"char {arch['cell']} {arch['depth']}x{arch['hidden']} (embedding {arch['dim']}, "
            f"{len(config['vocab'])} characters)")


def _results(config, state, history, out, seconds, characters, validation_loss):
    """Write ``model.npz``, ``metrics.json`` and ``curves.png``; print the validation loss over
    the whole validation text (``validation_loss``) and the time."""
    final = {"train_loss": history["loss"][-1], "validation_loss": validation_loss,
             "validation_bits_per_char": validation_loss / math.log(2),
             "epochs_trained": history["epoch"][-1]}
    if config.get("model") == "gpt":
        final["steps_trained"] = history["epoch"][-1] * config["eval_every"]
    checkpoints.save(out / "model.npz", state.params, **config, **final, dtype="float32")
    write_json(out / "metrics.json", {"config": config, **final, "seconds": seconds,
                                      "compile_seconds": history["compile_seconds"],
                                      "history": history})
    from .. import plots  # matplotlib only once there is a figure to draw

    plots.plot_history(history, out / "curves.png",
                       title=f"{TEXT} {describe(config)}: loss in nats per character, "
                             f"next-character accuracy")
    print(f"validation loss {final['validation_loss']:.4f} nats/char "
          f"({final['validation_bits_per_char']:.3f} bits/char) over {characters:,} validation "
          f"characters")
    print(f"trained in {seconds:.1f} s, {history['compile_seconds']:.2f} s of it compiling; wrote "
          f"config.json, train_state.npz, model.npz, metrics.json, curves.png into {out}",
          flush=True)
    return history
