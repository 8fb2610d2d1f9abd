"""The study report: Markdown, CSV tables and PNG figures of a sweep's runs.

Files written to the output folder (each atomically)::

    report.md          header (command, date, runs), tables, figures, notes on the tests
    runs.csv           one row per run (scores, receptive fields in px and km)
    summary.csv        mean and sd over seeds per configuration
    best.csv           best configuration per score
    paired.csv         each configuration against the best one, paired by seed, per score
    by_service.csv     scores per ice service (mean and sd over seeds)
    by_month.csv       scores per month
    score_vs_rf.png    score against the task's trained receptive field (km)
    findings.json      known-truth data only: does the study recover the generator's
                       truth (context radii, informative inputs)? (``findings``)
    known_truth.png    known-truth data with a data axis: score against trained field
                       radius per task and variant, the known radii and preferred fields
    inputs.png         known-truth data with a feature axis: score per feature set
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from icecontext.atomic import atomic_path, write_text_atomic
from icecontext.experiments.collect import (
    SCORES,
    TASKS,
    collect_breakdowns,
    collect_group_scores,
    collect_studies,
)
from icecontext.experiments.findings import (
    ALPHA,
    ContextFinding,
    InputFinding,
    context_findings,
    findings_record,
    input_findings,
)
from icecontext.experiments.stats import (
    best_per_task,
    paired_comparisons,
    seed_breakdown,
    summarise,
    weighted_breakdown,
)


@dataclass
class StudyReport:
    """Tables of a report (also written as CSV) and where the files went."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    best: pd.DataFrame
    paired: pd.DataFrame
    by_service: pd.DataFrame
    by_month: pd.DataFrame
    pooled_groups: bool = True
    context: list[ContextFinding] = field(default_factory=list)
    inputs: dict[str, list[InputFinding]] = field(default_factory=dict)
    purpose: str = ""
    files: dict[str, Path] = field(default_factory=dict)


