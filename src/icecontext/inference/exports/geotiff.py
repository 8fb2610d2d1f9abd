"""GeoTIFF per chart: SAR-grid rasters with ground control points, or map-projected.

Two flavours, both ``uint8`` with nodata 255, a colour table of the class colours
(:mod:`~icecontext.inference.exports.colours`) and the class names as band metadata:

* **SAR grid** (default): the prediction array as it is (lines x samples), with the
  441 tie points of the scene attached as ground control points in EPSG:4326. GIS
  software (QGIS, GDAL) warps it on the fly.
* **Map projected** (``crs="EPSG:3413"``, NSIDC Sea Ice Polar Stereographic North,
  or any CRS): the array is warped with :func:`rasterio.warp.reproject` from the
  same control points (thin-plate-spline transformer, so the warp passes through
  every tie point) with nearest-neighbour resampling, which keeps class values
  intact, onto a north-up grid at ``resolution`` metres (80 by default).

The tie points sit at pixel centres ``(i (H-1)/20, j (W-1)/20)``
(:func:`~icecontext.inference.exports.geolocation.tiepoint_pixel_positions`); GDAL
places pixel/line ``(0, 0)`` at the top-left *corner*, hence the half-pixel shift.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import xarray as xr
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import calculate_default_transform, reproject

from icecontext.data.io.format import CHART_FILL, CHART_LONG_NAMES, CHARTS, CLASS_NAMES
from icecontext.errors import ConfigError, DataError
from icecontext.inference.exports.colours import colour_table
from icecontext.inference.exports.geolocation import scene_tiepoints, tiepoint_pixel_positions
from icecontext.inference.exports.netcdf import check_charts, scene_label, scene_shape
from icecontext.inference.exports.output import export_target

GEOGRAPHIC_CRS = "EPSG:4326"
POLAR_STEREO_NORTH = "EPSG:3413"
"""NSIDC Sea Ice Polar Stereographic North (WGS 84), the usual Arctic sea ice grid."""

# Thin-plate spline through all 441 control points (GDAL transformer option); the
# default polynomial fit would leave residuals of several pixels on a 400 km swath.
_TRANSFORMER_OPTIONS = {"SRC_METHOD": "GCP_TPS"}


@dataclass(frozen=True)
class GeoTIFFOptions:
    """Grid of the map-projected GeoTIFFs (the ``geotiff_3413`` output format).

    Attributes:
        crs: Target CRS (EPSG:3413 by default; any CRS rasterio knows, e.g.
            ``"EPSG:3996"``).
        resolution: Pixel size in CRS units (metres for EPSG:3413).
    """

    crs: str = POLAR_STEREO_NORTH
    resolution: float = 80.0


DEFAULT_GEOTIFF = GeoTIFFOptions()
"""EPSG:3413 at 80 m."""


def scene_gcps(scene: xr.Dataset) -> list[GroundControlPoint]:
    """Return the scene's tie points as GDAL ground control points (lon/lat, EPSG:4326).

    Longitudes are made continuous across ±180° (values above 180 where needed), so
    the control points of a scene that straddles the date line stay coherent.
    """
    lat, lon = scene_tiepoints(scene)
    lon = np.where(lon < 0, lon + 360.0, lon) if np.ptp(lon) > 180.0 else lon
    rows, cols = tiepoint_pixel_positions(scene_shape(scene))
    gcps = []
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            gcps.append(
                GroundControlPoint(
                    row=float(row) + 0.5,
                    col=float(col) + 0.5,
                    x=float(lon[i, j]),
                    y=float(lat[i, j]),
                    z=0.0,
                    id=f"tp_{i}_{j}",
                )
            )
    return gcps


def check_crs(crs: str, option: str = "--crs") -> CRS:
    """The CRS named by ``crs``, or an error naming the option (before anything is written).

    Raises:
        ConfigError: For a CRS that PROJ does not know.
    """
    from rasterio.errors import CRSError

    try:
        return CRS.from_user_input(crs)
    except CRSError as exc:
        raise ConfigError(
            option, f"unknown CRS '{crs}' ({exc}); give an EPSG code such as EPSG:3413"
        ) from None


def _profile(height: int, width: int) -> dict[str, Any]:
    block = 256 if min(height, width) >= 256 else None
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": 1,
        "dtype": "uint8",
        "nodata": CHART_FILL,
        "compress": "deflate",
    }
    if block:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    return profile


def _describe(dst: Any, chart: str, scene_name: str) -> None:
    """Colour table, band description and tags; call before writing the data.

    A colour table written after the data makes libtiff log "Cannot modify tag
    PhotometricInterpretation while writing" (harmless, but alarming).
    """
    dst.write_colormap(1, colour_table(chart))
    dst.colorinterp = [ColorInterp.palette]
    dst.set_band_description(1, f"{chart}: {CHART_LONG_NAMES[chart]}")
    dst.update_tags(
        1, chart=chart, **{f"class_{i}": name for i, name in enumerate(CLASS_NAMES[chart])}
    )
    dst.update_tags(
        scene=scene_name, chart=chart, masked_value=str(CHART_FILL), software="icecontext"
    )


def warp_chart(
    values: np.ndarray,
    gcps: list[GroundControlPoint],
    crs: str = POLAR_STEREO_NORTH,
    resolution: float = 80.0,
) -> tuple[np.ndarray, Any]:
    """Warp SAR-grid class arrays onto a north-up grid of ``crs`` (nearest neighbour).

    Several charts warp in one call as a ``(bands, H, W)`` stack: the transformer
    (most of the cost, about 10 s for a full scene with the thin-plate spline) is
    then set up once.

    Args:
        values: ``(H, W)`` or ``(bands, H, W)`` uint8 classes, 255 = masked.
        gcps: Ground control points in EPSG:4326 (:func:`scene_gcps`).
        crs: Target CRS (any rasterio-readable definition).
        resolution: Target pixel size in CRS units (metres for EPSG:3413).

    Returns:
        ``(array, affine transform)``, the array with the input's number of
        dimensions; pixels outside the swath are 255.
    """
    stack = values[None] if values.ndim == 2 else values
    h, w = stack.shape[1:]
    src_crs = CRS.from_string(GEOGRAPHIC_CRS)
    dst_crs = CRS.from_user_input(crs)
    transform, width, height = calculate_default_transform(
        src_crs, dst_crs, w, h, gcps=gcps, resolution=resolution, **_TRANSFORMER_OPTIONS
    )
    out = np.full((stack.shape[0], height, width), CHART_FILL, dtype=np.uint8)
    reproject(
        source=np.ascontiguousarray(stack),
        destination=out,
        gcps=gcps,
        src_crs=src_crs,
        src_nodata=CHART_FILL,
        dst_transform=transform,
        dst_crs=dst_crs,
        dst_nodata=CHART_FILL,
        resampling=Resampling.nearest,
        **_TRANSFORMER_OPTIONS,
    )
    return (out[0] if values.ndim == 2 else out), transform


def _write_sar_grid(
    path: Path, chart: str, arr: np.ndarray, gcps: list[GroundControlPoint], scene_name: str
) -> Path:
    with export_target(path, f"{chart} GeoTIFF") as tmp:
        with warnings.catch_warnings():
            # Opening for writing warns until the GCPs are attached on the next line.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dst = rasterio.open(tmp, "w", **_profile(*arr.shape))
        with dst:
            dst.gcps = (gcps, CRS.from_string(GEOGRAPHIC_CRS))
            _describe(dst, chart, scene_name)  # the colour table before the data (_describe)
            dst.write(arr, 1)
    return path


def _write_projected(
    path: Path, chart: str, arr: np.ndarray, transform: Any, crs: str, scene_name: str
) -> Path:
    profile = _profile(*arr.shape)
    profile.update(crs=CRS.from_user_input(crs), transform=transform)
    with export_target(path, f"{chart} GeoTIFF") as tmp, rasterio.open(tmp, "w", **profile) as dst:
        _describe(dst, chart, scene_name)
        dst.write(arr, 1)
    return path


def write_chart_geotiff(
    path: str | os.PathLike[str],
    scene: xr.Dataset,
    chart: str,
    values: Any,
    *,
    crs: str | None = None,
    resolution: float = 80.0,
) -> Path:
    """Write one chart as a GeoTIFF (atomically).

    Args:
        path: Output ``.tif`` file.
        scene: The input scene (grid, tie points, name).
        chart: ``"SIC"``, ``"SOD"`` or ``"FLOE"``.
        values: ``(H, W)`` integer classes, 255 where masked.
        crs: ``None`` keeps the SAR grid with ground control points; a CRS such as
            ``"EPSG:3413"`` writes a map-projected raster.
        resolution: Pixel size of the projected raster, in CRS units.

    Returns:
        The written path.

    Raises:
        DataError: Bad chart name, shape or values.
        ExportError: Unwritable output folder (no partial file is left).
    """
    if chart not in CHARTS:
        raise DataError(f"unknown chart '{chart}'; expected one of {list(CHARTS)}")
    arr = check_charts({chart: values}, scene_shape(scene))[chart]
    gcps = scene_gcps(scene)
    if crs is None:
        return _write_sar_grid(Path(path), chart, arr, gcps, scene_label(scene))
    warped, transform = warp_chart(arr, gcps, crs, resolution)
    return _write_projected(Path(path), chart, warped, transform, crs, scene_label(scene))


def write_chart_geotiffs(
    out_dir: str | os.PathLike[str],
    scene: xr.Dataset,
    charts: Mapping[str, Any],
    *,
    crs: str | None = None,
    resolution: float = 80.0,
) -> list[Path]:
    """Write ``{scene}_{chart}.tif`` (or ``{scene}_{chart}_{epsg}.tif``) for each chart.

    With ``crs`` all charts are warped in one call (one transformer set-up).

    Args:
        out_dir: Output folder (created).
        scene: The input scene.
        charts: Chart -> ``(H, W)`` classes.
        crs: As :func:`write_chart_geotiff`; the file name gets e.g. ``_epsg3413``.
        resolution: Pixel size of projected rasters.

    Returns:
        The written paths, in SIC/SOD/FLOE order.
    """
    checked = check_charts(charts, scene_shape(scene))
    name = scene_label(scene)
    gcps = scene_gcps(scene)
    suffix = "" if crs is None else "_" + str(crs).lower().replace(":", "")
    paths = [Path(out_dir) / f"{name}_{chart}{suffix}.tif" for chart in checked]
    if crs is None:
        for path, (chart, arr) in zip(paths, checked.items(), strict=True):
            _write_sar_grid(path, chart, arr, gcps, name)
        return paths
    warped, transform = warp_chart(np.stack(list(checked.values())), gcps, crs, resolution)
    for path, chart, band in zip(paths, checked, warped, strict=True):
        _write_projected(path, chart, band, transform, crs, name)
    return paths
