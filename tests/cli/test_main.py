"""The command dispatcher and the validate command."""

from __future__ import annotations

from pathlib import Path

import pytest

from icecontext.cli.main import COMMANDS, main
from icecontext.data.io.scene import write_scene
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
    # --scenes, the other commands' spelling, reads the same paths
    assert main(["validate", "--scenes", str(scene_dir), str(bad)]) == 1
    assert "3 of 4" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "one of the arguments PATH --scenes/-s is required"),
        (["a.nc", "-s", "b.nc"], "argument --scenes/-s: not allowed with argument PATH"),
    ],
)
def test_validate_takes_its_paths_once(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["validate", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_user_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["validate", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("icecontext validate: error:") and "no scene files" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (PermissionError(13, "Permission denied", "/data/out"), "permission denied: /data/out"),
        (OSError(28, "No space left on device", "/d/a.nc"), "no space left on device: /d/a.nc"),
        (OSError(30, "Read-only file system", "/ro/x"), "read-only file system: /ro/x"),
        (NotADirectoryError(20, "Not a directory", "/f/x"), "not a directory: /f/x"),
        (
            OSError(2, "No such file or directory", "a", None, "b"),
            "no such file or directory: a -> b",
        ),
        # no errno: the message is kept as it is (paths keep their case)
        (OSError("Unable to open /Data/Scene_A.nc"), "Unable to open /Data/Scene_A.nc"),
    ],
)
def test_a_file_system_refusal_is_one_line_naming_the_path(
    error: OSError, expected: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import icecontext.cli.validate as command

    def refuse(args):
        raise error

    monkeypatch.setattr(command, "run", refuse)
    assert main(["validate", "x.nc"]) == 2
    err = capsys.readouterr().err
    assert err == f"icecontext validate: error: {expected} (run with --debug for the traceback)\n"
    # --debug (or -v) shows the traceback instead
    with pytest.raises(type(error)):
        main(["--debug", "validate", "x.nc"])


def test_an_output_folder_under_a_file_is_refused_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The machines here run as root, where permissions do not refuse anything: a path
    below a regular file is refused by any file system."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "scenes"
    status = main(["synth", "--out", str(out), "--scenes", "1", "--height", "64", "--width", "64"])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert str(out) in err or str(blocker) in err
    assert err.count("\n") == 1


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["synth", "--out", "{out}"], "--out"),
        (["show", "x.nc", "--out", "{out}/a.png"], "--out"),
        (["convert-raw", "raw", "--out", "{out}"], "--out"),
        (["prepare", "--scenes", "d", "--out", "{out}"], "--out"),
        (
            ["rf", "--config", str(ROOT / "configs/model/small_cpu.yaml"), "--plot", "{out}/p.png"],
            "--plot",
        ),
        (
            [
                "train",
                "--config",
                str(ROOT / "configs/train/small_cpu.yaml"),
                "data.store=s",
                "output.root={out}",
            ],
            "output.root",
        ),
        (["evaluate", "-k", "best.ckpt", "--scenes", "d", "--out", "{out}"], "--out"),
        (["predict", "-k", "best.ckpt", "--scenes", "s", "--out", "{out}"], "--out"),
        (["submission", "-k", "best.ckpt", "--scenes", "d", "--out", "{out}/u.nc"], "--out"),
        (["export", "-k", "best.ckpt", "--out", "{out}/model.pt"], "--out"),
        (["explain", "-k", "r", "-s", "s.nc", "-t", "SOD", "--out", "{out}"], "--out"),
        (["quickstart", "--out", "{out}"], "--out"),
        (["study-report", "runs", "--out", "{out}"], "--out"),
        (
            ["sweep", "--config", str(ROOT / "configs/study/smoke.yaml"), "--runs-dir", "{out}"],
            "--runs-dir",
        ),
    ],
    ids=lambda v: v[0] if isinstance(v, list) else None,
)
def test_every_command_refuses_an_unwritable_output_first(
    command: list[str], option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before reading any input or doing any work: one line naming the option and the path,
    exit status 2, nothing created."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "out"
    before = sorted(tmp_path.rglob("*"))
    status = main([part.replace("{out}", str(out)) for part in command])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith(f"icecontext {command[0]}: error: option '{option}': cannot write to ")
    assert f"{blocker} is a file, not a folder" in err and err.count("\n") == 1
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("command", ["predict", "submission"])
def test_an_empty_scene_folder_is_named_before_torch_loads(command: str, tmp_path: Path) -> None:
    """Importing torch takes seconds: inputs that cannot work are refused before it."""
    import subprocess
    import sys

    ckpt = tmp_path / "best.ckpt"
    ckpt.write_bytes(b"x")
    empty = tmp_path / "scenes"
    empty.mkdir()
    scenes = ["-s", str(empty)]
    out = tmp_path / ("o" if command == "predict" else "u.nc")
    code = (
        "import sys; from icecontext.cli.main import main; "
        f"rc = main({[command, '-k', str(ckpt), *scenes, '-o', str(out)]!r}); "
        "print(rc, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert f"{empty}: no scene files (*.nc) in this folder" in done.stderr


def test_project_messages_show_and_library_chatter_does_not() -> None:
    """The root logger at INFO printed GDAL's harmless messages and onnxscript's chatter."""
    import subprocess
    import sys

    code = (
        "import logging, icecontext.cli.validate as v\n"
        "def run(args):\n"
        "    logging.getLogger('rasterio._env').info('library chatter')\n"
        "    logging.getLogger('rasterio._env').warning('library warning')\n"
        "    logging.getLogger('icecontext.inference').info('project progress')\n"
        "    logging.getLogger('icecontext.inference').debug('project detail')\n"
        "    return 0\n"
        "v.run = run\n"
        "from icecontext.cli.main import main\n"
        "import sys; sys.exit(main(sys.argv[1:]))\n"
    )
    quiet = subprocess.run(
        [sys.executable, "-c", code, "validate", "x"], capture_output=True, text=True, timeout=60
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "project progress" in quiet.stderr and "library warning" in quiet.stderr
    assert "library chatter" not in quiet.stderr and "project detail" not in quiet.stderr
    loud = subprocess.run(
        [sys.executable, "-c", code, "-v", "validate", "x"], capture_output=True, text=True
    )
    assert "library chatter" in loud.stderr and "project detail" in loud.stderr
