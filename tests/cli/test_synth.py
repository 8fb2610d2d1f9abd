"""``icecontext synth``: layouts, validation, determinism, raw round trip and bad options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from icecontext.cli.main import main
from icecontext.data.io.format import CHART_FILL, CHARTS, scene_name_from_raw
from icecontext.data.io.scene import find_scenes, open_scene

SIZE = ["--height", "300", "--width", "325"]


def _synth(out: Path, *extra: str) -> int:
    return main(["synth", "-o", str(out), *SIZE, "--no-progress", *extra])


@pytest.fixture(scope="module")
def r2t_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    assert _synth(out, "--scenes", "3", "--seed", "40") == 0
    return out


def test_writes_valid_ready_to_train_scenes(r2t_dir: Path, capsys) -> None:
    files = find_scenes(r2t_dir)
    assert len(files) == 3
    assert main(["validate", str(r2t_dir), "--require-labels"]) == 0
    assert "3 of 3 scene(s) valid" in capsys.readouterr().out
    # services alternate, names are unique and each scene has its truth record (seed S + i)
    by_seed = {
        json.loads(p.read_text())["seed"]: p.name[16:19] for p in r2t_dir.glob("*_synth.json")
    }
    assert by_seed == {40: "dmi", 41: "cis", 42: "dmi"}
    assert len({f.name for f in files}) == 3


def test_run_record_and_truth_name_the_scales(r2t_dir: Path) -> None:
    cfg = yaml.safe_load((r2t_dir / "config.yaml").read_text())
    assert cfg["height"] == 300 and cfg["scales"]["sod_texture_px"] == 10.0
    prov = json.loads((r2t_dir / "provenance.json").read_text())
    assert prov["seed"] == 40 and len(prov["scenes"]) == 3
    truth = json.loads(next(r2t_dir.glob("*_synth.json")).read_text())
    assert truth["scales"] == cfg["scales"]
    assert truth["polygons"] and truth["polygons"][0]["codes"].count(";") == 14


def test_same_seed_gives_byte_identical_files(r2t_dir: Path, tmp_path: Path) -> None:
    assert _synth(tmp_path, "--scenes", "1", "--seed", "40") == 0
    (new,) = find_scenes(tmp_path)
    assert new.read_bytes() == (r2t_dir / new.name).read_bytes()


def test_service_and_scale_options(tmp_path: Path) -> None:
    assert _synth(tmp_path, "--scenes", "2", "--service", "cis", "--scale", "coarse") == 0
    files = find_scenes(tmp_path)
    assert [f.name[16:19] for f in files] == ["cis", "cis"]
    truth = json.loads(next(tmp_path.glob("*_synth.json")).read_text())
    assert truth["scales"]["sic_cluster_px"] == 64.0


def test_test_set_layout_keeps_labels_in_the_reference_file(tmp_path: Path) -> None:
    assert _synth(tmp_path, "--scenes", "1", "--seed", "40", "--test-set") == 0
    (path,) = find_scenes(tmp_path)
    bare = open_scene(path, reference=None)
    for chart in CHARTS:
        assert (bare[chart].values == CHART_FILL).all()
    ref = path.with_name(path.name.replace("_prep.nc", "_prep_reference.nc"))
    assert ref.exists()
    paired = open_scene(path, require_labels=True)
    assert (paired["SIC"].values != CHART_FILL).any()


def test_raw_files_convert_back_to_the_ready_to_train_files(r2t_dir: Path, tmp_path: Path) -> None:
    raw_dir, conv_dir = tmp_path / "raw", tmp_path / "conv"
    assert _synth(raw_dir, "--scenes", "2", "--seed", "40", "--raw") == 0
    raws = sorted(raw_dir.glob("S1*_icechart_*.nc"))
    assert len(raws) == 2
    # seeds 40 and 41 give the same scenes as in the ready-to-train run
    assert {scene_name_from_raw(p.name) for p in raws} < {f.name[:19] for f in find_scenes(r2t_dir)}
    assert main(["convert-raw", str(raw_dir), "--out", str(conv_dir)]) == 0
    for converted in find_scenes(conv_dir):
        a = open_scene(converted)
        b = open_scene(r2t_dir / converted.name)
        for chart in CHARTS:
            np.testing.assert_array_equal(a[chart].values, b[chart].values)
        for var in a.data_vars:
            if var not in CHARTS:
                np.testing.assert_allclose(a[var].values, b[var].values, atol=1e-5, err_msg=var)


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--scenes", "0"], "--scenes"),
        (["--height", "10"], "--height"),
        (["--scale", "enormous"], "--scale"),
        (["--complevel", "12"], "--complevel"),
        (["--known-truth", "SIC=3"], "--known-truth"),
        (["--known-truth", "SIC=3,SOD=x,FLOE=2"], "--known-truth"),
        (["--known-truth", "SIC=1,SOD=1,FLOE=1", "--raw"], "--known-truth"),
    ],
)
def test_bad_options_name_the_option(tmp_path: Path, capsys, extra: list[str], option: str) -> None:
    assert main(["synth", "--out", str(tmp_path), "--no-progress", *extra]) == 2
    assert f"option '{option}'" in capsys.readouterr().err


def test_known_truth_scenes_validate_and_record_their_radii(tmp_path: Path) -> None:
    out = tmp_path / "kt"
    assert _synth(out, "--scenes", "2", "--known-truth", "SIC=0.8,SOD=1.2,FLOE=1.6") == 0
    assert main(["validate", str(out), "--require-labels"]) == 0
    scenes = find_scenes(out)
    assert len(scenes) == 2
    ds = open_scene(scenes[0])
    assert set(np.unique(ds["SOD"].values)) <= {1, 3, 5, CHART_FILL}
    truth = json.loads(next(out.glob("*_synth.json")).read_text())
    assert truth["known_truth"]["radius_km"] == {"SIC": 0.8, "SOD": 1.2, "FLOE": 1.6}
    assert truth["informative_channels"]["SIC"] == {"sar": 1.0, "amsr2:18.7": 0.9}


def test_a_bad_scale_leaves_no_folder(tmp_path: Path, capsys) -> None:
    out = tmp_path / "scenes"
    assert main(["synth", "--out", str(out), "--scale", "bogus"]) == 2
    assert "option '--scale': unknown scale 'bogus'" in capsys.readouterr().err
    assert not out.exists()
