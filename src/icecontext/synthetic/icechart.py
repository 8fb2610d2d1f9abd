"""Synthetic ice charts: polygons carrying SIGRID-3 codes, as an ice analyst draws them.

The scene is cut into polygons (an additively weighted, warped Voronoi partition, so
sizes vary and borders wander). Each polygon gets a *regime* from its position
relative to a random ice edge and to the coast - open water, marginal ice, pack, fast
ice, icebergs - and then SIGRID-3 codes: the total concentration ``CT``, up to three
ice parts (partial concentration ``CA/CB/CC``, stage ``SA/SB/SC``, form
``FA/FB/FC``) ordered thickest first, and ``POLY_TYPE``. The codes are written in the
raw ``polygon_codes`` table format (format reference §2.3); the labels SIC/SOD/FLOE
are obtained *only* by converting these codes with :mod:`icecontext.data.io.charts`.

Class frequencies are tuned towards the training set (format reference §5.2): about
57 % of charted sea is open water over many scenes (5 % of scenes water-only, 13 %
without water); the total concentration of ice polygons follows the dataset's SIC
histogram (half of the ice at 10/10); stages depend on the season (new and young
ice at freeze-up, old ice in the melt season and more in DMI than CIS charts) and
forms on the stage (vast floes dominate, as FLOE class 5 does). CIS charts carry no
ice cake (FLOE 1) or berg (FLOE 6) forms, as in the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np

from icecontext.synthetic.fields import gaussian_field

CODES_HEADER: Final = "poly_id;CT;CA;SA;FA;CB;SB;FB;CC;SC;FC;CN;CD;CF;POLY_TYPE"
NOT_FILLED: Final = -9

# Physical stage categories used to render a part (1..5 = the SOD classes).
NEW, YOUNG, THIN_FYI, THICK_FYI, OLD, GLACIER = 1, 2, 3, 4, 5, 6
STAGE_NAMES: Final = {
    0: "open water",
    NEW: "new ice",
    YOUNG: "young ice",
    THIN_FYI: "thin first-year ice",
    THICK_FYI: "thick first-year ice",
    OLD: "old ice",
    GLACIER: "glacier ice (bergs)",
}
# SIGRID-3 stage codes per category, with the share of each code (planning values).
STAGE_CODES: Final = {
    NEW: ((81, 0.6), (82, 0.4)),
    YOUNG: ((83, 0.4), (84, 0.3), (85, 0.3)),
    THIN_FYI: ((87, 0.6), (88, 0.2), (89, 0.2)),
    THICK_FYI: ((93, 0.5), (91, 0.3), (86, 0.2)),
    OLD: ((95, 0.5), (96, 0.2), (97, 0.3)),
    GLACIER: ((98, 1.0),),
}
CODE_CATEGORY: Final = {code: cat for cat, codes in STAGE_CODES.items() for code, _ in codes}
# Thickness order (thickest first), as SIGRID-3 orders the parts A, B, C.
THICKNESS_RANK: Final = {OLD: 0, THICK_FYI: 1, THIN_FYI: 2, YOUNG: 3, NEW: 4, GLACIER: 5}

# SIGRID-3 form (floe size) codes: physical diameter range in metres (CIS fact sheet,
# format reference §2.4); None = a continuous sheet without floes.
FORM_SIZE_M: Final[dict[int, tuple[float, float] | None]] = {
    22: (0.3, 3.0),  # pancake ice
    1: (0.5, 2.0),  # shuga / small ice cake
    2: (2.0, 20.0),  # ice cake
    3: (20.0, 100.0),  # small floe
    4: (100.0, 500.0),  # medium floe
    5: (500.0, 2000.0),  # big floe
    6: (2000.0, 10000.0),  # vast floe
    7: (10000.0, 20000.0),  # giant floe (> 10 km)
    9: (1.0, 15.0),  # growlers, floebergs, bergy bits
    10: (15.0, 200.0),  # icebergs
    8: None,  # fast ice
    21: None,  # level ice
    NOT_FILLED: None,  # form not given (new ice sheets, nilas)
}

Season = Literal["winter", "melt", "freeze"]
SEASON_OF_MONTH: Final[dict[int, Season]] = {
    **dict.fromkeys((1, 2, 3, 4, 5), "winter"),
    **dict.fromkeys((6, 7, 8, 9), "melt"),
    **dict.fromkeys((10, 11, 12), "freeze"),
}
# P(stage category) of an ice part by season (planning values chosen so the SOD mix over
# the year is near the dataset's: thick FYI 45 %, old 37 %, young 8 %, thin 6 %, new 5 %).
STAGE_PRIOR: Final[dict[Season, dict[int, float]]] = {
    "winter": {NEW: 0.04, YOUNG: 0.07, THIN_FYI: 0.09, THICK_FYI: 0.48, OLD: 0.32},
    "melt": {NEW: 0.01, YOUNG: 0.02, THIN_FYI: 0.08, THICK_FYI: 0.41, OLD: 0.48},
    "freeze": {NEW: 0.17, YOUNG: 0.23, THIN_FYI: 0.20, THICK_FYI: 0.14, OLD: 0.26},
}
# P(form code | stage category) (planning values; vast floes dominate as in the dataset).
FORM_PRIOR: Final[dict[int, dict[int, float]]] = {
    NEW: {NOT_FILLED: 0.5, 1: 0.2, 22: 0.2, 2: 0.1},
    YOUNG: {2: 0.12, 3: 0.30, 4: 0.33, 5: 0.15, 22: 0.10},
    THIN_FYI: {3: 0.15, 4: 0.35, 5: 0.30, 6: 0.15, 21: 0.05},
    THICK_FYI: {3: 0.05, 4: 0.10, 5: 0.25, 6: 0.45, 7: 0.12, 21: 0.03},
    OLD: {4: 0.05, 5: 0.20, 6: 0.50, 7: 0.25},
}
# Cumulative share of ice pixels with SIC class <= k among SIC 1..10 (format reference §5.2).
SIC_ICE_CDF: Final = (
    np.cumsum([0.42, 2.16, 1.68, 1.18, 1.89, 1.19, 2.22, 3.32, 6.55, 22.38]) / 42.99
)


@dataclass(frozen=True)
class IcePart:
    """One ice type of a polygon (SIGRID-3 A, B or C part).

    Attributes:
        tenths: Partial concentration in tenths.
        stage: SIGRID-3 stage of development code (81..98).
        form: SIGRID-3 form code (floe size), or -9 when not filled.
    """

    tenths: int
    stage: int
    form: int

    @property
    def category(self) -> int:
        """Physical stage category (1..5 as the SOD classes, 6 = glacier ice)."""
        return CODE_CATEGORY[self.stage]


@dataclass
class ChartPolygon:
    """One ice-chart polygon: its codes and what the renderer should draw in it.

    Attributes:
        poly_id: Id written in ``polygon_icechart``.
        ct: SIGRID-3 total concentration code (00, 01, 02, 10..90, 91, 92).
        poly_type: ``"I"`` (ice) or ``"W"`` (water).
        parts: Ice parts, thickest first, as coded (one part = single ice type).
        regime: What the generator meant (``water``, ``bergy water``, ``marginal``,
            ``pack``, ``fast``, ``bergs``).
        render: Parts actually rendered, with their area fraction of the polygon
            (coded parts plus, for bergy water, a trace of bergs).
    """

    poly_id: int
    ct: int
    poly_type: Literal["I", "W"]
    parts: tuple[IcePart, ...]
    regime: str
    render: list[tuple[IcePart, float]] = field(default_factory=list)

    def codes_row(self) -> str:
        """The ``polygon_codes`` row: ``poly_id;CT;CA;SA;FA;...;CF;POLY_TYPE``."""

        def c(v: int) -> str:
            return "-9" if v == NOT_FILLED else f"{v:02d}"

        cols = [NOT_FILLED] * 9
        if len(self.parts) == 1:
            p = self.parts[0]
            cols[1], cols[2] = p.stage, p.form  # single type: CA not filled
        else:
            for k, p in enumerate(self.parts):
                cols[3 * k : 3 * k + 3] = [p.tenths * 10, p.stage, p.form]
        forms = [p.form for p in self.parts[:2]] + [NOT_FILLED] * (2 - len(self.parts[:2]))
        cf = "".join(c(f) for f in forms)
        return ";".join(
            [str(self.poly_id), c(self.ct), *(c(v) for v in cols), "-9", "-9", cf, self.poly_type]
        )

    @property
    def total(self) -> float:
        """Ice area fraction the renderer draws (9+/10 is drawn as 0.95)."""
        return float(sum(frac for _, frac in self.render))


def codes_table(polygons: list[ChartPolygon]) -> list[str]:
    """Return the raw ``polygon_codes`` table: the header, then one row per polygon."""
    return [CODES_HEADER, *(p.codes_row() for p in polygons)]


# ----------------------------------------------------------------------------- partition


def partition(
    shape: tuple[int, int], n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the scene into ``n`` polygons.

    An additively weighted Voronoi partition (power diagram) of uniform random seeds,
    evaluated on coordinates warped by a smooth random displacement so borders
    wander. Computed on a grid reduced ``r`` times (``r`` about ``min(H, W) / 1000``)
    and repeated to 80 m, so borders step by at most ``r`` pixels.

    Returns:
        ``(labels, seeds)``: int32 ``(H, W)`` polygon index 0..n-1, and the seeds'
        ``(row, col)`` positions in 80 m pixels, shape ``(n, 2)``.
    """
    h, w = shape
    r = max(1, min(h, w) // 1000)
    ch, cw = -(-h // r), -(-w // r)
    seeds = np.column_stack([rng.uniform(0, h, n), rng.uniform(0, w, n)])
    spacing = np.sqrt(h * w / n)
    weights = rng.uniform(0.0, 0.35, n) * spacing**2
    warp_amp = np.float32(0.18 * spacing / r)
    wy = gaussian_field((ch, cw), max(1.0, 0.6 * spacing / r), rng) * warp_amp
    wx = gaussian_field((ch, cw), max(1.0, 0.6 * spacing / r), rng) * warp_amp
    yy = (np.arange(ch, dtype=np.float32)[:, None] + wy) * np.float32(r) + np.float32(r / 2)
    xx = (np.arange(cw, dtype=np.float32)[None, :] + wx) * np.float32(r) + np.float32(r / 2)
    best = np.full((ch, cw), np.inf, dtype=np.float32)
    labels = np.zeros((ch, cw), dtype=np.int32)
    for k in range(n):
        d = (yy - np.float32(seeds[k, 0])) ** 2 + (xx - np.float32(seeds[k, 1])) ** 2
        d -= np.float32(weights[k])
        closer = d < best
        best[closer] = d[closer]
        labels[closer] = k
    if r > 1:
        labels = labels[np.arange(h) // r][:, np.arange(w) // r]
    return np.ascontiguousarray(labels), seeds


def chart_region(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Area the ice service charted: everything, or (half the scenes) a half-plane.

    The cut removes 10-50 % of the scene along a random straight line (the chart's
    region boundary); outside it ``polygon_icechart`` is NaN.
    """
    h, w = shape
    region = np.ones(shape, dtype=bool)
    if rng.random() >= 0.5:
        return region
    angle = rng.uniform(0, 2 * np.pi)
    yy = np.arange(h, dtype=np.float32)[:, None] / max(h, w)
    xx = np.arange(w, dtype=np.float32)[None, :] / max(h, w)
    proj = np.cos(angle) * xx + np.sin(angle) * yy
    cut = float(np.quantile(proj[:: max(1, h // 200), :: max(1, w // 200)], rng.uniform(0.1, 0.5)))
    return proj >= cut


# ----------------------------------------------------------------------------- codes


def draw_water_fraction(month: int, rng: np.random.Generator) -> float:
    """Share of the sea charted as open water: 5 % of scenes all water, 13 % none.

    Otherwise uniform in 0.15-0.9, raised by 0.15 from July to October (melt
    season and minimum extent). Averaged over scenes this is close to the
    dataset's 57 % of SIC pixels at class 0.
    """
    u = rng.random()
    if u < 0.05:
        return 1.0
    if u < 0.18:
        return 0.0
    frac = rng.uniform(0.15, 0.9)
    if month in (7, 8, 9, 10):
        frac = min(1.0, frac + 0.15)
    return float(frac)


def _pick(rng: np.random.Generator, prior: dict[int, float]) -> int:
    keys = list(prior)
    p = np.array([prior[k] for k in keys], dtype=float)
    return int(keys[int(rng.choice(len(keys), p=p / p.sum()))])


def _stage_code(rng: np.random.Generator, category: int) -> int:
    codes = STAGE_CODES[category]
    return _pick(rng, dict(codes))


def _form_prior(category: int, service: str) -> dict[int, float]:
    prior = dict(FORM_PRIOR[category])
    if service == "cis" and 2 in prior:  # CIS charts carry no ice cake (no FLOE 1 pixels)
        prior[3] = prior.get(3, 0.0) + prior.pop(2)
    return prior


def _stage_prior(season: Season, service: str) -> dict[int, float]:
    prior = dict(STAGE_PRIOR[season])
    prior[OLD] *= 1.3 if service == "dmi" else 0.7
    return prior


def _split_tenths(rng: np.random.Generator, total: int, n: int) -> list[int]:
    """Split ``total`` tenths into ``n`` positive integer parts (random, sorted down)."""
    if n <= 1 or total < n:
        return [total]
    cuts = np.sort(rng.choice(np.arange(1, total), size=n - 1, replace=False))
    parts = np.diff(np.concatenate([[0], cuts, [total]])).tolist()
    return sorted((int(p) for p in parts), reverse=True)


def _ice_composition(
    rng: np.random.Generator, tenths: int, season: Season, service: str
) -> tuple[IcePart, ...]:
    if tenths <= 2:
        n = 1
    elif tenths <= 5:
        n = 1 if rng.random() < 0.6 else 2
    else:
        n = int(rng.choice([1, 2, 3], p=[0.35, 0.35, 0.30]))
    shares = _split_tenths(rng, tenths, n)
    prior = _stage_prior(season, service)
    cats: list[int] = []
    for _ in shares:
        left = {k: v for k, v in prior.items() if k not in cats}
        if len(cats) == 2 and rng.random() < 0.2:
            cats.append(cats[-1])  # same class, another code (exercises the merge rule)
        else:
            cats.append(_pick(rng, left))
    # SIGRID-3 lists the thickest part first; concentrations are shuffled onto stages.
    cats.sort(key=lambda c: THICKNESS_RANK[c])
    rng.shuffle(shares)
    parts = []
    for share, cat in zip(shares, cats, strict=True):
        parts.append(IcePart(share, _stage_code(rng, cat), _pick(rng, _form_prior(cat, service))))
    return tuple(parts)


def _render_fractions(parts: tuple[IcePart, ...], ct: int) -> list[tuple[IcePart, float]]:
    total = {91: 0.95, 92: 1.0}.get(ct, ct / 100.0)
    n = sum(p.tenths for p in parts)
    return [(p, total * p.tenths / n) for p in parts]


@dataclass
class PolygonStats:
    """Per-polygon geometry used to assign regimes.

    Attributes:
        area: Sea pixels (land excluded) of each polygon.
        centre: ``(row, col)`` centroid of each polygon, shape ``(n, 2)``.
        coast_km: Mean distance to land of each polygon (km).
    """

    area: np.ndarray
    centre: np.ndarray
    coast_km: np.ndarray


def polygon_stats(
    labels: np.ndarray, land: np.ndarray, distance_km: np.ndarray, n: int
) -> PolygonStats:
    """Area, centroid and mean distance to land of every polygon (sea pixels only).

    Computed on every ``s``-th row and column (``s = min(H, W) // 1000``, at least 1)
    and scaled, which is exact enough to assign regimes and cheap on full scenes.
    """
    s = max(1, min(labels.shape) // 1000)
    sub_labels = labels[::s, ::s]
    sea = ~land[::s, ::s]
    lab = sub_labels[sea]
    area = np.bincount(lab, minlength=n).astype(np.float64)
    rows, cols = np.nonzero(sea)
    cy = np.bincount(lab, weights=rows * s, minlength=n)
    cx = np.bincount(lab, weights=cols * s, minlength=n)
    dist = np.bincount(lab, weights=distance_km[::s, ::s][sea], minlength=n)
    safe = np.maximum(area, 1.0)
    return PolygonStats(area * s * s, np.column_stack([cy / safe, cx / safe]), dist / safe)


@dataclass(frozen=True)
class _ChartLayout:
    """Which polygons are water, fast ice or drifting ice, and where the ice ones rank.

    Attributes:
        near_coast: Polygons within 15 km of the coast (mean distance).
        fast: Polygons that become fast ice.
        water: Open-water polygons.
        ice: Drifting-ice polygons, shallowest behind the ice edge first.
        ice_quantile: Per entry of ``ice``, its area-weighted depth quantile (0..1).
    """

    near_coast: np.ndarray
    fast: np.ndarray
    water: set[int]
    ice: list[int]
    ice_quantile: np.ndarray


def _chart_layout(
    stats: PolygonStats,
    shape: tuple[int, int],
    month: int,
    water_fraction: float,
    rng: np.random.Generator,
) -> _ChartLayout:
    """Order polygons by depth behind a random ice edge; pick fast ice, water and ice."""
    n = stats.area.size
    h, w = shape
    angle = rng.uniform(0, 2 * np.pi)
    norm = max(h, w)
    depth = (
        np.cos(angle) * stats.centre[:, 1] / norm
        + np.sin(angle) * stats.centre[:, 0] / norm
        + rng.normal(0, 0.12, n)
    )
    near_coast = stats.coast_km < 15.0
    fast = (
        near_coast
        & (rng.random(n) < 0.6)
        & (month in (11, 12, 1, 2, 3, 4, 5, 6))
        & (stats.area > 0)
    )
    if water_fraction >= 1.0:
        fast[:] = False
    order = [int(i) for i in np.argsort(depth) if not fast[i]]
    sea_total = float(stats.area.sum())
    water: set[int] = set()
    cum = 0.0
    for i in order:
        if sea_total <= 0 or water_fraction <= 0:
            break
        if water_fraction >= 1.0 or cum + stats.area[i] / 2 <= water_fraction * sea_total:
            water.add(i)
            cum += stats.area[i]
    ice = [i for i in order if i not in water]
    ice_area = np.array([stats.area[i] for i in ice])
    q = (np.cumsum(ice_area) - ice_area / 2) / max(ice_area.sum(), 1.0)
    return _ChartLayout(near_coast, fast, water, ice, q)


def _water_polygon(
    pid: int, service: str, near_coast: bool, rng: np.random.Generator
) -> ChartPolygon:
    """Open water (CT 00 or 01), or near a DMI coast sometimes bergy water."""
    if service == "dmi" and near_coast and rng.random() < 0.3:
        berg = IcePart(1, 98, 10)
        poly = ChartPolygon(pid, 2, "W", (berg,), "bergy water")
        poly.render = [(berg, 0.004)]
        return poly
    return ChartPolygon(pid, int(rng.choice([0, 1], p=[0.4, 0.6])), "W", (), "water")


def _fast_polygon(pid: int, service: str, rng: np.random.Generator) -> ChartPolygon:
    """Fast ice (CT 92, form 8) of first-year or old ice."""
    cat = _pick(rng, {THICK_FYI: 0.55, THIN_FYI: 0.15, OLD: 0.3 if service == "dmi" else 0.1})
    part = IcePart(10, _stage_code(rng, cat), 8)
    poly = ChartPolygon(pid, 92, "I", (part,), "fast")
    poly.render = _render_fractions(poly.parts, 92)
    return poly


def _with_berg_part(parts: tuple[IcePart, ...]) -> tuple[IcePart, ...]:
    """Take one tenth from the largest part (if it has two) for a part of icebergs."""
    big = max(range(len(parts)), key=lambda j: parts[j].tenths)
    if parts[big].tenths <= 1:
        return parts
    shrunk = IcePart(parts[big].tenths - 1, parts[big].stage, parts[big].form)
    return (*parts[:big], shrunk, *parts[big + 1 :], IcePart(1, 98, 10))


def _ice_polygon(
    pid: int,
    quantile: float,
    near_coast: bool,
    season: Season,
    service: str,
    rng: np.random.Generator,
) -> ChartPolygon:
    """Drifting ice whose total concentration follows the SIC histogram at ``quantile``."""
    qq = float(np.clip(quantile + rng.normal(0, 0.12), 0.0, 0.999))
    tenths = int(np.searchsorted(SIC_ICE_CDF, qq, side="right")) + 1
    tenths = min(tenths, 10)
    if service == "dmi" and tenths <= 3 and near_coast and rng.random() < 0.35:
        part = IcePart(tenths, 98, int(rng.choice([10, 9], p=[0.7, 0.3])))
        poly = ChartPolygon(pid, tenths * 10, "I", (part,), "bergs")
    else:
        ct = (92 if rng.random() < 0.3 else 91) if tenths == 10 else tenths * 10
        parts = _ice_composition(rng, tenths, season, service)
        if service == "dmi" and tenths >= 4 and len(parts) < 3 and rng.random() < 0.05:
            parts = _with_berg_part(parts)
        poly = ChartPolygon(pid, ct, "I", parts, "pack" if tenths >= 7 else "marginal")
    poly.render = _render_fractions(poly.parts, poly.ct)
    return poly


def design_chart(
    stats: PolygonStats,
    shape: tuple[int, int],
    *,
    month: int,
    service: str,
    water_fraction: float,
    rng: np.random.Generator,
) -> list[ChartPolygon]:
    """Give every polygon a regime and SIGRID-3 codes.

    Polygons are ordered by their depth behind a random, straight ice edge (plus
    noise); the first ones up to ``water_fraction`` of the sea area become open
    water, the rest ice whose total concentration rises with depth following the
    dataset's SIC distribution. From November to June, polygons within 15 km of the
    coast become fast ice with probability 0.6; in DMI charts, low-concentration
    polygons near the coast may be iceberg polygons.

    Returns:
        One :class:`ChartPolygon` per polygon index, ids ``1..n``.
    """
    layout = _chart_layout(stats, shape, month, water_fraction, rng)
    polygons: dict[int, ChartPolygon] = {}
    for i in range(stats.area.size):  # water and fast ice first, by index
        if i in layout.water:
            polygons[i] = _water_polygon(i + 1, service, bool(layout.near_coast[i]), rng)
        elif layout.fast[i]:
            polygons[i] = _fast_polygon(i + 1, service, rng)
    season = SEASON_OF_MONTH[month]
    for k, i in enumerate(layout.ice):  # then drifting ice, by depth
        polygons[i] = _ice_polygon(
            i + 1, float(layout.ice_quantile[k]), bool(layout.near_coast[i]), season, service, rng
        )
    return [polygons[i] for i in range(stats.area.size)]
