"""``fnnet train``: train an MLP, a CNN or an LSTM on MNIST or Fashion-MNIST, or a character
LSTM or GPT on tiny Shakespeare, with ``fnnet.fit``.

``--model mlp`` (the default) trains ``fnnet.mlp(--layers, --activation, --output)`` on flat
images ``(N, 784)`` with ``MLP_DEFAULTS``: momentum lr 0.1, a constant rate, 10 epochs of batch
128. ``--model cnn`` trains ``fnnet.cnn()`` on images ``(N, 28, 28, 1)`` (NHWC) with
``CNN_DEFAULTS``: momentum lr 0.1 multiplied by 0.5 per epoch (``--lr-decay``), 4 epochs of
batch 64: 99 % test accuracy in well under a minute on two cores. Those were chosen on the
validation split of MNIST (5,000 images held out of its training set; for 3 and 4 epochs, batch 64
against 128, learning rates 0.05 to 0.2 with momentum and 1e-3 to 3e-3 with Adam, decay 0.3 to
0.8), never on its test set, which is scored once, after training. ``--model lstm`` trains
``fnnet.sequence_classifier(28, 10)`` (an LSTM over each image's 28 rows, its last step, dense
10, softmax) on ``(N, 28, 28)`` with ``LSTM_DEFAULTS``: Adam lr 0.003 multiplied by 0.8 per epoch,
10 epochs of batch 128, chosen the same way. A flag given explicitly overrides its default. The
MLP-only flags are refused with ``--model cnn`` and ``lstm``, and their loss is cross-entropy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import textwrap
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp

from .. import checkpoints, datasets, optim
from ..devices import distributed
from ..io import write_json
from ..training import DIVERGENCE_FACTOR, HISTORY_KEYS, fit
from ..training.config import ResumeError
from . import train_text
from .common import (
    CNN_SUMMARY,
    FORMATTER,
    LSTM_SUMMARY,
    DataUnavailable,
    UsageError,
    add_cache_flags,
    add_data_flags,
    add_network_flags,
    batch_size,
    check_not_in_use,
    check_out,
    check_outputs,
    check_run_folder,
    count,
    data_folder,
    decay_rate,
    folder,
    load_data,
    positive_float,
    positive_int,
    resolve_network,
    run_lock,
    say_bf16_emulated,
    seed,
)
from .launch import ENV_LAUNCH, check_split, join
from .model_config import (
    MODELS,
    NUM_CLASSES,
    MetadataError,
    check_image_layers,
    describe,
    network,
    optimizer_of,
    prepare,
    train_config,
)
from .scoring import targets
from .train_results import (
    WRITTEN,
    divergence_message,
    rate_text,
    write_results,
)

DEFAULT_OPTIMIZER = "momentum"
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.1, "adam": 1e-3, "rmsprop": 1e-3}
DEFAULT_EPOCHS = 10
DEFAULT_BATCH = 128
# The settings each --model trains with when its flag is not given (--lr for an optimizer other
# than the model's default is DEFAULT_LR's).
MLP_DEFAULTS = {"optimizer": DEFAULT_OPTIMIZER, "lr": DEFAULT_LR[DEFAULT_OPTIMIZER], "lr_decay": 1.0,
                "epochs": DEFAULT_EPOCHS, "batch_size": DEFAULT_BATCH}
CNN_DEFAULTS = {"optimizer": "momentum", "lr": 0.1, "lr_decay": 0.5, "epochs": 4, "batch_size": 64}
LSTM_DEFAULTS = {"optimizer": "adam", "lr": 3e-3, "lr_decay": 0.8, "epochs": 10, "batch_size": 128}
DEFAULTS = {"mlp": MLP_DEFAULTS, "cnn": CNN_DEFAULTS, "lstm": LSTM_DEFAULTS}
MODELS_TEXT = textwrap.fill(
    f"Models: --model mlp (the default) is fnnet.mlp(--layers, --activation, --output) on flat "
    f"images, by default {DEFAULT_OPTIMIZER} lr {DEFAULT_LR[DEFAULT_OPTIMIZER]:g} for "
    f"{DEFAULT_EPOCHS} epochs of batch {DEFAULT_BATCH}. --model cnn is {CNN_SUMMARY}, on 28x28x1 "
    f"images; by default {CNN_DEFAULTS['optimizer']} lr {CNN_DEFAULTS['lr']:g}, multiplied by "
    f"{CNN_DEFAULTS['lr_decay']:g} per epoch (--lr-decay), for {CNN_DEFAULTS['epochs']} epochs "
    f"of batch {CNN_DEFAULTS['batch_size']}, chosen on the validation split of MNIST, never on "
    f"its test set. --model lstm is {LSTM_SUMMARY}; by default {LSTM_DEFAULTS['optimizer']} lr "
    f"{LSTM_DEFAULTS['lr']:g}, multiplied by {LSTM_DEFAULTS['lr_decay']:g} per epoch, for "
    f"{LSTM_DEFAULTS['epochs']} epochs of batch {LSTM_DEFAULTS['batch_size']}, chosen the same "
    f"way. --layers, --activation and --output are refused with --model cnn and lstm, and their "
    f"loss is cross-entropy. With --dataset shakespeare, --model lstm is a character LSTM and "
    f"--model gpt a GPT with nanoGPT's CPU recipe (the flags of those two groups below).",
    width=96)


def _others(setting):
    """``"0.05 for --model cnn, 0.003 for --model lstm"``: the other models' defaults."""
    return ", ".join(f"{DEFAULTS[model][setting]:g} for --model {model}"
                     if not isinstance(DEFAULTS[model][setting], str)
                     else f"{DEFAULTS[model][setting]} for --model {model}"
                     for model in ("cnn", "lstm"))


