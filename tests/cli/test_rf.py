"""``icecontext rf``: the receptive-field table, the plot and option errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from icecontext.cli.main import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"


# ResNet-18 to layer2 at stride 8 keeps the measurement cheap on a CPU
SMALL = ["model.encoder.depth=layer2", "model.encoder.output_stride=8", "model.aspp.channels=4"]


def test_table_has_theory_measurement_and_erf_in_px_and_km(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "rf.png"
    args = ["rf", "--config", str(CONFIGS / "small_cpu.yaml"), "--plot", str(plot), *SMALL]
    args += ["model.aspp.rates=[1,3]", "model.task_rates.SOD=[6]", "data.downsample=2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    # columns: task, branch (may hold a space), module, then the figures
    rows = {
        (line[:5].strip(), line[6:18].strip()): line[18:].split()[1:]
        for line in out.splitlines()
        if line[:5].strip() in ("SIC", "SOD", "FLOE")
    }
    # ResNet-18 to layer2: 99 px; rate 3 -> 99 + 8 * (6 + 2 + 1) = 171 px; 1 px = 160 m
    assert rows[("SIC", "rate 1")][:2] == ["139", "22.24"]
    assert rows[("SIC", "rate 3")][:2] == ["171", "27.36"]
    sic = rows[("SIC", "network")]
    assert sic[:2] == ["171", "27.36"]
    assert int(sic[2]) in range(171 - 8, 172)  # measured non-zero extent, within one cell
    assert 0 < int(sic[3]) <= 171 and float(sic[4]) == pytest.approx(int(sic[3]) * 0.16, abs=0.01)
    assert rows[("SOD", "network")][0] == str(99 + 8 * 15)  # rate 6
    assert "within one feature cell (8 px)" in out
    assert "1 px = 160 m" in out
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_theory_only_is_instant_and_global_pooling_is_reported(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["rf", "-c", str(CONFIGS / "autoice_reference.yaml"), "--theory-only"]
    assert main([*args, "model.aspp.pooling=global"]) == 0
    out = capsys.readouterr().out
    assert "pool global" in out
    network = [line.split() for line in out.splitlines() if line.startswith("SOD   network")]
    assert network[0][3:5] == ["global", "global"]
    assert main(args) == 0
    out = capsys.readouterr().out
    row = next(line.split() for line in out.splitlines() if line.startswith("FLOE  network"))
    assert row[3:5] == ["2491", "199.28"]


def test_errors_name_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = str(CONFIGS / "small_cpu.yaml")
    assert main(["rf", "--config", small, "model.aspp.rates=[6,-1]"]) == 2
    assert "option 'model.aspp.rates.1'" in capsys.readouterr().err
    assert main(["rf", "--config", small, "model.in_channels=3"]) == 2
    err = capsys.readouterr().err
    assert "option 'model.in_channels'" in err and "selects 7 channels" in err
    assert main(["rf", "--config", small, "--samples", "0"]) == 2
    assert "option '--samples'" in capsys.readouterr().err
    assert main(["rf", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"model": {"encoder": {"name": "vgg16"}}, "data": {"features": ["sar"]}})
    )
    assert main(["rf", "--config", str(bad), "--theory-only"]) == 2
    assert "option 'model.encoder.name'" in capsys.readouterr().err


def test_run_configs_naming_their_model_preset_by_path_work(capsys):
    """configs/train/*.yaml give `model:` as a file path relative to themselves."""
    train = CONFIGS.parent / "train" / "small_cpu.yaml"
    assert main(["rf", "--config", str(train), "--theory-only"]) == 0
    assert "835" in capsys.readouterr().out  # the small preset's network RF in px


def _context_rows(out: str) -> tuple[dict[int, list[str]], dict[str, list[str]]]:
    """Rows of the trained-context tables: per rate, and per task (after the rate table)."""
    lines = out.split("trained context:", 1)[1].splitlines()
    rates = {int(p[0]): p[1:] for line in lines if (p := line.split()) and p[0].isdigit()}
    tasks = {
        p[0]: p[1:] for line in lines if (p := line.split()) and p[0] in ("SIC", "SOD", "FLOE")
    }
    return rates, tasks


def test_trained_context_at_the_configured_patch_and_tile(capsys):
    """A run config: data.patch_size and train.validation.tile are used, and named."""
    train = CONFIGS.parent / "train" / "small_cpu.yaml"  # 384 px patches, 512 px tiles
    assert main(["rf", "--config", str(train), "--theory-only"]) == 0
    out = capsys.readouterr().out
    assert (
        "trained context: 384 px training patches (24 x 24 feature cells at output stride 16) "
        "[data.patch_size]"
    ) in out
    assert "inference tile: 512 px [train.validation.tile]" in out
    rates, tasks = _context_rows(out)
    # (24 - r) / 24 per axis, its square on the diagonal; smallest patches (r + 1) 16, 2 r 16
    assert rates[6] == ["SIC", "SOD", "FLOE", "75", "%", "56", "%", "112", "px", "192", "px"]
    assert rates[18][3:5] == ["25", "%"] and rates[18][-2:] == ["under", "half"]
    # all rates train: trained = min(835, 2 * 384 - 1); at the tile: min(835, 1023)
    assert tasks["SOD"] == ["835", "66.80", "767", "61.36", "835", "66.80", "-"]


def test_untrained_rates_and_overrides_of_patch_and_tile(capsys):
    train = CONFIGS.parent / "train" / "small_cpu.yaml"
    args = ["rf", "--config", str(train), "--theory-only", "--patch-size", "128", "--tile", "200"]
    # model.* overrides reach a model preset named by path
    assert main([*args, "model.aspp.rates=[2,24]"]) == 0
    out = capsys.readouterr().out
    assert "128 px training patches (8 x 8 feature cells at output stride 16) [--patch-size]" in out
    assert "inference tile: 200 px [--tile]" in out
    rates, tasks = _context_rows(out)
    assert rates[24][3:] == ["0", "%", "0", "%", "400", "px", "768", "px", "UNTRAINED"]
    assert rates[2][3:5] == ["75", "%"]
    # theory: 211 + 16 (48 + 3) = 1027; trained: rate 2 only (323), capped at 255;
    # applied at the tile: capped at 2 x 200 - 1 = 399
    assert tasks["FLOE"] == ["1027", "82.16", "255", "20.40", "399", "31.92", "24"]
    assert main([*args[:-4], "--patch-size", "0"]) == 2
    assert "option '--patch-size'" in capsys.readouterr().err


def test_a_model_preset_uses_the_default_patch_and_tile(capsys):
    assert main(["rf", "--config", str(CONFIGS / "small_cpu.yaml"), "--theory-only"]) == 0
    out = capsys.readouterr().out
    assert "384 px training patches (24 x 24 feature cells" in out
    assert "[default of data.patch_size]" in out and "[default of train.validation.tile]" in out
    rates, _ = _context_rows(out)
    # rate 18 of 24 cells: axis taps read data at 6 of 24 positions per axis
    assert rates[18][3:5] == ["25", "%"] and rates[18][-1] == "half"
