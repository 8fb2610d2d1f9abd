"""Write a :class:`~icecontext.synthetic.physical.PhysicalScene` in the AI4Arctic formats.

* :func:`physical_to_r2t` gives the ready-to-train dataset. It goes through the same
  code as real raw files: :func:`icecontext.data.io.charts.convert_polygon_codes`, the
  incidence angle and lat/lon grid from the tie points, and
  :func:`icecontext.data.io.raw.assemble_r2t`. Write it with
  :func:`icecontext.data.io.scene.write_scene`.
* :func:`physical_to_raw` gives the raw 40 m layout (§2.2) and :func:`write_raw`
  writes it. The 40 m fields are built so that the raw path's 2 x 2 reductions give
  back the 80 m fields: polygon ids and distance zones are replicated 2 x 2, and
  sigma0 is the 80 m value replicated plus a seeded speckle-like perturbation that
  sums to zero in every 2 x 2 block. Hence ``convert-raw`` of the raw file equals
  :func:`physical_to_r2t` (charts exactly, inputs to float32 rounding).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import numpy as np
import xarray as xr

from icecontext.atomic import atomic_path
from icecontext.data.io.charts import convert_polygon_codes, rasterise_charts
from icecontext.data.io.format import (
    AMSR2_VARIABLES,
    AMSR_DIMS,
    DISTANCE_VARIABLE,
    DISTANCE_ZONES_DESCRIPTION,
    ERA5_LONG_NAMES,
    ERA5_UNITS,
    ERA5_VARIABLES,
    SAR_VARIABLES,
    scene_name_from_raw,
)
from icecontext.data.io.raw import (
    RAW_SAR_DIMS,
    SAR_DESCRIPTION,
    CoarseFields,
    SarGridFields,
    SceneIdentity,
    SourceAttributes,
    assemble_r2t,
    incidence_at_80m,
    latlon_grid_21,
)
from icecontext.errors import DataError
from icecontext.synthetic.physical import PhysicalScene, TiePoints

RAW_TITLE: Final = "Training data file from AI4Arctic_CCN challenge dataset (synthetic, icecontext)"
RAW_GEOMETRIC_INFO: Final = (
    "Sentinel-1 SAR, ice charts and distance maps are gridded in native EW-GRDM resolution "
    "(approx. 40 m); AMSR2 and NWP are gridded 2 km (every 50 x 50 Sentinel-1 pixels)"
)
RAW_DENOISE_DOC: Final = (
    "NERSC thermal noise removal, Korosov et al. (2022), doi:10.1109/TGRS.2021.3131036"
)
POLYGON_DESCRIPTION: Final = (
    "Polygon icechart - the polygon ids are gridded in native Sentinel-1 SAR geometry- "
    "and resolution"
)
SPECKLE_DB: Final = 1.0
"""Standard deviation (dB) of the zero-mean 40 m texture added to each 2 x 2 block."""

_BLOCK_ROWS: Final = 256  # 80 m rows per block when building 40 m arrays (fixed: seeds)


def _extremes(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)


def _sar_db(scene: PhysicalScene) -> tuple[np.ndarray, np.ndarray]:
    valid = np.asarray(scene.sar_valid, dtype=bool)
    hh = np.where(valid, scene.hh_db, np.nan).astype(np.float32)
    hv = np.where(valid, scene.hv_db, np.nan).astype(np.float32)
    return hh, hv


def physical_to_r2t(scene: PhysicalScene, *, clean: bool = False) -> xr.Dataset:
    """Build the ready-to-train dataset of a physical scene.

    Args:
        scene: The scene (80 m grid).
        clean: Convert the chart codes with the clean mode instead of the official one.

    Returns:
        The 29-variable dataset, ready for :func:`icecontext.data.io.scene.write_scene`.

    Raises:
        PolygonCodesError: If ``scene.polygon_codes`` is malformed.
        DataError: If the fields' shapes disagree.
    """
    ids = np.asarray(scene.polygon_ids, dtype=np.float32)
    if scene.charts is not None:  # per-pixel labels (known-truth scenes)
        charts = dict(scene.charts)
    else:
        charts = rasterise_charts(ids, convert_polygon_codes(scene.polygon_codes, clean=clean))
    hh, hv = _sar_db(scene)
    tp = scene.tiepoints
    lat, lon = latlon_grid_21(tp.line, tp.sample, tp.latitude, tp.longitude, scene.shape)
    return assemble_r2t(
        SarGridFields(
            charts=charts,
            chart_covered=np.isfinite(ids),
            hh_db=hh,
            hv_db=hv,
            incidence=incidence_at_80m(tp.line, tp.sample, tp.incidence_angle, scene.shape),
            distance=np.asarray(scene.distance_zones, dtype=np.float32),
        ),
        CoarseFields(amsr2=scene.amsr2, era5=scene.era5, latitude=lat, longitude=lon),
        SceneIdentity(scene_name=scene.scene_name, original_id=scene.original_id),
        SourceAttributes(amsr2=scene.amsr2_attrs),
    )


def _replicate(values: np.ndarray, odd: bool) -> np.ndarray:
    """Repeat every pixel 2 x 2; with ``odd``, append a copy of the last 40 m row/column."""
    out = np.repeat(np.repeat(values, 2, axis=0), 2, axis=1)
    if odd:
        out = np.concatenate([out, out[-1:]], axis=0)
        out = np.concatenate([out, out[:, -1:]], axis=1)
    return out


def _textured(values80: np.ndarray, rng: np.random.Generator, odd: bool) -> np.ndarray:
    """80 m dB values at 40 m plus a perturbation that sums to zero in each 2 x 2 block."""
    h, w = values80.shape
    out = np.empty((2 * h + odd, 2 * w + odd), dtype=np.float32)
    for r0 in range(0, h, _BLOCK_ROWS):
        r1 = min(h, r0 + _BLOCK_ROWS)
        noise = rng.normal(0.0, SPECKLE_DB, size=(r1 - r0, 2, w, 2))
        noise -= noise.mean(axis=(1, 3), keepdims=True)
        block = values80[r0:r1, None, :, None].astype(np.float64) + noise
        out[2 * r0 : 2 * r1, : 2 * w] = block.reshape(2 * (r1 - r0), 2 * w)
    if odd:  # the extra row/column is dropped by the conversion; give it texture anyway
        out[-1, : 2 * w] = out[-2, : 2 * w] + rng.normal(0.0, SPECKLE_DB, 2 * w)
        out[:, -1] = out[:, -2] + rng.normal(0.0, SPECKLE_DB, out.shape[0])
    return out


def raw_file_name(scene: PhysicalScene) -> str:
    """File name of the scene's raw file (format reference §2.1): its ``original_id``."""
    return scene.original_id


