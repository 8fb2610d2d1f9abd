"""AMSR2 brightness temperatures on the 2 km grid (format reference §6.4).

For each 2 km cell, the surface is the mix of its 25 x 25 80 m pixels: open water,
the ice of each stage and land. Each channel's brightness temperature is

``TB = (1 - L) [ sum_s c_s TB_ice(s) + c_w TB_OW(U, V, Q) ] + L TB_land``

then blurred by the channel's footprint and perturbed by its radiometric noise:

* ice and water tie points per channel: the multi-frequency Arctic set of §6.4
  (open water / first-year / multi-year ice; 7.3 GHz uses the 6.9 GHz values);
  new ice is drawn as 60 % water + 40 % FYI, young ice 30/70, thin FYI 5/95
  (thin-ice emissivity; planning values), thick FYI as FYI, old ice and bergs as
  MYI. Ice temperatures scale the ice tie points by ``T_eff / 262.8 K`` with
  ``T_eff = 0.4 skt + 0.6 * 271.35 K``.
* open water warms with wind ``U`` (foam and roughness), water vapour ``V`` and
  cloud liquid water ``Q`` (planning sensitivities per channel, strongest at
  23.8 GHz for vapour and 36.5/89 GHz for cloud); ice sees a quarter of that.
* land emits ``e * skt`` with ``e`` 0.90 (H) / 0.96 (V), 0.86 / 0.90 at 89 GHz, so
  the coast spills warm values up to about one footprint offshore after blurring.
* footprints (WMO OSCAR IFOV) as isotropic Gaussians with FWHM ``sqrt(a b)`` :
  6.9/7.3 GHz 35 x 62 km (23 cells), 10.65 GHz 24 x 42 km (16), 18.7 GHz 14 x 22 km
  (8.8), 23.8 GHz 11 x 19 km (7.2), 36.5 GHz 7 x 12 km (4.6), 89 GHz 3 x 5 km (1.9).
* noise NEdT 0.3 K (6.9/7.3), 0.6 K (10.65-36.5), 1.1 K (89).
* melt season (June-August): wet snow pulls ice toward ``0.96 T_eff`` in both
  polarisations by 50 %, erasing the multi-year signature.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import numpy as np
from scipy import ndimage

from icecontext.data.io.format import AMSR2_FREQUENCIES, AMSR2_VARIABLES
from icecontext.synthetic.icechart import GLACIER, NEW, OLD, THICK_FYI, THIN_FYI, YOUNG

# (open water, first-year ice, multi-year ice) in K, per frequency and polarisation.
TIE_POINTS_K: Final = {
    "6.9": {"h": (82.13, 232.14, 218.74), "v": (161.35, 251.59, 242.91)},
    "7.3": {"h": (82.13, 232.14, 218.74), "v": (161.35, 251.59, 242.91)},
    "10.7": {"h": (88.26, 234.16, 212.47), "v": (167.34, 250.89, 235.26)},
    "18.7": {"h": (108.46, 237.16, 201.66), "v": (183.72, 251.56, 219.66)},
    "23.8": {"h": (128.23, 236.42, 192.09), "v": (196.41, 250.18, 208.82)},
    "36.5": {"h": (145.29, 235.15, 175.72), "v": (209.81, 246.29, 187.18)},
    "89.0": {"h": (196.94, 220.94, 169.52), "v": (243.20, 229.52, 178.01)},
}
FOOTPRINT_KM: Final = {
    "6.9": (35.0, 62.0),
    "7.3": (35.0, 62.0),
    "10.7": (24.0, 42.0),
    "18.7": (14.0, 22.0),
    "23.8": (11.0, 19.0),
    "36.5": (7.0, 12.0),
    "89.0": (3.0, 5.0),
}
NEDT_K: Final = {"6.9": 0.3, "7.3": 0.3, "10.7": 0.6, "18.7": 0.6, "23.8": 0.6, "36.5": 0.6,
                 "89.0": 1.1}  # fmt: skip
# open-water sensitivities (planning values): K per m/s of wind, per kg/m2 of vapour,
# per kg/m2 of cloud liquid water; (H, V)
WIND_K: Final = {"6.9": (0.8, 0.3), "7.3": (0.8, 0.3), "10.7": (0.9, 0.35), "18.7": (1.1, 0.5),
                 "23.8": (1.1, 0.5), "36.5": (1.2, 0.6), "89.0": (1.0, 0.5)}  # fmt: skip
VAPOUR_K: Final = {"6.9": (0.05, 0.03), "7.3": (0.05, 0.03), "10.7": (0.1, 0.05),
                   "18.7": (0.6, 0.35), "23.8": (1.6, 1.0), "36.5": (0.9, 0.5),
                   "89.0": (1.2, 0.6)}  # fmt: skip
CLOUD_K: Final = {"6.9": (5.0, 2.0), "7.3": (5.0, 2.0), "10.7": (10.0, 5.0),
                  "18.7": (40.0, 20.0), "23.8": (60.0, 30.0), "36.5": (100.0, 50.0),
                  "89.0": (150.0, 80.0)}  # fmt: skip
# radiometric mix (open water, FYI, MYI) of each stage category
STAGE_MIX: Final = {
    NEW: (0.6, 0.4, 0.0),
    YOUNG: (0.3, 0.7, 0.0),
    THIN_FYI: (0.05, 0.95, 0.0),
    THICK_FYI: (0.0, 1.0, 0.0),
    OLD: (0.0, 0.0, 1.0),
    GLACIER: (0.0, 0.0, 1.0),
}
CELL_KM: Final = 2.0
FWHM_TO_SIGMA: Final = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
MELT_MONTHS: Final = (6, 7, 8)


def footprint_sigma_cells(freq: str) -> float:
    """Gaussian standard deviation (2 km cells) of a frequency's footprint."""
    a, b = FOOTPRINT_KM[freq]
    return float(np.sqrt(a * b) / CELL_KM * FWHM_TO_SIGMA)


