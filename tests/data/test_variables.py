"""Feature selection, the official constants and (de)normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from icecontext.data.io.format import AMSR2_VARIABLES, ERA5_VARIABLES, INPUT_VARIABLES
from icecontext.data.io.variables import (
    CATALOGUE,
    FEATURE_GROUPS,
    GLOBAL_MEAN_STD,
    denormalise,
    feature_grid,
    latlon_encoding,
    month_encoding,
    normalise,
    resolve_features,
)
from icecontext.errors import ConfigError


def test_every_file_input_has_official_constants() -> None:
    assert set(GLOBAL_MEAN_STD) == set(INPUT_VARIABLES)
    assert len(INPUT_VARIABLES) == 24
    # spot values from the format reference table (HEAD global_meanstd)
    assert GLOBAL_MEAN_STD["btemp_6_9h"] == (148.8470, 61.6485)
    assert GLOBAL_MEAN_STD["nersc_sar_primary"] == (-14.5083, 5.6597)


def test_z_score_matches_the_checked_example() -> None:
    # The reference checked btemp_6_9h min 77.79 K -> (77.79 - 148.85) / 61.65 = -1.15
    assert normalise("btemp_6_9h", np.array([77.79]))[0] == pytest.approx(-1.1527, abs=1e-3)


def test_denormalise_inverts_normalise() -> None:
    x = np.linspace(-30, 0, 7)
    np.testing.assert_allclose(
        denormalise("nersc_sar_primary", normalise("nersc_sar_primary", x)), x, atol=1e-5
    )


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        (["sar"], ["nersc_sar_primary", "nersc_sar_secondary"]),
        (["hh", "incidence"], ["nersc_sar_primary", "sar_incidenceangle"]),
        (["amsr2:18.7"], ["btemp_18_7h", "btemp_18_7v"]),
        (["amsr2:89"], ["btemp_89_0h", "btemp_89_0v"]),
        (["amsr2:89.0", "btemp_89_0h"], ["btemp_89_0h", "btemp_89_0v"]),
        (
            "sar,amsr2:36.5",
            ["nersc_sar_primary", "nersc_sar_secondary", "btemp_36_5h", "btemp_36_5v"],
        ),
        (
            ["month", "latlon"],
            ["month_sin", "month_cos", "geo_sin_lat", "geo_cos_lat", "geo_sin_lon", "geo_cos_lon"],
        ),
    ],
)
def test_resolve_features(selectors: list[str] | str, expected: list[str]) -> None:
    assert resolve_features(selectors) == expected


def test_groups_have_the_documented_sizes() -> None:
    assert FEATURE_GROUPS["amsr2"] == AMSR2_VARIABLES and len(AMSR2_VARIABLES) == 14
    assert FEATURE_GROUPS["era5"] == ERA5_VARIABLES and len(ERA5_VARIABLES) == 6
    assert len(resolve_features(["challenge"])) == 24
    for freq in ("6.9", "7.3", "10.7", "18.7", "23.8", "36.5", "89.0"):
        assert len(FEATURE_GROUPS[f"amsr2:{freq}"]) == 2


def test_unknown_feature_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_features(["sar", "amsr2:19"], option="data.features")
    msg = str(info.value)
    assert "data.features" in msg and "'amsr2:19'" in msg
    assert "amsr2:18.7" in msg and "btemp_36_5h" in msg


def test_empty_selection_is_an_error() -> None:
    with pytest.raises(ConfigError, match="empty"):
        resolve_features([])


def test_grids() -> None:
    assert feature_grid("nersc_sar_primary") == "sar"
    assert feature_grid("tclw") == "2km"
    assert feature_grid("month_cos") == "derived"
    assert CATALOGUE["distance_map"].units.startswith("zone")


def test_month_encoding_is_cyclic() -> None:
    jan, dec = np.array(month_encoding(1)), np.array(month_encoding(12))
    jul = np.array(month_encoding(7))
    assert np.linalg.norm(jan - dec) == pytest.approx(
        np.linalg.norm(jan - np.array(month_encoding(2)))
    )
    assert np.linalg.norm(jan - jul) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="1..12"):
        month_encoding(13)


def test_latlon_encoding_has_no_dateline_jump() -> None:
    enc = latlon_encoding(np.array([70.0, 70.0]), np.array([179.9, -179.9]))
    assert abs(enc["geo_sin_lon"][0] - enc["geo_sin_lon"][1]) < 0.01
    assert abs(enc["geo_cos_lon"][0] - enc["geo_cos_lon"][1]) < 0.01
    assert enc["geo_sin_lat"][0] == pytest.approx(np.sin(np.deg2rad(70.0)))
