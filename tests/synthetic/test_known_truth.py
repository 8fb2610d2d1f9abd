"""Known-truth scenes: labels that only a known radius of context resolves."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from icecontext.errors import ConfigError, DataError
from icecontext.synthetic.known_truth import (
    KnownTruthParams,
    ceiling_accuracy,
    context_ceiling,
    disc_mean,
    disc_mean_sd,
    generate_known_truth_scene,
    quantile_classes,
    sic_classes,
    voronoi_values,
)
from icecontext.synthetic.params import SynthParams

RADII = {"SIC": 0.8, "SOD": 1.2, "FLOE": 1.6}  # 10, 15 and 20 pixels at 80 m


@pytest.fixture(scope="module")
def scene():
    params = SynthParams(height=200, width=220, service="cis")
    return generate_known_truth_scene(params, KnownTruthParams(radius_km=RADII), seed=5)


def test_labels_are_classes_of_the_disc_mean_and_masked_outside_the_swath(scene):
    charts = scene.charts
    valid = scene.sar_valid
    for name in ("SIC", "SOD", "FLOE"):
        assert charts[name].dtype == np.uint8 and charts[name].shape == (200, 220)
        assert (charts[name][~valid] == 255).all()
    assert set(np.unique(charts["SIC"][valid])) <= set(range(11))
    assert set(np.unique(charts["SOD"][valid])) == {1, 3, 5}
    assert set(np.unique(charts["FLOE"][valid])) == {2, 3, 4}
    assert scene.truth["radius_px_80m"] == pytest.approx({"SIC": 10, "SOD": 15, "FLOE": 20})
    assert scene.truth["informative_channels"]["SOD"] == {"sar": 1.0, "amsr2:36.5": 0.9}


def test_same_seed_same_scene_other_seed_other_scene():
    params = SynthParams(height=120, width=120, service="dmi")
    truth = KnownTruthParams(radius_km=RADII)
    a = generate_known_truth_scene(params, truth, seed=1)
    b = generate_known_truth_scene(params, truth, seed=1)
    c = generate_known_truth_scene(params, truth, seed=2)
    np.testing.assert_array_equal(a.charts["SOD"], b.charts["SOD"])
    np.testing.assert_array_equal(a.hv_db, b.hv_db)
    assert not np.array_equal(a.charts["SOD"], c.charts["SOD"])


def test_pixels_show_their_own_latent_only(scene):
    valid = scene.sar_valid
    hh = scene.hh_db[valid]
    # HH is bimodal: ice (-14 dB) and water (-22 dB) with 1.2 dB of noise
    assert np.mean(np.abs(hh + 14) < 4) + np.mean(np.abs(hh + 22) < 4) > 0.99
    # one pixel says little about its SIC class; the ice share of its 10 px disc says much
    ice = np.where(valid, scene.hh_db > -18, False).astype(np.float32)
    share = disc_mean(ice, 10.0) / np.maximum(disc_mean(valid.astype(np.float32), 10.0), 1e-6)
    inner = np.zeros_like(valid)
    inner[15:-15, 15:-15] = True
    keep = valid & inner & (disc_mean(valid.astype(np.float32), 10.0) > 0.99)
    sic = scene.charts["SIC"][keep].astype(float)
    assert np.corrcoef(ice[keep], sic)[0, 1] < 0.4
    assert np.corrcoef(share[keep], sic)[0, 1] > 0.7


def test_disc_mean_is_local_and_exact():
    field = np.zeros((61, 61), np.float32)
    field[30, 30 + 12] = 1.0  # 12 px from the centre
    inside = disc_mean(field, 12.0)[30, 30]
    outside = disc_mean(field, 11.5)[30, 30]
    assert inside > 0 and outside == pytest.approx(0.0, abs=1e-6)
    assert disc_mean(np.ones((40, 40), np.float32), 5.0)[20, 20] == pytest.approx(1.0)


def test_disc_mean_sd_normalises_the_label_value():
    rng = np.random.default_rng(0)
    v = voronoi_values((700, 700), 0.25 * 30, rng)
    z = disc_mean(v, 30.0)[40:-40, 40:-40] / disc_mean_sd(0.25, 30.0)
    assert z.std() == pytest.approx(1.0, abs=0.2)
    assert abs(z.mean()) < 0.3


def test_classes_are_equal_probability_bins():
    z = np.random.default_rng(1).standard_normal(200_000)
    sod = quantile_classes(z, [1, 3, 5])
    for c in (1, 3, 5):
        assert np.mean(sod == c) == pytest.approx(1 / 3, abs=0.01)
    sic = sic_classes(z)
    assert np.mean(sic == 5) == pytest.approx(0.1, abs=0.01)
    assert np.mean(sic == 0) == pytest.approx(0.05, abs=0.01)
    assert sic_classes(np.array([stats.norm.ppf(0.74)]))[0] == 7


def test_context_ceiling_rises_to_one_at_the_radius():
    values = [context_ceiling(f, 0.25, draws=100) for f in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert values == sorted(values) and values[-1] == 1.0
    assert values[2] < 0.85  # half the radius misses a large part of the label
    assert ceiling_accuracy(1.0, 3) == pytest.approx(1.0)
    assert ceiling_accuracy(0.0, 3) == pytest.approx(1 / 3, abs=0.01)
    assert ceiling_accuracy(values[2], 3) < 0.75


def test_writers_keep_the_per_pixel_labels_and_refuse_raw(scene):
    from icecontext.synthetic.writers import physical_to_r2t, physical_to_raw

    ds = physical_to_r2t(scene)
    for name in ("SIC", "SOD", "FLOE"):
        np.testing.assert_array_equal(ds[name].values, scene.charts[name])
    assert float(ds["btemp_18_7h"].std()) > 0.5  # standardised, about N(0, 1)
    with pytest.raises(DataError, match="per-pixel labels"):
        physical_to_raw(scene, 0)


def test_amsr2_carries_what_the_truth_says(scene):
    from icecontext.synthetic.fields import block_mean

    ice = (scene.hh_db > -18).astype(np.float32)
    ice2 = block_mean(np.nan_to_num(ice), 25).ravel()
    r18 = np.corrcoef(ice2, scene.amsr2["btemp_18_7h"].ravel())[0, 1]
    r89 = np.corrcoef(ice2, scene.amsr2["btemp_89_0h"].ravel())[0, 1]
    assert r18 > 0.6 and abs(r89) < 0.5


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"radius_km": {"SIC": 1.0, "SOD": 1.0}}, "FLOE"),
        ({"radius_km": {**RADII, "SIC": 0.01}}, "0.16..100"),
        ({"radius_km": RADII, "amsr2_signal": {"19": {"SIC": 0.5}}}, "unknown frequency"),
        ({"radius_km": RADII, "amsr2_signal": {"18.7": {"SIC": 1.0}}}, "below 1"),
        ({"radius_km": RADII, "sod_classes": [1, 9]}, "0..5"),
    ],
)
def test_bad_parameters_name_the_key(params, words):
    from icecontext.config import validate

    with pytest.raises(ConfigError, match=words) as err:
        validate(KnownTruthParams, params, prefix="study.synth.known_truth")
    assert err.value.option.startswith("study.synth.known_truth")
