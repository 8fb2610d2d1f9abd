"""``icecontext submission --checkpoint K --scenes D --out upload_package.nc``.

Predicts every test scene of ``D`` and writes the AutoICE upload file (format
reference §4: a ``uint8`` variable ``{scene}_{SIC|SOD|FLOE}`` per scene and chart at
the full 80 m shape, 60 variables for the 20 official test scenes), checked for that
structure before it replaces ``--out``. Scenes other than the official list are
written with a warning. ``--test-dir``/``-d`` is the deprecated spelling of ``--scenes``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from icecontext.atomic import check_writable
from icecontext.cli.deprecated import add_renamed_option
from icecontext.cli.tiling_options import add_tiling_options, check_inputs_early, predict_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument(
        "--checkpoint",
        "-k",
        type=Path,
        required=True,
        help="best.ckpt of a run, or model.pt / model.onnx of 'icecontext export'",
    )
    add_renamed_option(
        parser,
        ("--scenes", "-s"),
        ("--test-dir", "-d"),
        required=True,
        dest="test_dir",
        type=Path,
        nargs="+",
        metavar="PATH",
        help="test _prep.nc folder(s) or files",
    )
    parser.add_argument(
        "--out", "-o", type=Path, default=Path("upload_package.nc"), help="the upload file"
    )
    add_tiling_options(parser, precision="32")  # the same upload file on every machine


def run(args: argparse.Namespace) -> int:
    """Write the upload package and summarise it."""
    check_writable(args.out, "--out", folder=False)
    check_inputs_early(args.checkpoint, args.test_dir)
    from icecontext.inference.submission import write_submission

    result = write_submission(args.checkpoint, args.test_dir, args.out, predict_settings(args))
    n = len(result.scenes)
    print(f"wrote {result.path}: {n} scene(s), {3 * n} uint8 variables")
    if not result.official:
        print(
            f"warning: not the official test list ({len(result.missing_official)} official "
            f"scene(s) missing, {len(result.extra)} unofficial); the server scores only the "
            "20 official scenes"
        )
    return 0
