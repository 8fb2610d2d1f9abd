"""Grid geometry: windows, the exact SAR-grid -> 2 km mapping, and block downsampling.

Conventions (see ``docs/pipeline.md``):

* A :data:`Window` is ``(row, col, height, width)`` on a source's grid. At downsampling
  ``K`` the source pixel ``(r, c)`` covers the 80 m pixels ``[K r, K r + K)`` x
  ``[K c, K c + K)`` (the last row/column of blocks may be partial: the downsampled
  shape is ``ceil(H / K) x ceil(W / K)``).
* Continuous 80 m coordinates put pixel ``i`` on ``[i, i + 1)``; the 2 km cell ``i``
  covers ``[25 i, 25 i + 25)``, so its centre is at ``25 i + 12.5``.
* A source pixel is represented by its centre, ``K r + K / 2`` in 80 m coordinates. On
  the 2 km grid that is ``u = (K r + K / 2) / 25 - 0.5`` in cell-centre units (cell ``i``
  has its centre at ``u = i``).
* ``nearest`` takes the cell that contains the centre, ``floor((K r + K / 2) / 25)``
  (a centre exactly on a cell boundary goes to the upper cell: cells are half-open);
  ``bilinear`` interpolates linearly between the two nearest cell centres along each
  axis.
* The 2 km grid has ``floor(H / 25)`` cells, so the last ``H mod 25`` rows (and
  ``W mod 25`` columns) lie past its extent; there, and for ``bilinear`` in the outer
  half cell, the grid is edge-padded (coordinates clamped to ``[0, n - 1]``).

:func:`coarse_sampling` + :func:`upsample_coarse` (composed by
:func:`read_coarse_window`) are the single implementation used by training patches and
full-scene inference alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np

from icecontext.data.io.format import AMSR_FACTOR, CHART_FILL

Window: TypeAlias = tuple[int, int, int, int]
"""``(row, col, height, width)`` on a source's grid."""

Upsampling = Literal["nearest", "bilinear"]


# ----------------------------------------------------------------------------- windows


def check_window(window: Window) -> Window:
    """Return ``window`` as a tuple of Python ints after checking its size.

    Raises:
        ValueError: If it does not have four integer entries or its size is not positive.
    """
    if len(window) != 4:
        raise ValueError(f"a window is (row, col, height, width), got {window!r}")
    row, col, height, width = (int(v) for v in window)
    if (row, col, height, width) != tuple(window):
        raise ValueError(f"window entries must be integers, got {window!r}")
    if height < 1 or width < 1:
        raise ValueError(f"window height and width must be positive, got {window!r}")
    return row, col, height, width


@dataclass(frozen=True)
class ClippedWindow:
    """The part of a window that lies inside a grid, and where it goes in the output.

    Attributes:
        rows: Rows to read from the grid.
        cols: Columns to read from the grid.
        out_rows: Where those rows go in a ``(height, width)`` output array.
        out_cols: Where those columns go in the output array.
        empty: True when the window does not overlap the grid at all.
        full: True when the window lies entirely inside the grid (no padding).
    """

    rows: slice
    cols: slice
    out_rows: slice
    out_cols: slice
    empty: bool
    full: bool


def clip_window(window: Window, shape: tuple[int, int]) -> ClippedWindow:
    """Intersect a window with a grid of ``shape``.

    Args:
        window: ``(row, col, height, width)``; may extend past the grid on any side.
        shape: ``(rows, cols)`` of the grid.

    Returns:
        The slices to read and where they land in the window-sized output.
    """
    row, col, height, width = check_window(window)
    r0, r1 = max(row, 0), min(row + height, shape[0])
    c0, c1 = max(col, 0), min(col + width, shape[1])
    empty = r1 <= r0 or c1 <= c0
    if empty:
        r0 = r1 = c0 = c1 = 0
    return ClippedWindow(
        rows=slice(r0, r1),
        cols=slice(c0, c1),
        out_rows=slice(r0 - row, r0 - row + (r1 - r0)),
        out_cols=slice(c0 - col, c0 - col + (c1 - c0)),
        empty=empty,
        full=(not empty) and (r1 - r0, c1 - c0) == (height, width),
    )


# ----------------------------------------------------------------------------- SAR <-> 2 km


def pixel_centres(start: int, length: int, downsample: int = 1) -> np.ndarray:
    """Return the 80 m continuous coordinates of the centres of ``length`` source pixels.

    Source pixel ``i`` at downsampling ``K`` covers 80 m ``[K i, K i + K)``; its centre
    is ``K i + K / 2``.
    """
    idx = np.arange(start, start + length, dtype=np.float64)
    return downsample * idx + downsample / 2.0


