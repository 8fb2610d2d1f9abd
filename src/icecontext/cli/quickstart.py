"""``icecontext quickstart``: synthetic data, a fixed amount of training, a report.

What ``make quickstart`` runs. With no arguments it writes ``runs/quickstart/``: the
synthetic scenes and their store (reused by a second run), the training run, the
evaluation on held-out scenes and ``report.md`` comparing the network with a
majority-class baseline and a per-pixel AMSR2 model (see
:mod:`icecontext.workflows.quickstart`).

Exit status: 0 when the self-check passes (the network's combined score is at least
``quickstart.margin`` points above each baseline's), 1 when the run completed but the
check failed (the report says by how much), 2 for a configuration error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from icecontext.atomic import check_writable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument(
        "--out", "-o", type=Path, default=Path("runs/quickstart"), help="output folder"
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="opt in to a time budget: size the training to this many minutes by timing "
        "steps (default: the fixed work of quickstart.epochs)",
    )
    parser.add_argument(
        "--config", "-c", type=Path, default=None, help="quickstart YAML (configs/quickstart.yaml)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides: quickstart.synth.train_scenes=4, train.optimizer.lr=1e-3, ...",
    )


def run(args: argparse.Namespace) -> int:
    """Run the quickstart; print the score table and where the report is.

    Returns:
        0 when the self-check passes, 1 when it fails (the report is written either way).
    """
    check_writable(args.out, "--out", folder=True)
    from icecontext.workflows.quickstart import run_quickstart, self_check

    logging.getLogger("lightning.pytorch").propagate = False
    result = run_quickstart(
        args.out,
        minutes=args.minutes,
        config=args.config,
        overrides=list(args.overrides),
        progress=not args.no_progress,
    )
    print()
    print(f"{'model':<22}{'SIC R2':>9}{'SOD F1':>9}{'FLOE F1':>9}{'combined':>10}")
    names = {
        "network": "network",
        "majority": "majority class",
        "amsr2_pixel": "AMSR2 per-pixel",
    }
    for key, label in names.items():
        s = result.scores[key]
        print(f"{label:<22}{s['SIC']:>9.1f}{s['SOD']:>9.1f}{s['FLOE']:>9.1f}{s['combined']:>10.1f}")
    passed, gaps = self_check(result.scores, margin=result.margin)
    rule = f"network combined >= each baseline's + {result.margin:g} points"
    print(
        f"\nself-check {'passed' if passed else 'FAILED'} ({rule}): "
        f"{gaps['amsr2_pixel']:+.2f} over AMSR2 per-pixel, {gaps['majority']:+.2f} over majority"
    )
    print(f"total time: {result.timings.get('total_s', 0.0) / 60:.1f} min")
    print(f"report: {result.report}")
    if not passed:
        print(
            "icecontext quickstart: the self-check failed: the network does not beat both "
            f"baselines by {result.margin:g} points (see the report)",
            file=sys.stderr,
        )
        return 1
    return 0
