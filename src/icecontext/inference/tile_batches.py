"""The tile engine of every tiled pass: read a scene's tiles batch by batch, one batch ahead.

Predict, evaluation, training validation and Grad-CAM explanations all run a model over
a scene (or a window of it) in tiles laid out by :mod:`icecontext.inference.tiling`.
They share this module: :class:`TileSource` is what they need from a scene source, and
:func:`iter_tile_batches` reads the inputs of each batch of tiles (zero past the domain,
like the format's own "no data" fill) and the valid mask of each tile's core, in a
background thread one batch ahead, while the caller runs the model on the previous
batch. All source reads happen in that one thread, in tile order (a batch's inputs, then
its cores' valid masks), so a source that caches row strips
(:class:`~icecontext.inference.streaming.StreamingNetCDFSource`) sees one sequential
reader. Memory: the batch being used and the one being read.

Use it as::

    layout = tiling.plan(source.shape)
    with contextlib.closing(iter_tile_batches(source, features, layout, tiling.batch)) as it:
        for batch in it:
            ...  # batch.inputs -> model; paste batch.crops[b] of each tile

``contextlib.closing`` stops the reader as soon as the loop ends (an exception included)
instead of when the generator is collected.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from icecontext.errors import ConfigError, DataError
from icecontext.inference.tiling import Tile, TileLayout

Window = tuple[int, int, int, int]
"""``(row, col, height, width)`` in pixels at the source's resolution."""


class TileSource(Protocol):
    """What a tiled pass reads from a scene.

    A :class:`~icecontext.data.loader.sources.SceneSource` is one; predict, evaluation,
    validation and explanations all take this protocol.
    """

    name: str

    @property
    def shape(self) -> tuple[int, int]:
        """``(h, w)`` at the source's resolution."""
        ...

    @property
    def full_shape(self) -> tuple[int, int]:
        """``(H, W)`` at 80 m."""
        ...

    @property
    def downsample(self) -> int:
        """Integer downsampling factor ``K`` of the source."""
        ...

    def read_inputs(self, window: Window, features: Sequence[str]) -> np.ndarray:
        """``float32 (C, h, w)`` inputs of a window inside the scene."""
        ...

    def valid_mask(self, window: Window) -> np.ndarray:
        """``bool (h, w)``: pixels with input data."""
        ...


@dataclass(frozen=True)
class CoreCrop:
    """Where a tile's core lands, clipped to the domain (the alignment padding cut off).

    Attributes:
        rows: Rows of the domain the core covers.
        cols: Columns of the domain the core covers.
        local_rows: The same rows in the tile's own pixel coordinates.
        local_cols: The same columns in the tile's own pixel coordinates.
    """

    rows: slice
    cols: slice
    local_rows: slice
    local_cols: slice

    @property
    def region(self) -> tuple[slice, slice]:
        """``(rows, cols)`` of the domain: ``array[crop.region] = ...``."""
        return self.rows, self.cols

    @property
    def local(self) -> tuple[slice, slice]:
        """``(rows, cols)`` inside the tile: ``tile_output[crop.local]``."""
        return self.local_rows, self.local_cols

    @property
    def window(self) -> Window:
        """``(row, col, height, width)`` of the crop in domain coordinates."""
        r, c = self.rows, self.cols
        return (r.start, c.start, r.stop - r.start, c.stop - c.start)


def core_crop(tile: Tile, shape: tuple[int, int]) -> CoreCrop | None:
    """The tile's core clipped to a domain of ``shape``; ``None`` when it lies in the padding."""
    h, w = shape
    r0, c0, ch, cw = tile.core
    r1, c1 = min(r0 + ch, h), min(c0 + cw, w)
    if r1 <= r0 or c1 <= c0:
        return None
    lr, lc = r0 - tile.rows.start, c0 - tile.cols.start
    return CoreCrop(slice(r0, r1), slice(c0, c1), slice(lr, lr + r1 - r0), slice(lc, lc + c1 - c0))


@dataclass(frozen=True, eq=False)
class TileBatch:
    """One batch of tiles, read.

    Attributes:
        index: Batch number (0-based).
        first: Index in ``layout.tiles`` of the batch's first tile.
        tiles: The tiles (positions in the padded domain).
        inputs: float32 ``(B, C, th, tw)``: the tiles' inputs, 0 past the domain.
        crops: Per tile, its core clipped to the domain (``None``: all padding).
        valid: Per tile, bool ``(crop height, crop width)``: the valid mask of its
            clipped core; ``None`` where the crop is ``None`` or masks were not read.
    """

    index: int
    first: int
    tiles: tuple[Tile, ...]
    inputs: np.ndarray
    crops: tuple[CoreCrop | None, ...]
    valid: tuple[np.ndarray | None, ...]


