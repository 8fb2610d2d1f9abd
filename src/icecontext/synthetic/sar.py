"""Sentinel-1 EW HH/HV backscatter (dB) of the rendered scene.

Per pixel, the ice part's backscatter and the open water's are mixed in linear power
by the pixel's ice fraction, thermal noise is added and imperfectly removed, and
multiplicative speckle is applied; values are clipped to HH [-35, 5] dB and
HV [-40, -5] dB (format reference §5.1 planning ranges).

Ice (values at 30 deg, dB, and slopes in dB/deg; format reference §6.2 and §6.3):

============  ================  ================  ==========================================
stage         level HH / HV     deformed HH / HV  source
============  ================  ================  ==========================================
new ice       -24.8 / -32.9                       Belgica Bank classifier, leads OW/new ice;
              slope -0.29/-0.13                   frost-flower patches +6 dB (Isleifson 2010)
young ice     -11.9 / -27.1                       Belgica Bank, leads with young ice
              slope -0.13/-0.04
thin FYI      -14.0 / -30.0     -12.0 / -23.4     NE Svalbard classifier (level / deformed);
              slope -0.25/-0.28 -0.24/-0.16       slopes Maekynen & Karvonen 2017
thick FYI     -15.6 / -30.7     -10.1 / -20.4     Belgica Bank level / deformed;
              slope -0.33/-0.28 -0.17/-0.06       slopes Belgica Bank
old ice       -11.0 / -21.0                       planning value (unverified, -8..-12 /
              slope -0.16/-0.10                   -18..-22); HH slope Mahmud et al. 2018
bergs         -2 / -10                            planning value (bright point targets)
land          -9 / -17                            planning value
============  ================  ================  ==========================================

**How the stage needs context (``sod_texture_px`` = L):** first-year ice blends its
level and deformed signatures through a ridge network (the zero set of a Gaussian
field of correlation length L, blended by ``exp(-(g / w)**2)`` with ``w`` 0.1 for thin
and 0.6 for thick first-year ice, a mean deformed share of 7 % and 39 %); old ice
carries hummocks (a field of length 1.5 L, +-2 dB HH, +-1.5 dB HV);
young ice is uniform with fine rafting texture (L / 3, +-0.8 dB); new ice is dark
with frost-flower patches (length 1.5 L). Single pixels overlap: a first-year ridge
pixel looks like old ice, a level thick-FYI pixel like thin FYI, the mean of thick FYI
(-13.6 dB HH) lies between young ice (-11.9 dB) and old ice (-11 dB). A single pixel
tells thick first-year from old ice right about 75 % of the time (best HH or HV
threshold); the local statistics over a window of about L pixels do so 95-100 % of
the time (``tests/synthetic/test_generator_scales.py``).

Open water (CMOD5.N + polarisation-ratio values of §6.2, as a fitted law):
``HH(U, theta) = A(theta) + B(theta) * 10 log10(U / 8 m/s) + 0.8 cos(2 phi)`` with
``A`` through -4.1, -14.2, -21.5, -24.2 dB at 20, 30, 40, 45 deg (the 8 m/s values)
and ``B = 1.31 + 0.024 (theta - 30)`` (from the 3-12 m/s values at 30 and 40 deg);
``phi`` is the wind direction relative to the range (sample) axis, taking
``u10m_rotated`` as the along-range component (an assumption, §7.11). HV of water
is HH - 12 dB + 0.25 (theta - 30), near the noise floor. The wind is ERA5's,
interpolated to 80 m, modulated by +-12 % gusts (2 km cells) and damped by up to
70 % among floes (local ice fraction), so leads are calm and dark.

Where resolvable floes touch, their common boundary is rubble: the signature is pulled
70 % towards the deformed first-year one, so floe outlines show even in 10/10 pack.

Noise: the EW noise-equivalent sigma0 (max -22 dB) is modelled per sub-swath
(EW1..EW5 boundaries at 29.2, 34.4, 39.6, 43.9 deg) as a bowl from -25 dB at the
centre to -22 dB at the edges; the thermal noise is added, speckled, and
subtracted with a per-sub-swath error (+-8 %) and azimuth scalloping (+-5 %),
which leaves the sub-swath steps and scalloping of denoised HV (KIT-intro).
Speckle: multiplicative Gamma with ``enl`` looks (default 20 at 80 m, a planning
value: 10.7 looks at 40 m, 2 x 2 averaging of correlated pixels).
Melt season: wet snow collapses the ice-type contrast (§6.2): ice signatures are
pulled towards HH -17 / HV -27 dB by 35 % (June), 60 % (July), 50 % (August),
20 % (September).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from icecontext.synthetic.icechart import GLACIER, NEW, OLD, THICK_FYI, THIN_FYI, YOUNG

LAND: Final = 7
_N = 8  # lookup-table length: 0 water, 1..6 stages, 7 land

HH_RANGE_DB: Final = (-35.0, 5.0)
HV_RANGE_DB: Final = (-40.0, -5.0)


def _lut(values: dict[int, float], default: float = 0.0) -> np.ndarray:
    out = np.full(_N, default, dtype=np.float32)
    for k, v in values.items():
        out[k] = v
    return out


# level (or only) signature at 30 deg and its slope
HH_LEVEL = _lut({NEW: -24.8, YOUNG: -11.9, THIN_FYI: -14.0, THICK_FYI: -15.6, OLD: -11.0,
                 GLACIER: -2.0, LAND: -9.0})  # fmt: skip
HV_LEVEL = _lut({NEW: -32.9, YOUNG: -27.1, THIN_FYI: -30.0, THICK_FYI: -30.7, OLD: -21.0,
                 GLACIER: -10.0, LAND: -17.0})  # fmt: skip
HH_SLOPE = _lut({NEW: -0.29, YOUNG: -0.13, THIN_FYI: -0.25, THICK_FYI: -0.33, OLD: -0.16,
                 GLACIER: -0.10, LAND: -0.20})  # fmt: skip
HV_SLOPE = _lut({NEW: -0.13, YOUNG: -0.04, THIN_FYI: -0.28, THICK_FYI: -0.28, OLD: -0.10,
                 GLACIER: -0.10, LAND: -0.15})  # fmt: skip
# deformed (ridged) end member, first-year ice only
HH_DEF = _lut({THIN_FYI: -12.0, THICK_FYI: -10.1})
HV_DEF = _lut({THIN_FYI: -23.4, THICK_FYI: -20.4})
HH_DEF_SLOPE = _lut({THIN_FYI: -0.24, THICK_FYI: -0.17})
HV_DEF_SLOPE = _lut({THIN_FYI: -0.16, THICK_FYI: -0.06})
HAS_RIDGES = _lut({THIN_FYI: 1.0, THICK_FYI: 1.0})
# ridge band half-width on the unit-variance field (area ~ 0.8 * width)
RIDGE_WIDTH = _lut({THIN_FYI: 0.10, THICK_FYI: 0.6}, default=1.0)
# texture amplitudes (dB) per texture field
HUMMOCK_HH = _lut({OLD: 2.0})
HUMMOCK_HV = _lut({OLD: 1.5})
RAFT_HH = _lut({YOUNG: 0.8})
RAFT_HV = _lut({YOUNG: 0.6})
FROST_HH = _lut({NEW: 6.0})
FROST_HV = _lut({NEW: 4.0})
TERRAIN_HH = _lut({LAND: 3.0})
TERRAIN_HV = _lut({LAND: 2.5})

# rubble where floes touch: blended 70 % towards the deformed-FYI signature
RUBBLE_HH: Final = (-10.1, -0.17)
RUBBLE_HV: Final = (-20.4, -0.06)
RUBBLE_WEIGHT: Final = 0.7

MELT_PULL: Final = {6: 0.35, 7: 0.6, 8: 0.5, 9: 0.2}
MELT_TARGET_DB: Final = (-17.0, -27.0)

SUBSWATH_EDGES_DEG: Final = (18.9, 29.18, 34.44, 39.63, 43.87, 47.0)
_WATER_A_THETA = np.array([20.0, 30.0, 40.0, 45.0])
_WATER_A_DB = np.array([-4.1, -14.2, -21.5, -24.2])

BLOCK_ROWS: Final = 256
"""Rows processed at a time (fixed, so random draws do not depend on memory)."""


def water_hh_db(wind: np.ndarray, theta: np.ndarray, rel_dir: np.ndarray) -> np.ndarray:
    """Open-water HH sigma0 (dB) for wind speed (m/s), incidence (deg), wind direction (rad)."""
    th = np.asarray(theta, dtype=np.float32)
    a = np.interp(th, _WATER_A_THETA, _WATER_A_DB).astype(np.float32)
    # linear extrapolation beyond the fitted angles
    a = np.where(th < 20.0, -4.1 + (th - 20.0) * -1.01, a)
    a = np.where(th > 45.0, -24.2 + (th - 45.0) * -0.54, a)
    b = np.float32(1.31) + np.float32(0.024) * (th - np.float32(30.0))
    speed = np.maximum(wind, np.float32(0.3))
    return (
        a
        + b * np.float32(10.0) * np.log10(speed / np.float32(8.0))
        + np.float32(0.8) * np.cos(2.0 * rel_dir)
    ).astype(np.float32)


def water_hv_db(hh_db: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Open-water HV sigma0 (dB) from its HH: 12 dB lower, less steep with incidence."""
    return hh_db - np.float32(12.0) + np.float32(0.25) * (theta - np.float32(30.0))


