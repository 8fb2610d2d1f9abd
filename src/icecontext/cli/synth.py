"""``icecontext synth --out DIR``: write physically based synthetic scenes.

Scene ``i`` is generated with seed ``S + i`` (``--seed S``) by
:func:`icecontext.synthetic.generator.generate_scene` and written atomically:

* default: ``{time}_{svc}_prep.nc`` (ready-to-train, via ``physical_to_r2t``);
* ``--test-set``: the ``_prep.nc`` with every chart pixel 255 plus the labels in
  ``{time}_{svc}_prep_reference.nc``;
* ``--raw``: the raw 40 m file named after the scene's ``original_id`` (via
  ``physical_to_raw``; with ``--test-set`` the raw file carries no chart and the
  labels go to ``_prep_reference.nc``).

Beside each scene, ``{time}_{svc}_synth.json`` records the generator's truth (the
spatial scales, each polygon's codes and rendered parts); ``config.yaml`` and
``provenance.json`` record the run. Services alternate DMI, CIS, ... unless
``--service`` is given; names are unique within a run (a clash moves the later
scene's start time by one second).
"""

from __future__ import annotations

import argparse
import logging
from datetime import timedelta
from pathlib import Path

from tqdm import tqdm

from icecontext.atomic import check_writable
from icecontext.config import validate
from icecontext.data.io.format import (
    scene_time,
)
from icecontext.errors import ConfigError
from icecontext.provenance import write_run_record
from icecontext.synthetic.files import write_synthetic_scene
from icecontext.synthetic.generator import generate_scene
from icecontext.synthetic.known_truth import KnownTruthParams, generate_known_truth_scene
from icecontext.synthetic.params import SCALE_PRESETS, Service, SynthParams, resolve_scales
from icecontext.synthetic.physical import PhysicalScene

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument("--out", "-o", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--scenes", type=int, default=1, help="number of scenes (default 1)")
    parser.add_argument(
        "--height", type=int, default=5000, help="SAR lines at 80 m (default 5000, a real scene)"
    )
    parser.add_argument(
        "--width", type=int, default=5200, help="SAR samples at 80 m (default 5200)"
    )
    parser.add_argument("--seed", type=int, default=0, help="scene i uses seed SEED + i")
    parser.add_argument(
        "--raw", action="store_true", help="write raw 40 m files instead of ready-to-train ones"
    )
    parser.add_argument(
        "--service",
        choices=("dmi", "cis"),
        default=None,
        help="ice service of every scene (default: alternate dmi, cis, ...)",
    )
    parser.add_argument(
        "--scale",
        default="medium",
        help="spatial-context scales: " + ", ".join(SCALE_PRESETS) + " or a positive "
        "multiplier of the medium lengths (docs/data.md)",
    )
    parser.add_argument(
        "--test-set",
        action="store_true",
        help="write test-set files: charts all 255 and labels in _prep_reference.nc",
    )
    parser.add_argument(
        "--complevel", type=int, default=1, help="zlib compression level 0-9 (default 1)"
    )
    parser.add_argument(
        "--known-truth",
        metavar="SIC=KM,SOD=KM,FLOE=KM",
        default=None,
        help="write known-truth scenes: each task's label depends only on the scene within "
        "this radius (docs/data.md, 'Known-truth scenes'); ready-to-train files only",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _check(args: argparse.Namespace) -> None:
    if args.scenes < 1:
        raise ConfigError("--scenes", f"must be at least 1, got {args.scenes}")
    for flag, value in (("--height", args.height), ("--width", args.width)):
        if not 26 <= value <= 20000:
            raise ConfigError(flag, f"must be 26..20000 pixels (80 m), got {value}")
    if not 0 <= args.complevel <= 9:
        raise ConfigError("--complevel", f"must be 0..9, got {args.complevel}")
    if args.seed < 0:
        raise ConfigError("--seed", f"must be >= 0, got {args.seed}")
    if args.known_truth is not None and args.raw:
        raise ConfigError(
            "--known-truth", "known-truth labels are per pixel, not polygons: drop --raw"
        )
    resolve_scales(args.scale)  # a bad --scale fails before the output folder exists


def parse_known_truth(text: str) -> KnownTruthParams:
    """``"SIC=3.6,SOD=4.56,FLOE=6"`` -> the known-truth parameters with those radii (km).

    Raises:
        ConfigError: Naming ``--known-truth`` for anything else.
    """
    radii: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            radii[key.strip().upper()] = float(value)
        except ValueError:
            raise ConfigError(
                "--known-truth", f"expected SIC=KM,SOD=KM,FLOE=KM, got '{text}'"
            ) from None
    try:
        return validate(KnownTruthParams, {"radius_km": radii}, prefix="known_truth")
    except ConfigError as exc:
        raise ConfigError("--known-truth", exc.problem) from None


def _scene_params(args: argparse.Namespace, index: int) -> SynthParams:
    service: Service = args.service or ("dmi" if index % 2 == 0 else "cis")
    return SynthParams(
        height=args.height,
        width=args.width,
        service=service,
        scales=resolve_scales(args.scale),
        keep_truth_arrays=False,
    )


def _unique_scene(
    params: SynthParams, seed: int, taken: set[str], truth: KnownTruthParams | None = None
) -> PhysicalScene:
    """Generate a scene; on a name clash, regenerate it one second later (same content)."""

    def make(p: SynthParams) -> PhysicalScene:
        return (
            generate_scene(p, seed) if truth is None else generate_known_truth_scene(p, truth, seed)
        )

    scene = make(params)
    while scene.scene_name in taken:
        later = scene_time(scene.scene_name) + timedelta(seconds=1)
        log.info("scene name %s already used: start time moved to %s", scene.scene_name, later)
        params = params.model_copy(update={"scene_time": later})
        scene = make(params)
    return scene


def run(args: argparse.Namespace) -> int:
    """Generate and write the scenes."""
    _check(args)
    check_writable(args.out, "--out", folder=True)
    truth = parse_known_truth(args.known_truth) if args.known_truth is not None else None
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    records = []
    bar = tqdm(range(args.scenes), desc="synth", unit="scene", disable=args.no_progress)
    for i in bar:
        seed = args.seed + i
        params = _scene_params(args, i)
        scene = _unique_scene(params, seed, taken, truth)
        taken.add(scene.scene_name)
        bar.set_postfix_str(scene.scene_name)
        files = write_synthetic_scene(
            scene, out, seed=seed, raw=args.raw, test_set=args.test_set, complevel=args.complevel
        )
        records.append({"seed": seed, "scene": scene.scene_name, "files": [f.name for f in files]})
        del scene
    write_run_record(
        out,
        _scene_params(args, 0).model_copy(update={"service": args.service}),
        args.seed,
        extra={"scenes": records, "layout": _layout(args)},
    )
    print(f"wrote {args.scenes} {_layout(args)} scene(s) to {out}")
    return 0


def _layout(args: argparse.Namespace) -> str:
    kind = "raw" if args.raw else "ready-to-train"
    if args.known_truth is not None:
        kind = f"known-truth ({args.known_truth} km) {kind}"
    return kind + (" test-set" if args.test_set else "")
