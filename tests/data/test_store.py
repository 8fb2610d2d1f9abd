"""prepare: store layout, manifest, idempotence, resume after SIGKILL, corrupt scenes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from icecontext.data.io.format import CHARTS
from icecontext.data.io.scene import find_scenes, open_scene
from icecontext.data.loader.sources import store_source
from icecontext.data.store.manifest import Manifest
from icecontext.data.store.prepare import INCOMPLETE_DIR, prepare_store
from icecontext.data.store.prepared import PreparedStore
from icecontext.errors import ConfigError, DataError
from icecontext.testing import write_scene_files

IGNORED = {"provenance.json", ".lock"}


def snapshot(store: Path) -> dict[str, bytes]:
    """Every file of a store (run records excluded) by relative path."""
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.name not in IGNORED
    }


@pytest.fixture(scope="module")
def store(scene_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "store"
    result = prepare_store(scene_dir, out, progress=False)
    assert len(result.written) == 3 and not result.failed
    return out


def test_store_layout_and_manifest(scene_dir: Path, store: Path) -> None:
    manifest = Manifest.read(store)
    assert manifest.downsample == 1 and manifest.chunk == 256
    assert manifest.sar_variables[:2] == ("nersc_sar_primary", "nersc_sar_secondary")
    assert len(manifest.sar_variables) == 4 and len(manifest.coarse_variables) == 20
    for path in find_scenes(scene_dir):
        ds = open_scene(path)
        name = ds.attrs["scene_name"]
        rec = manifest.scenes[name]
        assert rec.shape == rec.full_shape == (200, 225)
        assert rec.coarse_shape == (8, 9)
        assert (rec.service, rec.month) == (name[16:19], int(name[4:6]))
        assert rec.source == path.name
        for chart in CHARTS:
            expected = np.bincount(ds[chart].values.ravel(), minlength=256)
            np.testing.assert_array_equal(rec.histogram(chart), expected)
            assert rec.histograms_full[chart] == expected.tolist()
            assert sum(rec.histograms[chart]) == 200 * 225
        labelled = ((ds["SIC"] != 255) | (ds["SOD"] != 255) | (ds["FLOE"] != 255)).mean()
        assert rec.valid_fraction["labelled"] == pytest.approx(float(labelled))
        assert rec.valid_fraction["sar"] == pytest.approx(
            float((ds["nersc_sar_primary"] != 0).mean())
        )
        group = zarr.open_group(store / name, mode="r")
        assert group.attrs["complete"] is True
        assert group["sar"].shape == (4, 200, 225) and group["sar"].chunks == (4, 256, 256)
        assert group["charts"].dtype == np.uint8 and group["coarse"].shape == (20, 8, 9)
        np.testing.assert_array_equal(group["charts"][1], ds["SOD"].values)
        np.testing.assert_array_equal(group["coarse"][19], ds["tclw"].values)
    assert not (store / INCOMPLETE_DIR).exists()


def test_downsampled_manifest_keeps_80m_histograms(scene_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "k5"
    prepare_store(scene_dir, out, downsample=5, features=["sar", "amsr2:18.7"], progress=False)
    manifest = Manifest.read(out)
    rec = next(iter(manifest.scenes.values()))
    assert rec.shape == (40, 45) and rec.full_shape == (200, 225) and rec.downsample == 5
    assert sum(rec.histograms["SIC"]) == 40 * 45
    assert sum(rec.histograms_full["SIC"]) == 200 * 225
    assert manifest.coarse_variables == ("btemp_18_7h", "btemp_18_7v")
    # K = 5 charts can only lose labels (255 if any of the 25 pixels is masked)
    assert rec.histograms["SIC"][255] / (40 * 45) >= rec.histograms_full["SIC"][255] / (200 * 225)


def test_second_run_skips_everything_and_changes_nothing(scene_dir: Path, store: Path) -> None:
    before = snapshot(store)
    mtimes = {p: p.stat().st_mtime_ns for p in store.rglob("c/*") if p.is_file()}
    result = prepare_store(scene_dir, store, progress=False)
    assert result.written == [] and len(result.skipped) == 3
    assert snapshot(store) == before
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())


def test_parallel_jobs_give_the_same_store(scene_dir: Path, store: Path, tmp_path: Path) -> None:
    out = tmp_path / "jobs2"
    result = prepare_store(scene_dir, out, jobs=2, progress=False)
    assert sorted(result.written) == PreparedStore(store).names
    assert snapshot(out) == snapshot(store)


def test_corrupt_scene_is_reported_and_skipped(scene_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(scene_dir, data)
    victim = find_scenes(data)[1]
    victim.write_bytes(victim.read_bytes()[:5000])  # truncated download
    out = tmp_path / "store"
    result = prepare_store(data, out, progress=False)
    bad = victim.name[:19]
    assert list(result.failed) == [bad]
    assert "SceneFormatError" in result.failed[bad] and str(victim) in result.failed[bad]
    assert len(result.written) == 2
    assert not (out / bad).exists() and not (out / INCOMPLETE_DIR).exists()
    assert sorted(Manifest.read(out).scenes) == sorted(result.written)
    # the good scenes are intact and readable
    prepared = PreparedStore(out)
    for name in prepared.names:
        assert store_source(prepared, name).read_chart_stack((0, 0, 10, 10)).shape == (3, 10, 10)


def test_incomplete_group_is_redone(scene_dir: Path, store: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    shutil.copytree(store, out)
    name = PreparedStore(store).names[0]
    meta = out / name / "zarr.json"
    data = json.loads(meta.read_text())
    data["attributes"]["complete"] = False  # as if killed before the completion mark
    meta.write_text(json.dumps(data))
    (out / INCOMPLETE_DIR / "junk").mkdir(parents=True)
    result = prepare_store(scene_dir, out, progress=False)
    assert result.written == [name]
    assert snapshot(out) == snapshot(store)


def test_settings_must_match_an_existing_store(scene_dir: Path, store: Path) -> None:
    with pytest.raises(ConfigError, match="--downsample") as info:
        prepare_store(scene_dir, store, downsample=2, progress=False)
    assert str(store) in str(info.value)
    with pytest.raises(ConfigError, match="--features"):
        prepare_store(scene_dir, store, features=["sar"], progress=False)


def test_bad_inputs_and_outputs(scene_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such scene file or folder"):
        prepare_store(tmp_path / "missing", tmp_path / "out", progress=False)
    (tmp_path / "not_a_store").mkdir()
    (tmp_path / "not_a_store" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not an icecontext store"):
        prepare_store(scene_dir, tmp_path / "not_a_store", progress=False)
    with pytest.raises(ConfigError, match="--features"):
        prepare_store(scene_dir, tmp_path / "out", features=["sar", "radar"], progress=False)
    with pytest.raises(ConfigError, match="--downsample"):
        prepare_store(scene_dir, tmp_path / "out", downsample=0, progress=False)
    with pytest.raises(DataError, match=r"not a prepared store|does not exist"):
        PreparedStore(tmp_path / "nothing")


def _prepare_cmd(data: Path, out: Path) -> list[str]:
    code = "import sys; from icecontext.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return [
        sys.executable,
        "-c",
        code,
        "prepare",
        "--scenes",
        str(data),
        "--out",
        str(out),
        "--no-progress",
    ]


def test_killed_run_resumes_to_an_identical_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_scene_files(data, 6, height=400, width=430, seed=5)
    reference = tmp_path / "reference"
    subprocess.run(_prepare_cmd(data, reference), check=True, capture_output=True)

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _prepare_cmd(data, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    complete: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        complete = [p for p in out.glob("2*") if (p / "zarr.json").exists()] if out.exists() else []
        if complete:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    n_done = len([p for p in out.glob("2*") if (p / "zarr.json").exists()])
    assert 1 <= n_done < 6, f"kill landed after {n_done} of 6 scenes"
    assert not (out / "manifest.json").exists()  # written only when a run ends

    rerun = subprocess.run(_prepare_cmd(data, out), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{6 - n_done} scene(s) written, {n_done} already complete" in rerun.stdout
    assert snapshot(out) == snapshot(reference)