@dataclass(frozen=True)
class CoarseAxis:
    """Where the pixels of a window fall along one axis of the 2 km grid.

    Attributes:
        block: The 2 km cells to read along this axis (``[block.start, block.stop)``).
        coord: Fractional 2 km coordinate of each window pixel (cell-centre units, not
            clamped): pixel ``k`` of the window lies at ``coord[k]``. ``coord[0]`` is the
            exact fractional offset of the window on the 2 km grid.
        lower: Index into the block of the cell used by ``nearest``, or of the lower
            neighbour used by ``bilinear``.
        weight: ``bilinear`` weight of the upper neighbour (``lower + 1``, clamped);
            ``None`` for ``nearest``.
    """

    block: slice
    coord: np.ndarray
    lower: np.ndarray
    weight: np.ndarray | None


def coarse_axis(
    start: int,
    length: int,
    n_cells: int,
    downsample: int = 1,
    mode: Upsampling = "nearest",
    factor: int = AMSR_FACTOR,
) -> CoarseAxis:
    """Map ``length`` source pixels from ``start`` onto a 2 km axis of ``n_cells`` cells.

    Args:
        start: First source pixel (may be negative or past the grid: clamped).
        length: Number of source pixels.
        n_cells: Cells along this axis of the 2 km grid (``floor(H / 25)``).
        downsample: Source pixels are ``downsample`` x 80 m.
        mode: ``"nearest"`` or ``"bilinear"``.
        factor: 80 m pixels per 2 km cell (25).

    Returns:
        The cells to read and, per pixel, the index/weights into that block.

    Raises:
        ValueError: If the 2 km axis is empty or ``mode`` is unknown.
    """
    if n_cells < 1:
        raise ValueError("the 2 km grid is empty along this axis (scene shorter than 25 pixels)")
    coord = pixel_centres(start, length, downsample) / factor - 0.5
    if mode == "nearest":
        cell = np.clip(np.floor(coord + 0.5), 0, n_cells - 1).astype(np.int64)
        lo, hi = int(cell.min()), int(cell.max()) + 1
        return CoarseAxis(slice(lo, hi), coord, cell - lo, None)
    if mode == "bilinear":
        clamped = np.clip(coord, 0.0, n_cells - 1.0)
        lower = np.floor(clamped).astype(np.int64)
        weight = clamped - lower
        upper = np.minimum(lower + 1, n_cells - 1)
        lo, hi = int(lower.min()), int(upper.max()) + 1
        return CoarseAxis(slice(lo, hi), coord, lower - lo, weight)
    raise ValueError(f"unknown upsampling mode {mode!r}; expected 'nearest' or 'bilinear'")


@dataclass(frozen=True)
class CoarseSampling:
    """The exact 2 km window of a source window, and how to upsample it.

    Attributes:
        rows: Row mapping (see :class:`CoarseAxis`).
        cols: Column mapping.
        mode: Upsampling mode.
    """

    rows: CoarseAxis
    cols: CoarseAxis
    mode: Upsampling

    @property
    def block(self) -> tuple[slice, slice]:
        """The 2 km cells to read: ``(rows, cols)`` slices."""
        return self.rows.block, self.cols.block

    @property
    def offset(self) -> tuple[float, float]:
        """Fractional 2 km coordinate (cell-centre units) of the window's first pixel."""
        return float(self.rows.coord[0]), float(self.cols.coord[0])


def coarse_sampling(
    window: Window,
    coarse_shape: tuple[int, int],
    downsample: int = 1,
    mode: Upsampling = "nearest",
    factor: int = AMSR_FACTOR,
) -> CoarseSampling:
    """Map a source window to its exact 2 km window.

    Args:
        window: ``(row, col, height, width)`` on the source grid (downsampled by
            ``downsample``); may extend past the grid (coordinates are clamped, i.e.
            the 2 km grid is edge-padded).
        coarse_shape: Shape of the 2 km grid, ``(floor(H / 25), floor(W / 25))``.
        downsample: Source pixel size in 80 m pixels.
        mode: ``"nearest"`` or ``"bilinear"``.
        factor: 80 m pixels per 2 km cell.

    Returns:
        The sampling plan; see :func:`upsample_coarse`.
    """
    row, col, height, width = check_window(window)
    return CoarseSampling(
        coarse_axis(row, height, coarse_shape[0], downsample, mode, factor),
        coarse_axis(col, width, coarse_shape[1], downsample, mode, factor),
        mode,
    )


