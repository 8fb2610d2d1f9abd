"""The AI4Arctic ready-to-train (``_prep.nc``) file format, as data.

Everything here is a fact about the published files (see ``docs/data.md`` and the
format reference it cites): dimension names, the 29 variables in file order with
their dtypes and attributes, chart classes, file-name rules and the official test
list. Readers, validators, writers and the synthetic generator all take these facts
from this one module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal

import numpy as np

# ----------------------------------------------------------------------------- grids

SAR_DIMS: Final = ("sar_lines", "sar_samples")
"""Dimensions of the 80 m SAR grid (rows = azimuth lines, columns = range samples)."""

AMSR_DIMS: Final = ("2km_grid_lines", "2km_grid_samples")
"""Dimensions of the 2 km grid that carries AMSR2 and ERA5."""

TIEPOINT_DIMS: Final = ("sar_sample_2dgrid_points", "sar_line_2dgrid_points")
"""Dimensions of the 21 x 21 latitude/longitude tie-point grid (names as in the files)."""

TIEPOINT_SHAPE: Final = (21, 21)

PIXEL_SPACING_M: Final = 80
"""Pixel spacing of ready-to-train files in metres."""

RAW_PIXEL_SPACING_M: Final = 40
"""Pixel spacing of raw files in metres."""

AMSR_FACTOR: Final = 25
"""80 m pixels per 2 km cell along each axis (50 at 40 m)."""


def amsr_grid_shape(sar_shape: tuple[int, int], factor: int = AMSR_FACTOR) -> tuple[int, int]:
    """Return the 2 km grid shape the files use for a SAR grid of ``sar_shape``.

    The published files hold ``floor(H / 25)`` x ``floor(W / 25)`` cells at 80 m.

    Args:
        sar_shape: ``(sar_lines, sar_samples)``.
        factor: SAR pixels per 2 km cell (25 at 80 m, 50 at 40 m).

    Returns:
        ``(2km_grid_lines, 2km_grid_samples)``.
    """
    return sar_shape[0] // factor, sar_shape[1] // factor


# ----------------------------------------------------------------------------- charts

CHARTS: Final = ("SIC", "SOD", "FLOE")
"""The three ice-chart properties, in the order used everywhere."""

Chart = Literal["SIC", "SOD", "FLOE"]

CHART_FILL: Final = 255
"""Value of a masked chart pixel (land, outside the chart, no SAR)."""

N_CLASSES: Final = {"SIC": 11, "SOD": 6, "FLOE": 7}

CLASS_NAMES: Final = {
    "SIC": tuple(f"{10 * k} %" for k in range(11)),
    "SOD": (
        "Open water",
        "New ice",
        "Young ice",
        "Thin first-year ice",
        "Thick first-year ice",
        "Old ice",
    ),
    "FLOE": (
        "Open water",
        "Cake ice",
        "Small floe",
        "Medium floe",
        "Big floe",
        "Vast floe",
        "Bergs",
    ),
}

CHART_LONG_NAMES: Final = {
    "SIC": "Sea Ice Concentration [%]",
    "SOD": "Stage of Development",
    "FLOE": "Floe Size",
}

# ----------------------------------------------------------------------------- variables

SAR_VARIABLES: Final = ("nersc_sar_primary", "nersc_sar_secondary")
INCIDENCE_VARIABLE: Final = "sar_incidenceangle"
DISTANCE_VARIABLE: Final = "distance_map"
AMSR2_FREQUENCIES: Final = ("6.9", "7.3", "10.7", "18.7", "23.8", "36.5", "89.0")
AMSR2_VARIABLES: Final = tuple(
    f"btemp_{f.replace('.', '_')}{p}" for f in AMSR2_FREQUENCIES for p in ("h", "v")
)
ERA5_VARIABLES: Final = ("u10m_rotated", "v10m_rotated", "t2m", "skt", "tcwv", "tclw")
LATLON_VARIABLES: Final = ("sar_grid2d_latitude", "sar_grid2d_longitude")

ERA5_UNITS: Final = {
    "u10m_rotated": "m/s",
    "v10m_rotated": "m/s",
    "t2m": "K",
    "skt": "K",
    "tcwv": "kg/m2",
    "tclw": "kg/m2",
}
ERA5_LONG_NAMES: Final = {
    "u10m_rotated": "ERA5 10m u-component of wind rotated to account for S-1 flight direction",
    "v10m_rotated": "ERA5 10m v-component of wind rotated to account for S-1 flight direction",
    "t2m": "ERA5 2m air temperature",
    "skt": "ERA5 skin temperature",
    "tcwv": "ERA5 total column water vapour",
    "tclw": "ERA5 total cloud liquid water",
}

DISTANCE_ZONES_DESCRIPTION: Final = (
    "0 -> land, 1 -> 0-0.5 km, 2 -> 0.5-1 km, 3..21 -> 1 km bins from 1-2 km to 19-20 km, "
    "22..27 -> 5 km bins from 20-25 km to 45-50 km, 28..32 -> 10 km bins from 50-60 km to "
    "90-100 km, 33..40 -> 25 km bins from 100-125 km to 275-300 km, 41 -> >300 km"
)


@dataclass(frozen=True)
class VariableSpec:
    """What a ready-to-train file holds under one variable name.

    Attributes:
        name: Variable name.
        dims: Dimension names, in order.
        dtype: Expected numpy dtype.
        attrs: Attribute names every real file carries on this variable.
    """

    name: str
    dims: tuple[str, ...]
    dtype: np.dtype
    attrs: tuple[str, ...] = field(default=())


def _r2t_variables() -> tuple[VariableSpec, ...]:
    u8, f32, f64 = np.dtype("uint8"), np.dtype("float32"), np.dtype("float64")
    specs = [VariableSpec(c, SAR_DIMS, u8, ("polygon", "chart_fill_value")) for c in CHARTS]
    specs += [VariableSpec(v, TIEPOINT_DIMS, f64) for v in LATLON_VARIABLES]
    sar_attrs = ("polarisation", "upstream_id", "description", "min", "max", "variable_fill_value")
    specs += [VariableSpec(v, SAR_DIMS, f32, sar_attrs) for v in SAR_VARIABLES]
    specs.append(VariableSpec(INCIDENCE_VARIABLE, SAR_DIMS, f32, ("variable_fill_value",)))
    specs.append(
        VariableSpec(DISTANCE_VARIABLE, SAR_DIMS, f32, ("long_name", "zonal_range_description"))
    )
    amsr_attrs = ("AMSR2_swaths", "AMSR2_S1_delays", "min", "max", "description")
    specs += [VariableSpec(v, AMSR_DIMS, f32, amsr_attrs) for v in AMSR2_VARIABLES]
    specs += [VariableSpec(v, AMSR_DIMS, f32, ("units", "long_name")) for v in ERA5_VARIABLES]
    return tuple(specs)


R2T_VARIABLES: Final = _r2t_variables()
"""The 29 variables of a ready-to-train file, in file order."""

R2T_VARIABLE_NAMES: Final = tuple(s.name for s in R2T_VARIABLES)

INPUT_VARIABLES: Final = (
    *SAR_VARIABLES,
    INCIDENCE_VARIABLE,
    DISTANCE_VARIABLE,
    *AMSR2_VARIABLES,
    *ERA5_VARIABLES,
)
"""The 24 standardised input variables (the starter kit's ``SCENE_VARIABLES``)."""

GLOBAL_ATTRS: Final = ("scene_id", "original_id", "ice_service", "flip", "pixel_spacing")

# ----------------------------------------------------------------------------- file names

SCENE_NAME_RE: Final = re.compile(r"^(?P<time>\d{8}T\d{6})_(?P<service>dmi|cis)$")
PREP_SUFFIX: Final = "_prep.nc"
REFERENCE_SUFFIX: Final = "_prep_reference.nc"


def prep_file_name(scene_name: str) -> str:
    """Return the ready-to-train file name of a scene (``{time}_{svc}_prep.nc``)."""
    return scene_name + PREP_SUFFIX


def reference_file_name(scene_name: str) -> str:
    """Return the test-label file name of a scene (``{time}_{svc}_prep_reference.nc``)."""
    return scene_name + REFERENCE_SUFFIX


def scene_name_from_file(file_name: str) -> str:
    """Return the 19-character scene name (``20180124T194759_dmi``) of a prep file name.

    Raises:
        ValueError: If the name does not start with ``YYYYMMDDThhmmss_{dmi|cis}``.
    """
    base = file_name.rsplit("/", 1)[-1]
    name = base[:19]
    if not SCENE_NAME_RE.match(name):
        raise ValueError(
            f"'{base}' is not an AI4Arctic scene file name: expected it to start with "
            "YYYYMMDDThhmmss_dmi or YYYYMMDDThhmmss_cis"
        )
    return name


def scene_name_from_raw(raw_name: str) -> str:
    """Return the scene name of a raw file or data-list name.

    The official rule takes characters 17..32 (acquisition start) and 77..80 (ice
    service) of the raw name, whose Sentinel-1 prefix is always 67 characters long.

    Raises:
        ValueError: If the name does not have that layout.
    """
    base = raw_name.rsplit("/", 1)[-1]
    name = f"{base[17:32]}_{base[77:80]}"
    if not SCENE_NAME_RE.match(name) or "_icechart_" not in base:
        raise ValueError(
            f"'{base}' is not an AI4Arctic raw file name "
            "(S1x_EW_GRDM_1SDH_{start}_{stop}_..._icechart_{dmi|cis}_...)"
        )
    return name


def scene_time(scene_name: str) -> datetime:
    """Return the Sentinel-1 acquisition start time encoded in a scene name."""
    return datetime.strptime(scene_name[:15], "%Y%m%dT%H%M%S")


def scene_service(scene_name: str) -> str:
    """Return the ice service (``"dmi"`` or ``"cis"``) encoded in a scene name."""
    return scene_name[16:19]


OFFICIAL_TEST_SCENES: Final = (
    "20180124T194759_dmi",
    "20190810T110422_dmi",
    "20201013T080448_dmi",
    "20210328T202742_dmi",
    "20210410T201933_dmi",
    "20210430T205436_dmi",
    "20210506T075557_dmi",
    "20211212T211242_dmi",
    "20180623T114935_cis",
    "20180707T113313_cis",
    "20180716T110418_cis",
    "20180903T123331_cis",
    "20180917T121813_cis",
    "20190406T102029_cis",
    "20191011T131651_cis",
    "20200217T102731_cis",
    "20200319T101935_cis",
    "20200701T114012_cis",
    "20200719T123046_cis",
    "20210512T214149_cis",
)
"""The 20 scenes of the final AutoICE test set (starter kit ``testset.json`` at HEAD)."""

REMOVED_TRAINING_SCENE: Final = "20200625T081801_dmi"
"""Scene dropped from the training list in Feb 2023 for an ice-chart error."""
