"""Latitude/longitude of chart pixels from a ready-to-train scene's 21 x 21 tie points.

A thin adapter over :mod:`icecontext.data.io.tiepoints`, the one implementation of the
ready-to-train assumption (format reference §1.6 and open question 7.4): axis 0 of
``sar_grid2d_latitude``/``_longitude`` runs along the lines and the points span the
image uniformly, tie point ``(i, j)`` at the centre of pixel
``(i (H-1)/20, j (W-1)/20)``; values in between are bilinear on unit vectors, so the
±180° meridian needs no special case. The NetCDF lat/lon and the GeoTIFF ground
control points both take their positions from here, so they agree.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from icecontext.data.io.format import LATLON_VARIABLES, SAR_DIMS, TIEPOINT_SHAPE
from icecontext.data.io.tiepoints import r2t_latlon, uniform_grid
from icecontext.errors import SceneFormatError


def tiepoint_pixel_positions(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Return the row and column (pixel-centre index units) of the tie-point lines.

    Args:
        shape: ``(H, W)`` of the 80 m SAR grid.

    Returns:
        ``(rows, cols)``: 21 evenly spaced positions from 0 to ``H - 1`` and ``W - 1``.
    """
    grid = uniform_grid(shape, TIEPOINT_SHAPE)
    return grid.lines, grid.samples


def scene_tiepoints(scene: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Return the scene's 21 x 21 ``(latitude, longitude)`` tie points in degrees.

    Raises:
        SceneFormatError: If the variables are missing, misshapen or not finite.
    """
    source = scene.encoding.get("source", "<dataset>")
    out = []
    for name in LATLON_VARIABLES:
        if name not in scene.variables:
            raise SceneFormatError(source, name, "missing: lat/lon exports need the tie points")
        values = np.asarray(scene[name].values, dtype=np.float64)
        if values.shape != TIEPOINT_SHAPE or not np.isfinite(values).all():
            raise SceneFormatError(
                source, name, f"expected a finite {TIEPOINT_SHAPE} grid, got shape {values.shape}"
            )
        out.append(values)
    return out[0], out[1]


def scene_latlon(
    scene: xr.Dataset, *, dtype: type[np.floating] = np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Return per-pixel latitude and longitude (degrees) on the scene's 80 m grid.

    Args:
        scene: Ready-to-train dataset (tie points and SAR dimensions).
        dtype: Output dtype; float32 resolves about 1 m at these latitudes.

    Returns:
        ``(lat, lon)`` arrays of shape ``(sar_lines, sar_samples)``; longitude in
        ``(-180, 180]``.
    """
    shape = (scene.sizes[SAR_DIMS[0]], scene.sizes[SAR_DIMS[1]])
    lat_tp, lon_tp = scene_tiepoints(scene)
    return r2t_latlon(lat_tp, lon_tp, shape, dtype=dtype)
