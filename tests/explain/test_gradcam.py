"""Grad-CAM on a batch: the acceptance test, layer lookup, batch-awareness, every head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from icecontext.errors import ConfigError
from icecontext.explain.gradcam import DEFAULT_METHOD, default_layer, find_layer, gradcam_batch
from icecontext.explain.scene import CamSettings, explain_scene, explain_tiling
from icecontext.explain.targets import RegionTarget, TargetSpec, make_targets

from .conftest import MemorySource, tiny_model


class RegionSODNet(nn.Module):
    """SOD logits driven only by input channel 0, which carries signal only in a known region.

    ``features`` (the explained layer): a stride-2 1x1 convolution with hand-set
    weights: channels 0-3 read input channel 0, channels 4-7 read the noise channels
    1 and 2. The SOD head reads channels 0-3 only and averages them over the whole image,
    so every SOD output pixel depends on the region and on nothing else; SIC and FLOE
    read every channel.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 1, stride=2, bias=False), nn.ReLU())
        self.sod = nn.Conv2d(8, 6, 1)
        self.sic = nn.Conv2d(8, 1, 1)
        self.floe = nn.Conv2d(8, 7, 1)
        with torch.no_grad():
            w = torch.zeros(8, 3, 1, 1)
            w[0:4, 0] = torch.tensor([1.0, 0.5, 2.0, 1.5]).view(4, 1, 1)
            w[4:8, 1] = torch.tensor([1.0, -1.0, 0.7, -0.3]).view(4, 1, 1)
            w[4:8, 2] = torch.tensor([0.4, 0.9, -1.2, 1.0]).view(4, 1, 1)
            self.features[0].weight.copy_(w)
            self.sod.weight.zero_()
            self.sod.bias.zero_()
            self.sod.weight[2, 0:4] = torch.tensor([0.5, 1.0, 0.2, 0.8]).view(4, 1, 1)
            self.sod.weight[1, 0:4] = -0.3

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        size = list(x.shape[-2:])

        def up(y: torch.Tensor) -> torch.Tensor:
            return F.interpolate(y, size=size, mode="bilinear", align_corners=False)

        sod = self.sod(f).mean(dim=(2, 3), keepdim=True).expand(-1, -1, *f.shape[-2:])
        return {"SIC": up(self.sic(f)), "SOD": up(sod), "FLOE": up(self.floe(f))}


def _region_inputs(size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (3, size, size)).astype(np.float32)  # noise channels everywhere
    region = np.zeros((size, size), bool)
    region[8:24, 10:30] = True  # top left
    x[0] = np.where(region, 1.0 + np.abs(x[0]), 0.0)  # channel 0: signal only in the region
    return x, region


def test_acceptance_sod_cam_concentrates_on_the_region_the_head_depends_on():
    x, region = _region_inputs()
    model = RegionSODNet().eval()
    # target: SOD class 2 over the bottom-right quadrant, far from the region
    where = np.zeros_like(region)
    where[40:, 40:] = True
    target = RegionTarget(where, class_index=2, classes=np.full(region.shape, 2, np.uint8))
    result = gradcam_batch(
        model, torch.from_numpy(x[None]), "SOD", [target], "features", method="gradcam"
    )
    cam = result.cam[0]
    assert cam.sum() > 0
    inside = cam[region].sum() / cam.sum()
    assert inside > 0.9, f"only {inside:.1%} of the CAM mass lies in the region"
    # the noise channels carry activations everywhere, but the SOD head ignores them
    assert np.all(result.weights[0, 4:] == 0)
    assert np.all(result.weights[0, :4] > 0)
    # the same through the scene path (one tile; global averaging needs a single pass)
    source = MemorySource(x)
    spec = TargetSpec("SOD", 2, "prediction")
    scene = explain_scene(
        model,
        source,
        source.features,
        spec,
        CamSettings(layer="features", method="gradcam"),
        explain_tiling(model, 64, 0),
    )
    assert scene.tiles == 1
    assert scene.cam[region].sum() / scene.cam.sum() > 0.9


