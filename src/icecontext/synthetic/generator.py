"""The physically based synthetic scene generator: ``generate_scene(params, seed)``.

One call builds a :class:`~icecontext.synthetic.physical.PhysicalScene` (physical
units, 80 m grid) in these steps, each with its own random stream spawned from the
seed (so changing one step's parameters leaves the others' draws unchanged):

1. identity (time, service, region, names) and geometry (incidence angle, tie
   points, slanted swath footprint, chart region) - :mod:`.geometry`;
2. land, coast and distance-to-land zones - :mod:`.land`;
3. ice-chart polygons and their SIGRID-3 codes - :mod:`.icechart`;
4. floes and open water inside every polygon - :mod:`.floes`;
5. ERA5 fields and AMSR2 brightness temperatures on the 2 km grid - :mod:`.era5`,
   :mod:`.amsr2`;
6. HH/HV backscatter at 80 m - :mod:`.sar`.

The labels are *not* produced here: the writers convert ``polygon_codes`` with
:mod:`icecontext.data.io.charts`, exactly as for a real raw file. ``truth`` records
what the labels cannot show: the spatial scales, the rendered parts of each polygon
(floe diameters in pixels), and optionally the per-pixel ice fraction and stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from icecontext.data.io.format import AMSR_FACTOR, PIXEL_SPACING_M, amsr_grid_shape
from icecontext.synthetic.amsr2 import amsr2_attributes, make_amsr2
from icecontext.synthetic.era5 import make_era5
from icecontext.synthetic.fields import block_mean, gaussian_field, smooth, upsample_linear
from icecontext.synthetic.floes import FloeField, render_floes
from icecontext.synthetic.geometry import (
    SceneIdentity,
    SwathGeometry,
    draw_swath,
    make_identity,
    make_tiepoints,
    pixel_incidence,
    swath_footprint,
)
from icecontext.synthetic.icechart import (
    SEASON_OF_MONTH,
    STAGE_NAMES,
    ChartPolygon,
    PolygonStats,
    chart_region,
    codes_table,
    design_chart,
    draw_water_fraction,
    partition,
    polygon_stats,
)
from icecontext.synthetic.land import LandModel, draw_land_fraction, make_land
from icecontext.synthetic.params import SynthParams, SynthScales
from icecontext.synthetic.physical import PhysicalScene, TiePoints
from icecontext.synthetic.sar import SurfaceCover, SurfaceTextures, SurfaceWind, synthesise_sar

GENERATOR_VERSION: Final = "1"
"""Bumped whenever the same seed and parameters would give a different scene."""

_STREAMS: Final = (
    "identity",
    "geometry",
    "land",
    "chart",
    "fields",
    "floes",
    "era5",
    "amsr2",
    "texture",
    "sar",
)
_GUST_PX: Final = 25.0  # 2 km wind cells
_SHELTER_SIGMA_PX: Final = 4.0


def _streams(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    return {name: np.random.default_rng(s) for name, s in zip(_STREAMS, children, strict=True)}


def _polygon_means(labels: np.ndarray, land: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Mean of ``values`` over the sea pixels of each polygon (every s-th row/column)."""
    s = max(1, min(labels.shape) // 1000)
    sea = ~land[::s, ::s]
    lab = labels[::s, ::s][sea]
    total = np.bincount(lab, weights=values[::s, ::s][sea], minlength=n)
    return total / np.maximum(np.bincount(lab, minlength=n), 1)


def n_polygons(params: SynthParams) -> int:
    """Chart polygons: scene area over ``polygon_size_km**2``, at least ``min_polygons``."""
    km2 = params.height * params.width * (PIXEL_SPACING_M / 1000.0) ** 2
    return max(params.min_polygons, round(km2 / params.polygon_size_km**2))


@dataclass(frozen=True)
class _Geometry:
    """Step 1: who and where the scene is, and how the SAR saw it."""

    ident: SceneIdentity
    swath: SwathGeometry
    tiepoints: TiePoints
    sar_valid: np.ndarray
    incidence: np.ndarray


@dataclass(frozen=True)
class _Chart:
    """Step 3: the chart polygons, their codes and the per-pixel polygon ids."""

    polygons: list[ChartPolygon]
    stats: PolygonStats
    water_target: float
    polygon_ids: np.ndarray

    @property
    def size(self) -> int:
        """Number of polygons."""
        return len(self.polygons)


@dataclass(frozen=True)
class _CoarseFields:
    """Step 5: ERA5 and AMSR2 on the 2 km grid."""

    era5: dict[str, np.ndarray]
    amsr2: dict[str, np.ndarray]
    amsr2_attrs: dict[str, dict[str, object]]


def _draw_geometry(
    params: SynthParams, shape: tuple[int, int], rng: dict[str, np.random.Generator]
) -> tuple[_Geometry, np.ndarray]:
    """Identity, swath, tie points, SAR footprint and incidence; and the chart region."""
    ident = make_identity(rng["identity"], params.service, params.scene_time)
    swath = draw_swath(rng["geometry"])
    tiepoints = make_tiepoints(shape, ident, swath, rng["geometry"])
    sar_valid = swath_footprint(shape, rng["geometry"])
    region = chart_region(shape, rng["geometry"])
    incidence = pixel_incidence(shape, tiepoints)
    return _Geometry(ident, swath, tiepoints, sar_valid, incidence), region


def _draw_land(
    params: SynthParams, shape: tuple[int, int], tiepoints: TiePoints, rng: np.random.Generator
) -> LandModel:
    """Land, coast and distance zones; tie points on land get a terrain height."""
    land_target = (
        params.land_fraction if params.land_fraction is not None else draw_land_fraction(rng)
    )
    lm = make_land(shape, land_target, rng)
    tp_rows = np.clip(np.round(tiepoints.line / 2).astype(int), 0, shape[0] - 1)
    tp_cols = np.clip(np.round(tiepoints.sample / 2).astype(int), 0, shape[1] - 1)
    on_land = lm.land[tp_rows, tp_cols]
    tiepoints.height = np.where(on_land, rng.uniform(50.0, 800.0, on_land.size), 0.0).astype(
        np.float64
    )
    return lm


def _draw_chart(
    params: SynthParams,
    ident: SceneIdentity,
    lm: LandModel,
    region: np.ndarray,
    rng: np.random.Generator,
) -> tuple[_Chart, np.ndarray]:
    """Partition the scene into polygons and code them; also return the label image."""
    shape = (params.height, params.width)
    n = n_polygons(params)
    labels, _ = partition(shape, n, rng)
    stats = polygon_stats(labels, lm.land, lm.distance_km, n)
    water_target = (
        params.water_fraction
        if params.water_fraction is not None
        else draw_water_fraction(ident.month, rng)
    )
    polygons = design_chart(
        stats,
        shape,
        month=ident.month,
        service=ident.service,
        water_fraction=water_target,
        rng=rng,
    )
    ids = np.array([p.poly_id for p in polygons], dtype=np.float32)[labels]
    ids[lm.land | ~region] = np.nan
    return _Chart(polygons, stats, water_target, ids), labels


def _render_ice(
    labels: np.ndarray,
    land: np.ndarray,
    chart: _Chart,
    scales: SynthScales,
    rng: dict[str, np.random.Generator],
) -> tuple[FloeField, np.ndarray]:
    """Floes and open water in every polygon, and each polygon's rendered ice fraction."""
    shape = labels.shape
    cluster = gaussian_field(shape, scales.sic_cluster_px, rng["fields"])
    split = gaussian_field(shape, scales.sic_cluster_px, rng["fields"])
    floes = render_floes(
        labels, land, chart.polygons, cluster, split, scales.floe_size_factor, rng["floes"]
    )
    del cluster, split
    realised = _polygon_means(labels, land, floes.ice_fraction, chart.size)
    return floes, realised


def _coarse_fields(
    land: np.ndarray,
    floes: FloeField,
    ident: SceneIdentity,
    rng: dict[str, np.random.Generator],
) -> _CoarseFields:
    """ERA5 and AMSR2 on the 2 km grid from the block means of land and ice by stage."""
    ice, stage = floes.ice_fraction, floes.stage
    grid2 = amsr_grid_shape(land.shape)
    land2 = block_mean(land.astype(np.float32), AMSR_FACTOR)
    stage_fracs = {
        int(cat): block_mean(np.where(stage == cat, ice, np.float32(0.0)), AMSR_FACTOR)
        for cat in np.unique(stage)
        if cat > 0
    }
    ice2 = sum(stage_fracs.values(), np.zeros(grid2))
    water2 = np.clip(1.0 - land2 - ice2, 0.0, 1.0)
    conc2 = ice2 / np.maximum(1.0 - land2, 1e-6)
    era5 = make_era5(
        grid2,
        month=ident.month,
        latitude=ident.centre_lat,
        ice_concentration=conc2,
        land_fraction=land2,
        rng=rng["era5"],
    )
    amsr2 = make_amsr2(
        water=water2,
        stage_fractions=stage_fracs,
        land=land2,
        era5=era5,
        month=ident.month,
        rng=rng["amsr2"],
    )
    return _CoarseFields(era5, amsr2, amsr2_attributes(ident.time, rng["amsr2"]))


def _surface_wind(
    era5: dict[str, np.ndarray], ice: np.ndarray, rng: np.random.Generator
) -> SurfaceWind:
    """ERA5 wind at 80 m, with 2 km gusts and sheltered among the floes."""
    shape = ice.shape
    offset = (AMSR_FACTOR - 1) / 2
    u80 = upsample_linear(era5["u10m_rotated"], shape, AMSR_FACTOR, offset)
    v80 = upsample_linear(era5["v10m_rotated"], shape, AMSR_FACTOR, offset)
    rel_dir = np.arctan2(v80, u80)
    speed = np.hypot(u80, v80)
    del u80, v80
    speed *= np.float32(1.0) + np.float32(0.12) * gaussian_field(shape, _GUST_PX, rng)
    speed *= np.float32(1.0) - np.float32(0.7) * np.clip(smooth(ice, _SHELTER_SIGMA_PX), 0, 1)
    return SurfaceWind(speed=speed, rel_dir=rel_dir)


def _backscatter(
    params: SynthParams,
    geometry: _Geometry,
    lm: LandModel,
    floes: FloeField,
    era5: dict[str, np.ndarray],
    rng: dict[str, np.random.Generator],
) -> tuple[np.ndarray, np.ndarray]:
    """HH and HV (dB) at 80 m, NaN outside the SAR footprint."""
    shape = floes.ice_fraction.shape
    texture_px = params.scales.sod_texture_px
    wind = _surface_wind(era5, floes.ice_fraction, rng["texture"])
    textures = SurfaceTextures(
        ridge=gaussian_field(shape, texture_px, rng["texture"]),
        hummock=gaussian_field(shape, 1.5 * texture_px, rng["texture"]),
        raft=gaussian_field(shape, texture_px / 3.0, rng["texture"]),
        terrain=lm.terrain,
    )
    hh, hv = synthesise_sar(
        SurfaceCover(
            ice_fraction=floes.ice_fraction, stage=floes.stage, rubble=floes.rubble, land=lm.land
        ),
        textures,
        wind,
        incidence=geometry.incidence,
        month=geometry.ident.month,
        enl=params.enl,
        rng=rng["sar"],
    )
    hh[~geometry.sar_valid] = np.nan
    hv[~geometry.sar_valid] = np.nan
    return hh, hv


def _truth_record(
    params: SynthParams,
    seed: int,
    geometry: _Geometry,
    lm: LandModel,
    chart: _Chart,
    floes: FloeField,
    realised: np.ndarray,
) -> dict[str, Any]:
    """What the labels cannot show: the scales, each polygon's codes and rendered parts."""
    ident, swath = geometry.ident, geometry.swath
    truth: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "params": params.model_dump(mode="json"),
        "scales": params.scales.model_dump(mode="json"),
        "month": ident.month,
        "season": SEASON_OF_MONTH[ident.month],
        "region": ident.region,
        "centre_lat_lon": [ident.centre_lat, ident.centre_lon],
        "incidence_range_deg": [swath.near_deg, swath.far_deg],
        "land_fraction": lm.fraction,
        "water_fraction_target": chart.water_target,
        "stage_names": {str(k): v for k, v in STAGE_NAMES.items()},
        "polygons": [
            {
                "poly_id": p.poly_id,
                "regime": p.regime,
                "codes": p.codes_row(),
                "area_px": int(chart.stats.area[i]),
                "ice_fraction_coded": round(p.total, 4),
                "ice_fraction_rendered": round(float(realised[i]), 4),
                "parts": floes.parts.get(p.poly_id, []),
            }
            for i, p in enumerate(chart.polygons)
        ],
    }
    if params.keep_truth_arrays:
        truth["ice_fraction"] = floes.ice_fraction
        truth["stage"] = floes.stage
        truth["land"] = lm.land
        truth["incidence_deg"] = geometry.incidence
    return truth


