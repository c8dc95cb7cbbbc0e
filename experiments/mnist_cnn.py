"""A convolutional network on MNIST (beyond the notes): ``fnnet.cnn()``, every gradient by hand.

``fnnet.cnn()`` (``fnnet/networks.py``) is LeNet-style; the shapes after each stage in brackets::

    Conv2D(1, 32, 3) ReLU MaxPool2D(2)       (26, 26, 32) -> (13, 13, 32)
    Conv2D(32, 64, 3) ReLU MaxPool2D(2)      (11, 11, 64) -> (5, 5, 64)
    Flatten Dropout(0.5)                     (1600,)
    Dense(1600, 128) ReLU Dense(128, 10) Softmax

Every backward is derived by hand in its layer's docstring: the convolution's in ``Conv2D.backward``
(``fnnet/layers/conv.py``; ``dW = X ⋆ dY``, ``dX`` the full convolution of ``dY`` with the
flipped kernel, run as im2col: ``dWmat = Pᵀ·dY``, ``dX = col2im(dY·Wmatᵀ)``; the experiment
``conv_by_hand`` checks every form against ``jax.vjp``), max pooling's in
``fnnet/layers/pooling.py`` (the gradient goes to each window's maximum), flatten's in
``fnnet/layers/reshape.py`` (a reshape back), inverted dropout's in ``fnnet/layers/dropout.py``
(``dX = dY ⊙ M/(1 − p)``), and the dense, ReLU and softmax/cross-entropy rules of the notes.

Training: ``fnnet.fit`` (each epoch one jitted ``lax.scan`` of minibatch steps), Adam 1e-3 with
the learning rate decayed to 0 along a cosine over the run, batch 128, 6 epochs (``--schedule
constant`` keeps it at 1e-3); 5,000 images held out of the 60,000 training images as the
validation set, on which the settings were chosen and the curves are drawn; the 10,000 test
images scored once, at the end.

Outputs in ``--out``: ``curves.png`` (loss and accuracy per epoch), ``confusion.png`` (test set),
``misclassified.png`` (test digits the network gets wrong: prediction, true label in brackets),
``metrics.json``::

    python -m experiments.mnist_cnn --out runs/mnist_cnn [--quick] [--seed 0] [--epochs E]
        [--lr LR] [--batch-size B]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import fnnet
from experiments import common
from fnnet import plots

NAME = "mnist_cnn"
EPOCHS, QUICK_EPOCHS = 6, 1
LR, BATCH, QUICK_BATCH = 1e-3, 128, 32
SCHEDULES, SCHEDULE = ("constant", "cosine"), "cosine"
SHOWN = 40  # misclassified digits drawn


def draw(out, model, run, test, setting):
    """The curves, the confusion matrix and the misclassified test digits; returns how many test
    digits are wrong."""
    state = run["state"]
    probs = common.predict(model, state.params, test[0], state=state.model_state)
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != test[1])
    plots.plot_history(run["history"], out / "curves.png",
                       title=f"fnnet.cnn() on MNIST, {setting} (val: held out of training)")
    plots.plot_confusion(np.asarray(fnnet.metrics.confusion_matrix(probs, test[1], 10)),
                         out / "confusion.png",
                         title=f"test set: {len(test[1]) - len(wrong)} of {len(test[1])} right")
    shown = wrong[:SHOWN]
    plots.plot_digits(test[0][shown], out / "misclassified.png", labels=test[1][shown].tolist(),
                      predictions=pred[shown].tolist(),
                      title=f"the first {len(shown)} of {len(wrong)} misclassified test digits: "
                            f"prediction (true label)")
    return len(wrong)


def parse(argv):
    """The flags: ``(args, epochs, batch size)``."""
    p = common.parser(__doc__, NAME)
    p.add_argument("--lr", type=float, default=LR, help=f"Adam learning rate (default {LR})")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"minibatch size (default {BATCH}, {QUICK_BATCH} with --quick)")
    p.add_argument("--schedule", choices=SCHEDULES, default=SCHEDULE,
                   help=f"learning-rate schedule: constant, or cosine decay to 0 over the run "
                        f"(default {SCHEDULE})")
    args, epochs = common.parse_with_epochs(p, argv, EPOCHS, QUICK_EPOCHS)
    return args, epochs, args.batch_size or (QUICK_BATCH if args.quick else BATCH)


def summary(run, n_wrong, setting, epochs):
    """The README's headline rows."""
    history = run["history"]
    return {
        "test accuracy": run["test_accuracy"],
        "validation accuracy (last epoch)": history["val_accuracy"][-1],
        "training accuracy (last epoch, dropout on)": history["train_accuracy"][-1],
        "misclassified test digits": n_wrong, "optimizer": setting, "epochs": epochs,
        "training seconds (compile excluded)": run["train_seconds"],
        "compile seconds": run["compile_seconds"],
        "examples/s (median epoch)": float(np.median(history["examples_per_second"])),
        "CPU": common.cpu_model(),
    }


def main(argv=None):
    """Train ``fnnet.cnn()``, draw the figures, write and return the metrics."""
    args, epochs, batch = parse(argv)
    train, val, test, source = common.load_mnist_split(
        args.quick, n_quick=600, validation=100 if args.quick else 5000, seed=args.seed,
        images=True)
    model, setting = fnnet.cnn(), f"Adam {args.lr} ({args.schedule}), batch {batch}"
    print(f"[{NAME}] {model!r}: {setting}, {epochs} epochs on {len(train[0])} images", flush=True)
    schedule = (fnnet.optim.cosine_decay(epochs * (len(train[0]) // batch))
                if args.schedule == "cosine" else None)
    run = common.fit_and_test(model, fnnet.optim.adam(args.lr, schedule=schedule), train, val,
                              test, epochs=epochs, batch_size=batch, seed=args.seed)
    out = Path(args.out)
    n_wrong = draw(out, model, run, test, f"{setting}, {epochs} epochs")
    history = run["history"]
    metrics = {
        "experiment": NAME, **common.data_entries(args, source, len(train[0]), len(test[0])),
        "n_validation": len(val[0]),
        "config": {"model": repr(model), "optimizer": "adam", "lr": args.lr,
                   "schedule": args.schedule, "batch_size": batch, "epochs": epochs},
        "train_accuracy": history["train_accuracy"][-1],
        "val_accuracy": history["val_accuracy"][-1],
        "test_accuracy": run["test_accuracy"], "test_loss": run["test_loss"],
        "test_misclassified": n_wrong,
        "train_seconds": run["train_seconds"], "compile_seconds": run["compile_seconds"],
        "examples_per_second": float(np.median(history["examples_per_second"])),
        "cpu": common.cpu_model(), "history": history,
        "figures": ["curves.png", "confusion.png", "misclassified.png"],
        "headline": {**summary(run, n_wrong, setting, epochs),
                     "data": f"{source}, {len(train[0])} train / {len(val[0])} validation / "
                             f"{len(test[0])} test"},
    }
    common.write_metrics(out, metrics)
    print(common.table([[e, loss, acc, v, s] for e, loss, acc, v, s in zip(
        history["epoch"], history["loss"], history["train_accuracy"], history["val_accuracy"],
        history["seconds"])], ["epoch", "train loss", "train acc", "val acc", "seconds"]))
    print(f"test accuracy {run['test_accuracy']:.2%} ({n_wrong} wrong) after {epochs} epochs, "
          f"{run['train_seconds']:.0f} s of training on {common.cpu_model()}; outputs in {out}")
    return metrics


if __name__ == "__main__":
    main()
