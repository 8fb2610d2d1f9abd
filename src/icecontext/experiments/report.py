"""The study report: Markdown, CSV tables and PNG figures of a sweep's runs.

Files written to the output folder (each atomically)::

    report.md          header (command, date, runs), tables, figures, notes on the tests
    runs.csv           one row per run (scores, receptive fields in px and km)
    summary.csv        mean and sd over seeds per configuration
    best.csv           best configuration per score
    paired.csv         each configuration against the best one, paired by seed, per score
    by_service.csv     scores per ice service (mean and sd over seeds)
    by_month.csv       scores per month
    score_vs_rf.png    score against the task's theoretical receptive field (km)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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

    One panel per score (the combined score uses the largest task field), one line per
    feature set (and per-task-rates label, when that is an axis).
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SCORES), figsize=(3.2 * len(SCORES), 2.9), dpi=80)
    label = summary["features"] + np.where(
        summary["task_rates"].astype(str) != "", " / " + summary["task_rates"], ""
    )
    if "study" in summary and summary["study"].nunique() > 1:
        label = summary["study"] + ": " + label
    lines = summary.assign(line=label)
    for ax, score in zip(axes, SCORES, strict=True):
        for label, g in lines.groupby("line", sort=False):
            if score == "combined":
                x = g[[f"rf_km_{t}" for t in TASKS if f"rf_km_{t}" in g]].max(axis=1)
            else:
                x = g.get(f"rf_km_{score}", g["max_rate"])
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
        ax.set_xlabel("receptive field (km)" if score != "combined" else "largest RF (km)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score (mean ± sd over seeds)")
    axes[-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


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
    # each sweep has its own data: the best configuration and the paired comparisons are
    # found within each sweep, never across them
    bests, pairs = [], []
    for study in dict.fromkeys(summary["study"]):
        best = best_per_task(summary[summary["study"] == study].reset_index(drop=True))
        best.insert(0, "study", study)
        bests.append(best)
        sub = runs[runs["study"] == study]
        ids = best.set_index("score")["config_id"]
        pairs += [paired_comparisons(sub, score, reference=str(ids[score])) for score in SCORES]
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
    rep.files["report.md"] = write_text_atomic(
        out / "report.md", _markdown(rep, runs_dir, command, title)
    )
    return rep


def _markdown(
    rep: StudyReport, runs_dir: str | Path | Sequence[str | Path], command: str, title: str | None
) -> str:
    if not isinstance(runs_dir, (str, Path)):
        runs_dir = " + ".join(Path(d).name for d in runs_dir)
    runs, summary = rep.runs, rep.summary
    seeds = sorted(runs["seed"].unique())
    n_cfg = len(summary)
    ds = sorted(runs["downsample"].unique())
    parts = [
        f"# Study report: {title or Path(runs_dir).name}",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"{len(runs)} finished runs: {n_cfg} configurations x seeds {', '.join(map(str, seeds))}. "
        "Scores are the AutoICE challenge scores (x100) of each run's final full-scene "
        "validation; receptive fields (RF) are the model's theoretical field per task, in km "
        f"at the training resolution ({', '.join(f'{80 * d} m' for d in ds)} pixels).",
        "",
        "## Mean ± sd over seeds",
        "",
    ]
    header = ["configuration", "rates", "features", "seeds"]
    header += [f"RF {t} (km)" for t in TASKS if f"rf_km_{t}" in summary]
    header += list(SCORES)
    rows = []
    for _, r in summary.iterrows():
        cells = [r["config_id"], r["rates"], r["features"], str(int(r["n_seeds"]))]
        cells += [f"{r[f'rf_km_{t}']:.1f}" for t in TASKS if f"rf_km_{t}" in summary]
        cells += [_pm(r[f"{s}_mean"], r[f"{s}_sd"]) for s in SCORES]
        rows.append(cells)
    parts += [_md_table(header, rows), "", "![score versus receptive field](score_vs_rf.png)", ""]

    several = rep.runs["study"].nunique() > 1
    parts += ["## Best configuration per score" + (" in each sweep" if several else ""), ""]
    parts.append(
        _md_table(
            ["score", "configuration", "mean ± sd", "seeds", "its RF (km)"],
            [
                [
                    b["score"],
                    b["config_id"],
                    _pm(b["mean"], b["sd"]),
                    str(b["n_seeds"]),
                    "n/a" if math.isnan(b["rf_km"]) else f"{b['rf_km']:.1f}",
                ]
                for _, b in rep.best.iterrows()
            ],
        )
    )
    n_pairs = int(rep.paired["n"].max()) if not rep.paired.empty else 0
    parts += [
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
    for (ref, score), sub in rep.paired.groupby(["reference", "score"], sort=False):
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
    parts += [
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
        _breakdown_md(rep.by_service, "service", summary),
        "",
        "## Combined score per month",
        "",
        _breakdown_md(rep.by_month, "month", summary),
        "",
        "Per-task values of these breakdowns are in `by_service.csv` and `by_month.csv`; "
        "every run's scores in `runs.csv`.",
        "",
    ]
    return "\n".join(parts)
