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
    args = ["model-summary", "-c", cfg, "--input-size", "97", "123", "--batch", "2"]
    assert main([*args, "model.shared_decoder=true", "model.sic_mode=classification"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert "decoder shared" in rows and "decoder SOD" not in rows
    assert rows["head SIC"][3] == str(32 * 11 + 11)
    assert main([*args, "model.encoder.output_stride=7"]) == 2
    assert "option 'model.encoder.output_stride'" in capsys.readouterr().err
    assert main(["model-summary", "--config", cfg, "--input-size", "0", "5"]) == 2
    assert "option '--input-size'" in capsys.readouterr().err


def test_summary_reports_the_trained_context(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(CONFIGS / "autoice_reference.yaml")
    args = ["model-summary", "--config", cfg, "--patch-size", "768", "--tile", "1024"]
    assert main([*args, "model.aspp.rates=[24,48,72]"]) == 0
    out = capsys.readouterr().out
    assert "768 px training patches (48 x 48 feature cells at output stride 16)" in out
    lines = out.split("trained context:", 1)[1].splitlines()
    rates = {p[0]: p for line in lines if (p := line.split()) and p[0].isdigit()}
    assert rates["24"][4:6] == ["50", "%"] and rates["48"][-1] == "UNTRAINED"
    task = next(line.split() for line in lines if line.startswith("SOD "))
    # theory 1291 + 16 (144 + 3) = 3643; trained: rate 24 only, capped at 2 x 768 - 1;
    # applied at the 1024 px tile: capped at 2047
    assert task == ["SOD", "3643", "291.44", "1535", "122.80", "2047", "163.76", "48,", "72"]
    assert main([*args[:3], "--tile", "0"]) == 2
    assert "option '--tile'" in capsys.readouterr().err
