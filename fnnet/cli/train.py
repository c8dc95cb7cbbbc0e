"""``fnnet train``: train an MLP on MNIST or Fashion-MNIST with ``fnnet.fit``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from .. import checkpoints, datasets, optim
from ..io import read_json, write_json
from ..model_config import (
    NUM_CLASSES,
    MetadataError,
    check_image_layers,
    model_from_metadata,
    resume_differences,
    train_config,
)
from ..scoring import predict, summarize_test, targets
from ..training import fit
from .common import (
    FORMATTER,
    UsageError,
    add_data_flags,
    add_network_flags,
    batch_size,
    check_flags_loss_output,
    dash,
    load_data,
    positive_float,
    positive_int,
    print_results,
    seed,
)

DEFAULT_OPTIMIZER = "momentum"
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.1, "adam": 1e-3, "rmsprop": 1e-3}
DEFAULT_EPOCHS = 10
DEFAULT_BATCH = 128

DESCRIPTION = """\
Train an MLP on MNIST or Fashion-MNIST with fnnet.fit; write model.npz, metrics.json and
curves.png (and config.json and train_state.npz, which --resume reads) into --out.

The defaults train 784-128-10 with momentum (lr 0.1), 10 epochs of batch 128: about 98% test
accuracy on MNIST."""


def add_parser(subparsers):
    """The ``train`` subcommand and its flags."""
    parser = subparsers.add_parser("train", help="train an MLP on MNIST or Fashion-MNIST",
                                   description=DESCRIPTION, formatter_class=FORMATTER)
    parser.add_argument("--dataset", choices=datasets.DATASETS, default="mnist",
                        help="dataset (default: mnist)")
    add_network_flags(parser, "784,128,10")
    parser.add_argument("--optimizer", choices=optim.NAMES, default=DEFAULT_OPTIMIZER,
                        help=f"optimizer (default: {DEFAULT_OPTIMIZER})")
    parser.add_argument("--lr", type=positive_float,
                        help="learning rate > 0 (default: " + ", ".join(
                            f"{lr:g} for {name}" for name, lr in DEFAULT_LR.items()) + ")")
    parser.add_argument("--epochs", type=positive_int, default=DEFAULT_EPOCHS,
                        help=f"epochs (default: {DEFAULT_EPOCHS})")
    parser.add_argument("--batch-size", type=batch_size, default=DEFAULT_BATCH, metavar="N|full",
                        help=f"minibatch size, or 'full' for full-batch gradient descent "
                             f"(default: {DEFAULT_BATCH})")
    parser.add_argument("--grads", choices=("manual", "autodiff"), default="manual",
                        help="hand-derived backward (manual) or jax.grad (default: manual)")
    parser.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")
    parser.add_argument("--ensemble", type=positive_int, default=1, metavar="K",
                        help="train K models with different seeds in one program (default: 1)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="output folder (default: runs/<dataset>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its train_state.npz (saved every "
                             "epoch) up to --epochs; every other setting must be the same")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    add_data_flags(parser)
    parser.set_defaults(run=run)


def _config(args):
    """The run's ``model_config.train_config``, after refusing flags that do not go together."""
    try:
        check_image_layers(args.layers, args.dataset)
    except MetadataError as e:
        raise UsageError(args.prog, f"argument --layers: {e}") from None
    check_flags_loss_output(args.prog, args.loss, args.output)
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    return train_config(dataset=args.dataset, layers=args.layers, activation=args.activation,
                        output=args.output, loss=args.loss, optimizer=args.optimizer, lr=lr,
                        epochs=args.epochs, batch_size=args.batch_size, grads=args.grads,
                        seed=args.seed, ensemble=args.ensemble)


def _check_resume(prog, out, state_path, config):
    """A resumed run must continue the same run: ``config.json`` in ``out`` must agree on every
    setting but ``epochs``, and the state checkpoint must be readable."""
    if not state_path.exists():
        raise UsageError(prog, f"argument --resume: nothing to resume, {state_path} does not exist "
                               f"(train without --resume first)")
    try:
        differ = resume_differences(read_json(out / "config.json"), config)
    except (OSError, ValueError) as e:
        raise UsageError(prog, f"argument --resume: cannot read {out / 'config.json'} ({e})") from None
    if differ:
        raise UsageError(prog, f"argument --resume: the run in {out} was trained with other settings "
                               f"({'; '.join(differ)}); resume with the same flags")
    try:
        checkpoints.load(state_path)
    except (OSError, ValueError) as e:
        raise UsageError(prog, f"argument --resume: {e}") from None


