"""Scene splits: official test list, seeded validation draw, files, missing scenes."""

from __future__ import annotations

from pathlib import Path

import pytest

from icecontext.config import validate
from icecontext.data.config import DataConfig, SplitsConfig
from icecontext.data.io.format import OFFICIAL_TEST_SCENES
from icecontext.data.loader.splits import (
    draw_validation,
    normalise_scene_name,
    read_scene_list,
    resolve_splits,
)
from icecontext.errors import ConfigError, DataError

AVAILABLE = [f"2019{m:02d}01T000000_{'dmi' if m % 2 else 'cis'}" for m in range(1, 13)]


def test_default_train_is_everything_not_in_val_or_test() -> None:
    s = resolve_splits(SplitsConfig(val=AVAILABLE[:2], test=AVAILABLE[-1:]), AVAILABLE, "store X")
    assert s.val == tuple(AVAILABLE[:2]) and s.test == (AVAILABLE[-1],)
    assert s.train == tuple(AVAILABLE[2:-1])


def test_validation_draw_is_seeded_and_order_independent() -> None:
    a = resolve_splits(SplitsConfig(val_count=3, val_seed=4), AVAILABLE, "x")
    b = resolve_splits(SplitsConfig(val_count=3, val_seed=4), AVAILABLE[::-1], "x")
    c = resolve_splits(SplitsConfig(val_count=3, val_seed=5), AVAILABLE, "x")
    assert a == b
    assert a.val != c.val
    assert len(a.val) == 3 and not set(a.val) & set(a.train)
    assert sorted(a.train + a.val) == sorted(AVAILABLE)
    assert draw_validation(AVAILABLE, 3, 4) == list(a.val)


def test_validation_draw_from_an_explicit_train_list() -> None:
    s = resolve_splits(SplitsConfig(train=AVAILABLE[:6], val_count=2), AVAILABLE, "x")
    assert set(s.val) <= set(AVAILABLE[:6]) and len(s.train) == 4
    with pytest.raises(ConfigError, match="val_count"):
        resolve_splits(SplitsConfig(train=AVAILABLE[:2], val_count=3), AVAILABLE, "x")


def test_official_test_list_is_built_in() -> None:
    available = [*AVAILABLE, *OFFICIAL_TEST_SCENES]
    s = resolve_splits(SplitsConfig(test="official"), available, "x")
    assert s.test == tuple(sorted(OFFICIAL_TEST_SCENES))
    assert len(s.test) == 20 and not set(s.train) & set(s.test)


def test_missing_scene_names_scene_list_and_store() -> None:
    with pytest.raises(
        DataError,
        match=r"scene '20991231T000000_dmi' listed in data.splits.val is not in the store /x",
    ):
        resolve_splits(SplitsConfig(val=["20991231T000000_dmi"]), AVAILABLE, "the store /x")
    with pytest.raises(
        DataError,
        match=rf"'{OFFICIAL_TEST_SCENES[0]}' listed in data.splits.test is not in the folder /t",
    ):
        resolve_splits(
            SplitsConfig(test="official"), AVAILABLE, "the store /x", AVAILABLE, "the folder /t"
        )


def test_overlapping_splits_are_rejected() -> None:
    with pytest.raises(ConfigError, match=rf"'{AVAILABLE[0]}' is in both the train and the val"):
        resolve_splits(SplitsConfig(train=AVAILABLE[:3], val=AVAILABLE[:1]), AVAILABLE, "x")


def test_scene_list_files(tmp_path: Path) -> None:
    f = tmp_path / "val.txt"
    f.write_text(
        f"# validation scenes\n{AVAILABLE[0]}\n\n{AVAILABLE[1]}_prep.nc  # a file name is fine\n"
        "S1B_EW_GRDM_1SDH_20190301T000000_20190301T000100_011271_014B00_0BEC_icechart_dmi_201903010000_North_RIC.nc\n"
    )
    assert read_scene_list(f) == [AVAILABLE[0], AVAILABLE[1], AVAILABLE[2]]
    s = resolve_splits(SplitsConfig(val=f), AVAILABLE, "x")
    assert s.val == tuple(AVAILABLE[:3])
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{AVAILABLE[0]}\nnot-a-scene\n")
    with pytest.raises(ConfigError, match=r"data.splits.train.*bad.txt, line 2"):
        resolve_splits(SplitsConfig(train=bad), AVAILABLE, "x")
    with pytest.raises(ConfigError, match="does not exist"):
        read_scene_list(tmp_path / "nope.txt")


def test_normalise_scene_name() -> None:
    assert normalise_scene_name(" 20180124T194759_dmi ") == "20180124T194759_dmi"
    assert normalise_scene_name("20180124T194759_dmi_prep.nc") == "20180124T194759_dmi"
    with pytest.raises(ValueError, match="not a scene name"):
        normalise_scene_name("20180124_dmi")


def test_data_config_errors_name_the_key() -> None:
    cfg = validate(DataConfig, {"store": "s", "splits": {"test": "official", "val_count": 2}})
    assert cfg.splits.test == "official" and cfg.channels[0] == "nersc_sar_primary"
    with pytest.raises(ConfigError, match=r"option 'data.features'.*unknown feature 'radar'"):
        validate(DataConfig, {"store": "s", "features": ["sar", "radar"]})
    with pytest.raises(ConfigError, match=r"option 'patch_size'"):
        validate(DataConfig, {"store": "s", "patch_size": 0})
    with pytest.raises(ConfigError, match=r"option 'upsampling'"):
        validate(DataConfig, {"store": "s", "upsampling": "cubic"})
    with pytest.raises(ConfigError, match=r"option 'splits.vall'.*unknown option"):
        validate(DataConfig, {"store": "s", "splits": {"vall": []}})
    with pytest.raises(ConfigError, match="data.store"):
        validate(DataConfig, {})
    with pytest.raises(ConfigError, match="data.splits.val_count"):
        validate(DataConfig, {"store": "s", "splits": {"val": ["a"], "val_count": 1}})


def test_data_config_resolves_relative_paths(tmp_path: Path) -> None:
    cfg = validate(
        DataConfig,
        {"store": "stores/k1", "splits": {"train": "lists/train.txt", "test": "official"}},
    )
    resolved = cfg.resolve_paths(tmp_path)
    assert resolved.store == tmp_path / "stores/k1"
    assert resolved.splits.train == tmp_path / "lists/train.txt"
    assert resolved.splits.test == "official"
    assert cfg.store == Path("stores/k1")  # the original is unchanged
