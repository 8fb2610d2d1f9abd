"""ASPP: any rates, branch layout, and what each pooling choice does to tiles vs full scenes."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.segmentation.deeplabv3 import ASPP as TorchvisionASPP

from icecontext.models.aspp import ASPP
from icecontext.models.config import ModelConfig, parse_pooling
from icecontext.models.multitask import MultiTaskModel, build_model


@pytest.mark.parametrize(
    "rates", [[1], [2, 4, 6], [6, 12, 18], [12, 24, 36], [24, 48, 72], [3] * 6]
)
def test_any_rates_keep_size_and_match_torchvision_parameter_count(rates: list[int]) -> None:
    aspp = ASPP(16, rates, 8, parse_pooling("global"), dropout=0.0)
    reference = TorchvisionASPP(16, rates, 8)
    assert sum(p.numel() for p in aspp.parameters()) == sum(
        p.numel() for p in reference.parameters()
    )
    assert len(aspp.branches) == len(rates) + 2
    assert aspp.branch_names() == ["1x1", *[f"rate {r}" for r in rates], "pool global"]
    aspp.eval()
    y = aspp(torch.randn(2, 16, 9, 13))
    assert y.shape == (2, 8, 9, 13)


def test_pooling_choices_change_only_the_last_branch() -> None:
    none = ASPP(16, [2], 8, parse_pooling("none"))
    avg = ASPP(16, [2], 8, parse_pooling("avg:3"))
    assert len(none.branches) == 2 and len(avg.branches) == 3
    assert none.branch_names()[-1] == "rate 2" and avg.branch_names()[-1] == "pool avg:3"
    assert none.project[0].in_channels == 16 and avg.project[0].in_channels == 24
    pool = avg.branches[2][0]
    assert isinstance(pool, torch.nn.AvgPool2d) and pool.stride == 1 and pool.padding == 1


def test_invalid_rates_are_rejected() -> None:
    with pytest.raises(ValueError, match="rates"):
        ASPP(16, [], 8, parse_pooling("none"))
    with pytest.raises(ValueError, match="rates"):
        ASPP(16, [4, 0], 8, parse_pooling("none"))


def _tile_model(pooling: str) -> MultiTaskModel:
    # ResNet-18 to layer2 at stride 8: receptive field 171 px with rate 3, cheap on a CPU
    cfg = ModelConfig.model_validate(
        {
            "encoder": {"depth": "layer2", "output_stride": 8},
            "aspp": {"rates": [3], "channels": 8, "pooling": pooling},
            "project_channels": 8,
        }
    )
    return build_model(cfg, 3, seed=0).eval()


@pytest.mark.parametrize("pooling", ["avg:3", "none", "global"])
def test_tile_alone_equals_tile_inside_a_larger_scene_unless_global(pooling: str) -> None:
    """Local pooling is translation-equivariant: tiles agree with the full scene.

    The tile lies on the scene's feature grid (multiples of the stride), and the two are
    compared on the tile's centre, farther from the tile's borders than half the
    receptive field (so zero padding at the tile's edges cannot reach it).
    """
    model = _tile_model(pooling)
    rf = model.receptive_field()
    finite = _tile_model("avg:3").receptive_field()
    assert finite is not None
    margin = finite // 2 + 8
    # tile size, scene size and offsets are multiples of the stride (8), so the feature
    # grids and the bilinear upsampling line up
    tile, offset = -(-(2 * margin + 16) // 8) * 8, (48, 64)
    g = torch.Generator().manual_seed(0)
    scene = torch.randn(1, 3, tile + 112, tile + 128, generator=g)
    r, c = offset
    part = scene[:, :, r : r + tile, c : c + tile]
    with torch.no_grad():
        whole, alone = model(scene), model(part)
    centre = (slice(None), slice(None), slice(margin, tile - margin), slice(margin, tile - margin))
    for task in whole:
        inside = whole[task][:, :, r : r + tile, c : c + tile][centre]
        if pooling == "global":
            assert rf is None
            assert (inside - alone[task][centre]).abs().max() > 1e-4
        else:
            assert rf is not None and rf <= finite
            torch.testing.assert_close(inside, alone[task][centre], rtol=1e-4, atol=1e-5)
