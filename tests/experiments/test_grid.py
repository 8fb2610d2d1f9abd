"""Grid expansion: run ids, ordering, shards and config errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from icecontext.errors import ConfigError
from icecontext.experiments.grid import StudyAxes, expand, load_study, parse_shard, shard
from icecontext.experiments.sweep import run_config


def _axes(**kw) -> StudyAxes:
    base = {
        "rates": [[1, 2, 3], [6, 12, 18]],
        "features": {"sar": ["sar"], "sar-amsr2": ["sar", "amsr2"]},
        "seeds": [0, 1, 2],
    }
    return StudyAxes.model_validate({**base, **kw})


def test_expand_is_the_full_product_with_readable_unique_ids():
    specs = expand(_axes())
    assert len(specs) == 2 * 2 * 3
    ids = [s.run_id for s in specs]
    assert len(set(ids)) == len(ids)
    assert ids[:3] == ["r1-2-3_f-sar_s0", "r1-2-3_f-sar_s1", "r1-2-3_f-sar_s2"]
    first = specs[3]
    assert first.run_id == "r1-2-3_f-sar-amsr2_s0"
    assert first.config_id == "r1-2-3_f-sar-amsr2"
    assert first.overrides() == {
        "seed": 0,
        "data.features": ["sar", "amsr2"],
        "model.in_channels": None,
        "model.aspp.rates": [1, 2, 3],
        "model.task_rates": {},
    }


def test_ids_do_not_depend_on_the_other_axes():
    # growing the grid keeps the ids of the runs already done
    small = {s.run_id for s in expand(_axes(seeds=[0]))}
    large = {s.run_id for s in expand(_axes(rates=[[24, 48, 72], [1, 2, 3], [6, 12, 18]]))}
    assert small <= large


def test_task_rates_axis_appears_in_ids_and_overrides():
    specs = expand(_axes(task_rates={"same": {}, "sod-fine": {"SOD": [1, 2, 3]}}, seeds=[0]))
    assert len(specs) == 2 * 2 * 2
    ids = [s.run_id for s in specs]
    assert "r6-12-18_t-sod-fine_f-sar_s0" in ids and "r6-12-18_t-same_f-sar_s0" in ids
    fine = next(s for s in specs if s.task_rates_label == "sod-fine")
    assert fine.overrides()["model.task_rates"] == {"SOD": [1, 2, 3]}


def test_shards_partition_the_grid():
    specs = expand(_axes())
    parts = [shard(specs, i, 3) for i in (1, 2, 3)]
    got = [s.run_id for p in parts for s in p]
    assert sorted(got) == sorted(s.run_id for s in specs)
    assert all(len(p) == 4 for p in parts)


@pytest.mark.parametrize("text", ["0/2", "3/2", "1-2", "a/b", "1/0"])
def test_bad_shard_names_the_flag(text):
    with pytest.raises(ConfigError, match="--shard"):
        parse_shard(text)


def test_parse_shard():
    assert parse_shard(" 2/4 ") == (2, 4)


def test_bad_axes_name_the_key(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("study: {name: x, axes: {rates: [[1, 0]], features: {sar: [sar]}}}\n")
    with pytest.raises(ConfigError, match=r"study\.axes\.rates"):
        load_study(path)
    path.write_text("study: {name: x, axes: {rates: [[1]], features: {'a_b': [sar]}}}\n")
    with pytest.raises(ConfigError, match=r"study\.axes\.features.*a_b"):
        load_study(path)
    path.write_text("study: {name: x, axes: {rates: [[1], [1]], features: {sar: [sar]}}}\n")
    with pytest.raises(ConfigError, match="repeated rate set"):
        load_study(path)
    path.write_text("seed: 0\n")
    with pytest.raises(ConfigError, match="no 'study:' section"):
        load_study(path)
    with pytest.raises(ConfigError, match="not found"):
        load_study(tmp_path / "missing.yaml")


def test_committed_study_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs" / "study"
    smoke = load_study(root / "smoke.yaml")
    assert len(expand(smoke.section.axes)) == 8
    assert smoke.section.purpose.startswith("Machinery check, not findings")
    for path in sorted(root.glob("*.yaml")):
        study = load_study(path)
        assert expand(study.section.axes)


STUDY_CONFIGS = sorted((Path(__file__).parents[2] / "configs" / "study").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDY_CONFIGS, ids=lambda p: p.stem)
def test_shipped_study_configs_make_valid_run_configs(path, tmp_path):
    # every grid point of every shipped study is a valid run config (a preset's
    # model.in_channels must not clash with the feature axis)
    study = load_study(path)
    specs = expand(study.section.axes)
    store = tmp_path / "store.zarr" if study.section.synth else None
    for spec in specs:
        cfg = run_config(study, spec, tmp_path, store)
        assert cfg["model"]["aspp"]["rates"] == list(spec.rates)
        assert cfg["output"]["name"] == spec.run_id
    if path.stem == "paper":
        assert len(specs) == 6 * 9 * 3
    if path.stem == "smoke":
        assert len(specs) == 8
    if path.stem == "known_truth":  # 3 radii x 4 rate sets x 5 seeds
        assert len(specs) == 3 * 4 * 5
    if path.stem == "known_truth_convergence":  # 3 radii x 2 rate sets x 1 seed
        assert len(specs) == 3 * 2
        assert cfg["train"]["max_epochs"] == 14
    if path.stem == "known_truth_inputs":  # 10 feature sets x 5 seeds
        assert len(specs) == 10 * 5


def test_data_axis_prefixes_ids_and_merges_known_truth(tmp_path):
    import yaml

    from icecontext.testing import tiny_run_config

    radii = {"SIC": 1.0, "SOD": 1.5, "FLOE": 2.0}
    study = {
        "study": {
            "name": "kt",
            "synth": {"height": 120, "width": 120, "known_truth": {"cell_fraction": 0.3}},
            "axes": {
                "data": {
                    "A": {"known_truth": {"radius_km": radii}},
                    "B": {"known_truth": {"radius_km": {**radii, "SIC": 2.0}}, "seed": 7},
                },
                "rates": [[1]],
                "features": {"sar": ["sar"]},
                "seeds": [0],
            },
        },
        **tiny_run_config(tmp_path / "s.zarr"),
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    loaded = load_study(path)
    ids = [s.run_id for s in expand(loaded.section.axes)]
    assert ids == ["d-A_r1_f-sar_s0", "d-B_r1_f-sar_s0"]
    assert expand(loaded.section.axes)[1].config_id == "d-B_r1_f-sar"
    b = loaded.section.synth_for("B")
    assert b.seed == 7 and b.known_truth == {
        "cell_fraction": 0.3,
        "radius_km": {**radii, "SIC": 2.0},
    }
    assert b.known_truth_params().radius_km["SIC"] == 2.0
    # a bad radius in one variant is refused when the study loads, naming the variant
    study["study"]["axes"]["data"]["B"]["known_truth"]["radius_km"]["SOD"] = 0.0
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(ConfigError) as err:
        load_study(path)
    assert err.value.option.startswith("study.axes.data.B.known_truth")