def _interp_axis(block: np.ndarray, axis: CoarseAxis, dim: int) -> np.ndarray:
    if axis.weight is None:
        return np.take(block, axis.lower, axis=dim)
    lower = np.take(block, axis.lower, axis=dim)
    upper_idx = np.minimum(axis.lower + 1, block.shape[dim] - 1)
    upper = np.take(block, upper_idx, axis=dim)
    shape = [1] * block.ndim
    shape[dim] = -1
    w = axis.weight.reshape(shape).astype(block.dtype)
    upper -= lower
    upper *= w
    upper += lower
    return upper


def upsample_coarse(block: np.ndarray, sampling: CoarseSampling) -> np.ndarray:
    """Upsample a 2 km block (read at ``sampling.block``) to the window's pixels.

    Separable interpolation written with ``numpy.take``: ``scipy.ndimage.zoom`` /
    ``map_coordinates`` work per channel on whole-array grids and cannot express the
    half-open cell convention with an arbitrary fractional start, and a separable
    gather is exact for both modes and several times faster on (C, h, w) stacks.

    Args:
        block: ``(..., rows, cols)`` values of the cells in ``sampling.block``.
        sampling: From :func:`coarse_sampling`.

    Returns:
        ``(..., height, width)`` float32 values.
    """
    block = np.asarray(block, dtype=np.float32)
    # columns first, on the small block; the row gather then copies whole output rows
    tmp = _interp_axis(block, sampling.cols, block.ndim - 1)
    return _interp_axis(tmp, sampling.rows, block.ndim - 2)


@dataclass(frozen=True)
class Transform:
    """An element of the square's symmetry group: flips, then ``k`` 90-degree turns.

    Attributes:
        hflip: Mirror left-right (reverse columns).
        vflip: Mirror up-down (reverse rows).
        k: Counter-clockwise quarter turns applied after the flips (``numpy.rot90``).
    """

    hflip: bool = False
    vflip: bool = False
    k: int = 0

    @classmethod
    def draw(cls, rng: np.random.Generator, flip: bool, rotate: bool) -> Transform:
        """Draw a random transform (uniform over what ``flip``/``rotate`` allow)."""
        hflip = bool(rng.integers(2)) if flip else False
        vflip = bool(rng.integers(2)) if flip else False
        return cls(hflip, vflip, int(rng.integers(4)) if rotate else 0)

    def apply(self, a: np.ndarray) -> np.ndarray:
        """Return the transformed ``(..., P, P)`` array as a contiguous copy."""
        if self.hflip:
            a = a[..., :, ::-1]
        if self.vflip:
            a = a[..., ::-1, :]
        if self.k:
            a = np.rot90(a, self.k, axes=(-2, -1))
        return np.ascontiguousarray(a)

    def shape(self, height: int, width: int) -> tuple[int, int]:
        """Shape of a transformed ``height`` x ``width`` array (odd ``k`` swaps them)."""
        return (width, height) if self.k % 2 else (height, width)

    def inverse_view(self, result: np.ndarray) -> np.ndarray:
        """Return a view ``V`` of ``result``: writing ``x`` into it gives ``apply(x)``.

        Reading a patch straight into this view fuses the augmentation into the read.
        """
        v = np.rot90(result, -self.k, axes=(-2, -1)) if self.k else result
        if self.vflip:
            v = v[..., ::-1, :]
        if self.hflip:
            v = v[..., :, ::-1]
        return v


def _reverse(axis: CoarseAxis) -> CoarseAxis:
    return CoarseAxis(
        axis.block,
        axis.coord[::-1],
        axis.lower[::-1],
        None if axis.weight is None else axis.weight[::-1],
    )


def transform_coarse(
    block: np.ndarray, sampling: CoarseSampling, transform: Transform
) -> tuple[np.ndarray, CoarseSampling]:
    """Rewrite a 2 km block and its sampling plan to upsample straight to a transform.

    ``upsample_coarse(*transform_coarse(b, s, t)) == t.apply(upsample_coarse(b, s))``.
    Flips reverse the per-pixel index arrays; a quarter turn transposes the (small)
    block and swaps the axes. The expensive strided copy of a rotated full-size patch
    is thereby replaced by a contiguous write.
    """
    rows, cols = sampling.rows, sampling.cols
    if transform.hflip:
        cols = _reverse(cols)
    if transform.vflip:
        rows = _reverse(rows)
    for _ in range(transform.k % 4):
        # rot90(A)[i, j] = A[j, n - 1 - i]: new rows = reversed old columns, new columns
        # = old rows, block transposed
        rows, cols = _reverse(cols), rows
        block = np.swapaxes(block, -1, -2)
    return block, CoarseSampling(rows, cols, sampling.mode)


