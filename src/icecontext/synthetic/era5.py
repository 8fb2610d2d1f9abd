"""Smooth ERA5 fields on the 2 km grid (format reference §6.5).

ERA5's native grid is 0.25 deg, so every field is smooth: a scene-wide value plus a
Gaussian random field of correlation length 30-40 cells (60-80 km). Scene values
follow the season (monthly Arctic-marginal-sea climatology; planning values) and
land near the dataset statistics of §5.1: ``u10``/``v10`` mean 0.6-0.7, std 4.7-5.2
m/s; ``t2m`` 268.6 +- 9.5 K; ``skt`` 268.9 +- 10.3 K; ``tcwv`` 7.7 +- 5.3 kg/m2;
``tclw`` 0.041 +- 0.071 kg/m2. Air over open water is warmer than over ice in the
cold months, and the skin temperature of open water never drops below freezing.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from scipy import ndimage

from icecontext.synthetic.fields import gaussian_field

T2M_MONTH_K: Final = (250, 249, 251, 257, 266, 272, 275, 274, 270, 263, 256, 252)
TCWV_MONTH: Final = (2.5, 2.4, 2.8, 4.0, 6.5, 10.5, 14.0, 13.0, 9.5, 6.0, 3.8, 2.8)
TCLW_MONTH: Final = (0.02, 0.02, 0.02, 0.025, 0.035, 0.05, 0.06, 0.07, 0.07, 0.06, 0.04, 0.025)
FREEZING_SEA_K: Final = 271.35


def make_era5(
    shape: tuple[int, int],
    *,
    month: int,
    latitude: float,
    ice_concentration: np.ndarray,
    land_fraction: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Draw the six ERA5 fields.

    Args:
        shape: 2 km grid shape.
        month: Calendar month.
        latitude: Scene centre latitude (colder further north).
        ice_concentration: Ice fraction of the sea in each 2 km cell.
        land_fraction: Land fraction of each 2 km cell.
        rng: Random generator.

    Returns:
        ``u10m_rotated``, ``v10m_rotated`` (m/s), ``t2m``, ``skt`` (K), ``tcwv``,
        ``tclw`` (kg/m2) as float64 arrays of ``shape``.
    """
    if shape[0] == 0 or shape[1] == 0:
        return {
            k: np.zeros(shape)
            for k in ("u10m_rotated", "v10m_rotated", "t2m", "skt", "tcwv", "tclw")
        }

    def field(corr: float) -> np.ndarray:
        return gaussian_field(shape, corr, rng).astype(np.float64)

    u = rng.normal(0.6, 4.0) + 1.8 * field(30.0)
    v = rng.normal(0.6, 4.5) + 1.8 * field(30.0)
    base = T2M_MONTH_K[month - 1] - 0.4 * max(latitude - 70.0, 0.0) + rng.normal(0.0, 3.0)
    conc = ndimage.gaussian_filter(np.clip(ice_concentration, 0, 1), 10.0, mode="nearest")
    open_sea = (1.0 - conc) * (1.0 - land_fraction)
    t2m = base + 2.0 * field(40.0) + max(0.0, FREEZING_SEA_K - base) * 0.35 * open_sea
    sea_skin = np.maximum(FREEZING_SEA_K, t2m + 1.0)
    ice_skin = np.minimum(t2m - 1.5, 273.15)
    skt = (1 - land_fraction) * (conc * ice_skin + (1 - conc) * sea_skin)
    skt += land_fraction * (t2m - 1.0)
    skt += 0.5 * field(20.0)
    tcwv = TCWV_MONTH[month - 1] * np.exp(rng.normal(0.0, 0.3)) * (1.0 + 0.15 * field(35.0))
    tcwv = np.clip(tcwv, 0.2, 40.0)
    g = field(15.0)
    # log-normal with mean 1 (sigma 0.7), clear sky (0) where the field is lowest
    tclw = TCLW_MONTH[month - 1] * np.exp(rng.normal(0.0, 0.3)) * np.exp(0.7 * g - 0.245)
    tclw = np.where(g < -1.0, 0.0, np.minimum(tclw, 1.2))
    return {
        "u10m_rotated": u,
        "v10m_rotated": v,
        "t2m": t2m,
        "skt": skt,
        "tcwv": tcwv,
        "tclw": tclw,
    }
