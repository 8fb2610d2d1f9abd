"""A re-run sweep counts a finished or partial run only while its config still matches.

Runs are "trained" by a fake training command that writes what the sweep reads
(``metrics.json``, optionally ``checkpoints/last.ckpt``), so these tests take seconds and
need no data: run configs are validated against a store path that does not exist.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from icecontext.cli.main import main
from icecontext.errors import ConfigError
from icecontext.experiments import sweep as sweep_module
from icecontext.experiments.grid import load_study
from icecontext.experiments.sweep import (
    DONE_MARKER,
    SPEC_FILE,
    SweepOptions,
    SweepRunner,
    canonical_config,
    config_hash,
)
from icecontext.testing import tiny_run_config

FAKE_TRAIN = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import yaml
    cfg = yaml.safe_load(Path(sys.argv[sys.argv.index("--config") + 1]).read_text())
    run_id = cfg["output"]["name"]
    with open(os.environ["FAKE_COUNTS"], "a") as f:
        f.write(run_id + "\\n")
    run = Path(cfg["output"]["root"]) / run_id
    if run_id == os.environ.get("FAKE_PARTIAL"):  # interrupted after a checkpoint
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run / "checkpoints" / "last.ckpt").write_text("epoch 1")
        sys.exit(3)
    epochs = cfg["train"]["max_epochs"]
    scores = {"SIC": 1.0, "SOD": 2.0, "FLOE": 3.0, "combined": 2.0}
    (run / "metrics.json").write_text(json.dumps({"last_scores": scores, "steps": epochs}))
    """
)


def study_mapping(store: Path, *, epochs: int = 2, features: dict | None = None, **sections):
    """Two rate sets x the feature sets (default one) x one seed; no data is read."""
    return {
        "study": {
            "name": "changed",
            "axes": {
                "rates": [[1], [2]],
                "features": features or {"sar": ["sar"]},
                "seeds": [0],
            },
        },
        **tiny_run_config(
            store,
            seed=0,
            **{
                "train": {"max_epochs": epochs},
                "trainer": {"accelerator": "cpu", "threads": 1},
                **sections,
            },
        ),
    }


@pytest.fixture
def env(tmp_path, monkeypatch):
    """``(write, runner, counts)``: write a study file, make a fake-training runner."""
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    counts = tmp_path / "counts.txt"
    counts.touch()
    monkeypatch.setenv("FAKE_COUNTS", str(counts))
    config = tmp_path / "study.yaml"

    def write(mapping: dict) -> Path:
        config.write_text(yaml.safe_dump(mapping))
        return config

    def runner(runs: Path, **kw) -> SweepRunner:
        lines: list[str] = []
        options = SweepOptions(train_command=(sys.executable, str(script)), **kw)
        r = SweepRunner(load_study(config), runs, options, log=lines.append)
        r.lines = lines  # type: ignore[attr-defined]
        return r

    return write, runner, counts


def _trained(counts: Path) -> list[str]:
    return counts.read_text().split()


def test_unchanged_rerun_skips_done_runs_and_records_the_hash(env, tmp_path):
    write, runner, counts = env
    write(study_mapping(tmp_path / "no-store.zarr"))
    runs = tmp_path / "runs"
    assert runner(runs).run().count("trained") == 2
    for run_id in ("r1_f-sar_s0", "r2_f-sar_s0"):
        saved = yaml.safe_load((runs / ".sweep" / "configs" / f"{run_id}.yaml").read_text())
        digest = config_hash(saved)
        assert json.loads((runs / run_id / SPEC_FILE).read_text())["config_hash"] == digest
        assert json.loads((runs / run_id / DONE_MARKER).read_text())["config_hash"] == digest
    again = runner(runs).run()
    assert again.count("skipped-done") == 2 and again.count("trained") == 0
    assert len(_trained(counts)) == 2


