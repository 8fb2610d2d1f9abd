"""Checkpoints: atomic writes, the icecontext record inside them, and loading a model.

Every Lightning checkpoint written by :func:`icecontext.training.fit.train` carries an
``"icecontext"`` entry: the resolved run configuration, the input channel names and
count, the package version, and (for ``best.ckpt``) the validation scores that made it
best. :func:`load_checkpoint` rebuilds the network from that entry alone, so
``icecontext evaluate`` and ``predict`` need only the checkpoint file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from icecontext.atomic import atomic_path
from icecontext.errors import ConfigError, DataError

if TYPE_CHECKING:
    from icecontext.run.config import RunConfig

CHECKPOINT_KEY = "icecontext"
MODEL_PREFIX = "model."


@dataclass
class LoadedCheckpoint:
    """A network rebuilt from a checkpoint.

    Attributes:
        model: The multi-task network (eval mode, on ``map_location``).
        config: The run configuration it was trained with.
        features: Input channel names in model order.
        path: The checkpoint file.
        epoch: Epoch at which it was saved.
        global_step: Optimiser steps at which it was saved.
        scores: Validation scores recorded with it (may be empty).
        record: The raw ``"icecontext"`` entry.
    """

    model: torch.nn.Module
    config: Any
    features: list[str]
    path: Path
    epoch: int
    global_step: int
    scores: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


def checkpoint_record(
    cfg: RunConfig,
    features: Sequence[str],
    scores: Mapping[str, Any] | None = None,
    monitor: str | None = None,
) -> dict[str, Any]:
    """The ``"icecontext"`` entry of a checkpoint: all :func:`load_checkpoint` rebuilds from.

    Args:
        cfg: The resolved run configuration.
        features: Input channel names in model order.
        scores: Validation scores to record with it.
        monitor: The score that chooses ``best.ckpt`` (training's checkpoints).
    """
    from icecontext import __version__

    record: dict[str, Any] = {
        "config": cfg.model_dump(mode="json"),
        "features": list(features),
        "in_channels": len(features),
        "version": __version__,
    }
    if monitor is not None:
        record["monitor"] = monitor
    record["scores"] = dict(scores or {})
    return record


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    cfg: RunConfig,
    features: Sequence[str],
    *,
    epoch: int = 0,
    global_step: int = 0,
) -> Path:
    """Write ``model`` as a checkpoint that ``predict``, ``evaluate`` and ``export`` read.

    Training writes its own through Lightning; this is for a network made otherwise
    (tests, benchmarks, a model trained outside :func:`icecontext.train`). Written
    atomically; the folder must exist.
    """
    state = {f"{MODEL_PREFIX}{k}": v for k, v in model.state_dict().items()}
    ckpt = {
        "epoch": epoch,
        "global_step": global_step,
        "state_dict": state,
        CHECKPOINT_KEY: checkpoint_record(cfg, features),
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint file written by icecontext.

    Checkpoints are pickles: only load files you trust (your own runs).

    Raises:
        ConfigError: ``--checkpoint`` if the file does not exist.
        DataError: If it cannot be read or is not an icecontext checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("--checkpoint", f"file '{path}' does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for truncated/foreign files
        raise DataError(f"{path}: cannot be read as a PyTorch checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict) or CHECKPOINT_KEY not in ckpt or "state_dict" not in ckpt:
        raise DataError(
            f"{path}: not an icecontext training checkpoint (no '{CHECKPOINT_KEY}' record with "
            "the run configuration); use best.ckpt or last.ckpt of an 'icecontext train' run"
        )
    return ckpt


def resume_point(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(epoch, global step)`` of a run's resume checkpoint, checking that it reads.

    Memory-mapped, so the weights are not read; a truncated or corrupted ``last.ckpt``
    is reported before any training starts.

    Raises:
        DataError: If the file cannot be read as a training checkpoint (naming it and
            what to do).
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        return int(ckpt["epoch"]), int(ckpt["global_step"])
    except Exception as exc:  # torch raises many types for truncated/foreign files
        raise DataError(
            f"{path}: the run's resume checkpoint cannot be read ({type(exc).__name__}: "
            f"{exc}); delete it to train the run from its start (best.ckpt is kept), or "
            "choose another output.name"
        ) from exc


def model_state_dict(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Return the network's state dict from a Lightning checkpoint (prefix removed)."""
    return {
        k[len(MODEL_PREFIX) :]: v
        for k, v in ckpt["state_dict"].items()
        if k.startswith(MODEL_PREFIX)
    }


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> LoadedCheckpoint:
    """Rebuild the trained network of a checkpoint.

    Args:
        path: ``best.ckpt`` / ``last.ckpt`` of a run.
        map_location: Device to load the tensors to.

    Returns:
        The network with the checkpoint's weights, in eval mode, and its configuration.

    Raises:
        ConfigError: If the file is missing.
        DataError: If it is not an icecontext checkpoint or its weights do not fit the
            configuration it records.
    """
    from icecontext.models.multitask import build_model
    from icecontext.run.config import RunConfig

    path = Path(path)
    ckpt = read_checkpoint(path, map_location)
    record = ckpt[CHECKPOINT_KEY]
    try:
        cfg = RunConfig.model_validate(record["config"])
    except Exception as exc:
        raise DataError(
            f"{path}: the configuration stored in the checkpoint is invalid: {exc}"
        ) from exc
    features = list(record["features"])
    # Built on the meta device (no random initialisation: 10x faster for ResNet-152) and
    # without the pretrained file the run started from (its weights are in the checkpoint,
    # and the file need not exist where the checkpoint is used); the weights are assigned.
    encoder = cfg.model.encoder.model_copy(update={"pretrained": None})
    with torch.device("meta"):
        model = build_model(cfg.model.model_copy(update={"encoder": encoder}), len(features))
    try:
        model.load_state_dict(model_state_dict(ckpt), strict=True, assign=True)
    except RuntimeError as exc:
        raise DataError(
            f"{path}: weights do not fit the stored model configuration: {exc}"
        ) from exc
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise DataError(
            f"{path}: the model holds tensors the checkpoint does not restore (a buffer kept "
            "out of the state dict?); it cannot be rebuilt from the file alone"
        )
    # assigned tensors keep the file's dtype: float32 like a freshly built model (the
    # memory layout stays, so a run trained channels-last is charted channels-last)
    model.float().to(map_location).eval()
    return LoadedCheckpoint(
        model=model,
        config=cfg,
        features=features,
        path=path,
        epoch=int(ckpt.get("epoch", -1)),
        global_step=int(ckpt.get("global_step", -1)),
        scores=dict(record.get("scores") or {}),
        record=record,
    )
