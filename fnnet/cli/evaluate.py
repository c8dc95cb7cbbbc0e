"""``fnnet evaluate``: score a checkpoint written by ``fnnet train`` on its test set."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from .. import checkpoints, datasets, metrics
from ..io import write_json
from .common import (
    FORMATTER,
    DataUnavailable,
    UsageError,
    add_cache_flags,
    add_data_flags,
    check_out,
    check_outputs,
    folder,
    load_data,
    print_results,
    run_files,
)
from .model_config import (
    NUM_CLASSES,
    MetadataError,
    describe,
    model_from_metadata,
    param_template,
    prepare,
)
from .scoring import model_scores, predict, summarize_test

MISCLASSIFIED_SHOWN = 40
WRITTEN = ("confusion.png", "misclassified.png", "metrics.json")  # what evaluate writes into --out

DESCRIPTION = """\
Rebuild the network from a checkpoint's metadata (an MLP fed flat images, or the CNN of train
--model cnn fed 28x28x1 images), score it on the test set, and write confusion.png,
misclassified.png and metrics.json (classes named as the dataset names them). For a checkpoint
of several models (train --ensemble K), each model is scored alone and the ensemble by its
averaged probabilities.

The data: from --data-dir when given; else from the folder the model was trained on, when the
checkpoint records one (train --data-dir); else from the default locations."""


def add_parser(subparsers):
    """The ``evaluate`` subcommand and its flags."""
    parser = subparsers.add_parser("evaluate", help="score a checkpoint written by 'fnnet train'",
                                   description=DESCRIPTION, formatter_class=FORMATTER)
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="model.npz written by 'fnnet train'")
    parser.add_argument("--out", type=folder, metavar="DIR",
                        help="output folder (default: evaluation/ beside the checkpoint); not "
                             "the folder of a training run, whose metrics.json it would replace")
    add_data_flags(parser)
    add_cache_flags(parser)
    parser.set_defaults(run=run)


def _read_checkpoint(prog, path):
    """``(model, num_models, params, metadata)`` of the checkpoint at ``path``; ``UsageError``
    naming the problem if it is missing, unreadable, not a model checkpoint or of other shapes.
    No array is read before the manifest is compared with the params its metadata describes."""
    try:
        meta = checkpoints.metadata(path)
        model, num_models = model_from_metadata(meta)
        params, _ = checkpoints.load(path, like=param_template(model, num_models))
    except MetadataError as e:
        raise UsageError(prog, f"argument CHECKPOINT: {path}: {e}") from None
    except (OSError, ValueError) as e:  # missing, a folder, unreadable, corrupted, wrong shapes
        raise UsageError(prog, f"argument CHECKPOINT: {e}") from None
    return model, num_models, params, meta


def _plot(out, meta, num_models, results, x_test, y_test, probs):
    """Write ``confusion.png`` and ``misclassified.png``; return the confusion matrix, the
    indices of the misclassified test images and of those shown."""
    from .. import plots  # matplotlib only once there is a figure to draw

    predicted = np.asarray(metrics.predicted_classes(probs))
    confusion = np.asarray(metrics.confusion_matrix(jnp.asarray(probs), jnp.asarray(y_test),
                                                    NUM_CLASSES))
    wrong = np.flatnonzero(predicted != y_test)
    shown = wrong[:MISCLASSIFIED_SHOWN]
    who = f"ensemble of {num_models}" if num_models > 1 else "model"
    names = list(datasets.CLASS_NAMES[meta["dataset"]])
    plots.plot_confusion(confusion, out / "confusion.png", class_names=names,
                         title=f"{meta['dataset']} test set, {who}: {results['test_accuracy']:.2%}")
    plots.plot_digits(x_test[shown], out / "misclassified.png", labels=y_test[shown],
                      predictions=predicted[shown], class_names=names,
                      title=f"{len(shown)} of {len(wrong)} misclassified test images: "
                            f"predicted (true)")
    return confusion, wrong, shown


def _test_data(args, meta):
    """The test split the checkpoint's model is scored on, as model inputs (flat rows for an MLP,
    NHWC images for a CNN): from ``--data-dir``, else the data folder the checkpoint records,
    else the default locations."""
    name, recorded = meta["dataset"], meta.get("data_dir")
    if args.data_dir is not None or not isinstance(recorded, str):
        _, test = load_data(args.prog, name, args.data_dir, not args.no_download)
    else:
        _, test = load_data(args.prog, name, recorded, not args.no_download,
                            given_as="the data folder the checkpoint records",
                            remedy="pass --data-dir with the folder that holds them now")
    if len(test[1]) == 0:
        raise DataUnavailable(args.prog, f"the {name} test set holds no examples; expected at "
                                         f"least one to score")
    return prepare(meta, *test)


def _check_out(prog, out):
    """``check_out``, the output names, and no training run's folder (``common.RUN_FILES``):
    ``metrics.json`` there is the run's."""
    out = check_out(prog, out)
    check_outputs(prog, out, WRITTEN)
    found = run_files(out)
    if found:
        raise UsageError(prog, f"argument --out: {out} holds a training run ({', '.join(found)}), "
                               f"whose metrics.json evaluate would replace; expected another "
                               f"folder (the default is evaluation/ beside the checkpoint)")
    return out


def run(args):
    """Score the checkpoint; write ``confusion.png``, ``misclassified.png`` and ``metrics.json``."""
    prog = args.prog
    path = Path(args.checkpoint)
    out = _check_out(prog, args.out if args.out is not None else path.parent / "evaluation")
    model, num_models, params, meta = _read_checkpoint(prog, path)
    x_test, y_test = _test_data(args, meta)

    probs = predict(model, params, num_models, x_test)
    model_loss, model_accuracy = model_scores(model, meta["loss"], params, num_models, x_test,
                                              y_test)
    results = summarize_test(meta["loss"], y_test, model_loss, model_accuracy, probs)
    confusion, wrong, shown = _plot(out, meta, num_models, results, x_test, y_test, probs)
    write_json(out / "metrics.json", {
        "checkpoint": str(path), "dataset": meta["dataset"], "n_test": len(y_test), **results,
        "misclassified": len(wrong), "misclassified_shown": shown, "confusion_matrix": confusion,
        "config": meta,
    })
    print(f"{path}: {meta['dataset']} {describe(meta)}, {meta['loss']}"
          + (f", {num_models} models" if num_models > 1 else ""))
    print_results(results, num_models)
    print(f"{len(wrong)} of {len(y_test)} test images misclassified; wrote {out / 'confusion.png'}, "
          f"{out / 'misclassified.png'}, {out / 'metrics.json'}")
    return 0