def nesz_db(theta: np.ndarray) -> np.ndarray:
    """Noise-equivalent sigma0 (dB): a -25..-22 dB bowl across each EW sub-swath."""
    edges = np.asarray(SUBSWATH_EDGES_DEG)
    k = np.clip(np.searchsorted(edges, theta, side="right") - 1, 0, len(edges) - 2)
    pos = (theta - edges[k]) / (edges[k + 1] - edges[k])
    return (-25.0 + 3.0 * (2.0 * pos - 1.0) ** 2).astype(np.float32)


def subswath_index(theta: np.ndarray) -> np.ndarray:
    """Sub-swath (0..4) of each incidence angle."""
    edges = np.asarray(SUBSWATH_EDGES_DEG)
    return np.clip(np.searchsorted(edges, theta, side="right") - 1, 0, len(edges) - 2)


_LN10_10 = np.float32(np.log(10.0) / 10.0)


def _db_to_power(db: np.ndarray) -> np.ndarray:
    out = db * _LN10_10
    return np.exp(out, out=out)


def _ice_db(
    st: np.ndarray,
    th30: np.ndarray,
    ridge_g: np.ndarray,
    hummock: np.ndarray,
    raft: np.ndarray,
    terrain: np.ndarray,
    pol: str,
) -> np.ndarray:
    """Backscatter (dB) of the ice (or land) in each pixel, by stage category."""
    if pol == "hh":
        level, slope, dfm, dslope = HH_LEVEL, HH_SLOPE, HH_DEF, HH_DEF_SLOPE
        textures = ((HUMMOCK_HH, hummock), (RAFT_HH, raft), (TERRAIN_HH, terrain))
        frost_amp = FROST_HH
    else:
        level, slope, dfm, dslope = HV_LEVEL, HV_SLOPE, HV_DEF, HV_DEF_SLOPE
        textures = ((HUMMOCK_HV, hummock), (RAFT_HV, raft), (TERRAIN_HV, terrain))
        frost_amp = FROST_HV
    present = np.zeros(_N, dtype=bool)
    present[np.unique(st)] = True
    out = level[st] + slope[st] * th30
    if (HAS_RIDGES[present] > 0).any():
        ridged = HAS_RIDGES[st] > 0
        d = np.exp(-np.square(ridge_g / RIDGE_WIDTH[st]))  # = ridge_network, per-stage width
        contrast = (dfm[st] - level[st]) + (dslope[st] - slope[st]) * th30
        out += np.where(ridged, d * contrast, np.float32(0.0))
    for amp, field in textures:
        if (amp[present] != 0).any():
            out += amp[st] * field
    if (frost_amp[present] != 0).any():
        frost = np.clip((hummock - np.float32(0.9)) * np.float32(2.0), 0.0, 1.0)
        out += frost_amp[st] * frost
    return out


