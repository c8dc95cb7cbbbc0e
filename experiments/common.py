"""What every experiment shares: ``--out`` and ``--quick`` flags, ``metrics.json``, a printed table,
and loading MNIST as flat float arrays."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def parser(description, default_out):
    """An argparse parser with the flags every experiment takes."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs") / default_out,
                   help=f"folder for figures and metrics.json (default: runs/{default_out})")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, a few seconds: what the test suite runs")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return p


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, "__array__"):
        return _plain(np.asarray(value).tolist())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_metrics(out, metrics):
    """Write ``metrics`` (numbers, strings, lists, dicts, arrays) to ``out/metrics.json`` atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".metrics-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_plain(metrics), f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out / "metrics.json")
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out / "metrics.json"


def table(rows, headers):
    """A plain-text table: ``rows`` is a list of lists, floats shown with 4 significant digits."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in cells]
    return "\n".join(out)


def load_mnist_flat(quick=False, n_quick=2000, dtype=np.float32):
    """MNIST as ``(x_train, y_train), (x_test, y_test), source``: flat ``(N, 784)`` floats in
    [0, 1], integer labels, and ``"mnist"`` or ``"synthetic"``. With ``quick``, the first ``n_quick``
    training images (and half as many test images); when the real files cannot be found, ``quick``
    falls back to ``fnnet.datasets.synthetic_mnist`` and ``source`` says so."""
    from fnnet import datasets

    try:
        (xtr, ytr), (xte, yte) = datasets.load_mnist(download=not quick)
        source = "mnist"
    except (FileNotFoundError, OSError):
        if not quick:
            raise
        (xtr, ytr), (xte, yte) = datasets.synthetic_mnist(n_quick, n_quick // 2)
        source = "synthetic"
    if quick:
        xtr, ytr, xte, yte = xtr[:n_quick], ytr[:n_quick], xte[:n_quick // 2], yte[:n_quick // 2]
    return datasets.prepare(xtr, ytr, dtype), datasets.prepare(xte, yte, dtype), source
