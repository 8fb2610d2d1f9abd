"""GeoTIFF exports: GCPs, colour tables, value round trip, EPSG:3413 reprojection."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from pyproj import Transformer
from rasterio.transform import rowcol

from icecontext.data.io.format import CHARTS, CLASS_NAMES, TIEPOINT_DIMS
from icecontext.errors import DataError
from icecontext.inference.exports import (
    CHART_COLOURS,
    ExportError,
    scene_latlon,
    tiepoint_pixel_positions,
    write_chart_geotiff,
    write_chart_geotiffs,
)
from icecontext.testing import make_scene_dataset

H, W = 240, 260
SPACING = 80.0
ANGLE = np.deg2rad(25.0)  # swath rotated against the polar stereographic grid
ORIGIN = (450_000.0, -1_900_000.0)  # EPSG:3413 metres, off East Greenland


def georeferenced_scene(seed: int = 0) -> xr.Dataset:
    """A fixture scene whose tie points describe a real 80 m grid in EPSG:3413."""
    ds = make_scene_dataset(H, W, seed=seed, polygon_size=60)
    rows, cols = tiepoint_pixel_positions((H, W))
    r, c = np.meshgrid(rows, cols, indexing="ij")
    x = ORIGIN[0] + SPACING * (c * np.cos(ANGLE) - r * np.sin(ANGLE))
    y = ORIGIN[1] - SPACING * (c * np.sin(ANGLE) + r * np.cos(ANGLE))
    lon, lat = Transformer.from_crs(3413, 4326, always_xy=True).transform(x, y)
    ds["sar_grid2d_latitude"] = (TIEPOINT_DIMS, lat)
    ds["sar_grid2d_longitude"] = (TIEPOINT_DIMS, lon)
    return ds


@pytest.fixture(scope="module")
def scene() -> xr.Dataset:
    return georeferenced_scene()


@pytest.fixture(scope="module")
def charts(scene: xr.Dataset) -> dict[str, np.ndarray]:
    return {c: scene[c].values.copy() for c in CHARTS}


def test_sar_grid_geotiff_round_trips_with_gcps_and_colours(
    tmp_path: Path, scene: xr.Dataset, charts: dict, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="rasterio"):
        paths = write_chart_geotiffs(tmp_path, scene, charts)
    # the colour table goes in before the data: GDAL has nothing to complain about
    assert not [r for r in caplog.records if "PhotometricInterpretation" in r.getMessage()]
    name = scene.attrs["scene_id"][:19]
    assert [p.name for p in paths] == [f"{name}_{c}.tif" for c in CHARTS]
    for chart, path in zip(CHARTS, paths, strict=True):
        with rasterio.open(path) as src:
            np.testing.assert_array_equal(src.read(1), charts[chart])
            assert src.dtypes[0] == "uint8" and src.nodata == 255
            gcps, crs = src.gcps
            assert crs.to_epsg() == 4326
            assert len(gcps) == 21 * 21
            lat_tp = scene["sar_grid2d_latitude"].values
            lon_tp = scene["sar_grid2d_longitude"].values
            corner = gcps[-1]
            assert corner.row == pytest.approx(H - 0.5) and corner.col == pytest.approx(W - 0.5)
            assert (corner.x, corner.y) == pytest.approx((lon_tp[-1, -1], lat_tp[-1, -1]))
            cmap = src.colormap(1)
            assert cmap[1][:3] == CHART_COLOURS[chart][1]
            assert cmap[255][3] == 0  # masked pixels transparent
            assert src.tags(1)["class_0"] == CLASS_NAMES[chart][0]


def test_reprojected_geotiff_overlays_in_epsg3413(
    tmp_path: Path, scene: xr.Dataset, charts: dict
) -> None:
    path = write_chart_geotiff(tmp_path / "sod.tif", scene, "SOD", charts["SOD"], crs="EPSG:3413")
    lat, lon = scene_latlon(scene)
    to_3413 = Transformer.from_crs(4326, 3413, always_xy=True)
    with rasterio.open(path) as dst:
        assert dst.crs.to_epsg() == 3413
        assert dst.res == pytest.approx((SPACING, SPACING))
        assert dst.nodata == 255
        data = dst.read(1)
        # Bounds: the swath's corners lie inside, and the raster is not much larger
        # than the rotated swath's bounding box.
        x, y = to_3413.transform(lon.astype(float), lat.astype(float))
        b = dst.bounds
        assert b.left <= x.min() and x.max() <= b.right and b.bottom <= y.min() and y.max() <= b.top
        assert b.right - b.left < (x.max() - x.min()) + 4 * SPACING
        assert b.top - b.bottom < (y.max() - y.min()) + 4 * SPACING
        # Values: sample pixels away from class boundaries land on the same class.
        rng = np.random.default_rng(1)
        rows = rng.integers(0, H, 3000)
        cols = rng.integers(0, W, 3000)
        interior = (rows % 60 > 3) & (rows % 60 < 57) & (cols % 60 > 3) & (cols % 60 < 57)
        rows, cols = rows[interior], cols[interior]
        rr, cc = rowcol(dst.transform, x[rows, cols], y[rows, cols])
        got = data[np.asarray(rr), np.asarray(cc)]
        want = charts["SOD"][rows, cols]
        edge = (want == 255) | (got == 255)  # swath/mask edges may shift by a pixel
        assert (got[~edge] == want[~edge]).mean() > 0.999
        assert set(np.unique(data)) <= set(np.unique(charts["SOD"]))  # nearest: no new values


def test_bad_input_and_unwritable_folder(tmp_path: Path, scene: xr.Dataset, charts: dict) -> None:
    with pytest.raises(DataError, match="unknown chart 'ICE'"):
        write_chart_geotiff(tmp_path / "x.tif", scene, "ICE", charts["SIC"])
    with pytest.raises(DataError, match=r"prediction 'SIC' holds values \[11\]"):
        write_chart_geotiff(tmp_path / "x.tif", scene, "SIC", np.full((H, W), 11, np.uint8))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(
        ExportError,
        match=r"the SIC GeoTIFF: output folder .*sub cannot be created: .*file is a file",
    ):
        write_chart_geotiffs(blocker / "sub", scene, charts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_multi_chart_warp_equals_single_chart_warp(
    tmp_path: Path, scene: xr.Dataset, charts: dict
) -> None:
    paths = write_chart_geotiffs(tmp_path, scene, charts, crs="EPSG:3413", resolution=160.0)
    assert paths[0].name.endswith("_SIC_epsg3413.tif")
    single = write_chart_geotiff(
        tmp_path / "one.tif", scene, "FLOE", charts["FLOE"], crs="EPSG:3413", resolution=160.0
    )
    with rasterio.open(paths[2]) as a, rasterio.open(single) as b:
        assert a.transform == b.transform and a.res == (160.0, 160.0)
        np.testing.assert_array_equal(a.read(1), b.read(1))
