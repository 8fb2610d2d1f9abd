"""Tie-point interpolation: raw 441-point layout, ready-to-train 21 x 21 assumption, seams."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import RegularGridInterpolator

from icecontext.data.io.tiepoints import (
    TiePointGrid,
    interpolate_latlon,
    interpolate_tiepoints,
    latlon_to_unit,
    r2t_latlon,
    uniform_grid,
    unit_to_latlon,
)
from icecontext.errors import DataError


def raw_layout(lines: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-D line/sample coordinates in the raw files' line-major order."""
    ll, ss = np.meshgrid(lines, samples, indexing="ij")
    return ll.ravel(), ss.ravel()


LINES = np.array([0.0, 499.0, 998.0, 1600.0, 2000.0])
SAMPLES = np.array([0.0, 300.0, 700.0, 1000.0])


def test_grid_recovered_from_line_major_points() -> None:
    line, sample = raw_layout(LINES, SAMPLES)
    grid = TiePointGrid.from_points(line, sample)
    np.testing.assert_array_equal(grid.lines, LINES)
    np.testing.assert_array_equal(grid.samples, SAMPLES)
    assert grid.shape == (5, 4)


def test_bilinear_field_reproduced_exactly_inside_and_outside() -> None:
    line, sample = raw_layout(LINES, SAMPLES)

    def f(r, c):
        return 20.0 + 0.01 * c - 0.002 * r + 1e-6 * r * c

    rows = np.array([-50.0, 0.0, 10.5, 1234.25, 1999.0, 2100.0])
    cols = np.array([-20.0, 0.5, 650.0, 999.0, 1111.0])
    out = interpolate_tiepoints(line, sample, f(line, sample), rows, cols, dtype=np.float64)
    np.testing.assert_allclose(out, f(rows[:, None], cols[None, :]), rtol=0, atol=1e-9)


def test_separable_form_equals_scipy_regular_grid_interpolator() -> None:
    rng = np.random.default_rng(1)
    line, sample = raw_layout(LINES, SAMPLES)
    values = rng.normal(size=line.size)
    rows = rng.uniform(-100, 2100, size=37)
    cols = rng.uniform(-100, 1100, size=23)
    ours = interpolate_tiepoints(line, sample, values, rows, cols, dtype=np.float64)
    scipy_interp = RegularGridInterpolator(
        (LINES, SAMPLES), values.reshape(5, 4), method="linear", bounds_error=False, fill_value=None
    )
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    expected = scipy_interp(np.stack([rr.ravel(), cc.ravel()], -1)).reshape(rr.shape)
    np.testing.assert_allclose(ours, expected, atol=1e-12)
    pointwise = interpolate_tiepoints(line, sample, values, rr, cc, grid=False, dtype=np.float64)
    np.testing.assert_allclose(pointwise, expected, atol=1e-12)


def test_default_output_is_float32() -> None:
    line, sample = raw_layout(LINES, SAMPLES)
    out = interpolate_tiepoints(line, sample, np.ones(line.size), np.arange(3), np.arange(4))
    assert out.dtype == np.float32 and out.shape == (3, 4)


@pytest.mark.parametrize(
    ("line", "sample", "values", "message"),
    [
        # sample-major order: points of one line are not together
        (*raw_layout(LINES, SAMPLES)[::-1], np.zeros(20), "line-major grid"),
        (np.zeros(20), np.arange(19.0), np.zeros(20), "19 sample"),
        (
            np.repeat([0.0, 1.0, 2.0], 3),
            np.array([0, 1, 2, 0, 1, 3, 0, 1, 2.0]),
            np.zeros(9),
            "rectilinear",
        ),
        (*raw_layout(LINES, SAMPLES), np.zeros(7), "7 values"),
    ],
)
def test_bad_tie_point_layouts_raise(line, sample, values, message) -> None:
    with pytest.raises(DataError, match=message):
        interpolate_tiepoints(line, sample, values, np.arange(2), np.arange(2))


