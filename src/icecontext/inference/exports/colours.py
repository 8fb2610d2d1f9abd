"""Class colours of the three charts, shared by the GeoTIFF colour tables and quicklooks.

SIC and SOD follow the spirit of the WMO ice-chart colour code (WMO/TD-No. 1215:
blue ice-free water; green, yellow, orange, red for rising concentration; purple
young ice, greens for first-year ice, brown old ice); the RGB values are our own
approximations, chosen so that neighbouring classes stay distinguishable. FLOE has no
WMO colour scale: a sequential yellow-to-red ramp with bergs set apart in teal.
Masked pixels (255) are transparent in GeoTIFFs and light grey in figures.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from icecontext.data.format import CHART_FILL, CLASS_NAMES, N_CLASSES

RGB = tuple[int, int, int]

WATER: Final[RGB] = (0, 100, 255)
MASKED: Final[RGB] = (205, 205, 205)

CHART_COLOURS: Final[dict[str, tuple[RGB, ...]]] = {
    "SIC": (
        WATER,  # 0 %: ice free
        (150, 255, 170),  # 10 %
        (120, 235, 140),  # 20 %
        (80, 205, 100),  # 30 %: the WMO 1-3/10 greens
        (255, 255, 120),  # 40 %
        (255, 240, 0),  # 50 %
        (235, 205, 0),  # 60 %: the 4-6/10 yellows
        (255, 165, 60),  # 70 %
        (255, 120, 0),  # 80 %: the 7-8/10 oranges
        (255, 60, 40),  # 90 %
        (190, 0, 0),  # 100 %: the 9-10/10 reds
    ),
    "SOD": (
        WATER,  # open water
        (245, 175, 250),  # new ice
        (170, 40, 240),  # young ice
        (155, 210, 0),  # thin first-year ice
        (0, 130, 20),  # thick first-year ice
        (180, 100, 50),  # old ice
    ),
    "FLOE": (
        WATER,  # open water
        (255, 250, 175),  # cake ice
        (254, 210, 95),  # small floe
        (253, 150, 60),  # medium floe
        (235, 75, 35),  # big floe
        (170, 0, 40),  # vast floe
        (0, 190, 190),  # bergs
    ),
}


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
            handles.append(Patch(facecolor=np.array(rgb) / 255.0, edgecolor="0.3", label=name))
    return handles
