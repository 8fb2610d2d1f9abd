"""Input-variable catalogue, feature groups and the official normalisation constants.

A model's inputs are chosen by a list of *selectors*: a group name (``"sar"``,
``"amsr2"``, ``"amsr2:18.7"``, ``"era5"``, ``"latlon"``, ...) or a single variable
name (``"btemp_36_5h"``). :func:`resolve_features` expands selectors into the
ordered list of channel names the model sees.

The 24 file variables are stored z-scored with the organisers' global mean and
standard deviation (starter kit ``misc/global_meanstd.npy`` at HEAD, copied here so
nothing is unpickled at run time). Four derived channels are computed on the fly:
``geo_sin_lat``/``geo_cos_lat``/``geo_sin_lon``/``geo_cos_lon`` from the tie-point
grid, and ``month_sin``/``month_cos`` from the acquisition date in the scene name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from icecontext.data.io.format import (
    AMSR2_FREQUENCIES,
    AMSR2_VARIABLES,
    DISTANCE_VARIABLE,
    ERA5_UNITS,
    ERA5_VARIABLES,
    INCIDENCE_VARIABLE,
    SAR_VARIABLES,
)
from icecontext.errors import ConfigError

Grid = Literal["sar", "2km", "derived"]

# (mean, std) of HEAD global_meanstd.npy, in physical units before scaling, at the
# precision the format reference (docs/data.md) quotes them.
GLOBAL_MEAN_STD: Final[dict[str, tuple[float, float]]] = {
    "nersc_sar_primary": (-14.5083, 5.6597),
    "nersc_sar_secondary": (-24.7012, 4.7468),
    "sar_incidenceangle": (33.9980, 8.3223),
    "distance_map": (23.6277, 14.9902),
    "btemp_6_9h": (148.8470, 61.6485),
    "btemp_6_9v": (203.5194, 38.6664),
    "btemp_7_3h": (149.8990, 61.6754),
    "btemp_7_3v": (204.2053, 38.6662),
    "btemp_10_7h": (153.8917, 60.8752),
    "btemp_10_7v": (208.9041, 36.2450),
    "btemp_18_7h": (165.6803, 52.6179),
    "btemp_18_7v": (218.5868, 28.0604),
    "btemp_23_8h": (182.2089, 42.8872),
    "btemp_23_8v": (226.3965, 22.1176),
    "btemp_36_5h": (185.1947, 38.6444),
    "btemp_36_5v": (228.2059, 17.6526),
    "btemp_89_0h": (212.5375, 22.5850),
    "btemp_89_0v": (241.2575, 16.3110),
    "u10m_rotated": (0.6748, 4.7496),
    "v10m_rotated": (0.6076, 5.1961),
    "t2m": (268.6265, 9.4692),
    "skt": (268.9102, 10.3053),
    "tcwv": (7.7477, 5.2686),
    "tclw": (0.04125, 0.07113),
}

LATLON_FEATURES: Final = ("geo_sin_lat", "geo_cos_lat", "geo_sin_lon", "geo_cos_lon")
MONTH_FEATURES: Final = ("month_sin", "month_cos")


@dataclass(frozen=True)
class InputVariable:
    """One input channel a model can be given.

    Attributes:
        name: Channel name (the file variable name for file variables).
        grid: ``"sar"`` (80 m grid), ``"2km"`` (AMSR2/ERA5 grid) or ``"derived"``
            (computed on the SAR grid from tie points or the scene name).
        group: Feature group it belongs to.
        units: Physical units before standardisation.
        mean: Global mean used for z-scoring (0 for derived channels).
        std: Global standard deviation used for z-scoring (1 for derived channels).
    """

    name: str
    grid: Grid
    group: str
    units: str
    mean: float = 0.0
    std: float = 1.0


def _catalogue() -> dict[str, InputVariable]:
    cat: dict[str, InputVariable] = {}

    def add(name: str, grid: Grid, group: str, units: str) -> None:
        mean, std = GLOBAL_MEAN_STD.get(name, (0.0, 1.0))
        cat[name] = InputVariable(name, grid, group, units, mean, std)

    for v in SAR_VARIABLES:
        add(v, "sar", "sar", "dB")
    add(INCIDENCE_VARIABLE, "sar", "incidence", "degree")
    add(DISTANCE_VARIABLE, "sar", "distance", "zone id (0..41)")
    for v in AMSR2_VARIABLES:
        add(v, "2km", "amsr2", "K")
    for v in ERA5_VARIABLES:
        add(v, "2km", "era5", ERA5_UNITS[v])
    for v in LATLON_FEATURES:
        add(v, "derived", "latlon", "1")
    for v in MONTH_FEATURES:
        add(v, "derived", "month", "1")
    return cat


CATALOGUE: Final[dict[str, InputVariable]] = _catalogue()
"""Every input channel by name, in canonical order."""


def _groups() -> dict[str, tuple[str, ...]]:
    groups: dict[str, tuple[str, ...]] = {
        "sar": SAR_VARIABLES,
        "hh": (SAR_VARIABLES[0],),
        "hv": (SAR_VARIABLES[1],),
        "incidence": (INCIDENCE_VARIABLE,),
        "distance": (DISTANCE_VARIABLE,),
        "amsr2": AMSR2_VARIABLES,
        "era5": ERA5_VARIABLES,
        "latlon": LATLON_FEATURES,
        "month": MONTH_FEATURES,
    }
    for f in AMSR2_FREQUENCIES:
        tag = f.replace(".", "_")
        groups[f"amsr2:{f}"] = (f"btemp_{tag}h", f"btemp_{tag}v")
        # "amsr2:89" is accepted for "amsr2:89.0"
        if f.endswith(".0"):
            groups[f"amsr2:{f[:-2]}"] = groups[f"amsr2:{f}"]
    groups["all"] = tuple(CATALOGUE)
    groups["challenge"] = (
        *SAR_VARIABLES,
        INCIDENCE_VARIABLE,
        DISTANCE_VARIABLE,
        *AMSR2_VARIABLES,
        *ERA5_VARIABLES,
    )
    return groups


FEATURE_GROUPS: Final[dict[str, tuple[str, ...]]] = _groups()
"""Named selectors and the channels they expand to."""


def valid_selectors() -> list[str]:
    """Return every accepted selector: group names first, then channel names."""
    return [*FEATURE_GROUPS, *CATALOGUE]


def resolve_features(selectors: str | Iterable[str], option: str = "data.features") -> list[str]:
    """Expand feature selectors into an ordered, duplicate-free list of channel names.

    Args:
        selectors: Group names and/or channel names, e.g. ``["sar", "amsr2:18.7"]``.
            A single comma-separated string (``"sar,incidence"``) is also accepted.
        option: Name of the option being resolved, used in error messages.

    Returns:
        Channel names in the order the selectors give them (a channel named twice
        keeps its first position).

    Raises:
        ConfigError: If a selector is unknown (the message lists the valid ones), or
            the selection is empty.
    """
    if isinstance(selectors, str):
        selectors = selectors.split(",")
    out: list[str] = []
    for raw in selectors:
        sel = raw.strip()
        if sel in FEATURE_GROUPS:
            names: Sequence[str] = FEATURE_GROUPS[sel]
        elif sel in CATALOGUE:
            names = (sel,)
        else:
            raise ConfigError(
                option,
                f"unknown feature '{sel}'; valid groups: {', '.join(FEATURE_GROUPS)}; "
                f"valid variables: {', '.join(CATALOGUE)}",
            )
        out.extend(n for n in names if n not in out)
    if not out:
        raise ConfigError(option, "the feature selection is empty; choose at least one feature")
    return out


def feature_grid(name: str) -> Grid:
    """Return the grid (``"sar"``, ``"2km"`` or ``"derived"``) of a channel."""
    return CATALOGUE[name].grid


def split_coarse(features: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split channel names into those on the 2 km grid and the others, keeping order.

    Returns:
        ``(others, on_2km)``.
    """
    names = list(features)
    return (
        [f for f in names if feature_grid(f) != "2km"],
        [f for f in names if feature_grid(f) == "2km"],
    )


