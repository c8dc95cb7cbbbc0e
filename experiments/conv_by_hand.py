"""The convolution's backward by hand (beyond the notes): the correlation/convolution identities
worked in code, every form against ``jax.vjp``, then a CNN on MNIST and what it learned.

The layer is ``fnnet.Conv2D`` (``fnnet/layers/conv.py``, derivation in ``Conv2D.backward``'s
docstring). Images NHWC, kernels ``W`` of shape ``(kh, kw, C, O)``, ``Xp`` the padded input,
stride ``s``; the forward is a cross-correlation, as in every deep-learning library::

    Y[n,i,j,o] = b[o] + Σ_{p,q,c} Xp[n, i·s+p, j·s+q, c] · W[p,q,c,o]

and the chain rule, summed over every ``Y[n,i,j,o]``, gives::

    db[o]       = Σ_{n,i,j} dY[n,i,j,o]
    dW[p,q,c,o] = Σ_{n,i,j} Xp[n, i·s+p, j·s+q, c] · dY[n,i,j,o]      dW = X ⋆ dY (dY dilated by s)
    dXp         = full convolution of dY (dilated by s) with W         dX = dY ∗ W, i.e. the full
                  flipped in both spatial axes, channels swapped        correlation with rot180(W)

In the im2col form, ``P[(n,i,j), (p,q,c)] = Xp[n, i·s+p, j·s+q, c]`` and ``Wmat = W.reshape(kh·kw·C,
O)``: ``Y = P·Wmat + b``, ``dWmat = Pᵀ·dY``, ``dX = col2im(dY·Wmatᵀ)``.

1. Agreement (float64, random small problems over several kernels, strides and paddings): the
   forward by numpy loops (``conv2d_naive``), im2col (``Conv2D.forward``) and ``lax.conv``
   (``Conv2D.apply``); ``dW``, ``db``, ``dX`` by the loops (``conv2d_backward_naive``), the
   correlation/convolution form (``conv2d_backward_correlation``) and im2col (``Conv2D.backward``,
   what training runs), each against ``jax.vjp`` of ``Conv2D.apply``: ``max|a − b| / max|b|``.
   (JAX transposes ``lax.conv`` into exactly these two convolutions, so the correlation form
   usually agrees with ``jax.vjp`` to the last bit; the loops and im2col sum in another order.)
2. ``fnnet.cnn()`` (3×3 convs 1→32 and 32→64, ReLU, 2×2 max pools, dropout, dense 1600→128→10)
   trained on MNIST with Adam (validation held out of the training set; the test set scored
   once): the first layer's 32 kernels before and after training, and one test digit's feature
   maps after each stage's convolution and ReLU.
3. Speed: training steps of that CNN inside one jitted ``lax.scan`` (how ``fit`` runs an epoch),
   the hand-derived im2col backward against ``jax.grad`` of the ``lax.conv``/``reduce_window``
   apply, on the CPU; median examples/s over interleaved rounds.

Outputs in ``--out``: ``filters.png``, ``feature_maps.png``, ``speed.png``, ``metrics.json``::

    python -m experiments.conv_by_hand --out runs/conv_by_hand [--quick] [--seed 0]
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

import fnnet
from experiments import common
from fnnet.bench.harness import median, paired
from fnnet.layers.conv import ConvParams
from fnnet.layers.conv_forms import (
    conv2d_backward_correlation,
    conv2d_backward_naive,
    conv2d_naive,
)
from fnnet.plots import save_figure

NAME = "conv_by_hand"
TOLERANCE = 1e-10  # float64
# (height, width, kernel, stride, padding) of the agreement checks; batch 2, 3 -> 4 channels
CASES = ((6, 6, 3, 1, "valid"), (6, 6, 3, 1, "same"), (7, 7, 3, 2, "valid"), (8, 8, 3, 2, "same"),
         (7, 6, (3, 2), (2, 1), 1), (9, 9, 5, 3, 2))
QUICK_CASES = (1, 3, 4)  # stride 1 "same"; stride 2 "same" (uneven padding); kernel (3, 2), s (2, 1)
FORMS = ("naive loops", "correlation/convolution", "im2col (Conv2D.backward)")
EPOCHS, QUICK_EPOCHS = 2, 1
LR, BATCH, QUICK_BATCH = 1e-3, 128, 32
# (batch, steps per scan, rounds) of the speed comparison
TIMING, QUICK_TIMING = (128, 3, 3), (8, 2, 2)


def describe(case):
    h, w, k, s, pad = case
    return f"{h}×{w}, k={k}, s={s}, pad={pad}"


def agreement(case, rng):
    """One problem's errors: ``{form: {"Y", "dW", "db", "dX"}}`` against ``Conv2D.apply`` and
    ``jax.vjp`` of it (``"Y"`` is ``None`` for the form that has no forward of its own)."""
    h, w, kernel, stride, padding = case
    layer = fnnet.Conv2D(3, 4, kernel, stride=stride, padding=padding)
    W = jnp.asarray(rng.normal(size=(*layer.kernel_size, 3, 4)))
    params = ConvParams(W, jnp.asarray(rng.normal(size=4)))
    x = jnp.asarray(rng.normal(size=(2, h, w, 3)))
    dy = jnp.asarray(rng.normal(size=jax.eval_shape(layer.apply, params, x).shape))

    @jax.jit  # one compilation per problem, not one per small operation
    def compiled(params, x, dy):
        y_ref, vjp = jax.vjp(layer.apply, params, x)
        y_im2col, cache = layer.forward(params, x)
        return (y_ref, vjp(dy), y_im2col, layer.backward(params, cache, dy),
                conv2d_backward_correlation(x, params.W, dy, stride, padding))

    y_ref, ref, y_im2col, im2col, correlation = compiled(params, x, dy)
    outputs = {
        FORMS[0]: (conv2d_naive(x, W, params.b, stride, padding),
                   conv2d_backward_naive(x, W, dy, stride, padding)),
        FORMS[1]: (None, correlation),
        FORMS[2]: (y_im2col, im2col),
    }
    return {form: {"Y": None if y is None else common.rel_error(y, y_ref),
                   "dW": common.rel_error(dp.W, ref[0].W), "db": common.rel_error(dp.b, ref[0].b),
                   "dX": common.rel_error(dx, ref[1])}
            for form, (y, (dp, dx)) in outputs.items()}


def agreement_table(seed, cases=CASES):
    """Every case's errors in float64: ``(rows, worst)``."""
    rng = np.random.default_rng(seed)
    rows = []
    with jax.enable_x64(True):
        for case in cases:
            for form, errors in agreement(case, rng).items():
                rows.append({"case": describe(case), "form": form, **errors})
    worst = max(r[k] for r in rows for k in ("Y", "dW", "db", "dX") if r[k] is not None)
    return rows, worst


