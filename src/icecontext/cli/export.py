"""``icecontext export --checkpoint K [--out FILE] [--format torchscript|onnx]``.

Writes the network of a checkpoint as TorchScript (``model.pt``, runs with torch alone)
or ONNX (``model.onnx``, for ONNX Runtime; needs ``icecontext[onnx]``) and
its metadata JSON beside it (``model.json``, or ``model.onnx.json`` for ``model.onnx``:
input channels and their z-scoring constants, downsampling, class names, receptive
field). The export is checked against the eager model before
it is written. ``icecontext predict --checkpoint model.pt`` (or ``model.onnx``) uses it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from icecontext.atomic import check_writable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("--checkpoint", "-k", type=Path, required=True, help="best.ckpt of a run")
    parser.add_argument(
        "--out", "-o", type=Path, default=None, help="model file (default model.pt / model.onnx)"
    )
    parser.add_argument(
        "--format",
        choices=("torchscript", "onnx"),
        default="torchscript",
        help="torchscript (torch alone) or onnx (ONNX Runtime; needs icecontext[onnx])",
    )


def run(args: argparse.Namespace) -> int:
    """Export and report the files and the eager-vs-export check."""
    from icecontext.inference.model_export import DEFAULT_NAMES, export_model

    out = check_writable(args.out or Path(DEFAULT_NAMES[args.format]), "--out", folder=False)
    result = export_model(args.checkpoint, out, fmt=args.format)
    print(f"wrote {result.model_path} ({args.format}) and {result.metadata_path}")
    meta = result.metadata
    print(
        f"  {len(meta['features'])} input channels, downsample {meta['downsample']}, "
        f"receptive field {meta['receptive_field_px']} px"
    )
    print(f"  eager vs exported outputs: max |diff| = {result.max_abs_diff:.2e}")
    return 0