def make_amsr2(
    *,
    water: np.ndarray,
    stage_fractions: dict[int, np.ndarray],
    land: np.ndarray,
    era5: dict[str, np.ndarray],
    month: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Brightness temperatures (K) of the 14 channels on the 2 km grid.

    Args:
        water: Open-water fraction of each cell.
        stage_fractions: Ice fraction of each cell by stage category.
        land: Land fraction of each cell.
        era5: ERA5 fields on the same grid (wind, ``tcwv``, ``tclw``, ``skt``).
        month: Calendar month.
        rng: Random generator (noise).

    Returns:
        ``btemp_*`` float64 arrays in the format's channel order.
    """
    wind = np.hypot(era5["u10m_rotated"], era5["v10m_rotated"])
    skt = era5["skt"]
    t_eff = 0.4 * np.minimum(skt, 273.15) + 0.6 * 271.35
    t_scale = t_eff / (0.4 * 250.0 + 0.6 * 271.35)
    out: dict[str, np.ndarray] = {}
    for freq in AMSR2_FREQUENCIES:
        for k, pol in enumerate(("h", "v")):
            ow, fyi, myi = TIE_POINTS_K[freq][pol]
            weather = (
                WIND_K[freq][k] * (wind - 7.0)
                + VAPOUR_K[freq][k] * (era5["tcwv"] - 7.7)
                + CLOUD_K[freq][k] * era5["tclw"]
            )
            tb_ow = ow + weather
            sea = water * tb_ow
            for cat, frac in stage_fractions.items():
                w_ow, w_fyi, w_myi = STAGE_MIX[cat]
                tb_ice = (w_fyi * fyi + w_myi * myi) * t_scale + w_ow * ow + 0.25 * weather
                if month in MELT_MONTHS:
                    tb_ice = tb_ice + 0.5 * (0.96 * t_eff - tb_ice)
                sea = sea + frac * tb_ice
            e_land = (0.86, 0.90)[k] if freq == "89.0" else (0.90, 0.96)[k]
            tb = sea + land * e_land * skt
            if tb.size:
                tb = ndimage.gaussian_filter(tb, footprint_sigma_cells(freq), mode="nearest")
            tb = tb + rng.normal(0.0, NEDT_K[freq], size=tb.shape)
            out[f"btemp_{freq.replace('.', '_')}{pol}"] = np.clip(tb, 50.0, 300.0)
    return {name: out[name] for name in AMSR2_VARIABLES}


def amsr2_attributes(time: datetime, rng: np.random.Generator) -> dict[str, dict[str, object]]:
    """``AMSR2_swaths`` / ``AMSR2_S1_delays`` attributes: one L1 swath per scene."""
    delay = int(rng.integers(600, 20000))
    t = time - timedelta(seconds=delay)
    orbit = int(rng.integers(0, 1000))
    node = "A" if rng.random() < 0.5 else "D"
    swath = f"GW1AM2_{t:%Y%m%d%H%M}_{orbit:03d}{node}_L1SGBTBR_2220220.h5"
    return {name: {"AMSR2_swaths": swath, "AMSR2_S1_delays": delay} for name in AMSR2_VARIABLES}
