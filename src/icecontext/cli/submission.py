"""``icecontext submission --checkpoint K --test-dir D --out upload_package.nc``.

Predicts every test scene of ``D`` and writes the AutoICE upload file (format
reference §4: a ``uint8`` variable ``{scene}_{SIC|SOD|FLOE}`` per scene and chart at
the full 80 m shape, 60 variables for the 20 official test scenes), checked for that
structure before it replaces ``--out``. Scenes other than the official list are
written with a warning.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument(
        "--checkpoint",
        "-k",
        type=Path,
        required=True,
        help="best.ckpt of a run, or model.pt of 'icecontext export'",
    )
    parser.add_argument(
        "--test-dir", "-d", type=Path, nargs="+", required=True, help="test _prep.nc folder(s)"
    )
    parser.add_argument(
        "--out", "-o", type=Path, default=Path("upload_package.nc"), help="the upload file"
    )
    parser.add_argument("--tile", type=int, default=None, help="tile side in pixels (2048)")
    parser.add_argument(
        "--overlap", default="auto", help="context margin per side in pixels, or auto"
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="tiles per forward pass (1 on CPU, 4 on GPU)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument(
        "--precision", choices=("32", "bf16", "16"), default="32", help="inference precision"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Write the upload package and summarise it."""
    from icecontext.errors import ConfigError
    from icecontext.inference.scenes import PredictSettings
    from icecontext.inference.submission import write_submission

    overlap = args.overlap
    if overlap != "auto":
        try:
            overlap = int(overlap)
        except ValueError:
            raise ConfigError("--overlap", f"expected pixels or 'auto', got {overlap!r}") from None
    if args.tile is not None and args.tile < 1:
        raise ConfigError("--tile", f"must be >= 1 pixel, got {args.tile}")
    if args.batch is not None and args.batch < 1:
        raise ConfigError("--batch", f"must be >= 1 tile, got {args.batch}")
    settings = PredictSettings(
        tile=args.tile,
        overlap=overlap,
        batch=args.batch,
        device=args.device,
        precision=args.precision,
        progress=not args.no_progress,
    )
    result = write_submission(args.checkpoint, args.test_dir, args.out, settings)
    n = len(result.scenes)
    print(f"wrote {result.path}: {n} scene(s), {3 * n} uint8 variables")
    if not result.official:
        print(
            f"warning: not the official test list ({len(result.missing_official)} official "
            f"scene(s) missing, {len(result.extra)} unofficial); the server scores only the "
            "20 official scenes"
        )
    return 0
