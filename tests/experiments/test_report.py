"""Collecting fake run records, the statistics and the written report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from icecontext.errors import DataError
from icecontext.experiments.collect import collect_runs
from icecontext.experiments.report import write_report
from icecontext.experiments.stats import paired_test, summarise, weighted_breakdown

# combined scores per (rates, seed); task scores derived from them
COMBINED = {
    (1, 2): [60.0, 62.0, 61.0],
    (4, 8): [70.0, 69.0, 73.0],
}


def _scores(c: float) -> dict[str, float]:
    return {"SIC": c + 10, "SOD": c - 5, "FLOE": c - 15, "combined": c}


def _scene(name: str, c: float, n: int) -> dict:
    return {"scene": name, **_scores(c), "n_SIC": n, "n_SOD": n, "n_FLOE": n}


@pytest.fixture()
def runs_dir(tmp_path, fake_run):
    for rates, values in COMBINED.items():
        for seed, c in enumerate(values):
            per_scene = [
                _scene("20190115T101010_dmi_prep", c - 2, 300),
                _scene("20190712T101010_cis_prep", c + 4, 100),
            ]
            fake_run(
                tmp_path,
                f"r{rates[0]}-{rates[1]}_f-sar_s{seed}",
                rates=list(rates),
                features="sar",
                seed=seed,
                scores=_scores(c),
                per_scene=per_scene,
                downsample=2,
            )
    (tmp_path / "unfinished").mkdir()  # no metrics: ignored
    return tmp_path


def test_collect_reads_grid_points_scores_and_receptive_fields(runs_dir):
    runs = collect_runs(runs_dir)
    assert len(runs) == 6
    assert set(runs["config_id"]) == {"r1-2_f-sar", "r4-8_f-sar"}
    small = runs[runs["config_id"] == "r1-2_f-sar"].iloc[0]
    large = runs[runs["config_id"] == "r4-8_f-sar"].iloc[0]
    # larger rates, larger theoretical field; km = px * 80 m * downsample 2
    assert large["rf_px_SOD"] > small["rf_px_SOD"]
    assert small["rf_km_SIC"] == pytest.approx(small["rf_px_SIC"] * 0.16)


def test_summary_is_mean_and_sample_sd_over_seeds(runs_dir):
    summary = summarise(collect_runs(runs_dir)).set_index("config_id")
    for rates, values in COMBINED.items():
        row = summary.loc[f"r{rates[0]}-{rates[1]}_f-sar"]
        assert row["n_seeds"] == 3
        assert row["combined_mean"] == pytest.approx(np.mean(values))
        assert row["combined_sd"] == pytest.approx(np.std(values, ddof=1))
        assert row["SOD_mean"] == pytest.approx(np.mean(values) - 5)


def test_paired_test_matches_scipy():
    a, b = np.array([60.0, 62.0, 61.0, 64.0]), np.array([70.0, 69.0, 73.0, 71.0])
    res = paired_test(a, b)
    t = sps.ttest_rel(a, b)
    w = sps.wilcoxon(a, b)
    assert res["t"] == pytest.approx(t.statistic) and res["p_t"] == pytest.approx(t.pvalue)
    assert res["w"] == pytest.approx(w.statistic)
    assert res["p_wilcoxon"] == pytest.approx(w.pvalue)
    assert res["mean_diff"] == pytest.approx(-9.0)
    assert res["p_wilcoxon_min"] == pytest.approx(2 / 16)  # 4 pairs: never below 0.125


def test_paired_test_degenerate_inputs_are_nan_not_errors():
    one = paired_test(np.array([1.0]), np.array([2.0]))
    assert one["n"] == 1 and math.isnan(one["p_t"]) and math.isnan(one["sd_diff"])
    same = paired_test(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    assert math.isnan(same["p_wilcoxon"]) and same["mean_diff"] == 0


def test_weighted_breakdown_weights_scenes_by_scored_pixels():
    per_scene = pd.DataFrame(
        [
            {"config_id": "a", "seed": 0, "service": "dmi", **_scene("x", 50, 300)},
            {"config_id": "a", "seed": 0, "service": "dmi", **_scene("y", 70, 100)},
            {"config_id": "a", "seed": 1, "service": "dmi", **_scene("x", 60, 100)},
        ]
    )
    table = weighted_breakdown(per_scene, "service").set_index("config_id")
    seed0 = (50 * 300 + 70 * 100) / 400
    assert table.loc["a", "combined_mean"] == pytest.approx((seed0 + 60) / 2)
    assert table.loc["a", "combined_sd"] == pytest.approx(np.std([seed0, 60], ddof=1))


def test_report_files_numbers_and_command(runs_dir, tmp_path):
    out = tmp_path / "report"
    cmd = "icecontext study-report RUNS --out REPORT"
    rep = write_report(runs_dir, out, command=cmd)
    for name in ["report.md", "runs.csv", "summary.csv", "best.csv", "paired.csv"]:
        assert (out / name).is_file(), name
    for name in ["by_service.csv", "by_month.csv", "score_vs_rf.png"]:
        assert (out / name).stat().st_size > 0, name
    text = (out / "report.md").read_text()
    assert f"`{cmd}`" in text
    assert "ttest_rel" in text and "wilcoxon" in text
    # best combined: the larger rates; its mean ± sd printed
    best = rep.best.set_index("score")
    assert best.loc["combined", "config_id"] == "r4-8_f-sar"
    large = rep.summary.set_index("config_id").loc["r4-8_f-sar"]
    assert best.loc["SOD", "rf_km"] == pytest.approx(large["rf_km_SOD"])
    assert f"{np.mean(COMBINED[(4, 8)]):.1f} ± {np.std(COMBINED[(4, 8)], ddof=1):.1f}" in text
    # paired comparison of the other configuration against the best equals scipy's
    row = rep.paired[(rep.paired["score"] == "combined")].iloc[0]
    t = sps.ttest_rel(COMBINED[(1, 2)], COMBINED[(4, 8)])
    assert row["config_id"] == "r1-2_f-sar" and row["p_t"] == pytest.approx(t.pvalue)
    csv = pd.read_csv(out / "paired.csv")
    assert csv.loc[0, "p_t"] == pytest.approx(t.pvalue, abs=1e-4)
    # one comparison per table: Holm leaves its p-value as it is
    assert row["p_t_holm"] == pytest.approx(t.pvalue)
    assert "Holm" in text
    # per service: dmi scenes are 2 points below the run score, cis 4 above
    svc = rep.by_service.set_index(["config_id", "service"])
    assert svc.loc[("r1-2_f-sar", "dmi"), "combined_mean"] == pytest.approx(61 - 2)
    assert svc.loc[("r1-2_f-sar", "cis"), "combined_mean"] == pytest.approx(61 + 4)
    months = set(rep.by_month["month"])
    assert months == {1, 7}


def _pooled_groups(c: float) -> dict[str, list[dict]]:
    """Pooled group rows deliberately unlike the pixel-weighted scene means (dmi -3, cis +7)."""
    return {
        "service": [
            {"service": "dmi", **_scores(c - 3), "n_SIC": 300},
            {"service": "cis", **_scores(c + 7), "n_SIC": 100},
        ],
        "month": [
            {"month": 1, **_scores(c - 3), "n_SIC": 300},
            {"month": 7, **_scores(c + 7), "n_SIC": 100},
        ],
    }


def test_pooled_group_scores_are_used_when_every_run_has_them(tmp_path, fake_run):
    for rates, values in COMBINED.items():
        for seed, c in enumerate(values):
            fake_run(
                tmp_path / "runs",
                f"r{rates[0]}-{rates[1]}_f-sar_s{seed}",
                rates=list(rates),
                features="sar",
                seed=seed,
                scores=_scores(c),
                per_scene=[
                    _scene("20190115T101010_dmi_prep", c - 2, 300),
                    _scene("20190712T101010_cis_prep", c + 4, 100),
                ],
                groups=_pooled_groups(c),
            )
    rep = write_report(tmp_path / "runs", tmp_path / "report", command="icecontext study-report")
    assert rep.pooled_groups
    svc = rep.by_service.set_index(["config_id", "service"])
    assert svc.loc[("r1-2_f-sar", "dmi"), "combined_mean"] == pytest.approx(61 - 3)
    assert svc.loc[("r1-2_f-sar", "cis"), "combined_mean"] == pytest.approx(61 + 7)
    assert svc.loc[("r1-2_f-sar", "cis"), "n_scenes"] == 1
    sd = np.std([v + 7 for v in COMBINED[(4, 8)]], ddof=1)
    assert svc.loc[("r4-8_f-sar", "cis"), "combined_sd"] == pytest.approx(sd)
    month = rep.by_month.set_index(["config_id", "month"])
    assert month.loc[("r4-8_f-sar", 1), "SOD_mean"] == pytest.approx(
        np.mean(COMBINED[(4, 8)]) - 3 - 5
    )
    assert (
        "pooled over the group's validation pixels" in (tmp_path / "report/report.md").read_text()
    )
    # one older run without pooled groups: every run falls back to the weighted means
    fake_run(
        tmp_path / "runs",
        "r1-2_f-sar_s3",
        rates=[1, 2],
        features="sar",
        seed=3,
        scores=_scores(61.0),
        per_scene=[_scene("20190115T101010_dmi_prep", 59.0, 300)],
    )
    rep = write_report(tmp_path / "runs", tmp_path / "report2", command="icecontext study-report")
    assert not rep.pooled_groups
    svc = rep.by_service.set_index(["config_id", "service"])
    assert svc.loc[("r4-8_f-sar", "dmi"), "combined_mean"] == pytest.approx(
        np.mean(COMBINED[(4, 8)]) - 2
    )
    assert "an approximation of the pooled score" in (tmp_path / "report2/report.md").read_text()


def test_feature_filter_keeps_only_those_runs(runs_dir, fake_run):
    scores = _scores(10.0)
    fake_run(runs_dir, "r1-2_f-amsr2_s0", rates=[1, 2], features="amsr2", seed=0, scores=scores)
    assert len(collect_runs(runs_dir)) == 7
    only = collect_runs(runs_dir, features=["amsr2"])
    assert list(only["run_id"]) == ["r1-2_f-amsr2_s0"]
    with pytest.raises(DataError, match="feature set nothing"):
        collect_runs(runs_dir, features=["nothing"])


def test_two_sweeps_are_compared_side_by_side(runs_dir, tmp_path, fake_run):
    other = tmp_path / "coarse"
    for seed, c in enumerate([80.0, 81.0, 79.0]):
        fake_run(
            other,
            f"r1-2_f-sar_s{seed}",
            rates=[1, 2],
            features="sar",
            seed=seed,
            scores=_scores(c),
            downsample=2,
        )
    rep = write_report([runs_dir, other], tmp_path / "both", command="cmd")
    summary = rep.summary.set_index("config_id")
    assert set(summary.index) == {
        f"{runs_dir.name}:r1-2_f-sar",
        f"{runs_dir.name}:r4-8_f-sar",
        "coarse:r1-2_f-sar",
    }
    assert summary.loc["coarse:r1-2_f-sar", "combined_mean"] == pytest.approx(80.0)
    assert summary.loc[f"{runs_dir.name}:r1-2_f-sar", "combined_mean"] == pytest.approx(61.0)
    # best and paired comparisons are within each sweep, never across their data
    best = rep.best[rep.best["score"] == "combined"].set_index("study")["config_id"]
    assert best.to_dict() == {
        runs_dir.name: f"{runs_dir.name}:r4-8_f-sar",
        "coarse": "coarse:r1-2_f-sar",
    }
    combined = rep.paired[rep.paired["score"] == "combined"]
    assert list(combined["config_id"]) == [f"{runs_dir.name}:r1-2_f-sar"]
    assert "run_dir" not in pd.read_csv(tmp_path / "both" / "runs.csv").columns
    with pytest.raises(DataError, match="distinct names"):
        write_report([other, other], tmp_path / "x", command="cmd")


def test_empty_runs_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no finished run"):
        collect_runs(tmp_path)
    with pytest.raises(DataError, match="no such folder"):
        collect_runs(tmp_path / "missing")


def test_holm_matches_a_hand_computation():
    from icecontext.experiments.stats import holm

    # sorted: 0.005 x4 = 0.02; 0.01 x3 = 0.03; 0.03 x2 = 0.06; 0.04 x1 = 0.04 -> max(0.06)
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    # capped at 1, NaN kept out of the family
    out = holm([0.6, np.nan, 0.5])
    np.testing.assert_allclose(out[[0, 2]], [1.0, 1.0])
    assert np.isnan(out[1])
    assert np.isnan(holm([np.nan])).all()
