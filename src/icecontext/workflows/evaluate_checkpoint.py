"""Evaluate a trained model on whole scenes with the challenge metric.

:func:`evaluate_checkpoint` rebuilds the network from a checkpoint, predicts every
scene of a folder (``_prep.nc``, with ``_prep_reference.nc`` labels beside test files)
or of a prepared store with the tiled predictor, and scores the predictions with the
AutoICE metric (:class:`~icecontext.evaluation.ChartScorer`).

Resolution: scenes are scored at **80 m** against the original reference charts: a
model trained on data downsampled by ``K`` predicts at ``K x 80 m`` and its class maps
are upsampled (nearest) to the full grid first, exactly as training validation does
(:func:`~icecontext.data.loader.sources.full_resolution_charts` gives both the reference). A
store prepared with ``K > 1`` keeps the 80 m charts for this (store format 2); only a
store prepared before that is scored at ``K x 80 m`` against its block-reduced charts,
with a warning (recorded as ``resolution_m`` in the results).

Outputs (``out``)::

    metrics.json       scores (challenge rounding and unrounded), pixels, per-class
                       tables, breakdowns per scene / service / month, settings
    metrics.csv        one row per chart + combined: score, unrounded, pixels
    per_class.csv      chart, class, name, support, predicted, correct, precision, recall, F1
    breakdown_{scene,service,month}.csv
    confusion_{SIC,SOD,FLOE}.png, per_class_f1.png
    scorer.json        the confusion matrices per scene (ChartScorer.to_dict, mergeable)
    config.yaml, provenance.json
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack

import numpy as np
import torch

from icecontext.atomic import write_text_atomic
from icecontext.data.io.format import CHART_FILL, CHARTS
from icecontext.data.io.geometry import Upsampling
from icecontext.errors import DataError
from icecontext.evaluation import ChartScorer, scene_groups
from icecontext.inference.predictor import (
    InferencePrecision,
    model_overlap,
    predict_scene,
    resolve_precision,
    tile_for_margin,
)
from icecontext.inference.scenes import resolve_device
from icecontext.inference.tile_batches import TileSource
from icecontext.inference.tiling import TileSettings
from icecontext.run.config import ValidationConfig

if TYPE_CHECKING:
    from icecontext.inference.checkpoint import LoadedCheckpoint

log = logging.getLogger(__name__)

DeviceChoice = Literal["auto", "cpu", "cuda"] | str
OverlapChoice = int | Literal["auto", "rf"]
"""A context margin in pixels, or ``auto`` / ``rf`` (see :func:`resolve_overlap`)."""


@dataclass(frozen=True)
class ScoringSettings:
    """How scenes are predicted for scoring: the tiled pass, device and precision.

    ``None`` for ``tile``, ``overlap`` or ``batch`` means the run's
    ``train.validation`` setting in :func:`evaluate_checkpoint`, and the default of
    that section (512 px, ``auto``, 4 tiles) in :func:`score_scenes`.

    Attributes:
        tile: Tile side (pixels at the data's resolution).
        overlap: Context margin in pixels, ``auto`` or ``rf`` (see
            :func:`~icecontext.inference.predictor.resolve_overlap`).
        batch: Tiles per forward pass.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
        precision: Inference precision (``auto``, ``32``, ``bf16``, ``16``).
    """

    tile: int | None = None
    overlap: OverlapChoice | None = None
    batch: int | None = None
    device: DeviceChoice = "auto"
    precision: InferencePrecision = "32"

    def filled(self, validation: ValidationConfig) -> ScoringSettings:
        """These settings with the ``None`` tiling fields taken from ``validation``."""
        return replace(
            self,
            tile=self.tile or validation.tile,
            overlap=validation.overlap if self.overlap is None else self.overlap,
            batch=self.batch or validation.batch,
        )

    def tiling(self, model: torch.nn.Module) -> TileSettings:
        """The tiled pass for ``model`` (``auto``/``rf`` resolved with its receptive field)."""
        s = self.filled(ValidationConfig())
        assert s.tile is not None and s.overlap is not None and s.batch is not None
        margin = model_overlap(model, s.overlap, s.tile)
        tile = tile_for_margin(s.tile, margin) if s.overlap == "rf" else s.tile  # as predict
        return TileSettings(tile=tile, overlap=margin, batch=s.batch)


DEFAULT_SCORING = ScoringSettings()


class ScoringKeywords(TypedDict, total=False):
    """The fields of :class:`ScoringSettings` as keywords (how :func:`score_scenes` took them)."""

    tile: int
    overlap: OverlapChoice
    batch: int
    device: DeviceChoice
    precision: InferencePrecision


@dataclass
class EvalScene:
    """One scene to evaluate: its source and how to read its reference charts.

    Attributes:
        source: The scene the model reads (a ``SceneSource``).
        reference: Returns ``{"SIC", "SOD", "FLOE"}`` uint8 reference charts at
            ``resolution`` (255 = masked).
        full_resolution: Whether the reference is at 80 m (else at the source's grid).
    """

    source: TileSource
    reference: Callable[[], dict[str, np.ndarray]]
    full_resolution: bool


@dataclass
class EvaluationResult:
    """What :func:`evaluate_checkpoint` produced.

    Attributes:
        out_dir: Output folder (``None`` when nothing was written).
        scores: Pooled challenge scores (as ``score_charts`` returns).
        scorer: The filled scorer (breakdowns, confusion matrices).
        scenes: Scenes scored.
        unlabelled: Scenes skipped because every reference pixel is masked.
        resolution_m: Pixel size of the scored grid in metres.
        files: Files written.
    """

    out_dir: Path | None
    scores: dict[str, Any]
    scorer: ChartScorer
    scenes: list[str]
    unlabelled: list[str] = field(default_factory=list)
    resolution_m: int = 80
    files: list[Path] = field(default_factory=list)


def _netcdf_reference(path: Path) -> Callable[[], dict[str, np.ndarray]]:
    def read() -> dict[str, np.ndarray]:
        from icecontext.data.io.scene import open_scene

        ds = open_scene(path, validate=False)
        try:
            return {c: np.asarray(ds[c].values, dtype=np.uint8) for c in CHARTS}
        finally:
            ds.close()

    return read


def _source_reference(source: Any) -> Callable[[], dict[str, np.ndarray]]:
    def read() -> dict[str, np.ndarray]:
        h, w = source.shape
        return source.read_charts((0, 0, h, w))

    return read


def _full_reference(source: Any) -> Callable[[], dict[str, np.ndarray]]:
    def read() -> dict[str, np.ndarray]:
        from icecontext.data.loader.sources import full_resolution_charts

        return full_resolution_charts(source)

    return read


def open_eval_scenes(
    data: str | os.PathLike[str],
    features: Sequence[str],
    downsample: int,
    upsampling: Upsampling = "nearest",
    scenes: Sequence[str] | None = None,
) -> list[EvalScene]:
    """Open the scenes of a NetCDF folder (or file list) or of a prepared store.

    Args:
        data: Folder of ``_prep.nc`` files, one file, or a prepared store.
        features: Channels the model needs.
        downsample: The model's data downsampling ``K``.
        upsampling: 2 km upsampling mode the model was trained with.
        scenes: Only these scene names (default: all).

    Raises:
        DataError: If the data hold no scene, a named scene is missing, or a store
            lacks a feature or has another downsampling.
    """
    from icecontext.data.loader.sources import NetCDFSource, store_source
    from icecontext.data.store.manifest import MANIFEST_NAME
    from icecontext.data.store.prepare import collect_scene_files
    from icecontext.data.store.prepared import PreparedStore

    path = Path(data)
    out: list[EvalScene] = []
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        store = PreparedStore(path)
        store.check_features(list(features), option="the checkpoint's data.features")
        if store.manifest.downsample != downsample:
            raise DataError(
                f"{path}: the store was prepared with --downsample "
                f"{store.manifest.downsample} but the model was trained at {downsample}; "
                "evaluate on the NetCDF scenes (any model works there) or a matching store"
            )
        names = store.names if scenes is None else list(scenes)
        for name in names:
            stored = store_source(store, name, upsampling)
            if stored.has_full_charts():
                out.append(EvalScene(stored, _full_reference(stored), True))
            else:
                log.warning(
                    "%s: no 80 m charts in this store (prepared before store format 2): "
                    "scored at %d m against its downsampled charts",
                    stored.where,
                    80 * downsample,
                )
                out.append(EvalScene(stored, _source_reference(stored), False))
    else:
        files = collect_scene_files(path)
        names = sorted(files) if scenes is None else list(scenes)
        for name in names:
            if name not in files:
                raise DataError(f"scene '{name}' is not in {path}")
            src = NetCDFSource(files[name], list(features), downsample, upsampling)
            out.append(EvalScene(src, _netcdf_reference(files[name]), True))
    if not out:
        raise DataError(f"{path}: no scene to evaluate")
    return out


def score_scenes(
    model: torch.nn.Module,
    features: Sequence[str],
    scenes: Sequence[EvalScene],
    *,
    settings: ScoringSettings = DEFAULT_SCORING,
    on_prediction: Callable[[EvalScene, Any, dict[str, np.ndarray]], None] | None = None,
    progress: bool = False,
    **keywords: Unpack[ScoringKeywords],
) -> tuple[ChartScorer, list[str], list[str]]:
    """Predict and score scenes one at a time (memory: one scene).

    Args:
        model: The network.
        features: Its input channels.
        scenes: Scenes with their references.
        settings: Tiling, device and precision (``None`` tiling fields: the
            ``train.validation`` defaults, 512 px tiles, ``auto`` overlap, 4 tiles).
        on_prediction: Called with ``(scene, prediction, reference)`` after each scene
            (e.g. to draw maps).
        progress: Show a progress bar over scenes.
        **keywords: Fields of ``settings`` given one by one (``tile=``, ``overlap=``,
            ``batch=``, ``device=``, ``precision=``); they replace those of ``settings``.

    Returns:
        ``(scorer, scored scene names, unlabelled scene names)``.
    """
    from tqdm.auto import tqdm

    settings = replace(settings, **keywords)
    dev = resolve_device(settings.device)
    model = model.to(dev).eval()
    tiling = settings.tiling(model)
    scorer = ChartScorer()
    scored: list[str] = []
    unlabelled: list[str] = []
    for scene in tqdm(scenes, desc="evaluate", unit="scene", disable=not progress):
        src = scene.source
        reference = scene.reference()
        if all((reference[c] == CHART_FILL).all() for c in CHARTS):
            unlabelled.append(src.name)
            continue
        pred = predict_scene(
            model, src, features, tiling=tiling, device=dev, precision=settings.precision
        )
        classes = pred.classes if scene.full_resolution else pred.source_classes
        scorer.update(reference, classes, groups=scene_groups(src.name))
        scored.append(src.name)
        if on_prediction is not None:
            on_prediction(scene, pred, reference)
        if hasattr(src, "release"):
            src.release()
    return scorer, scored, unlabelled


def _write_tables(scorer: ChartScorer, out: Path) -> list[Path]:
    import pandas as pd

    files: list[Path] = []
    scores = scorer.compute()
    rows = [
        {
            "chart": k,
            "score": scores[k],
            "score_unrounded": scores["unrounded"][k],
            "n_pixels": scores["n_pixels"].get(k, ""),
        }
        for k in (*CHARTS, "combined")
    ]
    files.append(_csv(pd.DataFrame(rows), out / "metrics.csv"))
    per_class = []
    for chart in CHARTS:
        table = scorer.per_class(chart).reset_index()
        table.insert(0, "chart", chart)
        per_class.append(table)
    files.append(_csv(pd.concat(per_class, ignore_index=True), out / "per_class.csv"))
    for by in ("scene", "service", "month"):
        files.append(_csv(scorer.breakdown(by).reset_index(), out / f"breakdown_{by}.csv"))
    return files


def _csv(frame: Any, path: Path) -> Path:
    return write_text_atomic(path, frame.to_csv(index=False, float_format="%.6g"))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_evaluation(
    scorer: ChartScorer,
    out: str | os.PathLike[str],
    *,
    extra: dict[str, Any] | None = None,
    plots: bool = True,
) -> list[Path]:
    """Write the metrics JSON/CSV files, breakdowns and confusion plots of a scorer.

    Args:
        scorer: A filled scorer.
        out: Output folder (created).
        extra: Extra entries for ``metrics.json`` (checkpoint, data, settings).
        plots: Also draw the confusion matrices and per-class F1 bars.

    Returns:
        The files written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scores = scorer.compute()
    record: dict[str, Any] = {
        "scores": {k: scores[k] for k in (*CHARTS, "combined")},
        "unrounded": scores["unrounded"],
        "n_pixels": scores["n_pixels"],
        "per_class": {
            c: scorer.per_class(c).reset_index().to_dict(orient="records") for c in CHARTS
        },
        "breakdown": {
            by: scorer.breakdown(by).reset_index().to_dict(orient="records")
            for by in ("scene", "service", "month")
        },
        **(extra or {}),
    }
    files = [
        write_text_atomic(out / "metrics.json", json.dumps(_jsonable(record), indent=2) + "\n")
    ]
    files += _write_tables(scorer, out)
    files.append(write_text_atomic(out / "scorer.json", json.dumps(scorer.to_dict()) + "\n"))
    if plots:
        from icecontext.evaluation.plots import write_evaluation_plots

        files += write_evaluation_plots(scorer.confusions(), out)
    return files


RUN_SCORING = ScoringSettings()
"""The run's own validation tiling, on the best device, at 32-bit precision."""


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    scenes: Sequence[str] | None = None,
    settings: ScoringSettings = RUN_SCORING,
    progress: bool = True,
    plots: bool = True,
) -> EvaluationResult:
    """Score a checkpoint on whole scenes with the challenge metric.

    Args:
        checkpoint: ``best.ckpt`` or ``last.ckpt`` of a run.
        data: Folder of ``_prep.nc`` scenes (scored at 80 m), or a prepared store.
        out: Output folder; ``None`` = ``<run>/eval/<data folder name>``.
        scenes: Only these scene names.
        settings: Tiling (``None`` fields: the run's ``train.validation`` setting),
            device and precision (``auto``: bf16 on CUDA, else 32; the resolved value
            is recorded).
        progress: Progress bar over scenes.
        plots: Draw the confusion-matrix and per-class F1 figures.

    Returns:
        The scores, the scorer and the written files.

    Raises:
        ConfigError: For a missing checkpoint or a bad option.
        DataError: For unusable data, or when no scene has labels.
    """
    from icecontext.inference.checkpoint import load_checkpoint
    from icecontext.provenance import write_run_record

    loaded = load_checkpoint(checkpoint)
    cfg = loaded.config
    settings = settings.filled(cfg.train.validation)
    settings = replace(  # recorded as run
        settings, precision=resolve_precision(settings.precision, resolve_device(settings.device))
    )
    eval_scenes = open_eval_scenes(
        data, loaded.features, cfg.data.downsample, cfg.data.upsampling, scenes
    )
    scorer, scored, unlabelled = score_scenes(
        loaded.model, loaded.features, eval_scenes, settings=settings, progress=progress
    )
    if not scored:
        raise DataError(
            f"{data}: no scene has reference labels (all charts 255); test scenes need their "
            "_prep_reference.nc files beside them"
        )
    full = all(s.full_resolution for s in eval_scenes)
    out = Path(out) if out is not None else _default_out(loaded, data)
    result = EvaluationResult(
        out_dir=out,
        scores=scorer.compute(),
        scorer=scorer,
        scenes=scored,
        unlabelled=unlabelled,
        resolution_m=80 if full else 80 * cfg.data.downsample,
    )
    extra = _evaluation_record(loaded, checkpoint, data, settings, result)
    result.files = write_evaluation(scorer, out, extra=extra, plots=plots)
    write_run_record(out, cfg, cfg.seed, extra={"evaluate": extra})
    if unlabelled:
        log.warning("skipped %d scene(s) without labels: %s", len(unlabelled), unlabelled)
    return result


def _default_out(loaded: LoadedCheckpoint, data: str | os.PathLike[str]) -> Path:
    """``<run>/eval/<data folder name>`` beside the checkpoint's run."""
    return Path(loaded.path).resolve().parent.parent / "eval" / Path(data).resolve().name


def _evaluation_record(
    loaded: LoadedCheckpoint,
    checkpoint: str | os.PathLike[str],
    data: str | os.PathLike[str],
    settings: ScoringSettings,
    result: EvaluationResult,
) -> dict[str, Any]:
    """What ``metrics.json`` and the run record say about an evaluation."""
    tiling = settings.tiling(loaded.model)
    return {
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_epoch": loaded.epoch,
        "checkpoint_step": loaded.global_step,
        "data": str(Path(data).resolve()),
        "scenes": result.scenes,
        "unlabelled": result.unlabelled,
        "resolution_m": result.resolution_m,
        "features": loaded.features,
        "settings": {
            "tile": settings.tile,
            "overlap": settings.overlap,
            "margin_px": tiling.overlap,
            "batch": settings.batch,
            "precision": settings.precision,
        },
    }
