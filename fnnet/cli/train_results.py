"""``fnnet train``'s results: the test set scored once, ``model.npz``, ``metrics.json`` and
``curves.png`` written (process 0), and the summary printed."""

from __future__ import annotations

import jax
import numpy as np

from .. import checkpoints
from ..io import write_json
from ..training.epoch import DIVERGENCE_FACTOR
from .common import print_results
from .model_config import describe
from .scoring import model_scores, predict, summarize_test

#: What ``fnnet train`` writes into ``--out``.
WRITTEN = ("config.json", "train_state.npz", "model.npz", "metrics.json", "curves.png")


def divergence_message(history, num_models):
    """One line saying where training diverged, from ``fit``'s ``history["diverged"]``
    (``[{"epoch": e, "models": [...]}, ...]``, absent if it did not), or ``None``."""
    events = history.get("diverged", [])
    if not events:
        return None
    if num_models > 1:
        where = ", ".join(f"model{'s' if len(e['models']) > 1 else ''} "
                          f"{', '.join(map(str, e['models']))} at epoch {e['epoch']}"
                          for e in events)
    else:
        where = f"at epoch {events[0]['epoch']}"
    return (f"training diverged {where}: the loss became non-finite or grew past "
            f"{DIVERGENCE_FACTOR:g} x max(first step's loss, 1), so training stopped; the files "
            f"written hold the last parameters whose loss was within that (try a smaller --lr)")


def rate_text(config):
    """``"momentum lr 0.1"``, and ``" x0.75 per epoch"`` after it when the rate decays."""
    decay = f" x{config['lr_decay']:g} per epoch" if config["lr_decay"] != 1 else ""
    return f"{config['optimizer']} lr {config['lr']:g}{decay}"


def _last(values):
    """The last epoch's validation score (the mean for several models), or ``None``."""
    if not values or values[-1] is None:
        return None
    return float(np.nanmean(np.asarray(values[-1], dtype=float)))


def _scores(args, model, params, num_models, history, test):
    """The final validation scores (from the history) and the test scores, computed once."""
    x_test, y_test = test
    probs = predict(model, params, num_models, x_test) if num_models > 1 else None
    loss, accuracy = model_scores(model, args.loss, params, num_models, x_test, y_test)
    results = summarize_test(args.loss, y_test, loss, accuracy, probs)
    return {"validation_loss": _last(history["val_loss"]),
            "validation_accuracy": _last(history["val_accuracy"]), **results}


def _summary(results, examples, num_models, seconds, compile_seconds, out):
    """Print the validation and test scores and the time taken (compiling included)."""
    train, validation, test = examples
    if results["validation_accuracy"] is not None:
        mean = f"mean of {num_models} models, " if num_models > 1 else ""
        print(f"validation accuracy {results['validation_accuracy']:.2%}  ({mean}validation loss "
              f"{results['validation_loss']:.4f}; {validation} examples held out of the "
              f"training set)")
    print(f"test set ({test} examples, scored once after training):")
    print_results(results, num_models)
    print(f"trained in {seconds:.1f} s, {compile_seconds:.2f} s of it compiling; wrote "
          f"{', '.join(WRITTEN)} into {out}")


def write_results(args, model, config, params, history, test, examples, out, seconds):
    """Score the test set once; write ``model.npz``, ``metrics.json``, ``curves.png``; print."""
    results = _scores(args, model, params, args.ensemble, history, test)
    diverged = divergence_message(history, args.ensemble) is not None
    final = {"train_loss": history["loss"][-1], "train_accuracy": history["train_accuracy"][-1],
             "epochs_trained": history["epoch"][-1]}
    checkpoints.save(out / "model.npz", params, **config, **final, **results, dtype="float32",
                     diverged=diverged)
    cache = getattr(args, "compile_cache_path", None)  # set by main (common.compile_cache)
    write_json(out / "metrics.json", {
        "config": config, "examples": dict(zip(("train", "validation", "test"), examples)),
        **results, **final, "seconds": seconds, "compile_seconds": history["compile_seconds"],
        "compile_cache": cache and str(cache),
        "processes": jax.process_count(), "devices": jax.device_count() if args.distributed else 1,
        "diverged": diverged, "divergence": history.get("diverged", []), "history": history})
    from .. import plots  # matplotlib only once there is a figure to draw

    plots.plot_history(history, out / "curves.png",
                       title=f"{args.dataset} {describe(config)}, {rate_text(config)}")
    _summary(results, examples, args.ensemble, seconds, history["compile_seconds"], out)
