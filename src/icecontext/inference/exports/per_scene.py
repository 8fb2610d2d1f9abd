"""All outputs of one predicted scene in one call (what ``icecontext predict`` writes)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import xarray as xr

from icecontext.errors import DataError
from icecontext.inference.exports.geotiff import (
    DEFAULT_GEOTIFF,
    GeoTIFFOptions,
    write_chart_geotiffs,
)
from icecontext.inference.exports.netcdf import (
    DEFAULT_NETCDF,
    NO_LAYERS,
    NO_PROVENANCE,
    ExportProvenance,
    NetCDFOptions,
    ProbabilityLayers,
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
    layers: ProbabilityLayers = NO_LAYERS,
    netcdf: NetCDFOptions = DEFAULT_NETCDF,
    geotiff: GeoTIFFOptions = DEFAULT_GEOTIFF,
    provenance: ExportProvenance = NO_PROVENANCE,
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
        layers: Optional probabilities and confidence maps (NetCDF only; see
            :class:`~icecontext.inference.exports.netcdf.ProbabilityLayers`).
        netcdf: Storage options of the NetCDF file (:class:`NetCDFOptions`).
        geotiff: CRS and pixel size of the ``"geotiff_3413"`` GeoTIFFs
            (:class:`GeoTIFFOptions`).
        provenance: Checkpoint, config and extra global attributes of the NetCDF file.

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
    writers: dict[str, Callable[[], list[Path]]] = {
        "netcdf": lambda: [
            write_chart_netcdf(
                out / f"{name}_charts.nc",
                scene,
                charts,
                layers=layers,
                options=netcdf,
                provenance=provenance,
            )
        ],
        "geotiff": lambda: write_chart_geotiffs(out, scene, charts),
        "geotiff_3413": lambda: write_chart_geotiffs(
            out, scene, charts, crs=geotiff.crs, resolution=geotiff.resolution
        ),
        "quicklook": lambda: [write_quicklook(out / f"{name}_quicklook.png", scene, charts)],
    }
    written: dict[str, list[Path]] = {}
    try:
        for fmt in chosen:
            written[fmt] = writers[fmt]()
    except BaseException:
        _remove(written)
        raise
    return written


def _remove(written: Mapping[str, list[Path]]) -> None:
    """Remove the files of one scene written so far (all of its outputs or none)."""
    for paths in written.values():
        for path in paths:
            with contextlib.suppress(OSError):
                path.unlink()
