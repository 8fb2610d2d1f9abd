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
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icecontext.atomic import check_writable
from icecontext.cli.deprecated import add_renamed_option
from icecontext.cli.tiling_options import parse_overlap
from icecontext.errors import ConfigError, DataError

DEFAULT_METHOD = "hirescam"
"""``--method`` default (``icecontext.explain.gradcam.DEFAULT_METHOD``; not imported here
so that ``--help`` does not load torch)."""

log = logging.getLogger(__name__)

HH = "nersc_sar_primary"


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


@dataclass
class _Model:
    """One checkpoint, loaded."""

    label: str
    path: Path
    loaded: Any

    @property
    def cfg(self) -> Any:
        return self.loaded.config

    @property
    def model(self) -> Any:
        return self.loaded.model


def resolve_checkpoint(path: Path, option: str = "--checkpoint") -> Path:
    """A checkpoint file, or ``<run>/checkpoints/best.ckpt`` (else ``last.ckpt``) of a run folder.

    Raises:
        ConfigError: Naming ``option`` when neither exists.
    """
    if path.is_file():
        return path
    if path.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            candidate = path / "checkpoints" / name
            if candidate.is_file():
                return candidate
        raise ConfigError(option, f"run folder '{path}' has no checkpoints/best.ckpt or last.ckpt")
    raise ConfigError(option, f"'{path}' is neither a checkpoint file nor a run folder")


def _run_dir(ckpt: Path) -> Path:
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def _load(paths: Sequence[Path], device: Any) -> list[_Model]:
    from icecontext.inference.checkpoint import load_checkpoint

    models: list[_Model] = []
    seen: set[str] = set()
    for i, raw in enumerate(paths):
        ckpt = resolve_checkpoint(raw, "--checkpoint" if i == 0 else "--compare")
        loaded = load_checkpoint(ckpt, map_location=device)
        label = loaded.config.output.name or _run_dir(ckpt).name
        base, n = label, 2
        while label in seen:
            label, n = f"{base}-{n}", n + 1
        seen.add(label)
        models.append(_Model(label, ckpt, loaded))
    return models


def _open_source(scene: Path, features: Sequence[str], downsample: int, upsampling: str) -> Any:
    """Open ``--scenes`` as a NetCDF file or a store's scene group.

    ``features`` are the channels the models need; HH is loaded too when the scene has
    it, for the figure's background.
    """
    from icecontext.data.loader.sources import NetCDFSource, store_source
    from icecontext.data.store.manifest import MANIFEST_NAME
    from icecontext.data.store.prepared import PreparedStore

    if scene.is_dir():
        store = scene.parent
        if not (store / MANIFEST_NAME).is_file():
            raise ConfigError(
                "--scenes",
                f"'{scene}' is a folder but not a scene of a prepared store (no {MANIFEST_NAME} "
                f"in {store}); give a _prep.nc file or STORE/SCENE_NAME",
            )
        prepared = PreparedStore(store)
        if prepared.manifest.downsample != downsample:
            raise DataError(
                f"{store}: the store was prepared with --downsample {prepared.manifest.downsample}"
                f" but the model was trained at {downsample}; use the scene's _prep.nc file"
            )
        prepared.check_features(list(features), option="the checkpoint's features")
        return store_source(prepared, scene.name, upsampling)  # type: ignore[arg-type]
    if not scene.is_file():
        raise ConfigError("--scenes", f"'{scene}' does not exist")
    load = list(dict.fromkeys([*features, HH]))
    return NetCDFSource(scene, load, downsample, upsampling)  # type: ignore[arg-type]


