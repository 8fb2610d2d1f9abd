"""``icecontext model-summary``: parameter and FLOP table."""

from __future__ import annotations

from pathlib import Path

import pytest

from icecontext.cli.main import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"


def _rows(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] in ("encoder", "decoder", "head", "task", "total"):
            key = parts[0] if parts[0] in ("encoder", "total") else f"{parts[0]} {parts[1]}"
            rows[key] = parts
    return rows


def test_reference_preset_summary(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(CONFIGS / "autoice_reference.yaml")
    assert main(["model-summary", "--config", cfg, "--input-size", "768", "768"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert rows["total"][1] == "46,121,742"
    assert rows["head SOD"][3] == "198" and rows["head FLOE"][3] == "231"
    total_gflops = float(rows["total"][-1])
    parts = sum(float(rows[k][-1]) for k in rows if k.split()[0] in ("encoder", "decoder", "head"))
    assert parts == pytest.approx(total_gflops, abs=0.01)
    assert 250 < total_gflops < 300  # ResNet-152 to layer3 at 768 x 768, 18 inputs
    assert "input 1 x 18 x 768 x 768" in out


def test_overrides_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(CONFIGS / "small_cpu.yaml")
    args = ["model-summary", "--config", cfg, "--input-size", "97", "123", "--batch", "2"]
    assert main([*args, "model.shared_decoder=true", "model.sic_mode=classification"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert "decoder shared" in rows and "decoder SOD" not in rows
    assert rows["head SIC"][3] == str(32 * 11 + 11)
    assert main([*args, "model.encoder.output_stride=7"]) == 2
    assert "option 'model.encoder.output_stride'" in capsys.readouterr().err
    assert main(["model-summary", "--config", cfg, "--input-size", "0", "5"]) == 2
    assert "option '--input-size'" in capsys.readouterr().err