DEFAULT_VALIDATION = 5000  # examples held out of the training set, at most a tenth of it
EXIT_DIVERGED = 3
EXIT_PEER_LOST = 4
EXIT_INTERRUPTED = 130
DESCRIPTION = f"""\
Train an MLP, a CNN or an LSTM on MNIST or Fashion-MNIST with fnnet.fit and write into --out:
config.json (the settings), train_state.npz (the training state after every epoch, which --resume
reads), model.npz (the final params), metrics.json and curves.png.

{MODELS_TEXT}

Validation: --validation examples (default {DEFAULT_VALIDATION}, at most a tenth of the training set) are held
out of the training set, drawn with --seed; the per-epoch 'val' figures and the curves are
theirs. The test set is scored once, after training, and reported as 'test'.

The output folder: a folder that already holds a run (train_state.npz, model.npz or config.json)
is refused unless --resume continues it or --overwrite replaces it (the replaced run's files
stay until the new run's first epoch ends); a folder another run is using (it holds a lock on
it while it runs) is refused, naming that run.

Exit status: 0 when training finished; 2 for a bad flag, an --out that cannot be written, holds
a run or is in use, or a --resume that cannot continue the run saved there; 1 when the data
cannot be read or holds no examples, or when a file of the run cannot be written while it trains
(a full disk: one line gives the error and the command that resumes); {EXIT_DIVERGED} when
training diverged (the loss was not finite or grew
past {DIVERGENCE_FACTOR:g} x max(first step's loss, 1): training stops, and the files are still
written, with the last parameters whose loss was within that bound); {EXIT_PEER_LOST} when a --distributed
run lost another of its processes (it died or was stopped; one line names it and the command that
resumes); {EXIT_INTERRUPTED} when interrupted with Ctrl-C, after printing the command that resumes the run.

Many processes: fnnet launch -n N -- fnnet train --distributed .... Compiled programs are kept in
~/.cache/fnnet/jax (--compile-cache DIR), so an identical second run starts without compiling."""