def test_unit_vectors_round_trip() -> None:
    lat = np.array([-89.0, -10.0, 0.0, 45.0, 89.5])
    lon = np.array([-179.9, -45.0, 0.0, 120.0, 180.0])
    back_lat, back_lon = unit_to_latlon(latlon_to_unit(lat, lon))
    np.testing.assert_allclose(back_lat, lat, atol=1e-10)
    np.testing.assert_allclose(np.cos(np.deg2rad(back_lon - lon)), 1.0, atol=1e-12)


def test_longitude_interpolation_is_safe_across_the_dateline() -> None:
    grid = TiePointGrid(np.array([0.0, 10.0]), np.array([0.0, 10.0]))
    lat = np.full((2, 2), 70.0)
    lon = np.array([[179.0, -179.0], [179.0, -179.0]])
    la, lo = interpolate_latlon(
        grid, lat, lon, np.array([0.0, 5.0]), np.array([2.5, 5.0, 7.5]), dtype=np.float64
    )
    np.testing.assert_allclose(np.abs(lo[:, 1]), 180.0, atol=1e-9)  # not 0 (the naive mean)
    np.testing.assert_allclose(lo[0, 0], 179.5, atol=1e-3)
    np.testing.assert_allclose(lo[0, 2], -179.5, atol=1e-3)
    assert (np.abs(la - 70.0) < 0.01).all()  # great-circle bulge over 2 degrees: 0.003


def _r2t_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.meshgrid(np.arange(21), np.arange(21), indexing="ij")
    return 65.0 + 0.2 * i + 0.01 * j, -40.0 + 0.3 * j - 0.02 * i


def test_r2t_latlon_hits_tie_points_at_their_assumed_pixels() -> None:
    h, w = 201, 401  # (H-1)/20 = 10, (W-1)/20 = 20: tie points fall on pixel centres
    lat21, lon21 = _r2t_grid(h, w)
    lat, lon = r2t_latlon(lat21, lon21, (h, w), dtype=np.float64)
    assert lat.shape == (h, w)
    np.testing.assert_allclose(lat[::10, ::20], lat21, atol=1e-9)
    np.testing.assert_allclose(lon[::10, ::20], lon21, atol=1e-9)
    # axis 0 of the 21 x 21 grid runs along lines: latitude changes fastest down the rows
    assert lat[-1, 0] - lat[0, 0] == pytest.approx(4.0, abs=1e-6)


def test_r2t_latlon_window_and_downsampled_grid() -> None:
    h, w = 203, 158
    lat21, lon21 = _r2t_grid(h, w)
    full_lat, full_lon = r2t_latlon(lat21, lon21, (h, w), dtype=np.float64)
    win_lat, win_lon = r2t_latlon(lat21, lon21, (h, w), window=(17, 5, 30, 40), dtype=np.float64)
    np.testing.assert_allclose(win_lat, full_lat[17:47, 5:45], atol=1e-12)
    np.testing.assert_allclose(win_lon, full_lon[17:47, 5:45], atol=1e-12)
    # downsampled by 4: pixel r is centred on 80 m row 4 r + 1.5
    d_lat, _ = r2t_latlon(lat21, lon21, (h, w), downsample=4, dtype=np.float64)
    assert d_lat.shape == (51, 40)  # ceil(203/4), ceil(158/4)
    grid = uniform_grid((h, w))
    exp_lat, _ = interpolate_latlon(
        grid, lat21, lon21, np.arange(51) * 4 + 1.5, np.arange(40) * 4 + 1.5, dtype=np.float64
    )
    np.testing.assert_allclose(d_lat, exp_lat, atol=1e-12)
    # the mean of a 4 x 4 block of the full grid is close to the downsampled value
    np.testing.assert_allclose(d_lat[10, 10], full_lat[40:44, 40:44].mean(), atol=1e-6)


def test_r2t_latlon_rejects_bad_inputs() -> None:
    with pytest.raises(DataError, match="sar_grid2d_latitude"):
        r2t_latlon(np.zeros((21, 21)), np.zeros((21, 20)), (100, 100))
    with pytest.raises(DataError, match="downsample"):
        r2t_latlon(np.zeros((21, 21)), np.zeros((21, 21)), (100, 100), downsample=0)