def normalise(name: str, values: np.ndarray) -> np.ndarray:
    """Z-score physical values of channel ``name`` with the official constants."""
    var = CATALOGUE[name]
    return ((np.asarray(values, dtype=np.float64) - var.mean) / var.std).astype(np.float32)


def denormalise(name: str, values: np.ndarray) -> np.ndarray:
    """Turn z-scored values of channel ``name`` back into physical units (float64)."""
    var = CATALOGUE[name]
    return np.asarray(values, dtype=np.float64) * var.std + var.mean


def month_encoding(month: int) -> tuple[float, float]:
    """Return ``(sin, cos)`` of the month on the unit circle (January at angle 0).

    Args:
        month: Calendar month, 1..12.
    """
    if not 1 <= month <= 12:
        raise ValueError(f"month must be 1..12, got {month}")
    angle = 2.0 * np.pi * (month - 1) / 12.0
    return float(np.sin(angle)), float(np.cos(angle))


def latlon_encoding(lat_deg: np.ndarray, lon_deg: np.ndarray) -> dict[str, np.ndarray]:
    """Return the four geographic channels (sin/cos of latitude and longitude).

    Longitude is cyclic, so sin/cos removes the jump at ±180°; latitude gets the
    same treatment for symmetry. All values are in [-1, 1] and are not z-scored.
    """
    lat = np.deg2rad(np.asarray(lat_deg, dtype=np.float64))
    lon = np.deg2rad(np.asarray(lon_deg, dtype=np.float64))
    return {
        "geo_sin_lat": np.sin(lat).astype(np.float32),
        "geo_cos_lat": np.cos(lat).astype(np.float32),
        "geo_sin_lon": np.sin(lon).astype(np.float32),
        "geo_cos_lon": np.cos(lon).astype(np.float32),
    }
