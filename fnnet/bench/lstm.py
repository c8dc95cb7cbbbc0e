"""W5: the character LSTM of ``fnnet train --dataset shakespeare``, one training step at a time:
``Embedding(65, 64) → LSTM(64, 512) → Dense(512, 65)``, cross-entropy over every token, windows
of 64 characters in batches of 64, Adam (lr 3e-3) behind ``clip_by_global_norm(1.0)``, as the CLI
trains it (``fnnet.cli.train_text``), float32.

Implementations, timed in interleaved rounds as W1–W4 are, each unit ``steps`` minibatch steps of
the epoch program ``fnnet.fit`` runs (``fnnet.EpochRunner``'s, over ``steps × batch`` windows, so
each unit also shuffles and gathers its batches inside the scan, as an epoch does):

    fnnet manual          the hand-derived backward through time (``fnnet.layers.lstm``): the
                          input product hoisted out of the time loop, a reverse ``lax.scan``
                          carrying ``dH`` and ``dC``, ``dW_x``, ``dW_h``, ``db`` and ``dX`` one
                          product each after it
    fnnet autodiff        the same program with ``grads="autodiff"``: ``jax.grad`` of the same
                          scanned ``apply`` (input product hoisted too)
    torch eager           ``nn.Embedding`` + ``nn.LSTM`` + ``nn.Linear`` on the CPU, the same
                          optimizer and clipping (``fnnet.bench.baselines.torch_lstm_runner``);
                          skipped when torch is missing (it is an optional extra)
    ... bf16              fnnet's two programs under ``precision="bf16"`` and PyTorch under
                          ``torch.autocast("cpu", dtype=torch.bfloat16)``, where the benchmark
                          times bf16 (``fnnet.bench.mixed.bf16_columns``: bfloat16 matrix units,
                          or ``--bf16``; never with ``--no-bf16``)

Speeds are in tokens (characters) per second, ``batch × block`` tokens a step; the paired ratios
are of seconds per token within a round.

FLOPs of one token (``token_flops``), the matrix products only (the gates' nonlinearities, the
cell update, the embedding's gather and scatter, the softmax and the update are
``O(tokens × H)`` and left out); with ``D`` the embedding width, ``H`` the hidden units, ``V``
the vocabulary and ``G = 4`` gate blocks::

    input projection   X_t W_xᵀ          2·D·G·H  forward, the same for dW_x and for dX
    recurrent product  H_{t−1} W_hᵀ      2·H·G·H  forward, the same for dW_h and for dH_{t−1}
    dense head         H_t W_oᵀ          2·H·V    forward, the same for dW_o and for dH_t
    total              3 · 2 · (D·G·H + H·G·H + H·V)

``dX`` of the LSTM is counted: the embedding's gradient needs it. For D = 64, H = 512, V = 65 that
is 3 · 2 · (131,072 + 1,048,576 + 33,280) = 7,277,568 FLOPs, 7.28 MFLOP a token (29.8 GFLOP a step
of 64 × 64 tokens), 86 % of it in the recurrent product.

Data: random windows of ``block + 1`` characters of tiny Shakespeare's training text when
``fnnet.datasets.load_shakespeare`` finds it without downloading (``FNNET_DATA_DIR``), random ids
otherwise; ``x`` the first ``block`` ids of each, ``y`` the next character at every position.
"""

from __future__ import annotations

import re

import numpy as np

from fnnet import datasets

from . import baselines
from .harness import DESCRIPTION, model_and_optimizer
from .workload import fnnet_runner, roof_probes, time_implementations

GATES = 4
#: The benchmark's (and the CLI's) sizes: anything else is reported as "(small)".
FULL_ARCHITECTURE = {"vocab_size": 65, "dim": 64, "hidden": 512}


def token_flops(dim, hidden, vocab):
    """``{"total", "terms"}``: the FLOPs of one token of a training step (the module docstring's
    count), and each product's ``forward``, ``dW`` and ``dX`` (each the same)."""
    terms = {"input projection": 2 * dim * GATES * hidden,
             "recurrent product": 2 * hidden * GATES * hidden,
             "dense head": 2 * hidden * vocab}
    return {"total": 3 * sum(terms.values()),
            "terms": {name: {"forward": f, "dW": f, "dX": f} for name, f in terms.items()}}


