"""``icecontext show SCENE --out PNG``: draw a scene's SAR, AMSR2 and charts.

The scene may also be given as ``--scenes SCENE``, the spelling of the other commands.

Six panels: HH and HV backscatter (dB), AMSR2 36.5 GHz H (K), and the SIC, SOD and
FLOE charts with class names; masked pixels are grey in the charts and wheat in the
SAR images. Any file :func:`icecontext.data.io.scene.open_scene` reads works: a
ready-to-train scene, a test scene (paired with its ``_prep_reference.nc`` when it
lies beside it) or a raw 40 m file. Large scenes are reduced for display.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from icecontext.atomic import check_writable
from icecontext.data.io.scene import open_scene
from icecontext.errors import ConfigError
from icecontext.plotting.scene import save_scene_figure


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    scene = parser.add_mutually_exclusive_group(required=True)
    scene.add_argument(
        "scene", nargs="?", type=Path, metavar="SCENE", help="scene file (_prep.nc, test or raw)"
    )
    scene.add_argument(
        "--scenes",
        "-s",
        type=Path,
        metavar="SCENE",
        help="the scene file, as an option (the spelling of the other commands)",
    )
    parser.add_argument("--out", "-o", type=Path, required=True, help="PNG file to write")
    parser.add_argument(
        "--max-size",
        type=int,
        default=1000,
        help="largest displayed side in pixels; larger scenes are reduced (default 1000)",
    )
    parser.add_argument("--dpi", type=int, default=100, help="PNG resolution (default 100)")
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="do not merge a _prep_reference.nc lying beside a test scene",
    )


def run(args: argparse.Namespace) -> int:
    """Render the scene and write the PNG."""
    if args.max_size < 50:
        raise ConfigError("--max-size", f"must be at least 50 pixels, got {args.max_size}")
    if not 20 <= args.dpi <= 600:
        raise ConfigError("--dpi", f"must be 20..600, got {args.dpi}")
    if args.out.suffix.lower() != ".png":
        raise ConfigError("--out", f"must name a .png file, got '{args.out}'")
    check_writable(args.out, "--out", folder=False)
    ds = open_scene(args.scene or args.scenes, reference=None if args.no_reference else "auto")
    try:
        path = save_scene_figure(ds, args.out, max_size=args.max_size, dpi=args.dpi)
    finally:
        ds.close()
    print(f"wrote {path}")
    return 0
