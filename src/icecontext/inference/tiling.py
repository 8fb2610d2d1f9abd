"""Tile layout for exact full-scene prediction with central-crop stitching.

A scene of ``H x W`` pixels (at the source's resolution) is covered by square tiles
of side ``tile``. Each tile is responsible for a *core* region; the cores partition
the scene, and every core lies at least ``margin`` pixels inside its tile, except
where the core touches the scene border (there the tile's edge *is* the scene's
edge, as in a whole-scene pass). Hence a pixel's prediction sees at least
``margin`` pixels of real context on every side that the whole-scene pass would
also see, and when ``margin`` is at least the network's receptive-field radius the
tiled result equals the whole-scene pass.

Exactness also needs translation equivariance, which strided networks only have
for shifts that are multiples of their total stride: tile origins and sizes are
therefore multiples of ``align`` (default 32, the largest stride of a ResNet), and
the scene is padded at the bottom/right to a multiple of ``align`` (the reference
whole-scene pass is defined on that padded scene, with inputs 0 = "no data" in the
padding, like the format's own fill value).

The layout along one axis (padded length ``L``): origins ``0, s, 2s, ...`` with step
``s = tile - 2 * margin``; the last tile is placed flush with the padded end
(origin ``L - tile``), so every tile has the same shape and tiles batch together.
Core boundaries lie at ``origin + tile - margin`` of each tile but the last.

Balancing (``balance=True``, what the predictor uses): a scene slightly larger than
a tile would need a second, mostly redundant tile per axis (a 2528-pixel axis with
2048-pixel tiles computes 4096 pixels). The tile is then shrunk, per axis, to the
smallest aligned size that covers the axis with the same number of tiles and the same
margin (1408 pixels there: 2816 computed), so the work stays close to
``length x (1 + 2 margin / step)``. Tiles may then be rectangular; all tiles of a
scene still share one shape and batch together.
"""

from __future__ import annotations

from dataclasses import dataclass

from icecontext.errors import ConfigError

DEFAULT_ALIGN = 32


def round_up(value: int, multiple: int) -> int:
    """Return the smallest multiple of ``multiple`` that is ``>= value``."""
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class TileSettings:
    """How a scene is cut into tiles for one pass of a model.

    Attributes:
        tile: Tile side in pixels at the source's resolution (a scene smaller than a
            tile is run as one tile of the scene padded to ``align``).
        overlap: Context margin in pixels on each side of a tile's core; the result
            equals a whole-scene pass when it is at least the receptive-field radius
            (and the model has no global pooling).
        batch: Tiles per forward pass.
        align: Tile alignment in pixels (the network's total stride).
        balance: Shrink tiles to the smallest aligned size that needs as many tiles
            (:func:`plan_tiles`): less redundant work.

    Raises:
        ConfigError: If ``batch`` is not positive.
    """

    tile: int = 512
    overlap: int = 64
    batch: int = 4
    align: int = DEFAULT_ALIGN
    balance: bool = True

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ConfigError("--batch", f"must be >= 1 tile, got {self.batch}")

    def plan(self, shape: tuple[int, int]) -> TileLayout:
        """Tiles over a scene (or window) of ``shape``: :func:`plan_tiles` with these settings."""
        return plan_tiles(shape, self.tile, self.overlap, self.align, balance=self.balance)


@dataclass(frozen=True)
class Span:
    """One tile along one axis.

    Attributes:
        start: First pixel the tile reads (on the padded axis).
        stop: One past the last pixel it reads.
        core_start: First pixel whose prediction this tile provides.
        core_stop: One past the last such pixel.
    """

    start: int
    stop: int
    core_start: int
    core_stop: int


@dataclass(frozen=True)
class Tile:
    """A 2-D tile: its read window and its core, in pixels of the padded scene.

    Attributes:
        rows: Row span.
        cols: Column span.
    """

    rows: Span
    cols: Span

    @property
    def window(self) -> tuple[int, int, int, int]:
        """``(row, col, height, width)`` read window (may extend past the unpadded scene)."""
        return (
            self.rows.start,
            self.cols.start,
            self.rows.stop - self.rows.start,
            self.cols.stop - self.cols.start,
        )

    @property
    def core(self) -> tuple[int, int, int, int]:
        """``(row, col, height, width)`` of the region this tile predicts."""
        return (
            self.rows.core_start,
            self.cols.core_start,
            self.rows.core_stop - self.rows.core_start,
            self.cols.core_stop - self.cols.core_start,
        )


