r"""``icecontext explain``: Grad-CAM maps of one task head over a scene, and how far models look.

::

    icecontext explain --checkpoint runs/a/checkpoints/best.ckpt --scenes data/X_prep.nc \
        --task SOD [--class 4] [--mask reference|prediction] [--layer NAME] \
        [--window R C H W] [--method hirescam|gradcam] [--out DIR] \
        [--compare runs/b runs/c ...]

The defaults measure context: HiResCAM at the ASPP input (the encoder's last kept
stage), whose map spreads as far as the ASPP and decoder let the target reach back.

Writes into ``--out`` (default
``<run>/explain/<scene>-<task>-<class>-<mask>-<method>-<layer>``):

* ``explain.png``: the CAM over the scene's HH with the target outlined, the reference
  chart and the prediction of the task;
* ``cam-<label>.nc``: the CAM (raw units), target mask, prediction, reference, layer-grid
  map and channel weights, one file per model;
* ``compare.png`` (with ``--compare``): the same target for every model side by side,
  titled with each model's atrous rates and receptive field in km;
* ``distance.csv`` / ``distance_summary.csv`` / ``distance.png``: CAM mass against
  distance from the target region (km), and the distances holding 50 % / 90 % of it,
  beside the radius of the field of the layers after the explained one;
* ``summary.json``, ``config.yaml``, ``provenance.json``.

``--scene`` is the deprecated spelling of ``--scenes``. See docs/explain.md for what the
maps mean and their limits.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from icecontext.cli.deprecated import add_renamed_option

DEFAULT_METHOD = "hirescam"
"""``--method`` default (``icecontext.explain.gradcam.DEFAULT_METHOD``; not imported here
so that ``--help`` does not load torch)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument(
        "--checkpoint", "-k", type=Path, required=True, help="best.ckpt of a run, or its run folder"
    )
    add_renamed_option(
        parser,
        ("--scenes", "-s"),
        ("--scene",),
        required=True,
        dest="scene",
        type=Path,
        metavar="SCENE",
        help="a _prep.nc file (test files find their _prep_reference.nc), or STORE/SCENE_NAME "
        "of a prepared store",
    )
    parser.add_argument("--task", "-t", choices=("SIC", "SOD", "FLOE"), required=True)
    parser.add_argument(
        "--class",
        dest="class_index",
        type=int,
        default=None,
        help="explain this class; omitted: every pixel's own class (see --mask)",
    )
    parser.add_argument(
        "--mask",
        choices=("reference", "prediction"),
        default="prediction",
        help="which chart picks the target pixels (default: the model's prediction)",
    )
    parser.add_argument(
        "--layer",
        default=None,
        help="module name (default: the ASPP input, the encoder's last stage, e.g. encoder.layer3)",
    )
    parser.add_argument(
        "--list-layers", action="store_true", help="print the layers of the task and exit"
    )
    parser.add_argument(
        "--method",
        choices=("hirescam", "gradcam"),
        default=DEFAULT_METHOD,
        help="hirescam (default): gradient x activation at each position, which stays where "
        "the target draws evidence (what the distance summary needs); or gradcam: where the "
        "features the target relies on are present, anywhere",
    )
    parser.add_argument(
        "--window",
        type=int,
        nargs=4,
        metavar=("ROW", "COL", "HEIGHT", "WIDTH"),
        help="explain only this window, in 80 m pixels of the scene file",
    )
    parser.add_argument("--out", "-o", type=Path, default=None, help="output folder")
    parser.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        default=None,
        metavar="RUN",
        help="more checkpoints or run folders explained with the same target, side by side",
    )
    parser.add_argument("--tile", type=int, default=None, help="tile side (default: the run's)")
    parser.add_argument(
        "--overlap",
        default="auto",
        help="tile context margin: pixels, 'rf' (the receptive-field radius) or 'auto' "
        "(default: the radius, with tiles grown to 4x it)",
    )
    parser.add_argument("--batch", type=int, default=1, help="tiles per forward/backward pass")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--bin-km", type=float, default=None, help="distance bin width (km)")
    parser.add_argument(
        "--max-size", type=int, default=800, help="largest displayed side in figures (pixels)"
    )


def run(args: argparse.Namespace) -> int:
    """Explain, write the maps, figures and distance summary, print the table."""
    from icecontext.workflows.explain import (
        ExplainSettings,
        explain_checkpoints,
        layers_to_explain,
    )

    settings = ExplainSettings(
        checkpoint=args.checkpoint,
        scene=args.scene,
        task=args.task,
        class_index=args.class_index,
        mask=args.mask,
        compare=tuple(args.compare or ()),
        layer=args.layer,
        method=args.method,
        window=None if args.window is None else tuple(args.window),
        out=args.out,
        tile=args.tile,
        overlap=args.overlap,
        batch=args.batch,
        device=args.device,
        bin_km=args.bin_km,
        max_size=args.max_size,
    )
    if args.list_layers:
        for name, what in layers_to_explain(settings).items():
            print(f"{name:<36} {what}")
        return 0
    result = explain_checkpoints(settings)
    metres = result.pixel_km * 1000
    print(f"{result.scene}: {result.target}, window {result.window} at {metres:.0f} m")
    _print_table(result.rows)
    print(f"results: {result.out_dir}")
    return 0


def _print_table(rows: list[dict[str, object]]) -> None:
    """One line per model: fields, reach and the distance summary."""
    header = (
        f"{'model':<20} {'layer':<30} {'RF km':>7} {'reach km':>8} {'inside':>7} "
        f"{'d50 km':>7} {'d90 km':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        part = row["explained_field_km"]
        reach = part / 2 if isinstance(part, float) else None
        print(
            f"{row['model']!s:<20} {row['layer']!s:<30} {_num(row['receptive_field_km']):>7} "
            f"{_num(reach):>8} {_num(row['inside_fraction'], pct=True):>7} "
            f"{_num(row['d50_km']):>7} {_num(row['d90_km']):>7}"
        )


def _num(value: object, pct: bool = False) -> str:
    if not isinstance(value, int | float) or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * float(value):.0f}%" if pct else f"{float(value):.1f}"
