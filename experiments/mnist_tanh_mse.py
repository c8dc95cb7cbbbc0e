"""Note 000 (experiments/NOTES.md), layers as objects, its MNIST network: ``Dense(784, 40) → Tanh →
Dense(40, 10) → Tanh`` with mean squared error on one-hot targets.

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
the 16 per-example gradients), 20 epochs over 55,000 training images, shuffled every epoch; the
other 5,000 are held out at random as the validation set, scored after every epoch, and the 10,000
test images are scored once, at the end. Weights use Xavier/Glorot uniform initialisation (the
note's source draws standard normal weights, which saturate tanh with 784 inputs).

Outputs in ``--out``: ``curves.png`` (loss and accuracy per epoch, training and validation),
``confusion.png`` (test set) and ``metrics.json``.

Usage: ``python -m experiments.mnist_tanh_mse [--quick] [--out DIR] [--seed S]``.
"""

from __future__ import annotations

import fnnet
from experiments import common

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
    return common.run_mnist_classifier(
        argv, name=NAME, note="000", doc=__doc__, model=network(), loss=LOSS,
        loss_label="MSE", description="784-40-10 tanh + MSE",
        config={"sizes": [784, 40, 10], "activation": "tanh", "output": "tanh",
                "targets": "one-hot (0/1)", "init": "xavier"},
        lr=LR, batch_size=BATCH, epochs=EPOCHS, quick_epochs=QUICK_EPOCHS)


if __name__ == "__main__":
    main()
