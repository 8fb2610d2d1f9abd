"""2 km channels carried at 2 km and upsampled on the device equal the loader's upsampling.

The 2 km grid holds a ramp (every cell distinct), windows start at offsets that are not
multiples of 25 and reach past the scene, and every flip/rotation is tried: the inputs
rebuilt by ``CoarseInputs`` must equal ``read_window``'s bit for bit.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from icecontext.data.io.geometry import CoarseSlot, Transform
from icecontext.data.io.layers import scene_layers
from icecontext.data.io.scene import find_scenes, open_scene
from icecontext.data.loader.datamodule import PatchDataset
from icecontext.data.loader.sampling import PatchSampler, SamplingSettings
from icecontext.data.loader.sources import ArraySource
from icecontext.models.coarse_inputs import CoarseInputs, upsample_coarse_batch

# 2 km channels between and after the others: the rebuilt order must be the requested one
FEATURES = ["btemp_18_7h", "nersc_sar_primary", "t2m", "month_sin", "btemp_89_0v", "geo_sin_lat"]
TRANSFORMS = [Transform(h, v, k) for h, v, k in itertools.product((0, 1), (0, 1), range(4))]


def _ramp_source(scene_dir, downsample: int, mode: str) -> ArraySource:
    layers = scene_layers(open_scene(find_scenes(scene_dir)[0]), FEATURES, downsample)
    channels, (h2, w2) = len(layers.coarse_variables), layers.coarse_shape
    ramp = (
        np.arange(channels)[:, None, None] * 1000.0
        + np.arange(h2)[None, :, None] * 7.25
        + np.arange(w2)[None, None, :] * 0.37
    )
    return ArraySource(dataclasses.replace(layers, coarse=ramp.astype(np.float32)), mode)


def _slot(channels: int, patch: int, downsample: int) -> CoarseSlot:
    n = CoarseSlot.cells(patch, downsample)
    return CoarseSlot(
        np.full((channels, n, n), np.nan, dtype=np.float32),  # no stale value may survive
        np.full((4, patch), -1, dtype=np.int64),
        np.full((2, patch), np.nan, dtype=np.float32),
    )


def _device_inputs(fine: np.ndarray, slot: CoarseSlot, mode: str) -> torch.Tensor:
    arrays = {"x": fine, "coarse": slot.block, "coarse_index": slot.index}
    arrays["coarse_weight"] = slot.weight
    return CoarseInputs(FEATURES, mode)({k: torch.from_numpy(v[None]) for k, v in arrays.items()})[
        0
    ]


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("downsample", [1, 2])
@pytest.mark.parametrize(
    "window",
    [(0, 0, 48, 48), (13, 37, 48, 48), (61, 7, 48, 48), (-11, 170, 48, 48), (500, 500, 48, 48)],
)
def test_device_upsampling_equals_the_loaders(scene_dir, mode, downsample, window):
    src = _ramp_source(scene_dir, downsample, mode)
    for t in TRANSFORMS:
        host, _ = src.read_window(window, FEATURES, charts=False, transform=t)
        slot = _slot(3, 48, downsample)
        fine, _ = src.read_window(window, FEATURES, charts=False, transform=t, coarse_out=slot)
        assert fine.shape == (3, 48, 48)  # SAR, month and latitude only
        assert not np.isnan(slot.block).any() and (slot.index >= 0).all()
        got = _device_inputs(fine, slot, mode)
        assert torch.equal(got, torch.from_numpy(host)), (window, t)


def test_the_ramp_is_really_interpolated():
    """Two cells 0 and 10 at a weight of 0.25 give 2.5; nearest takes the lower cell."""
    block = torch.tensor([[[[0.0, 10.0], [0.0, 10.0]]]])
    index = torch.tensor([[[0, 0], [0, 0], [0, 0], [1, 1]]])
    weight = torch.tensor([[[0.0, 0.0], [0.25, 1.0]]])
    assert upsample_coarse_batch(block, index, weight, bilinear=True)[0, 0, 0].tolist() == [
        2.5,
        10.0,
    ]
    assert upsample_coarse_batch(block, index, weight, bilinear=False).sum() == 0


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_batches_with_2km_channels_at_2km_rebuild_the_same_inputs(scene_dir, mode):
    sources = [_ramp_source(scene_dir, 1, mode)]
    settings = SamplingSettings(patch_size=64, min_valid_fraction=0.0)
    sampler = PatchSampler(sources, FEATURES, settings)
    host = PatchDataset(sampler, 8, seed=1)
    device = PatchDataset(sampler, 8, seed=1, coarse_on_device=True)
    keys = list(range(6))
    a, b = host.__getitems__(keys), device.__getitems__(keys)
    assert b["x"].shape == (6, 3, 64, 64) and b["coarse"].shape[:2] == (6, 3)
    assert torch.equal(CoarseInputs(FEATURES, mode)(b), a["x"])
    for key in ("SIC", "SOD", "FLOE", "window", "augment"):
        assert torch.equal(a[key], b[key])
    single = device[4]
    batch = {k: v[None] for k, v in single.items()}
    assert torch.equal(CoarseInputs(FEATURES, mode)(batch)[0], a["x"][4])
    assert "coarse" not in host[4]


def test_a_run_without_2km_channels_carries_none():
    batch = {"x": torch.ones(2, 3, 4, 4)}
    assert CoarseInputs(["nersc_sar_primary", "month_sin", "geo_sin_lat"])(batch) is batch["x"]