COARSE_KEYS = ("coarse", "coarse_index", "coarse_weight")
"""Batch entries of a :class:`CoarseSlot` (block, index, weight)."""


@dataclass(frozen=True)
class CoarseSlot:
    """A patch's 2 km channels as a batch carries them, for upsampling on the device.

    The upsampled value of channel ``c`` at pixel ``(i, j)`` is the separable
    interpolation of ``block[c]`` at rows ``index[0:2, i]`` (lower, upper) with weight
    ``weight[0, i]`` and columns ``index[2:4, j]`` with weight ``weight[1, j]``: exactly
    what :func:`upsample_coarse` computes on the host. The last row and column of
    ``block`` are zero; pixels outside the scene point there (the format's no-data 0).

    Attributes:
        block: float32 ``(C, n, n)`` cells, zero-padded.
        index: int64 ``(4, P)``: row lower, row upper, column lower, column upper.
        weight: float32 ``(2, P)``: weight of the upper row / column (0 for nearest).
    """

    block: np.ndarray
    index: np.ndarray
    weight: np.ndarray

    @staticmethod
    def cells(patch: int, downsample: int = 1, factor: int = AMSR_FACTOR) -> int:
        """Side ``n`` of a slot's block: the cells a ``patch`` px window can touch, + 1."""
        # a window spans (patch - 1) * K / 25 cell centres: at most that + 2 cells, one
        # more for bilinear's upper neighbour, and the zero cell
        return (patch - 1) * downsample // factor + 4


def empty_coarse(slot: CoarseSlot) -> None:
    """Fill a slot for a window wholly outside the scene: every pixel reads the zero cell."""
    zero = slot.block.shape[-1] - 1
    slot.block.fill(0.0)
    slot.index.fill(zero)
    slot.weight.fill(0.0)


def _slot_axis(axis: CoarseAxis, inside: slice, length: int, zero: int) -> CoarseAxis:
    """``axis`` (of the clipped window) extended to the whole window: outside -> ``zero``."""
    lower = np.full(length, zero, dtype=np.int64)
    lower[inside] = axis.lower
    weight = None
    if axis.weight is not None:
        weight = np.zeros(length, dtype=np.float64)
        weight[inside] = axis.weight
    coord = np.full(length, np.nan)
    coord[inside] = axis.coord
    return CoarseAxis(axis.block, coord, lower, weight)


def pack_coarse(
    block: np.ndarray,
    sampling: CoarseSampling,
    inside: tuple[slice, slice],
    size: tuple[int, int],
    transform: Transform,
    slot: CoarseSlot,
) -> None:
    """Write a 2 km block and its per-pixel sampling into a batch slot.

    ``upsample_coarse`` of the slot (on the device) equals the host path: the block
    upsampled over the clipped window, zero elsewhere, then transformed.

    Args:
        block: ``(C, rows, cols)`` cells read at ``sampling.block``.
        sampling: From :func:`coarse_sampling` of the window clipped to the scene.
        inside: Rows and columns of the window the clipped window covers.
        size: ``(height, width)`` of the whole window.
        transform: The patch's augmentation.
        slot: Where to write (see :class:`CoarseSlot`).

    Raises:
        ValueError: If the block does not fit the slot.
    """
    n = slot.block.shape[-1]
    if max(block.shape[-2:]) >= n:
        raise ValueError(f"a 2 km block of {block.shape[-2:]} cells does not fit a slot of {n}")
    whole = CoarseSampling(
        _slot_axis(sampling.rows, inside[0], size[0], n - 1),
        _slot_axis(sampling.cols, inside[1], size[1], n - 1),
        sampling.mode,
    )
    block, whole = transform_coarse(block, whole, transform)
    slot.block.fill(0.0)
    slot.block[:, : block.shape[-2], : block.shape[-1]] = block
    for k, (axis, cells) in enumerate(
        ((whole.rows, block.shape[-2]), (whole.cols, block.shape[-1]))
    ):
        outside = axis.lower == n - 1
        upper = axis.lower if axis.weight is None else np.minimum(axis.lower + 1, cells - 1)
        slot.index[2 * k] = axis.lower
        slot.index[2 * k + 1] = np.where(outside, n - 1, upper)
        slot.weight[k] = 0.0 if axis.weight is None else axis.weight


