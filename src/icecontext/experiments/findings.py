"""Findings on data whose answer is known: does the study recover the truth?

Two analyses, each written to ``findings.json`` by ``icecontext study-report`` when the
runs carry the generator's truth (known-truth scenes, ``study.json: synth.known_truth``):

**Context** (a data axis of known radii). For each task and each data variant (a known
context radius ``R``), the configurations are ordered by the task's *trained* field
radius (half of ``trained_rf_px``). The *preferred field* is the smallest field whose
mean score is within the seed noise of the best mean: within two standard errors of a
difference of means, ``mean >= best - 2 sigma sqrt(2 / n)``, with ``sigma`` the pooled
standard deviation over seeds (ddof 1) of the variant's configurations and ``n`` the
seeds (a one-sided margin of two standard errors, about a 2.3 % test of "worse than
the best" for normal differences). A 95 % percentile bootstrap over
seeds (``scipy.stats.bootstrap``, seeds resampled together across configurations)
gives its interval. Per seed, the same rule with ``n = 1`` (two standard errors of a
difference of single runs) gives one preferred field per seed and variant; the
Jonckheere-Terpstra test (one-sided, increasing; p-value by permutation,
``scipy.stats.permutation_test``) asks whether these rise with the known radius.
p-values are Holm-adjusted across tasks. ``recovered`` is true when the adjusted
p-value is below ``alpha`` and the preferred fields never fall and do rise as the
radius grows.

**Inputs** (a feature axis). The generator documents which input groups carry each
task (``informative_channels``: SAR carries every task; AMSR2 frequencies the tasks of
``amsr2_signal``). Feature sets are compared per task by paired t-tests across seeds
(Holm-adjusted within the task). The truth implies orderings: a set holding none of a
task's informative channels must score below every set that holds one. For a
leave-one-out ablation (sets that are a full set minus one group), each left-out group
is ranked by the mean drop of the score when it is removed; the truth's ranking is
its information weights. ``matches_truth`` per task: every implied ordering is
significant (adjusted p < ``alpha``), no significant difference contradicts the truth,
and (ablation) the top-ranked groups are exactly the informative ones, strongest first.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from icecontext.experiments.collect import TASKS
from icecontext.experiments.stats import holm

log = logging.getLogger(__name__)

ALPHA = 0.01
"""Significance level of every finding (after Holm adjustment)."""

N_BOOTSTRAP = 2000
N_PERMUTATIONS = 99_999


# ----------------------------------------------------------------------------- preferred field


def pooled_sd(scores: np.ndarray) -> float:
    """Pooled standard deviation over seeds (axis 1) of configurations (axis 0), ddof 1."""
    if scores.shape[1] < 2:
        return math.nan
    return float(np.sqrt(np.mean(np.var(scores, axis=1, ddof=1))))


def preferred_index(means: np.ndarray, tolerance: float) -> int:
    """Index of the first entry (smallest field) whose mean is within ``tolerance`` of the best."""
    best = float(np.max(means))
    return int(np.flatnonzero(means >= best - tolerance)[0])


def tolerance(sd: float, n: int) -> float:
    """Two standard errors of a difference of two means of ``n`` runs (0 if sd unknown)."""
    return 0.0 if math.isnan(sd) else 2.0 * sd * math.sqrt(2.0 / n)


def preferred_field(fields: np.ndarray, scores: np.ndarray) -> float:
    """The preferred field of ``scores`` (configs x seeds, fields ascending; module docstring)."""
    tol = tolerance(pooled_sd(scores), scores.shape[1])
    return float(fields[preferred_index(scores.mean(axis=1), tol)])


def per_seed_preferred(fields: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per seed, the smallest field within the noise of a single run of that seed's best."""
    tol = tolerance(pooled_sd(scores), 1)
    return np.array([fields[preferred_index(scores[:, j], tol)] for j in range(scores.shape[1])])


