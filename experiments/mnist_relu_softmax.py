"""Note 002 (experiments/NOTES.md), MNIST from scratch: a 784-10-10 network, ReLU then softmax,
cross-entropy, trained by full-batch gradient descent on 55,000 of the 60,000 training images
(5,000 held out at random as the validation set; the 10,000 test images scored once, at the end).

The note's equations, samples as columns (``X`` is 784 × m, labels one-hot ``Y``)::

    A0 = X
    Z1 = W1 A0 + b1        W1: 10 × 784        A1 = ReLU(Z1)
    Z2 = W2 A1 + b2        W2: 10 × 10         A2 = softmax(Z2)

    dZ2 = A2 − Y
    dW2 = (1/m) dZ2 A1ᵀ    db2 = (1/m) Σ dZ2
    dZ1 = W2ᵀ dZ2 ⊙ g'(Z1)                      g'(z) = [z > 0]
    dW1 = (1/m) dZ1 Xᵀ     db1 = (1/m) Σ dZ1

    W ← W − α dW,  b ← b − α db,  α = 0.10, repeated 500 times over the whole training set.

fnnet runs the same equations with samples as rows (note 004's layout, every matrix transposed):
``fnnet.value_and_grad`` takes the fused softmax/cross-entropy rule ``dZ2 = (A2 − Y)/m`` and the
Dense and ReLU backward rules of note 000. ``fnnet.fit(..., batch_size=None)`` is the note's loop,
one update per epoch on all ``m`` images, so 500 epochs are the note's 500 iterations.

Initialisation: the note draws weights from ``np.random.rand(...) − 0.5``, U(−0.5, 0.5); fnnet's
``init="uniform"`` does the same for the weights (biases start at zero rather than uniform). The
same run is repeated with He initialisation (normal, std √(2/n_in)) to see which trains better at
α = 0.1. The reference implementation of this note reports about 85% accuracy; ``metrics.json``
holds what this run measured.

The curves are drawn on the validation images, and the better initialisation is the one with the
higher final validation accuracy; the test set is scored once per run, after training.

Outputs in ``--out``: ``curves.png`` (loss and accuracy per iteration, uniform init),
``init_comparison.png`` (train and validation accuracy for both initialisations), ``digits.png``
(test digits with predictions), ``confusion.png`` (test set) and ``metrics.json``.

Usage: ``python -m experiments.mnist_relu_softmax [--quick] [--out DIR] [--seed S]``.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import fnnet
from experiments import common
from fnnet import plots

NAME = "mnist_relu_softmax"
INITS = ("uniform", "he")
LR = 0.10
EPOCHS = 500
QUICK_EPOCHS = 100
VALIDATION, QUICK_VALIDATION = 5000, 200  # training images held out for validation
LOSS = "cross-entropy"


def network(init):
    """784-10-10 as note 002 draws it: ``Dense(784, 10) → ReLU → Dense(10, 10) → Softmax``, both
    Dense layers initialised with ``init``."""
    return fnnet.Sequential(fnnet.Dense(784, 10, init=init), fnnet.ReLU(),
                            fnnet.Dense(10, 10, init=init), fnnet.Softmax())


def train(init, train_data, val_data, test_data, epochs, lr, key):
    """Full-batch gradient descent (``batch_size=None``) from ``init``, validated on ``val_data``
    after every iteration; the test set scored once at the end. Returns ``(model, params,
    result)`` with final train/validation/test loss and accuracy and the per-epoch curves."""
    model = network(init)
    state, history = fnnet.fit(model, LOSS, fnnet.optim.sgd(lr), train_data, epochs=epochs,
                               batch_size=None, key=key, validation=val_data, dtype=jnp.float32)
    params = state.params
    train_loss, train_acc = fnnet.evaluate(model, LOSS, params, *train_data)
    # fit scored the final params on the validation images after the last epoch
    val_loss, val_acc = history["val_loss"][-1], history["val_accuracy"][-1]
    test_loss, test_acc = fnnet.evaluate(model, LOSS, params, *test_data)  # once, at the end
    result = {
        "init": init,
        **common.split_scores((train_loss, train_acc), (val_loss, val_acc),
                              (test_loss, test_acc)),
        "train_seconds": float(np.sum(history["seconds"])),
        "compile_seconds": float(history["compile_seconds"]),
        "diverged": history.get("diverged", []),
        "history": {name: history[name] for name in
                    ("epoch", "loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")},
    }
    return model, params, result


def draw(out, models, xte, yte, lr):
    """The figures: curves and test digits of the U(-0.5, 0.5) run, both inits' accuracies, and
    the confusion matrix."""
    model, params, main_run = models["uniform"]
    probs = np.asarray(model.apply(params, jnp.asarray(xte)))
    pred = probs.argmax(axis=1)
    shown = min(30, len(xte))
    plots.plot_history(main_run["history"], out / "curves.png",
                       title=f"note 002: 784-10-10, full batch, alpha={lr}, U(-0.5, 0.5) init "
                             f"(validation: held out of training)")
    plots.plot_lines(
        main_run["history"]["epoch"],
        {f"{init} init: {split}": models[init][2]["history"][field]
         for init in INITS
         for split, field in (("train", "train_accuracy"), ("validation", "val_accuracy"))},
        out / "init_comparison.png", xlabel="iteration (one full-batch step)", ylabel="accuracy",
        title="U(-0.5, 0.5) (note 002) against He initialisation", marker=None)
    plots.plot_digits(xte[:shown], out / "digits.png", labels=yte[:shown].tolist(),
                      predictions=pred[:shown].tolist(),
                      title="test digits: prediction (true label when wrong)")
    plots.plot_confusion(np.asarray(fnnet.metrics.confusion_matrix(probs, yte, 10)),
                         out / "confusion.png", title="test set, U(-0.5, 0.5) init")


def main(argv=None):
    """Train with both initialisations, draw the figures, write and return the metrics."""
    p = common.parser(__doc__, NAME)
    p.add_argument("--lr", type=float, default=LR, help=f"learning rate alpha (default {LR})")
    args, epochs = common.parse_with_epochs(p, argv, EPOCHS, QUICK_EPOCHS, "full-batch iterations")

    (xtr, ytr), (xval, yval), (xte, yte), source = common.load_mnist_split(
        quick=args.quick, validation=QUICK_VALIDATION if args.quick else VALIDATION,
        seed=args.seed)
    key = jax.random.PRNGKey(args.seed)
    runs, models = {}, {}
    for init in INITS:
        print(f"[{NAME}] init={init}: {epochs} full-batch iterations on {len(xtr)} images "
              f"({len(xval)} held out for validation), alpha={args.lr}", flush=True)
        models[init] = train(init, (xtr, ytr), (xval, yval), (xte, yte), epochs, args.lr, key)
        runs[init] = models[init][2]

    out = Path(args.out)
    draw(out, models, xte, yte, args.lr)

    best = max(INITS, key=lambda i: runs[i]["val_accuracy"])  # chosen on validation
    metrics = {
        "experiment": NAME,
        "note": "002",
        **common.data_entries(args, source, len(xtr), len(xte)),
        "n_validation": len(xval),
        "config": {"sizes": [784, 10, 10], "activation": "relu", "output": "softmax", "loss": LOSS,
                   "optimizer": "sgd", "lr": args.lr, "batch_size": None, "epochs": epochs},
        "train_accuracy": runs["uniform"]["train_accuracy"],
        "val_accuracy": runs["uniform"]["val_accuracy"],
        "test_accuracy": runs["uniform"]["test_accuracy"],
        "best_init": best,
        "runs": runs,
        "figures": ["init_comparison.png", "curves.png", "digits.png", "confusion.png"],
        "headline": {
            "train accuracy, U(-0.5,0.5) init": runs["uniform"]["train_accuracy"],
            "validation accuracy, U(-0.5,0.5) init": runs["uniform"]["val_accuracy"],
            "test accuracy, U(-0.5,0.5) init": runs["uniform"]["test_accuracy"],
            "train accuracy, He init": runs["he"]["train_accuracy"],
            "validation accuracy, He init": runs["he"]["val_accuracy"],
            "test accuracy, He init": runs["he"]["test_accuracy"],
            "full-batch iterations": epochs,
            "learning rate": args.lr,
            "training seconds (both inits)": sum(r["train_seconds"] for r in runs.values()),
            "data": f"{source}, {len(xtr)} train / {len(xval)} validation / {len(xte)} test",
        },
    }
    common.write_metrics(out, metrics)
    print(common.table(
        [[init, r["train_accuracy"], r["val_accuracy"], r["test_accuracy"], r["train_loss"],
          r["train_seconds"]] for init, r in runs.items()],
        ["init", "train acc", "val acc", "test acc (once)", "train loss", "seconds"]))
    print(f"better init at alpha={args.lr} (on validation): {best}; outputs in {out}")
    return metrics


if __name__ == "__main__":
    main()