def test_changed_config_is_refused_naming_the_runs_and_the_key(env, tmp_path, capsys):
    write, runner, counts = env
    store = tmp_path / "no-store.zarr"
    config = write(study_mapping(store, epochs=2))
    runs = tmp_path / "runs"
    runner(runs).run()
    write(study_mapping(store, epochs=5))
    before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    with pytest.raises(ConfigError) as err:
        runner(runs).run()
    assert err.value.option == "train.max_epochs"
    text = str(err.value)
    for run_id in ("r1_f-sar_s0", "r2_f-sar_s0"):
        assert f"run {run_id} finished with train.max_epochs=2, the study now says 5" in text
    assert "--rerun-changed" in text
    assert len(_trained(counts)) == 2  # nothing trained, nothing written
    assert sorted(p.relative_to(runs) for p in runs.rglob("*")) == before

    # the command line: exit status 2, the key named, no traceback; --dry-run says changed
    args = ["sweep", "--config", str(config), "--runs-dir", str(runs)]
    assert main(args) == 2
    err_text = capsys.readouterr().err
    assert "option 'train.max_epochs'" in err_text and "Traceback" not in err_text
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "changed  r1_f-sar_s0" in out and "changed  r2_f-sar_s0" in out
    assert "train.max_epochs=2, the study now says 5" in out


def test_rerun_changed_retrains_exactly_the_changed_runs_and_keeps_the_old_ones(env, tmp_path):
    write, runner, counts = env
    store = tmp_path / "no-store.zarr"
    write(study_mapping(store, features={"a": ["sar"], "b": ["sar", "incidence"]}))
    runs = tmp_path / "runs"
    assert runner(runs).run().count("trained") == 4
    old_done = json.loads((runs / "r1_f-b_s0" / DONE_MARKER).read_text())
    # feature set b changes: only its runs are trained with another config
    write(study_mapping(store, features={"a": ["sar"], "b": ["sar", "distance"]}))
    with pytest.raises(ConfigError) as err:
        runner(runs).run()
    assert err.value.option == "data.features"
    assert "r1_f-a_s0" not in str(err.value)

    summary = runner(runs, rerun_changed=True).run()
    outcome = {o.run_id: o.status for o in summary.outcomes}
    assert outcome == {
        "r1_f-a_s0": "skipped-done",
        "r1_f-b_s0": "trained",
        "r2_f-a_s0": "skipped-done",
        "r2_f-b_s0": "trained",
    }
    assert sorted(_trained(counts)[4:]) == ["r1_f-b_s0", "r2_f-b_s0"]
    for run_id in ("r1_f-b_s0", "r2_f-b_s0"):
        (old,) = (runs / ".sweep" / "replaced").glob(f"{run_id}-*")
        assert (old / "metrics.json").is_file() and (old / DONE_MARKER).is_file()
        saved = yaml.safe_load((old / "sweep-config.yaml").read_text())
        assert saved["data"]["features"] == ["sar", "incidence"]
        new = yaml.safe_load((runs / ".sweep" / "configs" / f"{run_id}.yaml").read_text())
        assert new["data"]["features"] == ["sar", "distance"]
        done = json.loads((runs / run_id / DONE_MARKER).read_text())
        assert done["config_hash"] == config_hash(new) != config_hash(saved)
    (old,) = (runs / ".sweep" / "replaced").glob("r1_f-b_s0-*")
    assert json.loads((old / DONE_MARKER).read_text()) == old_done
    # everything matches now
    assert runner(runs).run().count("skipped-done") == 4


def test_excluded_keys_and_a_moved_runs_folder_are_not_changes(env, tmp_path):
    write, runner, counts = env
    store = tmp_path / "data" / "store.zarr"
    write(study_mapping(store))
    runs = tmp_path / "runs"
    runner(runs).run()
    # another machine: more threads, loader workers, the store mounted elsewhere under
    # the same name, and the runs folder moved
    moved = tmp_path / "elsewhere" / "runs"
    moved.parent.mkdir()
    shutil.move(runs, moved)
    other = study_mapping(
        tmp_path / "mnt" / "store.zarr",
        trainer={"accelerator": "cpu", "threads": 4},
        data={"workers": 2, "threads": 3},
    )
    write(other)
    again = runner(moved, jobs=2).run()
    assert again.count("skipped-done") == 2 and len(_trained(counts)) == 2
    # a store of another name is a change
    write(study_mapping(tmp_path / "data" / "other.zarr"))
    with pytest.raises(ConfigError, match="data.store"):
        runner(moved).run()


