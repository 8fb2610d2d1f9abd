"""Tiled full-scene prediction equals a whole-scene pass; masks, upsampling, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from icecontext.data.io.format import CHART_FILL, CHARTS
from icecontext.errors import ConfigError, DataError
from icecontext.inference import predictor
from icecontext.inference.predictor import (
    ExtraOutputs,
    has_input_data,
    predict_scene,
    resolve_precision,
    upsample_nearest,
)
from icecontext.inference.tiling import TileSettings, round_up


class ArraySource:
    """An in-memory SceneSource: inputs (C, h, w) at the source's resolution."""

    def __init__(
        self, inputs, valid=None, downsample=1, full_shape=None, name="20190101T000000_dmi"
    ):
        self.name = name
        self.inputs = inputs.astype(np.float32)
        self.valid = np.ones(inputs.shape[1:], bool) if valid is None else valid
        self.downsample = downsample
        self.shape = inputs.shape[1:]
        self.full_shape = full_shape or (self.shape[0] * downsample, self.shape[1] * downsample)
        self.features = [f"f{i}" for i in range(inputs.shape[0])]
        self.reads = []

    def read_inputs(self, window, features):
        r, c, h, w = window
        assert r >= 0 and r + h <= self.shape[0] and c >= 0 and c + w <= self.shape[1]
        self.reads.append(window)
        idx = [self.features.index(f) for f in features]
        return self.inputs[idx, r : r + h, c : c + w]

    def valid_mask(self, window):
        r, c, h, w = window
        return self.valid[r : r + h, c : c + w]


class TinyNet(nn.Module):
    """Stride-4 conv net with bilinear upsampling: receptive field 1 + 2 + 4 + 8*2*... < 60 px."""

    def __init__(self, c_in: int, sic_regression: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(c_in, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=2, dilation=2),
        )
        self.sic_regression = sic_regression
        self.heads = nn.ModuleDict(
            {
                "SIC": nn.Conv2d(8, 1 if sic_regression else 11, 1),
                "SOD": nn.Conv2d(8, 6, 1),
                "FLOE": nn.Conv2d(8, 7, 1),
            }
        )

    def forward(self, x):
        z = self.body(x)
        out = {}
        for k, head in self.heads.items():
            y = head(z)
            if k == "SIC" and self.sic_regression:
                y = 5 + 5 * torch.tanh(y)
            out[k] = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


def _whole_scene(model, inputs, align):
    c, h, w = inputs.shape
    ph, pw = round_up(h, align), round_up(w, align)
    x = np.zeros((1, c, ph, pw), np.float32)
    x[0, :, :h, :w] = inputs
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(x))
    return out


@pytest.fixture
def scene():
    rng = np.random.default_rng(1)
    inputs = rng.normal(size=(3, 150, 203)).astype(np.float32)
    valid = np.ones((150, 203), bool)
    valid[:20, :30] = False
    return inputs, valid


def test_tiled_equals_whole_scene_pass(scene):
    inputs, valid = scene
    model = TinyNet(3)
    src = ArraySource(inputs, valid)
    pred = predict_scene(
        model,
        src,
        src.features,
        tiling=TileSettings(tile=64, overlap=20, batch=3, align=4),
        outputs=ExtraOutputs(probabilities=True),
    )
    assert pred.tiles > 9  # really tiled
    whole = _whole_scene(model, inputs, 4)
    h, w = inputs.shape[1:]
    sic = torch.round(whole["SIC"][0, 0]).clamp(0, 10).numpy()[:h, :w]
    for task in CHARTS:
        ref = sic if task == "SIC" else whole[task][0].argmax(0).numpy()[:h, :w]
        ref = ref.astype(np.uint8)
        ref[~valid] = CHART_FILL
        np.testing.assert_array_equal(pred.classes[task], ref, err_msg=task)
    p_ref = torch.softmax(whole["SOD"][0], 0).numpy()[:, :h, :w]
    np.testing.assert_allclose(pred.probabilities["SOD"][:, valid], p_ref[:, valid], atol=1e-5)
    assert np.isnan(pred.probabilities["SOD"][:, ~valid]).all()  # masked stays masked
    assert "SIC" not in pred.probabilities  # regression head has no distribution
    assert pred.full_shape == (h, w) and pred.downsample == 1


