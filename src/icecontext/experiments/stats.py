"""Statistics of a sweep: mean ± sd over seeds and paired comparisons across seeds.

Two configurations are compared on the seeds both were trained with: seed ``s`` of one
is paired with seed ``s`` of the other (same data order, same initial weights apart
from the layers the configurations change). Two tests are reported, from
:mod:`scipy.stats`:

* the paired t-test (``ttest_rel``): assumes the per-seed differences are roughly
  normal;
* the Wilcoxon signed-rank test (``wilcoxon``): no normality assumption, but with n
  pairs its smallest possible two-sided p-value is ``2 / 2**n`` (0.5 for 2 seeds,
  0.25 for 3, 0.0625 for 5): with fewer than 6 seeds it can never reach p < 0.05.

With 2-3 seeds neither test has much power; the report says so and shows the
differences themselves.

Multiple comparisons. Every table of paired tests (one score, each configuration
against one reference) is a family: its p-values are adjusted with Holm's step-down
method (:func:`holm`), which controls the family-wise error rate without assuming the
tests independent. The adjusted values are the ``*_holm`` columns; a difference is
called significant only on those.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from icecontext.experiments.collect import SCORES

GROUP_KEYS: tuple[str, ...] = (
    "config_id",
    "study",
    "data",
    "rates",
    "max_rate",
    "features",
    "task_rates",
)


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order (NaN entries stay NaN).

    The ``k``-th smallest of ``m`` p-values is multiplied by ``m - k + 1``, the running
    maximum is taken so the adjusted values keep the order of the raw ones, and values
    are capped at 1. Written here because scipy offers only the Benjamini-Hochberg
    procedure (``scipy.stats.false_discovery_control``) and statsmodels would be a
    dependency for five lines.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return out


def summarise(runs: pd.DataFrame, scores: tuple[str, ...] = SCORES) -> pd.DataFrame:
    """Mean, sd (ddof=1) and seed count per configuration, plus its receptive fields.

    Rows are ordered by study, largest atrous rate, feature set and per-task rates.

    Returns:
        One row per ``config_id`` with ``<score>_mean``, ``<score>_sd`` (NaN with one
        seed), ``n_seeds``, the receptive-field columns (theoretical, trained, known
        radius) when present and ``slope_<score>`` (mean over seeds of the final
        learning-curve slopes).
    """
    keys = [k for k in GROUP_KEYS if k in runs.columns]
    grouped = runs.groupby(keys, sort=False, dropna=False)
    out = grouped.size().rename("n_seeds").to_frame()
    for s in scores:
        out[f"{s}_mean"] = grouped[s].mean()
        out[f"{s}_sd"] = grouped[s].std(ddof=1)
    fixed = ("rf_km_", "rf_px_", "trained_rf_", "trained_radius_", "known_radius_")
    for col in [c for c in runs.columns if c.startswith(fixed)]:
        out[col] = grouped[col].first()
    for col in [c for c in runs.columns if c.startswith(("slope_", "last_change_"))]:
        out[col] = grouped[col].mean()
    out = out.reset_index()
    order = [k for k in ("study", "data", "max_rate", "features", "task_rates") if k in out.columns]
    return out.sort_values(order, kind="stable", ignore_index=True)


def _task_rf(row: pd.Series, score: str, prefix: str = "rf_km_") -> float:
    """The receptive field (km) that matters for ``score``: the task's, or the widest."""
    if f"{prefix}{score}" in row:
        return float(row[f"{prefix}{score}"])
    fields = [float(v) for k, v in row.items() if str(k).startswith(prefix)]
    return max(fields) if fields else math.nan


def best_per_task(summary: pd.DataFrame, scores: tuple[str, ...] = SCORES) -> pd.DataFrame:
    """The configuration with the highest mean of each score (ties: first in grid order).

    ``rf_km`` is the winner's theoretical receptive field for that task (the widest of its
    tasks for the combined score), ``trained_rf_km`` the field its training patches
    trained.
    """
    rows = []
    for s in scores:
        i = summary[f"{s}_mean"].idxmax()
        r = summary.loc[i]
        rows.append(
            {
                "score": s,
                "config_id": r["config_id"],
                "rates": r["rates"],
                "features": r["features"],
                "mean": r[f"{s}_mean"],
                "sd": r[f"{s}_sd"],
                "n_seeds": int(r["n_seeds"]),
                "rf_km": _task_rf(r, s),
                "trained_rf_km": _task_rf(r, s, "trained_rf_km_"),
            }
        )
    return pd.DataFrame(rows)


