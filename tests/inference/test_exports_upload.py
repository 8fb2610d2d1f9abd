"""AutoICE upload_package.nc: exact §4 structure, streaming writer, structural checker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

from icecontext.data.io.format import CHARTS, N_CLASSES, OFFICIAL_TEST_SCENES
from icecontext.errors import DataError
from icecontext.inference.exports import (
    ExportError,
    UploadPackageWriter,
    check_upload_package,
    write_upload_package,
)

SHAPES = {"20180124T194759_dmi": (30, 41), "20180623T114935_cis": (27, 25)}


def predictions(seed: int = 0, masked: bool = True) -> Iterator[tuple[str, dict]]:
    rng = np.random.default_rng(seed)
    for name, shape in SHAPES.items():
        charts = {c: rng.integers(0, N_CLASSES[c], size=shape).astype(np.uint8) for c in CHARTS}
        if masked:
            for c in CHARTS:
                charts[c][:3] = 255
        yield name, charts


def test_structure_is_exactly_section_4(tmp_path: Path) -> None:
    path = write_upload_package(
        tmp_path / "upload_package.nc", predictions(), expected_scenes=list(SHAPES)
    )
    assert check_upload_package(path, expected_scenes=list(SHAPES), shapes=SHAPES) == SHAPES
    expected = dict(predictions())
    with netCDF4.Dataset(path) as nc:
        assert nc.data_model == "NETCDF4"
        assert sorted(nc.variables) == sorted(f"{s}_{c}" for s in SHAPES for c in CHARTS)
        for scene, charts in expected.items():
            for chart in CHARTS:
                name = f"{scene}_{chart}"
                var = nc[name]
                assert var.dimensions == (f"{name}_dim0", f"{name}_dim1")
                assert var.dtype == np.uint8
                assert var.ncattrs() == []  # no attributes, no _FillValue
                filters = var.filters()
                assert filters["zlib"] and filters["complevel"] == 1
                want = np.where(charts[chart] == 255, 0, charts[chart])  # masked -> class 0
                np.testing.assert_array_equal(var[:].data, want)
    # Reads back as uint8 with xarray's defaults, as the organisers would open it.
    ds = xr.open_dataset(path)
    assert ds["20180124T194759_dmi_SIC"].dtype == np.uint8


def test_writer_streams_scenes_and_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "upload_package.nc"
    path.write_bytes(b"old")
    with UploadPackageWriter(path) as writer:
        for i, (name, charts) in enumerate(predictions(masked=False)):
            writer.add(name, charts)
            assert path.read_bytes() == b"old"  # target untouched until the end
            assert writer.scenes == {n: SHAPES[n] for n in list(SHAPES)[: i + 1]}
        with pytest.raises(DataError, match="already added"):
            writer.add(name, charts)
    assert check_upload_package(path) == SHAPES
    assert [p.name for p in tmp_path.iterdir()] == ["upload_package.nc"]


def test_failure_keeps_the_old_target_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "upload_package.nc"
    path.write_bytes(b"old")

    def failing() -> Iterator[tuple[str, dict]]:
        yield from predictions()
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError, match="model crashed"):
        write_upload_package(path, failing())
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["upload_package.nc"]
    with pytest.raises(DataError, match="scenes missing: \\['20180707T113313_cis'"):
        write_upload_package(path, predictions(), expected_scenes="official")
    assert path.read_bytes() == b"old"
    with pytest.raises(DataError, match="no scene was added"):
        write_upload_package(path, iter([]))
    assert [p.name for p in tmp_path.iterdir()] == ["upload_package.nc"]


def test_bad_predictions_raise(tmp_path: Path) -> None:
    good = dict(predictions())["20180124T194759_dmi"]
    with UploadPackageWriter(tmp_path / "u.nc") as writer:
        with pytest.raises(DataError, match="19-character"):
            writer.add("20180124T194759_dmi_prep.nc", good)
        with pytest.raises(DataError, match=r"charts \['FLOE'\] missing"):
            writer.add("20180124T194759_dmi", {c: good[c] for c in ("SIC", "SOD")})
        with pytest.raises(DataError, match="'SOD' has shape"):
            writer.add("20180124T194759_dmi", {**good, "SOD": good["SOD"][:5]})
        with pytest.raises(DataError, match=r"'FLOE' holds values \[9\]"):
            writer.add("20180124T194759_dmi", {**good, "FLOE": np.full_like(good["FLOE"], 9)})
        with pytest.raises(DataError, match="dtype float32"):
            writer.add("20180124T194759_dmi", {**good, "SIC": good["SIC"].astype(np.float32)})
        writer.add("20180124T194759_dmi", good)
    with pytest.raises(ExportError, match="exists"):
        UploadPackageWriter(tmp_path / "u.nc", overwrite=False)


def test_masked_values_kept_on_request(tmp_path: Path) -> None:
    path = write_upload_package(tmp_path / "u.nc", predictions(), fill_masked=None)
    with pytest.raises(DataError, match=r"values \[255\] outside the SIC classes 0\.\.10"):
        check_upload_package(path)
    assert check_upload_package(path, allow_masked=True) == SHAPES


def write_raw(path: Path, variables: dict[str, tuple[tuple[str, ...], np.ndarray]]) -> Path:
    ds = xr.Dataset({k: xr.DataArray(v, dims=d) for k, (d, v) in variables.items()})
    ds.to_netcdf(path, engine="netcdf4", format="NETCDF4")
    return path


def test_checker_reports_every_problem(tmp_path: Path) -> None:
    n = "20180124T194759_dmi"
    u8 = np.zeros((4, 5), dtype=np.uint8)
    path = write_raw(
        tmp_path / "bad.nc",
        {
            f"{n}_SIC": ((f"{n}_SIC_dim0", f"{n}_SIC_dim1"), u8),
            f"{n}_SOD": (("y", "x"), u8),  # wrong dims
            f"{n}_FLOE": ((f"{n}_FLOE_dim0", f"{n}_FLOE_dim1"), u8.astype(np.int16)),  # dtype
            "20180623T114935_cis_SIC": (
                ("20180623T114935_cis_SIC_dim0", "20180623T114935_cis_SIC_dim1"),
                np.full((4, 5), 12, np.uint8),  # out of range, and SOD/FLOE missing
            ),
            "prediction": (("a",), np.zeros(3, np.uint8)),  # bad name
        },
    )
    with pytest.raises(DataError) as info:
        check_upload_package(path, shapes={n: (4, 6)})
    msg = str(info.value)
    assert "bad.nc: not a valid AutoICE upload package" in msg
    assert f"variable '{n}_SOD': dimensions ('y', 'x')" in msg
    assert f"variable '{n}_FLOE': dtype int16, expected uint8" in msg
    assert "variable '20180623T114935_cis_SIC': values [12]" in msg
    assert "scene 20180623T114935_cis: charts ['SOD', 'FLOE'] missing" in msg
    assert "variable 'prediction': name is not" in msg
    assert f"variable '{n}_SIC': shape (4, 5), expected the scene's (4, 6)" in msg


def test_checker_official_list_needs_60_variables(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def all_scenes() -> Iterator[tuple[str, dict]]:
        for name in OFFICIAL_TEST_SCENES:
            yield name, {c: rng.integers(0, N_CLASSES[c], (6, 7)).astype(np.uint8) for c in CHARTS}

    path = write_upload_package(tmp_path / "u.nc", all_scenes(), expected_scenes="official")
    with netCDF4.Dataset(path) as nc:
        assert len(nc.variables) == 60
    assert len(check_upload_package(path, expected_scenes="official")) == 20
    with pytest.raises(DataError, match="cannot be read as NetCDF-4"):
        check_upload_package(tmp_path / "missing.nc")