def text_windows(n, block, vocab, seed):
    """``(x, y, source)``: ``n`` windows of ``block`` ids, ``y`` the ids one step later, both
    ``(n, block)`` int32: random windows of tiny Shakespeare's training ids when they can be found
    without downloading (``source`` ``"shakespeare"``), random ids below ``vocab`` otherwise
    (``"random"``)."""
    rng = np.random.default_rng(seed)
    try:
        ids = datasets.load_shakespeare(download=False).train
    except (OSError, ValueError):
        ids = None
    if ids is not None and len(ids) > block + 1 and int(ids.max()) < vocab:
        starts = rng.integers(0, len(ids) - block - 1, n)
        windows = ids[starts[:, None] + np.arange(block + 1)]
        source = "shakespeare"
    else:
        windows = rng.integers(0, vocab, (n, block + 1))
        source = "random"
    windows = windows.astype(np.int32)
    return np.ascontiguousarray(windows[:, :-1]), np.ascontiguousarray(windows[:, 1:]), source


def dw_h_rows(products, hidden, rows):
    """The rows ``dW_h = dAᵀ H_prev`` is contracted over in a program's matrix products
    (``fnnet.bench.profile.dot_signatures``), one of ``rows`` (``N`` for a product inside the
    time loop, ``T·N`` for one after it): the product whose result has ``dW_h``'s shape
    ``(4H, H)`` and whose contracted size is one of them; ``None`` if there is none."""
    for p in products:
        result, _, rest = p.partition(" = dot(")
        if f"[{GATES * hidden},{hidden}]" not in result:
            continue
        lhs = [int(d) for d in re.search(r"\[(\d+),(\d+)\]", rest).groups()]
        size = lhs[int(re.search(r"lhs_contracting_dims=\{(\d+)\}", rest).group(1))]
        if size in rows:
            return size
    return None


def recurrent_products(results, hidden, batch, block):
    """Per fnnet program: its matrix products and where it sums ``dW_h`` (``in_loop``: a product
    of ``batch`` rows at every step of the reverse loop, as ``jax.grad`` of a scan does, or one
    product of ``batch × block`` rows after it)."""
    out = {}
    for impl, r in results.items():
        if "matrix_products" in r:
            rows = dw_h_rows(r["matrix_products"], hidden, (batch, batch * block))
            out[impl] = {"products": len(r["matrix_products"]), "dW_h_rows": rows,
                         "in_loop": None if rows is None or block == 1 else rows == batch}
    return out


def measure_lstm(name, cfg, repeats, seed, threads_setting, log, matmul_n, bf16=True):
    """W5: every implementation timed round-robin with the matmul roof, on ``cfg["steps"] ×
    cfg["batch"]`` windows of ``cfg["block"]`` characters; with ``bf16`` (the benchmark's choice,
    ``fnnet.bench.mixed.bf16_columns``) also fnnet's two programs under ``precision="bf16"`` and
    PyTorch under autocast."""
    arch, batch, block = cfg["lstm"], cfg["batch"], cfg["block"]
    n = cfg["steps"] * batch
    x, y, source = text_windows(n, block, arch["vocab_size"], seed)
    makers = {
        "fnnet manual": lambda: fnnet_runner(cfg, x, y, seed, "manual"),
        "fnnet autodiff": lambda: fnnet_runner(cfg, x, y, seed, "autodiff"),
        "torch eager": lambda: baselines.torch_lstm_runner(cfg, x, y, seed),
    }
    if bf16:
        makers["fnnet manual bf16"] = lambda: fnnet_runner(cfg, x, y, seed, "manual",
                                                           precision="bf16")
        makers["fnnet autodiff bf16"] = lambda: fnnet_runner(cfg, x, y, seed, "autodiff",
                                                             precision="bf16")
        makers["torch autocast bf16"] = lambda: baselines.torch_lstm_runner(cfg, x, y, seed,
                                                                            autocast="bf16")
    tokens = n * block
    count = token_flops(arch["dim"], arch["hidden"], arch["vocab_size"])
    out, _, _ = time_implementations(
        name, makers, dict.fromkeys(makers, tokens), dict.fromkeys(makers, count["total"] * tokens),
        lambda: roof_probes(x, False, matmul_n, 0), repeats, threads_setting, log,
        max(cfg["steps"] // 4, 1))
    out["recurrent_products"] = recurrent_products(out["results"], arch["hidden"], batch, block)
    model = model_and_optimizer(cfg)[0]
    small = arch != FULL_ARCHITECTURE
    return {"description": DESCRIPTION[name], "model": repr(model),
            "label": f"char LSTM {arch['dim']}-{arch['hidden']}" + (" (small)" if small else ""),
            "batch": batch, "block": block, "examples": n, "tokens_per_unit": tokens,
            "data_source": source, "speed_unit": "tok/s",
            "optimizer": f"adam lr {cfg['lr']:g}, clip_by_global_norm {cfg['clip']:g}",
            "steps_per_unit": cfg["steps"], "flops_per_token": count["total"],
            "flop_terms": count["terms"], "flops_per_step": count["total"] * batch * block,
            "flops_per_unit": count["total"] * tokens, "unit": f"{cfg['steps']} steps",
            "bf16": "timed" if bf16 else "not timed", **out}
