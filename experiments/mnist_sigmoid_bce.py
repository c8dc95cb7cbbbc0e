"""Note 004 (vectorized equations): a 784-17-10 network with sigmoid hidden and output layers and
binary cross-entropy on one-hot targets, trained on MNIST.

The note's equations, samples as rows (``X`` is N × 784, ``Y`` one-hot N × 10)::

    Z[l] = A[l−1] W[l]ᵀ + b[l]ᵀ,   A[l] = σ(Z[l]),   A[0] = X
    W1: 17 × 784,  b1: 17 × 1,  W2: 10 × 17,  b2: 10 × 1

    L(Ŷ, Y) = −mean(Y log Ŷ + (1 − Y) log(1 − Ŷ))

    dL/dZ2 = Ŷ − Y                                  (σ' = Ŷ(1 − Ŷ) cancels BCE's denominator)
    dL/dW2 = (Ŷ − Y)ᵀ A1,       dL/db2 = Σ (Ŷ − Y)
    dL/dZ1 = ((Ŷ − Y) W2) ⊙ A1 (1 − A1)
    dL/dW1 = dZ1ᵀ X,            dL/db1 = Σ dZ1
    W ← W − α dL/dW, inside a loop over epochs.

fnnet's ``binary_cross_entropy`` sums over the 10 outputs and averages over the batch, so its fused
rule reads ``dL/dZ2 = (Ŷ − Y)/N``; ``fnnet.value_and_grad`` chains it with the sigmoid rule
``A(1 − A)`` and the Dense rules above.

Training: the note runs plain gradient descent in a loop over epochs; here it is minibatch SGD
(``fnnet.optim.sgd``, learning rate 0.5, minibatches of 32 shuffled every epoch, 20 epochs), which
reaches in seconds what full-batch descent needs thousands of steps for. Xavier/Glorot uniform
initialisation (fnnet's default for sigmoid layers). Accuracy is the argmax of the 10 sigmoid
outputs against the label.

Outputs in ``--out``: ``curves.png`` (loss and accuracy per epoch), ``confusion.png`` and
``metrics.json``.

Usage: ``python -m experiments.mnist_sigmoid_bce [--quick] [--out DIR] [--seed S]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python experiments/mnist_sigmoid_bce.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import fnnet  # noqa: E402
from experiments import common  # noqa: E402
from fnnet import plots  # noqa: E402
from fnnet.datasets import one_hot  # noqa: E402

NAME = "mnist_sigmoid_bce"
LOSS = "binary-cross-entropy"
LR = 0.5
BATCH = 32
EPOCHS = 20
QUICK_EPOCHS = 3


def network():
    """784-17-10 as note 004 draws it: ``Dense(784, 17) → Sigmoid → Dense(17, 10) → Sigmoid``."""
    return fnnet.mlp([784, 17, 10], activation="sigmoid", output="sigmoid")


def main(argv=None):
    """Train, draw the figures, write and return the metrics."""
    p = common.parser(__doc__, NAME)
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs (default {EPOCHS}, {QUICK_EPOCHS} with --quick)")
    p.add_argument("--lr", type=float, default=LR, help=f"learning rate (default {LR})")
    p.add_argument("--batch-size", type=int, default=BATCH, help=f"minibatch size (default {BATCH})")
    args = p.parse_args(argv)
    epochs = args.epochs if args.epochs is not None else (QUICK_EPOCHS if args.quick else EPOCHS)
    if epochs < 1:
        p.error(f"--epochs must be at least 1, got {epochs}")

    (xtr, ytr), (xte, yte), source = common.load_mnist_flat(quick=args.quick)
    ytr_hot, yte_hot = one_hot(ytr, 10, np.float32), one_hot(yte, 10, np.float32)
    model = network()
    print(f"[{NAME}] 784-17-10 sigmoid/sigmoid, binary cross-entropy, SGD lr={args.lr}, "
          f"batch {args.batch_size}, {epochs} epochs on {len(xtr)} images", flush=True)
    params, history = fnnet.fit(model, LOSS, fnnet.optim.sgd(args.lr), (xtr, ytr_hot), epochs=epochs,
                                batch_size=args.batch_size, key=jax.random.PRNGKey(args.seed),
                                validation=(xte, yte_hot), dtype=jnp.float32)
    train_loss, train_acc = fnnet.evaluate(model, LOSS, params, xtr, ytr_hot)
    # fit evaluated the final params on the test set after the last epoch
    test_loss, test_acc = history["val_loss"][-1], history["val_accuracy"][-1]
    probs = model.apply(params, jnp.asarray(xte))

    out = Path(args.out)
    plots.plot_history(history, out / "curves.png",
                       title=f"note 004: 784-17-10 sigmoid + BCE, SGD lr={args.lr}, batch {args.batch_size}")
    plots.plot_confusion(np.asarray(fnnet.metrics.confusion_matrix(probs, yte, 10)),
                         out / "confusion.png", title="test set, 784-17-10 sigmoid + BCE")

    train_seconds = float(np.sum(history["seconds"]))
    metrics = {
        "experiment": NAME,
        "note": "004",
        "quick": args.quick,
        "seed": args.seed,
        "data": source,
        "n_train": len(xtr),
        "n_test": len(xte),
        "config": {"sizes": [784, 17, 10], "activation": "sigmoid", "output": "sigmoid", "loss": LOSS,
                   "targets": "one-hot", "init": "xavier", "optimizer": "sgd", "lr": args.lr,
                   "batch_size": args.batch_size, "epochs": epochs},
        "train_accuracy": float(train_acc),
        "test_accuracy": float(test_acc),
        "train_loss": float(train_loss),
        "test_loss": float(test_loss),
        "train_seconds": train_seconds,
        "compile_seconds": float(history["compile_seconds"]),
        "diverged": history.get("diverged", []),
        "history": {name: history[name] for name in
                    ("epoch", "loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")},
        "figures": ["curves.png", "confusion.png"],
        "headline": {
            "train accuracy": float(train_acc),
            "test accuracy": float(test_acc),
            "test loss (BCE)": float(test_loss),
            "optimizer": f"minibatch SGD, lr {args.lr}, batch {args.batch_size}",
            "epochs": epochs,
            "training seconds": train_seconds,
            "data": f"{source}, {len(xtr)} train / {len(xte)} test",
        },
    }
    common.write_metrics(out, metrics)
    print(common.table([["train", float(train_loss), float(train_acc)],
                        ["test", float(test_loss), float(test_acc)]],
                       ["split", "BCE loss", "accuracy"]))
    print(f"{epochs} epochs in {train_seconds:.1f}s; outputs in {out}")
    return metrics


if __name__ == "__main__":
    main()