def _check_raw_scene(scene: PhysicalScene) -> None:
    """Raise DataError unless the scene can be written raw under its ``original_id``."""
    if scene.charts is not None:
        raise DataError(
            f"physical_to_raw: scene {scene.scene_name} has per-pixel labels (a known-truth "
            "scene), which the raw format's polygon chart cannot hold; write it ready-to-train"
        )
    try:
        from_file = scene_name_from_raw(scene.original_id)
    except ValueError as exc:
        raise DataError(f"physical_to_raw: original_id: {exc}") from exc
    if from_file != scene.scene_name:
        raise DataError(
            f"physical_to_raw: original_id '{scene.original_id}' names scene '{from_file}', "
            f"but the scene is '{scene.scene_name}'"
        )


def _add_raw_sar(ds: xr.Dataset, scene: PhysicalScene, rng: np.random.Generator, odd: bool) -> None:
    """HH and HV sigma0 (dB) at 40 m: the 80 m values plus a zero-sum 2 x 2 texture."""
    hh80, hv80 = _sar_db(scene)
    upstream = scene.original_id[:67]
    for var, values, pol in ((SAR_VARIABLES[0], hh80, "HH"), (SAR_VARIABLES[1], hv80, "HV")):
        lo, hi = _extremes(values)
        ds[var] = xr.DataArray(
            _textured(values, rng, odd),
            dims=RAW_SAR_DIMS,
            attrs={
                "polarisation": pol,
                "upstream_id": upstream,
                "description": SAR_DESCRIPTION,
                "min": lo,
                "max": hi,
            },
        )


