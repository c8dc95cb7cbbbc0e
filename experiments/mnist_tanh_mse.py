"""Note 000 (layers as objects), its MNIST network: ``Dense(784, 40) → Tanh → Dense(40, 10) → Tanh``
with mean squared error on one-hot targets.

The note's rules, each layer its own forward and backward (columns, as the note writes them)::

    Dense:       Y = W X + B            dE/dW = dE/dY Xᵀ,  dE/dB = dE/dY,  dE/dX = Wᵀ dE/dY
    Activation:  Y = f(X)               dE/dX = dE/dY ⊙ f'(X),   tanh'(x) = 1 − tanh²(x)
    MSE:         E = (1/n) Σ_i (y*_i − y_i)²                dE/dY = (2/n)(Y − Y*)

and the sequential model: forward runs the layers in order, backward runs them in reverse, each
turning the ``dE/dY`` it receives into the ``dE/dX`` it passes on. fnnet uses the same rules with
samples as rows (``dW = dYᵀ X``, ``dX = dY W``) and averages the MSE over the batch as well as the
``n = 10`` outputs. Targets are one-hot rows of 0s and 1s; the predicted class is the argmax of the
10 tanh outputs.

Training: note 000's source updates after every single example with SGD, learning rate 0.1. Here
it is minibatch SGD with the same learning rate 0.1 on minibatches of 16 (the update is the mean of
the 16 per-example gradients), 20 epochs over all 60,000 images, shuffled every epoch. Weights use
Xavier/Glorot uniform initialisation (the note's source draws standard normal weights, which
saturate tanh with 784 inputs).

Outputs in ``--out``: ``curves.png`` (loss and accuracy per epoch), ``confusion.png`` and
``metrics.json``.

Usage: ``python -m experiments.mnist_tanh_mse [--quick] [--out DIR] [--seed S]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: python experiments/mnist_tanh_mse.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import fnnet  # noqa: E402
from experiments import common  # noqa: E402
from fnnet import plots  # noqa: E402
from fnnet.datasets import one_hot  # noqa: E402

NAME = "mnist_tanh_mse"
LOSS = "mse"
LR = 0.1
BATCH = 16
EPOCHS = 20
QUICK_EPOCHS = 3


def network():
    """Note 000's MNIST network: ``Dense(784, 40) → Tanh → Dense(40, 10) → Tanh``."""
    return fnnet.Sequential(fnnet.Dense(784, 40, init="xavier"), fnnet.Tanh(),
                            fnnet.Dense(40, 10, init="xavier"), fnnet.Tanh())


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
    print(f"[{NAME}] 784-40-10 tanh/tanh, MSE on one-hot targets, SGD lr={args.lr}, "
          f"batch {args.batch_size}, {epochs} epochs on {len(xtr)} images", flush=True)
    params, history = fnnet.fit(model, LOSS, fnnet.optim.sgd(args.lr), (xtr, ytr_hot), epochs=epochs,
                                batch_size=args.batch_size, key=jax.random.PRNGKey(args.seed),
                                validation=(xte, yte_hot), dtype=jnp.float32)
    train_loss, train_acc = fnnet.evaluate(model, LOSS, params, xtr, ytr_hot)
    # fit evaluated the final params on the test set after the last epoch
    test_loss, test_acc = history["val_loss"][-1], history["val_accuracy"][-1]
    outputs = model.apply(params, jnp.asarray(xte))

    out = Path(args.out)
    plots.plot_history(history, out / "curves.png",
                       title=f"note 000: 784-40-10 tanh + MSE, SGD lr={args.lr}, batch {args.batch_size}")
    plots.plot_confusion(np.asarray(fnnet.metrics.confusion_matrix(outputs, yte, 10)),
                         out / "confusion.png", title="test set, 784-40-10 tanh + MSE")

    train_seconds = float(np.sum(history["seconds"]))
    metrics = {
        "experiment": NAME,
        "note": "000",
        "quick": args.quick,
        "seed": args.seed,
        "data": source,
        "n_train": len(xtr),
        "n_test": len(xte),
        "config": {"sizes": [784, 40, 10], "activation": "tanh", "output": "tanh", "loss": LOSS,
                   "targets": "one-hot (0/1)", "init": "xavier", "optimizer": "sgd", "lr": args.lr,
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
            "test loss (MSE)": float(test_loss),
            "optimizer": f"minibatch SGD, lr {args.lr}, batch {args.batch_size}",
            "epochs": epochs,
            "training seconds": train_seconds,
            "data": f"{source}, {len(xtr)} train / {len(xte)} test",
        },
    }
    common.write_metrics(out, metrics)
    print(common.table([["train", float(train_loss), float(train_acc)],
                        ["test", float(test_loss), float(test_acc)]],
                       ["split", "MSE", "accuracy"]))
    print(f"{epochs} epochs in {train_seconds:.1f}s; outputs in {out}")
    return metrics


if __name__ == "__main__":
    main()