@dataclass(frozen=True)
class TileLayout:
    """All tiles of a scene.

    Attributes:
        shape: ``(H, W)`` of the scene (unpadded).
        padded_shape: ``(H, W)`` rounded up to multiples of ``align``.
        tile: Tile side actually used (may be smaller than asked for small scenes).
        margin: Context kept around every core (>= the asked overlap).
        align: Alignment of tile origins and sizes.
        tiles: The tiles, row-major.
    """

    shape: tuple[int, int]
    padded_shape: tuple[int, int]
    tile: tuple[int, int]
    margin: int
    align: int
    tiles: tuple[Tile, ...]


def _axis_spans(length: int, tile: int, step: int) -> list[Span]:
    margin = (tile - step) // 2
    if length <= tile:
        return [Span(0, length, 0, length)]
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    spans: list[Span] = []
    core_start = 0
    for i, s in enumerate(starts):
        last = i == len(starts) - 1
        core_stop = length if last else s + tile - margin
        spans.append(Span(s, s + tile, core_start, core_stop))
        core_start = core_stop
    return spans


def _axis_tile(length: int, tile: int, overlap: int, align: int, balance: bool) -> tuple[int, int]:
    """``(tile, step)`` along one axis; balanced: the smallest tile needing as many tiles."""
    step = (tile - 2 * overlap) // align * align
    if length <= tile or not balance:
        return tile, step
    n = 1 + -(-(length - tile) // step)
    for t in range(round_up(2 * overlap + 1, align), tile, align):
        s = (t - 2 * overlap) // align * align
        if s > 0 and (n - 1) * s + t >= length:
            return t, s
    return tile, step


def plan_tiles(
    shape: tuple[int, int],
    tile: int,
    overlap: int,
    align: int = DEFAULT_ALIGN,
    *,
    balance: bool = False,
) -> TileLayout:
    """Lay out tiles over a scene.

    Args:
        shape: ``(H, W)`` of the scene at the source's resolution.
        tile: Wanted tile side in pixels (rounded up to a multiple of ``align``).
        overlap: Context margin in pixels kept on each side of every core (rounded up
            so the step between tiles is a multiple of ``align``). Predictions are
            exact when it is at least the model's receptive-field radius.
        align: Alignment of origins and sizes (the network's total stride).
        balance: Shrink the tile per axis to the smallest aligned size that needs the
            same number of tiles (see the module docstring).

    Returns:
        The layout. A scene not larger than the tile is one tile of the padded scene.

    Raises:
        ConfigError: If the sizes are not positive or ``tile`` leaves no core after
            removing ``2 * overlap`` (names ``--tile`` / ``--overlap``, the options of
            the commands).
    """
    h, w = (int(v) for v in shape)
    if h < 1 or w < 1:
        raise ConfigError("shape", f"scene shape must be positive, got {shape}")
    if align < 1:
        raise ConfigError("align", f"must be >= 1, got {align}")
    if tile < 1:
        raise ConfigError("--tile", f"must be >= 1 pixel, got {tile}")
    if overlap < 0:
        raise ConfigError("--overlap", f"must be >= 0 pixels, got {overlap}")
    tile = round_up(tile, align)
    step = (tile - 2 * overlap) // align * align
    ph, pw = round_up(h, align), round_up(w, align)
    if ph <= tile and pw <= tile:  # one tile: the whole scene, any margin is satisfied
        span_r, span_c = Span(0, ph, 0, ph), Span(0, pw, 0, pw)
        return TileLayout((h, w), (ph, pw), (ph, pw), overlap, align, (Tile(span_r, span_c),))
    if step <= 0:
        raise ConfigError(
            "--tile",
            f"tile {tile} px leaves no core after an overlap of {overlap} px on each side "
            f"(need tile > 2 * overlap, in multiples of {align}); increase the tile or "
            "reduce the overlap",
        )
    tile_h, step_h = _axis_tile(ph, tile, overlap, align, balance)
    tile_w, step_w = _axis_tile(pw, tile, overlap, align, balance)
    row_spans = _axis_spans(ph, tile_h, step_h)
    col_spans = _axis_spans(pw, tile_w, step_w)
    tiles = tuple(Tile(r, c) for r in row_spans for c in col_spans)
    margin = min((tile_h - step_h) // 2, (tile_w - step_w) // 2)
    th = min(tile_h, ph)
    tw = min(tile_w, pw)
    return TileLayout((h, w), (ph, pw), (th, tw), margin, align, tiles)
