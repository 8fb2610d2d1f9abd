"""Training curves: the logged losses and validation scores of a run, as one figure.

The CSV log of a run that was resumed is split into segments (``logs/csv_previous/
part-*.csv`` then ``logs/csv/metrics.csv``); :func:`read_metrics` joins them, keeping
for every step the values of the latest segment that logged it (a resumed run repeats
the steps after its checkpoint).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from icecontext.atomic import atomic_path
from icecontext.run.rundir import RunDir


def read_metrics(run: RunDir) -> Any:
    """Return the run's logged values as one DataFrame (rows by step, latest segment wins).

    Raises:
        FileNotFoundError: If the run has no CSV log.
    """
    import pandas as pd

    parts = sorted((run.logs / "csv_previous").glob("part-*.csv"))
    current = run.logs / "csv" / "metrics.csv"
    if current.exists():
        parts.append(current)
    if not parts:
        raise FileNotFoundError(f"{run.logs}: no metrics.csv")
    frames = []
    for i, p in enumerate(parts):
        # A run killed while its logger rewrote metrics.csv leaves it empty or cut short:
        # its segment is best effort, the checkpoint is what the resume relies on.
        try:
            df = pd.read_csv(p, on_bad_lines="skip")
        except pd.errors.EmptyDataError:
            continue
        if df.empty or "step" not in df:
            continue
        df["_segment"] = i
        frames.append(df)
    if not frames:
        return pd.DataFrame()
    # A later segment restarted from a checkpoint: drop the earlier rows it re-logged.
    kept = []
    for i, df in enumerate(frames):
        later = [f["step"].min() for f in frames[i + 1 :]]
        cut = min(later) if later else None
        kept.append(df if cut is None else df[df["step"] < cut])
    return pd.concat(kept, ignore_index=True).drop(columns="_segment")


def plot_training_curves(run: RunDir, out: str | os.PathLike[str]) -> Path:
    """Draw training loss (per task) and validation scores against steps into a PNG.

    Args:
        run: The run directory.
        out: Output PNG (written atomically).

    Returns:
        The PNG path.
    """
    # A bare Figure (no pyplot): no global backend switch, nothing left open.
    from matplotlib.figure import Figure

    df = read_metrics(run)
    fig = Figure(figsize=(15, 4))
    axes = fig.subplots(1, 3)
    ax_loss, ax_val, ax_lr = axes
    for col, style in (
        ("train/loss_step", "-"),
        ("train/loss_SIC_step", ":"),
        ("train/loss_SOD_step", ":"),
        ("train/loss_FLOE_step", ":"),
    ):
        if col in df:
            d = df[["step", col]].dropna()
            if not d.empty:
                label = col.split("/")[1].removesuffix("_step")
                ax_loss.plot(d["step"], d[col], style, label=label)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_yscale("log")
    ax_loss.set_title("training loss")
    if ax_loss.get_legend_handles_labels()[0]:
        ax_loss.legend(fontsize=8)
    for col in ("val/SIC", "val/SOD", "val/FLOE", "val/combined"):
        if col in df:
            d = df[["step", col]].dropna()
            if not d.empty:
                lw = 2.5 if col.endswith("combined") else 1.2
                ax_val.plot(d["step"], d[col], "o-", lw=lw, ms=3, label=col.split("/")[1])
    ax_val.set_xlabel("step")
    ax_val.set_ylabel("score (x100)")
    ax_val.set_title("full-scene validation (challenge metric)")
    if ax_val.get_legend_handles_labels()[0]:
        ax_val.legend(fontsize=8)
    else:  # a run without validation scenes
        ax_val.text(0.5, 0.5, "no validation", ha="center", va="center", transform=ax_val.transAxes)
    lr_cols = [c for c in df.columns if c.startswith("lr-")]
    for col in lr_cols[:1]:
        d = df[["step", col]].dropna()
        ax_lr.plot(d["step"], d[col])
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title("learning rate")
    fig.suptitle(run.path.name)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
    return Path(out)
