"""Class colours of the three charts for the GeoTIFF colour tables and quicklooks.

The palette itself (WMO-inspired SIC/SOD colours, a yellow-to-red FLOE ramp, grey for
masked pixels) has one home, :mod:`icecontext.plotting.charts` (``CLASS_RGB``,
``WATER_RGB``, ``MASK_RGB``); this module re-exports it under the exports' names and
adds the forms the writers need (GDAL colour tables, lookup tables, legends). Masked
pixels (255) are transparent in GeoTIFFs and light grey in figures.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from icecontext.data.io.format import CHART_FILL, CLASS_NAMES, N_CLASSES
from icecontext.plotting.charts import CLASS_RGB, MASK_RGB, WATER_RGB

RGB = tuple[int, int, int]

WATER: Final[RGB] = WATER_RGB
MASKED: Final[RGB] = MASK_RGB

CHART_COLOURS: Final[dict[str, tuple[RGB, ...]]] = CLASS_RGB
"""RGB (0-255) of each class index, per chart (the plotting palette)."""


def rgb_fraction(rgb: RGB) -> tuple[float, float, float]:
    """Return a 0-255 RGB colour as matplotlib's 0-1 floats."""
    red, green, blue = rgb
    return red / 255.0, green / 255.0, blue / 255.0


def colour_table(chart: str) -> dict[int, tuple[int, int, int, int]]:
    """Return the GeoTIFF colour table of a chart: class -> RGBA, 255 transparent."""
    table = {i: (*rgb, 255) for i, rgb in enumerate(CHART_COLOURS[chart])}
    table[CHART_FILL] = (0, 0, 0, 0)
    return table


def colour_lut(chart: str) -> np.ndarray:
    """Return a ``(256, 3)`` uint8 lookup table: class index -> RGB (masked grey)."""
    lut = np.tile(np.array(MASKED, dtype=np.uint8), (256, 1))
    lut[: N_CLASSES[chart]] = np.array(CHART_COLOURS[chart], dtype=np.uint8)
    return lut


def chart_rgb(chart: str, values: np.ndarray) -> np.ndarray:
    """Return an ``(H, W, 3)`` uint8 image of a class array (255 and unknown -> grey)."""
    return colour_lut(chart)[np.asarray(values, dtype=np.uint8)]


def legend_handles(chart: str, present: np.ndarray | None = None) -> list[Any]:
    """Return matplotlib legend patches (class name + colour) for a chart.

    Args:
        chart: ``"SIC"``, ``"SOD"`` or ``"FLOE"``.
        present: Optional boolean per class; only those classes get a patch.
    """
    from matplotlib.patches import Patch

    handles = []
    for i, (name, rgb) in enumerate(zip(CLASS_NAMES[chart], CHART_COLOURS[chart], strict=True)):
        if present is None or present[i]:
            handles.append(Patch(facecolor=rgb_fraction(rgb), edgecolor="0.3", label=name))
    return handles