@dataclass(frozen=True)
class SurfaceCover:
    """What covers each 80 m pixel.

    Attributes:
        ice_fraction: float32 (H, W) ice area fraction.
        stage: uint8 (H, W) stage category of the ice (0 none).
        rubble: uint8 (H, W) 1 where floes touch (ridged rubble).
        land: bool (H, W) land mask.
    """

    ice_fraction: np.ndarray
    stage: np.ndarray
    rubble: np.ndarray
    land: np.ndarray


@dataclass(frozen=True)
class SurfaceTextures:
    """Unit-variance texture fields that modulate the ice and land signatures.

    Attributes:
        ridge: float32 (H, W) field of length L (first-year ridge network).
        hummock: float32 (H, W) field of length 1.5 L (hummocks, frost flowers).
        raft: float32 (H, W) field of length L / 3 (young-ice rafting).
        terrain: float32 (H, W) land texture.
    """

    ridge: np.ndarray
    hummock: np.ndarray
    raft: np.ndarray
    terrain: np.ndarray

    def rows(self, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The fields' rows ``r0:r1``, in the order :func:`_ice_db` takes them."""
        return self.ridge[r0:r1], self.hummock[r0:r1], self.raft[r0:r1], self.terrain[r0:r1]


@dataclass(frozen=True)
class SurfaceWind:
    """The 10 m wind at the surface.

    Attributes:
        speed: float32 (H, W) wind speed (m/s).
        rel_dir: float32 (H, W) wind direction relative to the range axis (rad).
    """

    speed: np.ndarray
    rel_dir: np.ndarray


@dataclass(frozen=True)
class _Polarisation:
    """Per-polarisation constants: name, index of its noise draws, melt and rubble targets."""

    name: str
    index: int
    melt_target_db: float
    rubble_db: tuple[float, float]
    range_db: tuple[float, float]


_POLARISATIONS: Final = (
    _Polarisation("hh", 0, MELT_TARGET_DB[0], RUBBLE_HH, HH_RANGE_DB),
    _Polarisation("hv", 1, MELT_TARGET_DB[1], RUBBLE_HV, HV_RANGE_DB),
)


@dataclass(frozen=True)
class _ThermalNoise:
    """The EW noise floor and what its imperfect removal leaves.

    Attributes:
        floor: float32 (1, W) noise-equivalent sigma0, linear power.
        subswath: (W,) sub-swath of each column.
        error: float32 (2, 5) relative denoising error per polarisation and sub-swath.
        phase: float32 (2, 5) azimuth-scalloping phase per polarisation and sub-swath.
        period: Azimuth-scalloping period (rows).
    """

    floor: np.ndarray
    subswath: np.ndarray
    error: np.ndarray
    phase: np.ndarray
    period: np.float32

    @classmethod
    def draw(
        cls, incidence: np.ndarray, theta: np.ndarray, lines: int, rng: np.random.Generator
    ) -> _ThermalNoise:
        """Draw the per-sub-swath denoising errors and scalloping phases."""
        floor = _db_to_power(nesz_db(theta))
        subswath = subswath_index(incidence)
        error = rng.normal(0.0, 0.08, size=(2, 5)).astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi, size=(2, 5)).astype(np.float32)
        return cls(floor, subswath, error, phase, np.float32(max(lines / 6.0, 20.0)))

    def residual(self, k: int, rows: np.ndarray) -> np.ndarray:
        """Noise power subtracted by the denoising (polarisation ``k``, ``rows`` (n, 1))."""
        scallop = np.float32(0.05) * np.sin(
            np.float32(2 * np.pi) * rows / self.period + self.phase[k][self.subswath][None, :]
        )
        return (np.float32(1.0) + self.error[k][self.subswath][None, :] + scallop) * self.floor