def test_canonical_config_drops_machine_options_and_makes_paths_portable():
    def cfg(root: str, store: str, threads: int, bar: bool) -> dict:
        return {
            "seed": 0,
            "data": {"store": store, "features": ["sar"], "workers": 0, "threads": None},
            "model": {"task_rates": {}},
            "train": {"max_epochs": 2, "resume": "auto", "progress_bar": bar},
            "trainer": {"threads": threads, "precision": "32"},
            "output": {"root": root, "name": "r1_f-sar_s0"},
        }

    a = cfg("/a/runs", "/a/runs/_data/store.zarr", 1, False)
    b = cfg("/b/moved/runs", "/b/moved/runs/_data/store.zarr", 8, True)
    assert canonical_config(a) == canonical_config(b)
    assert config_hash(a) == config_hash(b)
    assert canonical_config(a)["data.store"] == "<runs>/_data/store.zarr"
    assert "trainer.threads" not in canonical_config(a) and "output.root" not in canonical_config(a)
    assert canonical_config(a)["model.task_rates"] == {}
    c = cfg("/a/runs", "/a/runs/_data/store.zarr", 1, False)
    c["trainer"]["precision"] = "bf16-mixed"
    assert config_hash(c) != config_hash(a)


def test_a_partial_run_with_a_changed_config_is_not_resumed(env, tmp_path, monkeypatch):
    write, runner, counts = env
    store = tmp_path / "no-store.zarr"
    write(study_mapping(store, epochs=2))
    runs = tmp_path / "runs"
    monkeypatch.setenv("FAKE_PARTIAL", "r2_f-sar_s0")
    first = runner(runs).run()
    assert first.failed == ["r2_f-sar_s0"]
    assert (runs / "r2_f-sar_s0" / "checkpoints" / "last.ckpt").is_file()
    monkeypatch.delenv("FAKE_PARTIAL")
    write(study_mapping(store, epochs=3))
    with pytest.raises(ConfigError) as err:
        runner(runs).run()
    text = str(err.value)
    assert "run r2_f-sar_s0 was started (checkpoint, not finished) with train.max_epochs=2" in text
    assert "run r1_f-sar_s0 finished with train.max_epochs=2" in text
    assert len(_trained(counts)) == 2
    summary = runner(runs, rerun_changed=True).run()
    assert summary.count("trained") == 2
    (old,) = (runs / ".sweep" / "replaced").glob("r2_f-sar_s0-*")
    assert (old / "checkpoints" / "last.ckpt").read_text() == "epoch 1"
    # retrained from scratch: the new run directory has no checkpoint of the old config
    assert not (runs / "r2_f-sar_s0" / "checkpoints").exists()
    assert json.loads((runs / "r2_f-sar_s0" / "metrics.json").read_text())["steps"] == 3


def test_runs_of_older_sweeps_without_a_hash(env, tmp_path):
    """Checked against their saved config when there is one; otherwise a notice."""
    write, runner, _ = env
    store = tmp_path / "no-store.zarr"
    write(study_mapping(store))
    runs = tmp_path / "runs"
    runner(runs).run()
    for run_id in ("r1_f-sar_s0", "r2_f-sar_s0"):  # as an older sweep left them
        for name in (SPEC_FILE, DONE_MARKER):
            record = json.loads((runs / run_id / name).read_text())
            del record["config_hash"]
            (runs / run_id / name).write_text(json.dumps(record))
    (runs / ".sweep" / "configs" / "r2_f-sar_s0.yaml").unlink()  # and no saved config

    r = runner(runs)
    assert r.run().count("skipped-done") == 2
    notices = [line for line in r.lines if "without a recorded config hash" in line]
    assert len(notices) == 1 and "r2_f-sar_s0" in notices[0]
    # the study changes: the run with a saved config is refused, the other cannot be checked
    write(study_mapping(store, epochs=4))
    with pytest.raises(ConfigError) as err:
        runner(runs).run()
    assert "run r1_f-sar_s0 finished with train.max_epochs=2, the study now says 4" in str(
        err.value
    )
    assert "r2_f-sar_s0" not in str(err.value)


def test_options_added_to_the_schema_since_are_not_changes(env, tmp_path):
    """A saved config without an option that has a default today matches (hash aside)."""
    write, runner, _ = env
    write(study_mapping(tmp_path / "no-store.zarr"))
    runs = tmp_path / "runs"
    runner(runs).run()
    path = runs / ".sweep" / "configs" / "r1_f-sar_s0.yaml"
    saved = yaml.safe_load(path.read_text())
    assert saved["train"].pop("grad_clip_algorithm") == "norm"  # the default
    path.write_text(yaml.safe_dump(saved))
    done = runs / "r1_f-sar_s0" / DONE_MARKER
    record = json.loads(done.read_text())
    record["config_hash"] = config_hash(saved)  # what that older version recorded
    done.write_text(json.dumps(record))
    assert runner(runs).run().count("skipped-done") == 2


