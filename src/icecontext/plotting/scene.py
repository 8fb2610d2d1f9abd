"""Render one scene: HH, HV, AMSR2 36.5 GHz H and the SIC / SOD / FLOE charts.

Large scenes are reduced for display: images by a block mean over ``k x k`` pixels
(ignoring masked pixels), charts by taking the block's centre pixel, with
``k = ceil(max(H, W) / max_size)``. All panels share axes in kilometres (80 m
pixels), so the 2 km AMSR2 grid lines up with the SAR.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Final, cast

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from icecontext.atomic import atomic_path
from icecontext.data.io.format import (
    AMSR_FACTOR,
    CHART_FILL,
    CHARTS,
    PIXEL_SPACING_M,
    SAR_VARIABLES,
    Chart,
)
from icecontext.data.io.variables import denormalise
from icecontext.plotting.charts import draw_chart

IMAGE_MASK_COLOUR: Final = "#F5DEB3"
"""Colour of masked pixels in the grey-scale SAR panels (wheat; charts use grey)."""

HH_RANGE_DB: Final = (-30.0, 0.0)
HV_RANGE_DB: Final = (-35.0, -10.0)
AMSR2_PANEL: Final = "btemp_36_5h"


def display_factor(shape: tuple[int, int], max_size: int) -> int:
    """Block size that brings the larger side of ``shape`` down to ``max_size`` pixels."""
    return max(1, math.ceil(max(shape) / max(max_size, 1)))


def block_nanmean(values: np.ndarray, k: int) -> np.ndarray:
    """Mean over ``k x k`` blocks ignoring NaN (NaN where a block has no finite value)."""
    if k == 1:
        return values.astype(np.float32)
    h, w = values.shape[0] // k, values.shape[1] // k
    blocks = values[: h * k, : w * k].reshape(h, k, w, k)
    finite = np.isfinite(blocks)
    total = np.where(finite, blocks, 0.0).sum(axis=(1, 3), dtype=np.float64)
    count = finite.sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


def block_centre(values: np.ndarray, k: int) -> np.ndarray:
    """The centre pixel of every ``k x k`` block (class maps keep valid class values)."""
    if k == 1:
        return np.asarray(values)
    h, w = values.shape[0] // k, values.shape[1] // k
    return np.asarray(values)[k // 2 : h * k : k, k // 2 : w * k : k]


def sar_db(ds: xr.Dataset, var: str) -> np.ndarray:
    """Backscatter of a scene in dB, NaN where the file marks no data (value 0)."""
    z = np.asarray(ds[var].values, dtype=np.float32)
    db = denormalise(var, z).astype(np.float32)
    db[(z == 0) | ~np.isfinite(z)] = np.nan
    return db


def scene_title(ds: xr.Dataset) -> str:
    """``20190106T081235_dmi - DMI - 2019-01-06 08:12:35 - 5000 x 5200 px (400 x 416 km)``."""
    name = str(ds.attrs.get("scene_name") or ds.attrs.get("scene_id", "scene"))
    h, w = ds.sizes["sar_lines"], ds.sizes["sar_samples"]
    km = PIXEL_SPACING_M / 1000.0
    parts = [name]
    if len(name) >= 19 and name[8] == "T":
        parts.append(name[16:19].upper())
        parts.append(f"{name[:4]}-{name[4:6]}-{name[6:8]} {name[9:11]}:{name[11:13]}:{name[13:15]}")
    parts.append(f"{h} x {w} px ({h * km:.0f} x {w * km:.0f} km)")
    return " - ".join(parts)


def render_scene(ds: xr.Dataset, *, max_size: int = 1000, title: str | None = None) -> Figure:
    """Draw the six-panel overview of a ready-to-train scene.

    Args:
        ds: The scene (as :func:`icecontext.data.io.scene.open_scene` returns it).
        max_size: Largest displayed side in pixels; bigger scenes are reduced.
        title: Figure title (default: scene name, service, time and size).

    Returns:
        The figure (Agg canvas attached), 3 columns x 2 rows.
    """
    h, w = ds.sizes["sar_lines"], ds.sizes["sar_samples"]
    k = display_factor((h, w), max_size)
    km = PIXEL_SPACING_M / 1000.0
    hk, wk = (h // k) * k, (w // k) * k
    extent = (0.0, wk * km, hk * km, 0.0)

    fig = Figure(figsize=(15.0, 9.0))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    fig.subplots_adjust(left=0.04, right=0.9, top=0.92, bottom=0.07, wspace=0.55, hspace=0.28)
    for var, (lo, hi), ax, label in (
        (SAR_VARIABLES[0], HH_RANGE_DB, axes[0, 0], "HH"),
        (SAR_VARIABLES[1], HV_RANGE_DB, axes[0, 1], "HV"),
    ):
        img = np.ma.masked_invalid(block_nanmean(sar_db(ds, var), k))
        cmap = _grey_with_mask()
        im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, extent=extent, interpolation="nearest")
        ax.set_title(f"{label} backscatter (dB)", fontsize=10)
        _colourbar(fig, ax, im, "sigma0 (dB)")

    ax = axes[0, 2]
    tb = denormalise(AMSR2_PANEL, np.asarray(ds[AMSR2_PANEL].values))
    h2, w2 = tb.shape
    im = ax.imshow(
        tb,
        cmap="viridis",
        extent=(0.0, w2 * AMSR_FACTOR * km, h2 * AMSR_FACTOR * km, 0.0),
        interpolation="nearest",
    )
    ax.set_xlim(0.0, wk * km)
    ax.set_ylim(hk * km, 0.0)
    ax.set_title("AMSR2 36.5 GHz H (K)", fontsize=10)
    _colourbar(fig, ax, im, "brightness temperature (K)")

    labelled = False
    for ax, chart in zip(axes[1], CHARTS, strict=True):
        values = block_centre(np.asarray(ds[chart].values), k)
        labelled |= bool((values != CHART_FILL).any())
        draw_chart(ax, cast(Chart, chart), values, extent=extent)
    for ax in axes.flat:
        ax.set_xlabel("range (km)", fontsize=8)
        ax.set_ylabel("azimuth (km)", fontsize=8)
        ax.tick_params(labelsize=7)
    note = "grey (charts) / wheat (SAR): masked - land, outside the ice chart or no SAR data"
    if not labelled:
        note = "no labels in this file (test scene: charts all 255); " + note
    if k > 1:
        note += f"; shown at 1/{k} resolution ({k * PIXEL_SPACING_M} m pixels)"
    fig.suptitle(title if title is not None else scene_title(ds), fontsize=12)
    fig.text(0.5, 0.002, note, ha="center", va="bottom", fontsize=8, color="0.3")
    return fig


def _colourbar(fig: Figure, ax: Axes, image: AxesImage, label: str) -> None:
    """A colour bar hugging the right edge of ``ax`` (same height as the image)."""
    cax = ax.inset_axes((1.04, 0.0, 0.05, 1.0))
    bar = fig.colorbar(image, cax=cax)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def _grey_with_mask() -> Colormap:
    return colormaps["gray"].with_extremes(bad=IMAGE_MASK_COLOUR)


def save_scene_figure(
    ds: xr.Dataset,
    path: str | os.PathLike[str],
    *,
    max_size: int = 1000,
    dpi: int = 100,
    title: str | None = None,
) -> Path:
    """Render a scene (see :func:`render_scene`) and write it as a PNG, atomically."""
    fig = render_scene(ds, max_size=max_size, title=title)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)