def divergence_messages(history, num_models):
    """One message per epoch in which a model's loss went non-finite, from ``fit``'s
    ``history["diverged"]`` (``[{"epoch": e, "models": [...]}, ...]``, absent if none did)."""
    messages = []
    for event in history.get("diverged", []):
        models = event["models"]
        who = ""
        if num_models > 1:
            who = f"model{'s' if len(models) > 1 else ''} {', '.join(map(str, models))}: "
        stopped = "these models" if num_models > 1 else "this run"
        messages.append(f"{who}loss became non-finite at epoch {event['epoch']}. Training stopped "
                        f"for {stopped} (try a smaller learning rate).")
    return messages


def _announce(args, config, out):
    batch = "full batch" if args.batch_size is None else f"batch {args.batch_size}"
    models = f", {args.ensemble} models" if args.ensemble > 1 else ""
    print(f"fnnet train: {args.dataset} {dash(args.layers)} {args.activation}/{args.output}, "
          f"{args.loss}, {args.optimizer} lr {config['lr']:g}, {args.epochs} epochs of {batch}, "
          f"{args.grads} gradients, seed {args.seed}{models} -> {out}", flush=True)


def _train(args, config, data, state_path):
    """``(model, params, history, seconds)`` of ``fit`` on ``data``, scored on its test split."""
    (x_train, y_train), (x_test, y_test) = data
    model, num_models = model_from_metadata(config)
    started = time.perf_counter()
    params, history = fit(
        model=model, loss=args.loss, optimizer=optim.by_name(args.optimizer, config["lr"]),
        train=(x_train, targets(args.loss, y_train, NUM_CLASSES)), epochs=args.epochs,
        batch_size=args.batch_size, key=jax.random.PRNGKey(args.seed),
        validation=(x_test, targets(args.loss, y_test, NUM_CLASSES)), grads=args.grads,
        ensemble=num_models if num_models > 1 else None, progress=not args.quiet,
        checkpoint=state_path, resume=state_path if args.resume else None, dtype=jnp.float32)
    return model, params, history, time.perf_counter() - started


def run(args):
    """Train; write ``model.npz``, ``metrics.json``, ``curves.png`` (and ``config.json``,
    ``train_state.npz``) into ``--out``. Exit status 0, also when training diverged."""
    prog, num_models = args.prog, args.ensemble
    config = _config(args)
    out = Path(args.out) if args.out is not None else Path("runs") / args.dataset
    state_path = out / "train_state.npz"
    if args.resume:
        _check_resume(prog, out, state_path, config)
    data = load_data(prog, args.dataset, args.data_dir, not args.no_download)
    if args.batch_size is not None and args.batch_size > len(data[0][0]):
        raise UsageError(prog, f"argument --batch-size: {args.batch_size} is larger than the "
                               f"{len(data[0][0])} training examples (use --batch-size full for "
                               f"full-batch gradient descent)")
    write_json(out / "config.json", config)
    if not args.quiet:
        _announce(args, config, out)
    model, params, history, seconds = _train(args, config, data, state_path)
    diverged = divergence_messages(history, num_models)
    for message in diverged:
        print(f"fnnet train: WARNING: training diverged: {message} The checkpoint and metrics "
              f"written are those of the last parameters whose loss was finite.",
              file=sys.stderr, flush=True)

    # fit scored the final params on the test set (its validation data) at the last epoch's end.
    x_test, y_test = data[1]
    probs = predict(model, params, num_models, x_test) if num_models > 1 else None
    results = summarize_test(args.loss, y_test, history["val_loss"][-1],
                             history["val_accuracy"][-1], probs)
    final = {"train_loss": history["loss"][-1], "train_accuracy": history["train_accuracy"][-1],
             "epochs_trained": history["epoch"][-1]}
    checkpoint = checkpoints.save(out / "model.npz", params, **config, **final, **results,
                                  dtype="float32", diverged=bool(diverged))
    write_json(out / "metrics.json", {"config": config, **results, **final, "seconds": seconds,
                                      "diverged": diverged, "history": history})
    from .. import plots  # matplotlib only once there is a figure to draw

    plots.plot_history(history, out / "curves.png", title=f"{args.dataset} {dash(args.layers)}, "
                                                          f"{args.optimizer} lr {config['lr']:g}")
    print_results(results, num_models)
    if not args.quiet:
        print(f"trained in {seconds:.1f} s; wrote {checkpoint}, {out / 'metrics.json'}, "
              f"{out / 'curves.png'}")
    return 0
