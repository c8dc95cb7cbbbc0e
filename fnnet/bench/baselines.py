"""The CPU baselines the benchmark sets fnnet against: the notes' equations in plain numpy, and
PyTorch eager (an optional import: without torch its runner is skipped with a message).

Each ``*_runner(cfg, x, y, seed)`` sets one up (``torch_cnn_runner``: W4's CNN on NHWC images;
``torch_lstm_runner``: W5's character LSTM on windows of ids), runs a warm-up and returns ``(unit, info)``:
``unit()`` runs one timed unit, one iteration for full batch or one epoch of minibatch SGD (a fresh
permutation every epoch, the last partial batch dropped as fnnet does), and returns once its
result is ready; ``info["last_loss"]`` holds the last step's loss.
"""

from __future__ import annotations

import numpy as np

import fnnet


def loop_runner(n, batch, full_step, batch_step, permutation):
    """The skeleton both baselines share: ``(unit, info)`` for ``n`` examples.

    Full batch (``batch`` ``None``): ``unit()`` is one ``full_step()``. Minibatches: ``unit(steps)``
    draws ``permutation(n)`` and runs ``batch_step(idx)`` over its first ``steps`` batches of
    ``batch`` (default: a whole epoch, ``n // batch``). Both steps return the loss. The warm-up is
    one full-batch step, or a tenth of an epoch.
    """
    info = {}
    if batch is None:
        def unit():
            info["last_loss"] = float(full_step())

        unit()
        return unit, info
    epoch_steps = n // batch

    def unit(steps=epoch_steps):
        order = permutation(n)
        for i in range(steps):
            loss = batch_step(order[i * batch:(i + 1) * batch])
        info["last_loss"] = float(loss)

    unit(max(epoch_steps // 10, 1))
    return unit, info


def numpy_init(sizes, rng):
    """He-normal weights ``W_l`` of shape ``(n_l, n_{l-1})`` and zero biases, float32."""
    return [[(rng.standard_normal((b, a)) * np.sqrt(2.0 / a)).astype(np.float32),
             np.zeros(b, np.float32)] for a, b in zip(sizes[:-1], sizes[1:])]


def numpy_step(params, x, y_onehot, lr):
    """One gradient-descent step in plain numpy, the notes' equations with samples as rows.

    Forward, note 004 (experiments/NOTES.md): ``Z_l = A_{l-1} W_lᵀ + b_l``, ``A_l = ReLU(Z_l)``,
    softmax at the output. Backward, note 002: ``dZ_L = (A_L − Y)/B``; for every layer
    ``dW_l = dZ_lᵀ A_{l-1}``, ``db_l = Σ_n dZ_l``; ``dZ_{l-1} = (dZ_l W_l) ⊙ [Z_{l-1} > 0]``.
    Update ``W −= α dW``. Returns the cross-entropy ``−(1/B) Σ Y ⊙ log A_L`` (note 003),
    computed from the logits.
    """
    acts, zs = [x], []
    for i, (W, b) in enumerate(params):
        z = acts[-1] @ W.T + b
        zs.append(z)
        if i < len(params) - 1:
            acts.append(np.maximum(z, 0))
    z = zs[-1]
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    batch = len(x)
    loss = -float(np.sum(y_onehot * (shifted - np.log(s)))) / batch
    dz = (e / s - y_onehot) / np.float32(batch)
    for i in reversed(range(len(params))):
        W, b = params[i]
        dW, db = dz.T @ acts[i], dz.sum(axis=0)
        if i > 0:
            dz = (dz @ W) * (zs[i - 1] > 0)
        params[i][0] = W - lr * dW
        params[i][1] = b - lr * db
    return loss


def numpy_runner(cfg, x, y, seed):
    """Plain numpy (``numpy_step``), the permutations drawn from ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    params = numpy_init(cfg["sizes"], rng)
    onehot = np.eye(cfg["sizes"][-1], dtype=np.float32)[y]
    lr = np.float32(cfg["lr"])
    return loop_runner(len(x), cfg["batch"], lambda: numpy_step(params, x, onehot, lr),
                       lambda idx: numpy_step(params, x[idx], onehot[idx], lr), rng.permutation)


def torch_loop(model, opt, x, y, batch, autocast=None):
    """The textbook PyTorch loop over ``model`` and ``opt``: ``model(xb)``, ``F.cross_entropy`` on
    the logits, ``backward()``, ``opt.step()`` (``loop_runner``'s ``(unit, info)``, full batch when
    ``batch`` is ``None``). No per-step loss or accuracy bookkeeping (fnnet keeps both), so the
    comparison leans, if anything, in PyTorch's favour. ``autocast`` (``torch.bfloat16``): the
    forward and loss under ``torch.autocast("cpu", dtype=autocast)``, PyTorch's mixed
    precision (bfloat16 products, float32 master weights), the backward outside it as its
    documentation says."""
    import contextlib

    import torch

    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, np.int64))

    def context():
        return (contextlib.nullcontext() if autocast is None
                else torch.autocast("cpu", dtype=autocast))

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        with context():
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss.detach()

    return loop_runner(len(x), batch, lambda: step(xt, yt),
                       lambda idx: step(xt[idx], yt[idx]), torch.randperm)


def torch_runner(cfg, x, y, seed, autocast=None):
    """PyTorch eager on the CPU: the MLP of ``cfg["sizes"]`` (``torch.nn.Linear`` and ReLU),
    plain SGD, ``torch_loop`` (``autocast``: its mixed-precision dtype)."""
    import torch

    torch.manual_seed(seed)
    sizes, layers = cfg["sizes"], []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
    return torch_loop(model, opt, x, y, cfg["batch"], autocast)


def torch_autocast_runner(cfg, x, y, seed):
    """``torch_runner`` under ``torch.autocast("cpu", dtype=torch.bfloat16)``."""
    import torch

    return torch_runner(cfg, x, y, seed, autocast=torch.bfloat16)


def torch_layers(model):
    """The ``torch.nn`` layers of an fnnet ``Sequential`` of Conv2D (valid padding), ReLU,
    MaxPool2D, Flatten, Dropout and Dense, in order; the final Softmax left out (PyTorch's
    cross-entropy takes the logits, as fnnet's fused softmax/cross-entropy does)."""
    import torch

    nn, out = torch.nn, []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D" and layer.padding == "valid":
            out.append(nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                 layer.stride))
        elif kind in ("ReLU", "Flatten"):
            out.append(getattr(nn, kind)())
        elif kind == "MaxPool2D":
            out.append(nn.MaxPool2d(layer.window, layer.stride))
        elif kind == "Dropout":
            out.append(nn.Dropout(layer.rate))
        elif kind == "Dense":
            out.append(nn.Linear(layer.n_in, layer.n_out))
        elif kind != "Softmax" or layer is not model.layers[-1]:
            raise ValueError(f"torch_layers: no PyTorch counterpart for {layer!r} here")
    return out


def torch_cnn_runner(cfg, x, y, seed, autocast=None):
    """PyTorch eager on the CPU: W4's CNN (``torch_layers`` of ``fnnet.cnn(**cfg["cnn"])``, in
    training mode: dropout on), momentum SGD as fnnet's (``lr``, ``momentum``; PyTorch's default
    init, not fnnet's He: this times the step only), ``torch_loop``. The NHWC images ``x`` are
    turned into PyTorch's own NCHW layout once, before any timing. ``autocast="bf16"``: under
    ``torch.autocast("cpu", dtype=torch.bfloat16)``."""
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(*torch_layers(fnnet.cnn(**cfg["cnn"]))).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    return torch_loop(model, opt, np.asarray(x).transpose(0, 3, 1, 2), y, cfg["batch"],
                      torch.bfloat16 if autocast == "bf16" else None)


def torch_lstm_runner(cfg, x, y, seed, autocast=None):
    """PyTorch eager on the CPU: W5's character LSTM (``nn.Embedding``, a one-layer
    ``nn.LSTM(batch_first=True)``, ``nn.Linear`` to the vocabulary; PyTorch's own initialisation:
    this times the step only), cross-entropy over every token, ``clip_grad_norm_`` to
    ``cfg["clip"]`` and ``torch.optim.Adam(lr)`` (fnnet's Adam: the same betas and eps), on the
    ``(N, T)`` id windows ``x`` and next ids ``y``: ``loop_runner``'s ``(unit, info)``. No per-step
    bookkeeping (fnnet keeps the loss and accuracy). ``autocast="bf16"``: the forward and loss
    under ``torch.autocast("cpu", dtype=torch.bfloat16)``."""
    import contextlib

    import torch

    torch.manual_seed(seed)
    arch = cfg["lstm"]
    nn, vocab = torch.nn, arch["vocab_size"]

    class CharLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, arch["dim"])
            self.lstm = nn.LSTM(arch["dim"], arch["hidden"], batch_first=True)
            self.head = nn.Linear(arch["hidden"], vocab)

        def forward(self, ids):
            return self.head(self.lstm(self.embed(ids))[0])

    model = CharLSTM().train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    xt, yt = torch.from_numpy(np.asarray(x, np.int64)), torch.from_numpy(np.asarray(y, np.int64))
    dtype = torch.bfloat16 if autocast == "bf16" else None

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        with (contextlib.nullcontext() if dtype is None else torch.autocast("cpu", dtype=dtype)):
            logits = model(xb)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab).float(),
                                                     yb.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["clip"])
        opt.step()
        return loss.detach()

    return loop_runner(len(x), cfg["batch"], None, lambda idx: step(xt[idx], yt[idx]),
                       torch.randperm)


def torch_version():
    """PyTorch's version, or ``None`` when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def torch_available():
    """Whether PyTorch can be imported."""
    return torch_version() is not None


RUNNERS = {"numpy": numpy_runner, "torch eager": torch_runner,
           "torch autocast bf16": torch_autocast_runner}
