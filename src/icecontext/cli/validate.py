"""``icecontext validate FILE|DIR ...``: check scenes against the AI4Arctic format.

The paths may also be given as ``--scenes FILE|DIR ...``, the spelling of the other commands.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from icecontext.data.io.scene import find_scenes, open_scene
from icecontext.errors import SceneFormatError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    scenes = parser.add_mutually_exclusive_group(required=True)
    # default []: argparse then sees an absent positional as not given (no conflict)
    scenes.add_argument(
        "paths",
        nargs="*",
        type=Path,
        default=[],
        metavar="PATH",
        help="scene files or folders of scenes",
    )
    scenes.add_argument(
        "--scenes",
        "-s",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="the same, as an option (the spelling of the other commands)",
    )
    parser.add_argument(
        "--require-labels",
        action="store_true",
        help="also fail on scenes whose charts are entirely masked",
    )


def run(args: argparse.Namespace) -> int:
    """Validate every scene; print one line each; exit 1 if any failed."""
    files: list[Path] = []
    for p in args.scenes or args.paths:
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
