"""The AutoICE reference preset equals the lab's torchvision-built architecture; its receptive field."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet152
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import ASPP

from icecontext.models.config import load_model_spec
from icecontext.models.multitask import build_model
from icecontext.models.receptive_field import (
    ERFSettings,
    measure_receptive_fields,
    theoretical_receptive_fields,
)

PRESET = Path(__file__).resolve().parents[2] / "configs" / "model" / "autoice_reference.yaml"


class LabReference(nn.Module):
    """The Karimzadeh lab's AutoICE model rebuilt from torchvision parts (heads 1/6/7)."""

    def __init__(self) -> None:
        super().__init__()
        net = resnet152(weights=None)
        net.conv1 = nn.Conv2d(18, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.encoder = IntermediateLayerGetter(net, return_layers={"layer3": "out"})

        def decoder(n_out: int) -> nn.Sequential:
            return nn.Sequential(
                ASPP(in_channels=1024, atrous_rates=[12, 24, 36], out_channels=32),
                nn.Conv2d(32, 32, 3, padding=1, bias=False),
                nn.BatchNorm2d(32),
                nn.ReLU(),
                nn.Conv2d(32, n_out, 1),
            )

        self.decoders = nn.ModuleDict({"SIC": decoder(1), "SOD": decoder(6), "FLOE": decoder(7)})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.encoder(x)["out"]
        size = x.shape[-2:]
        return {
            t: nn.functional.interpolate(d(f), size=size, mode="bilinear", align_corners=False)
            for t, d in self.decoders.items()
        }


def test_preset_has_the_reference_parameters_and_output_shapes() -> None:
    spec = load_model_spec(PRESET)
    assert spec.in_channels == 18
    with torch.device("meta"):
        ours = build_model(spec.model, spec.in_channels)
        ref = LabReference()
        x = torch.empty(2, 18, 97, 130)
        ours.eval()
        ref.eval()
        out_ours, out_ref = ours(x), ref(x)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_ref = sum(p.numel() for p in ref.parameters())
    assert n_ours == n_ref == 46_121_742
    # the encoder is the torchvision ResNet-152 to layer3, key for key
    enc_ours = {k: v.shape for k, v in ours.encoder.state_dict().items()}
    enc_ref = {k: v.shape for k, v in ref.encoder.state_dict().items()}
    assert enc_ours == enc_ref
    # each decoder has the same parameter shapes in the same order
    for task in ("SIC", "SOD", "FLOE"):
        mine = [p.shape for p in ours.decoders[task].parameters()] + [
            p.shape for p in ours.heads[task].parameters()
        ]
        theirs = [p.shape for p in ref.decoders[task].parameters()]
        assert mine == theirs, task
    assert {t: o.shape for t, o in out_ours.items()} == {t: o.shape for t, o in out_ref.items()}
    assert out_ours["SOD"].shape == (2, 6, 97, 130)


@pytest.fixture(scope="module")
def reference_model() -> torch.nn.Module:
    spec = load_model_spec(PRESET)
    return build_model(spec.model, spec.in_channels, seed=0)


def test_reference_theory_in_pixels_and_km(reference_model: torch.nn.Module) -> None:
    rf = theoretical_receptive_fields(reference_model)
    for task in ("SIC", "SOD", "FLOE"):
        sizes = [b.total_px for b in rf[task].branches]
        # 1291 px encoder + 16 * (2 r + 3) per branch; avg:3 adds 2 cells
        assert sizes == [1339, 1723, 2107, 2491, 1371]
        assert rf[task].total_px == 2491  # 199.3 km at 80 m


@pytest.mark.slow
def test_reference_theory_matches_measured_extent_per_branch(
    reference_model: torch.nn.Module,
) -> None:
    """Acceptance, full check: every branch of every task within one feature cell (~1 min)."""
    theory = theoretical_receptive_fields(reference_model)
    measured = measure_receptive_fields(reference_model, height=17, erf=ERFSettings(samples=1))
    for task, rf in theory.items():
        for b, e in zip(rf.branches, measured[task].branch_extent, strict=True):
            assert b.total_px is not None and abs(b.total_px - e.px) <= 16 and not e.truncated
        assert 0 < measured[task].erf_px < measured[task].total_extent.px


def test_reference_theory_matches_measured_extent(reference_model: torch.nn.Module) -> None:
    """Acceptance, affordable check: the network's field, strip of 17 rows, no ERF."""
    measured = measure_receptive_fields(reference_model, height=17, erf=None, branches=False)
    for task, m in measured.items():
        assert not m.total_extent.truncated
        assert abs(m.total_extent.px - 2491) <= 16, (task, m.total_extent.px)
