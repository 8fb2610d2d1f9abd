"""Parameter and FLOP summary: parts add up, FLOPs follow the convolution formula."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from icecontext.models.config import ModelConfig
from icecontext.models.multitask import build_model
from icecontext.models.summary import format_summary, summarise


def _cfg(**kw: object) -> ModelConfig:
    return ModelConfig.model_validate(
        {"aspp": {"rates": [2, 4], "channels": 8}, "project_channels": 8, **kw}
    )


@pytest.mark.parametrize("shared", [False, True])
def test_parts_add_up_to_the_total(shared: bool) -> None:
    model = build_model(_cfg(shared_decoder=shared), 5, seed=0)
    s = summarise(model, 64, 96, batch=2)
    assert s.input_shape == (2, 5, 64, 96)
    parts = [r for r in s.rows if r.part.split()[0] in ("encoder", "decoder", "head")]
    assert (
        sum(r.params for r in parts) == s.total.params == sum(p.numel() for p in model.parameters())
    )
    assert sum(r.flops for r in parts) == s.total.flops > 0
    decoders = [r for r in s.rows if r.part.startswith("decoder ")]
    assert len(decoders) == (1 if shared else 3)
    text = format_summary(s)
    assert f"{s.total.params:,d}" in text and "encoder" in text and "head FLOE" in text


def test_head_flops_follow_the_convolution_formula() -> None:
    model = build_model(_cfg(), 3, seed=0)
    h, w, b = 64, 96, 2
    s = summarise(model, h, w, batch=b)
    cells = b * (h // 16) * (w // 16)
    # a 1x1 conv: 2 FLOPs per multiply-add, in * out per cell
    assert s.row("head SOD").flops == 2 * cells * 8 * 6
    assert s.row("head SIC").params == 8 * 1 + 1
    # FLOPs scale with the number of pixels
    s2 = summarise(model, 2 * h, 2 * w, batch=b)
    assert s2.total.flops == 4 * s.total.flops


def test_summary_does_not_touch_the_model() -> None:
    model = build_model(_cfg(), 3, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summarise(model, 32, 32)
    after = model.state_dict()
    assert all(after[k].device.type == "cpu" and torch.equal(before[k], after[k]) for k in before)
    assert isinstance(model.encoder.conv1, nn.Conv2d)
