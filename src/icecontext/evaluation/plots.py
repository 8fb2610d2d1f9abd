"""Figures of evaluation results: confusion matrices and per-class F1 bars.

Figures are built with matplotlib's object API (no pyplot global state, Agg canvas)
and written atomically; the functions return the :class:`~matplotlib.figure.Figure`
so callers can also embed them in reports.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from icecontext.atomic import atomic_path
from icecontext.data.io.format import CHART_LONG_NAMES, CHARTS, CLASS_NAMES
from icecontext.evaluation.metrics import per_class_table


def normalise_by_true_class(cm: np.ndarray) -> np.ndarray:
    """Return row-normalised fractions (recall per reference class); NaN for empty rows."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, cm / np.where(rows > 0, rows, 1), np.nan)


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Write a figure atomically; the format follows the file suffix (``.png``, ``.pdf``)."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=Path(path).suffix.lstrip(".") or None)
    return Path(path)


def plot_confusion_matrix(
    cm: np.ndarray,
    chart: str,
    path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """Draw one chart's confusion matrix, normalised by reference (true) class.

    Each cell shows the fraction of a reference class's pixels predicted as each class
    (rows sum to 1); reference classes without pixels are left blank. Row labels carry
    the pixel counts.

    Args:
        cm: ``(n, n)`` counts, rows = reference class (from ``ChartScorer.confusion``).
        chart: ``"SIC"``, ``"SOD"`` or ``"FLOE"`` (class names and title).
        path: Write the figure there (atomically) when given.
        title: Figure title; defaults to the chart's long name and pixel total.

    Returns:
        The figure.
    """
    cm = np.asarray(cm)
    names = CLASS_NAMES[chart]
    frac = normalise_by_true_class(cm)
    size = 2.2 + 0.55 * len(names)
    fig = Figure(figsize=(size + 1.6, size))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(frac), cmap="Blues", vmin=0.0, vmax=1.0)
    for (i, j), value in np.ndenumerate(frac):
        if np.isfinite(value) and value >= 0.005:
            ax.text(
                j,
                i,
                f"{100 * value:.0f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > 0.55 else "black",
            )
    support = cm.sum(axis=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(
        range(len(names)), [f"{n} ({s:,})" for n, s in zip(names, support, strict=True)], fontsize=8
    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("reference class (pixels)")
    ax.set_title(title or f"{CHART_LONG_NAMES[chart]}: {int(cm.sum()):,} pixels", fontsize=10)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("% of the reference class")
    cbar.set_ticks([0, 0.25, 0.5, 0.75, 1.0], labels=["0", "25", "50", "75", "100"])
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_per_class_f1(
    confusions: Mapping[str, np.ndarray],
    path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """Draw per-class F1 bars for each chart given (one panel per chart).

    Classes absent from both reference and prediction have no bar (F1 undefined);
    each bar is labelled with the class's reference pixel share.

    Args:
        confusions: ``{chart: (n, n) counts}`` (``ChartScorer.confusions()``).
        path: Write the figure there (atomically) when given.
        title: Figure title.

    Returns:
        The figure.
    """
    charts = [c for c in CHARTS if c in confusions]
    fig = Figure(figsize=(4.2 * len(charts), 3.8), layout="constrained")
    axes = fig.subplots(1, len(charts), squeeze=False)[0]
    for ax, chart in zip(axes, charts, strict=True):
        table = per_class_table(confusions[chart], chart)
        f1 = table["f1"].to_numpy(dtype=float)
        share = table["support"].to_numpy() / max(int(table["support"].sum()), 1)
        x = np.arange(len(table))
        bars = ax.bar(x, np.nan_to_num(f1), color="tab:blue")
        for bar, value, s in zip(bars, f1, share, strict=True):
            if np.isfinite(value):
                ax.text(
                    bar.get_x() + bar.get_width() / 2,
                    bar.get_height() + 0.01,
                    f"{100 * s:.1f}%",
                    ha="center",
                    va="bottom",
                    fontsize=6,
                )
        ax.set_xticks(x, list(table["name"]), rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0, 1.1)
        ax.set_ylabel("F1")
        ax.set_title(CHART_LONG_NAMES[chart], fontsize=10)
    fig.suptitle(title or "Per-class F1 (labels: share of reference pixels)", fontsize=10)
    if path is not None:
        save_figure(fig, path)
    return fig


def write_evaluation_plots(
    confusions: Mapping[str, np.ndarray], out_dir: str | os.PathLike[str], prefix: str = ""
) -> list[Path]:
    """Write ``{prefix}confusion_{chart}.png`` per chart and ``{prefix}per_class_f1.png``.

    Args:
        confusions: ``{chart: (n, n) counts}`` (``ChartScorer.confusions()``).
        out_dir: Folder (created).
        prefix: File-name prefix (e.g. ``"val_"``).

    Returns:
        The written paths.
    """
    out = Path(out_dir)
    paths = []
    for chart in (c for c in CHARTS if c in confusions):
        path = out / f"{prefix}confusion_{chart}.png"
        plot_confusion_matrix(confusions[chart], chart, path)
        paths.append(path)
    path = out / f"{prefix}per_class_f1.png"
    plot_per_class_f1(confusions, path)
    paths.append(path)
    return paths
