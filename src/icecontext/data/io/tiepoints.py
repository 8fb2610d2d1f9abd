"""Geolocation tie points -> per-pixel latitude, longitude and incidence angle.

Two kinds of tie points occur in AI4Arctic files:

* **raw 40 m files** store 441 points as 1-D arrays ``sar_grid_line``,
  ``sar_grid_sample``, ``sar_grid_latitude``, ... in line-major order (all points of
  the first tie-point line first). Their coordinates are raw 40 m pixel indices, so
  :func:`interpolate_tiepoints` can evaluate any field at any pixel position;
* **ready-to-train files** store only ``sar_grid2d_latitude/longitude`` as a bare
  21 x 21 grid without coordinates. :func:`r2t_latlon` evaluates them under the
  assumption the published loaders make (format reference §1.6 and open question
  §7.4): axis 0 runs along the lines, and the 21 points span the image uniformly
  from the first to the last pixel centre.

Interpolation is bilinear in pixel coordinates with linear extrapolation beyond the
outermost points, the same as :class:`scipy.interpolate.RegularGridInterpolator`
with ``method="linear", fill_value=None``. Grids of output pixels are evaluated in
its separable form (interpolate along samples for each tie-point line, then along
lines) because passing a 5000 x 5200 point cloud to scipy costs gigabytes; a test
checks that both give the same numbers. Latitude/longitude are interpolated as 3-D
unit vectors, so the ±180° seam and the pole are safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy.interpolate import RegularGridInterpolator

from icecontext.data.io.format import TIEPOINT_SHAPE
from icecontext.errors import DataError

Window = tuple[int, int, int, int]
"""``(row0, col0, height, width)`` on a (possibly downsampled) SAR grid."""

_BLOCK_ROWS: Final = 512


@dataclass(frozen=True)
class TiePointGrid:
    """The rectilinear layout of a set of tie points.

    Attributes:
        lines: Increasing line (row) coordinate of each tie-point line, in pixels.
        samples: Increasing sample (column) coordinate of each tie-point column.
    """

    lines: np.ndarray
    samples: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """``(number of tie-point lines, number of tie-point samples)``."""
        return len(self.lines), len(self.samples)

    @classmethod
    def from_points(cls, line: np.ndarray, sample: np.ndarray) -> TiePointGrid:
        """Recover the grid of points stored line-major (the raw files' layout).

        Args:
            line: 1-D line coordinate of every point.
            sample: 1-D sample coordinate of every point.

        Raises:
            DataError: If the points do not form a line-major rectilinear grid with
                increasing coordinates (the message says what is wrong).
        """
        line = np.asarray(line, dtype=np.float64).ravel()
        sample = np.asarray(sample, dtype=np.float64).ravel()
        if line.size != sample.size or line.size < 4:
            raise DataError(
                f"tie points: {line.size} line and {sample.size} sample coordinates; "
                "expected the same number, at least 2 x 2"
            )
        n_samples = int(np.argmax(line != line[0])) if (line != line[0]).any() else line.size
        if n_samples < 2 or line.size % n_samples:
            raise DataError(
                f"tie points: {line.size} points with {n_samples} per line do not form a "
                "line-major grid (expected the points of each tie-point line together)"
            )
        grid_line = line.reshape(-1, n_samples)
        grid_sample = sample.reshape(-1, n_samples)
        lines, samples = grid_line[:, 0], grid_sample[0]
        if not np.allclose(grid_line, lines[:, None], atol=1e-6) or not np.allclose(
            grid_sample, samples[None, :], atol=1e-6
        ):
            raise DataError(
                "tie points: line/sample coordinates are not a rectilinear grid (each "
                "tie-point line must share one line value and the same sample values)"
            )
        if len(lines) < 2 or (np.diff(lines) <= 0).any() or (np.diff(samples) <= 0).any():
            raise DataError("tie points: line and sample coordinates must increase")
        return cls(lines, samples)


def _axis_weights(knots: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower knot index and weight of ``x`` (linear, extrapolating with the end intervals)."""
    i = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, len(knots) - 2)
    w = (x - knots[i]) / (knots[i + 1] - knots[i])
    return i, w


