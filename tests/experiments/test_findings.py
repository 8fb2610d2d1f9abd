"""Findings on known-truth data: preferred fields, the trend test, input rankings."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from icecontext.experiments.findings import (
    bootstrap_interval,
    context_findings,
    findings_record,
    input_findings,
    jonckheere_statistic,
    jonckheere_test,
    per_seed_preferred,
    preferred_field,
)

FIELDS = [3.0, 4.0, 5.0, 7.0]
RADII = {"A": 3.5, "B": 4.5, "C": 6.0}


def test_jonckheere_statistic_counts_rising_and_tied_pairs():
    # pairs (g1, g2): 1<3, 1<4, 2<3, 2<4 -> 4; (g1, g3): 1<2, 1=1... by hand
    g1, g2, g3 = np.array([1, 2]), np.array([3, 4]), np.array([2, 1])
    # g1-g3: (1,2)+1 (1,1)+.5 (2,2)+.5 (2,1)+0 = 2; g2-g3: all falling = 0
    assert jonckheere_statistic(g1, g2, g3) == pytest.approx(4 + 2 + 0)


def test_jonckheere_test_detects_a_clean_trend_and_not_noise():
    rising = [np.full(5, 3.0), np.full(5, 5.0), np.full(5, 7.0)]
    j, p = jonckheere_test(rising)
    assert j == 75 and p < 1e-3
    rng = np.random.default_rng(0)
    flat = [rng.choice(FIELDS, 5) for _ in range(3)]
    assert jonckheere_test(flat)[1] > 0.05
    assert jonckheere_test([np.full(5, 4.0)] * 3)[1] == 1.0
    # one seed per group: the statistic, but no p-value (and no crash)
    j1, p1 = jonckheere_test([np.array([3.0]), np.array([5.0]), np.array([7.0])])
    assert j1 == 3 and math.isnan(p1)


def test_preferred_field_is_within_two_standard_errors_of_the_best():
    fields = np.array(FIELDS)
    # configs x seeds: the third config is as good as the best within the noise
    scores = np.array(
        [
            [60.0, 61.0, 59.0],
            [70.0, 71.0, 69.0],
            [79.5, 80.5, 79.0],
            [80.0, 81.0, 79.5],
        ]
    )
    sd = math.sqrt(np.mean(np.var(scores, axis=1, ddof=1)))
    # means 60, 70, 79.67, 80.17 -> 79.67 >= 80.17 - 2 sd sqrt(2 / 3), 70 is not
    assert 80.17 - 2 * sd * math.sqrt(2 / 3) < 79.67
    assert 80.17 - 2 * sd * math.sqrt(2 / 3) > 70
    assert preferred_field(fields, scores) == 5.0
    assert per_seed_preferred(fields, scores).tolist() == [5.0, 5.0, 5.0]
    lo, hi = bootstrap_interval(fields, scores)
    assert lo <= 5.0 <= hi and hi <= 7.0


def _context_runs(effect: float, noise: float, seed: int = 0) -> pd.DataFrame:
    """Scores that plateau once the field reaches the known radius (plus seed noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    latin = {"A": ("A", "B", "C"), "B": ("B", "C", "A"), "C": ("C", "A", "B")}
    for data, order in latin.items():
        radius = {t: RADII[k] for t, k in zip(("SIC", "SOD", "FLOE"), order, strict=True)}
        for f in FIELDS:
            for s in range(5):
                row = {"study": "kt", "data": data, "seed": s, "features": "sar"}
                row["config_id"] = f"d-{data}_r{f:g}_f-sar"
                for task in ("SIC", "SOD", "FLOE"):
                    short = max(0.0, radius[task] - f)
                    row[task] = 80 - effect * short + noise * rng.standard_normal()
                    row[f"trained_radius_km_{task}"] = f
                    row[f"known_radius_km_{task}"] = radius[task]
                rows.append(row)
    return pd.DataFrame(rows)


def test_context_findings_recover_known_radii():
    findings = context_findings(_context_runs(effect=20.0, noise=0.5))
    assert [f.task for f in findings] == ["SIC", "SOD", "FLOE"]
    for f in findings:
        pref = [s.preferred_field_km for s in f.scales]
        assert [s.known_radius_km for s in f.scales] == [3.5, 4.5, 6.0]
        assert pref == [4.0, 5.0, 7.0]  # the smallest field at or beyond each radius
        assert f.monotone and f.recovered and f.p_holm < 0.01
        assert f.p_holm >= f.p_value
    record = findings_record(findings, {})
    assert record["context"]["tasks"]["SOD"]["recovered"] is True


def test_configs_sharing_a_field_are_not_merged_and_lines_are_separate(caplog):
    runs = _context_runs(effect=20.0, noise=0.5)
    twin = runs[runs["trained_radius_km_SIC"] == 7.0].assign(
        config_id=lambda d: d["config_id"] + "-twin"
    )
    merged = context_findings(pd.concat([runs, twin], ignore_index=True))
    assert merged == [] and "same field" in caplog.text
    other = runs.assign(features="sar-inc", config_id=runs["config_id"] + "-inc")
    two = context_findings(pd.concat([runs, other], ignore_index=True))
    assert sorted(f.key for f in two) == sorted(
        f"{t}@{f}" for t in ("SIC", "SOD", "FLOE") for f in ("sar", "sar-inc")
    )


def test_context_findings_report_noise_as_not_recovered():
    findings = context_findings(_context_runs(effect=0.0, noise=3.0))
    assert findings and not any(f.recovered for f in findings)


def _input_runs() -> pd.DataFrame:
    """SIC in SAR and 18.7 GHz; SOD in SAR and 36.5 GHz; FLOE in SAR only."""
    from icecontext.data.io.format import AMSR2_FREQUENCIES

    sets = {"sar": "sar", "amsr2": "amsr2", "sar-amsr2": "sar amsr2"}
    for f in AMSR2_FREQUENCIES:
        # "amsr2:89" is the same selector as "amsr2:89.0": spelt the short way here
        sets[f"no-{f}"] = " ".join(
            f"amsr2:{g.removesuffix('.0')}" for g in AMSR2_FREQUENCIES if g != f
        )
    rng = np.random.default_rng(1)
    rows = []
    for label, sel in sets.items():
        has = set(sel.split())
        full = "amsr2" in has
        for s in range(5):
            sar = "sar" in has
            f18 = full or "amsr2:18.7" in has
            f36 = full or "amsr2:36.5" in has
            sic = 90 if sar else 80 if f18 else 20
            sod = 85 if sar else 75 if f36 else 35
            floe = 80 if sar else 30
            rows.append(
                {
                    "features": label,
                    "feature_selectors": sel,
                    "seed": s,
                    "SIC": sic + rng.normal(0, 0.5),
                    "SOD": sod + rng.normal(0, 0.5),
                    "FLOE": floe + rng.normal(0, 0.5),
                }
            )
    return pd.DataFrame(rows)


INFO = {
    "SIC": {"sar": 1.0, "amsr2:18.7": 0.9},
    "SOD": {"sar": 1.0, "amsr2:36.5": 0.9},
    "FLOE": {"sar": 1.0},
}


def test_input_findings_rank_the_informative_frequencies_first():
    findings = {f.task: f for f in input_findings(_input_runs(), INFO)}
    sic = findings["SIC"]
    assert len(sic.ablation) == 7 and sic.ablation[0]["left_out"] == "amsr2:18.7"
    assert sic.ablation[0]["full_set"] == "amsr2" and sic.ablation[0]["significant"]
    assert not any(r["significant"] for r in sic.ablation[1:])
    assert findings["SOD"].ablation[0]["left_out"] == "amsr2:36.5"
    assert all(f.matches_truth for f in findings.values()), {
        t: f.reasons for t, f in findings.items()
    }
    # FLOE: every AMSR2-only set is expected (and found) below SAR
    floe = next(c for c in findings["FLOE"].comparisons if {c.a, c.b} == {"sar", "amsr2"})
    assert floe.expected in ("a>b", "b>a") and floe.p_holm < 0.01


def test_input_findings_flag_a_ranking_against_the_truth():
    runs = _input_runs()
    # as if 23.8 GHz carried SIC instead of 18.7: exchange the two sets' SIC scores
    a, b = runs["features"] == "no-18.7", runs["features"] == "no-23.8"
    runs.loc[a, "SIC"], runs.loc[b, "SIC"] = (
        runs.loc[b, "SIC"].to_numpy(),
        runs.loc[a, "SIC"].to_numpy(),
    )
    findings = {f.task: f for f in input_findings(runs, INFO)}
    assert not findings["SIC"].matches_truth
    assert any("ranks" in r for r in findings["SIC"].reasons)
