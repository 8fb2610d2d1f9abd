"""``icecontext evaluate --checkpoint K --scenes D [--out DIR]``: the challenge metric.

Predicts every scene of ``D`` (a folder of ``_prep.nc`` files, test files paired with
their ``_prep_reference.nc``, or a prepared store) with the tiled predictor and writes
``metrics.json``, ``metrics.csv``, ``per_class.csv``, breakdowns per scene / service /
month, and confusion-matrix plots into ``--out``. ``--only NAME ...`` scores a subset
(it was ``--scenes`` before ``--scenes`` became the input, as in the other commands);
``--data``/``-d`` is the deprecated spelling of ``--scenes``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from icecontext.atomic import check_writable
from icecontext.cli.deprecated import add_renamed_option
from icecontext.cli.tiling_options import PRECISION_CHOICES, PRECISION_HELP, parse_overlap

if TYPE_CHECKING:
    from icecontext.workflows.evaluate_checkpoint import OverlapChoice, ScoringSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("--checkpoint", "-k", type=Path, required=True, help="best.ckpt of a run")
    add_renamed_option(
        parser,
        ("--scenes", "-s"),
        ("--data", "-d"),
        required=True,
        dest="data",
        type=Path,
        metavar="DIR",
        help="folder of _prep.nc scenes (test files with their _prep_reference.nc), or a "
        "prepared store",
    )
    parser.add_argument(
        "--out", "-o", type=Path, default=None, help="output folder (default <run>/eval/<data>)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="NAME",
        help="score only these scene names of --scenes (this filter was called --scenes "
        "before --scenes became the input of every command)",
    )
    parser.add_argument("--tile", type=int, default=None, help="tile side in pixels")
    parser.add_argument(
        "--overlap",
        default=None,
        help="context margin per side: pixels, 'auto' or 'rf' as for predict "
        "(default: the run's validation setting)",
    )
    parser.add_argument("--batch", type=int, default=None, help="tiles per forward pass")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default="32",
        help=PRECISION_HELP + " (32: scores that are the same on every machine)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the score table."""
    if args.out is not None:  # before the scoring, which can take long
        check_writable(args.out, "--out", folder=True)
    from icecontext.workflows.evaluate_checkpoint import evaluate_checkpoint

    result = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        args.out,
        scenes=args.only,
        settings=scoring_settings(args),
        progress=not args.no_progress,
        plots=not args.no_plots,
    )
    s = result.scores
    print(f"scored {len(result.scenes)} scene(s) at {result.resolution_m} m")
    print(f"{'chart':<10}{'score':>10}{'pixels':>14}")
    for chart in ("SIC", "SOD", "FLOE"):
        print(f"{chart:<10}{s[chart]:>10.3f}{s['n_pixels'][chart]:>14,}")
    print(f"{'combined':<10}{s['combined']:>10.3f}")
    print(f"results: {result.out_dir}")
    return 0


def scoring_settings(args: argparse.Namespace) -> ScoringSettings:
    """``--tile --overlap --batch --device --precision`` (unset: the run's validation setting).

    Raises:
        ConfigError: A bad ``--overlap`` (names the option).
    """
    from icecontext.workflows.evaluate_checkpoint import ScoringSettings

    return ScoringSettings(
        tile=args.tile,
        overlap=_overlap(args.overlap),
        batch=args.batch,
        device=args.device,
        precision=args.precision,
    )


def _overlap(text: str | None) -> OverlapChoice | None:
    """``--overlap``: ``None`` (the run's setting), ``auto``, ``rf`` or pixels."""
    if text is None:
        return None
    if text == "auto":
        return "auto"
    if text == "rf":
        return "rf"
    return int(parse_overlap(text))
