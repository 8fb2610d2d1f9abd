"""`icecontext convert-raw`: end to end through files and the CLI (the acceptance item)."""

from __future__ import annotations

import numpy as np
import pytest

from icecontext.cli.main import main
from icecontext.data.io.format import CHARTS, R2T_VARIABLE_NAMES
from icecontext.data.io.scene import open_scene, write_scene
from icecontext.synthetic.writers import (
    example_physical_scene,
    physical_to_r2t,
    physical_to_raw,
    raw_file_name,
    write_raw,
)


@pytest.fixture(scope="module")
def scenes():
    return [
        example_physical_scene(60, 76, seed=11, service="dmi"),
        example_physical_scene(52, 81, seed=12, service="cis"),
    ]


@pytest.fixture
def raw_dir(tmp_path, scenes):
    folder = tmp_path / "raw"
    for k, s in enumerate(scenes):
        write_raw(physical_to_raw(s, seed=k, odd=bool(k)), folder / raw_file_name(s))
    return folder


def test_convert_raw_equals_ready_to_train_output(tmp_path, raw_dir, scenes, capsys) -> None:
    out = tmp_path / "out"
    assert main(["convert-raw", *sorted(map(str, raw_dir.iterdir())), "--out", str(out)]) == 0
    assert "2 converted, 0 skipped, 0 failed" in capsys.readouterr().out
    for s in scenes:
        converted = open_scene(out / f"{s.scene_name}_prep.nc")
        expected = open_scene(
            write_scene(physical_to_r2t(s), tmp_path / "r2t" / f"{s.scene_name}_prep.nc")
        )
        assert list(converted.data_vars) == list(R2T_VARIABLE_NAMES)
        for var in R2T_VARIABLE_NAMES:
            a, b = converted[var].values, expected[var].values
            assert a.dtype == b.dtype, var
            if var in CHARTS:
                np.testing.assert_array_equal(a, b, err_msg=var)
            else:
                np.testing.assert_allclose(a, b, rtol=0, atol=2e-6, err_msg=var)
            assert converted[var].attrs.keys() == expected[var].attrs.keys()
        assert converted.attrs["original_id"] == s.original_id
        assert converted.attrs["scene_id"] == f"{s.scene_name}_prep.nc"


def test_skip_existing_and_overwrite(tmp_path, raw_dir, capsys) -> None:
    out = tmp_path / "out"
    assert main(["convert-raw", str(raw_dir), "--out", str(out)]) == 0
    target = next(out.glob("*_dmi_prep.nc"))
    stamp = target.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["convert-raw", str(raw_dir), "--out", str(out)]) == 0
    assert "0 converted, 2 skipped" in capsys.readouterr().out
    assert target.stat().st_mtime_ns == stamp
    args = ["convert-raw", str(raw_dir), "-o", str(out), "--overwrite", "--no-progress"]
    assert main(args) == 0
    assert "2 converted" in capsys.readouterr().out


def test_clean_charts_flag(tmp_path, raw_dir, scenes) -> None:
    out_official, out_clean = tmp_path / "official", tmp_path / "clean"
    assert main(["convert-raw", str(raw_dir), "--out", str(out_official)]) == 0
    assert main(["convert-raw", str(raw_dir), "--out", str(out_clean), "--clean-charts"]) == 0
    name = f"{scenes[0].scene_name}_prep.nc"
    official, clean = open_scene(out_official / name), open_scene(out_clean / name)
    np.testing.assert_array_equal(official["SIC"].values, clean["SIC"].values)
    p4 = (scenes[0].polygon_ids == 4) & (official["nersc_sar_primary"].values != 0)
    assert (official["SOD"].values[p4] == 255).all() and (clean["SOD"].values[p4] == 4).all()


def test_bad_file_is_reported_and_others_still_convert(tmp_path, raw_dir, scenes, capsys) -> None:
    good = sorted(raw_dir.iterdir())
    truncated = raw_dir / ("S1B" + good[0].name[3:])
    truncated.write_bytes(good[0].read_bytes()[:5000])
    missing = raw_dir / "does_not_exist_icechart.nc"
    out = tmp_path / "out"
    status = main(["convert-raw", str(truncated), *map(str, good), str(missing), "--out", str(out)])
    text = capsys.readouterr().out
    assert status == 1
    assert f"FAIL  {truncated.name}" in text and "truncated" in text
    assert f"FAIL  {missing.name}" in text and "does not exist" in text
    assert "2 converted, 0 skipped, 2 failed" in text
    assert sorted(p.name for p in out.glob("*.nc")) == sorted(
        f"{s.scene_name}_prep.nc" for s in scenes
    )
    assert not list(out.glob(".*"))  # no temporary files left behind
