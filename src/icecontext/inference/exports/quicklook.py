"""Quicklook PNG: the HH backscatter beside the predicted SIC, SOD and FLOE maps.

Large scenes are shown at a reduced size (every k-th pixel, which keeps class values
intact); masked pixels are light grey; each class map has a legend with the class
names and colours of :mod:`~icecontext.inference.exports.colours`. With
``show_reference`` a second row shows the scene's reference charts when it has
labels, for a visual check against the ice chart.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from icecontext.data.io.format import CHART_FILL, CHART_LONG_NAMES, CLASS_NAMES, SAR_VARIABLES
from icecontext.data.io.variables import denormalise
from icecontext.inference.exports.colours import (
    MASKED,
    chart_rgb,
    legend_handles,
    rgb_fraction,
)
from icecontext.inference.exports.netcdf import check_charts, scene_label, scene_shape
from icecontext.inference.exports.output import export_target


def display_step(shape: tuple[int, int], max_size: int) -> int:
    """Return the pixel stride that brings the longer side to at most ``max_size``."""
    return max(1, math.ceil(max(shape) / max(max_size, 1)))


def hh_db(scene: xr.Dataset, step: int = 1) -> np.ma.MaskedArray:
    """Return HH backscatter in dB (every ``step``-th pixel), masked where there is no SAR."""
    z = np.asarray(scene[SAR_VARIABLES[0]][::step, ::step].values, dtype=np.float32)
    valid = (z != 0) & np.isfinite(z)  # the format's no-data rule: standardised value 0
    return np.ma.masked_array(denormalise(SAR_VARIABLES[0], z), mask=~valid)


def render_quicklook(
    scene: xr.Dataset,
    charts: Mapping[str, Any],
    *,
    max_size: int = 1000,
    title: str | None = None,
    show_reference: bool = False,
) -> Figure:
    """Build the quicklook figure (see the module docstring).

    Args:
        scene: The input scene (HH, shape, name; reference charts for ``show_reference``).
        charts: Chart -> ``(H, W)`` predicted classes (255 = masked).
        max_size: Longest displayed side in pixels.
        title: Figure title (defaults to the scene name).
        show_reference: Add a row with the scene's charts when it has any label.

    Returns:
        The figure.
    """
    shape = scene_shape(scene)
    classes = check_charts(charts, shape)
    step = display_step(shape, max_size)
    rows = [("prediction", classes)]
    if show_reference:
        reference = {c: np.asarray(scene[c].values) for c in classes if c in scene.variables}
        if any((v != CHART_FILL).any() for v in reference.values()):
            rows.append(("reference", check_charts(reference, shape, "reference")))
    n_cols = 1 + len(classes)
    fig = Figure(figsize=(3.6 * n_cols, 4.6 * len(rows) + 0.6), layout="constrained")
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    hh = hh_db(scene, step)
    for r, (kind, maps) in enumerate(rows):
        ax = axes[r, 0]
        if r == 0:
            valid = hh.compressed()
            lo, hi = np.percentile(valid, [2, 98]) if valid.size else (-30.0, 0.0)
            cmap = colormaps["gray"].with_extremes(bad=rgb_fraction(MASKED))
            image = ax.imshow(hh, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            fig.colorbar(image, ax=ax, orientation="horizontal", fraction=0.05, pad=0.02).set_label(
                "HH backscatter (dB)"
            )
            ax.set_title("Sentinel-1 HH", fontsize=10)
        else:
            ax.axis("off")
        ax.set_xticks([])
        ax.set_yticks([])
        for c, (chart, values) in enumerate(maps.items(), start=1):
            ax = axes[r, c]
            shown = values[::step, ::step]
            ax.imshow(chart_rgb(chart, shown), interpolation="nearest")
            ax.set_title(f"{CHART_LONG_NAMES[chart]} ({kind})", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.legend(
                handles=legend_handles(chart),
                loc="upper center",
                bbox_to_anchor=(0.5, -0.01),
                ncol=3 if len(CLASS_NAMES[chart]) > 8 else 2,
                fontsize=7,
                frameon=False,
            )
    step_note = f", shown at 1/{step}" if step > 1 else ""
    fig.suptitle(title or f"{scene_label(scene)} ({shape[0]} x {shape[1]} px{step_note})")
    return fig


def write_quicklook(
    path: str | os.PathLike[str],
    scene: xr.Dataset,
    charts: Mapping[str, Any],
    *,
    max_size: int = 1000,
    title: str | None = None,
    show_reference: bool = False,
    dpi: int = 100,
) -> Path:
    """Render the quicklook and write it as PNG (atomically).

    Arguments as :func:`render_quicklook`; ``dpi`` sets the output resolution.

    Returns:
        The written path.

    Raises:
        DataError: Arrays that do not fit the scene.
        ExportError: Unwritable output folder (no partial file is left).
    """
    fig = render_quicklook(
        scene, charts, max_size=max_size, title=title, show_reference=show_reference
    )
    FigureCanvasAgg(fig)
    with export_target(path, "quicklook PNG") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    return Path(path)
