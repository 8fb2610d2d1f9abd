"""Targets: regression and class outputs summed over masks from the reference or the prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icecontext.errors import ConfigError
from icecontext.explain.targets import (
    RegionTarget,
    TargetSpec,
    make_targets,
    sic_regression_classes,
)


@pytest.fixture
def logits() -> torch.Tensor:
    return torch.randn(6, 5, 7, generator=torch.Generator().manual_seed(0))


def test_regression_target_sums_the_output_over_region_and_reference_class():
    out = torch.arange(35, dtype=torch.float32).reshape(1, 5, 7)
    region = np.ones((5, 7), bool)
    region[:, 0] = False
    ref = np.full((5, 7), 255, np.uint8)
    ref[1:3, :4] = 7
    ref[4, :] = 3
    target = RegionTarget(region, class_index=7, classes=ref)
    expected = out[0, 1:3, 1:4].sum()
    assert torch.isclose(target(out), expected)
    np.testing.assert_array_equal(target.mask, (ref == 7) & region)
    # without a class: every labelled pixel of the region, whatever its class
    all_labelled = RegionTarget(region, None, ref)
    assert torch.isclose(all_labelled(out), out[0][torch.from_numpy((ref != 255) & region)].sum())


def test_regression_prediction_mask_uses_the_rounding_rule():
    values = torch.tensor([[[2.5, 2.49, -0.7, 10.6, 3.5]]])
    np.testing.assert_array_equal(sic_regression_classes(values).numpy(), [[3, 2, 0, 10, 4]])
    target = RegionTarget(np.ones((1, 5), bool), class_index=3)
    assert torch.isclose(target(values), torch.tensor(2.5))  # only the 2.5 pixel rounds to 3
    np.testing.assert_array_equal(target.mask, [[True, False, False, False, False]])


def test_sic_rounding_matches_the_model_rule():
    from icecontext.models.config import ModelConfig
    from icecontext.models.multitask import build_model

    model = build_model(ModelConfig.model_validate({"aspp": {"channels": 8}}), 2, seed=0)
    values = torch.linspace(-2, 12, 57).reshape(1, 1, 3, 19)
    expected = model.to_classes({"SIC": values})["SIC"][0]
    torch.testing.assert_close(sic_regression_classes(values[0]), expected)


def test_class_target_with_reference_mask(logits):
    ref = np.zeros((5, 7), np.uint8)
    ref[2:, 3:] = 4
    ref[0, 0] = 255
    target = RegionTarget(np.ones((5, 7), bool), class_index=4, classes=ref)
    assert torch.isclose(target(logits), logits[4, 2:, 3:].sum())
    assert target.mask.sum() == 3 * 4


def test_every_pixel_own_class_from_the_reference(logits):
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 6, (5, 7)).astype(np.uint8)
    ref[0] = 255
    target = RegionTarget(np.ones((5, 7), bool), None, ref)
    expected = sum(
        float(logits[ref[r, c], r, c]) for r in range(5) for c in range(7) if ref[r, c] != 255
    )
    assert float(target(logits)) == pytest.approx(expected, rel=1e-6)


def test_prediction_mask_follows_the_argmax(logits):
    pred = logits.argmax(0).numpy()
    cls = int(np.bincount(pred.ravel()).argmax())
    target = RegionTarget(np.ones((5, 7), bool), class_index=cls)
    assert torch.isclose(target(logits), logits[cls][torch.from_numpy(pred == cls)].sum())
    np.testing.assert_array_equal(target.mask, pred == cls)
    # no class: the logit of the predicted class everywhere = the maximum logit
    region = np.zeros((5, 7), bool)
    region[1:4, 2:6] = True
    own = RegionTarget(region)
    assert torch.isclose(own(logits), logits.max(0).values[torch.from_numpy(region)].sum())


def test_the_target_mask_is_not_differentiated(logits):
    x = logits.clone().requires_grad_(True)
    RegionTarget(np.ones((5, 7), bool))(x).backward()
    # the gradient is the one-hot of the argmax: the mask choice adds no gradient
    expected = torch.nn.functional.one_hot(logits.argmax(0), 6).permute(2, 0, 1).float()
    torch.testing.assert_close(x.grad, expected)


def test_make_targets_gives_each_sample_its_own_mask():
    regions = np.zeros((2, 4, 4), bool)
    regions[0, :2] = True
    regions[1, 2:] = True
    refs = np.stack([np.full((4, 4), 1, np.uint8), np.full((4, 4), 2, np.uint8)])
    targets = make_targets(TargetSpec("SOD", None, "reference"), regions, references=refs)
    out = torch.zeros(6, 4, 4)
    out[1] = 1.0
    out[2] = 10.0
    assert float(targets[0](out)) == 8.0  # 8 pixels of class 1
    assert float(targets[1](out)) == 80.0  # 8 pixels of class 2
    with pytest.raises(ConfigError, match="--mask"):
        make_targets(TargetSpec("SOD", None, "reference"), regions)


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"task": "ICE"}, "--task"),
        ({"task": "SOD", "class_index": 6}, "--class"),
        ({"task": "FLOE", "class_index": -1}, "--class"),
        ({"task": "SIC", "mask": "chart"}, "--mask"),
    ],
)
def test_bad_target_options_name_the_option(kwargs, option):
    with pytest.raises(ConfigError) as err:
        TargetSpec(**kwargs)
    assert err.value.option == option


def test_spec_text():
    assert TargetSpec("SOD", 4, "reference").slug() == "SOD-c4-reference"
    assert "every pixel's class" in TargetSpec("SIC").describe()
