"""All outputs of one predicted scene in one call (what ``icecontext predict`` writes)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import xarray as xr

from icecontext.errors import DataError
from icecontext.inference.exports.geotiff import POLAR_STEREO_NORTH, write_chart_geotiffs
from icecontext.inference.exports.netcdf import (
    Confidence,
    ProbabilityEncoding,
    check_charts,
    scene_label,
    scene_shape,
    write_chart_netcdf,
)
from icecontext.inference.exports.quicklook import write_quicklook

OutputFormat = Literal["netcdf", "geotiff", "geotiff_3413", "quicklook"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("netcdf", "geotiff", "geotiff_3413", "quicklook")


def write_scene_outputs(
    out_dir: str | os.PathLike[str],
    scene: xr.Dataset,
    charts: Mapping[str, Any],
    *,
    formats: Iterable[OutputFormat] = ("netcdf", "geotiff", "quicklook"),
    probabilities: Mapping[str, Any] | None = None,
    probability_encoding: ProbabilityEncoding = "uint8",
    confidence: Confidence = "max",
    confidences: Mapping[str, Any] | None = None,
    crs: str = POLAR_STEREO_NORTH,
    checkpoint: str | os.PathLike[str] | None = None,
    config: Any = None,
    attrs: Mapping[str, Any] | None = None,
    resolution: float = 80.0,
) -> dict[str, list[Path]]:
    """Write the chosen outputs of one scene into ``out_dir``.

    File names: ``{scene}_charts.nc``, ``{scene}_{chart}.tif`` (SAR grid + GCPs),
    ``{scene}_{chart}_epsg3413.tif`` (polar stereographic; ``_{crs}`` for another
    ``crs``) and ``{scene}_quicklook.png``.
    Each file is written atomically; if one fails, the files this call already wrote
    are removed again, so a scene's outputs are all there or none.

    Args:
        out_dir: Output folder (created).
        scene: The input scene dataset.
        charts: Chart -> ``(H, W)`` predicted classes, 255 = masked.
        formats: Any of ``"netcdf"``, ``"geotiff"``, ``"geotiff_3413"``, ``"quicklook"``.
        probabilities: Optional chart -> ``(classes, H, W)`` probabilities (NetCDF only).
        probability_encoding: See :func:`write_chart_netcdf`.
        confidence: See :func:`write_chart_netcdf`.
        confidences: Precomputed chart -> ``(H, W)`` confidence maps (NetCDF only).
        crs: Target CRS of the ``"geotiff_3413"`` format (EPSG:3413 by default; any
            CRS rasterio knows, e.g. ``"EPSG:3996"``).
        checkpoint: Recorded in the NetCDF provenance attributes.
        config: Recorded in the NetCDF provenance attributes.
        attrs: Extra NetCDF global attributes.
        resolution: Pixel size (m) of the EPSG:3413 GeoTIFFs.

    Returns:
        Format -> written paths.

    Raises:
        DataError: Unknown format or arrays that do not fit the scene.
        ExportError: Unwritable output folder.
    """
    chosen = list(dict.fromkeys(formats))
    unknown = [f for f in chosen if f not in OUTPUT_FORMATS]
    if unknown:
        raise DataError(f"unknown output formats {unknown}; choose from {list(OUTPUT_FORMATS)}")
    check_charts(charts, scene_shape(scene))  # fail before writing anything
    out = Path(out_dir)
    name = scene_label(scene)
    written: dict[str, list[Path]] = {}
    try:
        for fmt in chosen:
            if fmt == "netcdf":
                written[fmt] = [
                    write_chart_netcdf(
                        out / f"{name}_charts.nc",
                        scene,
                        charts,
                        probabilities=probabilities,
                        probability_encoding=probability_encoding,
                        confidence=confidence,
                        confidences=confidences,
                        checkpoint=checkpoint,
                        config=config,
                        attrs=attrs,
                    )
                ]
            elif fmt == "geotiff":
                written[fmt] = write_chart_geotiffs(out, scene, charts)
            elif fmt == "geotiff_3413":
                written[fmt] = write_chart_geotiffs(
                    out, scene, charts, crs=crs, resolution=resolution
                )
            else:
                written[fmt] = [write_quicklook(out / f"{name}_quicklook.png", scene, charts)]
    except BaseException:
        for paths in written.values():
            for path in paths:
                with contextlib.suppress(OSError):
                    path.unlink()
        raise
    return written
