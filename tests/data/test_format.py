"""Facts of the file format: variable order, names, grids."""

from __future__ import annotations

import pytest

from icecontext.data.io.format import (
    OFFICIAL_TEST_SCENES,
    R2T_VARIABLE_NAMES,
    amsr_grid_shape,
    prep_file_name,
    scene_name_from_file,
    scene_name_from_raw,
    scene_service,
    scene_time,
)

RAW = (
    "S1B_EW_GRDM_1SDH_20180607T184326_20180607T184426_011271_014B00_0BEC_icechart_dmi_"
    "201806071840_CentralEast_RIC.nc"
)


def test_29_variables_in_file_order() -> None:
    assert len(R2T_VARIABLE_NAMES) == 29
    assert R2T_VARIABLE_NAMES[:6] == (
        "SIC",
        "SOD",
        "FLOE",
        "sar_grid2d_latitude",
        "sar_grid2d_longitude",
        "nersc_sar_primary",
    )
    assert R2T_VARIABLE_NAMES[9] == "btemp_6_9h" and R2T_VARIABLE_NAMES[22] == "btemp_89_0v"
    assert R2T_VARIABLE_NAMES[-1] == "tclw"


@pytest.mark.parametrize(
    ("shape", "expected"), [((4999, 5213), (199, 208)), ((5003, 5228), (200, 209))]
)
def test_amsr_grid_rule_matches_published_examples(
    shape: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert amsr_grid_shape(shape) == expected


def test_raw_name_to_scene_name() -> None:
    assert scene_name_from_raw(RAW) == "20180607T184326_dmi"
    assert prep_file_name("20180607T184326_dmi") == "20180607T184326_dmi_prep.nc"
    with pytest.raises(ValueError, match="raw file name"):
        scene_name_from_raw("something_else.nc")


def test_scene_name_parsing() -> None:
    assert scene_name_from_file("/x/20180124T194759_dmi_prep.nc") == "20180124T194759_dmi"
    assert scene_time("20180124T194759_dmi").month == 1
    assert scene_service("20200217T102731_cis") == "cis"
    with pytest.raises(ValueError, match="not an AI4Arctic scene file name"):
        scene_name_from_file("foo.nc")


def test_official_test_list() -> None:
    assert len(OFFICIAL_TEST_SCENES) == 20 == len(set(OFFICIAL_TEST_SCENES))
    assert sum(n.endswith("_dmi") for n in OFFICIAL_TEST_SCENES) == 8
