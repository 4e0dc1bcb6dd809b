"""Figures for evaluation and the comparison report, drawn with matplotlib's Agg canvas.

Figures are built as ``matplotlib.figure.Figure`` objects (no pyplot, so a user's interactive backend
and global state are never touched) and sized from the number of classes so labels stay readable
with 16, 30 or more cell types.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cellformer.atomic import atomic_path
from cellformer.evaluation.metrics import reliability_bins

DPI = 110
MAX_LABEL = 28
_MARKERS = "osD^v<>ph*X"


def short_label(label: str, width: int = MAX_LABEL) -> str:
    """``label`` cut to ``width`` characters with an ellipsis."""
    return label if len(label) <= width else label[: width - 1] + "…"


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure rendered as PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write the figure as a PNG, atomically."""
    path = Path(path)
    data = png_bytes(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def _label_fontsize(n: int) -> float:
    return 9 if n <= 20 else (7 if n <= 40 else 5.5)


def confusion_figure(
    counts: np.ndarray, true_labels: Sequence[str], predicted_labels: Sequence[str], title: str
) -> Figure:
    """Row-normalised confusion matrix: the share of each true label's cells given each prediction.

    Row labels carry the number of cells (``n=``); rows of labels unseen in training are kept (all of
    their cells are errors by construction).
    """
    counts = np.asarray(counts, dtype=np.float64)
    n_rows, n_cols = counts.shape
    support = counts.sum(axis=1)
    share = np.divide(counts, support[:, None], out=np.zeros_like(counts), where=support[:, None] > 0)
    size = max(n_rows, n_cols)
    fig = _new_figure(max(5.5, 0.36 * n_cols + 3.2), max(4.5, 0.32 * n_rows + 2.4))
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    fontsize = _label_fontsize(size)
    ax.set_xticks(range(n_cols), [short_label(x) for x in predicted_labels], rotation=90, fontsize=fontsize)
    ax.set_yticks(
        range(n_rows),
        [f"{short_label(y)} (n={int(s)})" for y, s in zip(true_labels, support, strict=True)],
        fontsize=fontsize,
    )
    if n_rows > n_cols:  # rows below the square part: labels unseen in training
        ax.axhline(n_cols - 0.5, color="black", linewidth=1)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title, fontsize=10)
    if size <= 30:
        for i in range(n_rows):
            for j in range(n_cols):
                if share[i, j] >= 0.005:
                    ax.text(
                        j,
                        i,
                        f"{share[i, j]:.2f}".lstrip("0") if share[i, j] < 1 else "1",
                        ha="center",
                        va="center",
                        fontsize=max(fontsize - 2.5, 4.5),
                        color="white" if share[i, j] > 0.6 else "black",
                    )
    fig.colorbar(image, ax=ax, shrink=0.6, label="share of the true label's cells")
    return fig


def per_class_f1_figure(
    labels: Sequence[str], support: Sequence[int], f1_by_run: Mapping[str, Sequence[float]], title: str
) -> Figure:
    """F1 of every class for one or many runs in one dot plot (classes ordered by number of cells)."""
    order = np.argsort(-np.asarray(support), kind="stable")
    n = len(labels)
    fig = _new_figure(7.5, max(3.0, 0.3 * n + 1.6))
    ax = fig.add_subplot()
    y = np.arange(n)
    for k, (name, f1) in enumerate(f1_by_run.items()):
        values = np.asarray(f1, dtype=np.float64)[order]
        ax.plot(
            values,
            y,
            linestyle="none",
            marker=_MARKERS[k % len(_MARKERS)],
            markersize=6,
            alpha=0.85,
            label=short_label(name, 40),
        )
    ax.set_yticks(
        y, [f"{short_label(labels[i])} (n={int(support[i])})" for i in order], fontsize=_label_fontsize(n)
    )
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("F1 score")
    ax.grid(axis="x", alpha=0.3)
    ax.grid(axis="y", alpha=0.15)
    ax.set_title(title, fontsize=10)
    if len(f1_by_run) > 1:
        ax.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, -0.08),
            ncol=min(3, len(f1_by_run)),
            fontsize=8,
            frameon=False,
        )
    return fig


def learning_curves_figure(log: Mapping[str, np.ndarray], title: str) -> Figure | None:
    """Train and validation loss, accuracy and macro-F1 per epoch; ``None`` when there is nothing to draw."""
    epoch = np.asarray(log.get("epoch", []), dtype=np.float64)
    if epoch.size == 0:
        return None
    fig = _new_figure(11, 3.4)
    axes = fig.subplots(1, 3)
    for ax, metric, label in zip(
        axes, ("loss", "acc", "macro_f1"), ("loss", "accuracy", "macro-F1"), strict=True
    ):
        drawn = False
        for split, style in (("train", "-"), ("val", "--")):
            values = np.asarray(log.get(f"{split}_{metric}", []), dtype=np.float64)
            if values.size == epoch.size and np.isfinite(values).any():
                ok = np.isfinite(values)
                ax.plot(epoch[ok], values[ok], style, marker="." if ok.sum() < 30 else None, label=split)
                drawn = True
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.suptitle(title, fontsize=10)
    return fig


def reliability_figure(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str, n_bins: int = 15
) -> Figure:
    """Reliability diagram: accuracy against confidence per bin, one curve per series.

    ``series`` maps a name (e.g. "before calibration") to ``(confidence, correct)`` arrays. The right
    panel shows how many cells fall in each confidence bin, since sparse bins are noisy.
    """
    fig = _new_figure(10, 4.2)
    ax, hist = fig.subplots(1, 2, width_ratios=[1.3, 1])
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    edges = np.linspace(0, 1, n_bins + 1)
    for k, (name, (confidence, correct)) in enumerate(series.items()):
        bins = reliability_bins(confidence, correct, n_bins)
        filled = bins["count"] > 0
        ax.plot(
            bins["confidence"][filled],
            bins["accuracy"][filled],
            marker=_MARKERS[k % len(_MARKERS)],
            label=short_label(name, 40),
        )
        hist.stairs(bins["count"], edges, label=short_label(name, 40), linewidth=1.5)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title, fontsize=10)
    hist.set_xlabel("confidence")
    hist.set_ylabel("cells")
    hist.set_yscale("symlog", linthresh=10)
    hist.grid(alpha=0.3)
    hist.set_title("cells per confidence bin", fontsize=10)
    return fig


def intervals_figure(names: Sequence[str], metrics: Sequence[Mapping], title: str) -> Figure:
    """Macro-F1 and accuracy of each run with its bootstrap 95% interval (a forest plot)."""
    n = len(names)
    fig = _new_figure(10, max(2.4, 0.45 * n + 1.4))
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(n)
    for ax, key, label in zip(axes, ("macro_f1", "accuracy"), ("macro-F1", "accuracy"), strict=True):
        values = np.array([m[key] for m in metrics])
        lo = np.array([m["ci"][key][0] for m in metrics])
        hi = np.array([m["ci"][key][1] for m in metrics])
        ax.errorbar(values, y, xerr=[values - lo, hi - values], fmt="o", capsize=4)
        ax.set_xlabel(f"{label} (95% bootstrap CI)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [short_label(x, 40) for x in names], fontsize=9)
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    return fig
