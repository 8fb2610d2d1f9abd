"""Optimisers and learning-rate schedules.

* AdamW or SGD, with weight decay applied to weights only (not to biases and
  normalisation parameters, whose decay only hurts);
* ``cosine``: linear warm-up then cosine decay to ``min_lr_ratio * lr`` at the last
  step, stepped per optimiser step (the horizon is the run's total step count);
* ``plateau``: :class:`torch.optim.lr_scheduler.ReduceLROnPlateau` on the validation
  combined score (mode ``max``), with the optional warm-up applied per step by
  :func:`warmup_factor` from the Lightning module;
* ``constant``: warm-up then constant.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import ParamsT

from icecontext.errors import ConfigError
from icecontext.run.config import OptimizerConfig, SchedulerConfig

MONITOR = "val/combined"
"""The metric that selects the best checkpoint and drives the plateau schedule."""


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split parameters into a decayed group (weights) and an undecayed one.

    Biases and every parameter of normalisation layers (1-D tensors) are not decayed.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups: list[dict[str, Any]] = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(
    params: ParamsT, cfg: OptimizerConfig, *, fused: bool = False
) -> torch.optim.Optimizer:
    """Return the optimiser ``cfg`` describes over ``params`` (groups or tensors).

    ``fused`` selects AdamW's fused kernel (for parameters on a GPU).
    """
    if cfg.name == "adamw":
        return torch.optim.AdamW(
            params,
            lr=cfg.lr,
            betas=cfg.betas,
            weight_decay=cfg.weight_decay,
            fused=True if fused else None,
        )
    return torch.optim.SGD(
        params,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


def warmup_factor(step: int, cfg: SchedulerConfig) -> float:
    """Learning-rate multiplier of the linear warm-up at optimiser step ``step`` (0-based)."""
    if cfg.warmup_steps <= 0 or step >= cfg.warmup_steps:
        return 1.0
    return cfg.warmup_start + (1.0 - cfg.warmup_start) * step / cfg.warmup_steps


def lr_factor(step: int, cfg: SchedulerConfig, total_steps: int | None) -> float:
    """Learning-rate multiplier of the ``cosine`` and ``constant`` schedules at ``step``.

    Args:
        step: Optimiser steps taken so far (0-based).
        cfg: The schedule.
        total_steps: Steps of the whole run (required by ``cosine``).
    """
    w = warmup_factor(step, cfg)
    if cfg.name != "cosine" or step < cfg.warmup_steps:
        return w
    assert total_steps is not None
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, total_steps: int | None
) -> dict[str, Any] | None:
    """Return a Lightning ``lr_scheduler`` configuration, or ``None`` for none needed.

    Args:
        optimizer: The optimiser.
        cfg: The schedule.
        total_steps: Optimiser steps of the whole run; required by ``cosine``.

    Raises:
        ConfigError: ``train.scheduler.name`` when ``cosine`` has no known horizon.
    """
    if cfg.name == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=cfg.factor, patience=cfg.patience
        )
        # strict=False: epochs without validation simply do not step it.
        return {"scheduler": plateau, "monitor": MONITOR, "interval": "epoch", "strict": False}
    if cfg.name == "cosine" and not total_steps:
        raise ConfigError(
            "train.scheduler.name",
            "cosine needs the run length in steps: set train.max_steps or train.max_epochs "
            "(a run limited only by train.max_minutes has no known horizon; use constant or "
            "plateau, or give max_steps)",
        )
    if cfg.name == "constant" and cfg.warmup_steps == 0:
        return None
    sched = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg, total_steps)
    )
    return {"scheduler": sched, "interval": "step", "frequency": 1}
