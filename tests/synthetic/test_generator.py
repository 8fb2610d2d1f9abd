"""The physically based generator: structure, codes, labels through the real conversion, determinism."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from pyproj import Geod

from icecontext.data.io.charts import convert_polygon_codes, parse_polygon_codes
from icecontext.data.io.format import (
    AMSR2_VARIABLES,
    CHART_FILL,
    CHARTS,
    ERA5_VARIABLES,
    N_CLASSES,
    scene_name_from_raw,
)
from icecontext.data.io.scene import open_scene, write_scene
from icecontext.data.io.variables import denormalise
from icecontext.errors import ConfigError
from icecontext.synthetic.generator import generate_scene, n_polygons, truth_summary
from icecontext.synthetic.icechart import CODES_HEADER, FORM_SIZE_M
from icecontext.synthetic.land import ZONE_EDGES_KM, distance_to_zone
from icecontext.synthetic.params import SCALE_PRESETS, SynthParams, resolve_scales
from icecontext.synthetic.writers import physical_to_r2t, physical_to_raw, raw_file_name, write_raw

H, W = 300, 325


@pytest.fixture(scope="module")
def scene():
    return generate_scene(SynthParams(height=H, width=W, service="dmi"), 11)


def test_scene_structure_matches_the_hand_over_contract(scene) -> None:
    assert scene.shape == (H, W)
    for arr in (scene.polygon_ids, scene.hh_db, scene.hv_db, scene.distance_zones):
        assert arr.shape == (H, W) and arr.dtype == np.float32
    assert scene.sar_valid.dtype == bool
    # SAR is NaN exactly outside the swath footprint, finite inside
    assert np.isnan(scene.hh_db[~scene.sar_valid]).all()
    assert np.isfinite(scene.hh_db[scene.sar_valid]).all()
    assert np.isfinite(scene.hv_db[scene.sar_valid]).all()
    assert 0.6 < scene.sar_valid.mean() < 1.0  # slanted edges remove a little
    assert list(scene.amsr2) == list(AMSR2_VARIABLES)
    assert list(scene.era5) == list(ERA5_VARIABLES)
    for arr in (*scene.amsr2.values(), *scene.era5.values()):
        assert arr.shape == (H // 25, W // 25) and arr.dtype == np.float64
    assert set(scene.amsr2_attrs) == set(AMSR2_VARIABLES)
    assert scene.amsr2_attrs["btemp_36_5h"]["AMSR2_swaths"].startswith("GW1AM2_")


def test_names_follow_the_raw_and_r2t_conventions(scene) -> None:
    assert scene_name_from_raw(scene.original_id) == scene.scene_name
    assert scene.service == "dmi"
    assert scene.original_id.endswith(f"_icechart_{scene.icechart_id}.nc")
    assert scene.icechart_id.startswith("dmi_") and scene.icechart_id.endswith("_RIC")
    cis = generate_scene(SynthParams(height=60, width=60, service="cis"), 3)
    assert cis.icechart_id.startswith("cis_SGRDI") and cis.icechart_id.endswith("_pl_a")
    assert scene_name_from_raw(cis.original_id) == cis.scene_name


def test_scene_time_parameter_sets_the_name() -> None:
    t = datetime(2020, 3, 4, 5, 6, 7)
    s = generate_scene(SynthParams(height=60, width=60, service="cis", scene_time=t), 1)
    assert s.scene_name == "20200304T050607_cis"
    assert s.truth["month"] == 3
    # moving the time within the month changes the names only (how synth resolves clashes)
    later = generate_scene(
        SynthParams(height=60, width=60, service="cis", scene_time=t.replace(second=8)), 1
    )
    assert later.scene_name == "20200304T050608_cis"
    np.testing.assert_array_equal(later.hh_db, s.hh_db)
    assert later.polygon_codes == s.polygon_codes
    np.testing.assert_array_equal(later.tiepoints.latitude, s.tiepoints.latitude)


def test_tiepoints_are_line_major_40m_units_and_incidence_rises(scene) -> None:
    tp = scene.tiepoints
    for arr in (tp.line, tp.sample, tp.latitude, tp.longitude, tp.incidence_angle, tp.height):
        assert arr.shape == (441,) and arr.dtype == np.float64
    assert (tp.line[:21] == 0).all() and tp.line[21] > 0  # line-major
    assert tp.line.max() == 2 * H - 1 and tp.sample.max() == 2 * W - 1
    ia = tp.incidence_angle.reshape(21, 21)
    assert (np.diff(ia, axis=1) > 0).all()  # rises with the sample index
    assert np.allclose(ia, ia[0])  # constant down each column
    assert 19.0 < ia.min() < 21.5 and 45.5 < ia.max() < 47.5
    assert (tp.latitude > 50).all() and (tp.latitude < 86).all()
    # the grid spans the scene on the ground: 300 lines = 24 km, 325 samples = 26 km
    geod = Geod(ellps="WGS84")
    lat, lon = tp.latitude.reshape(21, 21), tp.longitude.reshape(21, 21)
    _, _, along = geod.inv(lon[0, 0], lat[0, 0], lon[-1, 0], lat[-1, 0])
    _, _, across = geod.inv(lon[0, 0], lat[0, 0], lon[0, -1], lat[0, -1])
    assert along / 1000 == pytest.approx((2 * H - 1) * 0.04, rel=0.01)
    assert across / 1000 == pytest.approx((2 * W - 1) * 0.04, rel=0.01)


def test_polygon_codes_parse_and_cover_the_ids(scene) -> None:
    assert scene.polygon_codes[0] == CODES_HEADER
    table = parse_polygon_codes(scene.polygon_codes)
    ids = set(np.unique(scene.polygon_ids[np.isfinite(scene.polygon_ids)]).astype(int).tolist())
    assert ids <= {int(i) for i in table.column("poly_id")}
    for row in scene.polygon_codes[1:]:
        cols = row.split(";")
        assert len(cols) == 15 and cols[-1] in ("I", "W")
        assert all(c == "-9" or (len(c) == 2 and c.isdigit()) for c in cols[1:13])


def test_polygon_ids_are_nan_exactly_on_land_and_outside_the_chart(scene) -> None:
    land = scene.truth["land"]
    assert np.isnan(scene.polygon_ids[land]).all()
    assert np.isfinite(scene.polygon_ids).any()


def test_distance_zone_zero_exactly_on_land() -> None:
    s = generate_scene(SynthParams(height=H, width=W, land_fraction=0.2), 5)
    land = s.truth["land"]
    assert 0.1 < land.mean() < 0.3
    np.testing.assert_array_equal(s.distance_zones == 0, land)
    zones = s.distance_zones
    assert set(np.unique(zones)) <= set(range(42))
    # next to the coast the zones are the smallest sea zones (0-0.5 km = one 80 m pixel)
    from scipy import ndimage

    coast = ndimage.binary_dilation(land) & ~land
    assert (zones[coast] == 1).all()
    # and zones grow away from land
    far = ndimage.distance_transform_edt(~land) > 100
    assert zones[far].min() > zones[coast].max()


def test_zone_bins_match_the_format_table() -> None:
    km = np.array([0.01, 0.5, 0.51, 1.0, 1.5, 19.9, 20.5, 49.0, 55.0, 99.0, 101.0, 299.0, 301.0])
    zones = distance_to_zone(km, np.zeros(km.shape, dtype=bool))
    assert zones.tolist() == [1, 1, 2, 2, 3, 21, 22, 27, 28, 32, 33, 40, 41]
    assert len(ZONE_EDGES_KM) == 40


def test_labels_come_from_the_codes_and_keep_the_chart_invariants(scene) -> None:
    ds = physical_to_r2t(scene)
    sic, sod, floe = (ds[c].values for c in CHARTS)
    for chart, values in zip(CHARTS, (sic, sod, floe), strict=True):
        present = set(np.unique(values).tolist())
        assert present <= set(range(N_CLASSES[chart])) | {CHART_FILL}, chart
    np.testing.assert_array_equal(sic == 0, sod == 0)
    np.testing.assert_array_equal(sic == 0, floe == 0)
    # the classes of each polygon are those of converting its codes
    classes = convert_polygon_codes(scene.polygon_codes)
    valid = scene.sar_valid & np.isfinite(scene.polygon_ids)
    checked = 0
    for k, pid in enumerate(classes.poly_ids):
        inside = valid & (scene.polygon_ids == pid)
        if inside.any():
            checked += 1
            for chart, values in zip(CHARTS, (sic, sod, floe), strict=True):
                assert (values[inside] == classes.chart(chart)[k]).all(), (chart, pid)
    assert checked >= 2


@pytest.mark.parametrize("service", ["dmi", "cis"])
def test_written_scene_passes_the_validator(tmp_path: Path, service: str) -> None:
    s = generate_scene(SynthParams(height=H, width=W, service=service), 2)
    path = write_scene(physical_to_r2t(s), tmp_path / f"{s.scene_name}_prep.nc")
    ds = open_scene(path, require_labels=True)  # validates
    assert ds.attrs["scene_name"] == s.scene_name
    # HH is z-scored dB: back in physical units within the clipping range
    hh = denormalise("nersc_sar_primary", ds["nersc_sar_primary"].values)
    valid = ds["nersc_sar_primary"].values != 0
    assert hh[valid].min() >= -35.0 - 1e-3 and hh[valid].max() <= 5.0 + 1e-3


def test_same_seed_same_scene_and_different_seed_differs() -> None:
    p = SynthParams(height=120, width=130)
    a, b, c = generate_scene(p, 4), generate_scene(p, 4), generate_scene(p, 5)
    np.testing.assert_array_equal(a.hh_db, b.hh_db)
    np.testing.assert_array_equal(a.polygon_ids, b.polygon_ids)
    assert a.polygon_codes == b.polygon_codes
    for v in AMSR2_VARIABLES:
        np.testing.assert_array_equal(a.amsr2[v], b.amsr2[v])
    assert truth_summary(a) == truth_summary(b)
    assert a.scene_name != c.scene_name
    assert not np.array_equal(np.nan_to_num(a.hh_db), np.nan_to_num(c.hh_db))


def test_same_seed_writes_byte_identical_files(tmp_path: Path) -> None:
    p = SynthParams(height=100, width=110)
    paths = []
    for k in range(2):
        s = generate_scene(p, 9)
        paths.append(write_scene(physical_to_r2t(s), tmp_path / str(k) / "x_prep.nc"))
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_same_seed_writes_byte_identical_raw_files(tmp_path: Path) -> None:
    p = SynthParams(height=60, width=70)
    paths = []
    for k in range(2):
        s = generate_scene(p, 9)
        paths.append(write_raw(physical_to_raw(s, 9), tmp_path / str(k) / raw_file_name(s)))
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_truth_records_scales_and_rendered_parts(scene) -> None:
    t = truth_summary(scene)
    assert t["scales"] == SCALE_PRESETS["medium"].model_dump()
    assert "ice_fraction" not in t  # arrays are left out of the summary
    assert len(t["polygons"]) == n_polygons(SynthParams(height=H, width=W))
    for poly in t["polygons"]:
        for part in poly["parts"]:
            if part["kind"] == "floes" or part["kind"] == "subpixel":
                lo, hi = FORM_SIZE_M[part["form"]]  # type: ignore[misc]
                assert lo / 80 - 1e-9 <= part["diameter_px"] <= hi / 80 + 1e-9
    coded = [p["ice_fraction_coded"] for p in t["polygons"] if p["area_px"] > 500]
    rendered = [p["ice_fraction_rendered"] for p in t["polygons"] if p["area_px"] > 500]
    np.testing.assert_allclose(rendered, coded, atol=0.06)


def test_keep_truth_arrays_off_drops_the_arrays() -> None:
    s = generate_scene(SynthParams(height=60, width=60, keep_truth_arrays=False), 0)
    assert not any(isinstance(v, np.ndarray) for v in s.truth.values())


def test_scale_presets_and_multipliers_resolve() -> None:
    assert resolve_scales("coarse") == SCALE_PRESETS["coarse"]
    doubled = resolve_scales("2")
    assert doubled.sic_cluster_px == 2 * SCALE_PRESETS["medium"].sic_cluster_px
    assert doubled.floe_size_factor == 2.0
    with pytest.raises(ConfigError, match="--scale.*unknown scale 'huge'"):
        resolve_scales("huge")
    with pytest.raises(ConfigError, match="--scale"):
        resolve_scales("-1")
