"""The tile engine: padded inputs, core crops and valid masks, read one batch ahead."""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest

from icecontext.errors import ConfigError, DataError
from icecontext.inference.tile_batches import core_crop, iter_tile_batches
from icecontext.inference.tiling import TileSettings, plan_tiles


class RecordingSource:
    """An in-memory source that records every read: ``(kind, window, thread)``."""

    def __init__(self, inputs: np.ndarray, valid: np.ndarray) -> None:
        self.name = "20190101T000000_dmi"
        self.inputs = inputs
        self.valid = valid
        self.shape = inputs.shape[1:]
        self.full_shape = self.shape
        self.downsample = 1
        self.features = [f"f{i}" for i in range(inputs.shape[0])]
        self.reads: list[tuple[str, tuple[int, int, int, int], int]] = []

    def read_inputs(self, window, features):
        r, c, h, w = window
        assert r >= 0 and c >= 0 and r + h <= self.shape[0] and c + w <= self.shape[1]
        self.reads.append(("inputs", window, threading.get_ident()))
        return self.inputs[[self.features.index(f) for f in features], r : r + h, c : c + w]

    def valid_mask(self, window):
        r, c, h, w = window
        self.reads.append(("valid", window, threading.get_ident()))
        return self.valid[r : r + h, c : c + w]


@pytest.fixture
def source():
    rng = np.random.default_rng(3)
    inputs = rng.normal(size=(2, 150, 203)).astype(np.float32)
    valid = rng.random((150, 203)) > 0.2
    return RecordingSource(inputs, valid)


def _expected_reads(source, layout, batch, domain):
    """Per batch: every tile's inputs, then the valid mask of every clipped core."""
    r0, c0, dh, dw = domain
    out = []
    tiles = layout.tiles
    for i in range(0, len(tiles), batch):
        group = tiles[i : i + batch]
        for t in group:
            r, c, h, w = t.window
            out.append(("inputs", (r0 + r, c0 + c, min(h, dh - r), min(w, dw - c))))
        for t in group:
            crop = core_crop(t, (dh, dw))
            if crop is not None:
                r, c, h, w = crop.window
                out.append(("valid", (r0 + r, c0 + c, h, w)))
    return out


def test_batches_hold_padded_inputs_core_crops_and_valid_masks(source):
    layout = TileSettings(tile=96, overlap=16, batch=3).plan(source.shape)
    seen = np.zeros(source.shape, dtype=np.int32)
    batches = list(iter_tile_batches(source, ["f1", "f0"], layout, 3))
    assert [b.index for b in batches] == list(range(len(batches)))
    assert [b.first for b in batches] == list(range(0, len(layout.tiles), 3))
    assert sum(len(b.tiles) for b in batches) == len(layout.tiles)
    for b in batches:
        assert b.inputs.dtype == np.float32
        assert b.inputs.shape == (len(b.tiles), 2, *layout.tile)
        for x, tile, crop, valid in zip(b.inputs, b.tiles, b.crops, b.valid, strict=True):
            r, c, h, w = tile.window
            expected = np.zeros((2, h, w), np.float32)
            part = source.inputs[::-1, r : r + h, c : c + w]
            expected[:, : part.shape[1], : part.shape[2]] = part
            np.testing.assert_array_equal(x, expected)
            if crop is None:
                assert valid is None
                continue
            np.testing.assert_array_equal(valid, source.valid[crop.region])
            # the local crop of the tile is the same pixels as the crop of the scene
            scene_core = source.inputs[::-1][(slice(None), *crop.region)]
            np.testing.assert_array_equal(x[(slice(None), *crop.local)], scene_core)
            seen[crop.region] += 1
    assert (seen == 1).all()  # the clipped cores partition the scene


def test_reads_in_tile_order_in_one_background_thread(source):
    layout = TileSettings(tile=96, overlap=16).plan(source.shape)
    main = threading.get_ident()
    list(iter_tile_batches(source, ["f0"], layout, 2))
    assert [(k, w) for k, w, _ in source.reads] == _expected_reads(
        source, layout, 2, (0, 0, *source.shape)
    )
    threads = {t for _, _, t in source.reads}
    assert len(threads) == 1 and main not in threads


def test_reads_one_batch_ahead_and_stop_when_closed(source):
    layout = TileSettings(tile=64, overlap=8).plan(source.shape)
    assert len(layout.tiles) >= 6
    per_batch = 2
    it = iter_tile_batches(source, ["f0"], layout, per_batch)
    assert source.reads == []  # nothing before the first next()
    with contextlib.closing(it) as batches:
        first = next(batches)
        assert first.index == 0
    # the first batch and at most the one after it were read, nothing more
    read_tiles = [w for k, w, _ in source.reads if k == "inputs"]
    assert per_batch <= len(read_tiles) <= 2 * per_batch


def test_a_window_is_a_scene_of_its_own(source):
    window = (10, 20, 70, 90)
    layout = plan_tiles(window[2:], 64, 8)
    batches = list(iter_tile_batches(source, ["f0"], layout, 4, window=window))
    cam = np.full(window[2:], np.nan, np.float32)
    for b in batches:
        for x, tile, crop in zip(b.inputs, b.tiles, b.crops, strict=True):
            r, c, h, w = tile.window
            rr, cc = min(h, 70 - r), min(w, 90 - c)
            # zero past the window's edge even where the scene goes on
            assert not x[:, rr:, :].any() and not x[:, :, cc:].any()
            if crop is not None:
                cam[crop.region] = x[0][crop.local]
    np.testing.assert_array_equal(cam, source.inputs[0, 10:80, 20:110])
    assert [(k, w) for k, w, _ in source.reads] == _expected_reads(source, layout, 4, window)


def test_without_valid_masks_only_inputs_are_read(source):
    layout = plan_tiles(source.shape, 96, 16)
    batches = list(iter_tile_batches(source, ["f0"], layout, 2, valid_masks=False))
    assert all(v is None for b in batches for v in b.valid)
    assert {k for k, _, _ in source.reads} == {"inputs"}


def test_bad_arguments_fail_at_the_call(source):
    layout = plan_tiles(source.shape, 96, 16)
    with pytest.raises(ConfigError, match="--batch"):
        iter_tile_batches(source, ["f0"], layout, 0)
    with pytest.raises(ConfigError, match="--window"):
        iter_tile_batches(source, ["f0"], layout, 1, window=(100, 0, 60, 10))
    with pytest.raises(ValueError, match="layout"):
        iter_tile_batches(source, ["f0"], layout, 1, window=(0, 0, 50, 50))
    assert source.reads == []


def test_a_source_returning_the_wrong_shape_is_a_data_error(source):
    layout = plan_tiles(source.shape, 96, 16)
    source.read_inputs = lambda window, features: np.zeros((1, 2, 2), np.float32)
    with pytest.raises(DataError, match="read_inputs returned shape"):
        list(iter_tile_batches(source, ["f0"], layout, 1))
