"""``icecontext submission``: the upload file of format reference §4 from a checkpoint."""

from __future__ import annotations

import logging

import netCDF4
import numpy as np
import pytest
import xarray as xr

from icecontext.cli.main import main
from icecontext.data.io.format import OFFICIAL_TEST_SCENES, prep_file_name
from icecontext.data.io.scene import write_scene
from icecontext.inference.exports import check_upload_package
from icecontext.testing import make_scene_dataset
from tiny_checkpoint import save_tiny_checkpoint

WARNING = (
    "icecontext submission: warning: {old} is deprecated and will be removed in the next "
    "release; use --scenes"
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("sub") / "run" / "best.ckpt")


def test_upload_for_any_test_scenes_with_a_warning(ckpt, test_set_dir, tmp_path, capsys, caplog):
    out = tmp_path / "upload_package.nc"
    with caplog.at_level(logging.WARNING):
        rc = main(["submission", "-k", str(ckpt), "--scenes", str(test_set_dir),
                   "--out", str(out), "--tile", "128", "--no-progress"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    names = sorted(p.name[:19] for p in test_set_dir.glob("*_prep.nc"))
    shapes = dict.fromkeys(names, (200, 225))
    assert check_upload_package(out, expected_scenes=names, shapes=shapes) == shapes
    with netCDF4.Dataset(out) as nc:
        assert len(nc.variables) == 3 * len(names)
        var = nc.variables[f"{names[0]}_SOD"]
        assert var.dtype == np.uint8 and var.filters()["zlib"] and var.filters()["complevel"] == 1
        assert var.dimensions == (f"{names[0]}_SOD_dim0", f"{names[0]}_SOD_dim1")
    assert "not the official test list" in capsys.readouterr().out
    assert any("official" in r.message for r in caplog.records)
    assert [p.name for p in tmp_path.iterdir()] == ["upload_package.nc"]  # no temporary left


def test_official_list_gives_60_variables_and_no_warning(ckpt, tmp_path, capsys):
    folder = tmp_path / "official"
    folder.mkdir()
    for i, name in enumerate(OFFICIAL_TEST_SCENES):
        ds = make_scene_dataset(height=30 + i, width=40, seed=i, scene_name=name, labelled=False)
        write_scene(ds, folder / prep_file_name(ds.attrs["scene_id"].removesuffix("_prep.nc")))
    out = tmp_path / "upload_package.nc"
    rc = main(["submission", "-k", str(ckpt), "-s", str(folder), "-o", str(out),
               "--no-progress"])  # fmt: skip
    assert rc == 0
    found = check_upload_package(out, expected_scenes="official")
    assert len(found) == 20 and found[OFFICIAL_TEST_SCENES[3]] == (33, 40)
    with xr.open_dataset(out) as ds:
        assert len(ds.data_vars) == 60 and not ds.coords
    assert "warning" not in capsys.readouterr().out


def test_bad_scene_leaves_no_upload_file(ckpt, test_set_dir, tmp_path, capsys):
    bad = make_scene_dataset(height=40, width=50, seed=9).drop_vars("nersc_sar_secondary")
    folder = tmp_path / "in"
    folder.mkdir()
    bad.to_netcdf(folder / f"{bad.attrs['scene_id'][:19]}_prep.nc")
    out = tmp_path / "upload_package.nc"
    rc = main(["submission", "-k", str(ckpt), "-s", str(test_set_dir), str(folder),
               "-o", str(out), "--no-progress"])  # fmt: skip
    assert rc == 2 and "nersc_sar_secondary" in capsys.readouterr().err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["in"]


def test_unwritable_target_folder(ckpt, test_set_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "upload_package.nc"
    rc = main(["submission", "-k", str(ckpt), "-d", str(test_set_dir), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and str(blocker) in err
    assert WARNING.format(old="-d") in err  # the old spelling still works
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


@pytest.mark.parametrize(
    ("option", "value"), [("--tile", "0"), ("--batch", "0"), ("--overlap", "-1")]
)
def test_bad_tiling_option_is_named_and_writes_nothing(
    ckpt, test_set_dir, tmp_path, capsys, option, value
):
    out = tmp_path / "upload_package.nc"
    rc = main(["submission", "-k", str(ckpt), "--test-dir", str(test_set_dir), "-o", str(out),
               option, value, "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and f"option '{option}'" in err
    assert WARNING.format(old="--test-dir") in err
    assert not any(tmp_path.iterdir())
