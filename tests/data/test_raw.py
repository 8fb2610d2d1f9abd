"""Raw 40 m files -> ready-to-train: reductions, mask alignment, tie points, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from icecontext.data.io.charts import HEADER
from icecontext.data.io.raw import (
    downsample_any,
    downsample_max,
    downsample_mean,
    incidence_at_80m,
    latlon_grid_21,
    open_raw,
    pixel_centres_40m,
    raw_dataset_to_r2t,
)
from icecontext.data.io.scene import open_scene
from icecontext.data.io.variables import denormalise
from icecontext.errors import SceneFormatError
from icecontext.synthetic.writers import (
    example_physical_scene,
    physical_to_raw,
    raw_file_name,
    write_raw,
)

SCENE = example_physical_scene(50, 60, seed=7)
NAME = raw_file_name(SCENE)


@pytest.fixture
def raw() -> xr.Dataset:
    return physical_to_raw(SCENE, seed=0)


# ----------------------------------------------------------------------------- reductions


def test_downsample_mean_nan_if_any_and_odd_edge_dropped() -> None:
    a = np.arange(35, dtype=np.float32).reshape(5, 7)
    a[0, 1] = np.nan
    out = downsample_mean(a)
    assert out.shape == (2, 3) and out.dtype == np.float32
    assert np.isnan(out[0, 0])
    assert out[1, 2] == pytest.approx(a[2:4, 4:6].mean())
    assert out[0, 1] == pytest.approx(a[0:2, 2:4].mean())


def test_downsample_max_255_wins_and_ice_beats_water() -> None:
    c = np.array([[0, 3, 0, 0], [0, 0, 0, 255]], dtype=np.uint8)
    assert downsample_max(c).tolist() == [[3, 255]]
    assert downsample_any(np.array([[0, 0, 1], [0, 0, 0]], bool)).tolist() == [[False]]


def test_incidence_interpolated_at_80m_pixel_centres() -> None:
    ll, ss = np.meshgrid(np.linspace(0, 99, 21), np.linspace(0, 199, 21), indexing="ij")
    ia = 20.0 + 0.1 * ss + 0.01 * ll
    out = incidence_at_80m(ll.ravel(), ss.ravel(), ia.ravel(), (50, 100))
    assert out.shape == (50, 100) and out.dtype == np.float32
    assert pixel_centres_40m(3).tolist() == [0.5, 2.5, 4.5]
    expected = 20.0 + 0.1 * (2 * np.arange(100) + 0.5) + 0.01 * (2 * np.arange(50)[:, None] + 0.5)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_latlon_grid_reshapes_21x21_and_resamples_other_grids() -> None:
    def lat_of(r, c):
        return 70.0 + 0.01 * r + 0.001 * c

    ll, ss = np.meshgrid(np.linspace(0, 99, 21), np.linspace(0, 199, 21), indexing="ij")
    lat, lon = latlon_grid_21(
        ll.ravel(), ss.ravel(), lat_of(ll, ss).ravel(), -ss.ravel() / 100, (50, 100)
    )
    np.testing.assert_array_equal(lat, lat_of(ll, ss))
    assert lat.shape == lon.shape == (21, 21)
    # an 11 x 6 grid is resampled at 21 points spanning the 80 m image (40 m centres 2 r + 0.5)
    ll, ss = np.meshgrid(np.linspace(0, 99, 11), np.linspace(0, 199, 6), indexing="ij")
    lat, _ = latlon_grid_21(ll.ravel(), ss.ravel(), lat_of(ll, ss).ravel(), np.zeros(66), (50, 100))
    rows40 = 2 * np.linspace(0, 49, 21) + 0.5
    cols40 = 2 * np.linspace(0, 99, 21) + 0.5
    np.testing.assert_allclose(lat, lat_of(rows40[:, None], cols40[None, :]), atol=1e-6)


# ----------------------------------------------------------------------------- conversion


def test_mixed_blocks_mask_alignment_and_block_size(raw) -> None:
    raw = raw.copy(deep=True)
    ids = raw["polygon_icechart"].values
    hh = raw["nersc_sar_primary"].values
    # 80 m pixel (30, 40): one 40 m quarter outside the chart -> charts 255, SAR masked
    ids[60, 80] = np.nan
    # 80 m pixel (30, 41): one quarter is water polygon 6 in a polygon-9 block -> ice wins
    ids[60, 82:84] = 9.0
    ids[61, 82] = 6.0
    # 80 m pixel (31, 40): one quarter without SAR -> SAR 0, charts 255
    ids[62:64, 80:82] = 9.0
    hh[63, 81] = np.nan
    out = raw_dataset_to_r2t(raw, source=NAME)
    assert out["SIC"].values[30, 40] == 255 and out["nersc_sar_primary"].values[30, 40] == 0
    assert out["sar_incidenceangle"].values[30, 40] == 0
    assert (out["SIC"].values[30, 41], out["SOD"].values[30, 41]) == (3, 5)
    assert out["SIC"].values[31, 40] == 255 and out["nersc_sar_primary"].values[31, 40] == 0
    assert out["distance_map"].values[31, 40] != 0  # never masked
    small_blocks = raw_dataset_to_r2t(raw, source=NAME, block_rows=3)
    for var in out.data_vars:
        np.testing.assert_array_equal(small_blocks[var].values, out[var].values)


def test_incidence_angle_and_attributes(raw) -> None:
    out = raw_dataset_to_r2t(raw, source=NAME)
    valid = out["nersc_sar_primary"].values != 0
    ia = denormalise("sar_incidenceangle", out["sar_incidenceangle"].values)[valid]
    cols = np.broadcast_to(np.arange(60), (50, 60))[valid]
    np.testing.assert_allclose(ia, 19.5 + 27.0 * (2 * cols + 0.5) / 119, atol=1e-4)
    assert out.attrs["scene_id"] == f"{SCENE.scene_name}_prep.nc"
    assert out.attrs["original_id"] == NAME and out.attrs["ice_service"] == "dmi"
    assert out.attrs["flip"] == 0 and out.attrs["pixel_spacing"] == 80
    assert out["nersc_sar_primary"].attrs["upstream_id"] == NAME[:67]
    assert out["nersc_sar_primary"].attrs["variable_fill_value"] == 0
    assert out["btemp_36_5h"].attrs["AMSR2_S1_delays"] == 3690
    assert out["btemp_36_5h"].dtype == np.float32 and out["SIC"].dtype == np.uint8


def test_scene_name_from_attributes_when_file_was_renamed(raw) -> None:
    out = raw_dataset_to_r2t(raw, source="renamed.nc")
    assert out.attrs["scene_name"] == SCENE.scene_name
    bare = raw.drop_vars(["polygon_icechart", "polygon_codes"])
    bare["nersc_sar_primary"].attrs["upstream_id"] = "unknown"
    with pytest.raises(SceneFormatError, match=r"renamed\.nc: cannot tell the scene name"):
        raw_dataset_to_r2t(bare, source="renamed.nc")


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "variable",
    ["nersc_sar_secondary", "distance_map", "sar_grid_incidenceangle", "btemp_6_9h", "tclw"],
)
def test_missing_variable_names_file_and_variable(raw, variable) -> None:
    with pytest.raises(SceneFormatError, match=f"{NAME}: variable '{variable}': missing") as err:
        raw_dataset_to_r2t(raw.drop_vars(variable), source=NAME)
    assert err.value.variable == variable


def test_chart_without_code_table(raw) -> None:
    with pytest.raises(SceneFormatError, match=f"{NAME}: variable 'polygon_codes': missing"):
        raw_dataset_to_r2t(raw.drop_vars("polygon_codes"), source=NAME)
    with pytest.raises(SceneFormatError, match="variable 'polygon_icechart': missing"):
        raw_dataset_to_r2t(raw.drop_vars("polygon_icechart"), source=NAME)


def test_bad_polygon_row_names_file_variable_and_row(raw) -> None:
    codes = raw["polygon_codes"].values.copy()
    codes[3] = "3;80;20;95;06;60;93"  # truncated row
    bad = raw.drop_vars("polygon_codes").assign_coords(
        polygon_codes=("polygon_codes", codes, raw["polygon_codes"].attrs)
    )
    with pytest.raises(
        SceneFormatError, match=f"{NAME}: variable 'polygon_codes': row 3: .* 7 fields"
    ):
        raw_dataset_to_r2t(bad, source=NAME)
    codes[3] = "3;8O;20;95;06;60;93;06;-9;-9;-9;-9;-9;-9-9;I"  # letter O for zero
    bad = bad.assign_coords(polygon_codes=("polygon_codes", codes))
    with pytest.raises(SceneFormatError, match="row 3: column CT of .* is '8O'"):
        raw_dataset_to_r2t(bad, source=NAME)
    bad = bad.assign_coords(polygon_codes=("polygon_codes", codes[1:]))  # no header
    with pytest.raises(
        SceneFormatError, match=f"'polygon_codes': row 0: expected the header '{HEADER}'"
    ):
        raw_dataset_to_r2t(bad, source=NAME)


def test_wrong_2km_grid_and_dims(raw) -> None:
    bad = raw.isel({"2km_grid_samples": slice(0, 1)})
    with pytest.raises(SceneFormatError, match=r"variable 'btemp_6_9h': 2 km grid is \(2, 1\)"):
        raw_dataset_to_r2t(bad, source=NAME)
    bad = raw.copy()
    bad["distance_map"] = (("sar_samples", "sar_lines"), raw["distance_map"].values.T)
    with pytest.raises(SceneFormatError, match="variable 'distance_map': has dimensions"):
        raw_dataset_to_r2t(bad, source=NAME)


def test_tie_points_not_a_grid(raw) -> None:
    bad = raw.copy()
    bad["sar_grid_line"] = raw["sar_grid_line"].copy(data=raw["sar_grid_line"].values[::-1].copy())
    with pytest.raises(SceneFormatError, match=f"{NAME}: variable 'sar_grid_line': tie points"):
        raw_dataset_to_r2t(bad, source=NAME)


def test_truncated_and_missing_files(tmp_path, raw) -> None:
    path = write_raw(raw, tmp_path / NAME)
    data = path.read_bytes()
    cut = tmp_path / ("S1B" + NAME[3:])
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(SceneFormatError, match=f"{cut.name}.*(truncated|cannot be read)"):
        open_raw(cut)
    with pytest.raises(SceneFormatError, match=f"{cut.name}"):
        open_scene(cut)
    with pytest.raises(SceneFormatError, match="nothere.nc: file does not exist"):
        open_raw(tmp_path / "nothere.nc")


def test_open_raw_and_open_scene_agree(tmp_path, raw) -> None:
    path = write_raw(raw, tmp_path / NAME)
    a, b = open_raw(path), open_scene(path)
    assert a.encoding["source"] == str(path)
    for var in a.data_vars:
        np.testing.assert_array_equal(a[var].values, b[var].values)
