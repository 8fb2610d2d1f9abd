"""Render each polygon's ice parts as floes and open water on the 80 m grid.

For every chart polygon the parts listed in its codes are drawn, in this order:

1. **Continuous parts** (fast ice, level ice, new-ice sheets without a form code):
   the share of the polygon where the SIC clustering field is highest, all ice.
2. **Resolvable floes** (diameter >= 1.5 pixels), largest first: a Voronoi
   tessellation (:func:`~icecontext.synthetic.fields.worley`) with one floe per
   ``d x d`` cell, ``d`` drawn log-uniformly from the form's physical size range
   times ``floe_size_factor / 80 m``. Each pixel gets the score
   ``edge / (d / 2) - 0.5 u + 0.5 G`` (``edge``: distance to the floe boundary,
   ``u``: a random number per floe, ``G``: the SIC clustering field); the pixels
   above the threshold that yields the part's area are ice, with a one-pixel soft
   edge (fractional cover at floe margins). Low concentrations thus give separated,
   rounded floes gathered where ``G`` is high; high concentrations give floes
   separated by narrow leads, and where floes touch their common boundary is
   marked as rubble (a pressure ridge in the SAR), so floe outlines stay visible
   even at 10/10.
3. **Sub-pixel floes** (cake, pancake, shuga, small floes, growlers, icebergs below
   1.5 pixels) fill what is left: each pixel gets a fractional ice cover ``f``,
   modulated by ``G``, and then counting noise: the pixel holds
   ``n = 1 / (pi d**2 / 4)`` floe-sized slots, each filled with probability ``f``
   (binomial), so the mean cover is kept, sparse icebergs appear as isolated bright
   pixels and cake ice as a nearly uniform grey.

A pixel carries one ice part (its stage category) plus open water; the ice fraction
is what the SAR and AMSR2 models mix. The loop runs over polygons and parts only
(tens), never over floes; large floes are evaluated on a grid reduced to about 8
pixels per floe and interpolated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from icecontext.data.io.format import PIXEL_SPACING_M
from icecontext.synthetic.fields import upsample_linear, worley
from icecontext.synthetic.icechart import FORM_SIZE_M, ChartPolygon, IcePart

RESOLVABLE_PX = 1.5
"""Floes at least this wide (pixels) are drawn as shapes; smaller ones statistically."""

RUBBLE_PX = 0.75
"""Pixels this close to the boundary between two touching floes are ridged rubble."""

_U_WEIGHT = np.float32(0.5)
_G_WEIGHT = np.float32(0.5)


@dataclass
class FloeField:
    """Rendered sea ice.

    Attributes:
        ice_fraction: float32 (H, W), ice area fraction of each pixel (0 on land).
        stage: uint8 (H, W), stage category of the pixel's ice (0 = none).
        rubble: uint8 (H, W), 1 on the rubble where resolvable floes touch (within
            ``RUBBLE_PX`` of the boundary between two floes that are both present).
        parts: Per polygon id, the rendered parts: dicts with the part's codes, area
            fraction, kind (``continuous``/``floes``/``subpixel``) and floe diameter in
            pixels.
    """

    ice_fraction: np.ndarray
    stage: np.ndarray
    rubble: np.ndarray
    parts: dict[int, list[dict[str, object]]]


def floe_diameter_px(part: IcePart, factor: float, rng: np.random.Generator) -> float | None:
    """Draw a floe diameter (pixels) for a part; ``None`` for continuous sheets."""
    size = FORM_SIZE_M.get(part.form)
    if size is None:
        return None
    lo, hi = size
    d_m = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    return d_m * factor / PIXEL_SPACING_M


def _soft_threshold(score: np.ndarray, target: float, width: float) -> np.ndarray:
    """Ice cover from a score: the ``target`` highest-scoring pixels, 1-pixel soft edge."""
    n = score.size
    k = round(target)
    if k <= 0:
        return np.zeros(n, dtype=np.float32)
    if k >= n:
        return np.ones(n, dtype=np.float32)
    t = np.partition(score, n - k)[n - k]
    f = (score - t) * np.float32(width) + np.float32(0.5)
    return np.clip(f, 0.0, 1.0, out=f)


def _rotate(yy: np.ndarray, xx: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return c * yy - s * xx, s * yy + c * xx


def _floe_score(
    sl: tuple[slice, slice],
    idx: np.ndarray,
    d: float,
    salt: int,
    angle: float,
    cluster: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Score and edge distance (pixels) at the bbox pixels ``idx`` (flat bbox indices).

    The score is ``edge / (d/2) - 0.5 u + 0.5 G(seed)``: the clustering field is read
    at each floe's seed, so it decides which floes exist without cutting holes into
    floes larger than its correlation length.
    """
    h = sl[0].stop - sl[0].start
    w = sl[1].stop - sl[1].start
    r = int(d // 8)
    if r <= 1:
        yy, xx = np.divmod(idx, w)
        yy = (yy + sl[0].start).astype(np.float32)
        xx = (xx + sl[1].start).astype(np.float32)
    else:  # big floes: evaluate on a grid r times coarser (>= 8 px per floe), interpolate
        gy = np.arange(sl[0].start, sl[0].stop + r, r, dtype=np.float32)
        gx = np.arange(sl[1].start, sl[1].stop + r, r, dtype=np.float32)
        yy, xx = np.meshgrid(gy, gx, indexing="ij")
    edge, u, sy, sx = worley(*_rotate(yy, xx, angle), d, salt)
    del yy, xx
    py, px = _rotate(sy, sx, -angle)  # seeds back in pixel coordinates
    rows = np.clip(np.rint(py), 0, cluster.shape[0] - 1).astype(np.intp)
    cols = np.clip(np.rint(px), 0, cluster.shape[1] - 1).astype(np.intp)
    score = edge * np.float32(2.0 / d) - _U_WEIGHT * u + _G_WEIGHT * cluster[rows, cols]
    if r > 1:
        score = upsample_linear(score, (h, w), r, 0.0).ravel()[idx]
        edge = upsample_linear(edge, (h, w), r, 0.0).ravel()[idx]
    return score, edge


class _PartSpec(NamedTuple):
    """One ice part of a polygon as it will be rendered."""

    position: int
    part: IcePart
    fraction: float
    diameter: float | None
    kind: str  # "continuous", "floes" or "subpixel"


@dataclass(frozen=True)
class _PolygonDraw:
    """A polygon's own random choices: floe orientation, parts and Voronoi salts."""

    angle: float
    specs: list[_PartSpec]
    salts: np.ndarray


@dataclass(frozen=True)
class _PolygonPixels:
    """The sea pixels of one polygon.

    Attributes:
        sl: The polygon's bounding box.
        idx: Flat indices of its sea pixels within the bounding box.
        gidx: Flat indices of the same pixels within the scene.
        cluster: The SIC clustering field at those pixels.
    """

    sl: tuple[slice, slice]
    idx: np.ndarray
    gidx: np.ndarray
    cluster: np.ndarray


@dataclass(frozen=True)
class _PolygonCover:
    """Per sea pixel of a polygon: still free, ice fraction, stage, rubble (filled in place)."""

    free: np.ndarray
    ice: np.ndarray
    stage: np.ndarray
    rubble: np.ndarray

    @classmethod
    def empty(cls, n: int) -> _PolygonCover:
        """All ``n`` pixels free and open water."""
        return cls(
            np.ones(n, dtype=bool),
            np.zeros(n, dtype=np.float32),
            np.zeros(n, dtype=np.uint8),
            np.zeros(n, dtype=np.uint8),
        )


def _draw_polygon(
    poly: ChartPolygon, floe_size_factor: float, prng: np.random.Generator
) -> _PolygonDraw:
    """Draw, in a fixed order, the angle, the parts' floe diameters and their salts."""
    angle = float(prng.uniform(0, np.pi))
    diameters = [floe_diameter_px(part, floe_size_factor, prng) for part, _ in poly.render]
    salts = prng.integers(0, 2**32, size=len(poly.render))
    specs = []
    for k, ((part, frac), d) in enumerate(zip(poly.render, diameters, strict=True)):
        kind = "continuous" if d is None else ("floes" if d >= RESOLVABLE_PX else "subpixel")
        specs.append(_PartSpec(k, part, frac, d, kind))
    return _PolygonDraw(angle, specs, salts)


def _polygon_pixels(
    labels: np.ndarray, land: np.ndarray, i: int, sl: tuple[slice, slice], cluster: np.ndarray
) -> _PolygonPixels | None:
    """The sea pixels of polygon ``i`` in its bounding box ``sl``; ``None`` if there are none."""
    idx = np.flatnonzero((labels[sl] == i) & ~land[sl])
    if idx.size == 0:
        return None
    bw = sl[1].stop - sl[1].start
    gidx = (idx // bw + sl[0].start) * labels.shape[1] + (idx % bw + sl[1].start)
    return _PolygonPixels(sl, idx, gidx, cluster.reshape(-1)[gidx])


def _parts_report(specs: list[_PartSpec]) -> list[dict[str, object]]:
    """The rendered parts as recorded in ``FloeField.parts``."""
    return [
        {
            "stage": s.part.stage,
            "form": s.part.form,
            "tenths": s.part.tenths,
            "fraction": round(s.fraction, 4),
            "kind": s.kind,
            "diameter_px": None if s.diameter is None else round(s.diameter, 3),
        }
        for s in specs
    ]


def _render_shapes(
    pixels: _PolygonPixels, draw: _PolygonDraw, cluster: np.ndarray, cover: _PolygonCover
) -> None:
    """Continuous sheets and resolvable floes, largest first, into the free pixels."""
    n = pixels.idx.size
    order = sorted(
        (s for s in draw.specs if s.kind != "subpixel"),
        key=lambda s: -(np.inf if s.diameter is None else s.diameter),
    )
    for k, part, frac, d, kind in order:
        cand = np.flatnonzero(cover.free)
        if cand.size == 0:
            break
        target = frac * n
        if kind == "continuous":
            score = pixels.cluster[cand]
            f = _soft_threshold(score, target, 1e6)  # hard-edged sheet
        else:
            assert d is not None
            score, edge = _floe_score(
                pixels.sl, pixels.idx[cand], d, int(draw.salts[k]), draw.angle, cluster
            )
            f = _soft_threshold(score, target, d / 2.0)
            cover.rubble[cand[(f >= 0.5) & (edge < RUBBLE_PX)]] = 1
        took = f > 0
        cover.ice[cand[took]] = f[took]
        cover.stage[cand[took]] = part.category
        cover.free[cand[took]] = False


def render_floes(
    labels: np.ndarray,
    land: np.ndarray,
    polygons: list[ChartPolygon],
    cluster: np.ndarray,
    split: np.ndarray,
    floe_size_factor: float,
    rng: np.random.Generator,
) -> FloeField:
    """Draw the ice of every polygon (see the module docstring).

    Args:
        labels: int32 (H, W) polygon index 0..n-1 (covers land too).
        land: bool (H, W) land mask (never ice).
        polygons: Polygon ``i`` describes label ``i``.
        cluster: float32 (H, W) unit-variance SIC clustering field ``G``.
        split: float32 (H, W) second field dividing the left-over area between
            several sub-pixel parts.
        floe_size_factor: Multiplier of physical floe diameters.
        rng: Random generator.
    """
    ice = np.zeros(labels.shape, dtype=np.float32)
    stage = np.zeros(labels.shape, dtype=np.uint8)
    rubble = np.zeros(labels.shape, dtype=np.uint8)
    report: dict[int, list[dict[str, object]]] = {}
    base = int(rng.integers(0, 2**63))
    for i, sl in enumerate(ndimage.find_objects(labels + 1)):
        poly = polygons[i]
        if sl is None or not poly.render:
            continue
        # one stream per polygon, drawn in a fixed order (angle, diameters, salts), so a
        # polygon's floes do not depend on the other polygons or on the scales' effects
        prng = np.random.default_rng([base, i])
        draw = _draw_polygon(poly, floe_size_factor, prng)
        pixels = _polygon_pixels(labels, land, i, sl, cluster)
        if pixels is None:
            continue
        report[poly.poly_id] = _parts_report(draw.specs)
        cover = _PolygonCover.empty(pixels.idx.size)
        _render_shapes(pixels, draw, cluster, cover)
        sub = [s for s in draw.specs if s.kind == "subpixel"]
        if sub:
            _render_subpixel(sub, pixels, split.reshape(-1)[pixels.gidx], cover, prng)
        ice.reshape(-1)[pixels.gidx] = cover.ice
        stage.reshape(-1)[pixels.gidx] = cover.stage
        rubble.reshape(-1)[pixels.gidx] = cover.rubble
    return FloeField(ice, stage, rubble, report)


def _render_subpixel(
    specs: list[_PartSpec],
    pixels: _PolygonPixels,
    split: np.ndarray,
    cover: _PolygonCover,
    rng: np.random.Generator,
) -> None:
    """Sub-pixel floes: fractional cover with counting noise in the pixels left free."""
    n = pixels.idx.size
    g = pixels.cluster
    cand = np.flatnonzero(cover.free)
    if cand.size == 0:
        return
    areas = np.array([s.fraction * n for s in specs])
    total = float(areas.sum())
    if total <= 0:
        return
    # divide the free pixels between the parts in patches of the clustering scale
    if len(specs) > 1:
        order = np.argsort(split[cand], kind="stable")
        bounds = np.round(np.cumsum(areas) / total * cand.size).astype(int)
        groups = np.split(cand[order], bounds[:-1])
    else:
        groups = [cand]
    mean = min(1.0, total / cand.size)
    for spec, grp in zip(specs, groups, strict=True):
        if grp.size == 0:
            continue
        spread = np.float32(0.6 * min(mean, 1.0 - mean) + 0.02)
        base = g[grp] * spread
        shift = _mean_preserving_shift(base, mean)
        f = np.clip(base + np.float32(shift), 0.0, 1.0)
        d = spec.diameter
        assert d is not None
        # n floe-sized slots per pixel, each filled with probability f: the cover keeps
        # its mean f and gets the variance f (1 - f) / n of counting n floes
        slots = max(1, min(10_000, round(1.0 / (np.pi / 4 * d * d))))
        f = rng.binomial(slots, f).astype(np.float32) * np.float32(1.0 / slots)
        took = f > 0
        cover.ice[grp[took]] = f[took]
        cover.stage[grp[took]] = spec.part.category


def _mean_preserving_shift(base: np.ndarray, mean: float, iterations: int = 30) -> float:
    """Shift ``s`` such that ``mean(clip(base + s, 0, 1)) == mean`` (bisection)."""
    lo, hi = -float(base.max()) - 1.0, 1.0 - float(base.min()) + 1.0
    sample = base if base.size <= 200_000 else base[:: base.size // 200_000 + 1]
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if float(np.clip(sample + np.float32(mid), 0.0, 1.0).mean()) < mean:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
