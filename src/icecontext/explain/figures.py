"""Figures of Grad-CAM maps: overlay on the scene's HH, charts beside it, model comparisons.

* :func:`explain_figure`: the CAM over the same scene's HH backscatter (grey, dB) with
  the target region outlined, then the reference chart and the model's prediction of
  the task (chart colours of :mod:`icecontext.plotting.charts`);
* :func:`compare_figure`: the same target explained by several models side by side,
  each panel titled with the model's label and receptive field in km, plus the
  reference chart;
* :func:`distance_figure`: cumulative CAM mass against distance from the target (km),
  with the 50 % / 90 % distances marked, and the mass per km; the dotted line of each
  model is the radius of the field of the part explained, the layers after the
  explained one (:func:`~icecontext.explain.distance.explained_field`).

Each CAM is scaled to its own maximum for display (the saved arrays keep raw units):
compare the *shape* of maps between models, not their brightness. Large domains are
reduced for display by block means (images) and block centres (charts), as in
:mod:`icecontext.plotting.scene`. Figures use explicit Agg canvases (no pyplot state).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from icecontext.atomic import atomic_path
from icecontext.explain.distance import DistanceProfile
from icecontext.explain.gradcam import DEFAULT_METHOD
from icecontext.explain.scene import SceneCam
from icecontext.plotting.charts import draw_chart
from icecontext.plotting.scene import (
    HH_RANGE_DB,
    IMAGE_MASK_COLOUR,
    block_centre,
    block_nanmean,
    display_factor,
)

CAM_CMAP = "inferno"
TARGET_COLOUR = "#00E5FF"
"""Outline of the target region (cyan stands out on grey SAR and on the CAM colours)."""


def _extent(result: SceneCam, k: int) -> tuple[float, float, float, float]:
    r0, c0, h, w = result.window
    px = result.pixel_km
    hk, wk = (h // k) * k, (w // k) * k
    return (c0 * px, (c0 + wk) * px, (r0 + hk) * px, r0 * px)


def _reduce(values: np.ndarray, k: int) -> np.ndarray:
    return block_nanmean(np.asarray(values, dtype=np.float32), k)


def draw_cam(
    ax: Axes,
    result: SceneCam,
    hh_db: np.ndarray | None,
    *,
    max_size: int = 800,
    title: str | None = None,
    colourbar: bool = True,
) -> None:
    """Draw a CAM over HH (dB, grey) with the target region outlined.

    Args:
        ax: Target axes.
        result: The map.
        hh_db: HH backscatter in dB over the same domain (NaN = no data), or ``None``
            to draw on a plain background.
        max_size: Largest displayed side in pixels.
        title: Axes title (default: the layer).
        colourbar: Add a colour bar (CAM as a fraction of its maximum).
    """
    h, w = result.cam.shape
    k = display_factor((h, w), max_size)
    extent = _extent(result, k)
    grey = colormaps["gray"].with_extremes(bad=IMAGE_MASK_COLOUR)
    if hh_db is not None:
        hh = np.ma.masked_invalid(_reduce(np.where(result.valid, hh_db, np.nan), k))
        ax.imshow(hh, cmap=grey, vmin=HH_RANGE_DB[0], vmax=HH_RANGE_DB[1], extent=extent)
    else:
        ax.imshow(
            np.ma.masked_where(~(_reduce(result.valid, k) > 0.5), np.full(_shape(h, w, k), 0.5)),
            cmap=grey,
            vmin=0,
            vmax=1,
            extent=extent,
        )
    cam = _reduce(result.cam, k)
    top = float(np.nanmax(cam)) if np.isfinite(cam).any() else 0.0
    norm = cam / top if top > 0 else np.zeros_like(cam)
    rgba = colormaps[CAM_CMAP](norm)
    rgba[..., 3] = 0.75 * np.sqrt(np.clip(norm, 0, 1))  # faint evidence stays see-through
    ax.imshow(rgba, extent=extent, interpolation="nearest")
    mask = _reduce(result.target_mask, k)
    if (mask > 0.5).any() and (mask < 0.5).any():
        ax.contour(
            mask,
            levels=[0.5],
            colors=TARGET_COLOUR,
            linewidths=0.8,
            extent=extent,
            origin="upper",
        )
    ax.set_title(title if title is not None else result.layer, fontsize=9)
    ax.set_xlabel("range (km)", fontsize=8)
    ax.set_ylabel("azimuth (km)", fontsize=8)
    ax.tick_params(labelsize=7)
    if colourbar:
        cax = ax.inset_axes((1.03, 0.0, 0.04, 1.0))
        bar = ax.figure.colorbar(ScalarMappable(Normalize(0, 1), CAM_CMAP), cax=cax)
        bar.set_label(f"{method_label(result.method)} / max", fontsize=7)
        bar.ax.tick_params(labelsize=6)


def _shape(h: int, w: int, k: int) -> tuple[int, int]:
    return (h // k, w // k) if k > 1 else (h, w)


def _draw_classes(
    ax: Axes, result: SceneCam, values: np.ndarray | None, title: str, max_size: int
) -> None:
    h, w = result.cam.shape
    k = display_factor((h, w), max_size)
    if values is None:
        ax.text(0.5, 0.5, "no reference chart", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    draw_chart(
        ax, result.spec.task, block_centre(values, k), title=title, extent=_extent(result, k)
    )
    ax.set_xlabel("range (km)", fontsize=8)
    ax.tick_params(labelsize=7)


def explain_figure(
    result: SceneCam,
    hh_db: np.ndarray | None,
    *,
    title: str | None = None,
    max_size: int = 800,
) -> Figure:
    """CAM over HH, reference chart and prediction of the task, side by side."""
    h, w = result.cam.shape
    aspect = min(max(h / max(w, 1), 0.4), 2.5)
    fig = Figure(figsize=(17.0, 1.6 + 4.2 * aspect))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    fig.subplots_adjust(left=0.04, right=0.9, top=0.88, bottom=0.1, wspace=0.6)
    cam_title = f"{method_label(result.method)} at {result.layer}"
    draw_cam(axes[0], result, hh_db, max_size=max_size, title=cam_title)
    task = result.spec.task
    _draw_classes(axes[1], result, result.reference, f"{task} reference", max_size)
    _draw_classes(axes[2], result, result.prediction, f"{task} prediction", max_size)
    fig.suptitle(title or default_title(result), fontsize=11)
    return fig


def method_label(method: str) -> str:
    """Display name of a CAM method (``gradcam`` -> ``Grad-CAM``)."""
    return {"gradcam": "Grad-CAM", "hirescam": "HiResCAM"}.get(method, method)


def default_title(result: SceneCam) -> str:
    """``scene - target - window`` line for figure titles."""
    r0, c0, h, w = result.window
    return (
        f"{result.name}: {result.spec.describe()}; window rows {r0}-{r0 + h}, cols {c0}-{c0 + w} "
        f"({result.pixel_km * 1000:.0f} m pixels); target region outlined"
    )


def compare_figure(
    panels: Sequence[tuple[str, SceneCam]],
    hh_db: np.ndarray | None,
    *,
    title: str | None = None,
    max_size: int = 600,
    columns: int = 4,
) -> Figure:
    """The same target explained by several models, then the reference chart.

    Args:
        panels: ``(panel title, map)`` per model, in order; the title should carry the
            model's receptive field (the CLI writes ``label / rates / RF km``).
        hh_db: HH (dB) of the common domain, or ``None``.
        title: Figure title.
        max_size: Largest displayed side per panel.
        columns: Panels per row.
    """
    if not panels:
        raise ValueError("nothing to compare")
    n = len(panels) + 1
    cols = min(columns, n)
    rows = -(-n // cols)
    h, w = panels[0][1].cam.shape
    aspect = min(max(h / max(w, 1), 0.4), 2.5)
    fig = Figure(figsize=(4.8 * cols + 2.0, rows * (3.8 * aspect + 1.3) + 0.5))
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    fig.subplots_adjust(left=0.05, right=0.87, top=0.84, bottom=0.08, wspace=0.55, hspace=0.5)
    for ax, (label, result) in zip(axes, panels, strict=False):
        draw_cam(ax, result, hh_db, max_size=max_size, title=label)
    first = panels[0][1]
    _draw_classes(
        axes[len(panels)], first, first.reference, f"{first.spec.task} reference", max_size
    )
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.suptitle(title or default_title(first), fontsize=11)
    return fig


def distance_figure(
    profiles: dict[str, DistanceProfile],
    explained_km: dict[str, float | None] | None = None,
    *,
    title: str | None = None,
    method: str = DEFAULT_METHOD,
) -> Figure:
    """Cumulative CAM mass and mass per km against distance from the target region.

    Args:
        profiles: Label -> profile.
        explained_km: Label -> receptive field in km of the part explained, the layers
            after the explained one (:meth:`ExplainedField.km
            <icecontext.explain.distance.ExplainedField.km>`; not the whole model's
            field). Its radius is drawn as a dotted line; ``None`` = unknown/global.
        title: Figure title.
        method: CAM method of the profiles, for the axis labels.
    """
    name = method_label(method)
    fig = Figure(figsize=(12.0, 4.4))
    FigureCanvasAgg(fig)
    ax, ax2 = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.86, bottom=0.13, wspace=0.25)
    for i, (label, p) in enumerate(profiles.items()):
        colour = f"C{i % 10}"
        d = np.concatenate([[0.0], p.edges_km[1:]])
        cum = np.concatenate([[p.inside], p.cumulative])
        text = f"{label}: {p.inside:.0%} inside, d50 {p.d50_km:.1f}, d90 {p.d90_km:.1f} km"
        ax.plot(d, cum, color=colour, label=text)
        ax.plot([p.d50_km, p.d90_km], [0.5, 0.9], "o", color=colour, ms=4)
        width = np.diff(p.edges_km)
        outside = p.mass.copy()
        outside[0] = max(outside[0] - p.inside, 0.0)  # the target itself is not a distance
        ax2.plot(p.edges_km[1:] - width / 2, outside / width, color=colour, label=label)
        rf = (explained_km or {}).get(label)
        if rf is not None:
            for a in (ax, ax2):
                a.axvline(rf / 2, color=colour, ls=":", lw=1)
    ax.axhline(0.5, color="0.7", lw=0.6)
    ax.axhline(0.9, color="0.7", lw=0.6)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("distance from the target region (km)")
    ax.set_ylabel(f"fraction of {name} mass within distance")
    ax.legend(fontsize=7, loc="lower right")
    ax2.set_xlabel("distance from the target region (km)")
    ax2.set_ylabel(f"{name} mass per km")
    ax2.set_yscale("log")
    ax.set_title(
        "cumulative (dots: 50 % / 90 %; dotted: field radius after the explained layer)",
        fontsize=9,
    )
    ax2.set_title("mass per km of distance, outside the target", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Write a figure as PNG, atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)
