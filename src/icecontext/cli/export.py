"""``icecontext export --checkpoint K --out model.pt [--format torchscript]``.

Writes the network of a checkpoint as TorchScript (runs with torch alone) and
``model.json`` beside it (input channels and their z-scoring constants, downsampling,
class names, receptive field). The export is checked against the eager model before
it is written. ``icecontext predict --checkpoint model.pt`` uses it.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("--checkpoint", "-k", type=Path, required=True, help="best.ckpt of a run")
    parser.add_argument("--out", "-o", type=Path, default=Path("model.pt"), help="model file (.pt)")
    parser.add_argument(
        "--format", choices=("torchscript",), default="torchscript", help="export format"
    )


def run(args: argparse.Namespace) -> int:
    """Export and report the files and the eager-vs-export check."""
    from icecontext.inference.export import export_model

    result = export_model(args.checkpoint, args.out, fmt=args.format)
    print(f"wrote {result.model_path} ({args.format}) and {result.metadata_path}")
    meta = result.metadata
    print(
        f"  {len(meta['features'])} input channels, downsample {meta['downsample']}, "
        f"receptive field {meta['receptive_field_px']} px"
    )
    print(f"  eager vs exported outputs: max |diff| = {result.max_abs_diff:.2e}")
    return 0