def _add_raw_grids(ds: xr.Dataset, scene: PhysicalScene, odd: bool, with_chart: bool) -> None:
    """Polygon ids (optional) and distance zones replicated 2 x 2 to 40 m."""
    if with_chart:
        ds["polygon_icechart"] = xr.DataArray(
            _replicate(np.asarray(scene.polygon_ids, dtype=np.float32), odd),
            dims=RAW_SAR_DIMS,
            attrs={"description": POLYGON_DESCRIPTION, "icechart_id": scene.icechart_id},
        )
    ds[DISTANCE_VARIABLE] = xr.DataArray(
        _replicate(np.asarray(scene.distance_zones, dtype=np.float32), odd),
        dims=RAW_SAR_DIMS,
        attrs={
            "long_name": "Distance to land zones numbered with ids ranging from 0 to 41",
            "zonal_range_description": DISTANCE_ZONES_DESCRIPTION,
        },
    )


def _add_raw_tiepoints(ds: xr.Dataset, tp: TiePoints) -> None:
    """The 441 tie points as the raw ``sar_grid_*`` variables."""
    for name, values in (
        ("sar_grid_line", tp.line),
        ("sar_grid_sample", tp.sample),
        ("sar_grid_latitude", tp.latitude),
        ("sar_grid_longitude", tp.longitude),
        ("sar_grid_incidenceangle", tp.incidence_angle),
        ("sar_grid_height", tp.height),
    ):
        ds[name] = xr.DataArray(np.asarray(values, dtype=np.float64), dims=("sar_grid_points",))


def _add_raw_coarse(ds: xr.Dataset, scene: PhysicalScene) -> None:
    """AMSR2 brightness temperatures, the swath maps and ERA5 on the 2 km grid."""
    for var in AMSR2_VARIABLES:
        values = np.asarray(scene.amsr2[var], dtype=np.float64)
        freq = var[6:-1].replace("_", ".")
        pol = "horizontal" if var.endswith("h") else "vertical"
        lo, hi = _extremes(values)
        attrs: dict[str, object] = {"AMSR2_swaths": "", "AMSR2_S1_delays": 0}
        attrs.update(scene.amsr2_attrs.get(var, {}))
        attrs.update(
            min=lo,
            max=hi,
            description=f"Brightness temperature in K at {freq}GHz. Polarization: {pol}.",
        )
        ds[var] = xr.DataArray(values, dims=AMSR_DIMS, attrs=attrs)
    shape2 = next(iter(scene.amsr2.values())).shape if scene.amsr2 else (0, 0)
    for name, desc in (
        ("amsr2_swath_map", "AMSR2 swath that fills each 2 km cell (1-based)"),
        ("swath_segmentation", "Segmentation of the 2 km grid by AMSR2 swath"),
    ):
        ds[name] = xr.DataArray(
            np.ones(shape2, dtype=np.uint8), dims=AMSR_DIMS, attrs={"description": desc}
        )
    for var in ERA5_VARIABLES:
        ds[var] = xr.DataArray(
            np.asarray(scene.era5[var], dtype=np.float64),
            dims=AMSR_DIMS,
            attrs={"units": ERA5_UNITS[var], "long_name": ERA5_LONG_NAMES[var]},
        )


def physical_to_raw(
    scene: PhysicalScene, seed: int, *, with_chart: bool = True, odd: bool = False
) -> xr.Dataset:
    """Build the raw 40 m dataset of a physical scene (format reference §2.2).

    Args:
        scene: The scene (80 m grid).
        seed: Seed of the 40 m speckle texture.
        with_chart: Include ``polygon_icechart``/``polygon_codes``; ``False`` gives a
            raw *test* file.
        odd: Make the 40 m grid one row and one column larger (as real raw grids often
            are); the conversion drops them.

    Returns:
        The raw dataset (numpy-backed); write it with :func:`write_raw`.

    Raises:
        DataError: If the scene name does not match its ``original_id`` (the raw path
            derives the name from the file name) or the 2 km grid is inconsistent.
    """
    _check_raw_scene(scene)
    ds = xr.Dataset(
        attrs={
            "title": RAW_TITLE,
            "geometric_info": RAW_GEOMETRIC_INFO,
            "sar_denoise_by_nersc_documentation": RAW_DENOISE_DOC,
        }
    )
    _add_raw_sar(ds, scene, np.random.default_rng(seed), odd)
    _add_raw_grids(ds, scene, odd, with_chart)
    _add_raw_tiepoints(ds, scene.tiepoints)
    _add_raw_coarse(ds, scene)
    if with_chart:
        ds = ds.assign_coords(
            polygon_codes=xr.DataArray(
                np.array([str(c) for c in scene.polygon_codes], dtype=object),
                dims=("polygon_codes",),
                attrs={"icechart_id": scene.icechart_id},
            )
        )
    return ds