def read_padded(
    source: TileSource, domain: Window, window: Window, features: Sequence[str]
) -> np.ndarray:
    """float32 ``(C, h, w)`` inputs of a window of the domain; 0 past the domain's edge.

    Args:
        source: The scene.
        domain: ``(row, col, height, width)`` of the domain in the source.
        window: ``(row, col, height, width)`` in domain coordinates; may extend past
            the domain at the bottom/right (alignment padding).
        features: Channel names.

    Raises:
        DataError: If the source returns an array of another shape.
    """
    r0, c0, dh, dw = domain
    r, c, h, w = window
    n = len(features)
    out = np.zeros((n, h, w), dtype=np.float32)
    rr, cc = min(h, dh - r), min(w, dw - c)
    if rr > 0 and cc > 0:
        read = (r0 + r, c0 + c, rr, cc)
        data = np.asarray(source.read_inputs(read, features))
        if data.shape != (n, rr, cc):
            raise DataError(
                f"scene {source.name}: read_inputs returned shape {data.shape} for window "
                f"{read}, expected {(n, rr, cc)}"
            )
        out[:, :rr, :cc] = data
    return out


def check_window(window: Window | None, shape: tuple[int, int]) -> Window:
    """The domain of a pass: ``window`` checked against the scene, or the whole scene.

    Raises:
        ConfigError: For a window that is not four integers, is empty or leaves the
            scene (names ``--window``).
    """
    h, w = (int(v) for v in shape)
    if window is None:
        return (0, 0, h, w)
    if len(window) != 4:
        raise ConfigError("--window", f"expected four integers r c h w, got {window}")
    r, c, wh, ww = (int(v) for v in window)
    if wh < 1 or ww < 1 or r < 0 or c < 0 or r + wh > h or c + ww > w:
        raise ConfigError(
            "--window",
            f"({r}, {c}, {wh}, {ww}) must have a positive size and lie inside the scene "
            f"({h} x {w} pixels at the model's resolution)",
        )
    return (r, c, wh, ww)


class _BatchReader:
    """Reads batch ``k`` of a layout (called in the reader thread)."""

    def __init__(
        self,
        source: TileSource,
        features: Sequence[str],
        layout: TileLayout,
        batch: int,
        domain: Window,
        valid_masks: bool,
    ) -> None:
        self.source = source
        self.features = list(features)
        self.layout = layout
        self.batch = batch
        self.domain = domain
        self.valid_masks = valid_masks
        self.count = -(-len(layout.tiles) // batch)

    def __call__(self, k: int) -> TileBatch:
        first = k * self.batch
        tiles = tuple(self.layout.tiles[first : first + self.batch])
        x = np.stack(
            [read_padded(self.source, self.domain, t.window, self.features) for t in tiles]
        )
        crops = tuple(core_crop(t, self.layout.shape) for t in tiles)
        valid = tuple(self._valid(crop) for crop in crops)
        return TileBatch(k, first, tiles, x, crops, valid)

    def _valid(self, crop: CoreCrop | None) -> np.ndarray | None:
        if crop is None or not self.valid_masks:
            return None
        r, c, h, w = crop.window
        read = (self.domain[0] + r, self.domain[1] + c, h, w)
        return np.asarray(self.source.valid_mask(read), dtype=bool)


def iter_tile_batches(
    source: TileSource,
    features: Sequence[str],
    layout: TileLayout,
    batch: int,
    *,
    window: Window | None = None,
    valid_masks: bool = True,
) -> Generator[TileBatch, None, None]:
    """Read the tiles of ``layout`` in batches, one batch ahead in a background thread.

    Args:
        source: The scene.
        features: Input channel names, in the order the model expects.
        layout: Tiles over the domain (``plan_tiles`` of the domain's shape, e.g.
            :meth:`~icecontext.inference.tiling.TileSettings.plan`).
        batch: Tiles per batch (the last batch may be smaller).
        window: ``(row, col, height, width)`` of the domain in the source (``None``:
            the whole scene). Tiles are read relative to it and zero past its edge,
            so a window is a scene of its own.
        valid_masks: Also read the valid mask of every tile's clipped core.

    Returns:
        A generator of :class:`TileBatch` records in tile order; nothing is read
        before the first ``next``. The arguments are checked at the call.

    Raises:
        ConfigError: For a bad window or ``batch`` (names ``--window`` / ``--batch``).
        ValueError: If the layout was planned for another shape than the domain.
        DataError: If the source returns arrays of the wrong shape.
    """
    domain = check_window(window, source.shape)
    if batch < 1:
        raise ConfigError("--batch", f"must be >= 1 tile, got {batch}")
    if tuple(layout.shape) != domain[2:]:
        raise ValueError(f"layout planned for {layout.shape}, the domain is {domain[2:]}")
    return _read_ahead(_BatchReader(source, features, layout, batch, domain, valid_masks))


def _read_ahead(read: _BatchReader) -> Generator[TileBatch, None, None]:
    """Yield ``read(0), read(1), ...`` while the next batch is read in a background thread."""
    if read.count == 0:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: Future[TileBatch] | None = pool.submit(read, 0)
        try:
            for k in range(read.count):
                assert pending is not None
                record = pending.result()
                pending = pool.submit(read, k + 1) if k + 1 < read.count else None
                yield record
                del record
        finally:
            if pending is not None:
                pending.cancel()
