"""``icecontext study-report RUNS_DIR --out DIR``: tables and plots of a sweep.

Mean ± sd over seeds per configuration (combined score and each task), score against
the theoretical receptive field in km per task and feature set, the best configuration
per score, paired comparisons across seeds (paired t-test and Wilcoxon signed-rank),
breakdowns per ice service and per month: ``report.md``, CSV tables and
``score_vs_rf.png`` in ``--out``. See docs/study.md.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from icecontext.atomic import check_writable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument(
        "runs_dir",
        type=Path,
        nargs="+",
        help="the sweep's runs folder (several: compared side by side, e.g. two data scales)",
    )
    parser.add_argument("--out", "-o", type=Path, required=True, help="report folder")
    parser.add_argument("--title", help="report title (default: the runs folder's name)")
    parser.add_argument(
        "--features", nargs="+", metavar="LABEL", help="only runs of these feature-set labels"
    )


def run(args: argparse.Namespace) -> int:
    """Write the report and print where it went."""
    check_writable(args.out, "--out", folder=True)
    from icecontext.experiments.report import write_report

    words = [*args.runs_dir, "--out", args.out]
    words += ["--title", args.title] if args.title else []
    words += ["--features", *args.features] if args.features else []
    command = "icecontext study-report " + " ".join(shlex.quote(str(a)) for a in words)
    rep = write_report(
        args.runs_dir if len(args.runs_dir) > 1 else args.runs_dir[0],
        args.out,
        command=command,
        title=args.title,
        features=args.features,
    )
    print(f"{len(rep.runs)} runs, {len(rep.summary)} configurations")
    for _, b in rep.best.iterrows():
        print(f"best {b['score']:<8} {b['config_id']} ({b['mean']:.2f}, RF {b['rf_km']:.1f} km)")
    print(f"report: {rep.files['report.md']}")
    return 0