def test_a_bad_grid_point_fails_before_data_and_before_the_runs_folder(env, tmp_path, monkeypatch):
    write, runner, _ = env
    study = study_mapping(tmp_path / "no-store.zarr", features={"ok": ["sar"], "bad": ["sar", "x"]})
    study["study"]["synth"] = {"train_scenes": 1, "val_scenes": 1, "height": 100, "width": 100}
    write(study)

    def no_data(*args, **kwargs):
        raise AssertionError("data prepared before the configs were validated")

    monkeypatch.setattr(sweep_module, "prepare_data", no_data)
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError) as err:
        runner(runs).run()
    assert err.value.option.startswith("data.features")
    assert not runs.exists()
    # valid configs need no store: the synthetic one is named before it exists
    write(study_mapping(tmp_path / "no-store.zarr"))
    study = study_mapping(tmp_path / "no-store.zarr")
    study["study"]["synth"] = {"train_scenes": 1, "val_scenes": 1, "height": 100, "width": 100}
    write(study)
    configs = runner(runs).configs()
    stores = {c["data"]["store"] for c in configs.values()}
    assert stores == {str((runs / "_data" / "store.zarr").resolve())}
    assert not runs.exists()


def test_a_run_finished_meanwhile_with_another_config_is_not_counted(env, tmp_path):
    """Checked again under the run's lock: another process may have finished it since."""
    write, runner, counts = env
    store = tmp_path / "no-store.zarr"
    write(study_mapping(store, epochs=2))
    runs = tmp_path / "runs"
    late = runner(runs)
    configs = late.configs()  # this process read the study before the other finished
    write(study_mapping(store, epochs=7))
    runner(runs).run()  # "another process" with the new study file trains both runs
    spec = late.specs[0]
    outcome = late._run_one(spec, configs[spec.run_id], 0)
    assert outcome.status == "skipped-changed"
    assert len(_trained(counts)) == 2
    assert json.loads((runs / spec.run_id / "metrics.json").read_text())["steps"] == 7


def test_data_axis_prepares_one_known_truth_store_per_variant(env, tmp_path):
    from icecontext.experiments.collect import collect_runs
    from icecontext.experiments.sweep import store_path

    write, runner, _ = env
    radii = {"SIC": 0.5, "SOD": 0.6, "FLOE": 0.7}
    mapping = study_mapping(tmp_path / "unused.zarr")
    mapping["study"]["synth"] = {
        "train_scenes": 1,
        "val_scenes": 1,
        "height": 100,
        "width": 100,
        "known_truth": {"radius_km": radii},
    }
    mapping["study"]["axes"]["data"] = {
        "A": {},
        "B": {"known_truth": {"radius_km": {**radii, "SIC": 0.9}}},
    }
    mapping["study"]["axes"]["rates"] = [[1]]
    mapping["data"]["features"] = ["sar"]
    write(mapping)
    runs = tmp_path / "runs"
    r = runner(runs)
    assert r.run().count("trained") == 2
    for label in ("A", "B"):
        store = store_path(r.study, runs, label)
        assert store == runs / "_data" / label / "store.zarr" and store.is_dir()
        cfg = yaml.safe_load(
            (runs / ".sweep" / "configs" / f"d-{label}_r1_f-sar_s0.yaml").read_text()
        )
        assert cfg["data"]["store"] == str(store.resolve())
    record = json.loads((runs / "d-B_r1_f-sar_s0" / SPEC_FILE).read_text())
    assert record["data"] == "B" and record["synth"]["known_truth"]["radius_km"]["SIC"] == 0.9
    table = collect_runs(runs).set_index("run_id")
    assert table.loc["d-A_r1_f-sar_s0", "known_radius_km_SIC"] == 0.5
    assert table.loc["d-B_r1_f-sar_s0", "known_radius_km_SIC"] == 0.9
    assert json.loads(table.loc["d-B_r1_f-sar_s0", "truth_informative"])["FLOE"] == {"sar": 1.0}
    # other radii for variant B: its runs no longer count, even once its data are rebuilt
    mapping["study"]["axes"]["data"]["B"]["known_truth"]["radius_km"]["SIC"] = 0.8
    write(mapping)
    with pytest.raises(ConfigError) as err:
        runner(runs).run()
    assert err.value.option == "study.synth.known_truth.radius_km.SIC"
    assert "d-B_r1_f-sar_s0" in str(err.value) and "d-A_r1_f-sar_s0" not in str(err.value)