def write_raw(ds: xr.Dataset, path: str | os.PathLike[str], complevel: int = 1) -> Path:
    """Write a raw dataset to NetCDF-4 atomically.

    Float variables keep NaN as NaN (no ``_FillValue``); the string table
    ``polygon_codes`` is written uncompressed (variable-length strings cannot be).
    Name the file after the scene's ``original_id`` (:func:`raw_file_name`) so that
    readers derive the scene name from it.

    Returns:
        The written path.
    """
    encoding: dict[str, dict[str, object]] = {}
    for name, var in ds.variables.items():
        if var.dtype.kind in "OSU":
            continue
        encoding[str(name)] = {
            "zlib": complevel > 0,
            "complevel": complevel,
            "shuffle": True,
            "_FillValue": None,
        }
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, format="NETCDF4", engine="netcdf4", encoding=encoding)
    return Path(path)


# ----------------------------------------------------------------------------- example scene

# Rows of the format reference's conversion table (§2.4): fast ice, vast floes, the
# merge-overwrite quirk, pancake, water, unknown, ...
_EXAMPLE_CODES: Final = (
    "1;91;-9;93;08;-9;-9;-9;-9;-9;-9;-9;-9;08-9;I",
    "2;90;-9;93;07;-9;-9;-9;-9;-9;-9;-9;-9;-9-9;I",
    "3;80;20;95;06;60;93;06;-9;-9;-9;-9;-9;-9-9;I",
    "4;91;30;93;04;30;93;04;30;93;04;-9;-9;-9-9;I",
    "5;60;30;81;22;30;83;03;-9;-9;-9;-9;-9;-9-9;I",
    "6;02;-9;98;10;-9;-9;-9;-9;-9;-9;-9;-9;-9-9;W",
    "7;01;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9-9;W",
    "8;99;-9;99;99;-9;-9;-9;-9;-9;-9;-9;-9;-9-9;I",
    "9;30;20;95;06;10;93;06;-9;-9;-9;-9;-9;-9-9;I",
)
_HEADER: Final = "poly_id;CT;CA;SA;FA;CB;SB;FB;CC;SC;FC;CN;CD;CF;POLY_TYPE"


