"""prepare: source fingerprints (rebuild changed scenes, keep touched ones) and 80 m charts."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from icecontext.data.io.format import CHART_FILL, CHARTS, prep_file_name
from icecontext.data.io.scene import find_scenes, open_scene, write_scene
from icecontext.data.loader.sources import NetCDFSource, store_source
from icecontext.data.store.fingerprint import (
    FINGERPRINT_KEY,
    HASH_HEAD,
    fingerprint_changes,
    source_fingerprint,
)
from icecontext.data.store.manifest import MANIFEST_NAME, STORE_VERSION, Manifest
from icecontext.data.store.prepare import prepare_store
from icecontext.data.store.prepared import PreparedStore
from icecontext.errors import DataError
from icecontext.testing import make_scene_dataset, write_scene_files


def group_files(group: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of a scene group: (mtime in ns, bytes) by relative path."""
    return {
        str(p.relative_to(group)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(group.rglob("*"))
        if p.is_file()
    }


def stored_fingerprint(store: Path, name: str) -> dict:
    return json.loads((store / name / "zarr.json").read_text())["attributes"][FINGERPRINT_KEY]


@pytest.fixture
def data(scene_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    shutil.copytree(scene_dir, folder)
    return folder


def test_changed_scene_is_rebuilt_untouched_and_touched_scenes_are_not(
    data: Path, tmp_path: Path, capsys
) -> None:
    store = tmp_path / "store"
    first = prepare_store(data, store, progress=False)
    assert len(first.written) == 3 and not first.rebuilt
    changed, touched, untouched = (p.name[:19] for p in find_scenes(data))
    before = {n: group_files(store / n) for n in (touched, untouched)}
    fp_touched = stored_fingerprint(store, touched)
    assert fp_touched["scene"]["size"] == (data / prep_file_name(touched)).stat().st_size

    # regenerate one scene under the same name with other content; touch another
    new = make_scene_dataset(200, 225, seed=99, scene_name=changed, polygon_size=17)
    write_scene(new, data / prep_file_name(changed))
    path = data / prep_file_name(touched)
    later = path.stat().st_mtime_ns + 5_000_000_000
    os.utime(path, ns=(later, later))
    capsys.readouterr()

    second = prepare_store(data, store, progress=False)
    out = capsys.readouterr().out
    assert f"rebuilding {changed}: source changed (" in out
    assert "content" in second.rebuilt[changed]
    assert touched not in out and untouched not in out
    assert second.written == [changed] and set(second.rebuilt) == {changed}
    assert sorted(second.skipped) == sorted([touched, untouched])
    assert second.refreshed == [touched]

    # the rebuilt scene holds the new file's data ...
    source = store_source(PreparedStore(store), changed)
    charts = source.read_charts((0, 0, 200, 225))
    for chart in CHARTS:
        np.testing.assert_array_equal(charts[chart], new[chart].values)
    ds = open_scene(data / prep_file_name(changed))
    sar = source.read_inputs((0, 0, 200, 225), ["nersc_sar_primary"])[0]
    np.testing.assert_array_equal(sar, ds["nersc_sar_primary"].values)
    ds.close()
    record = Manifest.read(store).scenes[changed]
    assert (
        record.histograms_full["SOD"]
        == np.bincount(new["SOD"].values.ravel(), minlength=256).tolist()
    )
    # ... the untouched one was not rewritten at all ...
    assert group_files(store / untouched) == before[untouched]
    # ... and the touched one kept its arrays; only its stored mtime moved
    after = group_files(store / touched)
    assert {k: v for k, v in after.items() if k != "zarr.json"} == {
        k: v for k, v in before[touched].items() if k != "zarr.json"
    }
    fp = stored_fingerprint(store, touched)
    assert fp["scene"]["mtime_ns"] == later
    assert fp["scene"]["sha256_head_tail"] == fp_touched["scene"]["sha256_head_tail"]
    assert zarr.open_group(store / touched, mode="r").attrs["complete"] is True

    third = prepare_store(data, store, progress=False)
    assert third.written == [] and not third.rebuilt and not third.refreshed
    assert "rebuilding" not in capsys.readouterr().out


def test_group_without_fingerprint_is_rebuilt(data: Path, tmp_path: Path, capsys) -> None:
    store = tmp_path / "store"
    prepare_store(data, store, progress=False)
    name = find_scenes(data)[0].name[:19]
    meta = store / name / "zarr.json"
    doc = json.loads(meta.read_text())
    del doc["attributes"][FINGERPRINT_KEY]  # as a store written before fingerprints
    meta.write_text(json.dumps(doc))
    capsys.readouterr()
    result = prepare_store(data, store, progress=False)
    assert f"rebuilding {name}: no source fingerprint" in capsys.readouterr().out
    assert result.written == [name]
    assert FINGERPRINT_KEY in json.loads(meta.read_text())["attributes"]


def test_changed_labels_file_rebuilds_a_test_scene(tmp_path: Path, capsys) -> None:
    data = tmp_path / "test"
    (path,) = write_scene_files(data, 1, height=120, width=130, seed=4, test_set=True)
    store = tmp_path / "store"
    prepare_store(data, store, progress=False)
    name = path.name[:19]
    labels = make_scene_dataset(120, 130, seed=40, scene_name=name, polygon_size=13)
    write_scene(labels, data / f"{name}_prep_reference.nc", variables=CHARTS)
    capsys.readouterr()
    result = prepare_store(data, store, progress=False)
    assert "labels file" in result.rebuilt[name]
    assert "content" not in result.rebuilt[name]  # the scene file itself is the same
    sod = store_source(PreparedStore(store), name).read_charts((0, 0, 120, 130))["SOD"]
    np.testing.assert_array_equal(sod, labels["SOD"].values)


def test_failed_rebuild_keeps_the_old_group_and_says_so(data: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    prepare_store(data, store, progress=False)
    victim = find_scenes(data)[0]
    name = victim.name[:19]
    before = group_files(store / name)
    victim.write_bytes(victim.read_bytes()[:5000])  # a truncated re-download
    result = prepare_store(data, store, progress=False)
    assert list(result.failed) == [name] and name in result.rebuilt
    assert "earlier version of its source" in result.failed[name]
    assert group_files(store / name) == before
    assert name in Manifest.read(store).scenes


def test_fingerprint_rules(tmp_path: Path) -> None:
    name = "20190101T060000_dmi"
    path = tmp_path / prep_file_name(name)
    payload = bytes(range(256)) * (3 * HASH_HEAD // 256)  # 3 MiB: head, middle, tail
    path.write_bytes(payload)
    fp = source_fingerprint(path, name)
    assert fp["reference"] is None and fp["synthetic"] is None
    assert fingerprint_changes(fp, source_fingerprint(path, name)) == []

    # same size, one byte changed in the header block: content
    edited = bytearray(payload)
    edited[10] ^= 0xFF
    path.write_bytes(bytes(edited))
    assert "content" in fingerprint_changes(fp, source_fingerprint(path, name))
    # ... in the last 64 KiB: content
    edited = bytearray(payload)
    edited[-10] ^= 0xFF
    path.write_bytes(bytes(edited))
    assert "content" in fingerprint_changes(fp, source_fingerprint(path, name))
    # grown file: size (and content)
    path.write_bytes(payload + b"x")
    assert {"size", "content"} <= set(fingerprint_changes(fp, source_fingerprint(path, name)))
    # a touch only: mtime, nothing else
    path.write_bytes(payload)
    os.utime(path, ns=(1, 1))
    assert fingerprint_changes(fp, source_fingerprint(path, name)) == ["mtime"]

    # the synthetic generator's parameters (icecontext synth's sidecar)
    sidecar = tmp_path / f"{name}_synth.json"
    sidecar.write_text(json.dumps({"seed": 3, "params": {"height": 5}, "polygons": [1, 2]}))
    with_sidecar = source_fingerprint(path, name)
    assert with_sidecar["synthetic"] == {"seed": 3, "params": {"height": 5}}
    sidecar.write_text(json.dumps({"seed": 4, "params": {"height": 5}, "polygons": [1, 2]}))
    assert fingerprint_changes(with_sidecar, source_fingerprint(path, name)) == [
        "generator parameters"
    ]
    sidecar.write_text(json.dumps({"seed": 3, "params": {"height": 5}, "polygons": [9]}))
    assert fingerprint_changes(with_sidecar, source_fingerprint(path, name)) == []


def test_downsampled_store_keeps_the_80m_charts(scene_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "k3"
    prepare_store(scene_dir, store, downsample=3, features=["sar"], progress=False)
    assert json.loads((store / MANIFEST_NAME).read_text())["version"] == STORE_VERSION
    prepared = PreparedStore(store)
    for path in find_scenes(scene_dir):
        name = path.name[:19]
        source = store_source(prepared, name)
        assert source.shape == (67, 75) and source.has_full_charts()
        ds = open_scene(path)
        full = source.read_full_charts()
        window = source.read_full_charts((190, 220, 20, 20))  # past the scene: 255
        for chart in CHARTS:
            np.testing.assert_array_equal(full[chart], ds[chart].values)
            np.testing.assert_array_equal(window[chart][:10, :5], ds[chart].values[190:, 220:])
            assert (window[chart][10:] == CHART_FILL).all()
            assert (window[chart][:, 5:] == CHART_FILL).all()
        ds.close()
        group = zarr.open_group(store / name, mode="r")
        assert group["charts_full"].shape == (3, 200, 225)
        # the files themselves serve the same 80 m charts
        netcdf = NetCDFSource(path, ["nersc_sar_primary"], downsample=3)
        for chart in CHARTS:
            np.testing.assert_array_equal(netcdf.read_full_charts()[chart], full[chart])
    # K = 1: the charts are the 80 m charts; no second copy
    k1 = tmp_path / "k1"
    prepare_store(scene_dir, k1, features=["sar"], progress=False)
    name = find_scenes(scene_dir)[0].name[:19]
    assert "charts_full" not in zarr.open_group(k1 / name, mode="r")
    source = store_source(PreparedStore(k1), name)
    assert source.read_full_charts()["SIC"].shape == (200, 225)


def test_format_1_downsampled_store_is_read_but_names_the_fix(
    scene_dir: Path, tmp_path: Path
) -> None:
    store = tmp_path / "k2"
    prepare_store(scene_dir, store, downsample=2, features=["sar"], progress=False)
    name = find_scenes(scene_dir)[0].name[:19]
    # make it look like a format-1 store: no charts_full, manifest version 1
    shutil.rmtree(store / name / "charts_full")
    meta = store / name / "zarr.json"
    doc = json.loads(meta.read_text())
    del doc["consolidated_metadata"]["metadata"]["charts_full"]
    meta.write_text(json.dumps(doc))
    manifest = json.loads((store / MANIFEST_NAME).read_text())
    manifest["version"] = 1
    (store / MANIFEST_NAME).write_text(json.dumps(manifest))
    source = store_source(PreparedStore(store), name)
    assert source.read_charts((0, 0, 4, 4))["SIC"].shape == (4, 4)  # still readable
    assert not source.has_full_charts()
    with pytest.raises(DataError, match=r"no 80 m charts.*icecontext prepare") as info:
        source.read_full_charts()
    assert name in str(info.value)
    manifest["version"] = 3
    (store / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="newer icecontext"):
        PreparedStore(store)
