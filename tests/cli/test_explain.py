"""``icecontext explain`` end to end on tiny checkpoints saved the way training saves them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from icecontext.cli.main import main
from icecontext.testing import write_scene_files
from tiny_checkpoint import save_tiny_checkpoint

FEATURES = ["sar", "incidence"]


def save_checkpoint(run_dir: Path, rates: list[int], data_root: Path, seed: int = 0) -> Path:
    """A run folder with checkpoints/best.ckpt holding a tiny model and its resolved config."""
    return save_tiny_checkpoint(
        run_dir / "checkpoints" / "best.ckpt",
        features=FEATURES,
        seed=seed,
        rates=rates,
        data_root=data_root,
        run_dir=run_dir,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    (scene,) = write_scene_files(root / "data", 1, height=160, width=180, seed=3)
    runs = root / "runs"
    a = save_checkpoint(runs / "rates-1-2", [1, 2], root / "data", seed=0)
    save_checkpoint(runs / "rates-4-8", [4, 8], root / "data", seed=1)
    return root, scene, a, runs / "rates-4-8"


def test_explain_compare_end_to_end(setup, capsys):
    root, scene, ckpt, other_run = setup
    out = root / "out"
    status = main(
        [
            "explain", "--checkpoint", str(ckpt), "--scenes", str(scene), "--task", "SOD",
            "--mask", "reference", "--out", str(out), "--compare", str(other_run),
            "--tile", "128", "--device", "cpu",
        ]
    )  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    assert "rates-1-2" in printed and "rates-4-8" in printed and "d50 km" in printed
    for name in (
        "explain.png", "compare.png", "distance.png", "distance.csv", "distance_summary.csv",
        "cam-rates-1-2.nc", "cam-rates-4-8.nc", "summary.json", "provenance.json", "config.yaml",
    ):  # fmt: skip
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "SOD" and summary["mask"] == "reference"
    assert summary["window"] == [0, 0, 160, 180]
    models = {m["model"]: m for m in summary["models"]}
    # receptive field grows with the rates; each is a number of km
    assert models["rates-4-8"]["receptive_field_km"] > models["rates-1-2"]["receptive_field_km"]
    # the defaults: HiResCAM at the ASPP input
    assert summary["method"] == "hirescam"
    assert all(m["layer"] == "encoder.layer2" for m in models.values())
    # the distance plot's radius is the field after that layer (ASPP + decoder), by hand
    # at output stride 8: rates [1, 2] 1 + 2 x 2 + 2 + 1 = 8 cells = 64 px = 5.12 km;
    # rates [4, 8] 1 + 2 x 8 + 2 + 1 = 20 cells = 12.8 km; the whole fields add the
    # encoder's 99 px: 99 + 8 x 7 = 155 px = 12.4 km and 99 + 8 x 19 = 251 px = 20.08 km
    assert models["rates-1-2"]["explained_field_km"] == pytest.approx(5.12)
    assert models["rates-4-8"]["explained_field_km"] == pytest.approx(12.8)
    assert models["rates-1-2"]["receptive_field_km"] == pytest.approx(12.4)
    assert models["rates-4-8"]["receptive_field_km"] == pytest.approx(20.08)
    assert "reach km" in printed and " 2.6 " in printed and " 6.4 " in printed
    table = pd.read_csv(out / "distance_summary.csv")
    assert list(table["model"]) == ["rates-1-2", "rates-4-8"]
    with (
        xr.open_dataset(out / "cam-rates-1-2.nc") as a,
        xr.open_dataset(out / "cam-rates-4-8.nc") as b,
    ):
        assert a["cam"].shape == (160, 180)
        # the same target pixels for both models (the reference chart)
        np.testing.assert_array_equal(a["target_mask"].values, b["target_mask"].values)
        ref = a["reference"].values
        np.testing.assert_array_equal(a["target_mask"].values.astype(bool), ref != 255)
        assert a.attrs["receptive_field_km"] < b.attrs["receptive_field_km"]
        assert a.attrs["explained_field_km"] == pytest.approx(5.12)
        assert a.attrs["method"] == "hirescam" and a.attrs["layer"] == "encoder.layer2"
        assert a.attrs["checkpoint"].endswith("best.ckpt")


def test_explain_window_sic_regression_hirescam_default_folder(setup):
    _, scene, ckpt, _ = setup
    args = ["explain", "-k", str(ckpt.parent.parent), "-s", str(scene), "-t", "SIC"]
    args += ["--window", "20", "30", "64", "96", "--device", "cpu"]
    assert main(args) == 0  # the defaults: HiResCAM at the ASPP input
    name = scene.name.removesuffix("_prep.nc")
    out = ckpt.parent.parent / "explain" / f"{name}-SIC-all-prediction-hirescam-encoder.layer2"
    assert json.loads((out / "summary.json").read_text())["method"] == "hirescam"
    with xr.open_dataset(out / "cam-rates-1-2.nc") as ds:
        assert ds.attrs["method"] == "hirescam" and ds.attrs["layer"] == "encoder.layer2"
        assert ds["cam"].shape == (64, 96)
        assert list(ds["row"].values[[0, -1]]) == [20, 83]
        assert ds.attrs["mask_source"] == "prediction"
        # every pixel with SAR data is a target pixel when no class is asked for
        np.testing.assert_array_equal(ds["target_mask"].values, ds["valid"].values)
    assert not (out / "compare.png").exists()
    # the default folder always names the method and layer: other choices do not overwrite it
    args += ["--method", "gradcam", "--layer", "decoders.SIC.project"]
    assert main(args) == 0
    other = (
        ckpt.parent.parent / "explain" / f"{name}-SIC-all-prediction-gradcam-decoders.SIC.project"
    )
    assert json.loads((other / "summary.json").read_text())["method"] == "gradcam"
    row = json.loads((other / "summary.json").read_text())["models"][0]
    assert row["explained_field_km"] == pytest.approx(16 * 0.08)  # head + upsampling: 2 cells


def test_the_workflow_writes_and_returns_what_the_command_prints(setup, capsys):
    from icecontext.workflows.explain import ExplainSettings, explain_checkpoints

    root, scene, ckpt, _ = setup
    settings = ExplainSettings(
        checkpoint=ckpt, scene=scene, task="FLOE", window=(0, 0, 64, 64), out=root / "wf"
    )
    result = explain_checkpoints(settings)
    assert capsys.readouterr().out == ""  # the library prints nothing
    assert result.out_dir == root / "wf" and result.window == (0, 0, 64, 64)
    assert result.target == "FLOE every pixel's class (prediction mask)"
    assert result.pixel_km == pytest.approx(0.08)
    names = ["cam-rates-1-2.nc", "explain.png", "distance.csv", "distance.png"]
    assert [p.name for p in result.files] == [*names, "distance_summary.csv"]
    summary = json.loads((result.out_dir / "summary.json").read_text())
    assert summary["files"] == [p.name for p in result.files]
    (row,) = result.rows
    assert summary["models"][0]["model"] == row["model"] == "rates-1-2"
    assert summary["models"][0]["d90_km"] == pytest.approx(row["d90_km"])
    provenance = json.loads((result.out_dir / "provenance.json").read_text())
    assert "explain" in json.dumps(provenance)
    assert (result.out_dir / "config.yaml").is_file()


def test_figures_name_the_method():
    from icecontext.explain.figures import method_label

    assert method_label("hirescam") == "HiResCAM" and method_label("gradcam") == "Grad-CAM"


def test_list_layers(setup, capsys):
    _, scene, ckpt, _ = setup
    args = ["explain", "-k", str(ckpt), "-s", str(scene), "-t", "FLOE", "--list-layers"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "decoders.FLOE.aspp.branches.2" in out and "decoders.SOD" not in out


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--layer", "decoders.SOD.nope"], "option '--layer': unknown layer 'decoders.SOD.nope'"),
        (
            ["--window", "150", "0", "50", "50"],
            "option '--window': rows 150..199, columns 0..49 must lie inside the scene "
            "(160 x 180 pixels at 80 m)",
        ),
        (["--class", "9"], "option '--class': SOD classes are 0..5"),
        (["--compare", "nowhere"], "option '--compare': 'nowhere'"),
        (["--tile", "64", "--overlap", "40"], "option '--tile'"),
        (["--overlap", "wide"], "option '--overlap': expected pixels, 'auto' or 'rf'"),
    ],
)
def test_bad_options_exit_2_naming_the_option(setup, capsys, extra, needle):
    root, scene, ckpt, _ = setup
    args = ["explain", "-k", str(ckpt), "-s", str(scene), "-t", "SOD", "--out"]
    status = main([*args, str(root / "bad"), "--device", "cpu", *extra])
    assert status == 2
    err = capsys.readouterr().err
    assert needle in err
    if "--layer" in extra:
        assert "decoders.SOD.project" in err  # the valid names are listed
    assert not (root / "bad").exists()  # nothing left behind


def test_missing_scene_and_checkpoint(setup, capsys):
    root, scene, ckpt, _ = setup
    assert main(["explain", "-k", str(root / "x.ckpt"), "-s", str(scene), "-t", "SOD"]) == 2
    assert "option '--checkpoint'" in capsys.readouterr().err
    assert main(["explain", "-k", str(ckpt), "-s", str(root / "none.nc"), "-t", "SOD"]) == 2
    assert "option '--scenes': '" in capsys.readouterr().err


def test_old_spelling_scene_still_works_with_a_warning(setup, capsys):
    root, _, ckpt, _ = setup
    assert main(["explain", "-k", str(ckpt), "--scene", str(root / "none.nc"), "-t", "SOD"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "icecontext explain: warning: --scene is deprecated and will be removed in the next "
        "release; use --scenes\n"
    )
    assert f"option '--scenes': '{root / 'none.nc'}' does not exist" in err


def test_window_errors_speak_in_80_m_pixels_for_a_downsampled_model(setup, tmp_path, capsys):
    """The model sees the 160 x 180 scene as 80 x 90; --window is typed in 80 m pixels."""
    scene = setup[1]
    ckpt = save_tiny_checkpoint(
        tmp_path / "run" / "checkpoints" / "best.ckpt", features=FEATURES, downsample=2
    )
    args = ["explain", "-k", str(ckpt), "-s", str(scene), "-t", "SOD", "--device", "cpu"]
    assert main([*args, "--window", "150", "0", "50", "50"]) == 2
    err = capsys.readouterr().err
    expected = "rows 150..199, columns 0..49 must lie inside the scene (160 x 180 pixels at 80 m)"
    assert expected in err
    assert "(75, 0, 25, 25)" not in err and "80 x 90" not in err


def test_window_without_target_pixels_is_quoted_as_typed():
    """The explainer's "no pixel of window ..." names the model's grid: the workflow retypes it."""
    from icecontext.errors import DataError
    from icecontext.workflows.explain import quoting_window, window_on_model_grid

    domain = window_on_model_grid([21, 30, 64, 96], 2, (160, 180))
    assert domain == (10, 15, 33, 48)  # start floored, end rounded up

    def no_pixel():
        raise DataError(f"scene S: no pixel of window {domain} matches the target SOD class 5")

    with pytest.raises(DataError) as err:
        quoting_window(no_pixel, domain, [21, 30, 64, 96])
    assert str(err.value) == (
        "scene S: no pixel of window 21 30 64 96 (80 m pixels) matches the target SOD class 5"
    )
    # other errors, and errors of a whole-scene explanation, pass unchanged
    with pytest.raises(DataError, match=r"window \(10, 15, 33, 48\)"):
        quoting_window(no_pixel, domain, None)