def test_too_small_margin_is_not_exact(scene):
    """The comparison above can fail: without context margin the tiles disagree."""
    inputs, valid = scene
    model = TinyNet(3)
    src = ArraySource(inputs, valid)
    pred = predict_scene(
        model,
        src,
        src.features,
        tiling=TileSettings(tile=32, overlap=0, batch=8, align=4),
        outputs=ExtraOutputs(probabilities=True),
    )
    whole = _whole_scene(model, inputs, 4)
    p_ref = torch.softmax(whole["SOD"][0], 0).numpy()[:, : inputs.shape[1], : inputs.shape[2]]
    assert np.abs(pred.probabilities["SOD"][:, valid] - p_ref[:, valid]).max() > 1e-3


def test_batch_size_and_precision_do_not_change_classes_much(scene):
    inputs, valid = scene
    model = TinyNet(3, sic_regression=False)
    src = ArraySource(inputs, valid)
    a = predict_scene(
        model,
        src,
        src.features,
        tiling=TileSettings(tile=64, overlap=20, batch=1, align=4),
    )
    b = predict_scene(
        model,
        src,
        src.features,
        tiling=TileSettings(tile=64, overlap=20, batch=16, align=4),
    )
    for t in CHARTS:
        np.testing.assert_array_equal(a.classes[t], b.classes[t])
    c = predict_scene(
        model,
        src,
        src.features,
        tiling=TileSettings(tile=64, overlap=20, batch=4, align=4),
        precision="bf16",
    )
    agree = np.mean([np.mean(a.classes[t] == c.classes[t]) for t in CHARTS])
    assert agree > 0.9  # bf16 autocast: a few argmax flips near ties only
    assert model.training  # train mode restored


def test_downsampled_source_is_upsampled_to_full_shape(scene):
    inputs, valid = scene
    model = TinyNet(3)
    full = (150 * 3 + 2, 203 * 3 + 1)  # floor-sized grid: two rows / one column left over
    src = ArraySource(inputs, valid, downsample=3, full_shape=full)
    pred = predict_scene(
        model,
        src,
        src.features,
        tiling=TileSettings(tile=64, overlap=20, batch=4, align=4),
    )
    low = predict_scene(
        model,
        ArraySource(inputs, valid),
        src.features,
        tiling=TileSettings(tile=64, overlap=20, batch=4, align=4),
    )
    for t in CHARTS:
        assert pred.classes[t].shape == full
        np.testing.assert_array_equal(pred.classes[t][::3, ::3][:150, :203], low.classes[t])
        np.testing.assert_array_equal(pred.classes[t][-2:, :], pred.classes[t][[-3, -3], :])
        assert (pred.classes[t][:60, :90] == CHART_FILL).all()  # the mask, upsampled


def test_upsample_nearest_rule():
    a = np.arange(6).reshape(2, 3)
    out = upsample_nearest(a, 2, (5, 7))
    assert out.shape == (5, 7)
    assert out[4, 6] == a[1, 2] and out[1, 1] == a[0, 0] and out[2, 3] == a[1, 1]
    assert upsample_nearest(a, 1, (2, 3)) is a


def test_reads_stay_inside_the_scene_and_are_bounded(scene):
    inputs, valid = scene
    src = ArraySource(inputs, valid)
    predict_scene(
        TinyNet(3),
        src,
        src.features,
        tiling=TileSettings(tile=64, overlap=16, batch=2, align=4),
    )
    assert max(h * w for _, _, h, w in src.reads) <= 64 * 64


def test_bad_source_shape_is_a_data_error(scene):
    inputs, valid = scene

    class Broken(ArraySource):
        def read_inputs(self, window, features):
            return super().read_inputs(window, features)[:, :-1]

    src = Broken(inputs, valid)
    with pytest.raises(DataError, match="20190101T000000_dmi"):
        predict_scene(
            TinyNet(3),
            src,
            src.features,
            tiling=TileSettings(tile=64, overlap=16, align=4),
        )


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_on_cuda_and_native_bf16_cpus(native, monkeypatch):
    monkeypatch.setattr(predictor, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("auto", torch.device("cuda:1")) == "bf16"
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "32")
    assert resolve_precision("32", "cuda") == "32"
    assert resolve_precision("16", "cpu") == "16"  # the explicit choice stays (and fails later)