@dataclass(frozen=True)
class _Block:
    """One block of rows of the scene, ready for the backscatter model.

    Attributes:
        rows: float32 (n, 1) row numbers.
        stage: uint8 (n, W) stage category, ``LAND`` on land.
        cover: float32 (n, W) ice fraction, 1 on land.
        textures: The texture fields' rows.
        rubble: bool (n, W) rubble mask.
        is_ice: bool (n, W) sea ice (not water, not land).
        water_db: HH and HV sigma0 (dB) of the open water.
    """

    rows: np.ndarray
    stage: np.ndarray
    cover: np.ndarray
    textures: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    rubble: np.ndarray
    is_ice: np.ndarray
    water_db: tuple[np.ndarray, np.ndarray]


def _block(
    r0: int,
    r1: int,
    surface: SurfaceCover,
    textures: SurfaceTextures,
    wind: SurfaceWind,
    theta: np.ndarray,
) -> _Block:
    st = surface.stage[r0:r1].copy()
    is_land = surface.land[r0:r1]
    st[is_land] = LAND
    water_hh = water_hh_db(wind.speed[r0:r1], theta, wind.rel_dir[r0:r1])
    return _Block(
        rows=np.arange(r0, r1, dtype=np.float32)[:, None],
        stage=st,
        cover=np.where(is_land, np.float32(1.0), surface.ice_fraction[r0:r1]),
        textures=textures.rows(r0, r1),
        rubble=surface.rubble[r0:r1] > 0,
        is_ice=(st > 0) & (st != LAND),
        water_db=(water_hh, water_hv_db(water_hh, theta)),
    )


