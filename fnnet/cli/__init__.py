"""The ``fnnet`` command line: ``train``, ``evaluate``, ``gradcheck``, ``sample``, ``bench`` and
``launch``.

::

    fnnet train --dataset mnist                  # 784-128-10 ReLU/softmax
    fnnet train --model cnn --out runs/cnn       # fnnet.cnn() on 28x28x1 images
    fnnet train --model lstm --out runs/lstm     # an LSTM over each image's 28 rows
    fnnet train --dataset shakespeare --model lstm   # a character LSTM on tiny Shakespeare
    fnnet sample runs/shakespeare --prompt ROMEO:    # text from it, one compiled loop
    fnnet evaluate runs/mnist/model.npz          # accuracy, confusion matrix, misclassified digits
    fnnet gradcheck --layers 784,32,10           # hand-derived backward vs jax.grad, f32 and f64
    fnnet bench --quick                          # fnnet.bench, arguments forwarded
    fnnet launch -n 2 -- fnnet train --distributed   # two processes training as one

``main(argv) -> int`` never raises ``SystemExit`` and never prints a traceback for a bad command
line: a wrong flag value, or an ``--out`` that is a file, lies under a file or cannot be written,
is one line ``fnnet <command>: error: ...`` on stderr and exit status 2 (before any work); data
that cannot be found or read is one line in the command line's words and exit status 1; Ctrl-C is
one line and exit status 130 (``train`` says how to resume), and so is a Ctrl-C that arrived
while the program was starting, when a guard deferred it (``take_deferred_interrupt``). ``train``
exits 3 when training diverged, and refuses an ``--out`` that holds a run unless ``--resume`` or
``--overwrite``, or that another run is using.

``train --model mlp`` (the default) trains ``fnnet.mlp`` on flat images ``(N, 784)``: momentum
0.1, 10 epochs of batch 128. ``train --model cnn`` trains ``fnnet.cnn()`` (two 3×3 conv/ReLU/2×2
max-pool stages of 32 and 64 channels, dropout 0.5, dense 128, softmax) on images reshaped to
NHWC ``(N, 28, 28, 1)``, with its own defaults (``train.CNN_DEFAULTS``: momentum lr 0.1 halved
every epoch, 4 epochs of batch 64), chosen on the validation split of MNIST, never on the test
set. ``--layers``, ``--activation`` and
``--output`` are refused with ``--model cnn``, and its loss must be cross-entropy. The checkpoint
records the model kind (``fnnet.cli.model_config``): ``evaluate`` rebuilds the CNN and feeds it NHWC
images, ``--resume`` refuses a change of model, and ``--ensemble K`` vmaps K CNNs like K MLPs.
``gradcheck --model cnn`` checks the CNN's hand-derived backward on a few random images.
``train --model lstm`` reads each image as 28 time steps of 28 pixels
(``fnnet.sequence_classifier``, ``train.LSTM_DEFAULTS``); ``train --dataset shakespeare --model
lstm`` trains a character model (``train_text``), which ``sample`` reads.

Losses and outputs that make no sense together are refused (exit status 2):
``--loss cross-entropy`` needs ``--output softmax``, ``--loss binary-cross-entropy`` needs
``--output sigmoid`` or ``softmax`` (why: ``fnnet.cli.model_config``). Cross-entropy trains on integer
labels; MSE and binary cross-entropy on one-hot rows.

The commands that compile (``train``, ``evaluate``, ``gradcheck``) keep their compiled programs
in JAX's persistent compilation cache, in ``~/.cache/fnnet/jax`` (``--compile-cache DIR``; off
with ``--no-compile-cache``), for the time the command runs: ``main`` sets JAX's settings and puts
the previous ones back (``common.compile_cache``); importing fnnet sets nothing.

One module per command (``train``, ``evaluate``, ``gradcheck``, ``sample``, ``bench``,
``launch``; ``train_text`` is ``train``'s character model), each with
``add_parser(subparsers)`` and ``run``; what they share is in ``common``. Scoring is
``fnnet.cli.scoring``, the checkpoint metadata ``fnnet.cli.model_config``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading

from .. import _startup
from .._version import __version__
from . import bench, evaluate, gradcheck, launch, sample, train
from .common import FORMATTER, DataUnavailable, Parser, UsageError, compile_cache, exit_code
from .train import (
    CNN_DEFAULTS,
    DEFAULT_BATCH,
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    DEFAULT_OPTIMIZER,
    DEFAULT_VALIDATION,
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_PEER_LOST,
    MLP_DEFAULTS,
)

__all__ = ["CNN_DEFAULTS", "DEFAULT_BATCH", "DEFAULT_EPOCHS", "DEFAULT_LR", "DEFAULT_OPTIMIZER",
           "DEFAULT_VALIDATION", "EXIT_DIVERGED", "EXIT_INTERRUPTED", "EXIT_PEER_LOST", "MLP_DEFAULTS",
           "DataUnavailable", "UsageError", "build_parser", "console", "main"]

DESCRIPTION = ("fnnet: neural networks from scratch in JAX, every gradient derived by hand and "
               "checked against jax.grad.")

EXAMPLES = """\
examples:
  fnnet train --dataset mnist                 784-128-10 ReLU/softmax, validated on held-out data
  fnnet train --model cnn --out runs/cnn      the CNN (fnnet.cnn) on 28x28x1 images
  fnnet train --model lstm --out runs/lstm    an LSTM reading each image row by row
  fnnet train --dataset shakespeare --model lstm   a character LSTM; then fnnet sample runs/shakespeare
  fnnet train --optimizer adam --ensemble 5   five models, scored alone and averaged
  fnnet evaluate runs/mnist/model.npz         confusion matrix and misclassified digits
  fnnet gradcheck --layers 784,32,10          hand-derived backward vs jax.grad, float32 and float64
  fnnet bench --help                          the benchmark's own flags
  fnnet launch -n 2 -- fnnet train --distributed   two processes, each minibatch split across them"""


def build_parser() -> argparse.ArgumentParser:
    """The ``fnnet`` argument parser (``bench`` and ``launch`` are listed; ``main`` forwards their
    arguments)."""
    parser = Parser(prog="fnnet", formatter_class=FORMATTER, description=DESCRIPTION,
                    epilog=EXAMPLES)
    parser.add_argument("--version", action="version", version=f"fnnet {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (train, evaluate, gradcheck, sample, bench, launch):
        command.add_parser(subparsers)
    return parser


#: The attribute of a SIGINT handler that defers Ctrl-C while the program starts: the list of
#: signals it received. The handler is installed before ``fnnet`` (and JAX) is imported, by
#: ``fnnet launch``'s ``BOOTSTRAP`` in the processes it starts.
DEFERRED = _startup.DEFERRED
COMMANDS = ("train", "evaluate", "gradcheck", "sample", "bench", "launch")


def take_deferred_interrupt():
    """Whether Ctrl-C arrived while the program started: if the SIGINT handler is one that
    deferred it (it has a ``DEFERRED`` list), Python's own handler is put back (a Ctrl-C from
    now on raises ``KeyboardInterrupt``) and the answer is whether that list holds a signal."""
    if threading.current_thread() is not threading.main_thread():
        return False
    pending = getattr(signal.getsignal(signal.SIGINT), DEFERRED, None)
    if not isinstance(pending, list):
        return False
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return bool(pending)


def main(argv=None) -> int:
    """Run ``fnnet`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    prog = f"fnnet {argv[0]}" if argv and argv[0] in ("bench", "launch") else "fnnet"
    if take_deferred_interrupt():
        who = f"fnnet {argv[0]}" if argv and argv[0] in COMMANDS else "fnnet"
        print(f"{who}: interrupted while starting; nothing was done", file=sys.stderr,
              flush=True)
        return EXIT_INTERRUPTED
    try:
        if prog == "fnnet bench":
            return bench.run(argv[1:])
        if prog == "fnnet launch":
            return launch.run(argv[1:])
        args, unknown = build_parser().parse_known_args(argv)
        args.prog, args.argv = f"fnnet {args.command}", argv
        prog = args.prog
        if unknown:
            raise UsageError(args.prog, f"unrecognized arguments: {' '.join(unknown)}")
        compiles = hasattr(args, "no_compile_cache")
        with compile_cache(args) if compiles else contextlib.nullcontext():
            return args.run(args)
    except UsageError as e:
        message = " ".join(str(e).split("\n"))
        print(f"{e.prog}: error: {message} (see '{e.prog} --help')", file=sys.stderr)
        return 2
    except DataUnavailable as e:
        print(f"{e.prog}: error: {e}", file=sys.stderr)
        return 1
    except MemoryError as e:  # refused before allocating: the figures are in the message
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except SystemExit as e:  # --help and --version
        return exit_code(e.code)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def console() -> int:
    """The ``fnnet`` console script and ``python -m fnnet.cli``: ``main()``; after a Ctrl-C
    (status 130), the process ends as soon as its message is out, without the interpreter's
    teardown. A Ctrl-C can land while XLA compiles on threads of its own, and tearing the
    interpreter down under those threads crashed the process (SIGSEGV, status -11) after its
    message. Whatever the run saves is written and closed before ``main`` returns."""
    status = main()
    if status == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status
