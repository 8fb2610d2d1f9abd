"""Receptive fields: the formula, its agreement with measured gradient extents, and the ERF."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from icecontext.models.config import ModelConfig
from icecontext.models.multitask import build_model
from icecontext.models.receptive_field import (
    ERFSettings,
    LayerGeometry,
    chain_receptive_field,
    erf_width,
    main_path,
    measure_receptive_fields,
    pixels_to_km,
    positive_surrogate,
    theoretical_receptive_fields,
)


def _model(section: dict[str, Any], in_ch: int = 2) -> Any:
    base: dict[str, Any] = {"aspp": {"channels": 4, "dropout": 0.0}, "project_channels": 4}
    merged = {**base, **section, "aspp": {**base["aspp"], **section.get("aspp", {})}}
    return build_model(ModelConfig.model_validate(merged), in_ch, seed=0)


def test_chain_formula_on_hand_computed_examples() -> None:
    layers = [
        LayerGeometry("a", 3),  # 1 + 2 = 3
        LayerGeometry("b", 3, stride=2),  # 3 + 2 = 5, jump 2
        LayerGeometry("c", 3, dilation=2),  # 5 + 2*2*2 = 13
        LayerGeometry("d", 1),  # unchanged
        LayerGeometry("e", 7, stride=2),  # 13 + 6*2 = 25, jump 4
    ]
    assert chain_receptive_field(layers) == (25, 4)
    assert chain_receptive_field([LayerGeometry("x", 5)], rf=10, jump=3) == (22, 3)


def test_main_path_skips_shortcuts() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 1, 3, stride=2, padding=1)
            self.conv2 = nn.Conv2d(1, 1, 3, padding=2, dilation=2)
            self.downsample = nn.Sequential(nn.Conv2d(1, 1, 1, stride=2))

    path = main_path(Block(), "b")
    assert [(g.name, g.kernel, g.stride, g.dilation) for g in path] == [
        ("b.conv1", 3, 2, 1),
        ("b.conv2", 3, 1, 2),
    ]


def test_resnet18_layer3_known_answer() -> None:
    """Hand count (docs/models.md): stem 7 -> maxpool 11 -> layer1 43 -> layer2 99 -> layer3 211."""
    model = _model({"aspp": {"rates": [18, 1]}})
    rf = theoretical_receptive_fields(model)["SOD"]
    assert (rf.encoder_px, rf.output_stride) == (211, 16)
    sizes = {b.name: b.total_px for b in rf.branches}
    # 211 + 16 * (2 r + 2 + 1): branch, 3x3 project, bilinear upsampling
    assert sizes == {"1x1": 259, "rate 18": 835, "rate 1": 291, "pool avg:3": 291}
    assert rf.total_px == 835 == model.receptive_field()
    assert pixels_to_km(835) == pytest.approx(66.8)
    assert pixels_to_km(835, downsample=2) == pytest.approx(133.6)


def test_global_pooling_means_whole_input() -> None:
    model = _model(
        {
            "encoder": {"depth": "layer2", "output_stride": 8},
            "aspp": {"rates": [1], "pooling": "global"},
        }
    )
    rf = theoretical_receptive_fields(model)["SIC"]
    assert rf.branches[-1].total_px is None and rf.total_px is None
    assert rf.branches[1].total_px == 139  # 99 + 8 * (2 + 2 + 1)
    assert model.receptive_field() is None
    m = measure_receptive_fields(model, width=201, erf=None)["SIC"]
    assert m.branch_extent[-1].truncated and m.branch_extent[-1].px == 201
    assert m.total_extent.truncated
    # the local branches are still bounded
    assert not m.branch_extent[1].truncated


def test_positive_surrogate_is_a_modified_copy() -> None:
    model = _model({"aspp": {"rates": [2]}})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sur = positive_surrogate(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(isinstance(m, nn.MaxPool2d) for m in sur.modules())
    assert all(p.dtype == torch.float64 and not p.requires_grad for p in sur.parameters())
    assert all((p >= 0).all() for p in sur.parameters())


# Small models whose theory is compared with the measured non-zero gradient extent.
MEASURED_CASES = [
    (
        "r18-layer2-os8",
        {"encoder": {"depth": "layer2", "output_stride": 8}, "aspp": {"rates": [1, 3]}},
    ),
    (
        "r18-layer3-os16-none",
        {"aspp": {"rates": [2, 5], "pooling": "none"}, "task_rates": {"SOD": [1]}},
    ),
    (
        "tv-r50-layer3-os8-avg5",
        {
            "encoder": {"name": "resnet50", "backend": "torchvision", "output_stride": 8},
            "aspp": {"rates": [2], "pooling": "avg:5"},
        },
    ),
    (
        "r34-layer2-shared",
        {
            "encoder": {"name": "resnet34", "depth": "layer2", "output_stride": 8},
            "aspp": {"rates": [4]},
            "shared_decoder": True,
        },
    ),
]


@pytest.mark.parametrize(("name", "section"), MEASURED_CASES, ids=[c[0] for c in MEASURED_CASES])
def test_theory_matches_nonzero_gradient_extent(name: str, section: dict[str, Any]) -> None:
    model = _model(section)
    theory = theoretical_receptive_fields(model)
    measured = measure_receptive_fields(model, erf=None)
    stride = model.encoder.output_stride
    for task, rf in theory.items():
        m = measured[task]
        for b, e in zip(rf.branches, m.branch_extent, strict=True):
            assert b.total_px is not None and not e.truncated
            # within one feature cell; the only slack is the bilinear upsampling term
            assert b.total_px - stride <= e.px <= b.total_px, (task, b.name, e.px, b.total_px)
        assert m.total_extent.px == max(e.px for e in m.branch_extent)
        assert rf.total_px is not None and rf.total_px - stride <= m.total_extent.px <= rf.total_px


def test_measurement_sees_each_branch_and_rate_differences() -> None:
    model = _model(
        {"encoder": {"depth": "layer2", "output_stride": 8}, "aspp": {"rates": [1, 2, 6]}}
    )
    m = measure_receptive_fields(model, erf=None)["SIC"]
    widths = [e.px for e in m.branch_extent]  # 1x1, rate 1, rate 2, rate 6, pool avg:3
    # each extra unit of rate adds 2 feature cells = 16 px
    assert widths[2] - widths[1] == 16 and widths[3] - widths[2] == 64
    assert widths[4] == widths[1]  # avg:3 reaches as far as a rate-1 3x3 conv
    assert widths[0] == widths[1] - 16


def test_erf_width_on_known_profiles() -> None:
    delta = np.zeros(21)
    delta[10] = 1.0
    assert erf_width(delta, 10) == 1
    flat = np.zeros(21)
    flat[5:16] = 1.0  # 11 equal columns centred on 10
    assert erf_width(flat, 10, mass=1.0) == 11
    assert erf_width(flat, 10, mass=0.95) == 11  # 9 columns hold only 82 %
    assert erf_width(flat, 10, mass=0.8) == 9
    assert erf_width(np.zeros(5), 2) == 0


def test_erf_is_inside_the_theoretical_field_and_seeded() -> None:
    model = _model({"encoder": {"depth": "layer2", "output_stride": 8}, "aspp": {"rates": [6]}})
    a = measure_receptive_fields(model, erf=ERFSettings(samples=2, seed=1))
    b = measure_receptive_fields(model, erf=ERFSettings(samples=2, seed=1))
    for task, m in a.items():
        assert 1 <= m.erf_px <= m.total_extent.px
        assert m.erf_px == b[task].erf_px
        np.testing.assert_array_equal(m.erf_profile, b[task].erf_profile)
        # the ERF profile is zero outside the non-zero extent of the surrogate
        outside = m.extent_profile == 0
        assert outside.any() and np.all(m.erf_profile[outside] == 0)
