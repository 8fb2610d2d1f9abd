"""Chart whole scenes from a model file: what ``icecontext predict`` runs.

:func:`predict_scenes` loads a checkpoint (or an exported model), checks every scene
and the output folder *before* predicting anything (missing input variables, scenes
without SAR data, unwritable folders are reported by name and nothing is written),
then predicts each scene with the tiled predictor while reading its tiles straight
from the file (:class:`~icecontext.inference.streaming.StreamingNetCDFSource`), and
writes its outputs with :func:`~icecontext.inference.exports.write_scene_outputs`
(all of a scene's files or none) in a background thread while the next scene is
predicted.

Models trained on data downsampled by ``K`` run at ``K x 80 m`` and their class maps
are upsampled (nearest) to the 80 m grid, the challenge's grid, before writing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch

from icecontext.errors import ConfigError, DataError
from icecontext.inference.exports.geotiff import GeoTIFFOptions
from icecontext.inference.exports.netcdf import ExportProvenance, ProbabilityLayers
from icecontext.inference.exports.output import ExportError
from icecontext.inference.exports.per_scene import OUTPUT_FORMATS, OutputFormat
from icecontext.inference.loading import InferenceModel, load_inference_model
from icecontext.inference.predictor import (
    ConfidenceKind,
    ExtraOutputs,
    InferencePrecision,
    ScenePrediction,
    for_cpu_inference,
    has_input_data,
    predict_scene,
    resolve_overlap,
    resolve_precision,
    tile_for_margin,
)
from icecontext.inference.streaming import StreamingNetCDFSource
from icecontext.inference.tiling import TileSettings

log = logging.getLogger(__name__)

DEFAULT_TILE = 2048
"""Default tile side on a GPU (source pixels)."""

DEFAULT_CPU_TILE = 1536
"""Default tile side on a CPU: the reference preset's activations of a 2048 px tile took
the whole process to 3.0 GB for a 5000 x 5200 scene, 1536 px to 2.3 GB, for the same
work (balanced tiles, margins of tile / 16; docs/benchmarks.md)."""


def default_tile(device: torch.device) -> int:
    """:data:`DEFAULT_CPU_TILE` on a CPU, :data:`DEFAULT_TILE` elsewhere."""
    return DEFAULT_CPU_TILE if device.type == "cpu" else DEFAULT_TILE


@dataclass
class PredictSettings:
    """How :func:`predict_scenes` runs.

    Attributes:
        tile: Tile side in pixels at the model's resolution (``None``:
            :func:`default_tile`).
        overlap: Context margin per side in pixels, ``"auto"`` or ``"rf"``
            (:func:`~icecontext.inference.predictor.resolve_overlap`).
        batch: Tiles per forward pass (``None``: 1 on CPU, 4 on a GPU).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``...
        precision: ``auto`` (bf16 on CUDA and on CPUs with native bf16, else 32; 32
            for an ONNX model), ``32``, ``bf16`` (autocast bfloat16) or ``16`` (float16,
            CUDA).
        formats: Outputs per scene (``netcdf``, ``geotiff``, ``geotiff_3413``, ``quicklook``).
        crs: Target CRS of the ``geotiff_3413`` (map-projected) GeoTIFFs.
        probabilities: Write per-class probabilities into the NetCDF file.
        confidence: Write a confidence map per classification head (``max``
            probability or ``entropy``), or ``None``.
        progress: Show a progress bar over the tiles of each scene.
    """

    tile: int | None = None
    overlap: int | Literal["auto", "rf"] = "auto"
    batch: int | None = None
    device: str = "auto"
    precision: InferencePrecision = "auto"
    formats: Sequence[OutputFormat] = ("netcdf", "geotiff", "quicklook")
    crs: str = "EPSG:3413"
    probabilities: bool = False
    confidence: ConfidenceKind | None = None
    progress: bool = True


@dataclass
class ScenePredictionResult:
    """One predicted scene.

    Attributes:
        name: Scene name.
        files: Output format -> written files.
        seconds: Prediction wall time (without writing).
        tiles: Tiles run.
        shape: Grid the model ran on.
        full_shape: 80 m grid of the outputs.
    """

    name: str
    files: dict[str, list[Path]]
    seconds: float
    tiles: int
    shape: tuple[int, int]
    full_shape: tuple[int, int]


@dataclass
class PredictRun:
    """What :func:`predict_scenes` did.

    Attributes:
        model: The loaded model.
        tile: Tile side used.
        overlap: Margin used.
        batch: Tiles per forward pass.
        device: Device used.
        precision: Precision used (``auto`` resolved).
        scenes: Per-scene results.
    """

    model: InferenceModel
    tile: int
    overlap: int
    batch: int
    device: torch.device
    precision: InferencePrecision = "32"
    scenes: list[ScenePredictionResult] = field(default_factory=list)


MIN_TILE = 64
"""Smallest ``--tile`` accepted: smaller tiles are mostly context margin and padding."""


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the device named.

    Raises:
        ConfigError: ``--device`` for a name torch does not know, or CUDA asked for
            where no GPU is visible.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(
            "--device", f"unknown device '{device}'; use auto, cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", f"'{device}' asked but no CUDA GPU is visible")
    return dev


def check_output_folder(out: str | os.PathLike[str]) -> Path:
    """Create ``out`` and check a file can be written there.

    Raises:
        ExportError: Naming the folder when it cannot be created or written.
    """
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".icecontext-write-test-"):
            pass
    except OSError as exc:
        raise ExportError(
            f"output folder {folder} is not writable ({exc.strerror or exc}); choose another --out"
        ) from exc
    return folder


ScenePaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def collect_scenes(scenes: ScenePaths) -> dict[str, Path]:
    """Scene name -> file for scene files and folders of ``_prep.nc`` files."""
    from icecontext.data.store.prepare import collect_scene_files

    return collect_scene_files(scenes)


def check_formats(formats: Sequence[str]) -> list[OutputFormat]:
    """Validate output format names.

    Raises:
        ConfigError: ``--formats`` naming the unknown format.
    """
    chosen = [f.strip() for f in formats if f.strip()]
    unknown = [f for f in chosen if f not in OUTPUT_FORMATS]
    if unknown or not chosen:
        raise ConfigError(
            "--formats",
            f"unknown format(s) {unknown or chosen}; choose from {list(OUTPUT_FORMATS)}",
        )
    return cast(list[OutputFormat], chosen)


def open_scene_source(path: Path, model: InferenceModel) -> StreamingNetCDFSource:
    """Open one scene for a model and check it can be predicted.

    Raises:
        SceneFormatError: A variable the model needs is missing (file, variable and
            model named).
        DataError: The scene has no SAR data at all (every pixel masked).
    """
    source = StreamingNetCDFSource(
        path,
        model.features,
        model.downsample,
        model.upsampling,  # type: ignore[arg-type]
        needed_by=f"the model {model.path.name} (features {', '.join(model.features)})",
    )
    try:
        source.check_features(model.features)
        if not has_input_data(source):
            raise DataError(
                f"{path}: every pixel is masked (no SAR data: nersc_sar_primary is 0 or NaN "
                "everywhere); nothing to predict"
            )
    except BaseException:
        source.close()
        raise
    return source


@contextlib.contextmanager
def tile_progress(name: str, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar over a scene's tiles, as a ``progress(done, total)`` callback."""
    from tqdm.auto import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=name, unit="tile", disable=not enabled, leave=False)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def full_resolution_extras(
    prediction: ScenePrediction,
) -> tuple[dict[str, np.ndarray] | None, dict[str, np.ndarray] | None]:
    """Probabilities and confidence maps of a prediction on the 80 m grid."""
    probs = conf = None
    if prediction.probabilities is not None:
        probs = {k: prediction.upsample(v) for k, v in prediction.probabilities.items()}
    if prediction.confidence is not None:
        conf = {k: prediction.upsample(v) for k, v in prediction.confidence.items()}
    return probs, conf


