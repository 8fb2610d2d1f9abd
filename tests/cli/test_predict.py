"""``icecontext predict`` end to end on tiny checkpoints saved the way training saves them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
import yaml

from icecontext.cli.main import main
from icecontext.data.io.format import CHART_FILL, CHARTS, SAR_VARIABLES
from icecontext.inference.loading import load_inference_model
from icecontext.inference.predictor import resolve_precision, tile_for_margin
from icecontext.inference.scenes import PredictSettings, predict_scenes
from icecontext.testing import make_scene_dataset, write_scene_files
from tiny_checkpoint import save_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    scenes = root / "scenes"
    write_scene_files(scenes, 2, height=100, width=130, seed=4)
    ckpt = save_tiny_checkpoint(root / "run" / "best.ckpt")
    return root, scenes, ckpt


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_predict_writes_every_format(setup, capsys):
    root, scenes, ckpt = setup
    out = root / "out_all"
    # fmt: off
    rc = main([
        "predict", "--checkpoint", str(ckpt), "--scenes", str(scenes), "--out", str(out),
        "--tile", "64", "--probabilities", "--confidence", "entropy", "--no-progress",
    ])
    # fmt: on
    assert rc == 0, capsys.readouterr().err
    names = sorted(p.name[:19] for p in scenes.glob("*_prep.nc"))
    for name in names:
        with xr.open_dataset(out / f"{name}_charts.nc") as ds:
            scene = xr.open_dataset(scenes / f"{name}_prep.nc")
            shape = scene.sizes["sar_lines"], scene.sizes["sar_samples"]
            valid = np.asarray(scene[SAR_VARIABLES[0]].values) != 0
            for chart in CHARTS:
                assert ds[chart].shape == shape
                # masked areas stay masked (NaN after CF decoding), the rest is predicted
                assert np.isnan(ds[chart].values[~valid]).all()
                assert np.isfinite(ds[chart].values[valid]).all()
            assert ds["latitude"].shape == shape and ds["longitude"].shape == shape
            assert ds["SOD_probability"].shape == (6, *shape)
            np.testing.assert_allclose(
                ds["SOD_probability"].values[:, valid].sum(0), 1.0, atol=0.02
            )
            conf = ds["SOD_confidence"].values[valid]
            assert ((conf >= 0) & (conf <= 1)).all()
            assert "SIC_probability" not in ds  # a regression SIC head has no distribution
            assert ds.attrs["checkpoint"] == str(ckpt.resolve())
            assert ds.attrs["model_kind"] == "checkpoint" and ds.attrs["tile"] == 64
            assert "resnet18" in ds.attrs["config"]
        with rasterio.open(out / f"{name}_SOD.tif") as tif:
            gcps, crs = tif.gcps
            assert len(gcps) == 441 and crs.to_epsg() == 4326
            assert (tif.height, tif.width) == shape and tif.nodata == CHART_FILL
        assert (out / f"{name}_quicklook.png").stat().st_size > 1000
    assert {"config.yaml", "provenance.json"} <= set(_files(out))
    record = json.loads((out / "provenance.json").read_text())["predict"]
    assert record["checkpoint"] == str(ckpt.resolve()) and record["scenes"] == names
    assert record["tile"] == 64 and record["device"] == "cpu"
    # the default --precision auto: bf16 where this CPU has native bf16, else 32
    assert record["precision"] == resolve_precision("auto", "cpu")
    assert record["formats"] == ["netcdf", "geotiff", "quicklook"]
    assert "predicted 2 scene(s)" in capsys.readouterr().out


def test_crs_writes_map_projected_geotiffs(setup):
    root, scenes, ckpt = setup
    out = root / "out_3413"
    scene = sorted(scenes.glob("*_prep.nc"))[0]
    # fmt: off
    rc = main([
        "predict", "-k", str(ckpt), "-s", str(scene), "-o", str(out), "--formats", "geotiff",
        "--crs", "EPSG:3413", "--tile", "64", "--no-progress",
    ])
    # fmt: on
    assert rc == 0
    tifs = sorted(out.glob("*.tif"))
    assert [p.name[20:] for p in tifs] == [f"{c}_epsg3413.tif" for c in sorted(CHARTS)]
    with rasterio.open(tifs[0]) as tif:
        assert tif.crs.to_epsg() == 3413 and not tif.transform.is_identity


def test_tiled_equals_single_pass(setup, tmp_path):
    """Margins >= the receptive-field radius: tiles reproduce one whole-scene pass exactly."""
    _, _, ckpt = setup
    root = tmp_path
    scenes = root / "scenes"
    write_scene_files(scenes, 1, height=340, width=360, seed=8)
    model = load_inference_model(ckpt)
    assert model.receptive_field is not None
    radius = -(-model.receptive_field // 2)
    runs = {}
    for label, tile, overlap in (("tiled", 4 * radius, "rf"), ("single", 384, 0)):
        settings = PredictSettings(
            tile=tile, overlap=overlap, formats=("netcdf",), progress=False, confidence="max"
        )
        run = predict_scenes(ckpt, scenes, root / f"eq_{label}", settings, model=model)
        runs[label] = run
    assert runs["tiled"].scenes[0].tiles > 1 and runs["single"].scenes[0].tiles == 1
    assert runs["tiled"].overlap == radius  # --overlap rf: the whole radius
    for result in runs["tiled"].scenes:
        a = xr.open_dataset(root / "eq_tiled" / f"{result.name}_charts.nc", mask_and_scale=False)
        b = xr.open_dataset(root / "eq_single" / f"{result.name}_charts.nc", mask_and_scale=False)
        for chart in CHARTS:
            np.testing.assert_array_equal(a[chart].values, b[chart].values)
        # confidence (packed uint8): equal up to one packing step of float rounding
        diff = np.abs(a["SOD_confidence"].values.astype(int) - b["SOD_confidence"].values)
        assert diff.max() <= 1


def test_overlap_rf_grows_a_tile_too_small_for_the_radius(setup, tmp_path):
    """--overlap rf with a tile that leaves no core: tiles of 6 radii, equal to one pass."""
    _, _, ckpt = setup
    write_scene_files(tmp_path / "scenes", 1, height=600, width=620, seed=9)
    model = load_inference_model(ckpt)
    radius = -(-int(model.receptive_field or 0) // 2)
    runs = {}
    for label, tile, overlap in (("rf", 128, "rf"), ("single", 640, 0)):
        settings = PredictSettings(tile=tile, overlap=overlap, formats=("netcdf",), progress=False)
        runs[label] = predict_scenes(
            ckpt, tmp_path / "scenes", tmp_path / label, settings, model=model
        )
    assert runs["rf"].tile == tile_for_margin(128, radius) == 480  # 6 x 78 px, aligned to 32
    assert runs["rf"].scenes[0].tiles == 4 and runs["single"].scenes[0].tiles == 1
    name = runs["rf"].scenes[0].name
    with (
        xr.open_dataset(tmp_path / "rf" / f"{name}_charts.nc", mask_and_scale=False) as a,
        xr.open_dataset(tmp_path / "single" / f"{name}_charts.nc", mask_and_scale=False) as b,
    ):
        for chart in CHARTS:
            np.testing.assert_array_equal(a[chart].values, b[chart].values)


def test_overlap_rf_with_the_reference_preset_is_one_pass_where_it_fits(tmp_path, capsys):
    """The reference radius (1246 px) exceeds the default tile: a single pass, not an error."""
    spec = yaml.safe_load((ROOT / "configs" / "model" / "autoice_reference.yaml").read_text())
    ckpt = save_tiny_checkpoint(
        tmp_path / "ref" / "best.ckpt", features=spec["data"]["features"], model=spec["model"]
    )
    write_scene_files(tmp_path / "scenes", 1, height=150, width=170, seed=2)
    common = ["--checkpoint", str(ckpt), "--scenes", str(tmp_path / "scenes"), "--no-progress"]
    for label, extra in (("rf", ["--overlap", "rf"]), ("one", ["--tile", "192", "--overlap", "0"])):
        out = ["--out", str(tmp_path / label), "--formats", "netcdf"]
        assert main(["predict", *common, *out, *extra]) == 0, capsys.readouterr().err
    (a,), (b,) = (sorted((tmp_path / d).glob("*_charts.nc")) for d in ("rf", "one"))
    with (
        xr.open_dataset(a, mask_and_scale=False) as ra,
        xr.open_dataset(b, mask_and_scale=False) as rb,
    ):
        for chart in CHARTS:
            np.testing.assert_array_equal(ra[chart].values, rb[chart].values)


def test_downsampled_model_writes_full_80m_shape(tmp_path):
    scenes = tmp_path / "scenes"
    write_scene_files(scenes, 1, height=101, width=127, seed=7)
    ckpt = save_tiny_checkpoint(tmp_path / "ds" / "best.ckpt", downsample=3)
    out = tmp_path / "out"
    assert main(["predict", "-k", str(ckpt), "-s", str(scenes), "-o", str(out),
                 "--formats", "netcdf", "--tile", "64", "--no-progress"]) == 0  # fmt: skip
    nc = next(out.glob("*_charts.nc"))
    with xr.open_dataset(nc, mask_and_scale=False) as ds:
        assert ds["SOD"].shape == (101, 127) and ds.attrs["downsample"] == 3
        sod = ds["SOD"].values
        valid = sod != CHART_FILL
        # each 3 x 3 block of one source pixel holds one class (nearest upsampling)
        block = sod[:99, :126].reshape(33, 3, 42, 3)
        ok = valid[:99, :126].reshape(33, 3, 42, 3).all(axis=(1, 3))
        assert ok.any()
        assert (block.min(axis=(1, 3)) == block.max(axis=(1, 3)))[ok].all()


def test_scene_smaller_than_a_tile_is_one_padded_tile(tmp_path, setup):
    _, _, ckpt = setup
    scenes = tmp_path / "small"
    write_scene_files(scenes, 1, height=40, width=57, seed=3)
    out = tmp_path / "out"
    rc = main(["predict", "-k", str(ckpt), "-s", str(scenes), "-o", str(out),
               "--formats", "netcdf", "--no-progress"])  # fmt: skip
    assert rc == 0
    with xr.open_dataset(next(out.glob("*_charts.nc"))) as ds:
        assert ds["SIC"].shape == (40, 57)


def _write(ds: xr.Dataset, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.attrs['scene_id'][:19]}_prep.nc"
    ds.to_netcdf(path)
    return path


def test_missing_feature_names_file_variable_and_writes_nothing(tmp_path, setup, capsys):
    _, scenes, ckpt = setup
    bad = _write(make_scene_dataset(height=60, width=80, seed=5).drop_vars("btemp_18_7v"),
                 tmp_path / "in")  # fmt: skip
    out = tmp_path / "out"
    good = sorted(scenes.glob("*_prep.nc"))[0]
    rc = main(["predict", "-k", str(ckpt), "-s", str(good), str(bad), "-o", str(out),
               "--tile", "64", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert "btemp_18_7v" in err and str(bad) in err and "best.ckpt" in err
    assert _files(out) == []  # the good scene was not written either


def test_all_masked_scene_is_a_clear_error(tmp_path, setup, capsys):
    _, _, ckpt = setup
    ds = make_scene_dataset(height=60, width=80, seed=6)
    for v in ("nersc_sar_primary", "nersc_sar_secondary", "sar_incidenceangle"):
        ds[v].values[:] = 0
    bad = _write(ds, tmp_path / "in")
    out = tmp_path / "out"
    rc = main(["predict", "-k", str(ckpt), "-s", str(bad), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and str(bad) in err and "masked" in err
    assert _files(out) == []


def test_unwritable_output_folder_is_named(tmp_path, setup, capsys):
    _, scenes, ckpt = setup
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "charts"
    rc = main(["predict", "-k", str(ckpt), "-s", str(scenes), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and str(out) in err and f"{blocker} is a file, not a folder" in err
    assert blocker.read_text() == "not a folder"
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]


def test_bad_options_are_named(setup, tmp_path, capsys):
    _, scenes, ckpt = setup
    base = ["predict", "-k", str(ckpt), "-s", str(scenes), "-o", str(tmp_path / "o")]
    assert main([*base, "--formats", "netcdf,pdf"]) == 2
    assert "--formats" in capsys.readouterr().err
    assert main([*base, "--overlap", "wide"]) == 2
    assert "--overlap" in capsys.readouterr().err
    assert main([*base, "--batch", "0"]) == 2
    assert "--batch" in capsys.readouterr().err
    assert main([*base, "--tile", "8"]) == 2  # 272 tiles of padding, once accepted
    assert "option '--tile': must be at least 64 pixels, got 8" in capsys.readouterr().err
    assert main([*base, "--crs", "EPSG:99999"]) == 2  # once a traceback and an empty folder
    assert "option '--crs': unknown CRS 'EPSG:99999'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main([*base, "--device", "foo"]) == 2  # once a torch traceback
    err = capsys.readouterr().err
    assert "option '--device': unknown device 'foo'; use auto, cpu, cuda or cuda:N" in err
    assert main(["predict", "-k", str(tmp_path / "none.ckpt"), "-s", str(scenes), "-o", "x"]) == 2
    assert "none.ckpt" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    # the tiling's own check names the option as typed (it said "option 'tile'")
    assert main([*base, "--tile", "64", "--overlap", "40", "--no-progress"]) == 2
    assert "option '--tile': tile 64 px leaves no core" in capsys.readouterr().err


def test_a_scene_is_written_in_the_background_while_the_next_is_predicted(
    setup, tmp_path, monkeypatch
):
    """Scene 1's files are written by the writer thread while scene 2 is predicted."""
    import threading
    import time

    from icecontext.inference import scenes as scenes_module
    from icecontext.inference.exports import per_scene

    _, scenes, ckpt = setup
    events: list[str] = []
    write, predict = per_scene.write_scene_outputs, scenes_module.predict_scene

    def slow_write(*args, **kwargs):
        events.append(f"write start in {threading.current_thread().name}")
        time.sleep(0.5)
        done = write(*args, **kwargs)
        events.append("write end")
        return done

    def noted_predict(*args, **kwargs):
        events.append("predict start")
        return predict(*args, **kwargs)

    monkeypatch.setattr(per_scene, "write_scene_outputs", slow_write)
    monkeypatch.setattr(scenes_module, "predict_scene", noted_predict)
    settings = PredictSettings(tile=64, formats=["netcdf"], progress=False)
    run = predict_scenes(ckpt, scenes, tmp_path / "out", settings)
    assert [e.split(" in ")[0] for e in events] == [
        "predict start", "write start", "predict start", "write end", "write start", "write end"
    ]  # fmt: skip
    assert all("icecontext-write" in e for e in events if e.startswith("write start"))
    names = sorted(p.name[:19] for p in scenes.glob("*_prep.nc"))
    assert [s.name for s in run.scenes] == names
    assert _files(tmp_path / "out") == [f"{n}_charts.nc" for n in names]


def test_a_failed_background_write_stops_the_run(setup, tmp_path, monkeypatch):
    from icecontext.inference.exports import per_scene
    from icecontext.inference.exports.output import ExportError

    _, scenes, ckpt = setup

    def full_disk(folder, *args, **kwargs):
        raise ExportError(f"{folder}: no space left on device")

    monkeypatch.setattr(per_scene, "write_scene_outputs", full_disk)
    settings = PredictSettings(tile=64, formats=["netcdf"], progress=False)
    with pytest.raises(ExportError, match="no space left"):
        predict_scenes(ckpt, scenes, tmp_path / "out", settings)
    assert _files(tmp_path / "out") == []
