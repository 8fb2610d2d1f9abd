"""Test builder: a tiny checkpoint saved the way training saves it.

The ``predict``, ``submission``, ``explain`` and ``export`` tests share it (it lives in
``tests/`` because it needs the run configuration, which the package's scene builders in
:mod:`icecontext.testing` stay below). The record layout is the one
:func:`icecontext.inference.checkpoint.load_checkpoint` reads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

TINY_FEATURES: tuple[str, ...] = ("sar", "incidence", "amsr2:18.7")


def save_tiny_checkpoint(
    path: str | os.PathLike[str],
    *,
    features: Sequence[str] = TINY_FEATURES,
    downsample: int = 1,
    seed: int = 0,
    sic_mode: Literal["regression", "classification"] = "regression",
    rates: Sequence[int] = (1, 2),
    data_root: str | os.PathLike[str] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    model: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of a small random model (ResNet-18 to layer2, ASPP rates 1/2).

    Args:
        path: The ``.ckpt`` file to write (folders are created).
        features: Feature selectors of ``data.features``.
        downsample: ``data.downsample``.
        seed: Model initialisation seed.
        sic_mode: ``model.sic_mode``.
        rates: ``model.aspp.rates``.
        data_root: ``data.root`` (default: the checkpoint's folder).
        run_dir: The run folder recorded as ``output`` (default: ``<folder>/run``).
        model: A whole ``model`` section instead of the tiny one (e.g. a preset's).

    Returns:
        ``path``.
    """
    from icecontext.inference.checkpoint import save_checkpoint
    from icecontext.models.multitask import build_model
    from icecontext.run.config import RunConfig

    path = Path(path)
    run = Path(run_dir) if run_dir is not None else path.parent / "run"
    cfg = RunConfig.model_validate(
        {
            "seed": seed,
            "data": {
                "root": str(data_root if data_root is not None else path.parent),
                "features": list(features),
                "downsample": downsample,
            },
            "model": model
            or {
                "encoder": {"name": "resnet18", "depth": "layer2", "output_stride": 8},
                "aspp": {"rates": list(rates), "channels": 8, "pooling": "none", "dropout": 0.0},
                "sic_mode": sic_mode,
            },
            "train": {"validation": {"tile": 128}},
            "output": {"root": str(run.parent), "name": run.name},
        }
    )
    channels = cfg.data.channels
    net = build_model(cfg.model, len(channels), seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, net, cfg, channels, epoch=1, global_step=10)
    return path