def prepare_prediction(
    model_path: str | os.PathLike[str],
    scenes: ScenePaths,
    s: PredictSettings,
    model: InferenceModel | None = None,
) -> tuple[InferenceModel, int, int, int, Any, InferencePrecision, dict[str, Path]]:
    """Check the options, load the model and check every scene, before anything is written.

    Shared by ``predict`` and ``submission``.

    Returns:
        ``(model, tile, overlap, batch, device, precision, scene files by name)``, the
        precision resolved (always 32 for ONNX).

    Raises:
        ConfigError: Bad tile, batch, overlap or device.
        SceneFormatError: A scene lacks a variable the model needs.
        DataError: A scene has no SAR data.
    """
    device = resolve_device(s.device)
    if s.tile is not None and s.tile < MIN_TILE:
        raise ConfigError("--tile", f"must be at least {MIN_TILE} pixels, got {s.tile}")
    if s.batch is not None and s.batch < 1:
        raise ConfigError("--batch", f"must be >= 1 tile, got {s.batch}")
    if s.overlap not in ("auto", "rf"):
        resolve_overlap(s.overlap, None, 1)  # a bad number fails before the model loads
    loaded = model or load_inference_model(model_path, device)
    if loaded.kind == "onnx" and s.precision not in ("32", "auto"):
        raise ConfigError(
            "--precision",
            f"{s.precision} applies to torch models; an ONNX model runs in float32 "
            "(use --precision 32, or the checkpoint or TorchScript export)",
        )
    precision = "32" if loaded.kind == "onnx" else resolve_precision(s.precision, device)
    loaded.model.to(device).eval()
    if loaded.kind == "checkpoint":
        for_cpu_inference(loaded.model, device)
    tile = s.tile or default_tile(device)
    overlap = resolve_overlap(s.overlap, loaded.receptive_field, tile)
    grown = tile_for_margin(tile, overlap) if s.overlap == "rf" else tile
    if grown != tile:
        tile = grown
        log.info(
            "--overlap rf: tiles of %d px so that a %d px margin leaves a core of two thirds "
            "(a scene up to that size is one single pass)",
            tile,
            overlap,
        )
    batch = s.batch or (1 if device.type == "cpu" else 4)
    files = collect_scenes(scenes)
    for path in files.values():
        open_scene_source(path, loaded).close()
    return loaded, tile, overlap, batch, device, precision, files


