"""Explain one scene with one or more checkpoints: what ``icecontext explain`` does.

:func:`explain_checkpoints` loads the checkpoints, opens the scene (a ``_prep.nc`` file
or a scene of a prepared store), explains the same target with every model
(:func:`~icecontext.explain.scene.explain_scene`; compared models explain the pixels,
and classes, of the first one), measures the CAM mass by distance from the target, and
writes into the output folder (default
``<run>/explain/<scene>-<task>-<class>-<mask>-<method>-<layer>``):

* ``cam-<label>.nc``: the CAM (raw units), target mask, prediction, reference,
  layer-grid map and channel weights, one file per model;
* ``explain.png``, ``compare.png`` (several models), ``distance.png``;
* ``distance.csv`` / ``distance_summary.csv``: CAM mass against distance from the
  target region (km), and the distances holding 50 % / 90 % of it;
* ``summary.json``, and ``config.yaml`` + ``provenance.json``
  (:func:`~icecontext.provenance.write_run_record`).

The result holds the summary rows the command prints. See docs/explain.md.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icecontext.atomic import check_writable, write_text_atomic
from icecontext.data.loader.sources import SceneSource
from icecontext.errors import ConfigError, DataError
from icecontext.explain.distance import (
    DistanceProfile,
    distance_profile,
    explained_field,
    write_profiles_csv,
    write_summary_csv,
)
from icecontext.explain.figures import compare_figure, distance_figure, explain_figure, save_figure
from icecontext.explain.gradcam import DEFAULT_METHOD, CamMethod, find_layer, suggested_layers
from icecontext.explain.scene import (
    CamSettings,
    SceneCam,
    explain_scene,
    explain_tiling,
    write_cam_netcdf,
)
from icecontext.explain.targets import MaskSource, TargetSpec, Task
from icecontext.inference.checkpoint import LoadedCheckpoint, load_checkpoint
from icecontext.inference.predictor import resolve_overlap
from icecontext.inference.scenes import resolve_device
from icecontext.provenance import write_run_record

log = logging.getLogger(__name__)

HH = "nersc_sar_primary"
"""The channel drawn under the maps (in dB) when the scene has it."""

Window = tuple[int, int, int, int]


@dataclass(frozen=True)
class ExplainSettings:
    """What to explain, with which models, and where to write it (``explain``'s options).

    Attributes:
        checkpoint: ``best.ckpt`` of a run, or its run folder.
        scene: A ``_prep.nc`` file, or ``STORE/SCENE_NAME`` of a prepared store.
        task: ``"SIC"``, ``"SOD"`` or ``"FLOE"``.
        class_index: Explain this class; ``None`` = every pixel's own class.
        mask: Which chart picks the target pixels: ``"prediction"`` or ``"reference"``.
        compare: More checkpoints or run folders explained with the same target.
        layer: Module name (``None`` = the ASPP input).
        method: ``"hirescam"`` or ``"gradcam"``.
        window: ``(row, col, height, width)`` to explain alone, in 80 m pixels.
        out: Output folder (``None`` = under the first run's folder).
        tile: Tile side (``None`` = the run's ``train.validation.tile``).
        overlap: Tile context margin: pixels, ``"rf"`` or ``"auto"``.
        batch: Tiles per forward/backward pass.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
        bin_km: Distance bin width in km (``None`` = automatic).
        max_size: Largest displayed side in figures (pixels).
    """

    checkpoint: Path
    scene: Path
    task: Task
    class_index: int | None = None
    mask: MaskSource = "prediction"
    compare: tuple[Path, ...] = ()
    layer: str | None = None
    method: CamMethod = DEFAULT_METHOD
    window: Window | None = None
    out: Path | None = None
    tile: int | None = None
    overlap: int | str = "auto"
    batch: int = 1
    device: str = "auto"
    bin_km: float | None = None
    max_size: int = 800


@dataclass(frozen=True)
class ExplainResult:
    """What :func:`explain_checkpoints` wrote, and its summary.

    Attributes:
        out_dir: The output folder.
        scene: Scene name.
        target: What was explained, in words (:meth:`TargetSpec.describe`).
        window: ``(row, col, height, width)`` explained, on the models' grid.
        pixel_km: Side of one pixel of that grid in km.
        rows: One summary row per model (the columns of ``distance_summary.csv``).
        files: The files written, but for ``summary.json``, ``config.yaml`` and
            ``provenance.json``.
    """

    out_dir: Path
    scene: str
    target: str
    window: Window
    pixel_km: float
    rows: list[dict[str, object]]
    files: list[Path]


@dataclass(frozen=True)
class ExplainModel:
    """One checkpoint, loaded, with the label it has in file names and tables."""

    label: str
    path: Path
    loaded: LoadedCheckpoint

    @property
    def cfg(self) -> Any:
        """The run configuration."""
        return self.loaded.config

    @property
    def model(self) -> torch.nn.Module:
        """The network."""
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


def run_dir(ckpt: Path) -> Path:
    """The run folder of a checkpoint (its folder, above ``checkpoints/``)."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def load_models(paths: Sequence[Path], device: torch.device) -> list[ExplainModel]:
    """Load the checkpoints; labels are the run names, made unique with ``-2``, ``-3``...

    Raises:
        ConfigError: A path that is no checkpoint (``--checkpoint``, then ``--compare``).
    """
    models: list[ExplainModel] = []
    seen: set[str] = set()
    for i, raw in enumerate(paths):
        ckpt = resolve_checkpoint(raw, "--checkpoint" if i == 0 else "--compare")
        loaded = load_checkpoint(ckpt, map_location=device)
        label = loaded.config.output.name or run_dir(ckpt).name
        base, n = label, 2
        while label in seen:
            label, n = f"{base}-{n}", n + 1
        seen.add(label)
        models.append(ExplainModel(label, ckpt, loaded))
    return models


def open_scene_source(
    scene: Path, features: Sequence[str], downsample: int, upsampling: Any
) -> SceneSource:
    """Open a scene as a NetCDF file or a store's scene group.

    ``features`` are the channels the models need; HH is loaded too when the scene has
    it, for the figure's background.

    Raises:
        ConfigError: ``--scenes`` missing, or a folder that is not a store's scene.
        DataError: A store prepared at another downsampling than the models'.
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
        return store_source(prepared, scene.name, upsampling)
    if not scene.is_file():
        raise ConfigError("--scenes", f"'{scene}' does not exist")
    load = list(dict.fromkeys([*features, HH]))
    return NetCDFSource(scene, load, downsample, upsampling)


def window_on_model_grid(
    window: Sequence[int] | None, downsample: int, full_shape: tuple[int, int]
) -> Window | None:
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


def quoting_window(
    explain: Callable[[], SceneCam], window: Window | None, window_80m: Sequence[int] | None
) -> SceneCam:
    """Run ``explain``, with the window of its errors quoted as typed (80 m pixels).

    Raises:
        DataError: ``explain``'s, with ``window (r, c, h, w)`` of the models' grid
            replaced by the 80 m window the user typed.
    """
    try:
        return explain()
    except DataError as exc:
        grid = f"window {window}"
        if window_80m is None or grid not in str(exc):
            raise
        typed = "window " + " ".join(str(int(v)) for v in window_80m) + " (80 m pixels)"
        raise DataError(str(exc).replace(grid, typed)) from None


def layers_to_explain(settings: ExplainSettings) -> dict[str, str]:
    """The layers worth explaining for the task of the first checkpoint, name -> what.

    Checks the options and loads every checkpoint first, as :func:`explain_checkpoints`.
    """
    session = _start(settings)
    return suggested_layers(session.models[0].model, session.spec.task)


def explain_checkpoints(settings: ExplainSettings) -> ExplainResult:
    """Explain the target with every checkpoint and write the maps, figures and summaries.

    Args:
        settings: What to explain, the checkpoints and the output folder.

    Returns:
        The output folder, the files and one summary row per model.

    Raises:
        ConfigError: For a bad option (naming it), before any scene is read.
        DataError: For unusable data, or when no pixel matches the target (nothing is
            written then).
    """
    session = _start(settings)
    session.check_layers()
    scene = _SceneSources(settings.scene, session.features, session.downsample)
    src0 = scene.for_model(session.models[0])
    domain = window_on_model_grid(settings.window, session.downsample, src0.full_shape)
    out = settings.out or _default_out(session, src0.name)
    # fail on an unwritable place before the (long) computation, but create the folder
    # only once there is something to write: a target that cannot be explained must not
    # leave an empty output folder behind
    check_writable(out, "--out", folder=True)
    results = [_Explained.of(m, cam, session) for m, cam in _explain_all(session, scene, domain)]
    out.mkdir(parents=True, exist_ok=True)
    rows, files = _write_outputs(session, results, src0, out)
    first = results[0].cam
    record = {
        "scene": src0.name,
        "scene_path": str(settings.scene),
        "target": session.spec.describe(),
        "task": session.spec.task,
        "class_index": session.spec.class_index,
        "mask": session.spec.mask,
        "method": settings.method,
        "window": list(first.window),
        "downsample": session.downsample,
        "pixel_km": first.pixel_km,
        "models": rows,
        "files": [p.name for p in files],
    }
    write_text_atomic(out / "summary.json", json.dumps(record, indent=2, default=_json))
    cfg = session.models[0].cfg
    write_run_record(out, cfg, cfg.seed, extra={"explain": record})
    return ExplainResult(
        out_dir=out,
        scene=src0.name,
        target=session.spec.describe(),
        window=first.window,
        pixel_km=first.pixel_km,
        rows=rows,
        files=files,
    )


@dataclass(frozen=True)
class _Session:
    """Checked settings and the loaded models."""

    settings: ExplainSettings
    spec: TargetSpec
    overlap: int | str
    device: torch.device
    models: list[ExplainModel]

    @property
    def downsample(self) -> int:
        """The grid every model was trained on (:meth:`check_layers` checks they agree)."""
        return int(self.models[0].cfg.data.downsample)

    @property
    def features(self) -> list[str]:
        """The channels of every model, first seen first."""
        return list(dict.fromkeys(f for m in self.models for f in m.loaded.features))

    def check_layers(self) -> None:
        """Fail fast on a bad ``--layer`` or models of different grids, before any reading.

        Raises:
            ConfigError: ``--layer`` unknown to a model, or ``--compare`` models trained
                at another downsampling than the first.
        """
        for m in self.models:
            find_layer(m.model, self.settings.layer, self.spec.task)
        first = self.models[0]
        for m in self.models[1:]:
            if int(m.cfg.data.downsample) != self.downsample:
                raise ConfigError(
                    "--compare",
                    f"{m.path} was trained at downsample {m.cfg.data.downsample} but "
                    f"{first.path} at {self.downsample}; compared maps must share one grid",
                )


def _start(settings: ExplainSettings) -> _Session:
    """Check the options that need no model, resolve the device and load the models.

    Raises:
        ConfigError: Naming the first bad option.
    """
    if settings.out is not None:  # before the models are loaded (the default is checked later)
        check_writable(settings.out, "--out", folder=True)
    spec = TargetSpec(settings.task, settings.class_index, settings.mask)
    overlap = settings.overlap
    if overlap not in ("auto", "rf"):
        overlap = resolve_overlap(overlap, None, 1)
    if settings.batch < 1:
        raise ConfigError("--batch", f"must be >= 1, got {settings.batch}")
    if settings.bin_km is not None and not settings.bin_km > 0:
        raise ConfigError("--bin-km", f"must be > 0, got {settings.bin_km}")
    device = resolve_device(settings.device)  # an unknown name is an error naming --device
    models = load_models([settings.checkpoint, *settings.compare], device)
    return _Session(settings, spec, overlap, device, models)


class _SceneSources:
    """The scene, opened once per 2 km upsampling mode the models use."""

    def __init__(self, scene: Path, features: list[str], downsample: int) -> None:
        self.scene, self.features, self.downsample = scene, features, downsample
        self.sources: dict[str, SceneSource] = {}

    def for_model(self, m: ExplainModel) -> SceneSource:
        """The scene as ``m`` was trained to read it."""
        key = str(m.cfg.data.upsampling)
        if key not in self.sources:
            self.sources[key] = open_scene_source(self.scene, self.features, self.downsample, key)
        return self.sources[key]


def _default_out(session: _Session, scene_name: str) -> Path:
    """``<run>/explain/<scene>-<target>-<method>-<layer>`` of the first model.

    The method and layer are always named, so a change of defaults never overwrites
    other maps.
    """
    first = session.models[0]
    layer = find_layer(first.model, session.settings.layer, session.spec.task)[0]
    slug = f"{session.spec.slug()}-{session.settings.method}-{layer}"
    return run_dir(first.path) / "explain" / f"{scene_name}-{slug}"


def _explain_all(
    session: _Session, scene: _SceneSources, domain: Window | None
) -> list[tuple[ExplainModel, SceneCam]]:
    """Every model's map; compared models explain the first one's pixels and classes."""
    settings, spec = session.settings, session.spec
    results: list[tuple[ExplainModel, SceneCam]] = []
    fixed: np.ndarray | None = None
    for m in session.models:
        source = scene.for_model(m)
        log.info("explaining %s with %s (%s)", source.name, m.label, m.path)
        shape = source.shape if domain is None else (domain[2], domain[3])
        tile = settings.tile or int(m.cfg.train.validation.tile)
        tiling = explain_tiling(m.model, tile, session.overlap, settings.batch, shape=shape)
        cam = CamSettings(
            layer=settings.layer, method=settings.method, window=domain, classes=fixed
        )
        explain = partial(
            explain_scene,
            m.model,
            source,
            m.loaded.features,
            spec,
            cam,
            tiling,
            device=session.device,
        )
        result = quoting_window(explain, domain, settings.window)
        if fixed is None and len(session.models) > 1:
            fixed = (
                result.reference
                if spec.mask == "reference"
                else np.where(result.valid, result.prediction, 255).astype(np.uint8)
            )
        results.append((m, result))
    return results


@dataclass(frozen=True)
class _Explained:
    """One model's map with its fields in km (``None``: unknown or global)."""

    model: ExplainModel
    cam: SceneCam
    rf_km: float | None
    part_km: float | None

    @classmethod
    def of(cls, m: ExplainModel, cam: SceneCam, session: _Session) -> _Explained:
        """Measure the whole receptive field and the field after the explained layer."""
        task, k = session.spec.task, session.downsample
        return cls(
            m, cam, _receptive_km(m.model, task, k), _explained_km(m.model, task, cam.layer, k)
        )

    def rates(self, task: str) -> str:
        """The model's ASPP in words: rates, pooling and output stride."""
        model = self.model.cfg.model
        rates = ",".join(str(r) for r in model.rates_for(task))
        return f"rates [{rates}], pool {model.aspp.pooling}, OS {model.encoder.output_stride}"


def _receptive_km(model: torch.nn.Module, task: str, downsample: int) -> float | None:
    from icecontext.models.multitask import MultiTaskModel
    from icecontext.models.receptive_field import pixels_to_km, theoretical_receptive_fields

    if not isinstance(model, MultiTaskModel):
        return None
    try:
        px = theoretical_receptive_fields(model)[task].total_px
    except (AttributeError, KeyError, TypeError):
        return None
    return None if px is None else pixels_to_km(px, downsample)


def _explained_km(model: torch.nn.Module, task: str, layer: str, downsample: int) -> float | None:
    """The field (km) of the layers after ``layer``: what the distance plot's radius shows."""
    field = explained_field(model, task, layer)
    return None if field is None else field.km(downsample)


def _write_outputs(
    session: _Session, results: Sequence[_Explained], source: SceneSource, out: Path
) -> tuple[list[dict[str, object]], list[Path]]:
    """The maps, figures and distance tables; returns the summary rows and the files."""
    settings, task = session.settings, session.spec.task
    first = results[0].cam
    hh = _hh_db(source, first.window, first.valid)
    files: list[Path] = []
    profiles: dict[str, DistanceProfile] = {}
    rows: list[dict[str, object]] = []
    for e in results:
        files.append(write_cam_netcdf(e.cam, out / f"cam-{e.model.label}.nc", _cam_attrs(e)))
        row, profile = _summary_row(e, task, settings.bin_km)
        rows.append(row)
        if profile is not None:
            profiles[e.model.label] = profile
    figure = explain_figure(first, hh, max_size=settings.max_size)
    files.append(save_figure(figure, out / "explain.png"))
    if len(results) > 1:
        panels = [(_panel_title(e, task), e.cam) for e in results]
        figure = compare_figure(panels, hh, max_size=settings.max_size)
        files.append(save_figure(figure, out / "compare.png"))
    if profiles:
        files.append(write_profiles_csv(profiles, out / "distance.csv"))
        # the dotted radius: the field of the part explained, not the whole model's
        part_map = {e.model.label: e.part_km for e in results}
        title = f"{source.name}: {session.spec.describe()}"
        figure = distance_figure(profiles, part_map, title=title, method=settings.method)
        files.append(save_figure(figure, out / "distance.png"))
    files.append(write_summary_csv(rows, out / "distance_summary.csv"))
    return rows, files


def _cam_attrs(e: _Explained) -> dict[str, Any]:
    """The attributes of a model's ``cam-<label>.nc`` beyond the map's own."""
    attrs: dict[str, Any] = {
        "checkpoint": str(e.model.path.resolve()),
        "model_label": e.model.label,
    }
    if e.rf_km is not None:
        attrs["receptive_field_km"] = e.rf_km
    if e.part_km is not None:
        attrs["explained_field_km"] = e.part_km
    return attrs


def _summary_row(
    e: _Explained, task: str, bin_km: float | None
) -> tuple[dict[str, object], DistanceProfile | None]:
    """A model's row of ``distance_summary.csv``, and its distance profile when it has one."""
    r = e.cam
    row: dict[str, object] = {
        "model": e.model.label,
        "checkpoint": str(e.model.path),
        "layer": r.layer,
        "rates": e.rates(task),
        "receptive_field_km": e.rf_km,
        "explained_field_km": e.part_km,
        "target_pixels": int(r.target_mask.sum()),
        "inside_fraction": None,
        "d50_km": None,
        "d90_km": None,
        "exact_tiling": r.exact,
        "seconds": round(r.seconds, 2),
    }
    try:
        p = distance_profile(r.cam, r.target_mask, r.pixel_km, bin_km=bin_km)
    except DataError as exc:
        log.warning("%s: no distance summary: %s", e.model.label, exc)
        return row, None
    row.update(inside_fraction=p.inside, d50_km=p.d50_km, d90_km=p.d90_km)
    return row, p


def _panel_title(e: _Explained, task: str) -> str:
    rf = "global" if e.rf_km is None else f"{e.rf_km:.1f} km"
    return f"{e.model.label}\n{e.rates(task)}\nRF {rf}"


def _hh_db(source: SceneSource, domain: Window, valid: np.ndarray) -> np.ndarray | None:
    """HH backscatter (dB) of the domain, NaN without data; ``None`` when not loaded."""
    from icecontext.data.io.variables import denormalise

    if HH not in source.features:
        return None
    z = np.asarray(source.read_inputs(domain, [HH])[0], dtype=np.float32)
    db = denormalise(HH, z).astype(np.float32)
    db[(z == 0) | ~valid] = np.nan
    return db


def _json(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)
