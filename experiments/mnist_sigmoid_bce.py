"""Note 004 (experiments/NOTES.md), vectorized equations: a 784-17-10 network with sigmoid hidden
and output layers and binary cross-entropy on one-hot targets, trained on MNIST.

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
outputs against the label. 5,000 of the 60,000 training images are held out at random as the
validation set, scored after every epoch; the 10,000 test images are scored once, at the end.

Outputs in ``--out``: ``curves.png`` (loss and accuracy per epoch, training and validation),
``confusion.png`` (test set) and ``metrics.json``.

Usage: ``python -m experiments.mnist_sigmoid_bce [--quick] [--out DIR] [--seed S]``.
"""

from __future__ import annotations

import fnnet
from experiments import common

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
    return common.run_mnist_classifier(
        argv, name=NAME, note="004", doc=__doc__, model=network(), loss=LOSS,
        loss_label="BCE loss", description="784-17-10 sigmoid + BCE",
        config={"sizes": [784, 17, 10], "activation": "sigmoid", "output": "sigmoid",
                "targets": "one-hot", "init": "xavier"},
        lr=LR, batch_size=BATCH, epochs=EPOCHS, quick_epochs=QUICK_EPOCHS)


if __name__ == "__main__":
    main()
