"""``icecontext export``: TorchScript or ONNX + metadata that reproduce the eager model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr

from icecontext.cli.main import main
from icecontext.data.io.format import CHARTS, CLASS_NAMES
from icecontext.inference.loading import load_inference_model
from icecontext.testing import write_scene_files
from tiny_checkpoint import save_tiny_checkpoint


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


@pytest.fixture(scope="module")
def exported_onnx(exported):
    root, ckpt, _ = exported
    out = root / "deploy" / "model.onnx"
    assert main(["export", "-k", str(ckpt), "-o", str(out), "--format", "onnx"]) == 0
    return out


def test_onnx_export_reproduces_eager_outputs_at_any_size(exported, exported_onnx):
    import onnxruntime as ort

    _, ckpt, _ = exported
    eager = load_inference_model(ckpt)
    session = ort.InferenceSession(str(exported_onnx), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]
    assert [o.name for o in session.get_outputs()] == list(CHARTS)
    gen = torch.Generator().manual_seed(2)
    for shape in ((2, 64, 96), (1, 160, 224)):  # batch, height and width are dynamic
        x = torch.randn(shape[0], len(eager.features), *shape[1:], generator=gen)
        with torch.no_grad():
            a = eager.model(x)
        b = dict(zip(CHARTS, session.run(None, {"x": x.numpy()}), strict=True))
        for task in CHARTS:
            np.testing.assert_allclose(b[task], a[task].numpy(), atol=1e-4, rtol=1e-4)
    meta = json.loads(exported_onnx.with_name("model.onnx.json").read_text())
    assert meta["format"] == "onnx" and meta["verified_max_abs_diff"] < 1e-4
    loaded = load_inference_model(exported_onnx)
    assert loaded.kind == "onnx" and loaded.receptive_field == meta["receptive_field_px"]


def test_onnx_export_of_a_sic_regression_model_gives_the_same_classes(tmp_path, monkeypatch):
    ckpt = save_tiny_checkpoint(tmp_path / "run" / "best.ckpt", sic_mode="regression")
    monkeypatch.chdir(tmp_path)
    assert main(["export", "-k", str(ckpt), "--format", "onnx"]) == 0  # default name
    out = tmp_path / "model.onnx"
    assert (tmp_path / "model.onnx.json").is_file() and not (tmp_path / "model.pt").exists()
    eager, onnx = load_inference_model(ckpt), load_inference_model(out)
    x = 3 * torch.randn(1, len(eager.features), 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a, b = eager.model(x), onnx.model(x)
    assert b["SIC"].shape == (1, 1, 64, 64)
    ca, cb = eager.model.to_classes(a), onnx.model.to_classes(b)
    for task in CHARTS:
        assert torch.equal(ca[task], cb[task]), task


def test_predict_accepts_the_exported_models(exported, exported_onnx, capsys):
    root, ckpt, out = exported
    scenes = root / "scenes"
    write_scene_files(scenes, 1, height=90, width=110, seed=2)
    for label, model, precision in (
        ("eager", ckpt, "32"),
        ("script", out, "32"),
        ("onnx", exported_onnx, "auto"),  # auto is 32 for ONNX (which accepts no other)
    ):
        rc = main(["predict", "-k", str(model), "-s", str(scenes), "-o", str(root / label),
                   "--formats", "netcdf", "--tile", "64", "--no-progress",
                   "--precision", precision])  # fmt: skip
        assert rc == 0, capsys.readouterr().err
    a = xr.open_dataset(next((root / "eager").glob("*.nc")), mask_and_scale=False)
    for label, kind in (("script", "torchscript"), ("onnx", "onnx")):
        b = xr.open_dataset(next((root / label).glob("*.nc")), mask_and_scale=False)
        assert b.attrs["model_kind"] == kind and b.attrs["precision"] == "32"
        for chart in CHARTS:
            assert a[chart].shape == (90, 110)
            np.testing.assert_array_equal(a[chart].values, b[chart].values)
    argv = ["predict", "-k", str(exported_onnx), "-s", str(scenes), "-o", str(root / "bf16")]
    assert main([*argv, "--precision", "bf16"]) == 2
    assert "option '--precision'" in capsys.readouterr().err
    assert not (root / "bf16").exists()


def test_onnx_without_its_packages_is_a_clear_error(exported, tmp_path, monkeypatch, capsys):
    import builtins

    _, ckpt, _ = exported
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'", name="onnxruntime")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    out = tmp_path / "model.onnx"
    assert main(["export", "-k", str(ckpt), "-o", str(out), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "option '--format'" in err and "icecontext[onnx]" in err and "onnxruntime" in err
    assert list(tmp_path.iterdir()) == []


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


def test_the_export_check_judges_each_output_at_its_own_scale():
    """Untrained deep presets have logits of 1e5+; a small SIC error must still show."""
    from icecontext.inference.model_export import compare_outputs

    class Heads(torch.nn.Module):
        def __init__(self, sic_error: float = 0.0, sod_error: float = 0.0) -> None:
            super().__init__()
            self.sic_error, self.sod_error = sic_error, sod_error

        def forward(self, x):
            zero = x[:, :1] * 0
            return {"SIC": zero + 4.0 + self.sic_error, "SOD": zero + 1e6 + self.sod_error}

    # 2 on logits of 1e6 is rounding: judged against 1e6
    assert compare_outputs(Heads(), Heads(sod_error=2.0), 6) == (2.0, pytest.approx(1e6))
    # 3 on a SIC value of 4 is an error, even beside huge SOD logits
    assert compare_outputs(Heads(), Heads(sic_error=3.0, sod_error=2.0), 6) == (3.0, 4.0)
    assert compare_outputs(Heads(), Heads(), 6) == (0.0, 1.0)


def test_an_export_moved_without_its_metadata_says_so(exported, exported_onnx, tmp_path, capsys):
    import shutil

    _, _, script = exported
    scenes = tmp_path / "scenes"
    write_scene_files(scenes, 1, height=64, width=64, seed=2)
    for model, side in ((script, "model.json"), (exported_onnx, "model.onnx.json")):
        moved = tmp_path / "moved" / model.name
        moved.parent.mkdir(exist_ok=True)
        shutil.copyfile(model, moved)
        rc = main(["predict", "-k", str(moved), "-s", str(scenes), "-o", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert rc == 2 and f"{moved} found without {side}" in err
        assert f"copy {side} from the export folder beside it" in err
    # a .pt that is not TorchScript is still judged as a checkpoint
    plain = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(1)}, plain)
    assert main(["predict", "-k", str(plain), "-s", str(scenes), "-o", str(tmp_path / "o")]) == 2
    assert "not an icecontext training checkpoint" in capsys.readouterr().err