def add_parser(subparsers):
    """The ``train`` subcommand and its flags."""
    parser = subparsers.add_parser("train", help="train an MLP, a CNN or an LSTM on MNIST or Fashion-MNIST, "
                                        "or a character LSTM or GPT on Shakespeare",
                                   description=DESCRIPTION, formatter_class=FORMATTER)
    parser.add_argument("--dataset", choices=(*datasets.DATASETS, train_text.TEXT),
                        default="mnist",
                        help="dataset (default: mnist); shakespeare trains a character LSTM "
                             "(--model lstm) or a GPT (--model gpt)")
    add_network_flags(parser, "784,128,10", (*MODELS, "gpt"))
    parser.add_argument("--optimizer", choices=optim.NAMES,
                        help=f"optimizer (default: {DEFAULT_OPTIMIZER}; {_others('optimizer')})")
    parser.add_argument("--lr", type=positive_float,
                        help="learning rate > 0 (default: " + ", ".join(
                            f"{lr:g} for {name}" for name, lr in DEFAULT_LR.items())
                        + f"; {_others('lr')}, with their default optimizers)")
    parser.add_argument("--lr-decay", type=decay_rate, metavar="RATE",
                        help=f"multiply the learning rate by RATE in (0, 1] per epoch, smoothly "
                             f"step by step: lr x RATE^(step / steps per epoch) (default: 1, a "
                             f"constant rate; {_others('lr_decay')})")
    parser.add_argument("--epochs", type=positive_int,
                        help=f"epochs (default: {DEFAULT_EPOCHS}; {_others('epochs')})")
    parser.add_argument("--batch-size", type=batch_size, default=argparse.SUPPRESS,
                        metavar="N|full",
                        help=f"minibatch size, or 'full' for full-batch gradient descent "
                             f"(default: {DEFAULT_BATCH}; {_others('batch_size')})")
    parser.add_argument("--validation", type=count, metavar="N",
                        help=f"training examples held out for validation, 0 for none (default: "
                             f"{DEFAULT_VALIDATION}, at most a tenth of the training set)")
    parser.add_argument("--grads", choices=("manual", "autodiff"), default="manual",
                        help="hand-derived backward (manual) or jax.grad (default: manual)")
    parser.add_argument("--precision", choices=("f32", "bf16", "f16"), default="f32",
                        help="the matrix products' inputs: f32, or bf16/f16 with float32 "
                             "accumulation and float32 params (f16 with dynamic loss scaling); "
                             "evaluate scores under the same (default: f32)")
    parser.add_argument("--seed", type=seed, default=0,
                        help="random seed of the initial params, the shuffles and the validation "
                             "split (default: 0)")
    parser.add_argument("--ensemble", type=positive_int, default=1, metavar="K",
                        help="train K models with different seeds in one program (default: 1)")
    parser.add_argument("--out", type=folder, metavar="DIR",
                        help="output folder (default: runs/<dataset>); one that holds a run is "
                             "refused unless --resume or --overwrite")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its train_state.npz (saved every "
                             "epoch) up to --epochs; every other setting must be the same")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in --out with a new one (its files are replaced "
                             "once the new run's first epoch has ended)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    parser.add_argument("--distributed", action="store_true",
                        help="one process of a distributed run (fnnet launch -n N -- fnnet train "
                             "--distributed ..., or SLURM): split each minibatch across the "
                             "devices of all processes; process 0 prints and writes the files")
    train_text.add_text_flags(parser)
    add_data_flags(parser)
    add_cache_flags(parser)
    parser.set_defaults(run=run)


def _check_flags(args):
    """Fill in the defaults that depend on ``--model``; refuse flags that do not go together,
    before any work."""
    resolve_network(args, "784,128,10")
    if args.model == "mlp":
        try:
            check_image_layers(args.layers, args.dataset)
        except MetadataError as e:
            raise UsageError(args.prog, f"argument --layers: {e}") from None
    _fill_defaults(args)


def _fill_defaults(args):
    """Give the training flags not given the defaults of ``--model`` (``DEFAULTS``); ``--lr``
    for an optimizer other than the model's default is ``DEFAULT_LR``'s."""
    defaults = DEFAULTS[args.model]
    for name in ("optimizer", "lr_decay", "epochs"):
        if getattr(args, name) is None:
            setattr(args, name, defaults[name])
    if not hasattr(args, "batch_size"):  # None is --batch-size full
        args.batch_size = defaults["batch_size"]
    if args.lr is None:
        args.lr = (defaults["lr"] if args.optimizer == defaults["optimizer"]
                   else DEFAULT_LR[args.optimizer])