def test_sic_regression_head_is_explained_too():
    x, region = _region_inputs()
    model = RegionSODNet().eval()
    with torch.no_grad():
        model.sic.weight.zero_()
        model.sic.weight[0, 0:4] = 1.0  # SIC depends on the region channels only, pixel-wise
    where = np.zeros_like(region)
    where[8:24, 10:20] = True  # left half of the region
    result = gradcam_batch(
        model, torch.from_numpy(x[None]), "SIC", [RegionTarget(where)], "features"
    )
    cam = result.cam[0]
    assert cam[region].sum() / cam.sum() > 0.9
    np.testing.assert_array_equal(result.masks[0], where)


def test_the_defaults_are_hirescam_at_the_aspp_input(model, scene):
    """What docs/explain.md recommends for context: HiResCAM at the encoder output."""
    from .conftest import real_model

    assert DEFAULT_METHOD == "hirescam"
    assert default_layer(model, "SOD") == "encoder.layer2"
    name, module = find_layer(model, None, "FLOE")
    assert name == "encoder.layer2"
    assert module is model.encoder.layer2
    # the module that feeds the ASPP: the encoder's output is the last kept stage's
    x = torch.from_numpy(scene.inputs[None, :, :64, :64])
    seen = []
    handle = module.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    assert len(seen) == 1 and torch.equal(seen[0], model.encoder(x))
    # the real ResNet-18 cut after layer2 (the CLI's tiny checkpoints)
    assert default_layer(real_model(), "SOD") == "encoder.layer2"
    targets = make_targets(TargetSpec("SOD"), np.ones((1, 64, 64), bool))
    result = gradcam_batch(model, x, "SOD", targets)
    assert result.method == "hirescam" and result.layer == "encoder.layer2"
    # any module name works, not only the suggested ones
    assert find_layer(model, "encoder.layer1.0", "SOD")[0] == "encoder.layer1.0"


def test_unknown_layer_lists_the_valid_names(model):
    with pytest.raises(ConfigError) as err:
        find_layer(model, "decoders.SOD.aspp.branch.9", "SOD")
    assert err.value.option == "--layer"
    text = str(err.value)
    assert "decoders.SOD.aspp.branch.9" in text
    for name in ("decoders.SOD.project", "decoders.SOD.aspp.branches.2", "encoder.layer2"):
        assert name in text
    assert "decoders.SIC.project" not in text  # only the layers of the task's path


def test_layer_that_does_not_feed_the_head_is_rejected(model, scene):
    x = torch.from_numpy(scene.inputs[None, :, :64, :64])
    targets = [RegionTarget(np.ones((64, 64), bool))]
    with pytest.raises(ConfigError, match="does not feed the SOD head"):
        gradcam_batch(model, x, "SOD", targets, "decoders.SIC.project")
    with pytest.raises(ConfigError, match="does not feed the SOD head"):
        explain_scene(
            model,
            scene,
            scene.features,
            TargetSpec("SOD"),
            CamSettings(layer="decoders.SIC.project"),
            explain_tiling(model, 128),
        )


@pytest.mark.parametrize(
    "layer", ["decoders.SOD.aspp.branches.0", "decoders.SOD.aspp.branches.2", "heads.SOD"]
)
def test_every_aspp_branch_and_the_head_can_be_explained(model, scene, layer):
    x = torch.from_numpy(scene.inputs[None, :, :64, :64])
    targets = make_targets(TargetSpec("SOD"), np.ones((1, 64, 64), bool))
    result = gradcam_batch(model, x, "SOD", targets, layer)
    assert result.layer == layer
    assert result.cam.shape == (1, 64, 64)
    assert result.features.shape == (1, 16, 16)  # stride-4 layers
    assert np.isfinite(result.cam).all() and (result.cam >= 0).all()