def _bilinear_grid(
    grid: TiePointGrid,
    values: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    dtype: np.dtype,
) -> np.ndarray:
    """Evaluate gridded ``values`` (n_lines, n_samples, ...) on the outer grid rows x cols."""
    ci, cw = _axis_weights(grid.samples, cols)
    # interpolate along samples for every tie-point line: (n_lines, W, ...)
    cw_ = cw.reshape((1, -1) + (1,) * (values.ndim - 2))
    along = values[:, ci] * (1.0 - cw_) + values[:, ci + 1] * cw_
    ri, rw = _axis_weights(grid.lines, rows)
    out = np.empty((len(rows), len(cols), *values.shape[2:]), dtype=dtype)
    for start in range(0, len(rows), _BLOCK_ROWS):
        sl = slice(start, start + _BLOCK_ROWS)
        rw_ = rw[sl].reshape((-1, 1) + (1,) * (values.ndim - 2))
        out[sl] = along[ri[sl]] * (1.0 - rw_) + along[ri[sl] + 1] * rw_
    return out


def interpolate_tiepoints(
    line: np.ndarray,
    sample: np.ndarray,
    values: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    grid: bool = True,
    dtype: np.dtype | type = np.float32,
) -> np.ndarray:
    """Evaluate a tie-point field (e.g. the incidence angle) at pixel coordinates.

    Args:
        line: Line coordinate of each tie point (1-D, line-major, pixel units).
        sample: Sample coordinate of each tie point.
        values: The field at each tie point (same length).
        rows: Row coordinates to evaluate at, in the same pixel units.
        cols: Column coordinates to evaluate at.
        grid: If true, ``rows`` and ``cols`` are 1-D and the result is the
            ``(len(rows), len(cols))`` outer grid; if false, they are broadcast
            together and evaluated point by point.
        dtype: Output dtype.

    Returns:
        The interpolated field (bilinear, extrapolated linearly at the edges).

    Raises:
        DataError: If the tie points are not a line-major rectilinear grid or
            ``values`` has a different length.
    """
    tp = TiePointGrid.from_points(line, sample)
    vals = np.asarray(values, dtype=np.float64).ravel()
    if vals.size != tp.shape[0] * tp.shape[1]:
        raise DataError(f"tie points: {vals.size} values for a {tp.shape} grid of points")
    gridded = vals.reshape(tp.shape)
    if grid:
        r = np.asarray(rows, dtype=np.float64).ravel()
        c = np.asarray(cols, dtype=np.float64).ravel()
        return _bilinear_grid(tp, gridded, r, c, np.dtype(dtype))
    r, c = np.broadcast_arrays(np.asarray(rows, np.float64), np.asarray(cols, np.float64))
    interp = RegularGridInterpolator(
        (tp.lines, tp.samples), gridded, method="linear", bounds_error=False, fill_value=None
    )
    return interp(np.stack([r.ravel(), c.ravel()], axis=-1)).reshape(r.shape).astype(dtype)


# ----------------------------------------------------------------------------- lat / lon


