"""Figures with matplotlib (the Agg backend: files, no screen): curves, confusion matrices, digits.

Every function draws one figure, writes it to ``path`` (PNG, written atomically) and returns the
path. ``history`` is what ``fnnet.fit`` returns (per-epoch lists, or lists of K values for an
ensemble).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig, path, dpi=120):
    """Write ``fig`` to ``path`` through a temporary file and a rename; close it; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a figure is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        plt.close(fig)
    return path


def _series(values):
    """Per-epoch values as an array of shape (epochs,) or (epochs, K); None entries become NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def plot_history(history, path, title=None):
    """Loss (left) and accuracy (right) against epoch; an ensemble draws one line per model."""
    epochs = np.asarray(history["epoch"])
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 4))
    for name, ax, label in (("loss", ax_l, "train loss"), ("val_loss", ax_l, "validation loss"),
                            ("train_accuracy", ax_a, "train accuracy"),
                            ("val_accuracy", ax_a, "validation accuracy")):
        if name not in history:
            continue
        v = _series(history[name])
        if v.size == 0 or np.all(np.isnan(v)):
            continue
        style = "-" if name.startswith(("loss", "train")) else "--"
        if v.ndim == 1:
            ax.plot(epochs, v, style, marker="o" if len(epochs) < 30 else None, label=label)
        else:
            lines = ax.plot(epochs, v, style, alpha=0.6)
            lines[0].set_label(f"{label} ({v.shape[1]} models)")
    ax_l.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_a.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_confusion(matrix, path, title="confusion matrix", class_names=None):
    """A confusion matrix (rows: true class, columns: predicted), counts written in the cells."""
    m = np.asarray(matrix)
    n = m.shape[0]
    names = class_names or [str(i) for i in range(n)]
    fig, ax = plt.subplots(figsize=(0.6 * n + 2.5, 0.6 * n + 2))
    im = ax.imshow(m, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set(xticks=range(n), yticks=range(n), xticklabels=names, yticklabels=names,
           xlabel="predicted", ylabel="true", title=title)
    threshold = m.max() / 2 if m.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if m[i, j] > threshold else "black")
    return save_figure(fig, path)


def plot_digits(images, path, labels=None, predictions=None, title=None, columns=10):
    """A grid of 28×28 images; each titled ``label`` or ``pred (true label)``, red when wrong."""
    images = np.asarray(images).reshape(len(images), 28, 28)
    n = len(images)
    rows = max(1, int(np.ceil(n / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.4 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i], cmap="gray_r")
        if predictions is not None:
            wrong = labels is not None and predictions[i] != labels[i]
            text = f"{predictions[i]}" + (f" ({labels[i]})" if wrong else "")
            ax.set_title(text, fontsize=9, color="red" if wrong else "black")
        elif labels is not None:
            ax.set_title(str(labels[i]), fontsize=9)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_lines(x, series, path, xlabel, ylabel, title=None, logx=False, logy=False, marker="o"):
    """Several named curves on one axis: ``series`` maps a label to y values over ``x``."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label, y in series.items():
        ax.plot(x, y, marker=marker, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title or "")
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return save_figure(fig, path)


def plot_bars(groups, path, ylabel, title=None, logy=False):
    """Grouped bars: ``groups`` maps a group name to ``{bar label: value}``."""
    names = list(groups)
    labels = list(dict.fromkeys(lbl for g in groups.values() for lbl in g))
    width = 0.8 / max(len(labels), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names) * max(len(labels), 1) / 2), 4.2))
    for j, lbl in enumerate(labels):
        xs = np.arange(len(names)) + (j - (len(labels) - 1) / 2) * width
        ax.bar(xs, [groups[g].get(lbl, np.nan) for g in names], width, label=lbl)
    ax.set_xticks(np.arange(len(names)), names, rotation=15, ha="right")
    ax.set(ylabel=ylabel, title=title or "")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    return save_figure(fig, path)
