"""The command dispatcher and the validate command."""

from __future__ import annotations

from pathlib import Path

import pytest

from icecontext.cli.main import COMMANDS, main
from icecontext.data.scene import write_scene
from icecontext.testing import make_scene_dataset


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_validate_reports_good_and_bad(
    tmp_path: Path, scene_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_scene(
        make_scene_dataset(100, 100).drop_vars("skt"), tmp_path / "20190101T060000_dmi_prep.nc"
    )
    assert main(["validate", str(scene_dir)]) == 0
    assert "3 of 3 scene(s) valid" in capsys.readouterr().out
    assert main(["validate", str(scene_dir), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL  {bad}: variable 'skt'" in out and "3 of 4" in out


def test_user_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["validate", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("icecontext validate: error:") and "no scene files" in err
    assert err.count("\n") == 1