def latlon_to_unit(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Return 3-D unit vectors ``(..., 3)`` of latitude/longitude in degrees."""
    la, lo = np.deg2rad(np.asarray(lat, np.float64)), np.deg2rad(np.asarray(lon, np.float64))
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def unit_to_latlon(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return latitude/longitude in degrees of (not necessarily unit) vectors ``(..., 3)``."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    lat = np.rad2deg(np.arctan2(z, np.hypot(x, y)))
    lon = np.rad2deg(np.arctan2(y, x))
    return lat, lon


def interpolate_latlon(
    grid: TiePointGrid,
    lat: np.ndarray,
    lon: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    dtype: np.dtype | type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate gridded latitude/longitude on the outer grid ``rows x cols``.

    The points are interpolated as 3-D unit vectors and converted back, so a scene
    that crosses the ±180° meridian (or the pole) is interpolated along the short way.

    Args:
        grid: Pixel coordinates of the tie-point lines and samples.
        lat: ``grid.shape`` latitudes in degrees.
        lon: ``grid.shape`` longitudes in degrees.
        rows: 1-D row coordinates to evaluate at.
        cols: 1-D column coordinates to evaluate at.
        dtype: Output dtype.

    Returns:
        ``(lat, lon)`` in degrees, each ``(len(rows), len(cols))``; longitude in
        (-180, 180].
    """
    xyz = latlon_to_unit(lat, lon)
    out = np.empty((len(rows), len(cols)), dtype=dtype), np.empty((len(rows), len(cols)), dtype)
    r = np.asarray(rows, np.float64).ravel()
    c = np.asarray(cols, np.float64).ravel()
    for start in range(0, len(r), _BLOCK_ROWS):
        sl = slice(start, start + _BLOCK_ROWS)
        vec = _bilinear_grid(grid, xyz, r[sl], c, np.dtype(np.float64))
        la, lo = unit_to_latlon(vec)
        out[0][sl], out[1][sl] = la, lo
    return out


def uniform_grid(shape: tuple[int, int], points: tuple[int, int] = TIEPOINT_SHAPE) -> TiePointGrid:
    """The grid the ready-to-train assumption gives a ``points`` grid on an image of ``shape``.

    Tie point ``(i, j)`` sits at pixel ``(i (H-1)/(n_i-1), j (W-1)/(n_j-1))``: the
    points span the image uniformly from the first to the last pixel centre.
    """
    h, w = shape
    return TiePointGrid(
        np.linspace(0.0, max(h - 1, 1), points[0]), np.linspace(0.0, max(w - 1, 1), points[1])
    )


def r2t_latlon(
    lat: np.ndarray,
    lon: np.ndarray,
    full_shape: tuple[int, int],
    window: Window | None = None,
    downsample: int = 1,
    dtype: np.dtype | type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel latitude/longitude of a ready-to-train scene from its 21 x 21 grid.

    Assumes, as the published loaders do, that axis 0 of ``sar_grid2d_latitude``
    runs along the lines and that the points span the 80 m image uniformly (see
    :func:`uniform_grid`). Pixel ``(r, c)`` of a grid downsampled by ``downsample``
    covers 80 m rows ``[r d, r d + d)``, so its centre is ``r d + (d - 1) / 2``.

    Args:
        lat: 21 x 21 latitudes (``sar_grid2d_latitude``), degrees.
        lon: 21 x 21 longitudes (``sar_grid2d_longitude``), degrees.
        full_shape: ``(sar_lines, sar_samples)`` of the 80 m scene.
        window: ``(row0, col0, height, width)`` on the downsampled grid; the whole
            downsampled grid (``ceil`` of the 80 m shape / ``downsample``) by default.
        downsample: Integer downsampling factor of the grid being described.
        dtype: Output dtype.

    Returns:
        ``(lat, lon)`` in degrees, each ``(height, width)``.

    Raises:
        DataError: If ``lat``/``lon`` are not 2-D with the same shape, or ``downsample``
            is not a positive integer.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if lat.ndim != 2 or lat.shape != lon.shape or min(lat.shape) < 2:
        raise DataError(
            f"sar_grid2d_latitude/longitude have shapes {lat.shape} and {lon.shape}; "
            "expected two equal 2-D grids (21 x 21)"
        )
    if int(downsample) != downsample or downsample < 1:
        raise DataError(f"downsample must be a positive integer, got {downsample}")
    d = int(downsample)
    if window is None:
        window = (0, 0, -(-full_shape[0] // d), -(-full_shape[1] // d))
    row0, col0, h, w = window
    rows = (row0 + np.arange(h)) * d + (d - 1) / 2.0
    cols = (col0 + np.arange(w)) * d + (d - 1) / 2.0
    return interpolate_latlon(uniform_grid(full_shape, lat.shape), lat, lon, rows, cols, dtype)
