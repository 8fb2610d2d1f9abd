"""Synthetic writers: PhysicalScene -> ready-to-train and raw 40 m layouts, and their agreement."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from icecontext.data.io.format import CHARTS, R2T_VARIABLE_NAMES
from icecontext.data.io.raw import open_raw, raw_dataset_to_r2t
from icecontext.data.io.scene import open_scene, validate_scene, write_scene
from icecontext.data.io.variables import denormalise
from icecontext.errors import DataError
from icecontext.synthetic.writers import (
    example_physical_scene,
    physical_to_r2t,
    physical_to_raw,
    raw_file_name,
    write_raw,
)


@pytest.fixture(scope="module")
def scene():
    return example_physical_scene(60, 76, seed=3)


def assert_same_scene(a: xr.Dataset, b: xr.Dataset) -> None:
    """Charts exactly, lat/lon/attrs exactly, float inputs to float32 rounding."""
    assert list(a.data_vars) == list(b.data_vars) == list(R2T_VARIABLE_NAMES)
    for var in R2T_VARIABLE_NAMES:
        x, y = a[var].values, b[var].values
        assert x.dtype == y.dtype, var
        if var in CHARTS or x.dtype == np.float64:
            np.testing.assert_array_equal(x, y, err_msg=var)
        else:
            np.testing.assert_allclose(x, y, rtol=0, atol=2e-6, err_msg=var)
        assert a[var].attrs.keys() == b[var].attrs.keys(), var
    for key in ("scene_id", "original_id", "ice_service", "flip", "pixel_spacing"):
        assert a.attrs[key] == b.attrs[key]


def test_r2t_is_valid_and_follows_the_conversion(scene) -> None:
    ds = physical_to_r2t(scene)
    validate_scene(ds, "synthetic")
    assert ds.sizes["sar_lines"] == 60 and ds.sizes["2km_grid_samples"] == 3
    # polygon 4 is the merge-overwrite row (official: SOD/FLOE masked), tile (1, 0)
    valid = ds["nersc_sar_primary"].values != 0
    ids = scene.polygon_ids
    p4 = (ids == 4) & valid
    assert p4.any()
    assert (ds["SIC"].values[p4] == 10).all() and (ds["SOD"].values[p4] == 255).all()
    clean = physical_to_r2t(scene, clean=True)
    assert (clean["SOD"].values[p4] == 4).all() and (clean["FLOE"].values[p4] == 3).all()


def test_r2t_mask_alignment(scene) -> None:
    ds = physical_to_r2t(scene)
    hh = ds["nersc_sar_primary"].values
    no_chart = np.isnan(scene.polygon_ids)
    assert (hh[no_chart] == 0).all() and (ds["sar_incidenceangle"].values[no_chart] == 0).all()
    for c in CHARTS:
        assert (ds[c].values[~scene.sar_valid] == 255).all()
    valid = scene.sar_valid & ~no_chart
    assert (hh[valid] != 0).all()
    # the valid SAR values are the physical dB z-scored with the official constants
    np.testing.assert_allclose(
        denormalise("nersc_sar_primary", hh[valid]), scene.hh_db[valid], atol=1e-4
    )
    # distance map is never masked
    np.testing.assert_allclose(
        denormalise("distance_map", ds["distance_map"].values), scene.distance_zones, atol=1e-4
    )


def test_raw_layout(scene) -> None:
    raw = physical_to_raw(scene, seed=1)
    assert raw.sizes["sar_lines"] == 120 and raw.sizes["sar_samples"] == 152
    assert raw.sizes["sar_grid_points"] == 441 and raw.sizes["polygon_codes"] == 10
    assert raw["polygon_icechart"].dtype == np.float32
    assert raw["btemp_18_7h"].dtype == np.float64 and raw["amsr2_swath_map"].dtype == np.uint8
    assert raw["polygon_codes"].values[0].startswith("poly_id;CT;CA")
    assert raw["polygon_icechart"].attrs["icechart_id"] == scene.icechart_id
    assert set(raw.attrs) == {"title", "geometric_info", "sar_denoise_by_nersc_documentation"}
    hh40 = raw["nersc_sar_primary"].values
    # speckle texture at 40 m, but every 2 x 2 block averages to the 80 m value
    block = hh40.reshape(60, 2, 76, 2).astype(np.float64)
    ok = scene.sar_valid
    assert np.nanstd(block - block.mean(axis=(1, 3), keepdims=True)) > 0.5
    np.testing.assert_allclose(block.mean(axis=(1, 3))[ok], scene.hh_db[ok], atol=1e-5)
    assert np.isnan(block.mean(axis=(1, 3))[~ok]).all()


def test_raw_is_reproducible_from_its_seed(scene) -> None:
    a = physical_to_raw(scene, seed=5)["nersc_sar_secondary"].values
    b = physical_to_raw(scene, seed=5)["nersc_sar_secondary"].values
    c = physical_to_raw(scene, seed=6)["nersc_sar_secondary"].values
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.nan_to_num(a), np.nan_to_num(c))


@pytest.mark.parametrize("odd", [False, True])
def test_converted_raw_equals_r2t_in_memory(scene, odd: bool) -> None:
    raw = physical_to_raw(scene, seed=2, odd=odd)
    assert_same_scene(raw_dataset_to_r2t(raw, source=raw_file_name(scene)), physical_to_r2t(scene))


def test_converted_raw_equals_r2t_through_files(scene, tmp_path) -> None:
    raw_path = write_raw(physical_to_raw(scene, seed=2, odd=True), tmp_path / raw_file_name(scene))
    r2t_path = write_scene(physical_to_r2t(scene), tmp_path / "r2t" / "x_prep.nc")
    from_raw = open_scene(raw_path)  # the generic reader converts raw files on the fly
    assert from_raw.attrs["scene_name"] == scene.scene_name
    assert_same_scene(from_raw, open_scene(r2t_path))
    assert_same_scene(open_raw(raw_path), open_scene(r2t_path))


def test_raw_test_file_without_chart(scene, tmp_path) -> None:
    raw = physical_to_raw(scene, seed=0, with_chart=False)
    assert "polygon_icechart" not in raw.variables and "polygon_codes" not in raw.variables
    ds = raw_dataset_to_r2t(raw, source=raw_file_name(scene))
    assert all((ds[c].values == 255).all() for c in CHARTS)
    # without a chart the SAR is masked by its own footprint only
    np.testing.assert_array_equal(ds["nersc_sar_primary"].values != 0, scene.sar_valid)


def test_scene_name_must_match_original_id(scene) -> None:
    import dataclasses

    bad = dataclasses.replace(scene, scene_name="20200101T000000_dmi")
    with pytest.raises(DataError, match="original_id"):
        physical_to_raw(bad, seed=0)