def _example_chart_and_footprint(
    height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Polygon ids (3 x 3 tiles), SAR footprint and distance zones of the example scene.

    Land fills the top-left corner (no polygon, no SAR), the bottom strip lies outside
    the chart, and the footprint's right edge is slanted.
    """
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    tile = (rows // max(height // 3, 1)).clip(0, 2) * 3 + (cols // max(width // 3, 1)).clip(0, 2)
    polygon_ids = (tile + 1).astype(np.float32)
    land = rows / height + cols / width < 0.3
    polygon_ids[land] = np.nan
    polygon_ids[rows >= height - max(height // 10, 1)] = np.nan  # outside the chart
    sar_valid = ~land & (cols < width - 1 - 0.2 * width * (1 - rows / max(height - 1, 1)))

    from scipy.ndimage import distance_transform_edt

    dist_km = distance_transform_edt(~land) * 0.08
    zones = np.where(land, 0.0, np.clip(np.floor(dist_km) + 2, 1, 41)).astype(np.float32)
    return polygon_ids, sar_valid, zones


def _example_tiepoints(height: int, width: int) -> TiePoints:
    """21 x 21 tie points in raw 40 m pixel units, line-major; incidence 19.5-46.5 deg."""
    t_lines = np.linspace(0.0, 2 * height - 1, 21)
    t_samples = np.linspace(0.0, 2 * width - 1, 21)
    ll, ss = np.meshgrid(t_lines, t_samples, indexing="ij")
    incidence = 19.5 + 27.0 * ss / (2 * width - 1)
    return TiePoints(
        line=ll.ravel(),
        sample=ss.ravel(),
        latitude=(72.0 + 0.9 * ll / (2 * height) - 0.1 * ss / (2 * width)).ravel(),
        longitude=(-30.0 + 1.5 * ss / (2 * width) + 0.2 * ll / (2 * height)).ravel(),
        incidence_angle=incidence.ravel(),
        height=np.zeros(ll.size),
    )


def _example_sar(
    polygon_ids: np.ndarray, sar_valid: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """HH and HV (dB): a level per polygon, an incidence slope and unit noise."""
    width = polygon_ids.shape[1]
    cols = np.arange(width, dtype=np.float64)[None, :]
    ia80 = 19.5 + 27.0 * (2 * cols + 0.5) / (2 * width - 1)
    base_hh = np.array([-16.0, -12.0, -10.0, -14.0, -20.0, -22.0, -21.0, -15.0, -9.0, -13.0])
    pid = np.nan_to_num(polygon_ids, nan=0).astype(int)
    hh = base_hh[pid] - 0.25 * (ia80 - 30.0) + rng.normal(0.0, 1.0, pid.shape)
    hv = base_hh[pid] - 12.0 - 0.1 * (ia80 - 30.0) + rng.normal(0.0, 1.0, pid.shape)
    hh = np.where(sar_valid, hh, np.nan).astype(np.float32)
    hv = np.where(sar_valid, hv, np.nan).astype(np.float32)
    return hh, hv


def _example_coarse(
    height: int, width: int, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Smooth AMSR2 (with a little noise) and ERA5 fields on the 2 km grid."""
    h2, w2 = height // 25, width // 25
    r2, c2 = np.mgrid[0:h2, 0:w2].astype(np.float64)
    amsr2 = {}
    for k, var in enumerate(AMSR2_VARIABLES):
        base = 150.0 + 5.0 * k if var.endswith("h") else 210.0 + 2.0 * k
        amsr2[var] = base + 3.0 * r2 - 2.0 * c2 + rng.normal(0.0, 0.3, (h2, w2))
    era5_base = {"u10m_rotated": 2.0, "v10m_rotated": -1.0, "t2m": 255.0, "skt": 252.0}
    era5_base |= {"tcwv": 4.0, "tclw": 0.02}
    era5 = {v: b + 0.05 * (r2 - c2) for v, b in era5_base.items()}
    return amsr2, era5


def example_physical_scene(
    height: int = 60, width: int = 76, *, seed: int = 0, service: str = "dmi"
) -> PhysicalScene:
    """A small hand-built :class:`PhysicalScene` for tests and examples.

    Independent of the physically based generator: nine chart polygons in tiles
    (codes from the format reference's table), land in the top-left corner and an
    unmapped strip at the bottom (no polygon), a slanted SAR footprint, backscatter
    by polygon plus noise, 21 x 21 tie points with the incidence angle rising across
    the swath, and smooth AMSR2/ERA5 fields on the 2 km grid.

    Args:
        height: 80 m lines.
        width: 80 m samples.
        seed: Seed of the noise.
        service: ``"dmi"`` or ``"cis"``.
    """
    rng = np.random.default_rng(seed)
    t0, t1 = "20190315T101500", "20190315T101600"
    prefix = f"S1A_EW_GRDM_1SDH_{t0}_{t1}_026000_02E7A1_1A2B"
    if service == "dmi":
        chart_id = "dmi_201903151015_CentralEast_RIC"
    else:
        chart_id = "cis_SGRDIEA_20190315T1015Z_pl_a"
    polygon_ids, sar_valid, zones = _example_chart_and_footprint(height, width)
    hh, hv = _example_sar(polygon_ids, sar_valid, rng)
    amsr2, era5 = _example_coarse(height, width, rng)
    return PhysicalScene(
        scene_name=f"{t0}_{service}",
        original_id=f"{prefix}_icechart_{chart_id}.nc",
        icechart_id=chart_id,
        polygon_ids=polygon_ids,
        polygon_codes=[_HEADER, *_EXAMPLE_CODES],
        sar_valid=sar_valid,
        hh_db=hh,
        hv_db=hv,
        distance_zones=zones,
        tiepoints=_example_tiepoints(height, width),
        amsr2=amsr2,
        era5=era5,
        amsr2_attrs={
            v: {
                "AMSR2_swaths": "GW1AM2_201903150912_178A_L1SGBTBR_2220220.h5",
                "AMSR2_S1_delays": 3690,
            }
            for v in AMSR2_VARIABLES
        },
    )
