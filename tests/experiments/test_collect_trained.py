"""Study collection: trained receptive field columns from each run's config.yaml."""

from __future__ import annotations

import pytest
import torch
import yaml

from icecontext.experiments.collect import collect_runs, read_run, trained_receptive_fields_px

SCORES = {"SIC": 80.0, "SOD": 70.0, "FLOE": 60.0, "combined": 72.0}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _run(fake_run, runs, run_id, rates, patch, **model):
    d = fake_run(runs, run_id, rates=rates, features="sar", seed=0, scores=SCORES, downsample=2)
    config = yaml.safe_load((d / "config.yaml").read_text())
    config["data"]["patch_size"] = patch
    config["model"].update(model)
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    return d


def test_trained_field_columns_next_to_the_theoretical_ones(tmp_path, fake_run):
    runs = tmp_path / "runs"
    # ResNet-18 to layer2, output stride 8 (conftest): 99 px + 8 (2 r + 3) per branch
    # 64 px patches = 8 x 8 feature cells: rates 1 and 3 train
    _run(fake_run, runs, "r1-3_f-sar_s0", [1, 3], 64)
    # rate 9 reads only zero padding in 8 cells (the run was allowed to train anyway)
    _run(fake_run, runs, "r1-9_f-sar_s0", [1, 9], 64, allow_untrained_taps=True)
    table = collect_runs(runs).set_index("run_id")
    small, wide = table.loc["r1-3_f-sar_s0"], table.loc["r1-9_f-sar_s0"]
    assert small["rf_px_SIC"] == 99 + 8 * 9 == 171
    assert small["trained_rf_px_SIC"] == 127  # 171 capped at 2 x 64 - 1
    assert small["trained_rf_km_SIC"] == pytest.approx(127 * 0.16)  # 80 m x downsample 2
    assert not small["untrained_taps"]
    assert wide["rf_px_SOD"] == 99 + 8 * 21 == 267
    # rate 9 dropped: the rate-1 branch (139 px), capped at 127
    assert wide["trained_rf_px_SOD"] == 127 and wide["untrained_taps"]
    columns = list(table.columns)
    i = columns.index("rf_km_FLOE")
    assert columns[i + 1 : i + 3] == ["trained_rf_px_FLOE", "trained_rf_km_FLOE"]
    assert "untrained_taps" in columns


def test_large_patches_keep_the_whole_theoretical_field(tmp_path, fake_run):
    d = _run(fake_run, tmp_path, "r1-9_f-sar_s0", [1, 9], 256)  # 32 cells: rate 9 trains
    row = read_run(d)
    assert row is not None
    assert row["trained_rf_px_FLOE"] == row["rf_px_FLOE"] == 267
    assert row["untrained_taps"] is False


def test_configs_without_a_patch_size_use_its_default():
    config = {
        "data": {"features": ["sar"]},
        "model": {
            "encoder": {"name": "resnet18", "depth": "layer2", "output_stride": 8},
            "aspp": {"rates": [50], "channels": 8},
        },
    }
    # default data.patch_size 384 = 48 cells at stride 8: rate 50 untrained
    trained, untrained = trained_receptive_fields_px(config)
    assert untrained and trained["SIC"] == 99 + 8 * 5  # the 1x1 and avg:3 branches remain


def test_final_slopes_of_the_validation_curve(tmp_path):
    from icecontext.experiments.collect import final_slopes

    csv = tmp_path / "logs" / "csv" / "metrics.csv"
    csv.parent.mkdir(parents=True)
    rows = ["epoch,step,val/combined,train/loss_step"]
    rows += [f"{e},{10 * e + 9},{v}," for e, v in enumerate([10.0, 20.0, 25.0, 26.0])]
    rows += ["3,39,,0.5"]  # a training row in between is ignored
    csv.write_text("\n".join(rows) + "\n")
    out = final_slopes(tmp_path)
    assert out["slope_combined"] == pytest.approx(3.0)  # fit of 20, 25, 26 at epochs 1-3
    assert out["last_change_combined"] == pytest.approx(1.0)
    assert "slope_SIC" not in out
    assert final_slopes(tmp_path / "missing") == {}