def test_batch_aware_each_sample_uses_its_own_mask(model, scene):
    x1 = scene.inputs[:, 100:164, 100:164]
    x = torch.from_numpy(np.stack([x1, x1]))  # same input, two targets
    regions = np.zeros((2, 64, 64), bool)
    regions[0, :20, :20] = True
    regions[1, 40:, 40:] = True
    spec = TargetSpec("SOD")
    both = gradcam_batch(
        model, x, "SOD", make_targets(spec, regions), "encoder.layer2", method="gradcam"
    )
    assert not np.allclose(both.cam[0], both.cam[1], rtol=0.1)
    np.testing.assert_array_equal(both.masks, regions)
    for b in range(2):
        alone = gradcam_batch(
            model,
            x[b : b + 1],
            "SOD",
            make_targets(spec, regions[b : b + 1]),
            "encoder.layer2",
            method="gradcam",
        )
        np.testing.assert_allclose(both.cam[b], alone.cam[0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(both.weights[b], alone.weights[0], rtol=1e-5, atol=1e-9)


def test_the_model_mode_is_restored(scene):
    net = tiny_model()
    net.train()
    x = torch.from_numpy(scene.inputs[None, :, :32, :32])
    gradcam_batch(net, x, "FLOE", [RegionTarget(np.ones((32, 32), bool))])
    assert net.training


class PixelSODNet(RegionSODNet):
    """The same layers, but SOD logits pixel by pixel (no averaging over the image)."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        sod = self.sod(self.features(x))
        return {"SOD": F.interpolate(sod, size=list(x.shape[-2:]), mode="bilinear")}


def _two_patches(size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Channel-0 signal in two far-apart patches; noise in channels 1 and 2."""
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (3, size, size)).astype(np.float32)
    near = np.zeros((size, size), bool)
    near[6:18, 6:18] = True
    far = np.zeros((size, size), bool)
    far[44:58, 44:58] = True
    x[0] = np.where(near | far, 1.0 + np.abs(x[0]), 0.0)
    return x, near, far


def test_hirescam_stays_where_the_target_draws_gradcam_lights_similar_features_anywhere():
    """A pixel-wise SOD head: each output depends on its own position only.

    The target covers one patch. Grad-CAM weights channels by their mean gradient and so
    also lights the other patch (same features, no influence on the target): half of its
    mass lies far away. HiResCAM multiplies by the gradient at each position: all mass on
    the target patch. This is why the distance summary recommends HiResCAM.
    """
    model = PixelSODNet().eval()
    x, near, far = _two_patches()
    target = RegionTarget(near, class_index=2, classes=np.full(near.shape, 2, np.uint8))
    grad = gradcam_batch(
        model, torch.from_numpy(x[None]), "SOD", [target], "features", method="gradcam"
    )
    hires = gradcam_batch(
        model, torch.from_numpy(x[None]), "SOD", [target], "features", method="hirescam"
    )
    g, h = grad.cam[0], hires.cam[0]
    assert g[far].sum() / g.sum() > 0.3
    assert h[far].sum() == 0
    assert h[near].sum() / h.sum() > 0.9


@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
def test_acceptance_holds_for_both_methods(method):
    x, region = _region_inputs()
    where = np.zeros_like(region)
    where[40:, 40:] = True
    target = RegionTarget(where, class_index=2, classes=np.full(region.shape, 2, np.uint8))
    result = gradcam_batch(
        RegionSODNet().eval(), torch.from_numpy(x[None]), "SOD", [target], "features", method
    )
    assert result.method == method
    assert result.cam[0][region].sum() / result.cam[0].sum() > 0.9


def test_unknown_method(model, scene):
    x = torch.from_numpy(scene.inputs[None, :, :32, :32])
    with pytest.raises(ConfigError, match="--method"):
        gradcam_batch(model, x, "SOD", [RegionTarget(np.ones((32, 32), bool))], method="cam")
