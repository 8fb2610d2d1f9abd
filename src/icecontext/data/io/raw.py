"""Raw 40 m AI4Arctic files -> the ready-to-train (80 m) layout.

A raw file (format reference §2.2) holds HH/HV sigma0 in dB at 40 m with NaN for no
data, the ice chart as polygon ids (``polygon_icechart``, NaN outside the chart) with
the SIGRID-3 code table ``polygon_codes``, distance-to-land zones, 441 geolocation and
incidence-angle tie points, and float64 AMSR2/ERA5 fields on the 2 km grid. Raw test
files have no chart variables.

:func:`raw_dataset_to_r2t` reproduces the organisers' production (§1.5):

1. charts: polygon codes -> SIC/SOD/FLOE at 40 m (:mod:`icecontext.data.io.charts`);
2. 40 m -> 80 m: inputs by a 2 x 2 mean (NaN if any of the four is NaN), charts by a
   2 x 2 max (255 wins); an odd last row/column is dropped (``floor``, as the 2 km
   grid's ``floor(lines / 50)``); the incidence angle is interpolated from the tie
   points at the 80 m pixel centres, 40 m coordinates ``(2 i + 0.5, 2 j + 0.5)``;
3. the steps shared with the synthetic writer, in :func:`assemble_r2t`: mask
   alignment, z-scoring with the official constants, fill values, the 29 variables
   in file order with their attributes, and the global attributes.

The 40 m arrays are read and reduced in blocks of rows, so converting a
10000 x 10400 scene holds only the 80 m result plus one block in memory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import xarray as xr

from icecontext.data.io.charts import PolygonClasses, PolygonCodesError, convert_polygon_codes
from icecontext.data.io.charts import rasterise_charts as _rasterise
from icecontext.data.io.format import (
    AMSR2_VARIABLES,
    AMSR_DIMS,
    CHART_FILL,
    CHART_LONG_NAMES,
    CHARTS,
    DISTANCE_VARIABLE,
    DISTANCE_ZONES_DESCRIPTION,
    ERA5_LONG_NAMES,
    ERA5_UNITS,
    ERA5_VARIABLES,
    INCIDENCE_VARIABLE,
    LATLON_VARIABLES,
    PIXEL_SPACING_M,
    R2T_VARIABLE_NAMES,
    SAR_DIMS,
    SAR_VARIABLES,
    SCENE_NAME_RE,
    TIEPOINT_DIMS,
    TIEPOINT_SHAPE,
    amsr_grid_shape,
    prep_file_name,
    scene_name_from_raw,
)
from icecontext.data.io.tiepoints import (
    TiePointGrid,
    interpolate_latlon,
    interpolate_tiepoints,
    uniform_grid,
)
from icecontext.data.io.variables import normalise
from icecontext.errors import DataError, SceneFormatError

RAW_SAR_DIMS: Final = ("sar_lines", "sar_samples")
"""Dimensions of the 40 m grid in raw files (same names as the 80 m grid)."""

TIEPOINT_VARIABLES: Final = (
    "sar_grid_line",
    "sar_grid_sample",
    "sar_grid_latitude",
    "sar_grid_longitude",
    "sar_grid_incidenceangle",
    "sar_grid_height",
)
"""The 441-point tie-point variables of raw files (dimension ``sar_grid_points``)."""

RAW_CHART_VARIABLES: Final = ("polygon_icechart", "polygon_codes")

RAW_REQUIRED_VARIABLES: Final = (
    *SAR_VARIABLES,
    DISTANCE_VARIABLE,
    *TIEPOINT_VARIABLES[:5],
    *AMSR2_VARIABLES,
    *ERA5_VARIABLES,
)
"""Variables every raw file (training or test) must hold for the conversion."""

SAR_DESCRIPTION: Final = "Sigma0 in dB"
_DEFAULT_BLOCK_ROWS: Final = 1024  # 80 m rows per block: ~2048 x 10400 x 4 B per 40 m array


# ----------------------------------------------------------------------------- 40 m -> 80 m


def downsample_mean(values: np.ndarray) -> np.ndarray:
    """2 x 2 block mean of a 40 m array (float32); NaN if any of the four is NaN.

    An odd last row or column is dropped. The mean is taken in float64, so a block
    of four float32 values whose deviations cancel gives back its centre value.
    """
    h, w = values.shape[0] // 2, values.shape[1] // 2
    blocks = np.asarray(values[: 2 * h, : 2 * w], dtype=np.float64).reshape(h, 2, w, 2)
    return blocks.mean(axis=(1, 3)).astype(np.float32)


def downsample_max(values: np.ndarray) -> np.ndarray:
    """2 x 2 block maximum of a 40 m chart (uint8, so 255 = masked wins)."""
    h, w = values.shape[0] // 2, values.shape[1] // 2
    return values[: 2 * h, : 2 * w].reshape(h, 2, w, 2).max(axis=(1, 3))


def downsample_any(mask: np.ndarray) -> np.ndarray:
    """2 x 2 block "any" of a 40 m boolean mask."""
    h, w = mask.shape[0] // 2, mask.shape[1] // 2
    return np.asarray(mask[: 2 * h, : 2 * w].reshape(h, 2, w, 2).any(axis=(1, 3)))


def pixel_centres_40m(n80: int) -> np.ndarray:
    """40 m coordinates of the centres of ``n80`` 80 m pixels (``2 i + 0.5``)."""
    return 2.0 * np.arange(n80) + 0.5


def incidence_at_80m(
    line: np.ndarray, sample: np.ndarray, incidence: np.ndarray, shape80: tuple[int, int]
) -> np.ndarray:
    """Incidence angle (degrees, float32) of every 80 m pixel from raw 40 m tie points."""
    return interpolate_tiepoints(
        line,
        sample,
        incidence,
        pixel_centres_40m(shape80[0]),
        pixel_centres_40m(shape80[1]),
        dtype=np.float32,
    )


def latlon_grid_21(
    line: np.ndarray,
    sample: np.ndarray,
    latitude: np.ndarray,
    longitude: np.ndarray,
    shape80: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """The ready-to-train 21 x 21 ``sar_grid2d_latitude/longitude`` from raw tie points.

    A 21 x 21 raw grid is reshaped line-major (axis 0 = lines), keeping its values.
    Any other grid is resampled at the positions the ready-to-train assumption gives
    (21 points spanning the 80 m image uniformly,
    :func:`~icecontext.data.io.tiepoints.uniform_grid`).

    Returns:
        ``(lat, lon)``, float64 21 x 21.
    """
    grid = TiePointGrid.from_points(line, sample)
    lat = np.asarray(latitude, dtype=np.float64).reshape(grid.shape)
    lon = np.asarray(longitude, dtype=np.float64).reshape(grid.shape)
    if grid.shape == TIEPOINT_SHAPE:
        return lat, lon
    target = uniform_grid(shape80)
    rows40 = 2.0 * target.lines + 0.5
    cols40 = 2.0 * target.samples + 0.5
    return interpolate_latlon(grid, lat, lon, rows40, cols40, dtype=np.float64)


# ----------------------------------------------------------------------------- assembly


def _extremes(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 0.0
    return float(finite.min()), float(finite.max())


@dataclass(frozen=True)
class SarGridFields:
    """The 80 m fields of a scene, before masking and z-scoring.

    Attributes:
        charts: ``{"SIC", "SOD", "FLOE"}`` uint8 at 80 m, 255 = masked.
        chart_covered: bool at 80 m, True where a chart polygon covers the pixel (all
            four 40 m pixels); ``None`` for scenes without a chart (raw test files),
            which are then masked by the SAR only.
        hh_db: HH sigma0 in dB at 80 m, NaN = no data.
        hv_db: HV sigma0 in dB at 80 m, NaN = no data.
        incidence: Incidence angle in degrees at 80 m.
        distance: Distance-to-land zone id at 80 m (never masked).
    """

    charts: Mapping[str, np.ndarray]
    chart_covered: np.ndarray | None
    hh_db: np.ndarray
    hv_db: np.ndarray
    incidence: np.ndarray
    distance: np.ndarray


@dataclass(frozen=True)
class CoarseFields:
    """The 2 km fields and the tie-point geolocation of a scene.

    Attributes:
        amsr2: The 14 brightness temperatures in K on the 2 km grid.
        era5: The 6 ERA5 fields in physical units on the 2 km grid.
        latitude: 21 x 21 tie-point latitudes (degrees, axis 0 = lines).
        longitude: 21 x 21 tie-point longitudes.
    """

    amsr2: Mapping[str, np.ndarray]
    era5: Mapping[str, np.ndarray]
    latitude: np.ndarray
    longitude: np.ndarray


@dataclass(frozen=True)
class SceneIdentity:
    """Names and global attributes of a scene.

    Attributes:
        scene_name: ``{YYYYMMDDThhmmss}_{dmi|cis}``.
        original_id: Name of the raw file the scene comes from.
        flip: The ``flip`` global attribute.
    """

    scene_name: str
    original_id: str
    flip: int = 0


@dataclass(frozen=True)
class SourceAttributes:
    """Variable attributes carried over from the source.

    Attributes:
        sar: Attributes per SAR variable to keep (``upstream_id``, ``min``, ``max``
            ...); missing ``min``/``max`` are computed from the data in dB.
        amsr2: Attributes per AMSR2 variable (``AMSR2_swaths``, ``AMSR2_S1_delays``,
            ``min``, ``max``, ``description``); missing ones are filled in.
        era5: Attributes per ERA5 variable; ``units``/``long_name`` default to the
            format's.
    """

    sar: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    amsr2: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    era5: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def assemble_r2t(
    fields: SarGridFields,
    coarse: CoarseFields,
    identity: SceneIdentity,
    attrs: SourceAttributes | None = None,
) -> xr.Dataset:
    """Apply the production steps shared by raw conversion and the synthetic writer.

    Steps (format reference §1.5, 3-6): mask alignment (HH, HV and the incidence
    angle become NaN where the chart has no polygon or the SAR has no data; charts
    become 255 where the SAR has no data); z-scoring of the 24 inputs with
    :data:`icecontext.data.io.variables.GLOBAL_MEAN_STD`; NaN -> 0 in SAR/IA; the 29
    variables in file order with every attribute; the 5 global attributes.

    Args:
        fields: The 80 m fields.
        coarse: The 2 km fields and the tie-point latitudes and longitudes.
        identity: Scene name, source file name and ``flip``.
        attrs: Variable attributes from the source (default: none).

    Returns:
        The scene in the ready-to-train layout (numpy-backed).

    Raises:
        DataError: If the arrays do not share the 80 m shape or the 2 km grid is not
            ``floor(H/25) x floor(W/25)``.
    """
    if not SCENE_NAME_RE.match(identity.scene_name):
        raise DataError(f"scene name '{identity.scene_name}' is not YYYYMMDDThhmmss_dmi|cis")
    _check_shapes(fields, coarse)
    attrs = attrs or SourceAttributes()
    sar_valid = np.isfinite(fields.hh_db) & np.isfinite(fields.hv_db)
    valid = sar_valid if fields.chart_covered is None else sar_valid & fields.chart_covered
    ds = xr.Dataset(
        attrs={
            "scene_id": prep_file_name(identity.scene_name),
            "original_id": identity.original_id,
            "ice_service": identity.scene_name[16:19],
            "flip": int(identity.flip),
            "pixel_spacing": PIXEL_SPACING_M,
        }
    )
    for c in CHARTS:
        chart = np.asarray(fields.charts[c], dtype=np.uint8).copy()
        chart[~sar_valid] = CHART_FILL
        ds[c] = xr.DataArray(
            chart, dims=SAR_DIMS, attrs={"polygon": CHART_LONG_NAMES[c], "chart_fill_value": 255}
        )
    for name, values in zip(LATLON_VARIABLES, (coarse.latitude, coarse.longitude), strict=True):
        ds[name] = xr.DataArray(np.asarray(values, dtype=np.float64), dims=TIEPOINT_DIMS)
    _add_sar_grid_inputs(ds, fields, valid, identity.original_id, attrs.sar)
    _add_coarse_inputs(ds, coarse, attrs)
    return ds[list(R2T_VARIABLE_NAMES)]


def _check_shapes(fields: SarGridFields, coarse: CoarseFields) -> None:
    """Raise DataError unless the 80 m fields share a shape and the 2 km grid fits it."""
    shape = fields.hh_db.shape
    named = {
        "hh_db": fields.hh_db,
        "hv_db": fields.hv_db,
        "incidence": fields.incidence,
        "distance": fields.distance,
        **{f"charts[{c}]": fields.charts[c] for c in CHARTS},
    }
    if fields.chart_covered is not None:
        named["chart_covered"] = fields.chart_covered
    for name, arr in named.items():
        if arr.shape != shape:
            raise DataError(f"assemble_r2t: {name} has shape {arr.shape}, expected {shape}")
    shape2 = amsr_grid_shape(shape)
    for name, arr in {**coarse.amsr2, **coarse.era5}.items():
        if arr.shape != shape2:
            raise DataError(
                f"assemble_r2t: {name} has shape {arr.shape}, expected the 2 km grid "
                f"floor(H/25) x floor(W/25) = {shape2}"
            )


def _add_sar_grid_inputs(
    ds: xr.Dataset,
    fields: SarGridFields,
    valid: np.ndarray,
    original_id: str,
    sar_attrs: Mapping[str, Mapping[str, Any]],
) -> None:
    """Add HH, HV, the incidence angle (masked, z-scored) and the distance (z-scored)."""

    def masked_z(var: str, values: np.ndarray) -> np.ndarray:
        z = normalise(var, values)
        z[~valid | ~np.isfinite(z)] = 0.0
        return z

    polarised = ((SAR_VARIABLES[0], fields.hh_db, "HH"), (SAR_VARIABLES[1], fields.hv_db, "HV"))
    for var, values, pol in polarised:
        attrs = dict(sar_attrs.get(var, {}))
        lo, hi = _extremes(values)
        attrs.setdefault("polarisation", pol)
        attrs.setdefault("upstream_id", original_id[:67])
        attrs.setdefault("description", SAR_DESCRIPTION)
        attrs.setdefault("min", lo)
        attrs.setdefault("max", hi)
        attrs["variable_fill_value"] = 0.0
        ordered = {
            k: attrs.pop(k) for k in ("polarisation", "upstream_id", "description", "min", "max")
        }
        ds[var] = xr.DataArray(masked_z(var, values), dims=SAR_DIMS, attrs={**ordered, **attrs})
    ds[INCIDENCE_VARIABLE] = xr.DataArray(
        masked_z(INCIDENCE_VARIABLE, fields.incidence),
        dims=SAR_DIMS,
        attrs={"variable_fill_value": 0.0},
    )
    ds[DISTANCE_VARIABLE] = xr.DataArray(
        normalise(DISTANCE_VARIABLE, fields.distance),
        dims=SAR_DIMS,
        attrs={
            "long_name": "Distance to land zones numbered with ids ranging from 0 to 41",
            "zonal_range_description": DISTANCE_ZONES_DESCRIPTION,
        },
    )


def _add_coarse_inputs(ds: xr.Dataset, coarse: CoarseFields, source: SourceAttributes) -> None:
    """Add the z-scored AMSR2 and ERA5 fields with their attributes."""
    for var in AMSR2_VARIABLES:
        values = np.asarray(coarse.amsr2[var])
        freq = var[6:-1].replace("_", ".")
        pol = "horizontal" if var.endswith("h") else "vertical"
        lo, hi = _extremes(values)
        attrs = {
            "AMSR2_swaths": "",
            "AMSR2_S1_delays": 0,
            "min": lo,
            "max": hi,
            "description": f"Brightness temperature in K at {freq}GHz. Polarization: {pol}.",
        }
        attrs.update(source.amsr2.get(var, {}))
        ds[var] = xr.DataArray(normalise(var, values), dims=AMSR_DIMS, attrs=attrs)
    for var in ERA5_VARIABLES:
        era5_attrs = {"units": ERA5_UNITS[var], "long_name": ERA5_LONG_NAMES[var]}
        era5_attrs.update(source.era5.get(var, {}))
        ds[var] = xr.DataArray(
            normalise(var, np.asarray(coarse.era5[var])), dims=AMSR_DIMS, attrs=era5_attrs
        )


# ----------------------------------------------------------------------------- raw files


def _where(source: str | os.PathLike[str] | None, ds: xr.Dataset) -> str:
    return str(source if source is not None else ds.encoding.get("source", "<raw dataset>"))


def _read(ds: xr.Dataset, var: str, where: str, index: Any = ()) -> np.ndarray:
    """Read (part of) a variable, turning a declared non-NaN _FillValue into NaN."""
    try:
        values = np.asarray(ds[var][index].values) if index != () else np.asarray(ds[var].values)
    except Exception as exc:  # netCDF4/HDF5 raise many kinds on truncated files
        raise SceneFormatError(where, var, f"data cannot be read (truncated file?): {exc}") from exc
    fill = ds[var].attrs.get("_FillValue", ds[var].encoding.get("_FillValue"))
    if values.dtype.kind == "f" and fill is not None and np.isfinite(fill):
        values = np.where(values == fill, np.nan, values)
    return values


def _raw_scene_name(ds: xr.Dataset, where: str) -> tuple[str, str]:
    """Return ``(scene name, original_id)`` from the file name, else from attributes."""
    base = Path(where).name
    try:
        return scene_name_from_raw(base), base
    except ValueError:
        pass
    upstream = str(ds[SAR_VARIABLES[0]].attrs.get("upstream_id", ""))
    chart_id = ""
    for var in RAW_CHART_VARIABLES:
        if var in ds.variables:
            chart_id = str(ds[var].attrs.get("icechart_id", "")) or chart_id
    name = f"{upstream[17:32]}_{chart_id[:3]}"
    if SCENE_NAME_RE.match(name):
        return name, f"{upstream}_icechart_{chart_id}.nc"
    raise SceneFormatError(
        where,
        None,
        "cannot tell the scene name: the file name does not follow the raw convention "
        "(S1x_EW_GRDM_1SDH_{start}_..._icechart_{dmi|cis}_...) and the attributes "
        "upstream_id / icechart_id do not give it",
    )


def _check_structure(ds: xr.Dataset, where: str) -> tuple[int, int]:
    for var in RAW_REQUIRED_VARIABLES:
        if var not in ds.variables:
            raise SceneFormatError(where, var, "missing (required in a raw AI4Arctic file)")
    for var in (*SAR_VARIABLES, DISTANCE_VARIABLE):
        if ds[var].dims != RAW_SAR_DIMS:
            raise SceneFormatError(
                where, var, f"has dimensions {ds[var].dims}, expected {RAW_SAR_DIMS}"
            )
    has_map, has_codes = (v in ds.variables for v in RAW_CHART_VARIABLES)
    if has_map and not has_codes:
        raise SceneFormatError(
            where, "polygon_codes", "missing: polygon_icechart needs its code table"
        )
    if has_codes and not has_map:
        raise SceneFormatError(
            where, "polygon_icechart", "missing: polygon_codes is present without the chart"
        )
    if has_map and ds["polygon_icechart"].dims != RAW_SAR_DIMS:
        raise SceneFormatError(
            where,
            "polygon_icechart",
            f"has dimensions {ds['polygon_icechart'].dims}, expected {RAW_SAR_DIMS}",
        )
    lines, samples = (ds.sizes[d] for d in RAW_SAR_DIMS)
    shape80 = (lines // 2, samples // 2)
    if min(shape80) < 1:
        raise SceneFormatError(
            where, SAR_VARIABLES[0], f"40 m grid {lines} x {samples} is too small"
        )
    expected = amsr_grid_shape(shape80)
    for var in (*AMSR2_VARIABLES, *ERA5_VARIABLES):
        if ds[var].shape != expected:
            raise SceneFormatError(
                where,
                var,
                f"2 km grid is {ds[var].shape}, expected floor(lines/50) x floor(samples/50) "
                f"= {expected} for the {lines} x {samples} 40 m grid",
            )
    return shape80


def raw_dataset_to_r2t(
    ds: xr.Dataset,
    source: str | os.PathLike[str] | None = None,
    *,
    clean: bool = False,
    block_rows: int = _DEFAULT_BLOCK_ROWS,
) -> xr.Dataset:
    """Convert an opened raw 40 m dataset to the ready-to-train layout.

    Args:
        ds: The raw file as :func:`xarray.open_dataset` returns it (lazily loaded).
        source: The file, named in error messages and used for the scene name.
        clean: Convert the charts with the clean mode of
            :func:`~icecontext.data.io.charts.convert_polygon_codes` instead of the
            official one.
        block_rows: 80 m rows converted at a time (memory bound).

    Returns:
        A numpy-backed dataset with the 29 ready-to-train variables. A raw test file
        (no chart variables) gets all-255 charts and is masked by its SAR only.

    Raises:
        SceneFormatError: If a variable is missing, has the wrong dimensions, cannot
            be read, or the polygon code table is malformed; the message names the
            file and the variable.
    """
    where = _where(source, ds)
    shape80 = _check_structure(ds, where)
    scene_name, original_id = _raw_scene_name(ds, where)
    classes: PolygonClasses | None = None
    if "polygon_codes" in ds.variables:
        try:
            classes = convert_polygon_codes(_read(ds, "polygon_codes", where), clean=clean)
        except PolygonCodesError as exc:
            raise SceneFormatError(where, "polygon_codes", str(exc)) from exc
    tp = {v: _read(ds, v, where) for v in TIEPOINT_VARIABLES[:5]}
    try:
        incidence = incidence_at_80m(
            tp["sar_grid_line"], tp["sar_grid_sample"], tp["sar_grid_incidenceangle"], shape80
        )
        lat, lon = latlon_grid_21(
            tp["sar_grid_line"],
            tp["sar_grid_sample"],
            tp["sar_grid_latitude"],
            tp["sar_grid_longitude"],
            shape80,
        )
    except DataError as exc:
        raise SceneFormatError(where, "sar_grid_line", str(exc)) from exc
    out = assemble_r2t(
        _reduce_sar_grid(ds, where, shape80, classes, block_rows, incidence),
        CoarseFields(
            amsr2={v: _read(ds, v, where) for v in AMSR2_VARIABLES},
            era5={v: _read(ds, v, where) for v in ERA5_VARIABLES},
            latitude=lat,
            longitude=lon,
        ),
        SceneIdentity(scene_name, original_id),
        _source_attributes(ds),
    )
    out.attrs["scene_name"] = scene_name
    return out


def _reduce_sar_grid(
    ds: xr.Dataset,
    where: str,
    shape80: tuple[int, int],
    classes: PolygonClasses | None,
    block_rows: int,
    incidence: np.ndarray,
) -> SarGridFields:
    """Read the 40 m SAR, distance and chart arrays in row blocks and reduce them to 80 m.

    Args:
        ds: The raw dataset.
        where: The file, for error messages.
        shape80: The 80 m shape.
        classes: The converted polygon codes; ``None`` for a file without a chart
            (charts all 255, no chart coverage).
        block_rows: 80 m rows converted at a time.
        incidence: The incidence angle at 80 m (from the tie points).
    """
    h, w = shape80
    hh = np.empty(shape80, np.float32)
    hv = np.empty(shape80, np.float32)
    dist = np.empty(shape80, np.float32)
    charts = {c: np.full(shape80, CHART_FILL, np.uint8) for c in CHARTS}
    covered = np.zeros(shape80, bool) if classes is not None else None
    step = max(1, int(block_rows))
    for r0 in range(0, h, step):
        r1 = min(h, r0 + step)
        rows40 = slice(2 * r0, 2 * r1)
        cols40 = slice(0, 2 * w)
        hh[r0:r1] = downsample_mean(_read(ds, SAR_VARIABLES[0], where, (rows40, cols40)))
        hv[r0:r1] = downsample_mean(_read(ds, SAR_VARIABLES[1], where, (rows40, cols40)))
        dist[r0:r1] = downsample_mean(_read(ds, DISTANCE_VARIABLE, where, (rows40, cols40)))
        if classes is not None and covered is not None:
            ids = _read(ds, "polygon_icechart", where, (rows40, cols40))
            block = _rasterise(ids, classes)
            for c in CHARTS:
                charts[c][r0:r1] = downsample_max(block[c])
            covered[r0:r1] = ~downsample_any(~np.isfinite(ids))
    return SarGridFields(
        charts=charts,
        chart_covered=covered,
        hh_db=hh,
        hv_db=hv,
        incidence=incidence,
        distance=dist,
    )


def _source_attributes(ds: xr.Dataset) -> SourceAttributes:
    """The attributes of the raw SAR, AMSR2 and ERA5 variables that the scene keeps."""
    return SourceAttributes(
        sar={
            v: {k: val for k, val in ds[v].attrs.items() if not k.startswith("_")}
            for v in SAR_VARIABLES
        },
        amsr2={
            v: {k: val for k, val in ds[v].attrs.items() if not k.startswith("_")}
            for v in AMSR2_VARIABLES
        },
        era5={
            v: {k: val for k, val in ds[v].attrs.items() if k in ("units", "long_name")}
            for v in ERA5_VARIABLES
        },
    )


def open_raw(
    path: str | os.PathLike[str], *, clean: bool = False, block_rows: int = _DEFAULT_BLOCK_ROWS
) -> xr.Dataset:
    """Read a raw 40 m file and convert it (see :func:`raw_dataset_to_r2t`).

    The file is opened with the same options as :func:`icecontext.data.io.scene.open_scene`
    and closed before returning; the result lives in memory.

    Raises:
        SceneFormatError: If the file is missing, unreadable or truncated, or not a
            valid raw file (the message names the file and the variable).
    """
    path = Path(path)
    if not path.is_file():
        raise SceneFormatError(
            path, None, "file does not exist" if not path.exists() else "is not a file"
        )
    try:
        ds = xr.open_dataset(
            path, engine="netcdf4", mask_and_scale=False, decode_times=False, cache=False
        )
    except Exception as exc:
        raise SceneFormatError(
            path, None, f"cannot be read as NetCDF-4/HDF5 (unreadable or truncated file): {exc}"
        ) from exc
    with ds:
        out = raw_dataset_to_r2t(ds, source=path, clean=clean, block_rows=block_rows)
    out.encoding["source"] = str(path)
    return out
