"""SIGRID-3 ice-chart polygon codes -> SIC / SOD / FLOE classes.

Raw AI4Arctic files store the ice chart as a polygon id per pixel
(``polygon_icechart``) plus a string table (``polygon_codes``) with the SIGRID-3
egg-code of every polygon. :func:`convert_polygon_codes` turns that table into one
SIC, SOD and FLOE class per polygon and :func:`rasterise_charts` paints the classes
onto the pixel grid.

Two modes:

* **official** (default, ``clean=False``) reproduces the organisers' conversion (starter
  kit ``convert_raw_icechart.py``, format reference §2.4) including its quirks, so the
  published ready-to-train labels are reproduced:

  1. *merge overwrite*: when the three parts A, B, C share a class, A's merged
     concentration is CA + CC instead of CA + CB + CC (the second match overwrites
     the first instead of adding to it);
  2. *FLOE override*: if **any** part's form is shuga/small cake (01), fast ice (08),
     level ice (21) or pancake (22), the polygon's FLOE is masked even when another
     part dominates;
  3. *range-code leak*: total-concentration range codes (``13`` = 1-3/10, ...) are not
     in the lookup table and leak into SIC as out-of-range values (13, ...); more
     generally every code missing from a lookup table is left unchanged;
  4. *ice with a water class*: a part whose stage is 00/80 ("no stage of development")
     or whose form is 00 in an ice polygon yields SOD/FLOE 0 (water) next to SIC > 0.

* **clean** (``clean=True``) fixes each of them (docs/charts.md):

  1. parts of the same class are summed (A = CA + CB + CC);
  2. forms without a floe-size class (01, 08, 21, 22) count towards the total but
     cannot win: FLOE is the floe-size class that holds >= 65 % of the total, else 255;
  3. range codes map to their midpoint rounded half up (``13`` -> 2, ``46`` -> 5,
     ``81`` = 8-10/10 -> 9) and any other unknown code becomes "unknown" (255), so
     only the values 0..10 / 0..5 / 0..6 / 255 can come out;
  4. stage 00/80 and form 00 in an ice polygon are treated like unknown parts, so
     water is exactly the same pixel set in all three charts;

  and, so that an unknown concentration never carries a label, a polygon whose total
  concentration is unknown (99, not filled, unrecognised) gets SOD = FLOE = 255.

In both modes a polygon id missing from the table, an unfilled total concentration
(``-9``) and pixels without a polygon (NaN) come out as 255. (The starter kit would
leave the polygon id itself, or -9, in the chart; neither occurs in the published
files.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from icecontext.data.io.format import CHART_FILL, CHARTS
from icecontext.errors import DataError

HEADER: Final = "poly_id;CT;CA;SA;FA;CB;SB;FB;CC;SC;FC;CN;CD;CF;POLY_TYPE"
"""The header row (element 0) of a raw file's ``polygon_codes`` table."""

COLUMNS: Final = tuple(HEADER.split(";"))
INT_COLUMNS: Final = COLUMNS[:13]
"""Columns parsed as integers (``poly_id`` .. ``CD``); ``CF`` is ignored."""

NOT_FILLED: Final = -9
"""SIGRID-3 "not filled" code as the raw tables write it."""

UNKNOWN_CODE: Final = 99
"""SIGRID-3 "undetermined / unknown"; any 99 left in a chart becomes 255."""

DOMINANCE_THRESHOLD: Final = 0.65
"""Share of the total concentration a class needs to label SOD / FLOE (starter kit HEAD)."""

