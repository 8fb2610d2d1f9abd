"""Physical plausibility of generated scenes, checked with numbers from the format reference."""

from __future__ import annotations

import numpy as np
import pytest

from icecontext.data.io.charts import convert_polygon_codes, rasterise_charts
from icecontext.data.io.format import CHART_FILL, CHARTS
from icecontext.synthetic.amsr2 import footprint_sigma_cells, make_amsr2
from icecontext.synthetic.generator import generate_scene
from icecontext.synthetic.icechart import OLD, THICK_FYI
from icecontext.synthetic.params import SynthParams
from icecontext.synthetic.sar import nesz_db, water_hh_db


@pytest.fixture(scope="module")
def water_scene():
    return generate_scene(
        SynthParams(height=300, width=400, water_fraction=1.0, land_fraction=0.0), 3
    )


@pytest.fixture(scope="module")
def ice_scene():
    return generate_scene(
        SynthParams(height=300, width=400, water_fraction=0.0, land_fraction=0.0), 3
    )


def test_open_water_is_bright_at_near_range_and_dark_at_far_range(water_scene) -> None:
    hh = water_scene.hh_db
    near = np.nanmean(hh[:, 20:60])  # ~21-24 deg
    far = np.nanmean(hh[:, -60:-20])  # ~43-46 deg
    assert near - far > 8.0  # CMOD-like: about 0.7-1 dB per degree over 20 degrees
    # HV of water sits near the noise floor: far below HH
    assert np.nanmean(water_scene.hv_db) < np.nanmean(hh) - 8.0


def test_water_law_reproduces_the_reference_table() -> None:
    # format reference §6.2: 3/5/8/12 m/s at 30 deg and 40 deg (HH, wind-direction mean)
    theta = np.array([30.0, 40.0], dtype=np.float32)[:, None]
    wind = np.array([3.0, 5.0, 8.0, 12.0], dtype=np.float32)[None, :]
    got = water_hh_db(wind, theta, np.full((1, 4), np.pi / 4, dtype=np.float32))
    expected = np.array([[-19.7, -16.9, -14.2, -11.8], [-27.5, -24.7, -21.5, -18.2]])
    np.testing.assert_allclose(got, expected, atol=1.0)
    edge = water_hh_db(np.float32(8.0), np.array([20.0, 45.0], np.float32), np.float32(np.pi / 4))
    np.testing.assert_allclose(edge, [-4.1, -24.2], atol=0.01)


def test_noise_floor_follows_the_ew_sub_swaths() -> None:
    theta = np.linspace(19.0, 47.0, 2801).astype(np.float32)
    nesz = nesz_db(theta)
    assert nesz.max() <= -22.0 + 1e-5 and nesz.min() >= -25.0 - 1e-5  # spec: max -22 dB
    # steps at the sub-swath borders: the bowl peaks there
    for border in (29.18, 34.44, 39.63, 43.87):
        k = np.argmin(np.abs(theta - border))
        assert nesz[k] > -22.3


def test_ice_is_brighter_than_water_in_hv_and_warmer_at_36_ghz(water_scene, ice_scene) -> None:
    assert np.nanmean(ice_scene.hv_db) > np.nanmean(water_scene.hv_db) + 3.0
    tb_ice = ice_scene.amsr2["btemp_36_5h"].mean()
    tb_water = water_scene.amsr2["btemp_36_5h"].mean()
    assert tb_ice - tb_water > 50.0  # tie points 235 (FYI) / 176 (MYI) vs 145 K (water)
    assert 120.0 < tb_water < 200.0 and 170.0 < tb_ice < 260.0
    # polarisation difference V - H: large over water, small over ice (§6.4)
    pd_water = (water_scene.amsr2["btemp_18_7v"] - water_scene.amsr2["btemp_18_7h"]).mean()
    pd_ice = (ice_scene.amsr2["btemp_18_7v"] - ice_scene.amsr2["btemp_18_7h"]).mean()
    assert pd_water > 50.0 and pd_ice < 30.0


def test_amsr2_mixes_tie_points_and_blurs_by_footprint() -> None:
    shape = (60, 60)
    water = np.zeros(shape)
    water[:, :30] = 1.0
    fyi = 1.0 - water
    era5 = {
        "u10m_rotated": np.full(shape, 7.0),
        "v10m_rotated": np.zeros(shape),
        "tcwv": np.full(shape, 7.7),
        "tclw": np.zeros(shape),
        "skt": np.full(shape, 250.0),
    }
    tb = make_amsr2(
        water=water,
        stage_fractions={THICK_FYI: fyi},
        land=np.zeros(shape),
        era5=era5,
        month=2,
        rng=np.random.default_rng(0),
    )
    h = tb["btemp_36_5h"]
    assert h[:, 2].mean() == pytest.approx(145.29, abs=1.0)  # open-water tie point
    assert h[:, -3].mean() == pytest.approx(235.15, abs=1.0)  # first-year tie point

    # the 6.9 GHz edge is much wider than the 89 GHz edge (35x62 km vs 3x5 km footprints)
    def width(v: np.ndarray) -> int:
        row = v.mean(axis=0)
        lo, hi = row.min(), row.max()
        return int(((row > lo + 0.1 * (hi - lo)) & (row < lo + 0.9 * (hi - lo))).sum())

    assert width(tb["btemp_6_9h"]) > 3 * width(tb["btemp_89_0h"])
    assert footprint_sigma_cells("6.9") / footprint_sigma_cells("89.0") > 10
    # old ice radiates like multi-year ice: colder at 36.5 GHz than first-year ice
    tb_old = make_amsr2(
        water=water,
        stage_fractions={OLD: fyi},
        land=np.zeros(shape),
        era5=era5,
        month=2,
        rng=np.random.default_rng(0),
    )
    assert tb_old["btemp_36_5v"][:, -3].mean() < h[:, -3].mean()


