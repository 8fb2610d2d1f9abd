"""Colours, legends and drawing helpers for SIC / SOD / FLOE class maps.

One palette for every figure the package makes (``show``, quicklooks, reports). It
follows the spirit of the WMO ice-chart colour code ("Ice Chart Colour Code
Standard", JCOMM technical report 24, WMO/TD-No. 1215): ice-free water blue
(0, 100, 255) in all three charts; SIC greens (1-3/10), yellows (4-6/10), oranges
(7-8/10) and reds (9-10/10); SOD purple young ice, greens for first-year ice, brown
old ice. FLOE has no WMO colour scale: a sequential yellow-to-red ramp with bergs set
apart in teal. Masked pixels (255: land, outside the chart, no SAR) are light grey.
The RGB values are the same as those of the chart exports
(``icecontext.inference.exports.colours``), so figures and GeoTIFFs match.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, Colormap, ListedColormap
from matplotlib.image import AxesImage
from matplotlib.patches import Patch

from icecontext.data.io.format import CHART_FILL, CLASS_NAMES, N_CLASSES, Chart

RGB = tuple[int, int, int]

WATER_RGB: Final[RGB] = (0, 100, 255)
MASK_RGB: Final[RGB] = (205, 205, 205)
MASK_LABEL: Final = "masked (255)"

CLASS_RGB: Final[dict[str, tuple[RGB, ...]]] = {
    "SIC": (
        WATER_RGB,
        (150, 255, 170),
        (120, 235, 140),
        (80, 205, 100),
        (255, 255, 120),
        (255, 240, 0),
        (235, 205, 0),
        (255, 165, 60),
        (255, 120, 0),
        (255, 60, 40),
        (190, 0, 0),
    ),
    "SOD": (
        WATER_RGB,
        (245, 175, 250),  # new ice
        (170, 40, 240),  # young ice
        (155, 210, 0),  # thin first-year ice
        (0, 130, 20),  # thick first-year ice
        (180, 100, 50),  # old ice
    ),
    "FLOE": (
        WATER_RGB,
        (255, 250, 175),  # cake ice
        (254, 210, 95),  # small floe
        (253, 150, 60),  # medium floe
        (235, 75, 35),  # big floe
        (170, 0, 40),  # vast floe
        (0, 190, 190),  # bergs
    ),
}
"""RGB (0-255) of each class index, per chart."""


def _hex(rgb: RGB) -> str:
    return "#{:02X}{:02X}{:02X}".format(*rgb)


WATER_COLOUR: Final = _hex(WATER_RGB)
MASK_COLOUR: Final = _hex(MASK_RGB)
CLASS_COLOURS: Final[dict[str, tuple[str, ...]]] = {
    chart: tuple(_hex(c) for c in colours) for chart, colours in CLASS_RGB.items()
}
"""Hex colour of each class index, per chart."""


def chart_cmap(chart: Chart) -> tuple[Colormap, BoundaryNorm]:
    """Return a discrete colour map and norm for a chart's class indices.

    Masked values (pass a masked array, or use :func:`chart_rgba`) show in grey.
    """
    colours = CLASS_COLOURS[chart]
    cmap = ListedColormap(list(colours), name=f"icecontext_{chart}").with_extremes(
        bad=MASK_COLOUR, over=MASK_COLOUR
    )
    norm = BoundaryNorm(np.arange(-0.5, len(colours) + 0.5), len(colours))
    return cmap, norm


def chart_lut(chart: Chart) -> np.ndarray:
    """Return a 256 x 4 uint8 RGBA lookup table: class colours, grey elsewhere (incl. 255)."""
    lut = np.empty((256, 4), dtype=np.uint8)
    lut[:] = (*MASK_RGB, 255)
    lut[: N_CLASSES[chart], :3] = np.array(CLASS_RGB[chart], dtype=np.uint8)
    return lut


def chart_rgba(chart: Chart, values: np.ndarray) -> np.ndarray:
    """Colour a uint8 class map: ``(H, W)`` -> ``(H, W, 4)`` uint8 RGBA (255 grey)."""
    return chart_lut(chart)[np.asarray(values, dtype=np.uint8)]


def legend_handles(
    chart: Chart, present: Iterable[int] | None = None, *, include_mask: bool = True
) -> list[Patch]:
    """Legend patches with class names (only the classes in ``present`` if given)."""
    keep = set(range(N_CLASSES[chart])) if present is None else {int(v) for v in present}
    handles = [
        Patch(facecolor=CLASS_COLOURS[chart][k], edgecolor="0.3", linewidth=0.5, label=name)
        for k, name in enumerate(CLASS_NAMES[chart])
        if k in keep
    ]
    if include_mask:
        handles.append(
            Patch(facecolor=MASK_COLOUR, edgecolor="0.3", linewidth=0.5, label=MASK_LABEL)
        )
    return handles


def draw_chart(
    ax: Axes,
    chart: Chart,
    values: np.ndarray,
    *,
    title: str | None = None,
    legend: bool = True,
    all_classes: bool = True,
    extent: tuple[float, float, float, float] | None = None,
) -> AxesImage:
    """Draw a class map on ``ax`` with a legend of class names (255 shown grey).

    Args:
        ax: Target axes.
        chart: ``"SIC"``, ``"SOD"`` or ``"FLOE"``.
        values: uint8 class indices, 255 = masked.
        title: Axes title (defaults to the chart's name).
        legend: Add the class legend to the right of the axes.
        all_classes: List every class in the legend (so figures are comparable);
            otherwise only the classes present.
        extent: ``imshow`` extent (e.g. the full-resolution pixel extent when the
            values were downsampled for display).
    """
    arr = np.asarray(values)
    masked = np.ma.masked_where(arr >= N_CLASSES[chart], arr)
    cmap, norm = chart_cmap(chart)
    image = ax.imshow(masked, cmap=cmap, norm=norm, interpolation="nearest", extent=extent)
    ax.set_title(title if title is not None else chart, fontsize=10)
    if legend:
        present = None if all_classes else np.unique(arr[arr != CHART_FILL])
        ax.legend(
            handles=legend_handles(chart, present),
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            fontsize=7,
            frameon=False,
            borderaxespad=0.0,
        )
    return image
