"""The streaming NetCDF source serves exactly what the loaded NetCDF source serves."""

from __future__ import annotations

import numpy as np
import pytest

from icecontext.data.io.variables import resolve_features
from icecontext.data.loader.sources import NetCDFSource
from icecontext.errors import SceneFormatError
from icecontext.inference.streaming import StreamingNetCDFSource
from icecontext.testing import make_scene_dataset, write_scene_files

FEATURES = ["sar", "incidence", "distance", "amsr2:18.7", "latlon", "month"]


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream")
    write_scene_files(folder, 1, height=130, width=151, seed=2)
    return next(folder.glob("*_prep.nc"))


@pytest.mark.parametrize(("k", "strip_rows"), [(1, 1024), (3, 1024), (1, 16), (3, 7)])
def test_windows_equal_the_loaded_source(scene_file, k, strip_rows):
    """Any window order, strips smaller or larger than the windows: identical values."""
    feats = resolve_features(FEATURES)
    loaded = NetCDFSource(scene_file, feats, k)
    stream = StreamingNetCDFSource(scene_file, feats, k, strip_rows=strip_rows)
    assert stream.shape == loaded.shape and stream.full_shape == loaded.full_shape
    h, w = loaded.shape
    windows = [(0, 0, 20, 30), (5, 7, 40, 33), (-3, -4, 50, 60), (h - 9, w - 5, 32, 32)]
    for win in [*windows, (0, 0, h, w)]:
        np.testing.assert_array_equal(
            stream.read_inputs(win, feats), loaded.read_inputs(win, feats), err_msg=str(win)
        )
        np.testing.assert_array_equal(stream.valid_mask(win), loaded.valid_mask(win))
        a, b = stream.read_charts(win), loaded.read_charts(win)
        for chart in a:
            np.testing.assert_array_equal(a[chart], b[chart])
    stream.close()


def test_streamed_variables_keep_no_hdf5_chunk_cache(scene_file):
    """The 64 MB per-variable chunk cache grew the peak memory with the scene size."""
    feats = resolve_features(["sar"])
    stream = StreamingNetCDFSource(scene_file, feats, 1)
    hh = stream.dataset["nersc_sar_primary"].variable._data.array.array.get_array()
    assert hh.get_var_chunk_cache()[0] > 0  # netCDF-C's default until it is read
    stream.read_inputs((0, 0, 16, 16), feats)
    assert hh.get_var_chunk_cache()[0] == 0
    stream.close()


def test_missing_variable_names_file_variable_and_checkpoint(tmp_path):
    ds = make_scene_dataset(height=60, width=80, seed=1).drop_vars("btemp_18_7h")
    path = tmp_path / f"{ds.attrs['scene_id'][:19]}_prep.nc"
    ds.to_netcdf(path)
    feats = resolve_features(["sar", "amsr2:18.7"])
    with pytest.raises(SceneFormatError, match="btemp_18_7h") as info:
        StreamingNetCDFSource(path, feats, needed_by="checkpoint best.ckpt")
    assert str(path) in str(info.value) and "best.ckpt" in str(info.value)
    # a variable the features do not need may be missing
    StreamingNetCDFSource(path, resolve_features(["sar"])).close()
