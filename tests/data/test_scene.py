"""Opening, pairing and validating scenes: every bad-input case names the file and variable."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from icecontext.data.io.format import CHARTS, R2T_VARIABLE_NAMES
from icecontext.data.io.scene import (
    find_scenes,
    open_scene,
    reference_path_for,
    valid_sar_mask,
    validate_scene,
    write_scene,
)
from icecontext.errors import DataError, SceneFormatError
from icecontext.testing import SceneMasks, make_scene_dataset


def _write(ds: xr.Dataset, folder: Path, name: str = "20190101T060000_dmi_prep.nc") -> Path:
    return write_scene(ds, folder / name)


def test_open_scene_keeps_file_values_and_dtypes(tmp_path: Path) -> None:
    ds = make_scene_dataset(120, 130, seed=3)
    path = _write(ds, tmp_path)
    opened = open_scene(path)
    assert list(opened.data_vars) == list(R2T_VARIABLE_NAMES)
    for name in R2T_VARIABLE_NAMES:
        assert opened[name].dtype == ds[name].dtype, name
        np.testing.assert_array_equal(opened[name].values, ds[name].values)
    assert opened.attrs["scene_name"] == "20190101T060000_dmi"
    assert opened.encoding["source"] == str(path)
    # no _FillValue masking: charts stay uint8 with literal 255
    assert opened["SIC"].dtype == np.uint8
    assert (opened["SIC"].values == 255).any()


def test_test_scene_is_paired_with_its_reference(test_set_dir: Path) -> None:
    path = find_scenes(test_set_dir)[0]
    assert reference_path_for(path).exists()
    paired = open_scene(path)
    bare = open_scene(path, reference=None)
    assert (bare["SIC"].values == 255).all()
    assert (paired["SIC"].values != 255).any()
    assert paired.encoding["reference"] == str(reference_path_for(path))


def test_find_scenes_skips_reference_files(test_set_dir: Path) -> None:
    files = find_scenes(test_set_dir)
    assert len(files) == 2
    assert all(f.name.endswith("_prep.nc") for f in files)


def test_find_scenes_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        find_scenes(tmp_path / "nope")
    with pytest.raises(DataError, match=str(tmp_path)):
        find_scenes(tmp_path)


# ---------------------------------------------------------------- bad input, one case each


def _assert_names(exc: SceneFormatError, path: Path, variable: str | None) -> None:
    assert str(path) in str(exc)
    assert exc.variable == variable
    if variable:
        assert f"'{variable}'" in str(exc)


def test_missing_variable(tmp_path: Path) -> None:
    path = _write(make_scene_dataset(100, 100).drop_vars("btemp_18_7h"), tmp_path)
    with pytest.raises(SceneFormatError, match="missing") as info:
        open_scene(path)
    _assert_names(info.value, path, "btemp_18_7h")


def test_wrong_dims(tmp_path: Path) -> None:
    ds = make_scene_dataset(100, 100)
    ds["sar_incidenceangle"] = ds["sar_incidenceangle"].transpose()
    path = _write(ds, tmp_path)
    with pytest.raises(SceneFormatError, match="dimensions") as info:
        open_scene(path)
    _assert_names(info.value, path, "sar_incidenceangle")


def test_wrong_shape_of_a_sar_variable(tmp_path: Path) -> None:
    ds = make_scene_dataset(100, 100)
    hv = ds["nersc_sar_secondary"].values[:, :90]
    ds = ds.drop_vars("nersc_sar_secondary")
    ds["nersc_sar_secondary"] = xr.DataArray(hv, dims=("sar_lines", "other_samples"))
    path = _write(ds, tmp_path)
    with pytest.raises(SceneFormatError, match="expected \\('sar_lines', 'sar_samples'\\)") as info:
        open_scene(path)
    _assert_names(info.value, path, "nersc_sar_secondary")


def test_wrong_dtype(tmp_path: Path) -> None:
    ds = make_scene_dataset(100, 100)
    ds["SOD"] = ds["SOD"].astype(np.float32)
    path = _write(ds, tmp_path)
    with pytest.raises(SceneFormatError, match="dtype float32, expected uint8") as info:
        open_scene(path)
    _assert_names(info.value, path, "SOD")


def test_amsr_grid_inconsistent_with_floor_h_over_25(tmp_path: Path) -> None:
    ds = make_scene_dataset(100, 100)  # 4 x 4 cells expected
    ds = ds.isel({"2km_grid_lines": slice(0, 3)})
    path = _write(ds, tmp_path)
    with pytest.raises(SceneFormatError, match="floor\\(H/25\\)") as info:
        open_scene(path)
    _assert_names(info.value, path, "btemp_6_9h")
    assert "expected" in str(info.value) and "4 x 4" in str(info.value)


def test_tiepoint_grid_shape(tmp_path: Path) -> None:
    ds = make_scene_dataset(100, 100).isel(sar_line_2dgrid_points=slice(0, 20))
    path = _write(ds, tmp_path)
    with pytest.raises(SceneFormatError, match="21, 21") as info:
        open_scene(path)
    _assert_names(info.value, path, "sar_grid2d_latitude")


def test_chart_values_out_of_range(tmp_path: Path) -> None:
    ds = make_scene_dataset(100, 100)
    floe = ds["FLOE"].values.copy()
    floe[0, 0] = 9
    ds["FLOE"] = ds["FLOE"].copy(data=floe)
    path = _write(ds, tmp_path)
    with pytest.raises(SceneFormatError, match="values \\[9\\]") as info:
        open_scene(path)
    _assert_names(info.value, path, "FLOE")


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "20190101T060000_dmi_prep.nc"
    path.write_text("this is not a netcdf file\n")
    with pytest.raises(SceneFormatError, match="cannot be read") as info:
        open_scene(path)
    _assert_names(info.value, path, None)


def test_truncated_file(tmp_path: Path) -> None:
    good = _write(make_scene_dataset(150, 160, seed=1), tmp_path, "good.nc")
    path = tmp_path / "20190101T060000_dmi_prep.nc"
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SceneFormatError) as info:
        open_scene(path)
    assert str(path) in str(info.value)
    assert "truncated" in str(info.value)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(SceneFormatError, match="does not exist"):
        open_scene(tmp_path / "absent_prep.nc")
    with pytest.raises(SceneFormatError, match="is a folder"):
        open_scene(tmp_path)


def test_all_masked_sar(tmp_path: Path) -> None:
    ds = make_scene_dataset(100, 100)
    for v in ("nersc_sar_primary", "nersc_sar_secondary", "sar_incidenceangle"):
        ds[v] = ds[v].copy(data=np.zeros_like(ds[v].values))
    path = _write(ds, tmp_path)
    with pytest.raises(SceneFormatError, match="all pixels are masked") as info:
        open_scene(path)
    _assert_names(info.value, path, "nersc_sar_primary")


def test_all_masked_charts_only_fail_when_labels_required(tmp_path: Path) -> None:
    ds = make_scene_dataset(100, 100, labelled=False)
    path = _write(ds, tmp_path)
    open_scene(path)  # a test scene without labels is valid input
    with pytest.raises(SceneFormatError, match="all chart pixels are masked") as info:
        open_scene(path, require_labels=True)
    _assert_names(info.value, path, "SIC")


def test_reference_file_missing_chart(tmp_path: Path, test_set_dir: Path) -> None:
    scene = find_scenes(test_set_dir)[0]
    copy = tmp_path / scene.name
    shutil.copy(scene, copy)
    ref = make_scene_dataset(200, 225)[["SIC", "SOD"]]
    ref_path = write_scene(ref, reference_path_for(copy))
    with pytest.raises(SceneFormatError, match="missing from the reference") as info:
        open_scene(copy)
    _assert_names(info.value, ref_path, "FLOE")


def test_reference_file_shape_mismatch(tmp_path: Path, test_set_dir: Path) -> None:
    scene = find_scenes(test_set_dir)[0]
    copy = tmp_path / scene.name
    shutil.copy(scene, copy)
    ref_path = write_scene(make_scene_dataset(100, 100)[list(CHARTS)], reference_path_for(copy))
    with pytest.raises(SceneFormatError, match="differs from the scene") as info:
        open_scene(copy)
    _assert_names(info.value, ref_path, "SIC")


def test_validate_in_memory_dataset_uses_given_path() -> None:
    ds = make_scene_dataset(100, 100).drop_vars("t2m")
    with pytest.raises(SceneFormatError, match="memory.nc: variable 't2m'"):
        validate_scene(ds, "memory.nc")


def test_valid_sar_mask_matches_zero_fill(tmp_path: Path) -> None:
    ds = make_scene_dataset(100, 120, seed=5)
    mask = valid_sar_mask(ds)
    assert mask.dtype == bool
    assert 0.3 < mask.mean() < 0.95  # land corner and swath edge are masked
    # charts are masked wherever SAR is (mask alignment of the production)
    assert (ds["SIC"].values[~mask] == 255).all()


def test_write_scene_is_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = make_scene_dataset(50, 50)
    target = tmp_path / "x_prep.nc"

    def broken_writer(self: xr.Dataset, path: Path, **kwargs: object) -> None:
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken_writer)
    with pytest.raises(OSError, match="disk full"):
        write_scene(ds, target)
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary file


def test_scene_masks_turn_off_the_land_area_and_the_swath_edge() -> None:
    default = make_scene_dataset(60, 70, seed=4)
    hh = default["nersc_sar_primary"].values
    assert (hh == 0).any() and (default["SIC"].values == 255).any()
    bare = make_scene_dataset(60, 70, seed=4, masks=SceneMasks(land=False, footprint=False))
    assert (bare["nersc_sar_primary"].values != 0).all()
    assert (bare["SIC"].values != 255).all()
    # no land: every pixel is in the farthest distance zone
    assert np.unique(bare["distance_map"].values).size == 1
    only_edge = make_scene_dataset(60, 70, seed=4, masks=SceneMasks(land=False))
    assert (only_edge["nersc_sar_primary"].values[:, -1] == 0).all()
    assert (only_edge["nersc_sar_primary"].values[:, 0] != 0).all()