def paired_test(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Paired t-test and Wilcoxon signed-rank test of ``a - b`` (same seeds, same order).

    Returns:
        ``n``, ``mean_diff``, ``sd_diff``, ``t``, ``p_t`` (paired t-test), ``w``,
        ``p_wilcoxon`` (two-sided, exact for small n) and ``p_wilcoxon_min`` (the
        smallest p-value the signed-rank test can give with n pairs). Entries the data
        cannot support (fewer than 2 pairs, all differences zero) are NaN.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = a - b
    n = int(d.size)
    out: dict[str, Any] = {
        "n": n,
        "mean_diff": float(d.mean()) if n else math.nan,
        "sd_diff": float(d.std(ddof=1)) if n > 1 else math.nan,
        "t": math.nan,
        "p_t": math.nan,
        "w": math.nan,
        "p_wilcoxon": math.nan,
        "p_wilcoxon_min": 2.0 / 2**n if n else math.nan,
    }
    if n < 2:
        return out
    if np.any(d != d[0]):  # the t statistic needs differences that vary
        t = sps.ttest_rel(a, b)
        out["t"], out["p_t"] = float(t.statistic), float(t.pvalue)
    if np.any(d != 0):
        w = sps.wilcoxon(a, b)
        out["w"], out["p_wilcoxon"] = float(w.statistic), float(w.pvalue)
    return out


def paired_comparisons(
    runs: pd.DataFrame, score: str = "combined", reference: str | None = None
) -> pd.DataFrame:
    """Each configuration against a reference configuration, paired by seed.

    Args:
        runs: The runs table (:func:`~icecontext.experiments.collect.collect_runs`).
        score: The score compared.
        reference: ``config_id`` of the reference (default: the best mean ``score``).

    Returns:
        One row per other configuration: ``config_id``, ``reference``, ``score``, the
        :func:`paired_test` fields (``mean_diff`` = configuration minus reference) and
        ``p_t_holm``/``p_wilcoxon_holm``: the p-values Holm-adjusted over the table.
    """
    table = runs.pivot_table(index="seed", columns="config_id", values=score, aggfunc="first")
    if reference is None:
        reference = str(table.mean().idxmax())
    rows = []
    order = list(dict.fromkeys(runs["config_id"]))
    for cid in order:
        if cid == reference:
            continue
        pair = table[[cid, reference]].dropna()
        res = paired_test(pair[cid].to_numpy(), pair[reference].to_numpy())
        rows.append({"config_id": cid, "reference": reference, "score": score, **res})
    out = pd.DataFrame(rows)
    if not out.empty:
        out["p_t_holm"] = holm(out["p_t"].to_numpy())
        out["p_wilcoxon_holm"] = holm(out["p_wilcoxon"].to_numpy())
    return out


def seed_breakdown(per_run: pd.DataFrame, by: str) -> pd.DataFrame:
    """Scores per ``by`` and configuration: mean ± sd over seeds of each run's group score.

    Args:
        per_run: One row per run and group: ``config_id``, ``seed``, ``by``,
            ``n_scenes`` and the scores (e.g. the pooled rows of
            :func:`~icecontext.experiments.collect.collect_group_scores`).
        by: ``service`` or ``month``.
    """
    if per_run.empty or by not in per_run.columns:
        return pd.DataFrame()
    grouped = per_run.groupby(["config_id", by], sort=False, dropna=False)
    out = grouped["n_scenes"].first().to_frame()
    for s in SCORES:
        out[f"{s}_mean"] = grouped[s].mean()
        out[f"{s}_sd"] = grouped[s].std(ddof=1)
    return out.reset_index()


def weighted_breakdown(per_scene: pd.DataFrame, by: str) -> pd.DataFrame:
    """:func:`seed_breakdown` from per-scene scores (for runs without pooled groups).

    Within a run, the score of a group is the mean of its scenes' scores weighted by
    their scored pixels (``n_<task>``; the combined score by ``n_SIC``) — an
    approximation of the pooled score, which needs the confusion matrices (runs
    trained since the pooled breakdowns were added carry them).
    """
    if per_scene.empty or by not in per_scene.columns:
        return pd.DataFrame()
    rows = []
    for (cid, seed, group), g in per_scene.groupby(["config_id", "seed", by], dropna=False):
        row: dict[str, Any] = {"config_id": cid, "seed": seed, by: group, "n_scenes": len(g)}
        for s in SCORES:
            w = g[f"n_{s}" if s != "combined" else "n_SIC"].astype(float).fillna(0).to_numpy()
            v = g[s].astype(float).to_numpy()
            ok = ~np.isnan(v)
            row[s] = float(np.average(v[ok], weights=w[ok])) if w[ok].sum() > 0 else math.nan
        rows.append(row)
    return seed_breakdown(pd.DataFrame(rows), by)
