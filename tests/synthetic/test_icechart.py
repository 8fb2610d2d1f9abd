"""The chart designer's draws are pinned: documented scores depend on them."""

from __future__ import annotations

import numpy as np
import pytest

from icecontext.synthetic.icechart import PolygonStats, codes_table, design_chart

_AREA = np.array([900.0, 500, 1200, 0, 700, 300, 1100, 800, 400, 600])
_CENTRE = np.column_stack([np.linspace(20, 480, 10), np.linspace(460, 30, 10)])
_COAST_KM = np.array([5.0, 30, 12, 40, 8, 50, 3, 22, 14, 60])

# Recorded from the designer before it was split into named steps (issue 14).
_EXPECTED = {
    (3, "dmi", 2, 0.3): [
        "1;92;-9;95;08;-9;-9;-9;-9;-9;-9;-9;-9;08-9;I",
        "2;00;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9-9;W",
        "3;92;-9;96;08;-9;-9;-9;-9;-9;-9;-9;-9;08-9;I",
        "4;01;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9-9;W",
        "5;91;20;93;07;80;83;04;-9;-9;-9;-9;-9;0704;I",
        "6;01;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9-9;W",
        "7;80;20;96;06;40;86;06;20;85;05;-9;-9;0606;I",
        "8;00;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9-9;W",
        "9;92;-9;95;08;-9;-9;-9;-9;-9;-9;-9;-9;08-9;I",
        "10;00;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9-9;W",
    ],
    (5, "cis", 11, 0.5): [
        "1;92;-9;86;08;-9;-9;-9;-9;-9;-9;-9;-9;08-9;I",
        "2;90;-9;85;03;-9;-9;-9;-9;-9;-9;-9;-9;03-9;I",
        "3;00;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9-9;W",
        "4;01;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9-9;W",
        "5;01;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9-9;W",
        "6;00;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9-9;W",
        "7;92;-9;97;08;-9;-9;-9;-9;-9;-9;-9;-9;08-9;I",
        "8;00;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9-9;W",
        "9;92;-9;87;08;-9;-9;-9;-9;-9;-9;-9;-9;08-9;I",
        "10;01;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9-9;W",
    ],
}


@pytest.mark.parametrize(("seed", "service", "month", "water"), list(_EXPECTED))
def test_design_chart_draws_are_unchanged(seed: int, service: str, month: int, water: float):
    polygons = design_chart(
        PolygonStats(_AREA, _CENTRE, _COAST_KM),
        (500, 500),
        month=month,
        service=service,
        water_fraction=water,
        rng=np.random.default_rng(seed),
    )
    assert [p.poly_id for p in polygons] == list(range(1, 11))
    assert codes_table(polygons)[1:] == _EXPECTED[(seed, service, month, water)]


def test_all_water_chart_has_no_fast_ice():
    polygons = design_chart(
        PolygonStats(_AREA, _CENTRE, _COAST_KM),
        (500, 500),
        month=2,
        service="cis",
        water_fraction=1.0,
        rng=np.random.default_rng(0),
    )
    assert {p.regime for p in polygons} == {"water"}
    assert all(p.poly_type == "W" and p.total == 0.0 for p in polygons)
