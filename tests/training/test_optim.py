"""Optimisers and schedules: decay groups, warm-up, cosine end points, plateau."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from icecontext.errors import ConfigError
from icecontext.run.config import OptimizerConfig, SchedulerConfig
from icecontext.training.optim import (
    build_optimizer,
    build_scheduler,
    lr_factor,
    parameter_groups,
    warmup_factor,
)


def _model():
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 1, 1))


def test_no_weight_decay_on_biases_and_norms():
    groups = parameter_groups(_model(), 0.1)
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in groups[0]["params"])
    assert all(p.ndim == 1 for p in groups[1]["params"])
    assert len(groups[0]["params"]) == 2 and len(groups[1]["params"]) == 4


@pytest.mark.parametrize(("name", "cls"), [("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)])
def test_build_optimizer(name, cls):
    opt = build_optimizer(parameter_groups(_model(), 0.01), OptimizerConfig(name=name, lr=0.1))
    assert isinstance(opt, cls)
    assert opt.param_groups[0]["lr"] == 0.1


def test_cosine_with_warmup_end_points():
    cfg = SchedulerConfig(name="cosine", warmup_steps=10, warmup_start=0.1, min_lr_ratio=0.05)
    assert lr_factor(0, cfg, 110) == pytest.approx(0.1)
    assert lr_factor(5, cfg, 110) == pytest.approx(0.55)
    assert lr_factor(10, cfg, 110) == pytest.approx(1.0)
    assert lr_factor(60, cfg, 110) == pytest.approx(0.05 + 0.95 * 0.5)
    assert lr_factor(110, cfg, 110) == pytest.approx(0.05)
    assert lr_factor(500, cfg, 110) == pytest.approx(0.05)


def test_scheduler_steps_the_optimizer_lr():
    opt = build_optimizer(_model().parameters(), OptimizerConfig(lr=1.0))
    sched = build_scheduler(opt, SchedulerConfig(name="cosine", min_lr_ratio=0.0), 4)
    assert sched["interval"] == "step"
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched["scheduler"].step()
    expected = [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(5)]
    assert lrs == pytest.approx(expected)


def test_plateau_and_constant():
    opt = build_optimizer(_model().parameters(), OptimizerConfig(lr=1.0))
    sched = build_scheduler(opt, SchedulerConfig(name="plateau", patience=0, factor=0.5), None)
    assert sched["monitor"] == "val/combined" and sched["interval"] == "epoch"
    s = sched["scheduler"]
    s.step(10.0)
    s.step(9.0)  # worse (mode max): reduced after patience 0
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    assert build_scheduler(opt, SchedulerConfig(name="constant"), None) is None
    assert warmup_factor(3, SchedulerConfig(warmup_steps=0)) == 1.0


def test_cosine_needs_a_horizon():
    opt = build_optimizer(_model().parameters(), OptimizerConfig())
    with pytest.raises(ConfigError, match="train.scheduler.name"):
        build_scheduler(opt, SchedulerConfig(name="cosine"), None)