def scan_runner(model, optimizer, grads, x, y, steps):
    """A jitted ``(state, key) -> params``: ``steps`` training steps (``fnnet.train_step``, over
    a ``TrainState``) of ``model`` on the batch ``(x, y)`` inside one ``lax.scan``, with the
    ``grads`` backward."""
    step = fnnet.train_step(model, "cross-entropy", optimizer, grads=grads)

    @jax.jit
    def run(state, key):
        def body(state, i):
            return step(state, x, y, jax.random.fold_in(key, i))[0], None

        return jax.lax.scan(body, state, jnp.arange(steps))[0].params

    return run


def speed(model, images, labels, batch, steps, rounds, seed):
    """Examples per second of the manual and the autodiff step inside ``lax.scan`` (float32)."""
    optimizer = fnnet.optim.sgd(0.01)
    state = fnnet.TrainState.create(model, optimizer, jax.random.PRNGKey(seed))
    x, y = fnnet.to_device(images[:batch], labels[:batch], jnp.float32)
    fns = {g: scan_runner(model, optimizer, g, x, y, steps) for g in ("manual", "autodiff")}
    times = common.interleaved_times(fns, state, jax.random.PRNGKey(seed), rounds=rounds)
    result = {"batch": batch, "steps_per_scan": steps, "rounds": rounds, "cpu": common.cpu_model(),
              "device": str(jax.devices()[0]), "seconds": times,
              "manual_over_autodiff": paired(times["manual"], times["autodiff"])}
    for g, t in times.items():
        result[f"{g}_examples_per_second"] = batch * steps / median(t)
    return result