def predict_scenes(
    model_path: str | os.PathLike[str],
    scenes: ScenePaths,
    out: str | os.PathLike[str],
    settings: PredictSettings | None = None,
    *,
    model: InferenceModel | None = None,
) -> PredictRun:
    """Predict whole scenes and write their chart files.

    Args:
        model_path: ``best.ckpt`` of a run or ``model.pt`` of ``icecontext export``.
        scenes: ``_prep.nc`` files and/or folders of them.
        out: Output folder.
        settings: Tiling, device and output options.
        model: An already loaded model (``model_path`` is then only recorded); on a
            CPU a torch model is put in the channels-last layout, in place.

    Returns:
        The settings used and the files written per scene.

    Raises:
        ConfigError: Bad options (tile, batch, formats, device).
        SceneFormatError: A scene lacks a variable the model needs.
        DataError: A scene has no SAR data.
        ExportError: The output folder cannot be written.
        No output file is written when any scene fails these checks.
    """
    s = settings or PredictSettings()
    s = replace(s, formats=check_formats(s.formats))
    if "geotiff_3413" in s.formats:
        from icecontext.inference.exports.geotiff import check_crs

        check_crs(s.crs)
    loaded, tile, overlap, batch, device, precision, files = prepare_prediction(
        model_path, scenes, s, model
    )
    folder = check_output_folder(out)

    run = PredictRun(loaded, tile, overlap, batch, device, precision)
    provenance = export_provenance(model_path, run)
    # Scene i's files are written in a background thread while scene i + 1 is predicted
    # (the accelerator does not wait for compression and disk). One write in flight at
    # most: memory holds at most two scenes' outputs, and a failed write stops the run
    # at the next scene. The with-block waits for the last write, also on an error.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="icecontext-write") as writer:
        pending: Future[ScenePredictionResult] | None = None
        for name, path in files.items():
            source = open_scene_source(path, run.model)
            try:
                pred = _predict_one(run, name, source, s)
            except BaseException:
                source.close()
                raise
            if pending is not None:
                run.scenes.append(pending.result())
            pending = writer.submit(_write_one, folder, name, source, pred, s, provenance)
        if pending is not None:
            run.scenes.append(pending.result())
    return run