def _ice_signature_db(
    block: _Block, th30: np.ndarray, pol: _Polarisation, pull: np.float32
) -> np.ndarray:
    """Ice (and land) backscatter (dB) with the rubble and the melt-season pull applied."""
    ice_db = _ice_db(block.stage, th30, *block.textures, pol=pol.name)
    if block.rubble.any():
        rub_db = np.float32(pol.rubble_db[0]) + np.float32(pol.rubble_db[1]) * th30
        ice_db += np.where(block.rubble, np.float32(RUBBLE_WEIGHT) * (rub_db - ice_db), 0.0)
    if pull > 0:
        ice_db += np.where(block.is_ice, pull * (np.float32(pol.melt_target_db) - ice_db), 0.0)
    return ice_db


def _observed_db(
    power: np.ndarray,
    residual: np.ndarray,
    noise: _ThermalNoise,
    enl: float,
    pol: _Polarisation,
    rng: np.random.Generator,
    out: np.ndarray,
) -> None:
    """Add thermal noise, speckle it, denoise imperfectly; write dB (clipped) into ``out``."""
    speckle = rng.standard_gamma(enl, size=power.shape, dtype=np.float32)
    speckle *= np.float32(1.0 / enl)
    power += noise.floor
    power *= speckle
    power -= residual
    np.maximum(power, np.float32(1e-5), out=power)
    lo, hi = pol.range_db
    np.log10(power, out=power)
    power *= np.float32(10.0)
    np.clip(power, lo, hi, out=out)


def synthesise_sar(
    surface: SurfaceCover,
    textures: SurfaceTextures,
    wind: SurfaceWind,
    *,
    incidence: np.ndarray,
    month: int,
    enl: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Return HH and HV sigma0 in dB (float32, clipped), block by block of rows.

    Args:
        surface: Ice fraction, stage, rubble and land of each pixel.
        textures: Ridge, hummock, rafting and terrain fields.
        wind: Surface wind speed and direction.
        incidence: float32 (W,) incidence angle per column (deg).
        month: Calendar month (melt-season contrast collapse).
        enl: Equivalent number of looks of the speckle.
        rng: Random generator (speckle, denoising errors).
    """
    h, w = surface.ice_fraction.shape
    theta = incidence.astype(np.float32)[None, :]
    th30 = theta - np.float32(30.0)
    noise = _ThermalNoise.draw(incidence, theta, h, rng)
    pull = np.float32(MELT_PULL.get(month, 0.0))
    out = (np.empty((h, w), dtype=np.float32), np.empty((h, w), dtype=np.float32))
    for r0 in range(0, h, BLOCK_ROWS):
        r1 = min(h, r0 + BLOCK_ROWS)
        block = _block(r0, r1, surface, textures, wind, theta)
        for pol in _POLARISATIONS:
            ice_db = _ice_signature_db(block, th30, pol, pull)
            water_power = _db_to_power(block.water_db[pol.index])
            power = _db_to_power(ice_db)
            power -= water_power
            power *= block.cover
            power += water_power  # f * ice + (1 - f) * water
            residual = noise.residual(pol.index, block.rows)
            _observed_db(power, residual, noise, enl, pol, rng, out[pol.index][r0:r1])
    return out
