"""CAM mass by distance from the target region: synthetic maps with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from icecontext.errors import DataError
from icecontext.explain.distance import (
    distance_km,
    distance_profile,
    explained_field,
    weighted_quantile,
    write_profiles_csv,
    write_summary_csv,
)
from icecontext.models.config import ModelConfig
from icecontext.models.multitask import build_model
from icecontext.models.receptive_field import theoretical_receptive_fields

PX = 0.08  # km


def _grid(n: int = 301) -> tuple[np.ndarray, np.ndarray]:
    rr, cc = np.mgrid[0:n, 0:n]
    centre = n // 2
    point = np.zeros((n, n), bool)
    point[centre, centre] = True
    return np.hypot(rr - centre, cc - centre), point


def test_uniform_disc_around_a_point_target():
    """Mass within r of the centre grows as (r / R)^2: d50 = R / sqrt(2), d90 = R sqrt(0.9)."""
    r, point = _grid()
    radius = 120
    cam = (r <= radius).astype(float)
    p = distance_profile(cam, point, PX)
    assert p.d50_km == pytest.approx(radius / np.sqrt(2) * PX, abs=1.5 * PX)
    assert p.d90_km == pytest.approx(radius * np.sqrt(0.9) * PX, abs=1.5 * PX)
    assert p.inside == pytest.approx(1 / cam.sum())
    # the curve: F(d) = (d / R)^2 up to pixel discretisation
    for d_km in (2.0, 5.0, 8.0):
        i = int(np.searchsorted(p.edges_km, d_km))
        assert p.cumulative[i - 1] == pytest.approx((p.edges_km[i] / (radius * PX)) ** 2, abs=0.02)
    assert p.cumulative[-1] == pytest.approx(1.0)
    assert p.mass.sum() == pytest.approx(1.0)
    assert p.distance_at(0.5) == pytest.approx(p.d50_km, abs=p.edges_km[1] + 1e-9)


def test_ring_at_a_known_distance_and_a_square_target():
    r, _ = _grid()
    target = np.zeros_like(r, bool)
    target[140:161, 140:161] = True  # 21 x 21 square
    # distance from a square: ring of pixels 40 px outside its edge, to the right
    cam = np.zeros_like(r)
    cam[150, 200] = 1.0  # 40 px right of the square's edge (col 160)
    p = distance_profile(cam, target, PX)
    assert p.d50_km == p.d90_km == pytest.approx(40 * PX)
    assert p.inside == 0


def test_cam_on_the_target_only():
    r, _ = _grid(51)
    target = r <= 5
    p = distance_profile(target.astype(float) * 3.0, target, PX)
    assert p.d50_km == p.d90_km == 0.0
    assert p.inside == pytest.approx(1.0)
    assert p.total == pytest.approx(3.0 * target.sum())


def test_bins_and_limits():
    r, point = _grid(101)
    p = distance_profile(np.ones_like(r), point, PX, bin_km=1.0, max_km=3.0)
    np.testing.assert_allclose(p.edges_km, [0, 1, 2, 3])
    # mass beyond max_km is left out of the curve but counts in the total
    assert p.cumulative[-1] < 1.0
    assert p.d90_km > 3.0


def test_distance_transform_uses_the_pixel_size():
    mask = np.zeros((5, 9), bool)
    mask[2, 0] = True
    d = distance_km(mask, 0.4)
    assert d[2, 8] == pytest.approx(3.2)
    assert d[0, 0] == pytest.approx(0.8)


def test_weighted_quantile():
    values = np.array([3.0, 1.0, 2.0, 10.0])
    weights = np.array([1.0, 1.0, 1.0, 1.0])
    assert weighted_quantile(values, weights, 0.5) == 2.0
    assert weighted_quantile(values, weights, 0.51) == 3.0
    assert weighted_quantile(values, weights, 1.0) == 10.0


def test_bad_inputs():
    r, point = _grid(21)
    with pytest.raises(DataError, match="target mask is empty"):
        distance_profile(np.ones_like(r), np.zeros_like(point), PX)
    with pytest.raises(DataError, match="zero everywhere"):
        distance_profile(np.zeros_like(r), point, PX)
    with pytest.raises(ValueError, match="non-negative"):
        distance_profile(-np.ones_like(r), point, PX)


def test_csv_outputs(tmp_path):
    r, point = _grid(41)
    a = distance_profile((r <= 10).astype(float), point, PX, bin_km=0.2)
    b = distance_profile((r <= 20).astype(float), point, PX, bin_km=0.2)
    path = write_profiles_csv({"rates 1,2,3": a, "b": b}, tmp_path / "distance.csv")
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["model", "distance_km", "mass", "cumulative"]
    assert set(frame["model"]) == {"rates 1,2,3", "b"}
    last = frame.groupby("model")["cumulative"].last()
    np.testing.assert_allclose(last.values, 1.0, atol=1e-5)
    rows = [{"model": "a", "d50_km": a.d50_km, "rf": None}, {"model": "b", "d50_km": b.d50_km}]
    summary = pd.read_csv(write_summary_csv(rows, tmp_path / "summary.csv"))
    assert summary["d50_km"].iloc[1] > summary["d50_km"].iloc[0]
    assert summary["rf"].isna().all()


def test_hirescam_reach_grows_with_the_atrous_rate_and_stays_in_the_receptive_field():
    """The distance summary tracks the receptive field with HiResCAM at the encoder output.

    Random tiny models (stride 4) with ASPP rates 1 and 6 explain the same small target;
    the distance holding 90 % of the HiResCAM mass stays within the receptive-field
    radius and grows with the rate. Grad-CAM's does not: its channel weights are global,
    so its mass spreads over the whole input, beyond the receptive field.
    """
    from icecontext.explain.scene import CamSettings, explain_scene, explain_tiling
    from icecontext.explain.targets import TargetSpec

    from .conftest import MemorySource, tiny_model

    x = np.random.default_rng(0).normal(0, 1, (3, 160, 160)).astype(np.float32)
    src = MemorySource(x)
    fixed = np.full((160, 160), 255, np.uint8)
    fixed[76:84, 76:84] = 2
    d90 = {}
    for rates in [(1,), (6,)]:
        model = tiny_model(rates=rates, seed=0)
        # the field of the ASPP and decoder (the layers after encoder.layer2), not the model's
        radius = explained_field(model, "SOD", "encoder.layer2").radius_px
        assert radius < model.receptive_field() / 2
        maps = {
            method: explain_scene(
                model, src, src.features, TargetSpec("SOD", 2),
                CamSettings(layer="encoder.layer2", classes=fixed, method=method),
                explain_tiling(model, 256),
            )
            for method in ("hirescam", "gradcam")
        }  # fmt: skip
        hires = distance_profile(maps["hirescam"].cam, maps["hirescam"].target_mask, 1.0)
        grad = distance_profile(maps["gradcam"].cam, maps["gradcam"].target_mask, 1.0)
        assert hires.d90_km <= radius
        assert grad.d50_km > model.receptive_field() / 2  # half of it beyond the whole field
        d90[rates] = hires.d90_km
    assert d90[(6,)] > 2.5 * d90[(1,)]


def _resnet18_layer2(rates, pooling="none"):
    """ResNet-18 cut after layer2 (output stride 8), ASPP decoders of ``rates``."""
    cfg = {
        "encoder": {"name": "resnet18", "depth": "layer2", "output_stride": 8},
        "aspp": {"rates": list(rates), "channels": 8, "pooling": pooling, "dropout": 0.0},
    }
    return build_model(ModelConfig.model_validate(cfg), 3, seed=0).eval()


def test_explained_field_by_hand_resnet18_layer2_os8_rates_1_2_3():
    """The field of the part after the explained layer, in that layer's cells and in pixels.

    After the encoder output (stride 8): the widest branch, a 3x3 conv of rate 3, adds
    2 x 3 = 6 cells, the 1x1 fusion 0, the 3x3 projection 2, the 1x1 head 0 and the
    bilinear upsampling 1: 1 + 6 + 2 + 1 = 10 cells = 80 px, radius 40 px = 3.2 km at
    80 m. The whole model's field adds the encoder's own 99 px: 99 + 8 x 9 = 171 px.
    """
    model = _resnet18_layer2([1, 2, 3])
    field = explained_field(model, "SOD", "encoder.layer2")
    assert (field.stride_px, field.cells, field.px, field.radius_px) == (8, 10, 80, 40.0)
    assert field.km(1) == pytest.approx(6.4) and field.km(2) == pytest.approx(12.8)
    rf = theoretical_receptive_fields(model)["SOD"]
    assert (rf.encoder_px, rf.total_px) == (99, 171)
    # the same from the model's own theory: whole field minus the encoder's, per cell, + 1
    assert field.cells == (rf.total_px - rf.encoder_px) // rf.output_stride + 1
    assert field.cells == max((b.total_px - rf.encoder_px) // 8 + 1 for b in rf.branches)
    assert explained_field(model, "SOD", "encoder").px == 80  # the encoder's output too
    # inside the decoder: only what follows counts
    by_hand = {
        "decoders.SOD.aspp.branches.3": 1 + 2 + 1,  # fusion 0, projection 2, upsampling 1
        "decoders.SOD.aspp.branches.0": 1 + 2 + 1,
        "decoders.SOD.aspp.project": 1 + 2 + 1,
        "decoders.SOD.project": 1 + 1,  # head 0, upsampling 1
        "heads.SOD": 1 + 1,
    }
    for layer, cells in by_hand.items():
        f = explained_field(model, "SOD", layer)
        assert (f.stride_px, f.cells, f.px) == (8, cells, 8 * cells), layer
    # an earlier encoder stage (stride 4): layer2 (stride 2, three more 3x3 convs) follows
    # 1 + 2 + 3 x 2 x 2 = 15 cells, then the decoder at a jump of 2: + 2 x (6 + 2 + 1) = 33
    f = explained_field(model, "SOD", "encoder.layer1")
    assert (f.stride_px, f.cells, f.px) == (4, 33, 132)
    assert rf.total_px == 43 + 4 * (33 - 1)  # layer1's own field is 43 px
    # not on the SOD path: another task's decoder
    assert explained_field(model, "SOD", "decoders.SIC.project") is None


def test_explained_field_with_global_pooling_is_unbounded_before_the_aspp():
    model = _resnet18_layer2([1, 2], pooling="global")
    assert explained_field(model, "FLOE", "encoder.layer2").px is None
    assert explained_field(model, "FLOE", "encoder.layer2").radius_px is None
    assert explained_field(model, "FLOE", "decoders.FLOE.project").px == 16
    # a local average pooling branch of 3 reads 3 cells, like a rate-1 3x3 branch
    local = _resnet18_layer2([1], pooling="avg:3")
    assert explained_field(local, "FLOE", "encoder.layer2").cells == 1 + 2 + 2 + 1


def test_the_distance_figure_draws_the_explained_radius(tmp_path):
    """The CLI's dotted line: half of the explained part's field, by hand 40 px = 3.2 km."""
    from icecontext.explain.figures import distance_figure

    r, point = _grid(101)
    p = distance_profile((r <= 30).astype(float), point, PX)
    field = explained_field(_resnet18_layer2([1, 2, 3]), "SOD", "encoder.layer2")
    fig = distance_figure({"m": p}, {"m": field.km(1)})
    dotted = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == ":"]
    assert len(dotted) == 1 and dotted[0].get_xdata()[0] == pytest.approx(3.2)
