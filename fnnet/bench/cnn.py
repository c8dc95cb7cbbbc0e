"""W4: ``fnnet.cnn()`` on MNIST images (NHWC ``(N, 28, 28, 1)``), minibatch 128, momentum (lr 0.05,
β 0.9), float32: fnnet's hand-derived backward against ``jax.grad`` of ``apply`` and against the
same CNN in PyTorch eager, and the time to 99% test accuracy, compile included.

Implementations, timed in interleaved rounds as W1–W3 are, each unit a fixed number of minibatch
steps of the epoch program ``fnnet.fit`` runs (``fnnet.EpochRunner``'s, over the first
``steps × batch`` images, so each unit also shuffles, gathers its batches and draws its dropout
masks inside the scan, as an epoch does):

    fnnet manual     the im2col forward and the hand-derived backward (``Conv2D.forward/backward``)
    fnnet autodiff   the same program with ``grads="autodiff"``: ``jax.grad`` of ``apply``, i.e. of
                     ``lax.conv_general_dilated`` and ``lax.reduce_window``, inside the same
                     ``lax.scan``. On a CPU it runs tens of times slower and takes about a minute
                     to compile, so its unit is ``autodiff_steps`` steps (4) instead of ``steps``
                     (100)
    torch eager      the same layers in ``torch.nn`` (``fnnet.bench.baselines.torch_cnn_runner``,
                     NCHW), the same optimizer, dropout on; skipped when torch is missing

Speeds and ratios are per example (the paired ratios are of seconds per example within a round),
so the units' different lengths do not matter.

FLOPs of one training step (``cnn_step_flops``), the matrix products and convolutions only (ReLU,
pooling, dropout, softmax, biases and the update are ``O(activations)`` and left out)::

    Conv2D (OH × OW outputs)   forward 2·B·OH·OW·kh·kw·Cin·Cout, the same again for dW and for dX
    Dense (n_in → n_out)       forward 2·B·n_in·n_out, the same again for dW and for dX
    the first layer's dX is not counted: no one needs the images' gradient, and XLA drops it

For ``fnnet.cnn()`` that is 15,396,864 FLOPs per example, 1.97 GFLOP per step of 128.

Time to accuracy (``time_to_accuracy``): ``fnnet.fit`` (manual gradients) trains ``fnnet.cnn()``
with the recipe of ``fnnet train --model cnn`` (``fnnet.cli.train.CNN_DEFAULTS``: momentum lr 0.1
halved every epoch, batch 64) on the 60,000 MNIST training images, epoch by epoch, and scores the
10,000 test images after each epoch; the figure is the wall time from the call of ``fit`` (data to
the device, checks, compiling the epoch and the scoring programs, all included; reading the files
from disk not) to the end of the first epoch whose test accuracy is ≥ 99.0%, or "not reached in E
epochs". This is a speed benchmark: the test set serves only as the stopping criterion of the
timing, never to choose anything. Needs the real MNIST (``FNNET_DATA_DIR``; skipped with a message
otherwise); off in ``--quick``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import fnnet
from fnnet import datasets

from ..cli.model_config import optimizer_of
from ..cli.train import CNN_DEFAULTS
from . import baselines
from .harness import DESCRIPTION, model_and_optimizer
from .workload import fnnet_runner, roof_probes, time_implementations

IMAGE = (28, 28, 1)


def cnn_step_flops(model, input_shape, batch):
    """``{"total", "layers"}``: the FLOPs of one training step of the ``Sequential`` ``model`` on
    ``batch`` images of ``input_shape`` (``(H, W, C)``), products only (the module docstring),
    and each Conv2D's and Dense's ``forward``, ``dW`` and ``dX`` terms. Shapes by
    ``jax.eval_shape``, so nothing is computed."""
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    x = jax.ShapeDtypeStruct((batch, *input_shape), jnp.float32)
    layers, first = [], True
    for layer, p in zip(model.layers, params):
        y = jax.eval_shape(lambda p, x, layer=layer: layer.apply(p, x), p, x)
        if isinstance(layer, fnnet.Conv2D):
            kh, kw = layer.kernel_size
            forward = 2 * batch * y.shape[1] * y.shape[2] * kh * kw * layer.in_channels * layer.out_channels
        elif isinstance(layer, fnnet.Dense):
            forward = 2 * batch * layer.n_in * layer.n_out
        else:
            forward = 0
        if forward:
            layers.append({"layer": repr(layer), "forward": forward, "dW": forward,
                           "dX": 0 if first else forward})
            first = False
        x = y
    return {"total": sum(r["forward"] + r["dW"] + r["dX"] for r in layers), "layers": layers}


def images(x):
    """``(N, 784)`` rows as NHWC images ``(N, 28, 28, 1)`` (a view: no copy, alignment kept)."""
    return np.asarray(x).reshape(-1, *IMAGE)


def measure_cnn(name, cfg, x, y, repeats, seed, threads_setting, log, matmul_n, bf16=True):
    """W4: every implementation timed round-robin with the matmul roof (``fnnet.bench.workload``'s
    rounds), on the first ``cfg["steps"] × batch`` images of ``x`` (``(N, 784)`` rows); with
    ``bf16`` also fnnet's manual program under ``precision="bf16"`` and PyTorch under autocast
    (not ``jax.grad`` under bf16: its convolutions take minutes to compile on a CPU)."""
    imgs, batch = images(x), cfg["batch"]
    n, n_autodiff = cfg["steps"] * batch, cfg["autodiff_steps"] * batch
    if len(imgs) < n:
        raise ValueError(f"{name}: {cfg['steps']} steps of {batch} need {n} images, got {len(imgs)}")
    makers = {
        "fnnet manual": lambda: fnnet_runner(cfg, imgs[:n], y[:n], seed, "manual"),
        "fnnet autodiff": lambda: fnnet_runner(cfg, imgs[:n_autodiff], y[:n_autodiff], seed,
                                               "autodiff"),
        "torch eager": lambda: baselines.torch_cnn_runner(cfg, imgs[:n], y[:n], seed),
    }
    examples = {"fnnet manual": n, "fnnet autodiff": n_autodiff, "torch eager": n}
    if bf16:
        makers["fnnet manual bf16"] = lambda: fnnet_runner(cfg, imgs[:n], y[:n], seed, "manual",
                                                           precision="bf16")
        makers["torch autocast bf16"] = lambda: baselines.torch_cnn_runner(
            cfg, imgs[:n], y[:n], seed, autocast="bf16")
        examples.update({"fnnet manual bf16": n, "torch autocast bf16": n})
    model = model_and_optimizer(cfg)[0]
    count = cnn_step_flops(model, IMAGE, batch)
    flops = {impl: count["total"] * e // batch for impl, e in examples.items()}
    out, _, _ = time_implementations(
        name, makers, examples, flops, lambda: roof_probes(imgs, False, matmul_n, 0), repeats,
        threads_setting, log, max(cfg["steps"] // 10, 1))
    arguments = ", ".join(f"{k}={v}" for k, v in cfg["cnn"].items())
    return {"description": DESCRIPTION[name], "model": repr(model), "cnn_arguments": arguments,
            "label": "fnnet.cnn()" if not arguments else "small cnn",
            "batch": batch, "examples": n, "autodiff_examples": n_autodiff,
            "optimizer": f"momentum lr {cfg['lr']:g} beta {cfg['momentum']:g}",
            "steps_per_unit": cfg["steps"], "autodiff_steps_per_unit": cfg["autodiff_steps"],
            "flops_per_step": count["total"], "flops_per_example": count["total"] // batch,
            "flop_layers": count["layers"], "flops_per_unit": flops["fnnet manual"],
            "unit": f"{cfg['steps']} steps", **out}


# ---------------------------------------------------------------------------------------------
# Time to accuracy


class _Reached(Exception):
    """Raised by the epoch callback to end ``fit`` at the first epoch that meets the target."""


def accuracy_data(acc):
    """``((x, y), (x_test, y_test))``: MNIST's training and test sets as NHWC images (only the
    first ``acc["train"]`` and ``acc["test"]`` of each where given), or ``None`` when MNIST cannot
    be found without downloading."""
    try:
        (x, y), (xt, yt) = datasets.load_mnist(download=False)
    except (FileNotFoundError, OSError, ValueError):
        return None
    train = datasets.prepare(x[:acc.get("train")], y[:acc.get("train")])
    test = datasets.prepare(xt[:acc.get("test")], yt[:acc.get("test")])
    return (images(train[0]), train[1]), (images(test[0]), test[1])


def time_to_accuracy(cfg, seed, log):
    """Train as the module docstring says until the test accuracy reaches ``cfg["accuracy"]
    ["target"]`` or ``["epochs"]`` epochs have run; returns the figure and every epoch's."""
    acc = cfg["accuracy"]
    if acc is None:
        return {"skipped": "off in --quick (the figure needs the whole of MNIST)"}
    data = accuracy_data(acc)
    if data is None:
        why = "MNIST not found (set FNNET_DATA_DIR to a folder holding mnist/)"
        log(f"  W4 time to accuracy: skipped, {why}")
        return {"skipped": why}
    train, test = data
    model, batch = model_and_optimizer(cfg)[0], CNN_DEFAULTS["batch_size"]
    optimizer = optimizer_of(CNN_DEFAULTS, len(train[0]) // batch)
    out = {"target": acc["target"], "max_epochs": acc["epochs"], "data": "mnist",
           "train_examples": len(train[0]), "test_examples": len(test[0]),
           "subset": "train" in acc or "test" in acc, "model": repr(model), "batch": batch,
           "optimizer": (f"{CNN_DEFAULTS['optimizer']} lr {CNN_DEFAULTS['lr']:g} x"
                         f"{CNN_DEFAULTS['lr_decay']:g} per epoch (fnnet train --model cnn's)"),
           "grads": "manual", "reached": False, "seconds": None, "epoch": None, "epochs": []}
    log(f"  W4 time to {100 * acc['target']:g}% test accuracy: fnnet.fit on {len(train[0])} "
        f"MNIST images, at most {acc['epochs']} epoch(s) ...")
    start = time.perf_counter()

    def after_epoch(record, state, history):
        elapsed = time.perf_counter() - start
        out["epochs"].append({"epoch": record.epoch, "seconds_since_start": elapsed,
                              "train_seconds": record.seconds, "train_loss": float(record.loss),
                              "test_accuracy": float(record.val_accuracy)})
        log(f"    epoch {record.epoch}: {elapsed:.1f} s since the start, test accuracy "
            f"{100 * record.val_accuracy:.2f}%")
        if record.val_accuracy >= acc["target"]:
            out.update(reached=True, seconds=elapsed, epoch=record.epoch)
            raise _Reached

    try:
        fnnet.fit(model, "cross-entropy", optimizer, train, epochs=acc["epochs"],
                  batch_size=batch, key=jax.random.PRNGKey(seed), validation=test,
                  progress=False, callbacks=[after_epoch])
    except _Reached:
        pass
    if out["epochs"]:
        first = out["epochs"][0]
        out["before_first_epoch_seconds"] = first["seconds_since_start"] - first["train_seconds"]
    return out
