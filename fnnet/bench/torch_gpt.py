"""W6's PyTorch baseline: the GPT of ``fnnet.gpt`` written in PyTorch eager (an optional extra:
this module imports torch only inside its functions, and ``fnnet.bench.gpt`` skips it with a
message when torch is missing).

The same architecture as ``fnnet.layers.transformer.GPT`` (nanoGPT's ``model.py``, biases on):

    E = wte[ids] + wpe[:T]                     nn.Embedding (V, C), learned positions (block, C)
    X = X + c_proj(attn(c_attn(ln_1(X))))      pre-LN block: one fused qkv Linear(C, 3C), heads
    X = X + c_proj(gelu_tanh(c_fc(ln_2(X))))   the MLP Linear(C, 4C), GELU(tanh), Linear(4C, C)
    Z = ln_f(X) wteᵀ                           the head tied to the token table

Attention (``attention=``): ``"sdpa"`` (the default, what nanoGPT runs on PyTorch ≥ 2:
``F.scaled_dot_product_attention(q, k, v, is_causal=True)``) or ``"explicit"`` (nanoGPT's slow
path: ``softmax(QKᵀ/√d`` masked with −∞ above the diagonal``) V``, every T×T matrix written out).

Initialisation as GPT-2 and fnnet's: matrices and both tables N(0, 0.02²), the two projections that
end a residual branch N(0, (0.02/√(2L))²), biases zero, LayerNorm gains one (this times the step;
the init only matters for ``fnnet.bench.gpt``'s loss columns).

Training: cross-entropy over every token, ``clip_grad_norm_`` to ``clip``, ``torch.optim.AdamW``
(``lr``, ``betas``, ``weight_decay``; eps 1e-8 as fnnet's) with nanoGPT's two groups: the matrices
and both embedding tables decay, biases and LayerNorm parameters do not (fnnet's
``adamw(..., decay_embeddings=True)``), at a constant learning rate (the warmup and cosine of the
CLI recipe change no time). Each step draws ``batch`` windows of ``block + 1`` tokens at random
starts of the stream (nanoGPT's ``get_batch``, as one gather). ``autocast="bf16"``: the forward
and the loss under ``torch.autocast("cpu", dtype=torch.bfloat16)``, the backward outside it.

Threads: ``fnnet.bench.gpt`` runs this through ``fnnet.bench.workload.time_implementations``,
which gives a baseline whichever of 1 thread and all cores was faster on a short probe
(``fnnet.bench.harness.choose_threads``), or the count ``--threads`` names.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

ATTENTION = ("sdpa", "explicit")


def build(arch, attention="sdpa", seed=0):
    """The PyTorch GPT of ``arch`` (``{"vocab_size", "block_size", "layers", "heads", "dim"}``),
    initialised as GPT-2, in training mode (no dropout: the recipe has none)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    if attention not in ATTENTION:
        raise ValueError(f"attention must be one of {ATTENTION}, got {attention!r}")
    torch.manual_seed(seed)
    vocab, block, layers = arch["vocab_size"], arch["block_size"], arch["layers"]
    heads, dim = arch["heads"], arch["dim"]

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(dim, 3 * dim)
            self.c_proj = nn.Linear(dim, dim)
            mask = torch.tril(torch.ones(block, block, dtype=torch.bool))
            self.register_buffer("mask", mask.view(1, 1, block, block), persistent=False)

        def forward(self, x):
            n, t, c = x.shape
            q, k, v = self.c_attn(x).split(dim, dim=2)
            q, k, v = (a.view(n, t, heads, c // heads).transpose(1, 2) for a in (q, k, v))
            if attention == "sdpa":
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
                att = att.masked_fill(~self.mask[:, :, :t, :t], float("-inf"))
                y = F.softmax(att, dim=-1) @ v
            return self.c_proj(y.transpose(1, 2).contiguous().view(n, t, c))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn = nn.LayerNorm(dim), Attention()
            self.ln_2 = nn.LayerNorm(dim)
            self.c_fc, self.c_proj = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(block, dim)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln_f = nn.LayerNorm(dim)
            self.apply(self._init)
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * layers))

        @staticmethod
        def _init(module):
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, 0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

        def forward(self, ids):
            x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
            for b in self.blocks:
                x = b(x)
            return self.ln_f(x) @ self.wte.weight.t()  # the head, tied to the token table

    return GPT().train()


def optimizer(model, lr, betas, weight_decay):
    """``torch.optim.AdamW`` with nanoGPT's groups: every parameter of two or more dimensions
    (the matrices and both embedding tables) decays, the biases and LayerNorm's do not."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr, betas=tuple(betas),
                             eps=1e-8)


def runner(cfg, tokens, seed, autocast=None, attention="sdpa"):
    """``(unit, info)`` for ``fnnet.bench.gpt``: ``unit(steps=cfg["steps"])`` runs that many
    training steps (each on ``cfg["batch"]`` windows of ``cfg["block"]`` tokens drawn from the 1-D
    id stream ``tokens`` by a ``torch.Generator`` seeded with ``seed``) and returns once done;
    ``info["last_loss"]`` is the mean loss of the unit's steps (``first_loss`` of the warm-up's:
    one unit). No per-step bookkeeping beyond that loss (fnnet also counts correct predictions),
    so the comparison leans, if anything, PyTorch's way."""
    import torch
    from torch.nn import functional as F

    model = build(cfg["gpt"], attention, seed)
    opt = optimizer(model, cfg["lr"], cfg["betas"], cfg["weight_decay"])
    data = torch.from_numpy(np.asarray(tokens, np.int64))
    block, batch, vocab = cfg["block"], cfg["batch"], cfg["gpt"]["vocab_size"]
    offsets = torch.arange(block + 1)
    generator = torch.Generator().manual_seed(seed)
    dtype = torch.bfloat16 if autocast == "bf16" else None
    params = list(model.parameters())

    def step():
        starts = torch.randint(0, len(data) - block, (batch,), generator=generator)
        window = data[starts[:, None] + offsets]
        x, y = window[:, :-1], window[:, 1:]
        opt.zero_grad(set_to_none=True)
        with (contextlib.nullcontext() if dtype is None
              else torch.autocast("cpu", dtype=dtype)):
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, vocab).float(), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg["clip"])
        opt.step()
        return loss.detach()

    info = {"attention": "F.scaled_dot_product_attention(is_causal=True)" if attention == "sdpa"
            else "explicit masked softmax(QKᵀ/√d) V",
            "torch_version": torch.__version__, "units_run": 0, "losses": []}

    def unit(steps=cfg["steps"]):
        total = 0.0
        for _ in range(steps):
            total += float(step())
        info["last_loss"] = total / steps
        if steps == cfg["steps"]:
            info["units_run"] += 1
            info["losses"].append(info["last_loss"])

    unit()
    info["first_loss"] = info["last_loss"]
    return unit, info