def test_bad_options_name_the_option(scene):
    inputs, valid = scene
    src = ArraySource(inputs, valid)
    # named as typed on the command line: "option '--batch'"
    with pytest.raises(ConfigError, match="option '--batch'"):
        predict_scene(TinyNet(3), src, src.features, tiling=TileSettings(batch=0))
    with pytest.raises(ConfigError, match="option '--precision'"):
        predict_scene(
            TinyNet(3),
            src,
            src.features,
            tiling=TileSettings(tile=64, overlap=16, align=4),
            precision="16",
        )


def test_packed_probabilities_and_tile_confidence(scene):
    inputs, valid = scene
    model = TinyNet(3, sic_regression=False)
    src = ArraySource(inputs, valid)
    tiling = TileSettings(tile=64, overlap=20, batch=4, align=4)
    f = predict_scene(
        model,
        src,
        src.features,
        tiling=tiling,
        outputs=ExtraOutputs(probabilities=True, confidence="max"),
    )
    u = predict_scene(
        model,
        src,
        src.features,
        tiling=tiling,
        outputs=ExtraOutputs(probabilities=True, probability_dtype="uint8", confidence="entropy"),
    )
    for task in CHARTS:
        p, q = f.probabilities[task], u.probabilities[task]
        assert q.dtype == np.uint8 and p.dtype == np.float32
        np.testing.assert_array_equal(q[:, valid], np.round(p[:, valid] * 250).astype(np.uint8))
        assert (q[:, ~valid] == 255).all()
        np.testing.assert_allclose(f.confidence[task][valid], p[:, valid].max(0), atol=1e-6)
        ent = -(p[:, valid] * np.log(p[:, valid])).sum(0) / np.log(p.shape[0])
        np.testing.assert_allclose(u.confidence[task][valid], 1 - ent, atol=1e-5)
        assert np.isnan(u.confidence[task][~valid]).all()
    assert f.valid_pixels == int(valid.sum())


def test_has_input_data(scene):
    inputs, valid = scene
    assert has_input_data(ArraySource(inputs, valid), rows=16)
    assert not has_input_data(ArraySource(inputs, np.zeros_like(valid)), rows=16)


def test_overlap_words_and_numbers():
    from icecontext.errors import ConfigError
    from icecontext.inference.predictor import overlap_for_rf, resolve_overlap

    assert resolve_overlap("rf", 835, 2048) == 418  # the whole radius, uncapped
    assert resolve_overlap("auto", 835, 2048) == overlap_for_rf(835, 2048) == 128
    assert resolve_overlap(40, 835, 2048) == resolve_overlap("40", None, 64) == 40
    from icecontext.inference.predictor import model_overlap

    class WithField(torch.nn.Module):
        def receptive_field(self) -> int:
            return 835

    assert model_overlap(WithField(), "rf", 2048) == 418
    assert model_overlap(WithField(), "auto", 2048) == 128
    assert model_overlap(torch.nn.Conv2d(1, 1, 1), "auto", 2048) == 128  # no field: the cap
    with pytest.raises(ConfigError, match="--overlap.*pools globally"):
        resolve_overlap("rf", None, 2048)
    with pytest.raises(ConfigError, match="--overlap.*>= 0"):
        resolve_overlap(-1, 835, 2048)
    with pytest.raises(ConfigError, match="--overlap.*'rf'"):
        resolve_overlap("wide", 835, 2048)
    with pytest.raises(ConfigError, match="--overlap.*8.5"):
        resolve_overlap(8.5, 835, 2048)  # type: ignore[arg-type]


def test_default_classes_round_sic_halves_away_from_zero_like_the_model():
    """A model without to_classes gets the project's SIC rule, not torch.round's half-to-even."""
    from icecontext.inference.predictor import default_to_classes

    sic = torch.tensor([2.5, 3.5, 0.49, 10.6, -0.5, float("nan")]).view(1, 1, 1, 6)
    sod = torch.zeros(1, 6, 1, 6)
    sod[0, 4] = 1.0
    classes = default_to_classes({"SIC": sic, "SOD": sod})
    assert classes["SIC"].flatten().tolist() == [3, 4, 0, 10, 0, 255]
    assert classes["SOD"].flatten().tolist() == [4] * 6