# Code -> class lookup tables (format reference §2.4; starter kit utils.py).
SIC_TABLE: Final[Mapping[int, int]] = {
    0: 0,  # ice free
    1: 0,  # < 1/10 (open water)
    2: 0,  # bergy water
    55: 0,  # treated as ice free by the starter kit
    **{10 * k: k for k in range(1, 10)},  # 10 .. 90 -> 1 .. 9
    91: 10,  # 9+/10
    92: 10,  # 10/10 (fast ice)
}
SOD_TABLE: Final[Mapping[int, int]] = {
    0: 0,  # ice free
    80: 0,  # no stage of development
    81: 1,  # new ice
    82: 1,  # nilas, ice rind
    83: 2,  # young ice
    84: 2,  # grey ice
    85: 2,  # grey-white ice
    86: 4,  # first-year ice (unspecified)
    87: 3,  # thin first-year ice
    88: 3,  # thin first-year ice, stage 1
    89: 3,  # thin first-year ice, stage 2
    91: 4,  # medium first-year ice
    93: 4,  # thick first-year ice
    95: 5,  # old ice
    96: 5,  # second-year ice
    97: 5,  # multi-year ice
    98: CHART_FILL,  # glacier ice
    99: CHART_FILL,  # unknown
}
FLOE_TABLE: Final[Mapping[int, int]] = {
    0: 0,
    1: CHART_FILL,  # shuga / small ice cake
    2: 1,  # ice cake
    3: 2,  # small floe
    4: 3,  # medium floe
    5: 4,  # big floe
    6: 5,  # vast floe
    7: 5,  # giant floe
    8: CHART_FILL,  # fast ice
    9: 6,  # growlers, floebergs, floebits
    10: 6,  # icebergs
    21: CHART_FILL,  # level ice
    22: CHART_FILL,  # pancake ice
}
FAST_ICE_FORMS: Final = frozenset({1, 8, 21, 22})
"""Form codes without a floe-size class (the starter kit's "fast-ice class")."""

_MAX_POLY_ID: Final = 2**24  # float32 (polygon_icechart) holds integers exactly up to here
_SOD_CLASSES: Final = range(1, 6)
_FLOE_CLASSES: Final = range(1, 7)


class PolygonCodesError(DataError):
    """A ``polygon_codes`` table is malformed.

    Attributes:
        row: Index of the offending element in the table (0 = header), or ``None``.
    """

    def __init__(self, row: int | None, problem: str):
        self.row = row
        self.problem = problem
        super().__init__(problem if row is None else f"row {row}: {problem}")


@dataclass(frozen=True)
class PolygonTable:
    """The parsed ``polygon_codes`` table, one entry per polygon.

    Attributes:
        codes: int64 ``(n, 13)``: the columns ``poly_id, CT, CA, SA, FA, CB, SB, FB, CC,
            SC, FC, CN, CD`` as integers (``-9`` = not filled).
        poly_type: ``(n,)`` POLY_TYPE strings (``"I"`` ice, ``"W"`` water).
    """

    codes: np.ndarray
    poly_type: np.ndarray

    def column(self, name: str) -> np.ndarray:
        """Return one integer column by its header name (``"CT"``, ``"SA"``, ...)."""
        return self.codes[:, INT_COLUMNS.index(name)]

    def __len__(self) -> int:
        return int(self.codes.shape[0])


@dataclass(frozen=True)
class PolygonClasses:
    """SIC / SOD / FLOE class of every polygon of a chart.

    Attributes:
        poly_ids: int64 ``(n,)`` polygon ids (the values of ``polygon_icechart``).
        sic: uint8 ``(n,)`` SIC class, 255 = masked.
        sod: uint8 ``(n,)`` SOD class, 255 = masked.
        floe: uint8 ``(n,)`` FLOE class, 255 = masked.
        clean: Whether the clean conversion produced them.
    """

    poly_ids: np.ndarray
    sic: np.ndarray
    sod: np.ndarray
    floe: np.ndarray
    clean: bool = False

    def chart(self, name: str) -> np.ndarray:
        """Return the per-polygon classes of chart ``"SIC"``, ``"SOD"`` or ``"FLOE"``."""
        return {"SIC": self.sic, "SOD": self.sod, "FLOE": self.floe}[name]

    def __len__(self) -> int:
        return int(self.poly_ids.shape[0])

    def lookup(self, poly_id: int) -> tuple[int, int, int]:
        """Return ``(SIC, SOD, FLOE)`` of one polygon id (255s if it is not in the table)."""
        hit = np.flatnonzero(self.poly_ids == poly_id)
        if hit.size == 0:
            return CHART_FILL, CHART_FILL, CHART_FILL
        i = hit[-1]
        return int(self.sic[i]), int(self.sod[i]), int(self.floe[i])