def bootstrap_interval(
    fields: np.ndarray, scores: np.ndarray, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`preferred_field`, resampling seeds."""
    n = scores.shape[1]
    if n < 2:
        v = preferred_field(fields, scores)
        return v, v

    def statistic(idx: np.ndarray) -> float:
        return preferred_field(fields, scores[:, idx.astype(int)])

    with warnings.catch_warnings():  # a discrete statistic is often degenerate: fine here
        warnings.simplefilter("ignore")
        res = sps.bootstrap(
            (np.arange(n),),
            statistic,
            vectorized=False,
            n_resamples=N_BOOTSTRAP,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    lo, hi = np.percentile(dist, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------- trend test


def jonckheere_statistic(*groups: np.ndarray, axis: int = -1) -> np.ndarray:
    """Jonckheere-Terpstra J: over ordered group pairs, pairs rising (+1) or tied (+1/2).

    Vectorised over leading axes (``scipy.stats.permutation_test``'s batches); scipy has
    no Jonckheere-Terpstra test, so the statistic is written here and its p-value comes
    from scipy's permutation test.
    """
    gs = [np.moveaxis(np.asarray(g, dtype=float), axis, -1) for g in groups]
    total = np.zeros(gs[0].shape[:-1])
    for i in range(len(gs)):
        for j in range(i + 1, len(gs)):
            a, b = gs[i][..., :, None], gs[j][..., None, :]
            total = total + (a < b).sum(axis=(-2, -1)) + 0.5 * (a == b).sum(axis=(-2, -1))
    return total


def jonckheere_test(groups: Sequence[np.ndarray], seed: int = 0) -> tuple[float, float]:
    """One-sided (increasing) Jonckheere-Terpstra test by permutation: ``(J, p)``."""
    samples = [np.asarray(g, dtype=float) for g in groups]
    if len(samples) < 2 or any(s.size == 0 for s in samples):
        return math.nan, math.nan
    if any(s.size < 2 for s in samples):  # one seed per radius: nothing to permute within
        return float(jonckheere_statistic(*samples)), math.nan
    observed = float(jonckheere_statistic(*samples))
    pooled = np.concatenate(samples)
    if np.all(pooled == pooled[0]):
        return observed, 1.0
    res = sps.permutation_test(
        samples,
        jonckheere_statistic,
        permutation_type="independent",
        vectorized=True,
        n_resamples=N_PERMUTATIONS,
        alternative="greater",
        random_state=np.random.default_rng(seed),
    )
    return observed, float(res.pvalue)


# ----------------------------------------------------------------------------- context


@dataclass
class ScaleFinding:
    """One task on one data variant of known radius."""

    data: str
    known_radius_km: float
    preferred_field_km: float
    ci_km: tuple[float, float]
    per_seed_preferred_km: list[float]
    fields_km: list[float]
    mean_scores: list[float]
    sd_scores: list[float]
    seed_sd: float
    n_seeds: int


@dataclass
class ContextFinding:
    """Does the preferred field of a task rise with its known context radius?"""

    task: str
    scales: list[ScaleFinding]
    test: str
    statistic: float
    p_value: float
    p_holm: float = math.nan
    kendall_tau: float = math.nan
    monotone: bool = False
    recovered: bool = False
    line: str = ""

    @property
    def key(self) -> str:
        """``SOD``, or ``SOD@sar-inc`` when several feature sets / per-task rates ran."""
        return f"{self.task}@{self.line}" if self.line else self.task


def _score_matrix(sub: pd.DataFrame, task: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(fields ascending, scores configs x seeds) on the seeds every configuration ran.

    ``None`` (with a warning) when two configurations share a trained field: the
    analysis orders configurations by their field and cannot tell those apart.
    """
    col = f"trained_radius_km_{task}"
    per_field = sub.groupby(col)["config_id"].nunique()
    if (per_field > 1).any():
        field = float(per_field[per_field > 1].index[0])
        log.warning(
            "context findings skip %s on data '%s': several configurations train the same "
            "field (%g km); give each rate set its own field",
            task,
            sub["data"].iloc[0] if "data" in sub else "",
            field,
        )
        return None
    table = sub.pivot_table(index=col, columns="seed", values=task, aggfunc="first")
    table = table.dropna(axis=1).sort_index()
    return table.index.to_numpy(dtype=float), table.to_numpy(dtype=float)


def context_findings(runs: pd.DataFrame, alpha: float = ALPHA) -> list[ContextFinding]:
    """Context findings for every task with a known radius on at least two data variants.

    Each feature set and per-task-rates label (a *line*) is analysed on its own; the
    variants are the ``(study, data)`` groups.

    Args:
        runs: The runs table (``collect_studies``) with ``data``,
            ``known_radius_km_<task>`` and ``trained_radius_km_<task>`` columns.
        alpha: Significance level of ``recovered`` (Holm-adjusted across tasks and lines).
    """
    out: list[ContextFinding] = []
    line_keys = [k for k in ("features", "task_rates") if k in runs]
    lines = runs.groupby(line_keys, sort=False) if line_keys else [((), runs)]
    several = len(lines) > 1
    for line, line_runs in lines:
        name = "/".join(str(v) for v in line if str(v)) if several else ""
        out += _context_line(line_runs, name)
    adjusted = holm([f.p_value for f in out])
    for f, p in zip(out, adjusted, strict=True):
        f.p_holm = float(p)
        f.recovered = bool(f.monotone and not math.isnan(p) and p < alpha)
    return out


def _context_line(runs: pd.DataFrame, line: str) -> list[ContextFinding]:
    """:func:`context_findings` for one feature set and per-task-rates label."""
    out: list[ContextFinding] = []
    for task in TASKS:
        col = f"known_radius_km_{task}"
        if col not in runs or f"trained_radius_km_{task}" not in runs:
            continue
        sub = runs.dropna(subset=[col])
        keys = [k for k in ("study", "data") if k in sub]
        variants = sub.groupby(keys, sort=False)
        if variants.ngroups < 2:
            continue
        scales = []
        for key, g in variants:
            matrix = _score_matrix(g, task)
            if matrix is None:
                continue
            fields, scores = matrix
            if fields.size < 2 or scores.shape[1] < 1:
                continue
            sd = pooled_sd(scores)
            scales.append(
                ScaleFinding(
                    data=":".join(str(k) for k in (key if isinstance(key, tuple) else (key,))),
                    known_radius_km=float(g[col].iloc[0]),
                    preferred_field_km=preferred_field(fields, scores),
                    ci_km=bootstrap_interval(fields, scores),
                    per_seed_preferred_km=[float(v) for v in per_seed_preferred(fields, scores)],
                    fields_km=[float(f) for f in fields],
                    mean_scores=[float(v) for v in scores.mean(axis=1)],
                    sd_scores=[
                        float(v) if scores.shape[1] > 1 else math.nan
                        for v in scores.std(axis=1, ddof=1 if scores.shape[1] > 1 else 0)
                    ],
                    seed_sd=sd,
                    n_seeds=int(scores.shape[1]),
                )
            )
        if len(scales) < 2:
            continue
        scales.sort(key=lambda s: s.known_radius_km)
        radii = sorted({s.known_radius_km for s in scales})
        groups = [
            np.concatenate([s.per_seed_preferred_km for s in scales if s.known_radius_km == r])
            for r in radii
        ]
        stat, p = jonckheere_test(groups)
        x = np.concatenate([[s.known_radius_km] * s.n_seeds for s in scales])
        y = np.concatenate([s.per_seed_preferred_km for s in scales])
        tau = float(sps.kendalltau(x, y).statistic) if np.ptp(y) > 0 else math.nan
        pref = [s.preferred_field_km for s in scales]
        monotone = all(b >= a for a, b in itertools.pairwise(pref)) and pref[-1] > pref[0]
        out.append(
            ContextFinding(
                task=task,
                scales=scales,
                test="Jonckheere-Terpstra, one-sided (increasing), permutation p-value",
                statistic=stat,
                p_value=p,
                kendall_tau=tau,
                monotone=monotone,
                line=line,
            )
        )
    return out


# ----------------------------------------------------------------------------- inputs


@dataclass
class FeatureComparison:
    """Two feature sets on one task, paired by seed (``diff`` = a minus b)."""

    a: str
    b: str
    n: int
    mean_diff: float
    p_value: float
    p_holm: float = math.nan
    expected: str = ""  # "a>b" / "b>a" when the truth implies an order, else ""


@dataclass
class InputFinding:
    """Feature sets on one task against the generator's documented information."""

    task: str
    informative: dict[str, float]
    means: dict[str, float]
    comparisons: list[FeatureComparison] = field(default_factory=list)
    ablation: list[dict[str, Any]] = field(default_factory=list)
    informative_sets: list[str] = field(default_factory=list)
    matches_truth: bool = False
    reasons: list[str] = field(default_factory=list)


def _canonical_group(channel: str) -> str:
    """The group a channel is documented under: ``sar``, ``amsr2:18.7``, ``era5`` ...

    AMSR2 channels go by frequency, every other catalogued channel by its smallest
    feature group; a channel of no group stands for itself.
    """
    from icecontext.data.io.format import AMSR2_FREQUENCIES
    from icecontext.data.io.variables import FEATURE_GROUPS

    for f in AMSR2_FREQUENCIES:
        if channel in FEATURE_GROUPS[f"amsr2:{f}"]:
            return f"amsr2:{f}"
    for name in ("sar", "incidence", "distance", "era5", "latlon", "month"):
        if channel in FEATURE_GROUPS[name]:
            return name
    return channel


def _groups(selectors: str) -> set[str]:
    """The documented input groups a feature set holds, from its resolved channels.

    Selectors are resolved as training resolves them (``amsr2`` is every frequency,
    ``amsr2:89`` is ``amsr2:89.0``, ``challenge`` its 24 channels), so two spellings of
    the same inputs are the same set.
    """
    from icecontext.data.io.variables import resolve_features

    return {_canonical_group(c) for c in resolve_features(selectors.split())}


def _informative(groups: set[str], informative: dict[str, float]) -> float:
    """Information weight a set of groups holds for a task (0: none)."""
    return max((w for g, w in informative.items() if _groups(g) & groups), default=0.0)


def _feature_comparisons(
    labels: list[str], groups: dict[str, set[str]], table: pd.DataFrame, info: dict[str, float]
) -> list[FeatureComparison]:
    """Every pair of feature sets, paired by seed, Holm-adjusted together.

    A pair is expected to differ (``a>b`` or ``b>a``) when only one of its sets holds an
    informative input.
    """
    comps: list[FeatureComparison] = []
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            pair = table[[a, b]].dropna()
            d = pair[a].to_numpy() - pair[b].to_numpy()
            p = math.nan
            if d.size >= 2 and np.any(d != d[0]):
                p = float(sps.ttest_rel(pair[a], pair[b]).pvalue)
            wa, wb = _informative(groups[a], info), _informative(groups[b], info)
            expected = "a>b" if wa > 0 and wb == 0 else "b>a" if wb > 0 and wa == 0 else ""
            comps.append(
                FeatureComparison(a, b, int(d.size), float(d.mean()), p, expected=expected)
            )
    for c, p in zip(comps, holm([c.p_value for c in comps]), strict=True):
        c.p_holm = float(p)
    return comps


def _comparison_reasons(
    comps: list[FeatureComparison],
    groups: dict[str, set[str]],
    info: dict[str, float],
    alpha: float,
) -> list[str]:
    """Why the pairwise comparisons disagree with the truth (empty: they agree).

    An expected winner must win significantly; of two sets that should not differ, the
    one with more inputs must not score significantly lower when either holds an
    informative input.
    """
    reasons: list[str] = []
    for c in comps:
        sig = not math.isnan(c.p_holm) and c.p_holm < alpha
        if c.expected == "a>b" and not (sig and c.mean_diff > 0):
            reasons.append(f"{c.a} should beat {c.b} (no informative input in it)")
        elif c.expected == "b>a" and not (sig and c.mean_diff < 0):
            reasons.append(f"{c.b} should beat {c.a} (no informative input in it)")
        elif not c.expected and sig:
            wa, wb = _informative(groups[c.a], info), _informative(groups[c.b], info)
            worse_has_more = (c.mean_diff > 0 and groups[c.b] > groups[c.a]) or (
                c.mean_diff < 0 and groups[c.a] > groups[c.b]
            )
            if worse_has_more and max(wa, wb) > 0:
                reasons.append(
                    f"{c.a} vs {c.b}: the set with more inputs scored significantly lower"
                )
    return reasons


def _ablation_reasons(ablation: list[dict[str, Any]], info: dict[str, float]) -> list[str]:
    """Why the leave-one-out ranking disagrees with the truth (empty: it agrees).

    The informative groups must rank first, strongest first (ties in any order); leaving
    out a strongest group must hurt significantly, leaving out an uninformative one must
    not.
    """
    if not ablation:
        return []
    reasons: list[str] = []
    ranked = [r["left_out"] for r in ablation]
    weight = {g: _informative({g}, info) for g in ranked}
    truth = sorted((g for g in ranked if weight[g] > 0), key=lambda g: -weight[g])
    got = [weight[g] for g in ranked[: len(truth)]]
    if got != [weight[g] for g in truth] or set(ranked[: len(truth)]) != set(truth):
        reasons.append(f"ablation ranks {ranked[: max(1, len(truth))]} first; the truth is {truth}")
    strongest = {g for g in truth if weight[g] == weight[truth[0]]} if truth else set()
    for r in ablation:
        sig = r["significant"]
        if r["left_out"] in strongest and not sig:
            reasons.append(f"leaving out {r['left_out']} is not significant")
        if r["left_out"] not in truth and sig and r["mean_drop"] > 0:
            reasons.append(f"leaving out uninformative {r['left_out']} hurts significantly")
    return reasons


def input_findings(
    runs: pd.DataFrame, informative: dict[str, dict[str, float]], alpha: float = ALPHA
) -> list[InputFinding]:
    """Input findings per task (module docstring) on one data variant.

    Args:
        runs: Runs of one data variant and one rate set, several feature sets.
        informative: Per task, input group (``sar``, ``amsr2:18.7``) -> weight.
        alpha: Significance level (Holm-adjusted within each task).
    """
    labels = list(dict.fromkeys(runs["features"]))
    groups = {
        lab: _groups(str(runs.loc[runs["features"] == lab, "feature_selectors"].iloc[0]))
        for lab in labels
    }
    out: list[InputFinding] = []
    for task in TASKS:
        info = informative.get(task, {})
        table = runs.pivot_table(index="seed", columns="features", values=task, aggfunc="first")
        means = {lab: float(table[lab].mean()) for lab in labels if lab in table}
        finding = InputFinding(task=task, informative=dict(info), means=means)
        finding.informative_sets = [lab for lab in labels if _informative(groups[lab], info) > 0]
        finding.comparisons = _feature_comparisons(labels, groups, table, info)
        finding.ablation = _ablation(runs, labels, groups, table, info, alpha)
        finding.reasons = [
            *_comparison_reasons(finding.comparisons, groups, info, alpha),
            *_ablation_reasons(finding.ablation, info),
        ]
        finding.matches_truth = not finding.reasons
        out.append(finding)
    return out


def _ablation(
    runs: pd.DataFrame,
    labels: list[str],
    groups: dict[str, set[str]],
    table: pd.DataFrame,
    info: dict[str, float],
    alpha: float,
) -> list[dict[str, Any]]:
    """Leave-one-out rows, ranked by mean drop, for the full set with most one-group subsets.

    A set ``L`` leaves group ``g`` out of set ``F`` when ``F`` minus ``L`` is exactly
    ``{g}``; the full set is the one with the most such sets (at least two).
    """
    loo = {
        full: [
            (lab, next(iter(groups[full] - groups[lab])))
            for lab in labels
            if groups[lab] < groups[full] and len(groups[full] - groups[lab]) == 1
        ]
        for full in labels
    }
    full = max(labels, key=lambda lab: len(loo[lab]))
    rows: list[dict[str, Any]] = []
    for lab, name in loo[full]:
        pair = table[[full, lab]].dropna()
        drop = pair[full].to_numpy() - pair[lab].to_numpy()
        p = math.nan
        if drop.size >= 2 and np.any(drop != drop[0]):
            p = float(sps.ttest_rel(pair[full], pair[lab], alternative="greater").pvalue)
        rows.append(
            {
                "left_out": name,
                "feature_set": lab,
                "n": int(drop.size),
                "mean_drop": float(drop.mean()),
                "sd_drop": float(drop.std(ddof=1)) if drop.size > 1 else math.nan,
                "p_value": p,
                "truth_weight": _informative({name}, info),
                "full_set": full,
            }
        )
    if len(rows) < 2:
        return []
    for r, p in zip(rows, holm([r["p_value"] for r in rows]), strict=True):
        r["p_holm"] = float(p)
        r["significant"] = bool(not math.isnan(p) and p < alpha)
    rows.sort(key=lambda r: -r["mean_drop"])
    for i, r in enumerate(rows, start=1):
        r["rank"] = i
    return rows


def findings_record(
    context: list[ContextFinding], inputs: dict[str, list[InputFinding]], alpha: float = ALPHA
) -> dict[str, Any]:
    """The JSON-friendly ``findings.json`` content."""

    def clean(obj: Any) -> Any:
        if isinstance(obj, float) and math.isnan(obj):
            return None
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [clean(v) for v in obj]
        if isinstance(obj, np.generic):
            return clean(obj.item())
        return obj

    record: dict[str, Any] = {"alpha": alpha}
    if context:
        record["context"] = {
            "rule": "preferred field = smallest trained field radius (km) whose mean score is "
            "within two standard errors of a difference of means (2 x pooled seed sd x "
            "sqrt(2 / seeds)) of the best; CI: 95 % percentile bootstrap over seeds",
            "tasks": {f.key: asdict(f) for f in context},
        }
    if inputs:
        record["inputs"] = {
            data: {f.task: asdict(f) for f in findings} for data, findings in inputs.items()
        }
    return clean(record)
