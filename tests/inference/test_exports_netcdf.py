"""CF NetCDF chart files: decoding, flags, probabilities, lat/lon, provenance, errors."""

from __future__ import annotations

import os
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml

from icecontext import __version__
from icecontext.data.io.format import CHARTS, CLASS_NAMES, N_CLASSES
from icecontext.errors import DataError, SceneFormatError
from icecontext.inference.exports import (
    ExportError,
    ExportProvenance,
    NetCDFOptions,
    ProbabilityLayers,
    confidence_map,
    scene_latlon,
    write_chart_netcdf,
    write_scene_outputs,
)
from icecontext.inference.exports.geolocation import tiepoint_pixel_positions
from icecontext.inference.exports.netcdf import flag_meaning
from icecontext.testing import make_scene_dataset

H, W = 201, 221  # (H - 1) and (W - 1) divisible by 20: tie points fall on pixel centres


@pytest.fixture(scope="module")
def scene() -> xr.Dataset:
    return make_scene_dataset(H, W, seed=4)


@pytest.fixture(scope="module")
def charts(scene: xr.Dataset) -> dict[str, np.ndarray]:
    return {c: scene[c].values.copy() for c in CHARTS}


@pytest.fixture(scope="module")
def probabilities(charts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for chart in ("SOD", "FLOE"):
        n = N_CLASSES[chart]
        p = rng.dirichlet(np.full(n, 0.5), size=(H, W)).astype(np.float32)
        out[chart] = np.moveaxis(p, -1, 0)
    return out


def leftovers(folder: Path) -> list[str]:
    return [p for p in os.listdir(folder) if p.startswith(".")]


def test_decodes_with_xarray_and_keeps_masks(
    tmp_path: Path, scene: xr.Dataset, charts: dict, probabilities: dict
) -> None:
    path = write_chart_netcdf(
        tmp_path / "out.nc",
        scene,
        charts,
        layers=ProbabilityLayers(probabilities=probabilities),
        provenance=ExportProvenance(checkpoint="best.ckpt"),
    )
    ds = xr.open_dataset(path)
    for chart in CHARTS:
        masked = charts[chart] == 255
        assert masked.any() and (~masked).any()
        values = ds[chart].values
        assert np.isnan(values[masked]).all()
        np.testing.assert_array_equal(values[~masked], charts[chart][~masked])
        assert list(ds[chart].attrs["flag_values"]) == list(range(N_CLASSES[chart]))
        assert len(ds[chart].attrs["flag_meanings"].split()) == N_CLASSES[chart]
    sic = charts["SIC"]
    pct = ds["SIC_percent"].values
    np.testing.assert_array_equal(pct[sic != 255], 10.0 * sic[sic != 255])
    assert ds["SIC_percent"].attrs["standard_name"] == "sea_ice_area_fraction"
    assert ds["SIC_percent"].attrs["units"] == "%"
    assert ds.attrs["Conventions"] == "CF-1.11"
    assert ds["latitude"].attrs["units"] == "degrees_north"
    assert ds["longitude"].attrs["standard_name"] == "longitude"
    assert set(ds["SOD"].coords) == {"latitude", "longitude"}
    # Raw storage: uint8 with _FillValue 255 and the CF "coordinates" attribute.
    with netCDF4.Dataset(path) as nc:
        var = nc["SOD"]
        assert var.dtype == np.uint8 and var.getncattr("_FillValue") == 255
        assert set(var.getncattr("coordinates").split()) == {"latitude", "longitude"}
        assert nc.data_model == "NETCDF4"
        assert nc["SOD_probability"].dtype == np.uint8
        assert var.filters()["zlib"] and var.filters()["complevel"] == 1
    assert not leftovers(tmp_path)


def test_probabilities_uint8_and_float32(
    tmp_path: Path, scene: xr.Dataset, charts: dict, probabilities: dict
) -> None:
    packed = xr.open_dataset(
        write_chart_netcdf(
            tmp_path / "u8.nc", scene, charts, layers=ProbabilityLayers(probabilities=probabilities)
        )
    )
    full = xr.open_dataset(
        write_chart_netcdf(
            tmp_path / "f32.nc",
            scene,
            charts,
            layers=ProbabilityLayers(probabilities=probabilities, confidence="entropy"),
            options=NetCDFOptions(probability_encoding="float32"),
        )
    )
    for chart, p in probabilities.items():
        valid = charts[chart] != 255
        got = packed[f"{chart}_probability"].values
        assert got.shape == p.shape
        assert np.abs(got[:, valid] - p[:, valid]).max() <= 0.5 / 250 + 1e-6
        assert np.isnan(got[:, ~valid]).all()
        np.testing.assert_array_equal(full[f"{chart}_probability"].values[:, valid], p[:, valid])
        conf = packed[f"{chart}_confidence"].values
        np.testing.assert_allclose(conf[valid], p.max(axis=0)[valid], atol=0.5 / 250 + 1e-6)
        ent = full[f"{chart}_confidence"].values
        np.testing.assert_allclose(ent[valid], confidence_map(p, "entropy")[valid], rtol=1e-6)
        assert np.isnan(ent[~valid]).all()
        assert list(packed[f"{chart}_class"].values) == list(range(N_CLASSES[chart]))
    assert "SIC_probability" not in packed  # SIC had no probabilities (regression head)


def test_confidence_definitions() -> None:
    p = np.zeros((4, 1, 3), dtype=np.float32)
    p[:, 0, 0] = 0.25  # uniform
    p[2, 0, 1] = 1.0  # certain
    p[:2, 0, 2] = [0.6, 0.4]
    np.testing.assert_allclose(confidence_map(p, "max")[0], [0.25, 1.0, 0.6])
    h = -(0.6 * np.log(0.6) + 0.4 * np.log(0.4)) / np.log(4)
    np.testing.assert_allclose(confidence_map(p, "entropy")[0], [0.0, 1.0, 1 - h], atol=1e-6)


def test_latlon_matches_tie_points_and_is_smooth(scene: xr.Dataset) -> None:
    lat, lon = scene_latlon(scene)
    rows, cols = tiepoint_pixel_positions((H, W))
    r, c = rows.astype(int), cols.astype(int)
    np.testing.assert_allclose(lat[np.ix_(r, c)], scene["sar_grid2d_latitude"].values, atol=1e-4)
    np.testing.assert_allclose(lon[np.ix_(r, c)], scene["sar_grid2d_longitude"].values, atol=1e-4)
    assert lat.dtype == np.float32 and lat.shape == (H, W)
    assert np.all(np.diff(lat, axis=0) > 0)  # the fixture's latitude rises down the lines
    assert np.abs(np.diff(lon, axis=1)).max() < 0.1


def test_latlon_across_the_date_line(scene: xr.Dataset) -> None:
    ds = scene.copy()
    lon = np.linspace(178.0, 182.0, 21)[None, :] + np.zeros((21, 21))
    ds["sar_grid2d_longitude"] = (ds["sar_grid2d_longitude"].dims, (lon + 180) % 360 - 180)
    _, got = scene_latlon(ds)
    unwrapped = np.where(got < 0, got + 360, got)
    assert unwrapped.min() > 177.9 and unwrapped.max() < 182.1  # no pixel jumps to ~0
    assert np.all(np.diff(unwrapped, axis=1) > 0)


def test_provenance_attributes(tmp_path: Path, scene: xr.Dataset, charts: dict) -> None:
    config = {"model": {"backbone": "resnet18", "aspp_rates": [1, 6, 12]}}
    ds = xr.open_dataset(
        write_chart_netcdf(
            tmp_path / "p.nc",
            scene,
            charts,
            provenance=ExportProvenance(
                checkpoint="runs/x/best.ckpt",
                config=config,
                attrs={"sic_rule": "round", "tile": 512},
            ),
            options=NetCDFOptions(latlon=False),
        )
    )
    assert ds.attrs["checkpoint"] == "runs/x/best.ckpt"
    assert yaml.safe_load(ds.attrs["config"]) == config
    assert ds.attrs["icecontext_version"] == __version__
    assert ds.attrs["scene_name"] == scene.attrs["scene_id"][:19]
    assert ds.attrs["sic_rule"] == "round" and ds.attrs["tile"] == 512
    assert "latitude" not in ds.coords


def test_flag_meanings_are_cf_words() -> None:
    assert flag_meaning("10 %") == "10_percent"
    assert flag_meaning("Thin first-year ice") == "thin_first-year_ice"
    for chart in CHARTS:
        for name in CLASS_NAMES[chart]:
            word = flag_meaning(name)
            assert word and " " not in word


def test_bad_arrays_raise(scene: xr.Dataset, charts: dict, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"prediction 'SOD' has shape \(10, 10\)"):
        write_chart_netcdf(
            tmp_path / "x.nc", scene, {**charts, "SOD": np.zeros((10, 10), np.uint8)}
        )
    with pytest.raises(DataError, match=r"prediction 'FLOE' holds values \[7\]"):
        write_chart_netcdf(
            tmp_path / "x.nc", scene, {**charts, "FLOE": np.full((H, W), 7, np.uint8)}
        )
    with pytest.raises(DataError, match=r"probabilities 'SOD' have shape \(5, 201, 221\)"):
        write_chart_netcdf(
            tmp_path / "x.nc",
            scene,
            charts,
            layers=ProbabilityLayers(probabilities={"SOD": np.zeros((5, H, W), np.float32)}),
        )
    broken = scene.drop_vars("sar_grid2d_latitude")
    with pytest.raises(SceneFormatError, match="sar_grid2d_latitude"):
        write_chart_netcdf(tmp_path / "x.nc", broken, charts)
    assert not list(tmp_path.iterdir())


def test_unwritable_folder_names_it_and_leaves_nothing(
    tmp_path: Path, scene: xr.Dataset, charts: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(
        ExportError,
        match=r"output folder .*not_a_folder cannot be created: .*not_a_folder is a file",
    ):
        write_chart_netcdf(blocker / "charts.nc", scene, charts)

    # A permission error (what a read-only folder gives a normal user; root bypasses chmod).
    import tempfile

    def deny(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    out = tmp_path / "ro"
    out.mkdir()
    monkeypatch.setattr(tempfile, "mkstemp", deny)
    with pytest.raises(ExportError, match=rf"output folder {out} is not writable"):
        write_chart_netcdf(out / "charts.nc", scene, charts)
    assert not list(out.iterdir())


def test_failure_mid_write_leaves_no_partial_file(
    tmp_path: Path, scene: xr.Dataset, charts: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = xr.Dataset.to_netcdf

    def half_then_fail(self: xr.Dataset, path: object, *args: object, **kwargs: object) -> None:
        original(self[["SIC"]], path, *args, **{**kwargs, "encoding": {}})
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", half_then_fail)
    with pytest.raises(ExportError, match="No space left on device"):
        write_chart_netcdf(tmp_path / "charts.nc", scene, charts)
    assert not list(tmp_path.iterdir())


def test_a_full_disk_reported_as_an_hdf_error_is_named(
    tmp_path: Path, scene: xr.Dataset, charts: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """netCDF4 reports ENOSPC as ``RuntimeError: NetCDF: HDF error``."""
    import shutil
    from collections import namedtuple

    import icecontext.inference.exports.output as output

    def hdf_error(self: xr.Dataset, path: object, *args: object, **kwargs: object) -> None:
        raise RuntimeError("NetCDF: HDF error")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", hdf_error)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(ExportError, match=r"no space left on device in .* \(No space left"):
        write_chart_netcdf(tmp_path / "charts.nc", scene, charts)
    assert not list(tmp_path.iterdir())
    # with room left it is another error, passed on as it is
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 0, 10**9))
    with pytest.raises(RuntimeError, match="HDF error"):
        write_chart_netcdf(tmp_path / "charts.nc", scene, charts)
    assert output._disk_full(tmp_path) is False


def test_scene_outputs_all_or_nothing(
    tmp_path: Path, scene: xr.Dataset, charts: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = scene.attrs["scene_id"][:19]
    written = write_scene_outputs(tmp_path / "a", scene, charts, formats=("netcdf", "quicklook"))
    assert [p.name for p in written["netcdf"]] == [f"{name}_charts.nc"]
    assert [p.name for p in written["quicklook"]] == [f"{name}_quicklook.png"]
    assert oct((tmp_path / "a" / f"{name}_charts.nc").stat().st_mode & 0o777) != oct(0o600)

    import icecontext.inference.exports.per_scene as per_scene

    def boom(*args: object, **kwargs: object) -> None:
        raise ExportError("disk full")

    monkeypatch.setattr(per_scene, "write_quicklook", boom)
    with pytest.raises(ExportError, match="disk full"):
        write_scene_outputs(tmp_path / "b", scene, charts, formats=("netcdf", "quicklook"))
    assert not list((tmp_path / "b").iterdir())
    with pytest.raises(DataError, match="unknown output formats"):
        write_scene_outputs(tmp_path / "c", scene, charts, formats=("shapefile",))  # type: ignore[arg-type]


def test_option_groups_check_their_values_when_made(charts: dict) -> None:
    with pytest.raises(DataError, match="probability_encoding must be 'uint8' or 'float32'"):
        NetCDFOptions(probability_encoding="float16")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"complevel must be 0\.\.9"):
        NetCDFOptions(complevel=10)
    with pytest.raises(DataError, match="confidence must be 'max', 'entropy' or 'none'"):
        ProbabilityLayers(confidence="median")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="confidence maps were given but confidence='none'"):
        ProbabilityLayers(confidences={"SOD": np.zeros((H, W), np.float32)}, confidence="none")


def test_scene_outputs_pass_the_netcdf_options_on(
    tmp_path: Path, scene: xr.Dataset, charts: dict, probabilities: dict
) -> None:
    written = write_scene_outputs(
        tmp_path,
        scene,
        charts,
        formats=("netcdf",),
        layers=ProbabilityLayers(probabilities=probabilities, confidence="none"),
        netcdf=NetCDFOptions(probability_encoding="float32", complevel=0, latlon=False),
        provenance=ExportProvenance(checkpoint="c.ckpt", attrs={"tile": 64}),
    )
    (path,) = written["netcdf"]
    with netCDF4.Dataset(path) as nc:
        assert nc["SOD_probability"].dtype == np.float32
        assert not nc["SOD"].filters()["zlib"]
        assert "latitude" not in nc.variables and "SOD_confidence" not in nc.variables
        assert nc.getncattr("checkpoint") == "c.ckpt" and nc.getncattr("tile") == 64
