"""Figures with matplotlib, written to files: curves, confusion matrices, digits, lines, bars.

Drawn with matplotlib's object API (``matplotlib.figure.Figure``), never ``pyplot``: no backend is
selected and no global setting is changed, so importing fnnet leaves a program's matplotlib as it
was. Every function draws one figure, writes it to ``path`` (PNG, atomically, through
``fnnet.io.atomic_write``) and returns the path. ``history`` is what ``fnnet.fit`` returns
(per-epoch lists, or lists of K values for an ensemble).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .io import atomic_write


def save_figure(fig, path, dpi=120) -> Path:
    """Write ``fig`` to ``path`` atomically and return the path as a ``Path``.

    The format follows the suffix (PNG without one). A figure made through ``pyplot`` (by the
    caller) is closed afterwards, since ``pyplot`` keeps every figure it made alive until then.
    """
    path = Path(path)
    file_format = path.suffix.lstrip(".") or "png"
    try:
        return atomic_write(
            path, lambda f: fig.savefig(f, dpi=dpi, bbox_inches="tight", format=file_format)
        )
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")  # only if the caller imported it
        if pyplot is not None:
            pyplot.close(fig)


def _series(values):
    """Per-epoch values as an array of shape (epochs,) or (epochs, K); None entries become NaN."""
    return np.array([np.nan if value is None else value for value in values], dtype=float)


_HISTORY_LINES = (  # history key, panel (0: loss, 1: accuracy), legend label
    ("loss", 0, "train loss"),
    ("val_loss", 0, "validation loss"),
    ("train_accuracy", 1, "train accuracy"),
    ("val_accuracy", 1, "validation accuracy"),
)


def plot_history(history, path, title=None):
    """Loss (left) and accuracy (right) against epoch; an ensemble draws one line per model."""
    epochs = np.asarray(history["epoch"])
    fig = Figure(figsize=(10, 4))
    panels = fig.subplots(1, 2)
    for key, panel, label in _HISTORY_LINES:
        if key not in history:
            continue
        values = _series(history[key])
        if values.size == 0 or np.all(np.isnan(values)):
            continue
        style = "-" if key.startswith(("loss", "train")) else "--"
        if values.ndim == 1:
            panels[panel].plot(epochs, values, style, marker="o" if len(epochs) < 30 else None,
                               label=label)
        else:
            lines = panels[panel].plot(epochs, values, style, alpha=0.6)
            lines[0].set_label(f"{label} ({values.shape[1]} models)")
    panels[0].set(xlabel="epoch", ylabel="loss", title="loss")
    panels[1].set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in panels:
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_confusion(matrix, path, title="confusion matrix", class_names=None):
    """A confusion matrix (rows: true class, columns: predicted), counts written in the cells."""
    counts = np.asarray(matrix)
    n_classes = counts.shape[0]
    names = class_names or [str(index) for index in range(n_classes)]
    fig = Figure(figsize=(0.6 * n_classes + 2.5, 0.6 * n_classes + 2))
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set(xticks=range(n_classes), yticks=range(n_classes), xticklabels=names, yticklabels=names,
           xlabel="predicted", ylabel="true", title=title)
    threshold = counts.max() / 2 if counts.size else 0
    for row in range(n_classes):
        for col in range(n_classes):
            ax.text(col, row, int(counts[row, col]), ha="center", va="center", fontsize=7,
                    color="white" if counts[row, col] > threshold else "black")
    return save_figure(fig, path)


def plot_digits(images, path, labels=None, predictions=None, title=None, columns=10,
                class_names=None):
    """A grid of 28×28 images; each titled ``label`` or ``pred (true label)``, red when wrong.

    ``class_names`` (e.g. Fashion-MNIST's ``"T-shirt/top"``, ...) names the classes in the titles
    in place of their numbers.
    """
    images = np.asarray(images).reshape(len(images), 28, 28)
    n_images = len(images)
    rows = max(1, int(np.ceil(n_images / columns)))
    fig = Figure(figsize=(1.2 * columns, 1.4 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)

    def name(label):
        return str(label) if class_names is None else class_names[int(label)]

    fontsize = 9 if class_names is None else 7
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= n_images:
            continue
        ax.imshow(images[index], cmap="gray_r")
        if predictions is not None:
            wrong = labels is not None and predictions[index] != labels[index]
            text = name(predictions[index]) + (f" ({name(labels[index])})" if wrong else "")
            ax.set_title(text, fontsize=fontsize, color="red" if wrong else "black")
        elif labels is not None:
            ax.set_title(name(labels[index]), fontsize=fontsize)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_lines(x, series, path, xlabel, ylabel, title=None, logx=False, logy=False, marker="o"):
    """Several named curves on one axis: ``series`` maps a label to y values over ``x``."""
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
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
    group_names = list(groups)
    labels = list(dict.fromkeys(label for group in groups.values() for label in group))
    width = 0.8 / max(len(labels), 1)
    fig = Figure(figsize=(max(6, 1.3 * len(group_names) * max(len(labels), 1) / 2), 4.2))
    ax = fig.subplots()
    for index, label in enumerate(labels):
        positions = np.arange(len(group_names)) + (index - (len(labels) - 1) / 2) * width
        ax.bar(positions, [groups[group].get(label, np.nan) for group in group_names], width,
               label=label)
    ax.set_xticks(np.arange(len(group_names)), group_names, rotation=15, ha="right")
    ax.set(ylabel=ylabel, title=title or "")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    return save_figure(fig, path)
