"""Latitude/longitude of chart pixels from a ready-to-train scene's 21 x 21 tie points.

Ready-to-train files carry only a bare 21 x 21 latitude/longitude grid
(``sar_grid2d_latitude``/``_longitude``). Following the loaders that have used it
(format reference §1.6 and open question 7.4), axis 0 is taken as the line (row)
direction and the points as spanning the image uniformly: tie point ``(i, j)`` sits at
the centre of pixel ``(i (H-1)/20, j (W-1)/20)``.

Values between tie points are bilinear in the pixel grid, computed on unit vectors
(x, y, z on the sphere) and converted back, so the ±180° meridian and the pole need
no special case. All exports (NetCDF lat/lon, GeoTIFF ground control points) take the
tie-point positions from :func:`tiepoint_pixel_positions`, so they agree.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from icecontext.data.format import LATLON_VARIABLES, SAR_DIMS, TIEPOINT_SHAPE
from icecontext.errors import SceneFormatError


def tiepoint_pixel_positions(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Return the row and column (pixel-centre index units) of the tie-point lines.

    Args:
        shape: ``(H, W)`` of the 80 m SAR grid.

    Returns:
        ``(rows, cols)``: 21 evenly spaced positions from 0 to ``H - 1`` and ``W - 1``.
    """
    h, w = shape
    return (
        np.linspace(0.0, h - 1.0, TIEPOINT_SHAPE[0]),
        np.linspace(0.0, w - 1.0, TIEPOINT_SHAPE[1]),
    )


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


def _unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    la, lo = np.deg2rad(lat), np.deg2rad(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def _linear_weights(positions: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Index of the left node and the fraction towards the right one (linear extrapolation
    # is never needed: positions lie within [nodes[0], nodes[-1]]).
    i0 = np.clip(np.searchsorted(nodes, positions, side="right") - 1, 0, len(nodes) - 2)
    span = nodes[i0 + 1] - nodes[i0]
    frac = np.divide(positions - nodes[i0], span, out=np.zeros_like(positions), where=span > 0)
    return i0, frac


def scene_latlon(
    scene: xr.Dataset,
    *,
    dtype: type[np.floating] = np.float32,
    block_rows: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """Return per-pixel latitude and longitude (degrees) on the scene's 80 m grid.

    Args:
        scene: Ready-to-train dataset (tie points and SAR dimensions).
        dtype: Output dtype; float32 resolves about 1 m at these latitudes.
        block_rows: Rows interpolated at once (bounds the float64 temporaries).

    Returns:
        ``(lat, lon)`` arrays of shape ``(sar_lines, sar_samples)``; longitude in
        ``[-180, 180)``.
    """
    h, w = (scene.sizes[d] for d in SAR_DIMS)
    lat_tp, lon_tp = scene_tiepoints(scene)
    rows_tp, cols_tp = tiepoint_pixel_positions((h, w))
    xyz = _unit_vectors(lat_tp, lon_tp)  # (21, 21, 3)
    # Separable bilinear interpolation: along the columns once, then per block of rows.
    c0, cf = _linear_weights(np.arange(w, dtype=np.float64), cols_tp)
    by_col = xyz[:, c0, :] * (1.0 - cf)[None, :, None] + xyz[:, c0 + 1, :] * cf[None, :, None]
    lat = np.empty((h, w), dtype=dtype)
    lon = np.empty((h, w), dtype=dtype)
    for start in range(0, h, block_rows):
        rows = np.arange(start, min(start + block_rows, h), dtype=np.float64)
        r0, rf = _linear_weights(rows, rows_tp)
        v = by_col[r0] * (1.0 - rf)[:, None, None] + by_col[r0 + 1] * rf[:, None, None]
        x, y, z = v[..., 0], v[..., 1], v[..., 2]
        lat[start : start + len(rows)] = np.rad2deg(np.arctan2(z, np.hypot(x, y)))
        lon[start : start + len(rows)] = np.rad2deg(np.arctan2(y, x))
    return lat, lon
