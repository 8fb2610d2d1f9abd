"""SIGRID-3 polygon codes -> SIC/SOD/FLOE: the reference table, quirks, clean mode, rasterising."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icecontext.data.io.charts import (
    FAST_ICE_FORMS,
    HEADER,
    SIC_TABLE,
    SOD_TABLE,
    PolygonClasses,
    PolygonCodesError,
    convert_polygon_codes,
    parse_polygon_codes,
    rasterise_charts,
)


def code(value: int) -> str:
    return "-9" if value == -9 else f"{value:02d}"


def row(poly_id, ct, ca=-9, sa=-9, fa=-9, cb=-9, sb=-9, fb=-9, cc=-9, sc=-9, fc=-9, ptype="I"):
    fields = [str(poly_id), *(code(v) for v in (ct, ca, sa, fa, cb, sb, fb, cc, sc, fc, -9, -9))]
    return ";".join([*fields, "-9-9", ptype])


def convert_one(r: str, clean: bool = False) -> tuple[int, int, int]:
    classes = convert_polygon_codes([HEADER, r], clean=clean)
    return int(classes.sic[0]), int(classes.sod[0]), int(classes.floe[0])


# Every row of the format reference's result table (§2.4), with the official result and the
# clean result. (CT;CA;SA;FA;CB;SB;FB;CC;SC;FC ... POLY_TYPE)
REFERENCE_ROWS = [
    # codes, official (SIC, SOD, FLOE), clean
    (row(1, 91, -9, 93, 8), (10, 4, 255), (10, 4, 255)),
    (row(2, 90, -9, 93, 7), (9, 4, 5), (9, 4, 5)),
    (row(3, 92, 30, 95, 5, 70, 93, 8), (10, 4, 255), (10, 4, 255)),
    (row(4, 80, 20, 95, 6, 60, 93, 6), (8, 4, 5), (8, 4, 5)),
    (row(5, 30, 20, 95, 6, 10, 93, 6), (3, 5, 5), (3, 5, 5)),
    (row(6, 10, -9, 95, -9), (1, 5, 255), (1, 5, 255)),
    (row(7, 2, -9, 98, 10, ptype="W"), (0, 0, 0), (0, 0, 0)),
    (row(8, 90, 30, 87, 4, 30, 91, 4, 30, 93, 5), (9, 4, 3), (9, 4, 3)),
    # quirk 1 (merge overwrite): A = 3 + 3, not 9 -> ambiguous; clean sums to 9/10
    (row(9, 91, 30, 93, 4, 30, 93, 4, 30, 93, 4), (10, 255, 255), (10, 4, 3)),
    (row(10, 91, 50, 95, 7, 40, 93, 5, 10, 91, 4), (10, 255, 255), (10, 255, 255)),
    (row(11, 60, 30, 81, 22, 30, 83, 3), (6, 255, 255), (6, 255, 255)),
    # quirk 2 (FLOE override): 6/8 ice cake dominates but FB shuga masks FLOE
    (row(12, 80, 60, 83, 2, 20, 81, 1), (8, 2, 255), (8, 2, 1)),
    (row(13, 99, -9, 99, 99), (255, 255, 255), (255, 255, 255)),
    # quirk 3 (range code leak): CT 13 = 1-3/10 leaks as SIC 13; clean -> midpoint 2
    (row(14, 13, -9, 81), (13, 1, 255), (2, 1, 255)),
    (row(15, 20, -9, 81, ptype="W"), (0, 0, 0), (0, 0, 0)),
]


@pytest.mark.parametrize(("codes", "official", "clean"), REFERENCE_ROWS, ids=lambda v: str(v))
def test_reference_table_rows(codes: str, official: tuple, clean: tuple) -> None:
    assert convert_one(codes) == official
    assert convert_one(codes, clean=True) == clean


def test_published_example_table_converts_all_rows_at_once() -> None:
    table = [HEADER] + [r for r, _, _ in REFERENCE_ROWS]
    classes = convert_polygon_codes(table)
    assert classes.poly_ids.tolist() == list(range(1, 16))
    got = list(zip(classes.sic.tolist(), classes.sod.tolist(), classes.floe.tolist(), strict=True))
    assert got == [official for _, official, _ in REFERENCE_ROWS]
    assert classes.sic.dtype == np.uint8 and not classes.clean


def test_real_row_with_cf_column_and_type_letter() -> None:
    # the row printed in the format reference §2.3, as stored in a raw file
    assert convert_one("29;92;30;95;05;70;93;08;-9;-9;-9;-9;-9;08-9;I") == (10, 4, 255)


def test_quirk4_stage_without_development_in_ice_polygon() -> None:
    r = row(1, 30, -9, 80, 3)  # 3/10 ice whose stage is "no stage of development"
    assert convert_one(r) == (3, 0, 2)  # official: SOD water next to SIC 3
    assert convert_one(r, clean=True) == (3, 255, 2)


def test_unfilled_total_is_masked_in_both_modes() -> None:
    r = row(1, -9, -9, 93, 3)
    assert convert_one(r)[0] == 255
    assert convert_one(r, clean=True) == (255, 255, 255)


@pytest.mark.parametrize(
    ("ct", "official", "clean"),
    [(12, 12, 2), (46, 46, 5), (79, 79, 8), (89, 89, 9), (81, 81, 9), (3, 3, 255), (55, 0, 0)],
)
def test_total_concentration_codes(ct: int, official: int, clean: int) -> None:
    r = row(1, ct, -9, 93, 4)
    assert convert_one(r)[0] == official
    assert convert_one(r, clean=True)[0] == clean


# ----------------------------------------------------------------------------- parsing


def test_parse_columns_and_poly_type() -> None:
    table = parse_polygon_codes([HEADER, b"7;91;-9;93;08;-9;-9;-9;-9;-9;-9;95;-9;08-9; W "])
    assert len(table) == 1
    assert table.column("poly_id").tolist() == [7]
    assert table.column("CT").tolist() == [91]
    assert table.column("CN").tolist() == [95]
    assert table.poly_type.tolist() == ["W"]


def test_header_only_table_has_no_polygons() -> None:
    classes = convert_polygon_codes(np.array([HEADER], dtype=object))
    assert len(classes) == 0
    out = rasterise_charts(np.full((3, 4), 5.0, dtype=np.float32), classes)
    assert all((v == 255).all() for v in out.values())


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ([], "empty"),
        (["1;91;-9;93;08;-9;-9;-9;-9;-9;-9;-9;-9;08-9;I"], "row 0: expected the header"),
        ([HEADER, "1;91;-9;93;08;I"], "row 1: '1;91;-9;93;08;I' has 6 fields"),
        ([HEADER, row(1, 91), "2;9x;-9;93;08;-9;-9;-9;-9;-9;-9;-9;-9;-9-9;I"], "row 2: column CT"),
        ([HEADER, "1;91;-9;93;108;-9;-9;-9;-9;-9;-9;-9;-9;-9-9;I"], "column FA"),
        ([HEADER, "-1;91;-9;93;08;-9;-9;-9;-9;-9;-9;-9;-9;-9-9;I"], "poly_id -1"),
    ],
)
def test_bad_tables_name_row_and_column(table: list[str], fragment: str) -> None:
    with pytest.raises(PolygonCodesError, match=fragment.replace("(", r"\(")):
        convert_polygon_codes(table)


# ----------------------------------------------------------------------------- rasterising


def _classes() -> PolygonClasses:
    return convert_polygon_codes([HEADER, row(3, 91, -9, 93, 8), row(5, 30, -9, 95, 4)])


def test_rasterise_maps_ids_and_masks_nan_unknown_and_fractional() -> None:
    ids = np.array([[3, 5, np.nan], [4, 5.5, -3], [7, 3, 5]], dtype=np.float32)
    out = rasterise_charts(ids, _classes())
    assert out["SIC"].tolist() == [[10, 3, 255], [255, 255, 255], [255, 10, 3]]
    assert out["SOD"].tolist() == [[4, 5, 255], [255, 255, 255], [255, 4, 5]]
    assert out["FLOE"].tolist() == [[255, 3, 255], [255, 255, 255], [255, 255, 3]]
    assert all(v.dtype == np.uint8 and v.shape == ids.shape for v in out.values())


def test_rasterise_blocks_give_the_same_result() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 8, size=(37, 23)).astype(np.float32)
    ids[rng.random(ids.shape) < 0.2] = np.nan
    whole = rasterise_charts(ids, _classes(), block_rows=10_000)
    for rows in (1, 5, 36):
        part = rasterise_charts(ids, _classes(), block_rows=rows)
        for c in whole:
            np.testing.assert_array_equal(part[c], whole[c])


def test_rasterise_duplicate_ids_last_row_wins_and_other_shapes() -> None:
    classes = convert_polygon_codes([HEADER, row(1, 10, -9, 81, 3), row(1, 90, -9, 95, 6)])
    assert classes.lookup(1) == (9, 5, 5)
    assert classes.lookup(2) == (255, 255, 255)
    out = rasterise_charts(np.array([1.0, 2.0, np.nan]), classes)
    assert out["SIC"].tolist() == [9, 255, 255]
    cube = rasterise_charts(np.ones((2, 2, 2)), classes)
    assert cube["FLOE"].shape == (2, 2, 2) and (cube["FLOE"] == 5).all()


# ----------------------------------------------------------------------------- properties

ICE_STAGES = [c for c in SOD_TABLE if c not in (0, 80)]  # stages a part of an ice polygon has
ICE_FORMS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 21, 22, 99]
TOTALS = [*list(SIC_TABLE), 99]
RANGE_CODES = [12, 13, 23, 24, 34, 35, 45, 46, 56, 57, 67, 68, 78, 79, 89, 81]


def _tenths(ct: int) -> int:
    if ct in SIC_TABLE:
        return SIC_TABLE[ct]
    if ct in RANGE_CODES:
        return 10 if ct == 81 else ct % 10
    return 10  # 99 unknown


@st.composite
def consistent_rows(draw: st.DrawFn, ranges: bool = False) -> str:
    """A chart row as ice services write them: partial concentrations sum to <= CT."""
    ct = draw(st.sampled_from(TOTALS + (RANGE_CODES if ranges else [])))
    tenths = _tenths(ct)
    n_parts = draw(st.integers(1, 3)) if tenths >= 3 else 1
    if n_parts == 1:
        conc = [-9]
    else:
        cuts = sorted(
            draw(
                st.lists(
                    st.integers(1, tenths - 1),
                    min_size=n_parts - 1,
                    max_size=n_parts - 1,
                    unique=True,
                )
            )
        )
        bounds = [0, *cuts, draw(st.integers(cuts[-1] + 1, tenths))]
        conc = [10 * (b - a) for a, b in itertools.pairwise(bounds)]
    stages = [draw(st.sampled_from([*ICE_STAGES, -9])) for _ in conc]
    forms = [draw(st.sampled_from([*ICE_FORMS, -9])) for _ in conc]
    parts = [-9] * 9
    for i, (c, s, f) in enumerate(zip(conc, stages, forms, strict=True)):
        parts[3 * i : 3 * i + 3] = [c, s, f]
    ptype = draw(st.sampled_from(["I", "I", "I", "W", "w"]))
    return row(draw(st.integers(0, 5000)), ct, *parts, ptype=ptype)


@st.composite
def any_rows(draw: st.DrawFn) -> str:
    """Any syntactically valid row: every code drawn from -9 and 0..99."""
    values = [draw(st.sampled_from([-9, *range(100)])) for _ in range(10)]
    return row(draw(st.integers(0, 5000)), *values, ptype=draw(st.sampled_from("IWiwX")))


def _convert_many(rows: list[str], clean: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = convert_polygon_codes([HEADER, *rows], clean=clean)
    return c.sic.astype(int), c.sod.astype(int), c.floe.astype(int)


def _fields(r: str) -> list[int]:
    return [int(v) for v in r.split(";")[1:11]]


@settings(max_examples=300, deadline=None)
@given(st.lists(consistent_rows(), min_size=1, max_size=20))
def test_official_invariants(rows: list[str]) -> None:
    sic, sod, floe = _convert_many(rows, clean=False)
    assert set(sic) <= {*range(11), 255}
    assert set(sod) <= {*range(6), 255}
    assert set(floe) <= {*range(7), 255}
    np.testing.assert_array_equal(sic == 0, sod == 0)
    np.testing.assert_array_equal(sic == 0, floe == 0)
    for r, s, f in zip(rows, sic, floe, strict=True):
        forms = _fields(r)[3::3]
        if s != 0 and FAST_ICE_FORMS & set(forms):
            assert f == 255, r


@settings(max_examples=200, deadline=None)
@given(st.lists(consistent_rows(ranges=True), min_size=1, max_size=20))
def test_official_only_leak_is_ct_range_codes(rows: list[str]) -> None:
    sic, sod, floe = _convert_many(rows, clean=False)
    assert set(sod) <= {*range(6), 255}
    assert set(floe) <= {*range(7), 255}
    for r, s in zip(rows, sic, strict=True):
        ct, is_water = _fields(r)[0], r.lower().endswith(";w")
        if ct in RANGE_CODES and not is_water:
            assert s == ct  # the raw code leaks unchanged
        else:
            assert s in {*range(11), 255}


@settings(max_examples=300, deadline=None)
@given(st.lists(any_rows(), min_size=1, max_size=20))
def test_clean_invariants_hold_for_any_codes(rows: list[str]) -> None:
    sic, sod, floe = _convert_many(rows, clean=True)
    assert set(sic) <= {*range(11), 255}
    assert set(sod) <= {*range(6), 255}
    assert set(floe) <= {*range(7), 255}
    np.testing.assert_array_equal(sic == 0, sod == 0)
    np.testing.assert_array_equal(sic == 0, floe == 0)
    assert (sod[sic == 255] == 255).all() and (floe[sic == 255] == 255).all()


SOD_CLASS = {c: k for c, k in SOD_TABLE.items() if 1 <= k <= 5}
FLOE_CLASS = {2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 5, 9: 6, 10: 6}


def _clean_reference(r: str) -> tuple[int, int, int]:
    """Straightforward per-polygon statement of the clean rules (an independent oracle)."""
    ct, ca, sa, fa, cb, sb, fb, cc, sc, fc = _fields(r)
    if ct in SIC_TABLE:
        total: int | None = SIC_TABLE[ct]
    elif ct in RANGE_CODES:  # midpoint of the range, rounded half up
        low, high = ct // 10, 10 if ct == 81 else ct % 10
        total = int(np.floor((low + high) / 2 + 0.5))
    else:
        total = None
    if r.lower().endswith(";w"):
        return 0, 0, 0
    if total is None:
        return 255, 255, 255
    if total == 0:
        return 0, 0, 0
    tenths = [SIC_TABLE.get(c, 0) for c in (ca, cb, cc)]  # -9 (not filled) weighs 0
    if ca == -9:
        tenths[0] = total  # a single ice type: CA = CT

    def dominant(codes: list[int], table: dict[int, int]) -> int:
        sums: dict[int, int] = {}
        for c, t in zip(codes, tenths, strict=True):
            if c in table and t > 0:
                sums[table[c]] = sums.get(table[c], 0) + t
        if not sums:
            return 255
        best = max(sums.values())
        winners = [k for k, v in sums.items() if v == best]
        return winners[0] if best * 100 >= 65 * total else 255

    return total, dominant([sa, sb, sc], SOD_CLASS), dominant([fa, fb, fc], FLOE_CLASS)


@settings(max_examples=300, deadline=None)
@given(st.lists(consistent_rows(ranges=True), min_size=1, max_size=20))
def test_clean_matches_independent_reference(rows: list[str]) -> None:
    sic, sod, floe = _convert_many(rows, clean=True)
    for r, *got in zip(rows, sic, sod, floe, strict=True):
        assert tuple(got) == _clean_reference(r), r


@settings(max_examples=300, deadline=None)
@given(st.lists(consistent_rows(), min_size=1, max_size=20))
def test_clean_keeps_every_official_label(rows: list[str]) -> None:
    o_sic, o_sod, o_floe = _convert_many(rows, clean=False)
    c_sic, c_sod, c_floe = _convert_many(rows, clean=True)
    np.testing.assert_array_equal(o_sic, c_sic)
    known = o_sic != 255
    # Clean only ever adds labels where the quirks masked them; it never changes one.
    for official, cleaned in ((o_sod, c_sod), (o_floe, c_floe)):
        kept = known & (official != 255)
        np.testing.assert_array_equal(cleaned[kept], official[kept])


def test_clean_differs_from_official_exactly_on_the_quirks() -> None:
    rows = [r for r, _, _ in REFERENCE_ROWS]
    o = np.stack(_convert_many(rows, clean=False), axis=1)
    c = np.stack(_convert_many(rows, clean=True), axis=1)
    differing = [i + 1 for i in np.flatnonzero((o != c).any(axis=1))]
    assert differing == [9, 12, 14]  # overwrite, FLOE override, range-code leak