def export_provenance(model_path: str | os.PathLike[str], run: PredictRun) -> ExportProvenance:
    """What the chart files of a run record: checkpoint, config, model and tiling."""
    return ExportProvenance(
        checkpoint=Path(model_path).resolve(),
        config=_config_of(run.model),
        attrs={
            "model_kind": run.model.kind,
            "features": " ".join(run.model.features),
            "downsample": run.model.downsample,
            "tile": run.tile,
            "overlap": run.overlap,
            "stitching": "central crop (tile cores)",
            "precision": run.precision,
            "device": str(run.device),
        },
    )


def _predict_one(
    run: PredictRun, name: str, source: StreamingNetCDFSource, s: PredictSettings
) -> ScenePrediction:
    """Predict one scene, read tile by tile from its file."""
    with tile_progress(name, s.progress) as update:
        pred = predict_scene(
            run.model.model,
            source,
            run.model.features,
            tiling=TileSettings(tile=run.tile, overlap=run.overlap, batch=run.batch),
            device=run.device,
            precision=run.precision,
            outputs=ExtraOutputs(
                probabilities=s.probabilities,
                probability_dtype="uint8",
                confidence=s.confidence,
            ),
            progress=update,
        )
    log.info("%s: %d tiles in %.1f s", name, pred.tiles, pred.seconds)
    return pred


def _write_one(
    folder: Path,
    name: str,
    source: StreamingNetCDFSource,
    pred: ScenePrediction,
    s: PredictSettings,
    provenance: ExportProvenance,
) -> ScenePredictionResult:
    """Write one scene's outputs and close its source (runs in the writer thread)."""
    from icecontext.inference.exports.per_scene import write_scene_outputs

    try:
        probs, conf = full_resolution_extras(pred)
        written = write_scene_outputs(
            folder,
            source.dataset,
            pred.classes,
            formats=s.formats,
            layers=ProbabilityLayers(
                probabilities=probs, confidence=s.confidence or "none", confidences=conf
            ),
            geotiff=GeoTIFFOptions(crs=s.crs),
            provenance=provenance,
        )
    finally:
        source.close()
    return ScenePredictionResult(
        name=name,
        files=written,
        seconds=pred.seconds,
        tiles=pred.tiles,
        shape=pred.shape,
        full_shape=pred.full_shape,
    )


def write_predict_record(
    out: str | os.PathLike[str],
    model_path: str | os.PathLike[str],
    run: PredictRun,
    formats: Sequence[str],
) -> None:
    """Write ``config.yaml`` (the model's run config) and ``provenance.json`` of a run.

    The provenance's ``predict`` entry names the model file, the scenes and the
    settings used (tile, overlap, batch, device, precision, formats).
    """
    from icecontext.provenance import write_run_record

    cfg = run.model.config if hasattr(run.model.config, "model_dump") else None
    write_run_record(
        out,
        cfg,
        getattr(cfg, "seed", None),
        extra={
            "predict": {
                "checkpoint": str(Path(model_path).resolve()),
                "scenes": [s.name for s in run.scenes],
                "tile": run.tile,
                "overlap": run.overlap,
                "batch": run.batch,
                "device": str(run.device),
                "precision": run.precision,
                "formats": list(formats),
            }
        },
    )


def _config_of(model: InferenceModel) -> Any:
    if model.config is None:
        return None
    if isinstance(model.config, dict):
        import yaml

        return yaml.safe_dump(model.config, sort_keys=False)
    return model.config
