"""The model a prediction runs: a training checkpoint or an exported TorchScript file.

:func:`load_inference_model` accepts

* a training checkpoint (``best.ckpt`` / ``last.ckpt``), rebuilt by the training
  package's one loader, :func:`icecontext.inference.checkpoint.load_checkpoint`;
* a TorchScript file written by ``icecontext export`` (``model.pt``) with its metadata
  JSON beside it (``model.json``: features, downsampling, receptive field, ...);
* an ONNX file of ``icecontext export --format onnx`` (``model.onnx`` with
  ``model.onnx.json``), run by onnxruntime.

Both give an :class:`InferenceModel`: the network plus everything the predictor needs
to feed it (channel names and order, data downsampling ``K``, 2 km upsampling mode) and
the tiling defaults of the run.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from icecontext.errors import ConfigError, DataError
from icecontext.inference.predictor import receptive_field_of

ModelKind = Literal["checkpoint", "torchscript", "onnx"]


@dataclass
class InferenceModel:
    """A network ready for full-scene prediction.

    Attributes:
        model: The network (eval mode).
        features: Input channel names in model order.
        downsample: Data downsampling ``K`` the model was trained at.
        upsampling: 2 km -> SAR-grid upsampling mode it was trained with.
        path: The file it came from.
        kind: ``"checkpoint"`` or ``"torchscript"``.
        receptive_field: Theoretical receptive field in input pixels (``None`` =
            global pooling, unbounded).
        config: The run configuration (checkpoints; the metadata for exports).
        tile: The run's validation tile side (default tile of ``predict``).
        batch: The run's validation batch (tiles per forward pass).
        metadata: Everything recorded about the model (for provenance attributes).
    """

    model: nn.Module
    features: list[str]
    downsample: int
    upsampling: str
    path: Path
    kind: ModelKind
    receptive_field: int | None
    config: Any = None
    tile: int | None = None
    batch: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def metadata_path(model_path: str | os.PathLike[str]) -> Path:
    """The metadata JSON of an exported model.

    ``model.pt`` -> ``model.json``; ``model.onnx`` -> ``model.onnx.json``, so that both
    exports of a checkpoint can share a folder.
    """
    path = Path(model_path)
    if path.suffix == ".onnx":
        return path.with_name(path.name + ".json")
    return path.with_suffix(".json")


def is_exported(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an ``icecontext export`` file (its metadata JSON is beside it)."""
    meta = metadata_path(path)
    if not meta.is_file() or Path(path).suffix == ".json":
        return False
    try:
        return json.loads(meta.read_text()).get("format") in ("torchscript", "onnx")
    except (OSError, ValueError):
        return False


def load_inference_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> InferenceModel:
    """Load a checkpoint or an exported TorchScript model for prediction.

    Args:
        path: ``best.ckpt`` of a run, or ``model.pt`` of ``icecontext export``.
        device: Where to put the weights.

    Raises:
        ConfigError: ``--checkpoint`` if the file does not exist.
        DataError: If it is neither an icecontext checkpoint nor an export, or an export
            without its metadata JSON (named, with what to do).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("--checkpoint", f"file '{path}' does not exist")
    if is_exported(path):
        return _load_exported(path, device)
    meta = metadata_path(path)
    # an export moved without its side file (a .pt may also be a plain torch.save)
    if not meta.is_file() and (
        path.suffix == ".onnx" or (path.suffix == ".pt" and _is_torchscript(path))
    ):
        raise DataError(
            f"{path} found without {meta.name} (the features, resolution and receptive "
            f"field of the export); copy {meta.name} from the export folder beside it, "
            "or re-run 'icecontext export'"
        )
    from icecontext.inference.checkpoint import load_checkpoint

    loaded = load_checkpoint(path, map_location=device)
    cfg = loaded.config
    model = loaded.model
    rf = receptive_field_of(model)
    return InferenceModel(
        model=model,
        features=list(loaded.features),
        downsample=int(cfg.data.downsample),
        upsampling=str(cfg.data.upsampling),
        path=path,
        kind="checkpoint",
        receptive_field=rf,
        config=cfg,
        tile=int(cfg.train.validation.tile),
        batch=int(cfg.train.validation.batch),
        metadata={
            "epoch": loaded.epoch,
            "global_step": loaded.global_step,
            "version": loaded.record.get("version", ""),
        },
    )


def _is_torchscript(path: Path) -> bool:
    """Whether a file is a TorchScript archive (a zip holding ``*/code/``)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _load_exported(path: Path, device: str | torch.device) -> InferenceModel:
    meta_file = metadata_path(path)
    meta = json.loads(meta_file.read_text())
    missing = [k for k in ("features", "downsample", "upsampling") if k not in meta]
    if missing:
        raise DataError(f"{meta_file}: metadata lacks {missing}; re-run 'icecontext export'")
    if meta.get("format") == "onnx":
        from icecontext.inference.onnx_model import load_onnx_model

        model: nn.Module = load_onnx_model(path, meta, device)
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # jit.load: deprecated in 2.14
                model = torch.jit.load(str(path), map_location=device)
        except Exception as exc:  # torch raises RuntimeError/ValueError for foreign files
            raise DataError(f"{path}: cannot be loaded as TorchScript: {exc}") from exc
    model.eval()
    rf = meta.get("receptive_field_px")
    return InferenceModel(
        model=model,
        features=list(meta["features"]),
        downsample=int(meta["downsample"]),
        upsampling=str(meta["upsampling"]),
        path=path,
        kind="onnx" if meta.get("format") == "onnx" else "torchscript",
        receptive_field=None if rf is None else int(rf),
        config=meta.get("config"),
        tile=meta.get("tile"),
        batch=meta.get("batch"),
        metadata=meta,
    )