def read_coarse_window(
    read_block: Callable[[slice, slice], np.ndarray],
    coarse_shape: tuple[int, int],
    window: Window,
    downsample: int = 1,
    mode: Upsampling = "nearest",
    factor: int = AMSR_FACTOR,
) -> np.ndarray:
    """Read the exact 2 km window of a source window and upsample it to its pixels.

    This is the one function patches and full scenes use for AMSR2/ERA5 channels.

    Args:
        read_block: Returns ``(..., len(rows), len(cols))`` values of the 2 km cells in
            the given row and column slices (e.g. a lambda slicing a Zarr array).
        coarse_shape: Shape of the 2 km grid.
        window: Source window (see :func:`coarse_sampling`).
        downsample: Source pixel size in 80 m pixels.
        mode: ``"nearest"`` or ``"bilinear"``.
        factor: 80 m pixels per 2 km cell.

    Returns:
        ``(..., height, width)`` upsampled values.
    """
    sampling = coarse_sampling(window, coarse_shape, downsample, mode, factor)
    return upsample_coarse(np.asarray(read_block(*sampling.block)), sampling)


# ----------------------------------------------------------------------------- downsampling


def downsampled_shape(shape: tuple[int, int], downsample: int) -> tuple[int, int]:
    """Return ``(ceil(H / K), ceil(W / K))``: partial edge blocks are kept."""
    if downsample < 1:
        raise ValueError(f"downsample must be a positive integer, got {downsample}")
    return -(-shape[0] // downsample), -(-shape[1] // downsample)


def _pad_to_blocks(values: np.ndarray, k: int, fill: float) -> np.ndarray:
    h, w = values.shape[-2:]
    ph, pw = (-h) % k, (-w) % k
    if not ph and not pw:
        return values
    pad = [(0, 0)] * (values.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(values, pad, constant_values=fill)


def block_sum(values: np.ndarray, k: int, dtype: type = np.float64) -> np.ndarray:
    """Sum ``(..., H, W)`` values over ``k`` x ``k`` blocks (zero-padded edge blocks)."""
    padded = _pad_to_blocks(values, k, 0)
    h, w = padded.shape[-2:]
    shaped = padded.reshape(*padded.shape[:-2], h // k, k, w // k, k)
    return shaped.sum(axis=(-3, -1), dtype=dtype)


def block_mean(values: np.ndarray, k: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Mean of ``(H, W)`` values over the valid pixels of each ``k`` x ``k`` block.

    Args:
        values: ``(H, W)`` float values.
        k: Block size.
        valid: ``(H, W)`` bool; ``None`` means every pixel is valid. Pixels past the
            edge of a partial block are never counted.

    Returns:
        ``(ceil(H/k), ceil(W/k))`` float32 means; 0 (the format's fill value) where a
        block has no valid pixel.
    """
    if k == 1:
        out = np.asarray(values, dtype=np.float32)
        return out if valid is None else np.where(valid, out, np.float32(0))
    mask = np.ones(values.shape, dtype=bool) if valid is None else valid
    total = block_sum(np.where(mask, values, 0).astype(np.float64), k)
    count = block_sum(mask, k, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    return mean.astype(np.float32)


def block_any(mask: np.ndarray, k: int) -> np.ndarray:
    """True where any pixel of a ``k`` x ``k`` block is True (edge blocks: present pixels)."""
    if k == 1:
        return np.asarray(mask, dtype=bool)
    return block_sum(mask, k, dtype=np.int64) > 0


def block_chart(chart: np.ndarray, k: int, n_classes: int) -> np.ndarray:
    """Downsample a chart by ``k``: 255 if any pixel of the block is 255, else the mode.

    Ties between classes go to the **highest** class index, in the spirit of the
    official 40 m -> 80 m 2 x 2 max (ice wins over water on ice edges). The rule keeps
    255 wherever the reference is masked, so no label is invented next to land, chart
    edges or swath edges. Pixels past the edge of a partial block are ignored.

    Args:
        chart: ``(H, W)`` uint8 class indices with 255 = masked.
        k: Block size.
        n_classes: Classes of this chart (11 / 6 / 7).

    Returns:
        ``(ceil(H/k), ceil(W/k))`` uint8.
    """
    chart = np.asarray(chart, dtype=np.uint8)
    if k == 1:
        return chart
    masked = block_any(chart == CHART_FILL, k)
    counts = np.stack([block_sum(chart == c, k, dtype=np.int32) for c in range(n_classes)])
    # argmax returns the first maximum: search the reversed class axis so ties go high
    mode = (n_classes - 1 - np.argmax(counts[::-1], axis=0)).astype(np.uint8)
    return np.where(masked, np.uint8(CHART_FILL), mode)
