"""``icecontext validate FILE|DIR ...``: check scenes against the AI4Arctic format."""

from __future__ import annotations

import argparse
from pathlib import Path

from icecontext.data.scene import find_scenes, open_scene
from icecontext.errors import SceneFormatError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("paths", nargs="+", type=Path, help="scene files or folders of scenes")
    parser.add_argument(
        "--require-labels",
        action="store_true",
        help="also fail on scenes whose charts are entirely masked",
    )


def run(args: argparse.Namespace) -> int:
    """Validate every scene; print one line each; exit 1 if any failed."""
    files: list[Path] = []
    for p in args.paths:
        files.extend(find_scenes(p) if p.is_dir() else [p])
    failed = 0
    for f in files:
        try:
            ds = open_scene(f, require_labels=args.require_labels)
            h, w = ds.sizes["sar_lines"], ds.sizes["sar_samples"]
            ds.close()
            print(f"ok    {f}  ({h} x {w})")
        except SceneFormatError as exc:
            failed += 1
            print(f"FAIL  {exc}")
    print(f"{len(files) - failed} of {len(files)} scene(s) valid")
    return 1 if failed else 0