def image_grid(fig, images, columns, title, symmetric=False, colorbar=True, top=None):
    """``images`` ``(K, h, w)`` in a grid on the (sub)figure ``fig``: one colour scale up to ``top``
    (the largest magnitude by default), symmetric about 0 (red positive, blue negative) for
    weights, grey for activations."""
    rows = -(-len(images) // columns)
    axes = np.atleast_1d(fig.subplots(rows, columns, gridspec_kw={"wspace": 0.12, "hspace": 0.12}))
    top = top or float(np.max(np.abs(images))) or 1.0
    style = ({"cmap": "RdBu_r", "vmin": -top, "vmax": top} if symmetric
             else {"cmap": "gray_r", "vmin": 0, "vmax": top})
    for index, ax in enumerate(axes.ravel()):
        ax.set(xticks=[], yticks=[])
        if index < len(images):
            shown = ax.imshow(images[index], **style)
        else:
            ax.axis("off")
    if colorbar:
        fig.colorbar(shown, ax=list(axes.ravel()), fraction=0.02, pad=0.01)
    fig.suptitle(title, fontsize=10)


def plot_filters(path, before, after):
    """The first conv layer's kernels ``(3, 3, 1, 32)`` at initialisation, after training (one
    colour scale) and the change training made (its own scale)."""
    before, after = (np.moveaxis(np.asarray(w)[:, :, 0], -1, 0) for w in (before, after))
    top = float(max(np.max(np.abs(before)), np.max(np.abs(after))))
    fig = Figure(figsize=(14, 3.2))
    panels = fig.subfigures(1, 3, wspace=0.04)
    for sub, images, title, scale in (
            (panels[0], before, "first-layer 3×3 kernels at initialisation (He)", top),
            (panels[1], after, "the same kernels after training (same scale)", top),
            (panels[2], after - before, "the change: after − before (own scale)", None)):
        image_grid(sub, images, 8, title, symmetric=True, top=scale)
    return save_figure(fig, path)


def plot_feature_maps(path, model, params, digit, label):
    """One digit, then its feature maps after each stage's Conv2D and ReLU (before the pool)."""
    stages = [i for i, layer in enumerate(model.layers) if isinstance(layer, fnnet.ReLU)][:2]
    maps = [np.asarray(fnnet.Sequential(*model.layers[:i + 1]).apply(params[:i + 1], digit))[0]
            for i in stages]
    fig = Figure(figsize=(13, 11))
    top, *rows = fig.subfigures(1 + len(maps), 1, height_ratios=[1.4, 3.8, 2.2][:1 + len(maps)])
    image_grid(top, digit[..., 0], 1, f"input: a test digit (label {label})", colorbar=False)
    for k, (sub, m) in enumerate(zip(rows, maps), start=1):
        image_grid(sub, np.moveaxis(m, -1, 0), 16 if m.shape[-1] > 32 else 8,
                   f"stage {k}: {m.shape[-1]} feature maps of {m.shape[0]}×{m.shape[1]} after "
                   f"{model.layers[stages[k - 1] - 1]!r} and ReLU")
    return save_figure(fig, path)


def plot_speed(path, result):
    fig, ax = common.subplots(figsize=(6.5, 4))
    names = ["im2col, hand-derived backward", "jax.grad of lax.conv apply"]
    rates = [result["manual_examples_per_second"], result["autodiff_examples_per_second"]]
    ax.bar(names, rates, color=("C0", "C3"))
    for i, r in enumerate(rates):
        ax.annotate(f"{r:,.0f}", (i, r), ha="center", va="bottom")
    ax.set(ylabel="examples/s (median)", yscale="log",
           title=f"fnnet.cnn() training steps inside lax.scan: batch {result['batch']}, "
                 f"{result['steps_per_scan']} steps a scan,\nmedian of {result['rounds']} rounds, "
                 f"{result['cpu']}: manual ×{result['manual_over_autodiff']:.1f} faster")
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def main(argv=None):
    """Run the three parts; return the metrics written to ``OUT/metrics.json``."""
    p = common.parser(__doc__.splitlines()[0], NAME)
    args, epochs = common.parse_with_epochs(p, argv, EPOCHS, QUICK_EPOCHS)
    out = Path(args.out)
    rows, worst = agreement_table(args.seed, [CASES[i] for i in QUICK_CASES] if args.quick else CASES)

    train, val, test, source = common.load_mnist_split(args.quick, n_quick=600, validation=(
        100 if args.quick else 5000), seed=args.seed, images=True)
    model, batch = fnnet.cnn(), QUICK_BATCH if args.quick else BATCH
    print(f"[{NAME}] {model!r}: Adam {LR}, batch {batch}, {epochs} epochs on {len(train[0])} "
          f"images", flush=True)
    run = common.fit_and_test(model, fnnet.optim.adam(LR), train, val, test, epochs=epochs,
                              batch_size=batch, seed=args.seed)
    params = run["state"].params
    initial = model.init(jax.random.split(jax.random.PRNGKey(args.seed))[0])  # as fit drew them
    plot_filters(out / "filters.png", initial[0].W, params[0].W)
    plot_feature_maps(out / "feature_maps.png", model, params, test[0][:1], int(test[1][0]))

    timing = speed(model, *train, *(QUICK_TIMING if args.quick else TIMING), args.seed)
    plot_speed(out / "speed.png", timing)

    metrics = {
        "experiment": NAME, **common.data_entries(args, source, len(train[0]), len(test[0])),
        "n_validation": len(val[0]), "tolerance": TOLERANCE,
        "agreement": rows, "max_rel_error": worst, "all_agree": worst <= TOLERANCE,
        "config": {"model": repr(model), "optimizer": "adam", "lr": LR, "batch_size": batch,
                   "epochs": epochs},
        "val_accuracy": run["history"]["val_accuracy"][-1], "test_accuracy": run["test_accuracy"],
        "train_seconds": run["train_seconds"], "history": run["history"], "speed": timing,
        "figures": ["filters.png", "feature_maps.png", "speed.png"],
        "headline": {
            "largest relative error, any form (float64)": worst,
            "validation accuracy": run["history"]["val_accuracy"][-1],
            "test accuracy": run["test_accuracy"], "epochs": epochs,
            "im2col step in lax.scan, examples/s": timing["manual_examples_per_second"],
            "jax.grad of lax.conv in lax.scan, examples/s": timing["autodiff_examples_per_second"],
            "manual / autodiff speed": timing["manual_over_autodiff"], "CPU": timing["cpu"],
            "data": f"{source}, {len(train[0])} train / {len(val[0])} validation / "
                    f"{len(test[0])} test",
        },
        "tables": {"relative error against Conv2D.apply and jax.vjp (float64)": {
            "headers": ["case", "form", "Y", "dW", "db", "dX"],
            "rows": [[r["case"], r["form"], r["Y"], r["dW"], r["db"], r["dX"]] for r in rows]}},
    }
    common.write_metrics(out, metrics)
    print(common.table([[r["case"], r["form"], r["Y"], r["dW"], r["db"], r["dX"]] for r in rows],
                       ["case", "form", "Y", "dW", "db", "dX"]))
    print(common.table([["im2col (manual)", timing["manual_examples_per_second"]],
                        ["jax.grad of lax.conv", timing["autodiff_examples_per_second"]]],
                       ["step in lax.scan", "examples/s"]))
    print(f"largest relative error {worst:.2e} (≤ {TOLERANCE:g}: {worst <= TOLERANCE}); manual "
          f"×{timing['manual_over_autodiff']:.1f} autodiff on {timing['cpu']}; test accuracy "
          f"{run['test_accuracy']:.2%} after {epochs} epochs; outputs in {out}")
    return metrics


if __name__ == "__main__":
    main()