# ----------------------------------------------------------------------------- parsing


def _as_text(value: object) -> str:
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8", errors="replace")
    return str(value)


def parse_polygon_codes(codes: Sequence[str] | np.ndarray) -> PolygonTable:
    """Parse a raw ``polygon_codes`` string table.

    Element 0 is the header row (its first field must be ``poly_id``); every other
    element is ``;``-separated: 13 integer codes (``-9`` = not filled), the 4-character
    CF column (ignored) and POLY_TYPE.

    Args:
        codes: The table as strings (or bytes), header first.

    Returns:
        The parsed table (possibly with zero polygons).

    Raises:
        PolygonCodesError: If the header is missing or a row has the wrong number of
            fields, a non-integer code, a negative code other than -9, a code above 99,
            or a polygon id out of range. The message names the row and column.
    """
    rows = [_as_text(c).strip() for c in np.asarray(codes, dtype=object).ravel()]
    if not rows:
        raise PolygonCodesError(None, f"the table is empty; expected the header '{HEADER}' first")
    if rows[0].split(";")[0].strip() != "poly_id":
        raise PolygonCodesError(0, f"expected the header '{HEADER}', got '{rows[0]}'")
    ints = np.empty((len(rows) - 1, len(INT_COLUMNS)), dtype=np.int64)
    poly_type = np.empty(len(rows) - 1, dtype=object)
    for k, row in enumerate(rows[1:], start=1):
        fields = row.split(";")
        if len(fields) != len(COLUMNS):
            raise PolygonCodesError(
                k, f"'{row}' has {len(fields)} fields, expected {len(COLUMNS)} ({HEADER})"
            )
        for j, name in enumerate(INT_COLUMNS):
            text = fields[j].strip()
            try:
                value = int(text)
            except ValueError:
                raise PolygonCodesError(
                    k, f"column {name} of '{row}' is '{text}', expected an integer code or -9"
                ) from None
            if j == 0:
                if not 0 <= value <= _MAX_POLY_ID:
                    raise PolygonCodesError(
                        k, f"poly_id {value} of '{row}' is outside 0..{_MAX_POLY_ID}"
                    )
            elif value != NOT_FILLED and not 0 <= value <= 99:
                raise PolygonCodesError(
                    k, f"column {name} of '{row}' is {value}, expected a code 0..99 or -9"
                )
            ints[k - 1, j] = value
        poly_type[k - 1] = fields[-1].strip()
    return PolygonTable(ints, poly_type)


# ----------------------------------------------------------------------------- conversion


def _map(values: np.ndarray, table: Mapping[int, int]) -> np.ndarray:
    """Map codes through ``table``; codes not in it are left unchanged (as the kit does)."""
    out = values.copy()
    for code, cls in table.items():
        out[values == code] = cls
    return out


