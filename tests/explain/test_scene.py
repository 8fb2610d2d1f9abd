"""Tiled full-scene Grad-CAM equals a single pytorch-grad-cam pass; windows; NetCDF output."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import xarray as xr

from icecontext.errors import ConfigError, DataError
from icecontext.explain.gradcam import gradcam_batch
from icecontext.explain.scene import CamSettings, explain_scene, explain_tiling, write_cam_netcdf
from icecontext.explain.targets import TargetSpec, make_targets
from icecontext.inference.tiling import round_up

from .conftest import MemorySource


def _single_pass(model, scene, spec, layer=None, window=None, method="hirescam"):
    """pytorch-grad-cam over the whole (zero-padded to 32) domain in one batch of one."""
    r0, c0, h, w = window or (0, 0, *scene.shape)
    ph, pw = round_up(h, 32), round_up(w, 32)
    x = np.zeros((1, scene.inputs.shape[0], ph, pw), np.float32)
    x[0, :, :h, :w] = scene.inputs[:, r0 : r0 + h, c0 : c0 + w]
    region = np.zeros((1, ph, pw), bool)
    region[0, :h, :w] = scene.valid[r0 : r0 + h, c0 : c0 + w]
    ref = np.full((1, ph, pw), 255, np.uint8)
    ref[0, :h, :w] = scene.charts[spec.task][r0 : r0 + h, c0 : c0 + w]
    targets = make_targets(spec, region, references=ref)
    result = gradcam_batch(model, torch.from_numpy(x), spec.task, targets, layer, method)
    return result.cam[0, :h, :w], result.masks[0, :h, :w], result.weights[0]


@pytest.mark.parametrize(
    ("spec", "layer", "cache_mb"),
    [
        (TargetSpec("SOD", None, "reference"), "decoders.SOD.project", 512.0),
        # pass 2 recomputes activations
        (TargetSpec("SOD", None, "reference"), "decoders.SOD.project", 0.0),
        (TargetSpec("FLOE", 2, "reference"), None, 512.0),  # the default layer
        (TargetSpec("SIC", None, "prediction"), "decoders.SIC.aspp.branches.1", 0.0),
    ],
)
def test_tiled_scene_equals_a_single_pass(model, scene, spec, layer, cache_mb):
    """Grad-CAM: the channel weights average over the whole scene, across tiles."""
    tiled = explain_scene(
        model,
        scene,
        scene.features,
        spec,
        CamSettings(layer=layer, cache_mb=cache_mb, method="gradcam"),
        explain_tiling(model, 128, "auto"),
    )
    assert tiled.tiles == 9 and tiled.exact
    assert tiled.margin >= -(-model.receptive_field() // 2)
    cam, mask, weights = _single_pass(model, scene, spec, layer, method="gradcam")
    assert cam.max() > 0
    np.testing.assert_array_equal(tiled.target_mask, mask)
    np.testing.assert_allclose(tiled.weights, weights, rtol=1e-4, atol=1e-6 * np.abs(weights).max())
    np.testing.assert_allclose(tiled.cam, cam, rtol=0, atol=1e-4 * cam.max())
    # bounded memory: no read is larger than a tile
    assert max(h * w for _, _, h, w in scene.reads[-tiled.tiles :]) <= tiled.tile**2


def test_scene_size_not_a_multiple_of_the_stride(model):
    rng = np.random.default_rng(3)
    from .conftest import blocky_charts

    charts = blocky_charts((150, 175), seed=4)
    src = MemorySource(rng.normal(0, 1, (3, 150, 175)), charts)
    spec = TargetSpec("SOD", None, "reference")
    tiled = explain_scene(
        model, src, src.features, spec, CamSettings(method="gradcam"), explain_tiling(model, 128)
    )
    assert tiled.cam.shape == (150, 175) and tiled.exact
    cam, mask, _ = _single_pass(model, src, spec, method="gradcam")
    np.testing.assert_array_equal(tiled.target_mask, mask)
    np.testing.assert_allclose(tiled.cam, cam, rtol=0, atol=1e-4 * cam.max())


def test_window_is_explained_as_its_own_input(model, scene):
    spec = TargetSpec("SOD", None, "reference")
    window = (50, 70, 120, 100)
    result = explain_scene(
        model, scene, scene.features, spec, CamSettings(window=window), explain_tiling(model, 96)
    )
    assert result.cam.shape == (120, 100) and result.tiles == 4 and result.exact
    assert result.window == window
    cam, mask, _ = _single_pass(model, scene, spec, window=window)
    np.testing.assert_array_equal(result.target_mask, mask)
    np.testing.assert_allclose(result.cam, cam, rtol=0, atol=1e-4 * cam.max())
    np.testing.assert_array_equal(result.reference, scene.charts["SOD"][50:170, 70:170])


def test_small_margin_is_flagged_inexact(model, scene, caplog):
    with caplog.at_level(logging.WARNING):
        result = explain_scene(
            model, scene, scene.features, TargetSpec("SOD"), tiling=explain_tiling(model, 64, 0)
        )
    assert not result.exact
    assert "receptive-field radius" in caplog.text
    # still a map of the right shape, close to the exact one away from the tile borders
    exact = explain_scene(
        model, scene, scene.features, TargetSpec("SOD"), tiling=explain_tiling(model, 256)
    )
    assert exact.tiles == 1 and exact.exact
    assert result.cam.shape == exact.cam.shape


def test_prediction_mask_and_predicted_classes(model, scene):
    result = explain_scene(
        model, scene, scene.features, TargetSpec("SOD"), tiling=explain_tiling(model, 128)
    )
    with torch.no_grad():
        pad = np.zeros((1, 3, 256, 256), np.float32)
        pad[0] = scene.inputs
        expected = model(torch.from_numpy(pad))["SOD"].argmax(1)[0].numpy().astype(np.uint8)
    expected[~scene.valid] = 255
    np.testing.assert_array_equal(result.prediction, expected)
    # no class: every pixel with data is a target pixel
    np.testing.assert_array_equal(result.target_mask, scene.valid)


def test_fixed_classes_override_the_mask_source(model, scene):
    fixed = np.full(scene.shape, 255, np.uint8)
    fixed[150:220, 100:200] = 3
    result = explain_scene(
        model,
        scene,
        scene.features,
        TargetSpec("SOD", 3, "prediction"),
        CamSettings(classes=fixed),
        explain_tiling(model, 128),
    )
    np.testing.assert_array_equal(result.target_mask, fixed == 3)


def test_absent_class_and_bad_windows_are_reported(model, scene):
    charts = {k: v.copy() for k, v in scene.charts.items()}
    charts["SOD"][charts["SOD"] == 5] = 4
    src = MemorySource(scene.inputs, charts, scene.valid)
    with pytest.raises(DataError, match="no pixel of the scene matches the target SOD class 5"):
        explain_scene(
            model,
            src,
            src.features,
            TargetSpec("SOD", 5, "reference"),
            tiling=explain_tiling(model, 128),
        )
    for window in [(200, 0, 100, 10), (0, 0, 0, 5), (-1, 0, 5, 5)]:
        with pytest.raises(ConfigError) as err:
            explain_scene(model, src, src.features, TargetSpec("SOD"), CamSettings(window=window))
        assert err.value.option == "--window"
        assert "256 x 256" in str(err.value)


def test_cam_netcdf_round_trip(model, scene, tmp_path):
    result = explain_scene(
        model,
        scene,
        scene.features,
        TargetSpec("FLOE", None, "reference"),
        CamSettings(window=(0, 0, 96, 128)),
    )
    path = write_cam_netcdf(result, tmp_path / "cam.nc", {"checkpoint": "x.ckpt"})
    with xr.open_dataset(path) as ds:
        np.testing.assert_allclose(ds["cam"].values, result.cam)
        np.testing.assert_array_equal(ds["target_mask"].values.astype(bool), result.target_mask)
        np.testing.assert_array_equal(ds["reference"].values, result.reference)
        assert ds.attrs["task"] == "FLOE" and ds.attrs["class_index"] == -1
        assert ds.attrs["layer"] == "encoder.layer2"  # the default, with HiResCAM
        assert ds.attrs["method"] == "hirescam"
        assert ds.attrs["checkpoint"] == "x.ckpt"
        assert list(ds["row"].values[[0, -1]]) == [0, 95]
    assert not list(tmp_path.glob(".*"))  # no temporary file left


@pytest.mark.parametrize("layer", [None, "decoders.SOD.project"])
def test_tiled_hirescam_equals_a_single_pass(model, scene, layer):
    spec = TargetSpec("SOD", None, "reference")
    tiled = explain_scene(
        model,
        scene,
        scene.features,
        spec,
        CamSettings(layer=layer, method="hirescam"),
        explain_tiling(model, 128),
    )
    assert tiled.tiles == 9 and tiled.exact and tiled.method == "hirescam"
    region = scene.valid[None]
    targets = make_targets(spec, region, references=scene.charts["SOD"][None])
    single = gradcam_batch(
        model, torch.from_numpy(scene.inputs[None]), "SOD", targets, layer, method="hirescam"
    )
    cam = single.cam[0]
    assert cam.max() > 0
    np.testing.assert_allclose(tiled.cam, cam, rtol=0, atol=1e-4 * cam.max())


def test_settings_are_checked_where_they_are_made(model):
    with pytest.raises(ConfigError) as err:
        CamSettings(method="scorecam")
    assert err.value.option == "--method"
    with pytest.raises(ConfigError) as err:
        explain_tiling(model, 128, batch=0)
    assert err.value.option == "--batch"
    with pytest.raises(ConfigError) as err:
        explain_tiling(model, 128, "wide")
    assert err.value.option == "--overlap"


def test_explain_tiling_auto_grows_tiles_until_the_margin_covers_the_field(model):
    radius = -(-model.receptive_field() // 2)
    auto = explain_tiling(model, 32, "auto", 3)
    assert auto.overlap == radius and auto.batch == 3 and not auto.balance
    assert auto.tile == round_up(4 * radius, 32) > 32
    assert explain_tiling(model, 1024).tile == 1024  # large enough already
    rf = explain_tiling(model, 64, "rf")
    assert (rf.tile, rf.overlap) == (64, radius)
    assert (explain_tiling(model, 64, 5).tile, explain_tiling(model, 64, 5).overlap) == (64, 5)