def _pm(mean: float, sd: float, digits: int = 1) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if sd is None or (isinstance(sd, float) and math.isnan(sd)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _p(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def plot_score_vs_rf(summary: pd.DataFrame, path: Path) -> Path:
    """Score (mean ± sd over seeds) against each task's receptive field in km.

    The trained field when the runs carry it (else the theoretical one). One panel per
    score (the combined score uses the largest task field), one line per feature set
    (and per-task-rates label and data variant, when those are axes).
    """
    import matplotlib.ticker

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(SCORES), figsize=(3.2 * len(SCORES), 2.9), dpi=80)
    label = summary["features"] + np.where(
        summary["task_rates"].astype(str) != "", " / " + summary["task_rates"], ""
    )
    if "data" in summary and summary["data"].nunique() > 1:
        label = "data " + summary["data"].astype(str) + ": " + label
    if "study" in summary and summary["study"].nunique() > 1:
        label = summary["study"] + ": " + label
    prefix = "trained_rf_km_" if any(c.startswith("trained_rf_km_") for c in summary) else "rf_km_"
    lines = summary.assign(line=label)
    for ax, score in zip(axes, SCORES, strict=True):
        for label, g in lines.groupby("line", sort=False):
            if score == "combined":
                x = g[[f"{prefix}{t}" for t in TASKS if f"{prefix}{t}" in g]].max(axis=1)
            else:
                x = g.get(f"{prefix}{score}", g["max_rate"])
            order = np.argsort(x.to_numpy())
            xs = x.to_numpy()[order]
            ys = g[f"{score}_mean"].to_numpy()[order]
            sd = np.nan_to_num(g[f"{score}_sd"].to_numpy()[order])
            ax.errorbar(xs, ys, yerr=sd, marker="o", ms=4, capsize=3, label=str(label))
        ax.set_xscale("log")
        # label the fields that were run, not log-axis decades (which overlap here)
        ticks = sorted({float(v) for line in ax.get_lines() for v in line.get_xdata()})
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xticks(ticks, [f"{t:.0f}" for t in ticks])
        ax.set_title(score)
        kind = "trained " if prefix.startswith("trained") else ""
        ax.set_xlabel(f"{kind}RF (km)" if score != "combined" else f"largest {kind}RF (km)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score (mean ± sd over seeds)")
    axes[-1].legend(fontsize=7, loc="best")
    return _save(fig, path)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Lay out ``fig``, write it as PNG atomically and close it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    _pyplot().close(fig)
    return path


def plot_known_truth(context: list[ContextFinding], path: Path) -> Path:
    """Per task: score against trained field radius, one line per known radius.

    Dashed vertical lines mark the known radii, filled markers the preferred fields.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(context), figsize=(3.6 * len(context), 3.0), dpi=80)
    axes = np.atleast_1d(axes)
    for ax, f in zip(axes, context, strict=True):
        for i, sc in enumerate(f.scales):
            color = f"C{i}"
            ax.errorbar(
                sc.fields_km,
                sc.mean_scores,
                yerr=np.nan_to_num(sc.sd_scores),
                marker="o",
                ms=4,
                capsize=3,
                color=color,
                label=f"R = {sc.known_radius_km:g} km",
            )
            ax.axvline(sc.known_radius_km, color=color, ls="--", lw=1)
            k = sc.fields_km.index(sc.preferred_field_km)
            ax.plot(sc.preferred_field_km, sc.mean_scores[k], "*", ms=13, color=color)
        verdict = "recovered" if f.recovered else "not recovered"
        ax.set_title(f"{f.key}: {verdict} (Holm p = {f.p_holm:.2g})", fontsize=9)
        ax.set_xlabel("trained field radius (km)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score (mean ± sd over seeds)")
    axes[-1].legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_inputs(inputs: dict[str, list[InputFinding]], path: Path) -> Path:
    """Per data variant and task: mean score per feature set.

    Sets holding an input that carries the task (the generator's truth) are blue, the
    others grey.
    """
    plt = _pyplot()
    rows = len(inputs)
    fig, axes = plt.subplots(rows, 3, figsize=(11, 2.8 * rows), dpi=80, squeeze=False)
    for r, (name, findings) in enumerate(inputs.items()):
        for ax, f in zip(axes[r], findings, strict=False):
            labels = list(f.means)
            colors = ["C0" if k in f.informative_sets else "lightgrey" for k in labels]
            ax.barh(labels, [f.means[k] for k in labels], color=colors)
            ax.set_title(
                f"{name} {f.task}: {'matches' if f.matches_truth else 'differs from'} truth",
                fontsize=8,
            )
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3, axis="x")
            ax.invert_yaxis()
    return _save(fig, path)


def build_report(
    runs_dirs: str | Path | Sequence[str | Path], features: Sequence[str] | None = None
) -> StudyReport:
    """Read the runs of one or several sweeps and compute every table (nothing written).

    ``features`` keeps only runs of these feature-set labels.
    """
    if isinstance(runs_dirs, (str, Path)):
        runs_dirs = [runs_dirs]
    runs = collect_studies(list(runs_dirs), features)
    summary = summarise(runs)
    # each sweep and data variant has its own data: the best configuration and the paired
    # comparisons are found within each, never across them
    bests, pairs = [], []
    for (study, data), sel in summary.groupby(["study", "data"], sort=False):
        best = best_per_task(sel.reset_index(drop=True))
        best.insert(0, "study", study)
        best.insert(1, "data", data)
        bests.append(best)
        sub = runs[(runs["study"] == study) & (runs["data"] == data)]
        ids = best.set_index("score")["config_id"]
        pairs += [paired_comparisons(sub, score, reference=str(ids[score])) for score in SCORES]
    context = context_findings(runs)
    inputs: dict[str, list[InputFinding]] = {}
    if "truth_informative" in runs:
        keys = ["study", "data", "rates", "task_rates"]
        for key, g in runs.dropna(subset=["truth_informative"]).groupby(keys, sort=False):
            if g["features"].nunique() >= 2:
                name = ":".join(str(k) for k in key if str(k))
                truth = json.loads(str(g["truth_informative"].iloc[0]))
                inputs[name] = input_findings(g, truth)
    purposes = [p for p in dict.fromkeys(runs.get("purpose", pd.Series(dtype=str))) if p]
    groups: dict[str, pd.DataFrame] = {}
    pooled = True
    for by in ("service", "month"):
        per_run = collect_group_scores(runs, by)
        if per_run is None:  # a run from before pooled groups: approximate them all alike
            pooled = False
            break
        groups[by] = seed_breakdown(per_run, by)
    if not pooled:
        per_scene = collect_breakdowns(runs)
        groups = {by: weighted_breakdown(per_scene, by) for by in ("service", "month")}
    return StudyReport(
        runs=runs,
        summary=summary,
        best=pd.concat(bests, ignore_index=True),
        paired=pd.concat(pairs, ignore_index=True),
        by_service=groups["service"],
        by_month=groups["month"],
        pooled_groups=pooled,
        context=context,
        inputs=inputs,
        purpose=" / ".join(purposes),
    )


def _breakdown_md(table: pd.DataFrame, by: str, summary: pd.DataFrame) -> str:
    if table.empty:
        return f"_No per-scene scores carry a {by}._"
    groups = list(dict.fromkeys(table[by]))
    header = ["configuration", *[f"{by} {g}" for g in groups]]
    rows = []
    for cid in summary["config_id"]:
        sub = table[table["config_id"] == cid].set_index(by)
        cells = [cid]
        for g in groups:
            if g in sub.index:
                r = sub.loc[g]
                cells.append(_pm(r["combined_mean"], r["combined_sd"]))
            else:
                cells.append("")
        rows.append(cells)
    return _md_table(header, rows)


def write_report(
    runs_dir: str | Path | Sequence[str | Path],
    out: str | Path,
    command: str,
    title: str | None = None,
    features: Sequence[str] | None = None,
) -> StudyReport:
    """Build the report of the sweep in ``runs_dir`` and write it to ``out``.

    Args:
        runs_dir: The sweep's runs folder, or several (compared side by side: their
            configurations are prefixed with the folder's name).
        out: Output folder (created).
        command: The command line that generated the report (recorded in its header).
        title: Report title (default: the runs folder's name).
        features: Report only runs of these feature-set labels (default: all).

    Returns:
        The tables, with ``files`` naming what was written.

    Raises:
        DataError: If the folder holds no finished run.
    """
    rep = build_report(runs_dir, features)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "runs.csv": rep.runs.drop(columns=["run_dir"]),  # machine-specific paths
        "summary.csv": rep.summary,
        "best.csv": rep.best,
        "paired.csv": rep.paired,
        "by_service.csv": rep.by_service,
        "by_month.csv": rep.by_month,
    }
    for name, table in tables.items():
        rep.files[name] = write_text_atomic(
            out / name, table.to_csv(index=False, float_format="%.4f")
        )
    rep.files["score_vs_rf.png"] = plot_score_vs_rf(rep.summary, out / "score_vs_rf.png")
    if rep.context or rep.inputs:
        record = findings_record(rep.context, rep.inputs)
        rep.files["findings.json"] = write_text_atomic(
            out / "findings.json", json.dumps(record, indent=2) + "\n"
        )
    if rep.context:
        rep.files["known_truth.png"] = plot_known_truth(rep.context, out / "known_truth.png")
    if rep.inputs:
        rep.files["inputs.png"] = plot_inputs(rep.inputs, out / "inputs.png")
    rep.files["report.md"] = write_text_atomic(
        out / "report.md", _markdown(rep, runs_dir, command, title)
    )
    return rep


def _intro_md(rep: StudyReport, name: str, command: str, title: str | None) -> list[str]:
    """Purpose, title, provenance and what the scores and receptive fields are."""
    runs, summary = rep.runs, rep.summary
    seeds = sorted(runs["seed"].unique())
    n_cfg = len(summary)
    ds = sorted(runs["downsample"].unique())
    parts = [f"**{rep.purpose}**", ""] if rep.purpose else []
    return [
        *parts,
        f"# Study report: {title or name}",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"{len(runs)} finished runs: {n_cfg} configurations x seeds {', '.join(map(str, seeds))}. "
        "Scores are the AutoICE challenge scores (x100) of each run's final full-scene "
        "validation; receptive fields (RF) are the model's theoretical field per task and "
        "the trained field (the part of it the training patches could train: rates whose "
        "taps read data, capped at twice the patch), in km at the training resolution "
        f"({', '.join(f'{80 * d} m' for d in ds)} pixels).",
        "",
    ]


def _summary_md(summary: pd.DataFrame) -> list[str]:
    """Mean ± sd over seeds per configuration, with its receptive fields."""
    header = ["configuration", "rates", "features", "seeds"]
    same = all(
        f"trained_rf_km_{t}" not in summary
        or (summary[f"trained_rf_km_{t}"] == summary[f"trained_rf_km_{TASKS[0]}"]).all()
        for t in TASKS
    )
    shown = TASKS[:1] if same else TASKS  # one column when every task has the same field
    tag = " (all tasks)" if same else ""
    header += [f"RF {t}{tag} (km)" for t in shown if f"rf_km_{t}" in summary]
    header += [f"trained RF {t}{tag} (km)" for t in shown if f"trained_rf_km_{t}" in summary]
    header += list(SCORES)
    rows: list[list[str]] = []
    for _, r in summary.iterrows():
        cells = [r["config_id"], r["rates"], r["features"], str(int(r["n_seeds"]))]
        cells += [f"{r[f'rf_km_{t}']:.1f}" for t in shown if f"rf_km_{t}" in summary]
        cells += [
            f"{r[f'trained_rf_km_{t}']:.1f}" for t in shown if f"trained_rf_km_{t}" in summary
        ]
        cells += [_pm(r[f"{s}_mean"], r[f"{s}_sd"]) for s in SCORES]
        rows.append(cells)
    return [
        "## Mean ± sd over seeds",
        "",
        _md_table(header, rows),
        "",
        "![score versus receptive field](score_vs_rf.png)",
        "",
    ]


def _best_md(rep: StudyReport) -> list[str]:
    """The best configuration per score (per sweep when several are compared)."""
    several = rep.runs["study"].nunique() > 1
    return [
        "## Best configuration per score" + (" in each sweep" if several else ""),
        "",
        _md_table(
            ["score", "configuration", "mean ± sd", "seeds", "its RF (km)", "trained RF (km)"],
            [
                [
                    b["score"],
                    b["config_id"],
                    _pm(b["mean"], b["sd"]),
                    str(b["n_seeds"]),
                    "n/a" if math.isnan(b["rf_km"]) else f"{b['rf_km']:.1f}",
                    "n/a" if math.isnan(b["trained_rf_km"]) else f"{b['trained_rf_km']:.1f}",
                ]
                for _, b in rep.best.iterrows()
            ],
        ),
    ]


def _paired_md(paired: pd.DataFrame) -> list[str]:
    """Paired tests of every configuration against the best one, per score."""
    n_pairs = int(paired["n"].max()) if not paired.empty else 0
    parts = [
        "",
        "## Paired comparisons across seeds",
        "",
        "Each configuration against the best one for that score (within its sweep), pairing "
        "runs of equal "
        "seed. Tests (scipy.stats): paired t-test (`ttest_rel`) and Wilcoxon signed-rank "
        "(`wilcoxon`, two-sided). Difference = configuration minus best. Each table is one "
        "family of tests: the *Holm* columns are its p-values adjusted by Holm's step-down "
        "method (family-wise error rate); call a difference significant only on those.",
        "",
        f"Caveat: with {n_pairs} seeds the tests have little power. The signed-rank test "
        f"cannot give p below {2 / 2**n_pairs if n_pairs else float('nan'):.3f} with "
        f"{n_pairs} pairs, and the t-test rests on normality that {n_pairs} differences "
        "cannot check. Read the differences, not only the p-values.",
        "",
    ]
    for (ref, score), sub in paired.groupby(["reference", "score"], sort=False):
        parts += [f"**{score}** (reference `{ref}`)", ""]
        parts.append(
            _md_table(
                [
                    "configuration",
                    "n",
                    "mean diff",
                    "sd diff",
                    "t-test p",
                    "Holm",
                    "Wilcoxon p",
                    "Holm",
                ],
                [
                    [
                        r["config_id"],
                        str(r["n"]),
                        f"{r['mean_diff']:+.2f}",
                        "n/a" if math.isnan(r["sd_diff"]) else f"{r['sd_diff']:.2f}",
                        _p(r["p_t"]),
                        _p(r["p_t_holm"]),
                        _p(r["p_wilcoxon"]),
                        _p(r["p_wilcoxon_holm"]),
                    ]
                    for _, r in sub.iterrows()
                ],
            )
        )
        parts.append("")
    return parts


def _breakdowns_md(rep: StudyReport) -> list[str]:
    """Combined score per ice service and per month."""
    return [
        "## Combined score per ice service",
        "",
        (
            "Per run: the score pooled over the group's validation pixels (the challenge "
            "metric of the group); then mean ± sd over seeds."
            if rep.pooled_groups
            else "Per run: mean of the validation scenes' scores weighted by their scored "
            "pixels (an approximation of the pooled score: some runs predate the pooled "
            "breakdowns); then mean ± sd over seeds."
        ),
        "",
        _breakdown_md(rep.by_service, "service", rep.summary),
        "",
        "## Combined score per month",
        "",
        _breakdown_md(rep.by_month, "month", rep.summary),
        "",
        "Per-task values of these breakdowns are in `by_service.csv` and `by_month.csv`; "
        "every run's scores in `runs.csv`.",
        "",
    ]


def _markdown(
    rep: StudyReport, runs_dir: str | Path | Sequence[str | Path], command: str, title: str | None
) -> str:
    if not isinstance(runs_dir, (str, Path)):
        runs_dir = " + ".join(Path(d).name for d in runs_dir)
    parts = [*_intro_md(rep, Path(runs_dir).name, command, title), *_summary_md(rep.summary)]
    parts += _curves_md(rep.summary)
    if rep.context:
        parts += _context_md(rep.context)
    if rep.inputs:
        parts += _inputs_md(rep.inputs)
    parts += [*_best_md(rep), *_paired_md(rep.paired), *_breakdowns_md(rep)]
    return "\n".join(parts)


def _curves_md(summary: pd.DataFrame) -> list[str]:
    """How far the runs had converged: the final slopes of their validation curves."""
    cols = [f"slope_{s}" for s in SCORES if f"slope_{s}" in summary]
    if not cols:
        return []
    rows = [
        [
            s,
            f"{summary[f'slope_{s}'].median():+.2f}",
            f"{summary[f'slope_{s}'].abs().max():.2f}",
            f"{summary[f'last_change_{s}'].median():+.2f}",
            f"{summary[f'last_change_{s}'].abs().max():.2f}",
        ]
        for s in SCORES
        if f"slope_{s}" in summary and f"last_change_{s}" in summary
    ]
    return [
        "## Convergence",
        "",
        "How the runs ended: the slope of each validation score over the last three "
        "validations (a least-squares line, points per epoch) and its change over the final "
        "epoch; means over seeds per configuration, then the median and the largest "
        "magnitude over configurations. Each run's curves are its `curves.png`.",
        "",
        _md_table(
            [
                "score",
                "median slope",
                "largest |slope|",
                "median final-epoch change",
                "largest |change|",
            ],
            rows,
        ),
        "",
    ]


def _context_md(context: list[ContextFinding]) -> list[str]:
    parts = [
        "## Findings against the known truth: context",
        "",
        "Each data variant's scenes are built so that every task's label depends on the "
        "scene within a known radius R and on nothing else (icecontext.synthetic."
        "known_truth). The *preferred field* of a task on a variant is the smallest trained "
        "field radius whose mean score is within two standard errors (of a difference of "
        "means over seeds) of the best; its interval is a 95 % bootstrap over seeds. The "
        "test asks whether the per-seed preferred fields rise with R (Jonckheere-Terpstra, "
        "one-sided, permutation p-value), Holm-adjusted across tasks; *recovered* needs an "
        f"adjusted p below {ALPHA} and preferred fields that rise with R. Details: "
        "`findings.json`.",
        "",
        "![known truth](known_truth.png)",
        "",
    ]
    rows = []
    for f in context:
        for sc in f.scales:
            rows.append(
                [
                    f.key,
                    sc.data,
                    f"{sc.known_radius_km:g}",
                    f"{sc.preferred_field_km:g}",
                    f"{sc.ci_km[0]:g}-{sc.ci_km[1]:g}",
                    ", ".join(f"{v:g}" for v in sc.per_seed_preferred_km),
                    f"{sc.seed_sd:.2f}",
                ]
            )
    parts.append(
        _md_table(
            [
                "task",
                "data",
                "known R (km)",
                "preferred field (km)",
                "95 % CI",
                "per seed",
                "seed sd",
            ],
            rows,
        )
    )
    parts += [
        "",
        _md_table(
            ["task", "J", "p", "Holm p", "Kendall tau", "rises with R", "recovered"],
            [
                [
                    f.key,
                    f"{f.statistic:g}",
                    _p(f.p_value),
                    _p(f.p_holm),
                    "n/a" if math.isnan(f.kendall_tau) else f"{f.kendall_tau:.2f}",
                    "yes" if f.monotone else "no",
                    "**yes**" if f.recovered else "**no**",
                ]
                for f in context
            ],
        ),
        "",
    ]
    return parts


def _inputs_md(inputs: dict[str, list[InputFinding]]) -> list[str]:
    parts = [
        "## Findings against the known truth: inputs",
        "",
        "The generator documents which inputs carry each task (SAR every task; the AMSR2 "
        "frequencies of its `amsr2_signal`). Feature sets are compared per task, paired by "
        f"seed (t-tests, Holm-adjusted within the task, alpha {ALPHA}). The truth implies "
        "that a set without any informative input scores below every set with one; in a "
        "leave-one-out ablation the informative group must rank first and be the only "
        "significant drop. Details: `findings.json`.",
        "",
        "![inputs](inputs.png)",
        "",
    ]
    for name, findings in inputs.items():
        labels = list(findings[0].means) if findings else []
        parts += [f"**{name}**: mean score per feature set", ""]
        parts.append(
            _md_table(
                ["task", *labels, "informative (truth)", "matches truth"],
                [
                    [
                        f.task,
                        *[f"{f.means.get(lab, math.nan):.1f}" for lab in labels],
                        ", ".join(f"{k} ({v:g})" for k, v in f.informative.items()) or "none",
                        "**yes**" if f.matches_truth else "**no**: " + "; ".join(f.reasons),
                    ]
                    for f in findings
                ],
            )
        )
        parts.append("")
        for f in findings:
            if not f.ablation:
                continue
            parts += [f"Leave-one-out ({f.task}, from `{f.ablation[0]['full_set']}`):", ""]
            parts.append(
                _md_table(
                    ["rank", "left out", "mean drop", "sd", "p (one-sided)", "Holm p", "truth"],
                    [
                        [
                            str(r["rank"]),
                            r["left_out"],
                            f"{r['mean_drop']:+.2f}",
                            "n/a" if math.isnan(r["sd_drop"]) else f"{r['sd_drop']:.2f}",
                            _p(r["p_value"]),
                            _p(r["p_holm"]),
                            f"{r['truth_weight']:g}" if r["truth_weight"] else "-",
                        ]
                        for r in f.ablation
                    ],
                )
            )
            parts.append("")
    return parts
