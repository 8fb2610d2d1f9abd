"""Known-truth scenes: chart labels that only context of a known radius can resolve.

The spatial-context study claims which receptive field suits which ice property. To
test the instrument, this generator writes scenes (in the exact AI4Arctic format) in
which the answer is known: each property ``T`` is a function of the scene within a disc
of radius ``R_T`` km around the pixel, and of nothing else.

Construction, per task ``T`` (docs/data.md, "Known-truth scenes"):

1. **Latent cells.** A Poisson-Voronoi tessellation with mean seed spacing
   ``c_T = cell_fraction * R_T`` covers the scene; every cell gets an independent
   ``N(0, 1)`` value. ``v_T(p)`` is the value of the cell holding pixel ``p``.
2. **Label.** ``z_T(p)`` is the mean of ``v_T`` over the disc of radius ``R_T`` around
   ``p``, divided by its standard deviation (a constant of ``cell_fraction`` and
   ``R_T`` in pixels, :func:`disc_mean_sd`), so ``z_T`` is ``N(0, 1)``. SIC is
   ``round(10 * Phi(z))`` (classes 1..9 equally frequent, 0 and 10 half as often: a
   regional ice-cover index); SOD and FLOE are the equal-probability quantile bins of
   ``z`` mapped to ``sod_classes`` / ``floe_classes``.
3. **What the pixels show** (each a function of the latent at the *same* pixel plus
   independent noise, so any single pixel is ambiguous about its label):

   * SIC: ice where ``v_SIC + ice_noise * n > 0`` (``n`` white per 80 m pixel): HH
     -14 dB on ice, -22 dB on water; HV -24 / -27 dB.
   * SOD: a texture: HV gets ``a * e`` dB with amplitude
     ``a = texture_db * exp(0.5 v_SOD)`` and ``e`` a unit Gaussian field of
     correlation length ``texture_km`` (a local variance, not a level).
   * FLOE: an HV level offset ``floe_db * v_FLOE``.
   * HH also carries ``speckle_db`` of white noise; the incidence angle and the
     distance map carry nothing.
   * AMSR2: each frequency is a standardised mix of the 2 km block means of the
     tasks' observables named in ``amsr2_signal`` (weights = correlations) and a
     smooth noise field; frequencies not named carry noise only. ERA5 fields are
     drawn for a uniform 50 % ice cover: they carry no chart information.

Why a smaller field cannot do better. A network output at ``p`` is a function of the
inputs within its receptive field, a square of half-width ``r`` (the field radius the
study reports); the inputs there are functions of the latent values of the cells that
meet that square and of noise independent of everything else. So no such network
predicts ``z_T(p)`` better than an oracle that knows those cells' values exactly; the
oracle's best prediction is the part of the disc mean from the cells it sees, with
correlation :func:`context_ceiling` to ``z``. With ``cell_fraction`` 0.25 the ceiling
is about 0.8 at ``r = R/2`` and 1 from about ``r = 0.75 R`` (the square's corners and
the cells it meets reach beyond ``r``). With AMSR2 inputs, ``r`` grows by the 2 km
cell's half-diagonal.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

import numpy as np
from pydantic import Field, field_validator, model_validator
from scipy import signal, spatial, stats

from icecontext.config import Section
from icecontext.data.io.format import (
    AMSR2_FREQUENCIES,
    AMSR_FACTOR,
    CHARTS,
    PIXEL_SPACING_M,
    amsr_grid_shape,
)
from icecontext.data.io.variables import GLOBAL_MEAN_STD
from icecontext.synthetic.amsr2 import amsr2_attributes
from icecontext.synthetic.era5 import make_era5
from icecontext.synthetic.fields import block_mean, gaussian_field
from icecontext.synthetic.geometry import (
    SceneIdentity,
    draw_swath,
    make_identity,
    make_tiepoints,
    swath_footprint,
)
from icecontext.synthetic.params import SynthParams
from icecontext.synthetic.physical import PhysicalScene

GENERATOR_VERSION: Final = "known-truth-1"
"""Bumped whenever the same seed and parameters would give a different scene."""

ICE_HH_DB: Final = (-22.0, -14.0)  # water, ice
ICE_HV_DB: Final = (-27.0, -24.0)
FAR_ZONE: Final = 41  # distance-map zone of open sea far from land
_STREAMS: Final = ("identity", "geometry", "SIC", "SOD", "FLOE", "sar", "era5", "amsr2")
_CEILING_R_PX: Final = 40  # disc radius (pixels) of the Monte Carlo ceiling computations


class KnownTruthParams(Section):
    """What makes a known-truth scene; every length in km.

    Attributes:
        radius_km: Context radius of each task (``SIC``, ``SOD``, ``FLOE``): its label
            is the disc mean of its latent cells over this radius.
        cell_fraction: Mean Voronoi seed spacing as a fraction of the radius (0.25:
            about 50 cells in a disc).
        ice_noise: Standard deviation of the per-pixel noise added to the SIC latent
            before the ice/water threshold (1: a cell at ``v = 0`` is half ice).
        texture_db: SOD texture amplitude (dB) at ``v_SOD = 0``.
        texture_km: Correlation length of the SOD texture.
        floe_db: HV level offset (dB) per unit of ``v_FLOE``.
        speckle_db: White noise on HH (dB).
        sod_classes: SOD classes of the quantile bins of ``z_SOD``, low to high.
        floe_classes: FLOE classes of the quantile bins of ``z_FLOE``, low to high.
        amsr2_signal: Per AMSR2 frequency (``"18.7"``...), the correlation of its
            brightness temperatures (H and V) with each task's 2 km block mean; the
            rest of its variance is noise. Frequencies not named carry noise only.
        amsr2_noise_km: Correlation length of the AMSR2 noise field.
    """

    radius_km: dict[str, float]
    cell_fraction: float = Field(default=0.25, gt=0.02, le=2.0)
    ice_noise: float = Field(default=1.0, ge=0.0, le=10.0)
    texture_db: float = Field(default=2.8, gt=0.0, le=10.0)
    texture_km: float = Field(default=0.16, ge=0.0, le=10.0)
    floe_db: float = Field(default=2.4, gt=0.0, le=10.0)
    speckle_db: float = Field(default=1.2, ge=0.0, le=10.0)
    sod_classes: list[int] = Field(default_factory=lambda: [1, 3, 5], min_length=2)
    floe_classes: list[int] = Field(default_factory=lambda: [2, 3, 4], min_length=2)
    amsr2_signal: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {"18.7": {"SIC": 0.9}, "36.5": {"SOD": 0.9}}
    )
    amsr2_noise_km: float = Field(default=2.0, gt=0.0, le=200.0)

    @field_validator("radius_km")
    @classmethod
    def _check_radii(cls, value: dict[str, float]) -> dict[str, float]:
        if set(value) != set(CHARTS):
            raise ValueError(f"give a radius for each of {', '.join(CHARTS)}, got {sorted(value)}")
        for task, r in value.items():
            if not 0.16 <= float(r) <= 100.0:
                raise ValueError(f"radius of {task} must be 0.16..100 km, got {r}")
        return {t: float(value[t]) for t in CHARTS}

    @field_validator("sod_classes", "floe_classes")
    @classmethod
    def _check_classes(cls, value: list[int], info: Any) -> list[int]:
        n = 6 if info.field_name == "sod_classes" else 7
        if len(set(value)) != len(value) or not all(0 <= c < n for c in value):
            raise ValueError(f"expected distinct classes 0..{n - 1}, got {value}")
        return value

    @model_validator(mode="after")
    def _check_amsr2(self) -> KnownTruthParams:
        for freq, mix in self.amsr2_signal.items():
            if freq not in AMSR2_FREQUENCIES:
                raise ValueError(
                    f"amsr2_signal: unknown frequency '{freq}' (use {', '.join(AMSR2_FREQUENCIES)})"
                )
            if set(mix) - set(CHARTS):
                raise ValueError(f"amsr2_signal.{freq}: tasks must be among {', '.join(CHARTS)}")
            if sum(w * w for w in mix.values()) >= 1.0 or any(w < 0 for w in mix.values()):
                raise ValueError(
                    f"amsr2_signal.{freq}: weights are correlations >= 0 whose squares sum "
                    f"below 1, got {mix}"
                )
        return self

    def radius_px(self, task: str) -> float:
        """The task's radius in 80 m pixels."""
        return self.radius_km[task] * 1000.0 / PIXEL_SPACING_M

    def informative_channels(self) -> dict[str, dict[str, float]]:
        """Per task, the input groups that carry it and how strongly (documented truth).

        SAR (``sar``: HH and HV) carries every task at its own pixel; AMSR2 frequencies
        carry the tasks of ``amsr2_signal`` with the given correlation (``amsr2:18.7``).
        """
        out: dict[str, dict[str, float]] = {t: {"sar": 1.0} for t in CHARTS}
        for freq, mix in self.amsr2_signal.items():
            for task, w in mix.items():
                if w > 0:
                    out[task][f"amsr2:{freq}"] = float(w)
        return out


