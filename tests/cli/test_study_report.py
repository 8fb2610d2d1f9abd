"""``icecontext study-report RUNS_DIR --out DIR`` on fake finished run directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from icecontext.cli.main import main

# combined score per seed of two configurations; the second is better on every seed
COMBINED = {(1, 2, 3): [40.0, 44.0, 42.0], (6, 12, 18): [50.0, 51.0, 55.0]}


def _write_run(runs: Path, rates: tuple[int, ...], seed: int, combined: float) -> None:
    """A run directory as the sweep leaves it: study.json, metrics.json, config.yaml."""
    run_id = f"r{'-'.join(map(str, rates))}_f-sar_s{seed}"
    d = runs / run_id
    d.mkdir(parents=True)
    scores = {"SIC": combined + 5, "SOD": combined, "FLOE": combined - 10, "combined": combined}
    spec = {
        "run_id": run_id,
        "config_id": run_id.rsplit("_s", 1)[0],
        "rates": list(rates),
        "features_label": "sar",
        "features": ["sar"],
        "task_rates_label": "",
        "task_rates": {},
        "seed": seed,
    }
    scene = {"scene": "20200301T000000_dmi_prep", **scores, "n_SIC": 10, "n_SOD": 10, "n_FLOE": 9}
    (d / "study.json").write_text(json.dumps(spec))
    (d / "metrics.json").write_text(
        json.dumps({"last_scores": scores, "steps": 5, "per_scene": [scene]})
    )
    config = {
        "data": {"features": ["sar"], "downsample": 2},
        "model": {
            "encoder": {"name": "resnet18", "depth": "layer2", "output_stride": 8},
            "aspp": {"rates": list(rates), "channels": 8},
        },
    }
    (d / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    folder = tmp_path / "runs"
    for rates, values in COMBINED.items():
        for seed, c in enumerate(values):
            _write_run(folder, rates, seed, c)
    return folder


def test_study_report_writes_tables_plot_and_command(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["study-report", str(runs), "--out", str(out), "--title", "tiny study"]) == 0
    printed = capsys.readouterr().out
    assert "6 runs, 2 configurations" in printed
    assert "best combined r6-12-18_f-sar" in printed
    text = (out / "report.md").read_text()
    assert text.startswith("# Study report: tiny study")
    assert f"`icecontext study-report {runs} --out {out} --title 'tiny study'`" in text
    mean, sd = np.mean(COMBINED[(6, 12, 18)]), np.std(COMBINED[(6, 12, 18)], ddof=1)
    assert f"{mean:.1f} ± {sd:.1f}" in text
    summary = pd.read_csv(out / "summary.csv").set_index("config_id")
    assert summary.loc["r1-2-3_f-sar", "combined_mean"] == pytest.approx(42.0)
    # larger rates see further: the theoretical field in km grows with the rates
    assert summary.loc["r6-12-18_f-sar", "rf_km_SIC"] > summary.loc["r1-2-3_f-sar", "rf_km_SIC"]
    assert (out / "score_vs_rf.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob("*.tmp*"))  # written atomically, nothing left behind


def test_study_report_on_a_folder_without_runs_names_it(tmp_path, capsys):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    assert main(["study-report", str(empty), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "nothing-here" in err and "no finished run" in err
    assert not (tmp_path / "r" / "report.md").exists()
