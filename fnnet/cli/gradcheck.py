"""``fnnet gradcheck``: the hand-derived backward against ``jax.grad``, in float32 and float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import losses
from ..gradcheck import check_grads
from ..networks import cnn, mlp, sequence_classifier
from ..optim import sgd
from ..training.inputs import check_memory, training_bytes
from .common import (
    FORMATTER,
    add_cache_flags,
    add_network_flags,
    positive_float,
    positive_int,
    resolve_network,
    seed,
)
from .model_config import (
    CNN_ARCHITECTURE,
    IMAGE_SHAPE,
    LSTM_ARCHITECTURE,
    NUM_CLASSES,
    ROWS_SHAPE,
    describe,
)

DESCRIPTION = """\
Compare the hand-derived backward with jax.grad per parameter, in float32 and float64, on random
parameters and data. Exit status 0 when both dtypes pass their tolerance, 1 otherwise.

--model cnn checks fnnet.cnn() on random 28x28x1 images, in training mode: its dropout draws
the same mask (from --seed) in both gradients. --model lstm checks fnnet.sequence_classifier(28,
10) on random 28x28 images read row by row: backpropagation through 28 time steps."""


def add_parser(subparsers):
    """The ``gradcheck`` subcommand and its flags."""
    parser = subparsers.add_parser("gradcheck",
                                   help="hand-derived gradients vs jax.grad, float32 and float64",
                                   description=DESCRIPTION, formatter_class=FORMATTER)
    add_network_flags(parser, "784,32,10")
    parser.add_argument("--batch", type=positive_int, default=16, help="examples (default: 16)")
    parser.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")
    parser.add_argument("--finite-differences", action="store_true",
                        help="also compare each gradient's directional derivative with central "
                             "finite differences (L(p + εv) − L(p − εv)) / 2ε")
    parser.add_argument("--tol32", type=positive_float, default=1e-4,
                        help="float32 relative-error tolerance (default: 1e-4)")
    parser.add_argument("--tol64", type=positive_float, default=1e-10,
                        help="float64 relative-error tolerance (default: 1e-10)")
    parser.add_argument("--fd-tol32", type=positive_float, default=5e-2,
                        help="float32 finite-difference tolerance (default: 5e-2, ε = 1e-2)")
    parser.add_argument("--fd-tol64", type=positive_float, default=1e-5,
                        help="float64 finite-difference tolerance (default: 1e-5, ε = 1e-6)")
    add_cache_flags(parser)
    parser.set_defaults(run=run)


def _network(args):
    """``(model, input shape of one example, number of outputs)`` of the flags."""
    if args.model == "cnn":
        return cnn(IMAGE_SHAPE, NUM_CLASSES), IMAGE_SHAPE, NUM_CLASSES
    if args.model == "lstm":
        return sequence_classifier(ROWS_SHAPE[1], NUM_CLASSES), ROWS_SHAPE, NUM_CLASSES
    return mlp(args.layers, args.activation, args.output), (args.layers[0],), args.layers[-1]


def _problem(model, shape, outputs, loss, batch, seed_value):
    """Random ``params, x, y`` as numpy arrays, to be cast to each dtype checked.

    ``params`` come from ``model.init`` (float32, compiled once); pixel-like inputs
    ``x ~ U[0, 1)`` of shape ``(batch, *shape)``; targets are integer labels (cross-entropy), 0/1
    entries (binary cross-entropy) or ``U[0, 1)`` (MSE), drawn with numpy so that no
    random-number kernel is compiled per array and dtype.
    """
    params = jax.tree_util.tree_map(np.asarray, jax.jit(model.init)(jax.random.PRNGKey(seed_value)))
    rng = np.random.default_rng(seed_value)
    x = rng.uniform(size=(batch, *shape))
    if loss == "cross-entropy":
        y = rng.integers(0, outputs, size=batch).astype(np.int32)
    elif loss == "binary-cross-entropy":
        y = (rng.uniform(size=(batch, outputs)) < 0.5).astype(np.float64)
    else:
        y = rng.uniform(size=(batch, outputs))
    return params, x, y


def _as_dtype(tree, dtype):
    """Every floating array of ``tree`` as a jax array of ``dtype``; integer arrays unchanged."""
    cast = lambda array: jnp.asarray(array.astype(dtype) if np.issubdtype(array.dtype, np.floating)
                                     else array)
    return jax.tree_util.tree_map(cast, tree)


def _verdict(report, tol, fd_tol):
    """``(passed, line)``: the worst relative error ``‖g_manual − g_jax‖∞ / ‖g_jax‖∞`` over the
    parameters against ``tol``, and with finite differences the worst directional-derivative error
    against ``fd_tol``."""
    passed = report.ok(tol)
    line = f"max relative error {report.max_rel:.3e} {'<=' if passed else '>'} {tol:g}"
    fd_errors = [row.fd_rel for row in report.rows if row.fd_rel is not None]
    if fd_errors:
        fd_passed = max(fd_errors) <= fd_tol
        line += (f", finite differences {max(fd_errors):.3e} {'<=' if fd_passed else '>'} "
                 f"{fd_tol:g}")
        passed = passed and fd_passed
    if report.all_zero:  # agreement on zeros shows nothing about the rules
        line += ("; every gradient is exactly zero, so this checks nothing (the network's loss "
                 "does not depend on its parameters here: a softmax over one output, say)")
    return passed, f"{report.dtype}: {'PASS' if passed else 'FAIL'}  {line}"


def run(args):
    """Print a gradient-check table per dtype and a verdict line for each.

    Exit status 0 when both dtypes pass their tolerance, 1 otherwise.
    """
    resolve_network(args, "784,32,10")
    model, shape, outputs = _network(args)
    # float64 params and their copies (manual, autodiff, finite differences): refuse, with the
    # figure, a network that cannot fit before allocating any of it
    check_memory(2 * training_bytes(model, sgd(0.1), np.zeros(shape), args.batch, None,
                                    jnp.float32), "the gradient check")
    problem = _problem(model, shape, outputs, args.loss, args.batch, args.seed)
    # the dropout key of the CNN; the MLP draws nothing
    key = jax.random.PRNGKey(args.seed) if args.model == "cnn" else None
    architecture = {"cnn": CNN_ARCHITECTURE, "lstm": LSTM_ARCHITECTURE}.get(args.model)
    what = describe({"model": args.model, "layers": args.layers, "activation": args.activation,
                     "output": args.output, "architecture": architecture})
    print(f"gradcheck: {what}, {args.loss}, batch {args.batch}, seed {args.seed}")
    verdicts = []
    settings = (("float32", args.tol32, args.fd_tol32), ("float64", args.tol64, args.fd_tol64))
    for dtype, tol, fd_tol in settings:
        with jax.enable_x64(dtype == "float64"):
            params, x, y = _as_dtype(problem, dtype)
            report = check_grads(model, losses.get(args.loss), params, x, y, key=key,
                                 finite_differences=args.finite_differences)
        print()
        print(report)
        verdicts.append(_verdict(report, tol, fd_tol))
    print()
    for _, line in verdicts:
        print(line)
    return 0 if all(passed for passed, _ in verdicts) else 1