def test_land_spills_warm_brightness_temperatures_offshore() -> None:
    shape = (40, 120)
    land = np.zeros(shape)
    land[:, :40] = 1.0
    era5 = {
        "u10m_rotated": np.full(shape, 5.0),
        "v10m_rotated": np.zeros(shape),
        "tcwv": np.full(shape, 5.0),
        "tclw": np.zeros(shape),
        "skt": np.full(shape, 260.0),
    }
    tb = make_amsr2(
        water=1.0 - land,
        stage_fractions={},
        land=land,
        era5=era5,
        month=3,
        rng=np.random.default_rng(0),
    )
    low, high = tb["btemp_6_9h"].mean(axis=0), tb["btemp_36_5h"].mean(axis=0)
    assert low[:25].mean() > 220.0 and high[:35].mean() > 220.0  # land: 0.90 x 260 K
    # 10 km offshore the 6.9 GHz footprint still sees the coast, the 36.5 GHz one does not
    assert low[45] > low[-5] + 20.0
    assert high[41] > high[-5] + 20.0 and high[45] < high[-5] + 2.0
    # the spill reaches further at 6.9 GHz (35 x 62 km footprint) than at 36.5 GHz
    spill = {
        var: int((tb[var].mean(axis=0)[40:] > tb[var].mean(axis=0)[-5] + 10.0).sum())
        for var in ("btemp_6_9h", "btemp_36_5h")
    }
    assert spill["btemp_6_9h"] > 2 * spill["btemp_36_5h"]


def test_era5_fields_have_realistic_ranges(ice_scene, water_scene) -> None:
    for s in (ice_scene, water_scene):
        e = s.era5
        assert np.abs(e["u10m_rotated"]).max() < 25 and np.abs(e["v10m_rotated"]).max() < 25
        assert e["t2m"].min() > 225 and e["t2m"].max() < 295
        assert e["skt"].min() > 220 and e["skt"].max() < 300
        assert e["tcwv"].min() > 0 and e["tcwv"].max() < 40
        assert e["tclw"].min() >= 0 and e["tclw"].max() <= 1.2
    # open water never has a skin colder than freezing sea water
    assert water_scene.era5["skt"].min() >= 271.35 - 1.5


def test_class_frequencies_are_roughly_the_datasets() -> None:
    """Over many scenes: ~57 % water, SIC 10 the commonest ice class, all stages present."""
    totals = {c: np.zeros(256) for c in CHARTS}
    water_only = no_water = 0
    for seed in range(16):
        s = generate_scene(
            SynthParams(height=260, width=270, polygon_size_km=8.0, keep_truth_arrays=False),
            100 + seed,
        )
        charts = rasterise_charts(s.polygon_ids, convert_polygon_codes(s.polygon_codes))
        for c in CHARTS:
            v = charts[c][s.sar_valid]
            totals[c] += np.bincount(v, minlength=256)
        sic = charts["SIC"][s.sar_valid]
        sic = sic[sic != CHART_FILL]
        water_only += bool(sic.size and (sic == 0).all())
        no_water += bool(sic.size and (sic > 0).all())
    share = {c: totals[c][:255] / totals[c][:255].sum() for c in CHARTS}
    assert 0.35 < share["SIC"][0] < 0.8  # dataset 57 %
    assert share["SIC"][10] == share["SIC"][1:11].max()  # dataset: SIC 10 is 22 % of pixels
    assert (share["SIC"][1:11] > 0).sum() >= 6
    assert (share["SOD"][1:6] > 0).sum() >= 4
    assert share["SOD"][4] + share["SOD"][5] > 0.5 * share["SOD"][1:6].sum()  # thick FYI + old
    assert (share["FLOE"][1:7] > 0).sum() >= 3
    assert share["FLOE"][5] == share["FLOE"][1:7].max()  # vast floes dominate, as in the data
    masked = totals["SOD"][CHART_FILL] / totals["SOD"].sum()
    assert 0.1 < masked < 0.7  # dataset 48.5 % of all pixels (incl. land and ambiguity)
    assert water_only >= 1 and no_water >= 1
