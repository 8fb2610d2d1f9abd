"""Command-line options shared by the commands that chart whole scenes (predict, submission)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from icecontext.errors import ConfigError

if TYPE_CHECKING:
    from icecontext.inference.scenes import PredictSettings

PRECISION_CHOICES = ("auto", "32", "bf16", "16")
"""``--precision``: the spellings of ``trainer.precision`` / ``train.validation.precision``."""

PRECISION_HELP = (
    "inference precision: auto (bf16 on CUDA and on CPUs with native bf16, AVX512-BF16 or "
    "AMX; else 32), 32, bf16 (autocast bfloat16) or 16 (float16, CUDA only)"
)

OVERLAP_HELP = (
    "context margin per side: pixels, 'auto' (the receptive-field radius capped at tile/16, "
    "fast) or 'rf' (the whole receptive-field radius: equals a single pass; use tiles of at "
    "least ~7x the radius to keep 70%% of the single-pass speed)"
)


def add_tiling_options(parser: argparse.ArgumentParser, precision: str = "auto") -> None:
    """Add ``--tile --overlap --batch --device --precision --no-progress``.

    ``precision`` is the default of ``--precision``: ``auto`` for charts (the fastest
    path), ``32`` where the result should not depend on the machine (the upload file).
    """
    parser.add_argument(
        "--tile", type=int, default=None, help="tile side in pixels (1536 on CPU, 2048 on GPU)"
    )
    parser.add_argument("--overlap", default="auto", help=OVERLAP_HELP)
    parser.add_argument(
        "--batch", type=int, default=None, help="tiles per forward pass (1 on CPU, 4 on GPU)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default=precision,
        help=f"{PRECISION_HELP} ({precision})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def parse_overlap(text: str) -> int | Literal["auto", "rf"]:
    """``--overlap``: ``"auto"``, ``"rf"`` or a whole number of pixels (checked here).

    Raises:
        ConfigError: Anything else (names ``--overlap``).
    """
    from icecontext.inference.predictor import resolve_overlap

    if text == "auto":
        return "auto"
    if text == "rf":
        return "rf"
    return resolve_overlap(text, None, 1)


def predict_settings(args: argparse.Namespace, **options: Any) -> PredictSettings:
    """The tiling options of ``args`` (see :func:`add_tiling_options`) plus ``options``.

    Raises:
        ConfigError: A bad ``--overlap`` (see :func:`parse_overlap`).
    """
    from icecontext.inference.scenes import PredictSettings

    return PredictSettings(
        tile=args.tile,
        overlap=parse_overlap(args.overlap),
        batch=args.batch,
        device=args.device,
        precision=args.precision,
        progress=not args.no_progress,
        **options,
    )


def check_inputs_early(checkpoint: Path, scenes: Sequence[Path] | Path | None) -> None:
    """Name a missing checkpoint or an empty scene folder before torch is imported (seconds).

    Raises:
        ConfigError: ``--checkpoint`` for a file that does not exist.
        DataError: A scene folder without scene files, or a missing scene path.
    """
    if not Path(checkpoint).is_file():
        raise ConfigError("--checkpoint", f"file '{checkpoint}' does not exist")
    if scenes is not None:
        from icecontext.data.store.prepare import collect_scene_files

        collect_scene_files(scenes)
