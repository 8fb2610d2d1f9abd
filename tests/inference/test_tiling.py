"""Tile layout: cores partition the scene, margins hold, sizes are aligned."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icecontext.errors import ConfigError
from icecontext.inference.tiling import plan_tiles, round_up


@settings(max_examples=150, deadline=None)
@given(
    h=st.integers(1, 700),
    w=st.integers(1, 700),
    tile=st.integers(8, 300),
    overlap=st.integers(0, 60),
    align=st.sampled_from([1, 4, 16, 32]),
    balance=st.booleans(),
)
def test_cores_partition_the_padded_scene_and_keep_the_margin(h, w, tile, overlap, align, balance):
    t = round_up(tile, align)
    one_tile = round_up(h, align) <= t and round_up(w, align) <= t  # any margin is met
    if (t - 2 * overlap) // align * align <= 0 and not one_tile:
        with pytest.raises(ConfigError, match="tile"):
            plan_tiles((h, w), tile, overlap, align, balance=balance)
        return
    layout = plan_tiles((h, w), tile, overlap, align, balance=balance)
    plain = plan_tiles((h, w), tile, overlap, align)
    # balancing never needs more tiles nor bigger ones
    assert len(layout.tiles) == len(plain.tiles)
    assert layout.tile[0] <= plain.tile[0] and layout.tile[1] <= plain.tile[1]
    ph, pw = layout.padded_shape
    assert ph % align == 0 and pw % align == 0 and ph >= h and pw >= w and ph - h < align
    assert layout.margin >= overlap
    cover = np.zeros((ph, pw), dtype=np.int32)
    for tl in layout.tiles:
        r, c, th, tw = tl.window
        # every tile has the same aligned shape and starts on the alignment grid
        assert (th, tw) == layout.tile
        assert r % align == 0 and c % align == 0
        assert r >= 0 and r + th <= ph and c >= 0 and c + tw <= pw
        cr, cc, ch, cw = tl.core
        cover[cr : cr + ch, cc : cc + cw] += 1
        # the core keeps `margin` pixels of context inside the tile, except at scene edges
        for start, stop, cstart, cstop, length in (
            (r, r + th, cr, cr + ch, ph),
            (c, c + tw, cc, cc + cw, pw),
        ):
            assert cstart == 0 or cstart - start >= layout.margin
            assert cstop == length or stop - cstop >= layout.margin
    assert (cover == 1).all()


def test_small_scene_is_one_padded_tile():
    layout = plan_tiles((100, 130), tile=512, overlap=64, align=32)
    assert len(layout.tiles) == 1
    assert layout.tiles[0].window == (0, 0, 128, 160)
    assert layout.tiles[0].core == (0, 0, 128, 160)


def test_regular_layout_numbers():
    layout = plan_tiles((1000, 600), tile=256, overlap=64, align=32)
    assert layout.margin == 64 and layout.tile == (256, 256)
    rows = sorted({t.rows.start for t in layout.tiles})
    # step 128, last tile flush with the padded end (1024 - 256 = 768)
    assert rows == [0, 128, 256, 384, 512, 640, 768]
    cols = sorted({t.cols.start for t in layout.tiles})
    assert cols == [0, 128, 256, 352]


def test_balanced_tiles_shrink_to_the_work_needed():
    # a 2528-pixel axis: two 2048 tiles compute 4096 pixels; balanced, two 1408 tiles
    plain = plan_tiles((2500, 2600), tile=2048, overlap=128, align=32)
    layout = plan_tiles((2500, 2600), tile=2048, overlap=128, align=32, balance=True)
    assert plain.tile == (2048, 2048) and len(plain.tiles) == len(layout.tiles) == 4
    assert layout.tile == (1408, 1440) and layout.margin == 128
    work = len(layout.tiles) * layout.tile[0] * layout.tile[1]
    assert work < 1.3 * 2528 * 2624 < len(plain.tiles) * 2048**2


def test_overlap_rounded_up_to_alignment():
    layout = plan_tiles((1000, 1000), tile=256, overlap=50, align=32)
    assert layout.margin == 64  # step 156 -> 128 (multiple of 32), margin (256 - 128) / 2


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"tile": 64, "overlap": 32}, "--tile"),
        ({"tile": 0, "overlap": 0}, "--tile"),
        ({"tile": 64, "overlap": -1}, "--overlap"),
    ],
)
def test_bad_settings_name_the_option(kwargs, option):
    with pytest.raises(ConfigError) as exc:
        plan_tiles((300, 300), align=32, **kwargs)
    assert exc.value.option == option


def test_a_scene_within_one_tile_takes_any_margin():
    """``--overlap rf`` of a wide-field model on a scene smaller than the tile: one tile."""
    layout = plan_tiles((900, 1000), 2048, 1246)
    assert len(layout.tiles) == 1 and layout.tiles[0].window == (0, 0, 928, 1024)
    assert layout.tiles[0].core == (0, 0, 928, 1024) and layout.margin == 1246
    with pytest.raises(ConfigError, match="tile"):
        plan_tiles((3000, 1000), 2048, 1246)
