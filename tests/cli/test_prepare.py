"""``icecontext prepare``: exit codes, summary, run record, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from icecontext.cli.main import main
from icecontext.data.io.scene import find_scenes
from icecontext.data.store.manifest import Manifest


def test_prepare_writes_a_store_and_is_idempotent(scene_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "store"
    args = ["prepare", "-s", str(scene_dir), "-o", str(out), "--no-progress"]
    assert main([*args, "--downsample", "2", "--features", "sar", "amsr2:36.5", "--jobs", "1"]) == 0
    text = capsys.readouterr().out
    assert "3 scene(s) written, 0 already complete, 0 failed; 3 scene(s) in the store" in text
    manifest = Manifest.read(out)
    assert manifest.downsample == 2
    assert manifest.coarse_variables == ("btemp_36_5h", "btemp_36_5v")
    record = json.loads((out / "provenance.json").read_text())
    assert record["prepare"]["written"] == sorted(manifest.scenes)
    assert main([*args, "--downsample", "2", "--features", "sar", "amsr2:36.5"]) == 0
    assert "0 scene(s) written, 3 already complete" in capsys.readouterr().out


def test_prepare_reports_a_corrupt_scene_and_exits_1(
    scene_dir: Path, tmp_path: Path, capsys
) -> None:
    data = tmp_path / "data"
    shutil.copytree(scene_dir, data)
    victim = find_scenes(data)[0]
    victim.write_bytes(b"not a netcdf file")
    out = tmp_path / "store"
    assert main(["prepare", "--scenes", str(data), "--out", str(out), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert f"FAILED  {victim.name[:19]}" in captured.err
    assert "2 scene(s) written, 0 already complete, 1 failed" in captured.out
    assert len(Manifest.read(out).scenes) == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--downsample", "0"], "option '--downsample'"),
        (["--jobs", "0"], "option '--jobs'"),
        (["--features", "sar", "lidar"], "unknown feature 'lidar'"),
    ],
)
def test_prepare_bad_options_exit_2(
    scene_dir: Path, tmp_path: Path, capsys, extra, message
) -> None:
    code = main(
        [
            "prepare",
            "--scenes",
            str(scene_dir),
            "--out",
            str(tmp_path / "s"),
            "--no-progress",
            *extra,
        ]
    )
    assert code == 2
    assert message in capsys.readouterr().err


def test_prepare_missing_data_folder(tmp_path: Path, capsys) -> None:
    code = main(["prepare", "--scenes", str(tmp_path / "nope"), "--out", str(tmp_path / "s")])
    assert code == 2
    assert f"{tmp_path / 'nope'}: no such scene file or folder" in capsys.readouterr().err


def test_old_spelling_data_still_works_with_a_warning(tmp_path: Path, capsys) -> None:
    nope = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert main(["prepare", "--data", *nope, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "icecontext prepare: warning: --data is deprecated and will be removed in the next "
        "release; use --scenes\n"
    )
    assert f"{tmp_path / 'a'}: no such scene file or folder" in err  # the paths were read
    with pytest.raises(SystemExit):
        main(["prepare", "--out", str(tmp_path / "s")])
    assert "one of the arguments --scenes/-s is required" in capsys.readouterr().err


def test_prepare_rebuilds_a_regenerated_scene_and_says_why(
    scene_dir: Path, tmp_path: Path, capsys
) -> None:
    from icecontext.data.io.scene import write_scene
    from icecontext.testing import make_scene_dataset

    data = tmp_path / "data"
    shutil.copytree(scene_dir, data)
    out = tmp_path / "store"
    args = ["prepare", "--scenes", str(data), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    victim = find_scenes(data)[2]
    name = victim.name[:19]
    write_scene(make_scene_dataset(200, 225, seed=77, scene_name=name), victim)
    capsys.readouterr()
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"rebuilding {name}: source changed (" in text
    assert "1 scene(s) written, 2 already complete, 0 failed; 3 scene(s) in the store" in text


def test_a_store_that_received_no_scene_is_removed(tmp_path, capsys):
    """Nothing half-made: a new store left empty by failures does not stay behind."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "20190101T000000_dmi_prep.nc").write_text("not NetCDF")
    out = tmp_path / "store.zarr"
    assert main(["prepare", "--scenes", str(data), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "FAILED  20190101T000000_dmi" in err and "nothing written" in err
    assert not out.exists()


def _descendants(pid: int) -> set[int]:
    """Child processes of ``pid``, recursively (Linux /proc)."""
    out: set[int] = set()
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        children = {int(c) for t in tasks for c in (t / "children").read_text().split()}
    except OSError:
        return out
    for child in children:
        out |= {child, *_descendants(child)}
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_sigterm_stops_a_parallel_prepare_and_its_workers_and_the_command_continues(
    tmp_path: Path,
) -> None:
    """Once: SIGTERM ended the parent alone, and its forkserver and workers ran on for
    20 minutes."""
    import signal
    import subprocess
    import sys
    import time

    data, store = tmp_path / "data", tmp_path / "store.zarr"
    assert main(["synth", "--out", str(data), "--scenes", "6", "--height", "1000",
                 "--width", "1000", "--no-progress"]) == 0  # fmt: skip
    cmd = [sys.executable, "-m", "icecontext.cli.main", "prepare", "--scenes", str(data),
           "--out", str(store), "--jobs", "2", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while len(workers) < 3:  # the forkserver and two workers
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        workers = _descendants(proc.pid)
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, out + err
    assert "interrupted by SIGTERM; the scenes finished so far stay in" in err
    assert "run the same command again to resume" in err and "Traceback" not in err
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)], "workers outlived the command"
    assert not (store / ".incomplete").exists()  # staging of the stopped scenes removed
    # the same command finishes the store
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "6 scene(s) in the store" in done.stdout
