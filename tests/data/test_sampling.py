"""Patch sampling: valid-pixel rule, class balance, augmentation, padding, masked scenes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from icecontext.data.io.layers import SceneLayers, compute_block_counts, scene_layers
from icecontext.data.loader.sampling import (
    PatchSampler,
    SamplingSettings,
    Transform,
    class_weights,
    labelled_fraction,
    scene_candidates,
)
from icecontext.data.loader.sources import ArraySource
from icecontext.errors import ConfigError, DataError
from icecontext.testing import default_scene_name, make_scene_dataset


def synthetic_source(charts: np.ndarray, seed: int = 0, name: str | None = None) -> ArraySource:
    """A source whose only input channel is SIC as float (so augmentation can be checked)."""
    h, w = charts.shape[1:]
    layers = SceneLayers(
        name=name or default_scene_name(seed),
        full_shape=(h, w),
        downsample=1,
        sar_variables=("nersc_sar_primary",),
        coarse_variables=("btemp_6_9h",),
        sar=charts[:1].astype(np.float32),
        coarse=np.random.default_rng(seed).normal(size=(1, h // 25, w // 25)).astype(np.float32),
        charts=charts,
        valid=(charts != 255).any(axis=0),
        tiepoints=np.zeros((2, 21, 21)),
        block_counts=compute_block_counts(charts),
        coarse_shape=(h // 25, w // 25),
    )
    return ArraySource(layers)


def chart_stack(
    h: int, w: int, value: int = 3, masked: tuple[slice, slice] | None = None
) -> np.ndarray:
    charts = np.zeros((3, h, w), dtype=np.uint8)
    charts[0], charts[1], charts[2] = value, min(value, 5), min(value, 6)
    if masked is not None:
        charts[(slice(None), *masked)] = 255
    return charts


@pytest.fixture(scope="module")
def sources() -> list[ArraySource]:
    return [
        ArraySource(scene_layers(make_scene_dataset(200 + 20 * i, 225, seed=i)), where=f"s{i}")
        for i in range(3)
    ]


FEATURES = ["nersc_sar_primary", "sar_incidenceangle", "btemp_36_5h", "t2m", "month_cos"]


def test_same_generator_same_patch_and_different_seeds_differ(sources) -> None:
    sampler = PatchSampler(sources, FEATURES, SamplingSettings(patch_size=64))
    a = sampler.draw(np.random.default_rng(7))
    b = sampler.draw(np.random.default_rng(7))
    c = sampler.draw(np.random.default_rng(8))
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.charts, b.charts)
    assert (a.scene, a.window, a.transform) == (b.scene, b.window, b.transform)
    assert (a.scene, a.window) != (c.scene, c.window)
    assert a.x.shape == (5, 64, 64) and a.x.dtype == np.float32
    assert a.charts.shape == (3, 64, 64) and a.charts.dtype == np.uint8


@pytest.mark.parametrize("fraction", [0.3, 0.8])
def test_every_patch_meets_the_minimum_labelled_fraction(sources, fraction) -> None:
    settings = SamplingSettings(patch_size=48, min_valid_fraction=fraction, max_attempts=50)
    sampler = PatchSampler(sources, FEATURES, settings)
    for i in range(60):
        patch = sampler.draw(np.random.default_rng(i))
        assert patch.labelled_fraction >= fraction
        assert labelled_fraction(patch.charts) == pytest.approx(patch.labelled_fraction)


def test_candidates_exclude_masked_regions() -> None:
    # left half masked: windows that lie in it are never candidates
    charts = chart_stack(128, 256, masked=(slice(None), slice(0, 128)))
    src = synthetic_source(charts)
    cand = scene_candidates(
        src.block_counts(), src.shape, SamplingSettings(patch_size=64, min_valid_fraction=0.5)
    )
    rng = np.random.default_rng(0)
    cols = [cand.draw(rng)[1] for _ in range(300)]
    assert min(cols) >= 64 - 31  # at least ~half of the window in the labelled half
    assert max(cols) <= 256 - 64


@pytest.mark.parametrize(
    ("hflip", "vflip", "k"), list(itertools.product([False, True], [False, True], range(4)))
)
def test_inverse_view_fuses_each_transform(hflip, vflip, k) -> None:
    t = Transform(hflip, vflip, k)
    x = np.arange(2 * 5 * 5, dtype=np.float32).reshape(2, 5, 5)
    result = np.empty_like(x)
    t.inverse_view(result)[...] = x
    np.testing.assert_array_equal(result, t.apply(x))


def test_augmentation_is_identical_for_inputs_and_charts() -> None:
    rng = np.random.default_rng(3)
    charts = rng.integers(0, 11, size=(3, 150, 160)).astype(np.uint8)  # no spatial symmetry
    src = synthetic_source(charts)
    sampler = PatchSampler(
        [src], ["nersc_sar_primary"], SamplingSettings(patch_size=40, min_valid_fraction=0.0)
    )
    seen = set()
    for i in range(40):
        patch = sampler.draw(np.random.default_rng(i))
        np.testing.assert_array_equal(patch.x[0], patch.charts[0].astype(np.float32))
        # and it is the window's content, transformed
        r, c, h, w = patch.window
        np.testing.assert_array_equal(
            patch.charts, patch.transform.apply(charts[:, r : r + h, c : c + w])
        )
        seen.add(patch.transform)
    assert len(seen) >= 6  # flips and rotations are all exercised


def test_no_augmentation_when_disabled() -> None:
    charts = np.random.default_rng(0).integers(0, 11, size=(3, 100, 100)).astype(np.uint8)
    sampler = PatchSampler(
        [synthetic_source(charts)],
        ["nersc_sar_primary"],
        SamplingSettings(patch_size=32, min_valid_fraction=0.0, flip=False, rotate=False),
    )
    for i in range(10):
        patch = sampler.draw(np.random.default_rng(i))
        r, c, h, w = patch.window
        assert patch.transform == Transform()
        np.testing.assert_array_equal(patch.charts, charts[:, r : r + h, c : c + w])


def test_class_weights_are_inverse_frequency_powers() -> None:
    hist = np.zeros(256, dtype=np.int64)
    hist[0], hist[1], hist[4], hist[255] = 900, 100, 0, 5000
    w = class_weights([hist], "SOD", power=1.0)
    assert w.shape == (6,)
    assert w[4] == 0.0 and w[2] == 0.0  # absent classes
    assert w[1] / w[0] == pytest.approx(9.0)
    freq = np.array([0.9, 0.1, 0, 0, 0, 0])
    assert float((freq * w).sum()) == pytest.approx(1.0)  # the average labelled pixel weighs 1
    np.testing.assert_allclose(class_weights([hist], "SOD", power=0.0)[:2], [1.0, 1.0])


def test_class_balance_draws_rare_classes_more_often() -> None:
    # SOD class 5 covers a 40 x 40 corner of a 200 x 200 scene of water (class 0)
    charts = chart_stack(200, 200, value=0)
    charts[:, 160:, 160:] = 5
    src = synthetic_source(charts)

    def rare_share(balance: tuple[str, ...]) -> float:
        settings = SamplingSettings(
            patch_size=48, min_valid_fraction=0.5, class_balance=balance, balance_power=1.0
        )
        sampler = PatchSampler([src], ["nersc_sar_primary"], settings)
        total = 0
        for i in range(150):
            total += int((sampler.draw(np.random.default_rng(i)).charts[1] == 5).sum())
        return total / (150 * 48 * 48)

    plain, balanced = rare_share(()), rare_share(("SOD",))
    assert plain < 0.1
    assert balanced > 3 * plain


def test_scene_weights_follow_the_setting() -> None:
    small = synthetic_source(chart_stack(64, 64), seed=1)
    large = synthetic_source(chart_stack(256, 256), seed=2)
    for weighting, expected in (("uniform", 0.5), ("labelled", 64 * 64 / (64 * 64 + 256 * 256))):
        sampler = PatchSampler(
            [small, large],
            ["nersc_sar_primary"],
            SamplingSettings(patch_size=32, scene_weighting=weighting),
        )
        assert sampler.scene_weights[0] == pytest.approx(expected)
        draws = [sampler.choose_window(np.random.default_rng(i))[0] for i in range(2000)]
        assert np.mean(np.asarray(draws) == 0) == pytest.approx(expected, abs=0.04)


def test_patch_larger_than_the_scene_is_padded_0_and_255() -> None:
    charts = chart_stack(50, 70, value=4)
    src = synthetic_source(charts)
    sampler = PatchSampler(
        [src],
        ["nersc_sar_primary", "btemp_6_9h"],
        SamplingSettings(patch_size=96, min_valid_fraction=0.2, flip=False, rotate=False),
    )
    offsets = set()
    for i in range(30):
        patch = sampler.draw(np.random.default_rng(i))
        r, c, h, w = patch.window
        assert (h, w) == (96, 96)
        assert -46 <= r <= 0 and -26 <= c <= 0  # the whole scene lies inside the patch
        inside = (slice(-r, -r + 50), slice(-c, -c + 70))
        assert (patch.charts[(slice(None), *inside)] == charts).all()
        assert (patch.x[0][inside] == 4).all()
        outside = np.ones((96, 96), dtype=bool)
        outside[inside] = False
        assert (patch.charts[:, outside] == 255).all()
        assert (patch.x[:, outside] == 0).all()  # inputs padded with 0, 2 km channels too
        offsets.add((r, c))
    assert len(offsets) > 10


def test_all_masked_scene_is_skipped_and_all_masked_split_is_an_error(caplog) -> None:
    good = synthetic_source(chart_stack(100, 100), seed=1)
    masked = synthetic_source(np.full((3, 100, 100), 255, dtype=np.uint8), seed=2)
    sampler = PatchSampler([masked, good], ["nersc_sar_primary"], SamplingSettings(patch_size=32))
    assert sampler.skipped == [masked.name]
    assert masked.name in caplog.text
    assert sampler.scene_weights[0] == 0.0
    assert all(sampler.draw(np.random.default_rng(i)).scene == 1 for i in range(30))
    with pytest.raises(DataError, match=rf"no scene has a 32 x 32 window.*{masked.name}"):
        PatchSampler([masked], ["nersc_sar_primary"], SamplingSettings(patch_size=32))


def test_unreachable_fraction_is_an_error_naming_the_option() -> None:
    src = synthetic_source(chart_stack(100, 100, masked=(slice(0, 100), slice(0, 60))))
    with pytest.raises(DataError, match="min_valid_fraction"):
        PatchSampler(
            [src], ["nersc_sar_primary"], SamplingSettings(patch_size=100, min_valid_fraction=0.9)
        )


def test_bad_settings_and_features(sources) -> None:
    with pytest.raises(ConfigError, match="data.min_valid_fraction"):
        SamplingSettings(patch_size=32, min_valid_fraction=1.5)
    with pytest.raises(ConfigError, match="data.class_balance"):
        SamplingSettings(patch_size=32, class_balance=("ICE",))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="empty"):
        PatchSampler([], FEATURES, SamplingSettings(patch_size=32))
    with pytest.raises(DataError, match="geo_sin_lat|btemp_1_0h|unknown feature"):
        PatchSampler(sources, ["btemp_1_0h"], SamplingSettings(patch_size=32))
