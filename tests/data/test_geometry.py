"""SAR window <-> exact 2 km window, upsampling, and block downsampling rules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icecontext.data.io.geometry import (
    Transform,
    block_any,
    block_chart,
    block_mean,
    check_window,
    clip_window,
    coarse_sampling,
    downsampled_shape,
    read_coarse_window,
    transform_coarse,
    upsample_coarse,
)

FACTORS = (1, 2, 5, 10)


def _ramp(n_rows: int, n_cols: int) -> np.ndarray:
    """Two channels: the 2 km row index and the 2 km column index of every cell."""
    r, c = np.mgrid[0:n_rows, 0:n_cols].astype(np.float32)
    return np.stack([r, c])


def _expected_nearest(start: int, length: int, k: int, n: int) -> np.ndarray:
    # the 2 km cell that contains the centre (k t + k/2, in 80 m units) of source pixel t
    t = np.arange(start, start + length)
    return np.clip((k * t + k / 2) // 25, 0, n - 1)


def _expected_bilinear(start: int, length: int, k: int, n: int) -> np.ndarray:
    t = np.arange(start, start + length)
    return np.clip((k * t + k / 2) / 25 - 0.5, 0, n - 1)


windows = st.tuples(
    st.integers(-40, 420),  # row (may start before the scene)
    st.integers(-40, 420),  # col
    st.integers(1, 301),  # height: mostly not multiples of 25
    st.integers(1, 301),  # width
)


@settings(max_examples=120, deadline=None)
@given(
    window=windows,
    k=st.sampled_from(FACTORS),
    full=st.tuples(st.integers(26, 520), st.integers(26, 520)),
)
def test_nearest_picks_the_cell_containing_each_pixel_centre(window, k, full) -> None:
    n_rows, n_cols = full[0] // 25, full[1] // 25
    ramp = _ramp(n_rows, n_cols)
    up = read_coarse_window(lambda rs, cs: ramp[:, rs, cs], (n_rows, n_cols), window, k, "nearest")
    row, col, h, w = window
    assert up.shape == (2, h, w)
    np.testing.assert_array_equal(
        up[0], np.repeat(_expected_nearest(row, h, k, n_rows)[:, None], w, 1)
    )
    np.testing.assert_array_equal(
        up[1], np.repeat(_expected_nearest(col, w, k, n_cols)[None, :], h, 0)
    )


@settings(max_examples=120, deadline=None)
@given(
    window=windows,
    k=st.sampled_from(FACTORS),
    full=st.tuples(st.integers(26, 520), st.integers(26, 520)),
)
def test_bilinear_reproduces_a_linear_ramp_at_pixel_centres(window, k, full) -> None:
    n_rows, n_cols = full[0] // 25, full[1] // 25
    ramp = _ramp(n_rows, n_cols)
    up = read_coarse_window(lambda rs, cs: ramp[:, rs, cs], (n_rows, n_cols), window, k, "bilinear")
    row, col, h, w = window
    np.testing.assert_allclose(
        up[0], np.repeat(_expected_bilinear(row, h, k, n_rows)[:, None], w, 1), atol=1e-5
    )
    np.testing.assert_allclose(
        up[1], np.repeat(_expected_bilinear(col, w, k, n_cols)[None, :], h, 0), atol=1e-5
    )


def test_factor_one_follows_the_format_cell_convention() -> None:
    # 2 km cell i covers 80 m rows [25 i, 25 i + 25): rows 24 | 25 and 49 | 50 change cell
    ramp = _ramp(8, 8)
    up = read_coarse_window(lambda rs, cs: ramp[:, rs, cs], (8, 8), (20, 0, 35, 1), 1, "nearest")
    rows = np.arange(20, 55)
    np.testing.assert_array_equal(up[0, :, 0], rows // 25)


def test_rows_past_the_2km_extent_are_edge_padded() -> None:
    # H = 212: the 2 km grid has 8 rows covering 0..199; rows 200..211 reuse row 7
    ramp = _ramp(8, 8)
    for mode in ("nearest", "bilinear"):
        up = read_coarse_window(lambda rs, cs: ramp[:, rs, cs], (8, 8), (190, 0, 22, 3), 1, mode)
        assert (up[0, 10:] == 7).all(), mode


@settings(max_examples=60, deadline=None)
@given(
    window=st.tuples(
        st.integers(0, 150), st.integers(0, 150), st.integers(1, 90), st.integers(1, 90)
    ),
    k=st.sampled_from(FACTORS),
    mode=st.sampled_from(["nearest", "bilinear"]),
)
def test_a_patch_equals_the_same_window_of_the_full_scene(window, k, mode) -> None:
    rng = np.random.default_rng(0)
    full_shape = (260, 255)  # 80 m grid
    coarse = rng.normal(size=(3, full_shape[0] // 25, full_shape[1] // 25)).astype(np.float32)
    h_src, w_src = downsampled_shape(full_shape, k)
    whole = read_coarse_window(
        lambda rs, cs: coarse[:, rs, cs], coarse.shape[1:], (0, 0, h_src, w_src), k, mode
    )
    patch = read_coarse_window(lambda rs, cs: coarse[:, rs, cs], coarse.shape[1:], window, k, mode)
    r, c, h, w = window
    clipped = whole[:, r : r + h, c : c + w]
    np.testing.assert_array_equal(patch[:, : clipped.shape[1], : clipped.shape[2]], clipped)


def test_bilinear_recovers_a_physical_ramp_to_the_pixel() -> None:
    # A field linear in 80 m coordinates, averaged over each 2 km cell (as AMSR2 is
    # resampled), upsampled back: inside the grid it equals the field at every pixel
    # centre. The starter kit's integer crop would be up to 24 pixels off.
    full = (250, 275)
    y, x = np.mgrid[0 : full[0], 0 : full[1]] + 0.5  # pixel centres, 80 m units
    field = 0.3 * y - 0.2 * x
    cells = field.reshape(10, 25, 11, 25).mean(axis=(1, 3))[None].astype(np.float64)
    window = (37, 51, 163, 187)
    up = read_coarse_window(lambda rs, cs: cells[:, rs, cs], cells.shape[1:], window, 1, "bilinear")
    r, c, h, w = window
    np.testing.assert_allclose(up[0], field[r : r + h, c : c + w], atol=1e-5)  # float32


def test_sampling_reports_the_fractional_offset_and_minimal_block() -> None:
    s = coarse_sampling((30, 60, 100, 50), (40, 40), downsample=1, mode="nearest")
    # pixel 30's centre is at 30.5 (80 m units) = 2 km coordinate 30.5/25 - 0.5 = 0.72
    assert s.offset == pytest.approx((30.5 / 25 - 0.5, 60.5 / 25 - 0.5))
    assert s.block == (slice(1, 6), slice(2, 5))  # rows 30..129 -> cells 1..5; cols 60..109 -> 2..4
    s5 = coarse_sampling((3, 0, 4, 4), (40, 40), downsample=5, mode="bilinear")
    # K=5 pixel 3 spans 80 m rows 15..19, centre 17.5 -> 2 km coordinate 0.2
    assert s5.offset[0] == pytest.approx(17.5 / 25 - 0.5)


def test_upsample_rejects_an_unknown_mode_and_empty_grid() -> None:
    with pytest.raises(ValueError, match="upsampling mode"):
        coarse_sampling((0, 0, 5, 5), (4, 4), mode="cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 km grid is empty"):
        coarse_sampling((0, 0, 5, 5), (0, 4))


def test_nearest_keeps_exact_values() -> None:
    block = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    s = coarse_sampling((0, 0, 75, 100), (3, 4))
    up = upsample_coarse(block, s)
    assert set(np.unique(up)) == set(block.ravel())


# ----------------------------------------------------------------------------- windows


def test_clip_window_inside_partial_and_outside() -> None:
    inside = clip_window((10, 20, 5, 6), (100, 100))
    assert inside.full and not inside.empty
    assert (inside.rows, inside.cols) == (slice(10, 15), slice(20, 26))
    part = clip_window((-3, 97, 10, 10), (100, 100))
    assert not part.full and not part.empty
    assert (part.rows, part.cols) == (slice(0, 7), slice(97, 100))
    assert (part.out_rows, part.out_cols) == (slice(3, 10), slice(0, 3))
    assert clip_window((200, 0, 5, 5), (100, 100)).empty


def test_check_window_rejects_bad_windows() -> None:
    with pytest.raises(ValueError, match="positive"):
        check_window((0, 0, 0, 5))
    with pytest.raises(ValueError, match="row, col, height, width"):
        check_window((0, 0, 5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="integers"):
        check_window((0.5, 0, 5, 5))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- downsampling


def test_downsampled_shape_keeps_partial_blocks() -> None:
    assert downsampled_shape((5003, 5228), 10) == (501, 523)
    assert downsampled_shape((200, 225), 1) == (200, 225)
    with pytest.raises(ValueError):
        downsampled_shape((10, 10), 0)


def test_block_mean_averages_valid_pixels_only() -> None:
    values = np.array([[1.0, 3.0, 5.0], [0.0, 7.0, 9.0], [2.0, 2.0, 4.0]], dtype=np.float32)
    valid = np.array([[1, 1, 1], [0, 1, 1], [0, 0, 0]], dtype=bool)
    out = block_mean(values, 2, valid)
    # block (0,0): valid 1,3,7 -> 11/3; block (0,1): partial column 5,9 -> 7
    # block (1,0): nothing valid -> 0 (fill); block (1,1): nothing valid -> 0
    np.testing.assert_allclose(out, [[11 / 3, 7.0], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(block_mean(values, 2), [[11 / 4, 7.0], [2.0, 4.0]], rtol=1e-6)


def test_block_chart_masks_any_255_and_takes_the_mode_ties_high() -> None:
    chart = np.array(
        [
            [1, 1, 2, 2, 3],
            [1, 2, 2, 255, 3],
            [4, 4, 0, 0, 9],
            [5, 5, 0, 0, 255],
        ],
        dtype=np.uint8,
    )
    out = block_chart(chart, 2, 11)
    # (0,0): 1,1,1,2 -> 1; (0,1): contains 255 -> 255; (0,2): partial 3,3 -> 3
    # (1,0): 4,4,5,5 tie -> higher class 5; (1,1): 0 x4 -> 0; (1,2): 9, 255 -> 255
    np.testing.assert_array_equal(out, [[1, 255, 3], [5, 0, 255]])
    assert out.dtype == np.uint8


def test_block_chart_k1_is_identity_and_any_mask_spreads() -> None:
    rng = np.random.default_rng(1)
    chart = rng.integers(0, 6, size=(30, 31)).astype(np.uint8)
    chart[rng.random(chart.shape) < 0.05] = 255
    np.testing.assert_array_equal(block_chart(chart, 1, 6), chart)
    down = block_chart(chart, 5, 6)
    np.testing.assert_array_equal(down == 255, block_any(chart == 255, 5))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize(
    ("hflip", "vflip", "k"),
    [(h, v, k) for h in (False, True) for v in (False, True) for k in range(4)],
)
def test_transformed_upsampling_equals_transforming_the_upsampled_window(
    mode, hflip, vflip, k
) -> None:
    rng = np.random.default_rng(5)
    coarse = rng.normal(size=(2, 12, 13)).astype(np.float32)
    s = coarse_sampling((17, 40, 90, 70), coarse.shape[1:], downsample=2, mode=mode)
    block = coarse[(slice(None), *s.block)]
    t = Transform(hflip, vflip, k)
    direct = upsample_coarse(*transform_coarse(block, s, t))
    np.testing.assert_allclose(
        direct, t.apply(upsample_coarse(block, s)), rtol=1e-6, atol=1e-6
    )  # float32 rounding
    assert direct.shape == (2, *t.shape(90, 70))
