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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from icecontext.atomic import write_text_atomic
from icecontext.data.io.format import CHART_FILL, CHARTS
from icecontext.errors import DataError
from icecontext.evaluation import ChartScorer, scene_groups
from icecontext.inference.predictor import (
    InferencePrecision,
    model_overlap,
    predict_scene,
    resolve_precision,
)
from icecontext.inference.scenes import resolve_device
from icecontext.inference.tiling import TileSettings

log = logging.getLogger(__name__)

DeviceChoice = Literal["auto", "cpu", "cuda"] | str


@dataclass
class EvalScene:
    """One scene to evaluate: its source and how to read its reference charts.

    Attributes:
        source: The ``SceneSource`` the model reads.
        reference: Returns ``{"SIC", "SOD", "FLOE"}`` uint8 reference charts at
            ``resolution`` (255 = masked).
        full_resolution: Whether the reference is at 80 m (else at the source's grid).
    """

    source: Any
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
    upsampling: str = "nearest",
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
            src = store_source(store, name, upsampling)  # type: ignore[arg-type]
            if src.has_full_charts():
                out.append(EvalScene(src, _full_reference(src), True))
            else:
                log.warning(
                    "%s: no 80 m charts in this store (prepared before store format 2): "
                    "scored at %d m against its downsampled charts",
                    src.where,
                    80 * downsample,
                )
                out.append(EvalScene(src, _source_reference(src), False))
    else:
        files = collect_scene_files(path)
        names = sorted(files) if scenes is None else list(scenes)
        for name in names:
            if name not in files:
                raise DataError(f"scene '{name}' is not in {path}")
            src = NetCDFSource(files[name], list(features), downsample, upsampling)  # type: ignore[arg-type]
            out.append(EvalScene(src, _netcdf_reference(files[name]), True))
    if not out:
        raise DataError(f"{path}: no scene to evaluate")
    return out


def score_scenes(
    model: torch.nn.Module,
    features: Sequence[str],
    scenes: Sequence[EvalScene],
    *,
    tile: int = 512,
    overlap: int | Literal["auto", "rf"] = "auto",
    batch: int = 4,
    device: DeviceChoice = "auto",
    precision: InferencePrecision = "32",
    on_prediction: Callable[[EvalScene, Any, dict[str, np.ndarray]], None] | None = None,
    progress: bool = False,
) -> tuple[ChartScorer, list[str], list[str]]:
    """Predict and score scenes one at a time (memory: one scene).

    Args:
        model: The network.
        features: Its input channels.
        scenes: Scenes with their references.
        tile: Tile side (pixels at the data's resolution).
        overlap: Context margin, or ``auto`` (see :func:`auto_overlap`).
        batch: Tiles per forward pass.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``...
        precision: Inference precision (``32``, ``bf16``, ``16``).
        on_prediction: Called with ``(scene, prediction, reference)`` after each scene
            (e.g. to draw maps).
        progress: Show a progress bar over scenes.

    Returns:
        ``(scorer, scored scene names, unlabelled scene names)``.
    """
    from tqdm.auto import tqdm

    dev = resolve_device(device)
    model = model.to(dev).eval()
    margin = model_overlap(model, overlap, tile)
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
            model,
            src,
            features,
            tiling=TileSettings(tile=tile, overlap=margin, batch=batch),
            device=dev,
            precision=precision,
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


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    scenes: Sequence[str] | None = None,
    tile: int | None = None,
    overlap: int | Literal["auto", "rf"] | None = None,
    batch: int | None = None,
    device: DeviceChoice = "auto",
    precision: InferencePrecision = "32",
    progress: bool = True,
    plots: bool = True,
) -> EvaluationResult:
    """Score a checkpoint on whole scenes with the challenge metric.

    Args:
        checkpoint: ``best.ckpt`` or ``last.ckpt`` of a run.
        data: Folder of ``_prep.nc`` scenes (scored at 80 m), or a prepared store.
        out: Output folder; ``None`` = ``<run>/eval/<data folder name>``.
        scenes: Only these scene names.
        tile: Tile side (default: the run's ``train.validation.tile``).
        overlap: Context margin (default: the run's setting).
        batch: Tiles per forward pass (default: the run's setting).
        device: ``auto``, ``cpu``, ``cuda``...
        precision: ``auto`` (bf16 on CUDA, else 32), ``32``, ``bf16`` or ``16`` (CUDA);
            the resolved value is recorded.
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
    val = cfg.train.validation
    tile = tile or val.tile
    overlap = overlap if overlap is not None else val.overlap
    batch = batch or val.batch
    precision = resolve_precision(precision, resolve_device(device))  # recorded as run
    eval_scenes = open_eval_scenes(
        data, loaded.features, cfg.data.downsample, cfg.data.upsampling, scenes
    )
    scorer, scored, unlabelled = score_scenes(
        loaded.model,
        loaded.features,
        eval_scenes,
        tile=tile,
        overlap=overlap,
        batch=batch,
        device=device,
        precision=precision,
        progress=progress,
    )
    if not scored:
        raise DataError(
            f"{data}: no scene has reference labels (all charts 255); test scenes need their "
            "_prep_reference.nc files beside them"
        )
    full = all(s.full_resolution for s in eval_scenes)
    resolution = 80 if full else 80 * cfg.data.downsample
    if out is None:
        out = Path(loaded.path).resolve().parent.parent / "eval" / Path(data).resolve().name
    out = Path(out)
    extra = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_epoch": loaded.epoch,
        "checkpoint_step": loaded.global_step,
        "data": str(Path(data).resolve()),
        "scenes": scored,
        "unlabelled": unlabelled,
        "resolution_m": resolution,
        "features": loaded.features,
        "settings": {
            "tile": tile,
            "overlap": overlap,
            "margin_px": model_overlap(loaded.model, overlap, tile),
            "batch": batch,
            "precision": precision,
        },
    }
    files = write_evaluation(scorer, out, extra=extra, plots=plots)
    write_run_record(out, cfg, cfg.seed, extra={"evaluate": extra})
    if unlabelled:
        log.warning("skipped %d scene(s) without labels: %s", len(unlabelled), unlabelled)
    return EvaluationResult(
        out_dir=out,
        scores=scorer.compute(),
        scorer=scorer,
        scenes=scored,
        unlabelled=unlabelled,
        resolution_m=resolution,
        files=files,
    )
