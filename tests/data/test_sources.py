"""SceneSource: store and NetCDF back-ends serve identical windows; padding; bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from icecontext.data.io.format import AMSR2_VARIABLES, CHARTS, INPUT_VARIABLES
from icecontext.data.io.geometry import block_chart, block_mean, read_coarse_window
from icecontext.data.io.scene import find_scenes, open_scene
from icecontext.data.io.tiepoints import r2t_latlon
from icecontext.data.io.variables import LATLON_FEATURES, month_encoding
from icecontext.data.loader.sources import ArraySource, NetCDFSource, store_source
from icecontext.data.store.prepare import prepare_store
from icecontext.data.store.prepared import PreparedStore
from icecontext.errors import DataError

FILE_FEATURES = list(INPUT_VARIABLES)


@pytest.fixture(scope="module")
def stores(scene_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    out = {}
    for k in (1, 2):
        path = tmp_path_factory.mktemp(f"store_k{k}") / "store"
        prepare_store(scene_dir, path, downsample=k, progress=False)
        out[k] = path
    return out


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("window", [(0, 0, 64, 64), (37, 11, 50, 73), (-20, 150, 90, 120)])
def test_store_and_netcdf_serve_the_same_window(scene_dir, stores, k, mode, window) -> None:
    path = find_scenes(scene_dir)[1]
    nc = NetCDFSource(path, downsample=k, upsampling=mode)
    zs = store_source(PreparedStore(stores[k]), nc.name, upsampling=mode)
    assert (zs.shape, zs.full_shape, zs.downsample) == (nc.shape, nc.full_shape, k)
    feats = [*FILE_FEATURES, "month_sin", "month_cos", *LATLON_FEATURES]
    np.testing.assert_array_equal(zs.read_inputs(window, feats), nc.read_inputs(window, feats))
    for chart in CHARTS:
        np.testing.assert_array_equal(zs.read_charts(window)[chart], nc.read_charts(window)[chart])
    np.testing.assert_array_equal(zs.valid_mask(window), nc.valid_mask(window))


def test_k1_window_equals_the_file_values(scene_dir) -> None:
    path = find_scenes(scene_dir)[0]
    src = NetCDFSource(path)
    ds = open_scene(path)
    window = (13, 27, 101, 77)
    r, c, h, w = window
    x = src.read_inputs(window, ["nersc_sar_secondary", "distance_map", "btemp_89_0v"])
    np.testing.assert_array_equal(x[0], ds["nersc_sar_secondary"].values[r : r + h, c : c + w])
    np.testing.assert_array_equal(x[1], ds["distance_map"].values[r : r + h, c : c + w])
    amsr = ds["btemp_89_0v"].values[None]
    expected = read_coarse_window(lambda rs, cs: amsr[:, rs, cs], amsr.shape[1:], window)
    np.testing.assert_array_equal(x[2], expected[0])
    np.testing.assert_array_equal(
        src.read_charts(window)["SOD"], ds["SOD"].values[r : r + h, c : c + w]
    )


def test_downsampled_source_applies_the_documented_rules(scene_dir) -> None:
    path = find_scenes(scene_dir)[0]
    ds = open_scene(path)
    src = NetCDFSource(path, downsample=5)
    assert src.shape == (40, 45)
    valid80 = ds["nersc_sar_primary"].values != 0
    hh = src.read_inputs((0, 0, 40, 45), ["nersc_sar_primary"])[0]
    np.testing.assert_allclose(
        hh, block_mean(ds["nersc_sar_primary"].values, 5, valid80), rtol=1e-6
    )
    np.testing.assert_array_equal(
        src.read_charts((0, 0, 40, 45))["SIC"], block_chart(ds["SIC"].values, 5, 11)
    )
    # no label is invented where any 80 m pixel of the block was masked
    masked_any = (ds["SIC"].values == 255).reshape(40, 5, 45, 5).any(axis=(1, 3))
    assert (src.read_charts((0, 0, 40, 45))["SIC"][masked_any] == 255).all()


def test_window_past_the_scene_is_padded_with_0_and_255(scene_dir) -> None:
    src = NetCDFSource(find_scenes(scene_dir)[0])
    h, w = src.shape
    window = (h - 10, w - 20, 30, 50)
    x = src.read_inputs(window, ["nersc_sar_primary", "btemp_6_9h", "month_sin"])
    charts = src.read_charts(window)
    valid = src.valid_mask(window)
    assert (x[:, 10:, :] == 0).all() and (x[:, :, 20:] == 0).all()
    assert all(
        (charts[c][10:, :] == 255).all() and (charts[c][:, 20:] == 255).all() for c in CHARTS
    )
    assert not valid[10:, :].any() and not valid[:, 20:].any()
    # inside: the 2 km channel is never masked and month is the scene's month
    assert (x[1, :10, :20] != 0).all()
    assert np.allclose(x[2, :10, :20], month_encoding(src.month)[0])
    outside = src.read_inputs((h + 5, 0, 8, 8), ["btemp_6_9h"])
    assert (outside == 0).all()


def test_channels_come_in_the_requested_order(scene_dir) -> None:
    src = NetCDFSource(find_scenes(scene_dir)[0])
    window = (5, 5, 40, 40)
    forward = src.read_inputs(
        window, ["nersc_sar_primary", "sar_incidenceangle", *AMSR2_VARIABLES[:3]]
    )
    backward = src.read_inputs(
        window, [*AMSR2_VARIABLES[:3][::-1], "sar_incidenceangle", "nersc_sar_primary"]
    )
    np.testing.assert_array_equal(forward[::-1], backward)


def test_feature_not_in_the_store_names_feature_and_store(scene_dir, tmp_path) -> None:
    store = tmp_path / "sar_only"
    prepare_store(scene_dir, store, features=["sar"], progress=False)
    prepared = PreparedStore(store)
    src = store_source(prepared, prepared.names[0])
    with pytest.raises(DataError, match=r"btemp_18_7h.*sar_only|sar_only.*btemp_18_7h"):
        src.read_inputs((0, 0, 8, 8), ["nersc_sar_primary", "btemp_18_7h"])
    with pytest.raises(DataError, match="btemp_18_7h") as info:
        prepared.check_features(["btemp_18_7h"])
    assert str(store) in str(info.value)


def test_scene_not_in_the_store_names_scene_and_store(stores) -> None:
    with pytest.raises(DataError, match=r"20991231T000000_dmi.*store"):
        store_source(PreparedStore(stores[1]), "20991231T000000_dmi")


def test_zarr_source_survives_pickling_for_workers(stores) -> None:
    prepared = PreparedStore(stores[1])
    src = store_source(prepared, prepared.names[0])
    before = src.read_inputs((3, 4, 20, 20), ["nersc_sar_primary", "t2m"])
    clone = pickle.loads(pickle.dumps(src))
    assert clone._data is None  # handles are reopened in the receiving process
    np.testing.assert_array_equal(
        clone.read_inputs((3, 4, 20, 20), ["nersc_sar_primary", "t2m"]), before
    )


def test_array_source_and_metadata(scene_dir) -> None:
    from icecontext.data.io.layers import scene_layers

    ds = open_scene(find_scenes(scene_dir)[2])
    src = ArraySource(scene_layers(ds, ["nersc_sar_primary", "t2m"]))
    assert src.features[:2] == ("nersc_sar_primary", "t2m")
    assert src.service == ds.attrs["scene_name"][16:19]
    assert src.month == int(ds.attrs["scene_name"][4:6])
    hist = src.histograms()
    assert int(hist["SIC"].sum()) == 200 * 225
    assert int(src.block_counts()[0].sum()) == int(
        ((ds["SIC"] != 255) | (ds["SOD"] != 255) | (ds["FLOE"] != 255)).sum()
    )


def test_netcdf_source_reads_test_labels_and_release(test_set_dir) -> None:
    path = find_scenes(test_set_dir)[0]
    src = NetCDFSource(path)
    labels = xr.open_dataset(str(path).replace("_prep.nc", "_prep_reference.nc"))
    np.testing.assert_array_equal(
        src.read_charts((0, 0, 50, 60))["FLOE"], labels["FLOE"].values[:50, :60]
    )
    src.release()
    assert src._data is None
    assert src.read_chart_stack((0, 0, 2, 2)).shape == (3, 2, 2)


@pytest.mark.parametrize("k", [1, 3])
def test_latlon_features_follow_the_tie_point_grid(scene_dir, k) -> None:
    path = find_scenes(scene_dir)[0]
    ds = open_scene(path)
    src = NetCDFSource(path, downsample=k)
    lat, lon = r2t_latlon(
        ds["sar_grid2d_latitude"].values,
        ds["sar_grid2d_longitude"].values,
        (200, 225),
        downsample=k,
    )
    window = (7, 19, 31, 40)
    r, c, h, w = window
    x = src.read_inputs(window, list(LATLON_FEATURES))
    np.testing.assert_allclose(x[0], np.sin(np.deg2rad(lat[r : r + h, c : c + w])), atol=1e-6)
    np.testing.assert_allclose(x[3], np.cos(np.deg2rad(lon[r : r + h, c : c + w])), atol=1e-6)
    # the fixture's latitude grows down the lines (axis 0 of the tie-point grid)
    assert x[0][-1, 0] > x[0][0, 0]


@pytest.mark.parametrize("window", [(20, 30, 64, 64), (-10, 190, 64, 64), (5, 7, 40, 64)])
def test_transformed_read_equals_transforming_the_window(stores, window) -> None:
    from icecontext.data.io.geometry import Transform

    prepared = PreparedStore(stores[1])
    src = store_source(prepared, prepared.names[0], upsampling="bilinear")
    feats = [*FILE_FEATURES, "month_sin", *LATLON_FEATURES]
    x0, c0 = src.read_window(window, feats)
    for t in (Transform(True, False, 1), Transform(False, True, 2), Transform(True, True, 3)):
        x, c = src.read_window(window, feats, transform=t)
        np.testing.assert_allclose(x, t.apply(x0), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(c, t.apply(c0))


@pytest.mark.parametrize("window", [(20, 30, 64, 64), (-10, 190, 64, 64)])
def test_read_into_a_batch_slot_equals_a_fresh_read(stores, window) -> None:
    from icecontext.data.io.geometry import Transform

    prepared = PreparedStore(stores[1])
    src = store_source(prepared, prepared.names[0])
    feats = [*FILE_FEATURES, "month_sin"]
    t = Transform(True, False, 1)
    x0, c0 = src.read_window(window, feats, transform=t)
    batch = np.full((2, *x0.shape), np.nan, dtype=np.float32)  # stale contents
    x, c = src.read_window(window, feats, transform=t, out=batch[1])
    assert x is not None and np.shares_memory(x, batch)
    np.testing.assert_array_equal(batch[1], x0)  # padding zeroed, not left stale
    np.testing.assert_array_equal(c, c0)
    assert np.isnan(batch[0]).all()
    with pytest.raises(ValueError, match="out must be float32"):
        src.read_window(window, feats, out=np.empty(x0.shape, dtype=np.float64))


def test_threads_open_a_store_scene_once(stores) -> None:
    from concurrent.futures import ThreadPoolExecutor

    prepared = PreparedStore(stores[1])
    src = store_source(prepared, prepared.names[0])
    for _ in range(5):
        src.release()
        with ThreadPoolExecutor(4) as pool:
            layers = list(pool.map(lambda _: src._layers(), range(8)))
        assert all(la is layers[0] for la in layers)
