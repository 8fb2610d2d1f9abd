"""The direct chunk reader returns exactly what zarr returns, or declines the array."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

from icecontext.data.loader.sources import read_blocks, store_source
from icecontext.data.store.chunks import DirectChunkReader


def _array(tmp_path, name, data, chunks, **kwargs):
    group = zarr.open_group(tmp_path / "g", mode="a", zarr_format=3)
    a = group.create_array(name, shape=data.shape, chunks=chunks, dtype=data.dtype, **kwargs)
    a[...] = data
    return zarr.open_group(tmp_path / "g", mode="r")[name]


@pytest.mark.parametrize(
    ("dtype", "compressor"),
    [
        ("float32", BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle)),
        ("uint8", BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.bitshuffle)),
        ("int64", None),
    ],
)
def test_every_window_equals_zarr(tmp_path, dtype, compressor):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 200, (3, 70, 83)).astype(dtype)
    data[:, :40, :40] = 255  # whole chunks equal to the fill value are never written
    kwargs = {"compressors": compressor} if compressor else {"compressors": None}
    a = _array(tmp_path, "x", data, (3, 16, 20), fill_value=255, **kwargs)
    reader = DirectChunkReader.for_array(a)
    assert reader is not None
    assert not (reader.path / "c" / "0" / "0" / "0").exists()  # a missing chunk is read too
    for _ in range(60):
        r0, c0 = rng.integers(0, 70), rng.integers(0, 83)
        r1, c1 = rng.integers(r0, 71), rng.integers(c0, 84)
        ch = int(rng.integers(0, 3))
        sel = (slice(ch, 3), slice(r0, r1), slice(c0, c1))
        np.testing.assert_array_equal(reader[sel], a[sel])
    np.testing.assert_array_equal(reader[1, 5:9, :], a[1, 5:9, :])
    np.testing.assert_array_equal(reader[-1], a[-1])
    np.testing.assert_array_equal(reader[:, 60:, 80:], data[:, 60:, 80:])
    assert reader[0, 3:3].shape == (0, 83)


def test_steps_and_bad_indices_are_refused(tmp_path):
    a = _array(tmp_path, "x", np.zeros((10, 10), np.float32), (4, 4), compressors=None)
    reader = DirectChunkReader.for_array(a)
    with pytest.raises(IndexError, match="step 1"):
        reader[::2]
    with pytest.raises(IndexError, match="out of range"):
        reader[10]


def test_other_layouts_are_left_to_zarr(tmp_path):
    data = np.arange(400, dtype=np.float32).reshape(20, 20)
    zstd = _array(tmp_path, "zstd", data, (8, 8), compressors=ZstdCodec())
    sharded = _array(tmp_path, "sharded", data, (4, 4), shards=(8, 8))
    memory = zarr.create_array(
        zarr.storage.MemoryStore(), shape=(20, 20), chunks=(8, 8), dtype="f4"
    )
    memory[...] = data
    for a in (zstd, sharded, memory):
        assert DirectChunkReader.for_array(a) is None
    direct = _array(tmp_path, "direct", data, (8, 8), compressors=BloscCodec(cname="lz4"))
    assert DirectChunkReader.for_array(direct) is not None
    # read_blocks still reads them (through zarr), mixed with a direct one and numpy
    sel = (slice(3, 17), slice(5, 19))
    blocks = read_blocks([(zstd, sel), (direct, sel), (sharded, sel), (data, sel)])
    for block in blocks:
        np.testing.assert_array_equal(block, data[sel])


def test_reopened_scenes_never_get_another_scenes_reader(tmp_path):
    """Regression: readers were cached by ``id(store)``; once a scene's store object was
    freed, a newly opened scene could get its id, and then its reader (every scene group
    names its array ``sar``), so patches came from the wrong scene."""
    import gc

    from icecontext.data.store.prepare import prepare_store
    from icecontext.data.store.prepared import PreparedStore
    from icecontext.testing import write_scene_files

    roots = []
    for i in range(2):
        write_scene_files(tmp_path / f"in{i}", 1, height=60, width=70, seed=i + 1)
        prepare_store(tmp_path / f"in{i}", tmp_path / f"s{i}", progress=False)
        roots.append(tmp_path / f"s{i}")
    wrong = 0
    for _ in range(10):  # CPython hands a freed object's id to the next one at once
        for root in roots:
            store = PreparedStore(root)
            src = store_source(store, store.names[0])
            x, _ = src.read_window((0, 0, 24, 24), list(src.features)[:2])
            truth = zarr.open_group(root / store.names[0], mode="r")["sar"][0:2, 0:24, 0:24]
            wrong += not np.array_equal(x, truth)
            del store, src
            gc.collect()
    assert wrong == 0