# --------------------------------------------------------------------------- geometry


def voronoi_values(
    shape: tuple[int, int], spacing_px: float, rng: np.random.Generator
) -> np.ndarray:
    """Latent field: an independent N(0, 1) value per Poisson-Voronoi cell (float32)."""
    h, w = shape
    n = int(rng.poisson(h * w / spacing_px**2)) + 1
    seeds = np.column_stack([rng.uniform(0, h, n), rng.uniform(0, w, n)])
    values = rng.standard_normal(n).astype(np.float32)
    tree = spatial.cKDTree(seeds)
    out = np.empty(shape, np.float32)
    cols = np.arange(w) + 0.5
    step = max(1, 2_000_000 // max(w, 1))
    for r0 in range(0, h, step):  # rows in blocks: the query's temporaries stay small
        rows = np.arange(r0, min(h, r0 + step)) + 0.5
        yy, xx = np.meshgrid(rows, cols, indexing="ij")
        _, idx = tree.query(np.column_stack([yy.ravel(), xx.ravel()]))
        out[r0 : r0 + rows.size] = values[idx].reshape(rows.size, w)
    return out


def disc_kernel(radius_px: float) -> np.ndarray:
    """Normalised disc of ``radius_px`` (pixel centres within the radius)."""
    r = int(np.floor(radius_px))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    k = (yy * yy + xx * xx <= radius_px * radius_px).astype(np.float64)
    return k / k.sum()


def disc_mean(field: np.ndarray, radius_px: float) -> np.ndarray:
    """Mean of ``field`` over the disc around every pixel (same shape; FFT convolution)."""
    return signal.fftconvolve(field, disc_kernel(radius_px), mode="same").astype(np.float32)


@lru_cache(maxsize=64)
def _disc_moments(
    cell_fraction: float, radius_px: int, field_px: int, draws: int, seed: int
) -> tuple[float, float]:
    """Monte Carlo ``E[sum a_i^2]`` over all cells and over the cells meeting a field.

    ``a_i`` is cell ``i``'s share of the disc of ``radius_px``; the second sum keeps
    the cells that meet the central square of half-width ``field_px`` (a receptive
    field: convolutions reach as far along the diagonals as along the axes).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-radius_px : radius_px + 1, -radius_px : radius_px + 1]
    dd = yy * yy + xx * xx
    inside = dd <= radius_px * radius_px
    pts = np.column_stack([yy[inside], xx[inside]]).astype(float)
    near = np.maximum(np.abs(yy), np.abs(xx))[inside] <= field_px
    spacing = cell_fraction * radius_px
    half = radius_px + 3 * spacing + 2
    total = seen = 0.0
    for _ in range(draws):
        n = int(rng.poisson((2 * half) ** 2 / spacing**2)) + 1
        seeds = rng.uniform(-half, half, (n, 2))
        _, idx = spatial.cKDTree(seeds).query(pts)
        share = np.bincount(idx, minlength=n) / pts.shape[0]
        total += float((share**2).sum())
        if field_px >= 0:
            met = np.unique(idx[near])
            seen += float((share[met] ** 2).sum())
    return total / draws, seen / draws


def disc_mean_sd(cell_fraction: float, radius_px: float, draws: int = 300) -> float:
    """Standard deviation of the disc mean of iid N(0, 1) Voronoi cells (Monte Carlo).

    A deterministic function of its arguments (fixed internal seed), so every scene of
    the same parameters uses the same normalisation.
    """
    total, _ = _disc_moments(round(cell_fraction, 6), round(radius_px), -1, draws, 0)
    return float(np.sqrt(total))


def context_ceiling(field_over_radius: float, cell_fraction: float, draws: int = 300) -> float:
    """Correlation with ``z`` of the best prediction from a field of half-width ``f R``.

    ``f`` is ``field_over_radius``. The oracle knows exactly the latent values of every
    cell meeting the field's square (module docstring); any model whose output depends
    only on inputs in that square can do no better. 1 when the field covers the disc.
    """
    if field_over_radius >= 1.0:
        return 1.0
    field_px = int(np.floor(max(field_over_radius, 0.0) * _CEILING_R_PX))
    total, seen = _disc_moments(round(cell_fraction, 6), _CEILING_R_PX, field_px, draws, 1)
    return float(np.sqrt(seen / total))


def ceiling_accuracy(rho: float, n_classes: int, samples: int = 200_000) -> float:
    """Bayes accuracy of equal-probability classes of ``z`` from a predictor of correlation rho.

    With ``(z, zhat)`` standard bivariate normal, the best guess is the most probable
    class of ``z`` given ``zhat`` (Monte Carlo, fixed seed). An upper bound for the
    accuracy (and the weighted F1) of any model with that field.
    """
    rng = np.random.default_rng(0)
    zhat = rng.standard_normal(samples)
    z = rho * zhat + np.sqrt(max(0.0, 1.0 - rho * rho)) * rng.standard_normal(samples)
    edges = stats.norm.ppf(np.arange(1, n_classes) / n_classes)
    true = np.digitize(z, edges)
    # P(class k | zhat) from the conditional normal; pick the largest
    cdf = stats.norm.cdf(
        (np.concatenate([[-np.inf], edges, [np.inf]])[None, :] - rho * zhat[:, None])
        / max(np.sqrt(max(0.0, 1.0 - rho * rho)), 1e-9)
    )
    guess = np.argmax(np.diff(cdf, axis=1), axis=1)
    return float((guess == true).mean())


# --------------------------------------------------------------------------- labels


def quantile_classes(z: np.ndarray, classes: list[int]) -> np.ndarray:
    """Equal-probability bins of a standard normal ``z`` mapped to ``classes`` (uint8)."""
    edges = stats.norm.ppf(np.arange(1, len(classes)) / len(classes))
    return np.asarray(classes, np.uint8)[np.digitize(z, edges)]


def sic_classes(z: np.ndarray) -> np.ndarray:
    """SIC class ``round(10 * Phi(z))`` (uint8, 0..10)."""
    return np.clip(np.round(10.0 * stats.norm.cdf(z)), 0, 10).astype(np.uint8)


def _standardise_blocks(values: np.ndarray) -> np.ndarray:
    """2 km block means, standardised over the scene (mean 0, sd 1)."""
    blocks = block_mean(values.astype(np.float32), AMSR_FACTOR).astype(np.float64)
    sd = blocks.std()
    return (blocks - blocks.mean()) / (sd if sd > 0 else 1.0)


def _streams(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence([seed, 0x6B7]).spawn(len(_STREAMS))
    return {name: np.random.default_rng(s) for name, s in zip(_STREAMS, children, strict=True)}


def _latent_fields(
    shape: tuple[int, int], truth: KnownTruthParams, rng: dict[str, np.random.Generator]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per task, the Voronoi latent ``v_T`` and the normalised disc mean ``z_T``.

    The latent is drawn on a canvas padded by the radius, so the disc mean near the
    scene's border sees cells beyond it.
    """
    latents: dict[str, np.ndarray] = {}
    z: dict[str, np.ndarray] = {}
    for task in CHARTS:
        r_px = truth.radius_px(task)
        pad = int(np.ceil(r_px)) + 1
        canvas = (shape[0] + 2 * pad, shape[1] + 2 * pad)
        v = voronoi_values(canvas, truth.cell_fraction * r_px, rng[task])
        inner = (slice(pad, pad + shape[0]), slice(pad, pad + shape[1]))
        sd = disc_mean_sd(truth.cell_fraction, r_px)
        z[task] = disc_mean(v, r_px)[inner] / np.float32(sd)
        latents[task] = v[inner]
    return latents, z


def _chart_classes(
    z: Mapping[str, np.ndarray], truth: KnownTruthParams, valid: np.ndarray
) -> dict[str, np.ndarray]:
    """SIC, SOD and FLOE classes of ``z``; 255 outside the SAR footprint."""
    charts = {
        "SIC": sic_classes(z["SIC"]),
        "SOD": quantile_classes(z["SOD"], truth.sod_classes),
        "FLOE": quantile_classes(z["FLOE"], truth.floe_classes),
    }
    for name in CHARTS:
        charts[name][~valid] = 255
    return charts


def _known_truth_sar(
    latents: Mapping[str, np.ndarray],
    truth: KnownTruthParams,
    sar_valid: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HH and HV (dB, NaN outside the footprint) and the ice mask they show."""
    shape = sar_valid.shape
    ice = latents["SIC"] + np.float32(truth.ice_noise) * rng.standard_normal(shape, np.float32) > 0
    hh = np.where(ice, ICE_HH_DB[1], ICE_HH_DB[0]).astype(np.float32)
    hh += np.float32(truth.speckle_db) * rng.standard_normal(shape, np.float32)
    amplitude = np.float32(truth.texture_db) * np.exp(np.float32(0.5) * latents["SOD"])
    texture = gaussian_field(shape, truth.texture_km * 1000.0 / PIXEL_SPACING_M, rng)
    hv = np.where(ice, ICE_HV_DB[1], ICE_HV_DB[0]).astype(np.float32)
    hv += np.float32(truth.floe_db) * latents["FLOE"] + amplitude * texture
    hh[~sar_valid] = np.nan
    hv[~sar_valid] = np.nan
    return hh, hv, ice


def _truth_record(
    params: SynthParams, truth: KnownTruthParams, seed: int, ident: SceneIdentity
) -> dict[str, Any]:
    """The construction's parameters and what they imply (radii in pixels, normalisation)."""
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "params": params.model_dump(mode="json"),
        "known_truth": truth.model_dump(mode="json"),
        "informative_channels": truth.informative_channels(),
        "radius_px_80m": {t: truth.radius_px(t) for t in CHARTS},
        "disc_mean_sd": {t: disc_mean_sd(truth.cell_fraction, truth.radius_px(t)) for t in CHARTS},
        "month": ident.month,
        "centre_lat_lon": [ident.centre_lat, ident.centre_lon],
    }


def generate_known_truth_scene(
    params: SynthParams, truth: KnownTruthParams, seed: int
) -> PhysicalScene:
    """Generate one known-truth scene (module docstring) on the 80 m grid.

    The scene's identity, swath geometry and tie points are drawn as for the
    physical generator; there is no land. Its charts are per-pixel classes
    (``PhysicalScene.charts``), written unchanged to the ready-to-train file.

    Args:
        params: Scene size, service and date (scales and physics options unused).
        truth: The known-truth construction.
        seed: Random seed; the same ``(params, truth, seed)`` gives the same scene.
    """
    rng = _streams(seed)
    shape = (params.height, params.width)
    ident = make_identity(rng["identity"], params.service, params.scene_time)
    swath = draw_swath(rng["geometry"])
    tiepoints = make_tiepoints(shape, ident, swath, rng["geometry"])
    tiepoints.height = np.zeros_like(tiepoints.latitude)
    sar_valid = swath_footprint(shape, rng["geometry"])

    latents, z = _latent_fields(shape, truth, rng)
    charts = _chart_classes(z, truth, sar_valid)
    hh, hv, ice = _known_truth_sar(latents, truth, sar_valid, rng["sar"])

    grid2 = amsr_grid_shape(shape)
    observed = {
        "SIC": _standardise_blocks(ice),
        "SOD": _standardise_blocks(latents["SOD"]),
        "FLOE": _standardise_blocks(latents["FLOE"]),
    }
    amsr2 = make_known_truth_amsr2(grid2, observed, truth, rng["amsr2"])
    era5 = make_era5(
        grid2,
        month=ident.month,
        latitude=ident.centre_lat,
        ice_concentration=np.full(grid2, 0.5),
        land_fraction=np.zeros(grid2),
        rng=rng["era5"],
    )
    return PhysicalScene(
        scene_name=ident.scene_name,
        original_id=ident.original_id,
        icechart_id=ident.icechart_id,
        polygon_ids=np.where(sar_valid, 0.0, np.nan).astype(np.float32),
        polygon_codes=[],
        sar_valid=sar_valid,
        hh_db=hh,
        hv_db=hv,
        distance_zones=np.full(shape, FAR_ZONE, np.float32),
        tiepoints=tiepoints,
        amsr2=amsr2,
        era5=era5,
        amsr2_attrs=amsr2_attributes(ident.time, rng["amsr2"]),
        truth=_truth_record(params, truth, seed, ident),
        charts=charts,
    )


def make_known_truth_amsr2(
    grid2: tuple[int, int],
    observed: Mapping[str, np.ndarray],
    truth: KnownTruthParams,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Brightness temperatures (K) whose information content is ``truth.amsr2_signal``.

    Each variable is ``mean + sd * (sum_T w_T s_T + sqrt(1 - sum w^2) n)`` with ``s_T``
    the standardised block mean of task T's observable, ``n`` a unit Gaussian field
    of correlation length ``amsr2_noise_km`` (independent per variable), and mean and sd
    the dataset's (so standardised inputs are about N(0, 1)).
    """
    noise_px = truth.amsr2_noise_km * 1000.0 / (PIXEL_SPACING_M * AMSR_FACTOR)
    out: dict[str, np.ndarray] = {}
    for freq in AMSR2_FREQUENCIES:
        mix = truth.amsr2_signal.get(freq, {})
        rest = np.sqrt(1.0 - sum(w * w for w in mix.values()))
        for pol in ("h", "v"):
            name = f"btemp_{freq.replace('.', '_')}{pol}"
            mean, sd = GLOBAL_MEAN_STD[name]
            value = rest * gaussian_field(grid2, noise_px, rng).astype(np.float64)
            for task, w in mix.items():
                value = value + w * observed[task]
            out[name] = mean + sd * value
    return out