def generate_scene(params: SynthParams, seed: int) -> PhysicalScene:
    """Generate one physically based synthetic scene.

    Args:
        params: Scene size, service, date, spatial scales and physics options.
        seed: Random seed; the same ``(params, seed)`` always gives the same scene.

    Returns:
        The scene in physical units (see :class:`PhysicalScene`); convert it with
        ``icecontext.synthetic.writers.physical_to_r2t`` or ``physical_to_raw``.
    """
    rng = _streams(seed)
    shape = (params.height, params.width)
    geometry, region = _draw_geometry(params, shape, rng)
    lm = _draw_land(params, shape, geometry.tiepoints, rng["land"])
    chart, labels = _draw_chart(params, geometry.ident, lm, region, rng["chart"])
    del region
    floes, realised = _render_ice(labels, lm.land, chart, params.scales, rng)
    del labels
    coarse = _coarse_fields(lm.land, floes, geometry.ident, rng)
    hh, hv = _backscatter(params, geometry, lm, floes, coarse.era5, rng)
    ident = geometry.ident
    return PhysicalScene(
        scene_name=ident.scene_name,
        original_id=ident.original_id,
        icechart_id=ident.icechart_id,
        polygon_ids=chart.polygon_ids,
        polygon_codes=codes_table(chart.polygons),
        sar_valid=geometry.sar_valid,
        hh_db=hh,
        hv_db=hv,
        distance_zones=lm.zones,
        tiepoints=geometry.tiepoints,
        amsr2=coarse.amsr2,
        era5=coarse.era5,
        amsr2_attrs=coarse.amsr2_attrs,
        truth=_truth_record(params, seed, geometry, lm, chart, floes, realised),
    )


def truth_summary(scene: PhysicalScene) -> dict[str, Any]:
    """The JSON-serialisable part of ``scene.truth`` (per-pixel arrays left out)."""
    return {k: v for k, v in scene.truth.items() if not isinstance(v, np.ndarray)}