def _official_dominant(parts: np.ndarray, conc: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Starter-kit dominance test (steps 5-6 of §2.4), quirks included.

    ``parts`` (n, 3) class per part, ``conc`` (n, 3) partial concentration in tenths,
    ``total`` (n,) total concentration. Returns the class or -9 per polygon.
    """
    add = np.zeros_like(conc)
    for first, second in ((0, 1), (0, 2), (1, 2)):
        match = (parts[:, first] == parts[:, second]) & (parts[:, first] != NOT_FILLED)
        add[match, first] = conc[match, second]  # assignment, not +=: the official quirk
    merged = conc + add
    best = np.argmax(merged, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = merged.max(axis=1) / total
        # same float expression as the kit, so boundary cases round identically
        dominant = ratio * 100 >= DOMINANCE_THRESHOLD * 100
    return np.where(dominant, parts[np.arange(len(parts)), best], NOT_FILLED)


def _convert_official(table: PolygonTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ct = _map(table.column("CT"), SIC_TABLE)
    conc = np.stack([_map(table.column(c), SIC_TABLE) for c in ("CA", "CB", "CC")], axis=1)
    single = (ct > 0) & (conc[:, 0] == NOT_FILLED)
    conc[single, 0] = ct[single]
    sod_parts = np.stack([_map(table.column(c), SOD_TABLE) for c in ("SA", "SB", "SC")], axis=1)
    floe_parts = np.stack([_map(table.column(c), FLOE_TABLE) for c in ("FA", "FB", "FC")], axis=1)

    sic = ct.copy()
    water = np.array([str(t).lower() == "w" for t in table.poly_type], dtype=bool)
    sic[water] = 0
    sod = _official_dominant(sod_parts, conc, ct)
    floe = _official_dominant(floe_parts, conc, ct)
    floe[(floe_parts == CHART_FILL).any(axis=1)] = CHART_FILL
    sod[sod == NOT_FILLED] = CHART_FILL
    floe[floe == NOT_FILLED] = CHART_FILL
    sod[sic == 0] = 0
    floe[sic == 0] = 0
    for arr in (sic, sod, floe):
        arr[arr == UNKNOWN_CODE] = CHART_FILL
    # An unfilled CT would stay -9 in the kit's float output (no uint8 value); mask it.
    sic[sic == NOT_FILLED] = CHART_FILL
    return sic, sod, floe


def _clean_concentration(codes: np.ndarray) -> np.ndarray:
    """Map concentration codes to tenths; ranges to their midpoint; unknown -> -9."""
    out = np.full(codes.shape, NOT_FILLED, dtype=np.int64)
    for code, cls in SIC_TABLE.items():
        out[codes == code] = cls
    low, high = codes // 10, codes % 10
    high = np.where(codes == 81, 10, high)  # 81 = 8/10 to 10/10
    is_range = ((low >= 1) & (low < high) & (high <= 9)) | (codes == 81)
    midpoint = (low + high + 1) // 2  # round half up
    return np.where(is_range, midpoint, out)


def _clean_parts(codes: np.ndarray, table: Mapping[int, int], valid: range) -> np.ndarray:
    """Map stage/form codes to classes; anything that is not a class in ``valid`` -> -9."""
    out = np.full(codes.shape, NOT_FILLED, dtype=np.int64)
    for code, cls in table.items():
        if cls in valid:
            out[codes == code] = cls
    return out


def _clean_dominant(parts: np.ndarray, conc: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Class whose summed concentration is >= 65 % of the total, else -9."""
    usable = (parts != NOT_FILLED) & (conc > 0)
    weight = np.where(usable, conc, 0)
    same = parts[:, :, None] == parts[:, None, :]
    class_total = np.where(usable, (same * weight[:, None, :]).sum(axis=2), -1)
    best = np.argmax(class_total, axis=1)  # first part on ties
    rows = np.arange(len(parts))
    best_total = class_total[rows, best]
    # exact integer form of best_total / total >= 0.65
    dominant = (best_total > 0) & (total > 0) & (best_total * 100 >= 65 * total)
    return np.where(dominant, parts[rows, best], NOT_FILLED)


def _convert_clean(table: PolygonTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ct = _clean_concentration(table.column("CT"))
    conc = np.stack([_clean_concentration(table.column(c)) for c in ("CA", "CB", "CC")], axis=1)
    single = (ct > 0) & (conc[:, 0] == NOT_FILLED)
    conc[single, 0] = ct[single]
    sod_parts = np.stack(
        [_clean_parts(table.column(c), SOD_TABLE, _SOD_CLASSES) for c in ("SA", "SB", "SC")],
        axis=1,
    )
    floe_parts = np.stack(
        [_clean_parts(table.column(c), FLOE_TABLE, _FLOE_CLASSES) for c in ("FA", "FB", "FC")],
        axis=1,
    )
    sod = _clean_dominant(sod_parts, conc, ct)
    floe = _clean_dominant(floe_parts, conc, ct)
    sic = np.where(ct == NOT_FILLED, CHART_FILL, ct)
    water = np.array([str(t).lower() == "w" for t in table.poly_type], dtype=bool)
    sic[water] = 0
    sod[sod == NOT_FILLED] = CHART_FILL
    floe[floe == NOT_FILLED] = CHART_FILL
    unknown_total = sic == CHART_FILL
    sod[unknown_total] = CHART_FILL
    floe[unknown_total] = CHART_FILL
    sod[sic == 0] = 0
    floe[sic == 0] = 0
    return sic, sod, floe


def convert_table(table: PolygonTable, clean: bool = False) -> PolygonClasses:
    """Convert a parsed table to per-polygon classes (see the module docstring)."""
    sic, sod, floe = (_convert_clean if clean else _convert_official)(table)
    return PolygonClasses(
        poly_ids=table.column("poly_id").copy(),
        sic=sic.astype(np.uint8),
        sod=sod.astype(np.uint8),
        floe=floe.astype(np.uint8),
        clean=clean,
    )


def convert_polygon_codes(codes: Sequence[str] | np.ndarray, clean: bool = False) -> PolygonClasses:
    """Convert a raw ``polygon_codes`` table to SIC / SOD / FLOE per polygon.

    Official mode (default) follows the organisers' algorithm step by step (format
    reference §2.4): map CT/CA/CB/CC to tenths; a single ice type (CA not filled) gets
    CA = CT; map stages and forms; merge parts of the same class (with the official
    assignment overwrite); a class labels SOD / FLOE when its merged concentration is
    >= 0.65 of CT (first part on ties, -9 otherwise); SIC = CT, or 0 for POLY_TYPE
    ``W``; FLOE masked when any form is 01/08/21/22; -9 -> 255; SOD = FLOE = 0 where
    SIC = 0; 99 -> 255. Codes missing from a table are left unchanged, so CT range
    codes leak into SIC.

    ``clean=True`` fixes the quirks listed in the module docstring and in
    docs/charts.md; its outputs are always 0..10 / 0..5 / 0..6 or 255.

    Args:
        codes: The table, header row first (``;``-separated strings or bytes).
        clean: Use the clean conversion instead of the official one.

    Returns:
        The classes of every polygon, uint8 with 255 = masked.

    Raises:
        PolygonCodesError: If the table is malformed (the message names the row).
    """
    return convert_table(parse_polygon_codes(codes), clean=clean)


# ----------------------------------------------------------------------------- rasterising


def _lookup_tables(classes: PolygonClasses) -> tuple[int, dict[str, np.ndarray]]:
    ids = np.asarray(classes.poly_ids, dtype=np.int64)
    size = int(ids.max()) + 1 if ids.size else 0
    # One extra slot at the end holds 255 for NaN / unknown / non-integer ids.
    luts = {}
    for chart in CHARTS:
        lut = np.full(size + 1, CHART_FILL, dtype=np.uint8)
        lut[ids] = classes.chart(chart)  # duplicate ids: the last row wins, as in the kit
        luts[chart] = lut
    return size, luts


def rasterise_charts(
    polygon_ids: np.ndarray, classes: PolygonClasses, *, block_rows: int = 1024
) -> dict[str, np.ndarray]:
    """Paint per-polygon classes onto a grid of polygon ids.

    A vectorised table lookup (one array index per pixel), done in blocks of rows so
    the temporaries stay small on 10000 x 10400 rasters.

    Args:
        polygon_ids: Float array of polygon ids (``polygon_icechart``), NaN where
            there is no polygon. Any shape.
        classes: Output of :func:`convert_polygon_codes`.
        block_rows: Rows (first axis) processed at a time.

    Returns:
        ``{"SIC", "SOD", "FLOE"}`` uint8 arrays of ``polygon_ids``' shape; 255 where the
        id is NaN, negative, not an integer or not in the table.
    """
    ids = np.asarray(polygon_ids)
    size, luts = _lookup_tables(classes)
    out = {c: np.empty(ids.shape, dtype=np.uint8) for c in CHARTS}
    flat_ids = ids.reshape(ids.shape[0], -1) if ids.ndim > 1 else ids.reshape(1, -1)
    flat_out = {c: out[c].reshape(flat_ids.shape) for c in CHARTS}
    for start in range(0, flat_ids.shape[0], max(1, block_rows)):
        block = flat_ids[start : start + block_rows]
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(block) & (block >= 0) & (block < size) & (block == np.floor(block))
        index = np.where(ok, block, size).astype(np.intp)
        for c in CHARTS:
            np.take(luts[c], index, out=flat_out[c][start : start + block_rows])
    return out