def _config(args, validation, folder):
    """The run's ``model_config.train_config``."""
    return train_config(dataset=args.dataset, model=args.model, layers=args.layers,
                        activation=args.activation, output=args.output, loss=args.loss,
                        optimizer=args.optimizer, lr=args.lr, lr_decay=args.lr_decay,
                        epochs=args.epochs,
                        batch_size=args.batch_size, grads=args.grads,
                        precision=args.precision, seed=args.seed,
                        ensemble=args.ensemble, validation=validation,
                        data_dir=None if folder is None else folder.resolve())


def _not_a_state(prog, state_path, why):
    return UsageError(prog, f"argument --resume: {state_path} is not a training state fnnet "
                            f"train saved ({why}); expected the train_state.npz it saves after "
                            f"every epoch")


def _check_resume_state(prog, state_path, epochs):
    """``--resume`` needs a readable state checkpoint: its metadata (read without any array)
    must hold the epoch, the per-epoch history and the configuration fnnet saves with it, and
    the epoch must not lie beyond ``epochs`` (``None``: not checked). Returns the metadata;
    ``UsageError`` naming what is wrong."""
    if not state_path.exists():
        raise UsageError(prog, f"argument --resume: nothing to resume, {state_path} does not exist "
                               f"(train without --resume first)")
    try:
        meta = checkpoints.metadata(state_path)  # the manifest and metadata only, no array read
    except (OSError, ValueError) as e:
        raise UsageError(prog, f"argument --resume: {e}") from None
    missing = [name for name in ("epoch", "history", "config") if name not in meta]
    if len(missing) == 3:
        raise _not_a_state(prog, state_path, "its metadata has no epoch, history or "
                                             "configuration, as in a model.npz, which holds "
                                             "the final params only")
    if missing:
        raise _not_a_state(prog, state_path, f"its metadata has no {' or '.join(missing)}")
    epoch, history = meta["epoch"], meta["history"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise _not_a_state(prog, state_path, f"it records epoch {epoch!r}, not a whole number "
                                             f">= 1")
    if not isinstance(history, dict) or any(
            not isinstance(history.get(name), list) or len(history[name]) != epoch
            for name in HISTORY_KEYS):
        raise _not_a_state(prog, state_path, f"its history is not the record of {epoch} "
                                             f"epoch{'s' if epoch > 1 else ''} fnnet keeps")
    if not isinstance(meta["config"], dict):
        raise _not_a_state(prog, state_path, "its configuration is not a JSON object")
    if epochs is not None and epoch > epochs:
        raise UsageError(prog, f"argument --resume: the run in {state_path.parent} was saved at "
                               f"epoch {epoch}, beyond --epochs {epochs}; expected --epochs "
                               f"{epoch} or more (the total, the epochs trained included)")
    return meta


def _stopped(meta, num_models):
    """Whether every model of the run saved with ``meta`` had stopped (diverged)."""
    events = meta["history"].get("diverged") or []
    stopped = {model for event in events if isinstance(event, dict)
               for model in event.get("models", [])}
    return len(stopped) >= num_models


def _claim_out(args, main=True):
    """``(out, state_path, saved)``: the output folder, checked before any work (it can be
    written, its output names are not folders, it holds no run unless ``--resume`` or
    ``--overwrite``, no other run is using it), and with ``--resume`` the saved state's
    metadata (``None`` without). The image and text models both start here; the processes of
    a distributed run other than process 0 (``main``) do not look at the lock."""
    prog = args.prog
    out = check_out(prog, args.out if args.out is not None else Path("runs") / args.dataset)
    check_outputs(prog, out, WRITTEN)
    check_run_folder(prog, out, args.resume, args.overwrite)
    if main:
        check_not_in_use(prog, out)
    state_path = out / "train_state.npz"
    saved = None
    if args.resume:
        epochs = None if args.model == "gpt" else args.epochs  # gpt: its --steps are compared
        saved = _check_resume_state(prog, state_path, epochs)
        if args.model != "gpt" and _stopped(saved, args.ensemble):
            args.epochs = saved["epoch"]  # every model stopped: nothing more to train
    return out, state_path, saved


@contextlib.contextmanager
def _locked(args, out, main=True):
    """Hold the lock on ``out`` while the run uses it (process 0 only), and look again, under
    it, for a run that another process finished in ``out`` since ``_claim_out`` looked."""
    with run_lock(args.prog, out, args.argv, enabled=main):
        check_run_folder(args.prog, out, args.resume, args.overwrite)
        yield


@contextlib.contextmanager
def _resume_errors(args, state_path):
    """A resume that cannot continue the run saved at ``state_path`` (another configuration,
    or arrays that are not this configuration's) as a usage error."""
    try:
        yield
    except ResumeError as e:
        raise UsageError(args.prog, f"argument --resume: {str(e).removeprefix('fit: ')}; resume "
                                    f"with the same flags") from None
    except ValueError as e:  # checkpoints.load: the saved arrays are not this network's
        if not (args.resume and str(state_path) in str(e)):
            raise
        raise UsageError(args.prog, f"argument --resume: {e}; expected the state of the run "
                                    f"these flags describe") from None


def _data(args):
    """``(train, validation, test)`` as model inputs, and the folder ``--data-dir`` named."""
    prog = args.prog
    (x, y), test = load_data(prog, args.dataset, args.data_dir, not args.no_download)
    for part, what, use in (((x, y), "training", "trained on"),
                            (test, "test", "scored once, after training")):
        if len(part[0]) == 0:
            where = "" if args.data_dir is None else f" in {args.data_dir}"
            raise DataUnavailable(prog, f"the {args.dataset} {what} set{where} holds no "
                                        f"examples; expected at least one (it is {use})")
    rows = args.validation
    if rows is None:
        rows = min(DEFAULT_VALIDATION, len(x) // 10)
    elif rows >= len(x):
        raise UsageError(prog, f"argument --validation: cannot hold out {rows} of the {len(x)} "
                               f"training examples; expected fewer")
    train, held = datasets.hold_out(x, y, rows, args.seed)
    if args.batch_size is not None and args.batch_size > len(train[0]):
        raise UsageError(prog, f"argument --batch-size: {args.batch_size} is larger than the "
                               f"{len(train[0])} training examples (use --batch-size full for "
                               f"full-batch gradient descent)")
    folder = None if args.data_dir is None else data_folder(args.dataset, args.data_dir)
    layout = {"model": args.model}  # flat rows, NHWC images or rows as time steps
    return [prepare(layout, *part) for part in (train, held, test)], folder


def _announce(args, config, out, examples):
    batch = "full batch" if args.batch_size is None else f"batch {args.batch_size}"
    models = f", {args.ensemble} models" if args.ensemble > 1 else ""
    train, validation, test = examples
    print(f"fnnet train: {args.dataset} {describe(config)}, "
          f"{args.loss}, {rate_text(config)}, {args.epochs} epochs of {batch}, "
          f"{args.grads} gradients{_products(args)}, seed {args.seed}{models}; {train} training, "
          f"{validation} validation, {test} test examples -> {out}", flush=True)


def _products(args):
    return "" if args.precision == "f32" else f", {args.precision} products"


#: What a run replaced by ``--overwrite`` leaves that the new run writes only at its end.
RESULTS = ("model.npz", "metrics.json", "curves.png")


def _write_config(out, overwrite=False):
    """A callback writing the run's configuration (``fit``'s ``RunConfig``, serialised) to
    ``config.json`` after this command's first epoch: a run that is refused, or stopped before
    an epoch ends, leaves the folder's old ``config.json`` as it was. With ``overwrite``, the
    replaced run's results (``RESULTS``) are removed then, so that the folder never mixes the
    two runs."""
    written = []

    def callback(record, state, history):
        if not written and distributed.is_main():
            if overwrite:
                for name in RESULTS:
                    with contextlib.suppress(FileNotFoundError):
                        (out / name).unlink()
            write_json(out / "config.json", history["config"])
            written.append(record.epoch)

    return callback


def _fit(model, args, config, train, validation, out):
    """``(state, history)`` of ``fit``. Its divergence warning is dropped: the command reports
    divergence itself, on one line; every other warning passes through. A resume that does not
    continue the run saved in ``out`` is a usage error."""
    num_models = config["ensemble"]
    steps = 1 if args.batch_size is None else len(train[0]) // args.batch_size
    split = lambda part: (part[0], targets(args.loss, part[1], NUM_CLASSES))
    state_path = out / "train_state.npz"
    with warnings.catch_warnings(record=True) as caught, _resume_errors(args, state_path):
        warnings.simplefilter("always", RuntimeWarning)
        state, history = fit(
            model=model, loss=args.loss, optimizer=optimizer_of(config, steps),
            train=split(train), epochs=args.epochs, batch_size=args.batch_size,
            key=jax.random.PRNGKey(args.seed),
            validation=split(validation) if len(validation[0]) else None, grads=args.grads,
            ensemble=num_models if num_models > 1 else None, progress=not args.quiet,
            checkpoint=state_path, resume=args.resume,
            devices="all" if args.distributed else None, dtype=jnp.float32,
            precision=args.precision, recipe=config,
            callbacks=[_write_config(out, args.overwrite)])
    for w in caught:
        if not (issubclass(w.category, RuntimeWarning) and history.get("diverged")):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return state, history


def run(args):
    """Train; write ``WRITTEN`` into ``--out``. Exit status: 0; ``EXIT_DIVERGED`` when training
    diverged; ``EXIT_INTERRUPTED`` on Ctrl-C; ``EXIT_PEER_LOST`` (the process ends there) when a
    ``--distributed`` run loses another process (see ``DESCRIPTION``). With ``--distributed`` only
    process 0 prints, writes and locks the folder; the others return 0 once training is done."""
    prog = args.prog
    if args.dataset == train_text.TEXT:
        return _run_text(args)
    train_text.refuse_text_flags(args)
    _check_flags(args)
    if args.distributed:
        join(prog)  # before any other JAX call
    main = distributed.is_main()
    if main:
        say_bf16_emulated(prog, args.precision)
    out, state_path, _ = _claim_out(args, main)
    (train, validation, test), folder = _data(args)
    if args.distributed:
        check_split(prog, args.batch_size, len(train[0]))
    config = _config(args, len(validation[0]), folder)
    examples = (len(train[0]), len(validation[0]), len(test[0]))
    with _locked(args, out, main):
        if main and not args.quiet:
            _announce(args, config, out, examples)
        model = network(config)  # fit applies --precision
        started = time.perf_counter()
        since = 0 if args.resume else time.time_ns()
        try:
            state, history = _fit(model, args, config, train, validation, out)
        except KeyboardInterrupt:  # the other processes leave the message to process 0
            return _interrupted(args, out, state_path, since) if main else EXIT_INTERRUPTED
        except jax.errors.JaxRuntimeError as e:
            _lost_peer(args, out, state_path, since, e)
        except OSError as e:  # only process 0 writes
            return _file_error(args, out, state_path, since, e)
        seconds = time.perf_counter() - started
        if not main:
            return 0
        params = state.params
        if args.distributed:
            params = distributed.to_host(params)  # replicated in every process: this one's copy
        try:
            write_results(args, model, history["config"], params, history, test, examples, out,
                          seconds)
        except OSError as e:
            return _file_error(args, out, state_path, since, e)
    diverged = divergence_message(history, args.ensemble)
    if diverged:
        print(f"{prog}: error: {diverged}", file=sys.stderr, flush=True)
        return EXIT_DIVERGED
    return 0


def _run_text(args):
    """``--dataset shakespeare``: the character LSTM (``train_text``), with the same output
    folder checks and lock, resume, Ctrl-C and divergence handling as the image models."""
    train_text.check_flags(args, DEFAULT_LR)
    if args.distributed:
        join(args.prog)  # before any other JAX call
    main = distributed.is_main()
    if main:
        say_bf16_emulated(args.prog, args.precision)
    if args.distributed:
        check_split(args.prog, args.batch_size, args.batch_size)
    out, state_path, _ = _claim_out(args, main)
    since = 0 if args.resume else time.time_ns()
    with _locked(args, out, main):
        try:
            with _resume_errors(args, state_path):
                history = train_text.run(args, out, _write_config(out, args.overwrite))
        except KeyboardInterrupt:
            if not main:  # the other processes leave the message to process 0
                return EXIT_INTERRUPTED
            return _interrupted(args, out, state_path, since)
        except jax.errors.JaxRuntimeError as e:
            _lost_peer(args, out, state_path, since, e)
        except OSError as e:  # only process 0 writes
            return _file_error(args, out, state_path, since, e)
    if not main:
        return 0
    diverged = divergence_message(history, 1)
    if diverged:
        print(f"{args.prog}: error: {diverged}", file=sys.stderr, flush=True)
        return EXIT_DIVERGED
    return 0


def resume_command(argv, distributed=False):
    """The command line that resumes the run ``fnnet argv...`` trains: ``argv`` with
    ``--resume`` (and without ``--overwrite``). A distributed run started by ``fnnet launch``
    resumes under the same launch line (``ENV_LAUNCH``, which the launcher sets)."""
    argv = [arg for arg in map(str, argv) if arg not in ("--resume", "--overwrite")]
    command = ["fnnet", *argv, "--resume"]
    launched = os.environ.get(ENV_LAUNCH) if distributed else None
    if launched:
        command = [*shlex.split(launched), "--", *command]
    return shlex.join(command)


def _where_to_resume(args, out, state_path, since_ns):
    """``"the state after epoch K is in PATH; resume with: COMMAND"``, or ``None`` when this run
    saved nothing (no ``state_path`` written since ``since_ns``)."""
    if not (state_path.exists() and state_path.stat().st_mtime_ns >= since_ns):
        return None
    epoch = checkpoints.metadata(state_path)["epoch"]
    argv = list(args.argv) + ([] if args.out is not None else ["--out", str(out)])
    return (f"the state after epoch {epoch} is in {state_path}; resume with: "
            f"{resume_command(argv, args.distributed)}")


def _interrupted(args, out, state_path, since_ns):
    """Say where the resumable state is and how to resume; return ``EXIT_INTERRUPTED``."""
    where = _where_to_resume(args, out, state_path, since_ns)
    if where is None:
        print(f"{args.prog}: interrupted before the first epoch finished; nothing was saved "
              f"to resume from (run the same command again)", file=sys.stderr, flush=True)
    else:
        print(f"{args.prog}: interrupted; {where}", file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED


def _file_error(args, out, state_path, since_ns, error):
    """A file of the run could not be written while it trained (a full disk, a folder removed
    under it): one line with the error, where the last state is and how to resume (a checkpoint
    is replaced atomically, so the one before the failed write is whole); exit status 1."""
    try:
        where = _where_to_resume(args, out, state_path, since_ns)
    except (OSError, ValueError):  # the checkpoint cannot be read either
        where = None
    where = where or "nothing was saved to resume from (run the same command again)"
    print(f"{args.prog}: error: training stopped: {error}; {where}", file=sys.stderr, flush=True)
    return 1


def _lost_peer(args, out, state_path, since_ns, error):
    """A ``--distributed`` run whose collective failed because another process died: one line
    naming it and how to resume, then the process ends with ``EXIT_PEER_LOST`` at once
    (``distributed.abandon``: JAX's shutdown would abort with a page of logs). Any other error
    is raised again."""
    who = distributed.lost_peer(error) if args.distributed else None
    if who is None:
        raise error
    where = _where_to_resume(args, out, state_path, since_ns) or (
        "nothing was saved to resume from (start every process again)")
    print(f"{args.prog}: error: process {jax.process_index()} of {jax.process_count()} lost "
          f"{who} during training (it died or was stopped: its connection was lost); {where}",
          file=sys.stderr, flush=True)
    distributed.abandon(EXIT_PEER_LOST)