def _window(
    window: Sequence[int] | None, downsample: int, full_shape: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """80 m window -> the model's grid (start floored, end rounded up).

    Checked here, in the 80 m pixels the user typed: the explainer's own check speaks of
    the model's (downsampled) grid.

    Raises:
        ConfigError: ``--window`` outside the scene of ``full_shape`` (80 m pixels).
    """
    if window is None:
        return None
    r, c, h, w = (int(v) for v in window)
    if h < 1 or w < 1 or r < 0 or c < 0:
        raise ConfigError(
            "--window", f"expected ROW COL >= 0 and HEIGHT WIDTH >= 1, got {r} {c} {h} {w}"
        )
    full_h, full_w = full_shape
    if r + h > full_h or c + w > full_w:
        raise ConfigError(
            "--window",
            f"rows {r}..{r + h - 1}, columns {c}..{c + w - 1} must lie inside the scene "
            f"({full_h} x {full_w} pixels at 80 m)",
        )
    k = downsample
    r1, c1 = -(-(r + h) // k), -(-(c + w) // k)
    return (r // k, c // k, r1 - r // k, c1 - c // k)


def _receptive_km(model: Any, task: str, downsample: int) -> float | None:
    from icecontext.models.receptive_field import pixels_to_km, theoretical_receptive_fields

    try:
        px = theoretical_receptive_fields(model)[task].total_px
    except (AttributeError, KeyError, TypeError):
        return None
    return None if px is None else pixels_to_km(px, downsample)


def _explained_km(model: Any, task: str, layer: str, downsample: int) -> float | None:
    """The field (km) of the layers after ``layer``: what the distance plot's radius shows."""
    from icecontext.explain.distance import explained_field

    field = explained_field(model, task, layer)
    return None if field is None else field.km(downsample)


def _rates(cfg: Any, task: str) -> str:
    model = cfg.model
    rates = ",".join(str(r) for r in model.rates_for(task))
    return f"rates [{rates}], pool {model.aspp.pooling}, OS {model.encoder.output_stride}"


def _hh_db(source: Any, domain: tuple[int, int, int, int], valid: Any) -> Any:
    import numpy as np

    from icecontext.data.io.variables import denormalise

    if HH not in source.features:
        return None
    z = np.asarray(source.read_inputs(domain, [HH])[0], dtype=np.float32)
    db = denormalise(HH, z).astype(np.float32)
    db[(z == 0) | ~valid] = np.nan
    return db


def _explain(*args: Any, window_80m: Sequence[int] | None, **kwargs: Any) -> Any:
    """``explain_scene``, with its window quoted as typed (80 m pixels) in its errors."""
    from icecontext.explain.scene import explain_scene

    try:
        return explain_scene(*args, **kwargs)
    except DataError as exc:
        grid = f"window {kwargs.get('window')}"
        if window_80m is None or grid not in str(exc):
            raise
        typed = "window " + " ".join(str(int(v)) for v in window_80m) + " (80 m pixels)"
        raise DataError(str(exc).replace(grid, typed)) from None


def run(args: argparse.Namespace) -> int:
    """Explain, write the maps, figures and distance summary, print the table."""
    if args.out is not None:  # before the models are loaded (the default is checked later)
        check_writable(args.out, "--out", folder=True)
    import numpy as np

    from icecontext.explain.distance import (
        DistanceProfile,
        distance_profile,
        write_profiles_csv,
        write_summary_csv,
    )
    from icecontext.explain.figures import (
        compare_figure,
        distance_figure,
        explain_figure,
        save_figure,
    )
    from icecontext.explain.gradcam import find_layer, suggested_layers
    from icecontext.explain.scene import SceneCam, write_cam_netcdf
    from icecontext.explain.targets import TargetSpec
    from icecontext.provenance import write_run_record

    spec = TargetSpec(args.task, args.class_index, args.mask)
    overlap = parse_overlap(args.overlap)
    if args.batch < 1:
        raise ConfigError("--batch", f"must be >= 1, got {args.batch}")
    if args.bin_km is not None and not args.bin_km > 0:
        raise ConfigError("--bin-km", f"must be > 0, got {args.bin_km}")
    from icecontext.inference.scenes import resolve_device

    device = resolve_device(args.device)  # an unknown name is an error naming --device
    models = _load([args.checkpoint, *(args.compare or [])], device)
    first = models[0]

    if args.list_layers:
        for name, what in suggested_layers(first.model, spec.task).items():
            print(f"{name:<36} {what}")
        return 0
    # fail fast on a bad --layer, before any reading
    layer_names = [find_layer(m.model, args.layer, spec.task)[0] for m in models]
    layer_name = layer_names[0]

    downsample = int(first.cfg.data.downsample)
    for m in models[1:]:
        if int(m.cfg.data.downsample) != downsample:
            raise ConfigError(
                "--compare",
                f"{m.path} was trained at downsample {m.cfg.data.downsample} but "
                f"{first.path} at {downsample}; compared maps must share one grid",
            )
    features = list(dict.fromkeys(f for m in models for f in m.loaded.features))
    sources: dict[str, Any] = {}

    def source_for(m: _Model) -> Any:
        key = str(m.cfg.data.upsampling)
        if key not in sources:
            sources[key] = _open_source(args.scene, features, downsample, key)
        return sources[key]

    src0 = source_for(first)
    domain = _window(args.window, downsample, src0.full_shape)
    # the method and layer always, so a change of defaults never overwrites other maps
    slug = f"{spec.slug()}-{args.method}-{layer_name}"
    out = args.out or _run_dir(first.path) / "explain" / f"{src0.name}-{slug}"
    out = Path(out)
    # fail on an unwritable place before the (long) computation, but create the folder
    # only once there is something to write: a target that cannot be explained must not
    # leave an empty output folder behind
    check_writable(out, "--out", folder=True)

    results: list[tuple[_Model, SceneCam, float | None, float | None]] = []
    fixed = None
    for m in models:
        tile = args.tile or int(m.cfg.train.validation.tile)
        log.info("explaining %s with %s (%s)", src0.name, m.label, m.path)
        result = _explain(
            m.model,
            source_for(m),
            m.loaded.features,
            spec,
            layer=args.layer,
            window=domain,
            window_80m=args.window,
            tile=tile,
            overlap=overlap,
            batch=args.batch,
            device=device,
            classes=fixed,
            method=args.method,
        )
        if fixed is None and len(models) > 1:
            # every compared model explains the pixels (and classes) the first one did
            fixed = (
                result.reference
                if spec.mask == "reference"
                else np.where(result.valid, result.prediction, 255).astype(np.uint8)
            )
        results.append(
            (
                m,
                result,
                _receptive_km(m.model, spec.task, downsample),
                _explained_km(m.model, spec.task, result.layer, downsample),
            )
        )

    out.mkdir(parents=True, exist_ok=True)
    first_result = results[0][1]
    hh = _hh_db(src0, first_result.window, first_result.valid)
    files: list[Path] = []
    profiles: dict[str, DistanceProfile] = {}
    summary_rows: list[dict[str, object]] = []
    for m, r, rf_km, part_km in results:
        attrs = {"checkpoint": str(m.path.resolve()), "model_label": m.label}
        if rf_km is not None:
            attrs["receptive_field_km"] = rf_km
        if part_km is not None:
            attrs["explained_field_km"] = part_km
        files.append(write_cam_netcdf(r, out / f"cam-{m.label}.nc", attrs))
        row: dict[str, object] = {
            "model": m.label,
            "checkpoint": str(m.path),
            "layer": r.layer,
            "rates": _rates(m.cfg, spec.task),
            "receptive_field_km": rf_km,
            "explained_field_km": part_km,
            "target_pixels": int(r.target_mask.sum()),
            "inside_fraction": None,
            "d50_km": None,
            "d90_km": None,
            "exact_tiling": r.exact,
            "seconds": round(r.seconds, 2),
        }
        try:
            p = distance_profile(r.cam, r.target_mask, r.pixel_km, bin_km=args.bin_km)
        except DataError as exc:
            log.warning("%s: no distance summary: %s", m.label, exc)
        else:
            profiles[m.label] = p
            row.update(inside_fraction=p.inside, d50_km=p.d50_km, d90_km=p.d90_km)
        summary_rows.append(row)

    files.append(
        save_figure(explain_figure(first_result, hh, max_size=args.max_size), out / "explain.png")
    )
    if len(results) > 1:
        panels = [
            (
                f"{m.label}\n{_rates(m.cfg, spec.task)}\nRF "
                + ("global" if rf is None else f"{rf:.1f} km"),
                r,
            )
            for m, r, rf, _ in results
        ]
        files.append(
            save_figure(compare_figure(panels, hh, max_size=args.max_size), out / "compare.png")
        )
    if profiles:
        files.append(write_profiles_csv(profiles, out / "distance.csv"))
        # the dotted radius: the field of the part explained, not the whole model's
        part_map = {m.label: part for m, _, _, part in results}
        fig = distance_figure(
            profiles, part_map, title=f"{src0.name}: {spec.describe()}", method=args.method
        )
        files.append(save_figure(fig, out / "distance.png"))
    files.append(write_summary_csv(summary_rows, out / "distance_summary.csv"))

    record = {
        "scene": src0.name,
        "scene_path": str(args.scene),
        "target": spec.describe(),
        "task": spec.task,
        "class_index": spec.class_index,
        "mask": spec.mask,
        "method": args.method,
        "window": list(first_result.window),
        "downsample": downsample,
        "pixel_km": first_result.pixel_km,
        "models": summary_rows,
        "files": [p.name for p in files],
    }
    from icecontext.atomic import write_text_atomic

    write_text_atomic(out / "summary.json", json.dumps(record, indent=2, default=_json))
    write_run_record(out, first.cfg, first.cfg.seed, extra={"explain": record})

    metres = first_result.pixel_km * 1000
    print(f"{src0.name}: {spec.describe()}, window {first_result.window} at {metres:.0f} m")
    header = (
        f"{'model':<20} {'layer':<30} {'RF km':>7} {'reach km':>8} {'inside':>7} "
        f"{'d50 km':>7} {'d90 km':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in summary_rows:
        part = row["explained_field_km"]
        reach = part / 2 if isinstance(part, float) else None
        print(
            f"{row['model']!s:<20} {row['layer']!s:<30} {_num(row['receptive_field_km']):>7} "
            f"{_num(reach):>8} {_num(row['inside_fraction'], pct=True):>7} "
            f"{_num(row['d50_km']):>7} {_num(row['d90_km']):>7}"
        )
    print(f"results: {out}")
    return 0


def _num(value: object, pct: bool = False) -> str:
    if not isinstance(value, int | float) or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * float(value):.0f}%" if pct else f"{float(value):.1f}"


def _json(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)
