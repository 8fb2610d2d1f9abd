"""``icecontext export``: TorchScript + metadata that reproduce the eager model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr

from icecontext.cli.main import main
from icecontext.data.format import CHARTS, CLASS_NAMES
from icecontext.inference.loading import load_inference_model
from icecontext.inference.testing import save_tiny_checkpoint
from icecontext.testing import write_scene_files


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    ckpt = save_tiny_checkpoint(root / "run" / "best.ckpt", downsample=2, sic_mode="classification")
    out = root / "deploy" / "model.pt"
    assert main(["export", "-k", str(ckpt), "-o", str(out)]) == 0
    return root, ckpt, out


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_exported_model_reproduces_eager_outputs(exported):
    _, ckpt, out = exported
    eager = load_inference_model(ckpt)
    scripted = torch.jit.load(str(out))  # torch alone, no icecontext needed
    assert isinstance(scripted, torch.jit.ScriptModule)
    x = torch.randn(2, len(eager.features), 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = eager.model(x), scripted(x)
        for task in CHARTS:
            torch.testing.assert_close(b[task], a[task], atol=1e-5, rtol=1e-5)
        ca, cb = eager.model.to_classes(a), scripted.to_classes(b)
        for task in CHARTS:
            assert torch.equal(ca[task], cb[task])


def test_metadata_describes_inputs_and_classes(exported):
    _, _, out = exported
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["format"] == "torchscript" and meta["downsample"] == 2
    assert meta["features"][:2] == ["nersc_sar_primary", "nersc_sar_secondary"]
    assert meta["normalisation"]["nersc_sar_primary"]["mean"] == pytest.approx(-14.5083)
    assert meta["normalisation"]["btemp_18_7h"]["grid"] == "2km"
    assert meta["class_names"]["SOD"] == list(CLASS_NAMES["SOD"])
    assert meta["receptive_field_px"] > 0 and meta["verified_max_abs_diff"] < 1e-4
    loaded = load_inference_model(out)
    assert loaded.kind == "torchscript" and loaded.features == meta["features"]


def test_predict_accepts_the_exported_model(exported, capsys):
    root, ckpt, out = exported
    scenes = root / "scenes"
    write_scene_files(scenes, 1, height=90, width=110, seed=2)
    for label, model in (("eager", ckpt), ("script", out)):
        rc = main(["predict", "-k", str(model), "-s", str(scenes), "-o", str(root / label),
                   "--formats", "netcdf", "--tile", "64", "--no-progress"])  # fmt: skip
        assert rc == 0, capsys.readouterr().err
    a = xr.open_dataset(next((root / "eager").glob("*.nc")), mask_and_scale=False)
    b = xr.open_dataset(next((root / "script").glob("*.nc")), mask_and_scale=False)
    assert b.attrs["model_kind"] == "torchscript"
    for chart in CHARTS:
        assert a[chart].shape == (90, 110)
        np.testing.assert_array_equal(a[chart].values, b[chart].values)


def test_export_errors_name_the_problem(exported, tmp_path, capsys):
    _, ckpt, out = exported
    assert main(["export", "-k", str(tmp_path / "missing.ckpt"), "-o", str(tmp_path / "m.pt")]) == 2
    assert "missing.ckpt" in capsys.readouterr().err
    assert main(["export", "-k", str(out), "-o", str(tmp_path / "again.pt")]) == 2
    assert "already an exported model" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["export", "-k", str(ckpt), "-o", str(blocker / "model.pt")]) == 2
    assert str(blocker) in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
