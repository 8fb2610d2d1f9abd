"""ModelConfig validation: every invalid configuration names its option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from icecontext.config import validate
from icecontext.errors import ConfigError
from icecontext.models.config import (
    ModelConfig,
    load_model_spec,
    model_spec_from_mapping,
    parse_pooling,
    resolve_in_channels,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"


def _model(section: dict[str, Any]) -> ModelConfig:
    return validate(ModelConfig, section, prefix="model")


@pytest.mark.parametrize(
    ("section", "option", "words"),
    [
        ({"aspp": {"rates": [6, 0, 18]}}, "model.aspp.rates.1", "greater than 0"),
        ({"aspp": {"rates": [-2]}}, "model.aspp.rates.0", "greater than 0"),
        ({"aspp": {"rates": []}}, "model.aspp.rates", "at least 1"),
        ({"task_rates": {"SOD": []}}, "model.task_rates", "empty"),
        ({"task_rates": {"SOD": [3, 0]}}, "model.task_rates.SOD.1", "greater than 0"),
        # pydantic marks a bad mapping key with ".[key]"
        ({"task_rates": {"ICE": [3]}}, "model.task_rates.ICE.[key]", "SIC"),
        ({"encoder": {"name": "resnet77"}}, "model.encoder.name", "resnet152"),
        ({"encoder": {"output_stride": 12}}, "model.encoder.output_stride", "8, 16 or 32"),
        (
            {"encoder": {"output_stride": 32, "depth": "layer3"}},
            "model.encoder.output_stride",
            "impossible",
        ),
        (
            {"encoder": {"backend": "torchvision", "name": "resnet34", "output_stride": 8}},
            "model.encoder.output_stride",
            "backend=timm",
        ),
        ({"encoder": {"backend": "keras"}}, "model.encoder.backend", "timm"),
        ({"aspp": {"pooling": "max"}}, "model.aspp.pooling", "avg:K"),
        ({"aspp": {"pooling": "avg:4"}}, "model.aspp.pooling", "odd"),
        ({"aspp": {"dropout": 1.5}}, "model.aspp.dropout", "less than 1"),
        ({"aspp": {"channels": 0}}, "model.aspp.channels", "greater than 0"),
        ({"sic_mode": "ordinal"}, "model.sic_mode", "regression"),
        ({"shared_decoder": True, "task_rates": {"SOD": [2]}}, "model.task_rates", "shared"),
        ({"encoder": {"nmae": "resnet18"}}, "model.encoder.nmae", "unknown option"),
    ],
)
def test_invalid_options_name_the_option(section: dict[str, Any], option: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        _model(section)
    assert info.value.option == option
    assert f"option '{option}'" in str(info.value)
    assert words in str(info.value)


def test_defaults_and_rates_per_task() -> None:
    cfg = _model({"aspp": {"rates": [1]}, "task_rates": {"FLOE": [24, 48, 72]}})
    assert cfg.rates_for("SIC") == [1] and cfg.rates_for("FLOE") == [24, 48, 72]
    assert cfg.out_channels == {"SIC": 1, "SOD": 6, "FLOE": 7}
    assert _model({"sic_mode": "classification"}).out_channels["SIC"] == 11
    assert cfg.encoder.output_stride == 16 and cfg.encoder.depth == "layer3"
    assert cfg.encoder.pretrained is None  # random initialisation by default


def test_pooling_forms() -> None:
    assert str(parse_pooling("global")) == "global"
    assert str(parse_pooling(" none ")) == "none"
    p = parse_pooling("avg:5")
    assert (p.kind, p.kernel) == ("avg", 5)
    with pytest.raises(ConfigError, match="odd K"):
        parse_pooling("avg:0")


def test_channel_count_must_agree_with_features() -> None:
    cfg = _model({"in_channels": 5})
    with pytest.raises(ConfigError) as info:
        resolve_in_channels(cfg, ["sar", "amsr2:18.7"])
    assert info.value.option == "model.in_channels"
    assert "is 5 but data.features selects 4 channels" in str(info.value)
    assert resolve_in_channels(cfg, ["sar", "incidence", "amsr2:18.7"]) == 5
    assert resolve_in_channels(_model({}), "sar,incidence") == 3
    assert resolve_in_channels(cfg, None) == 5
    with pytest.raises(ConfigError) as info:
        resolve_in_channels(_model({}), None)
    assert info.value.option == "model.in_channels"
    with pytest.raises(ConfigError) as info:
        resolve_in_channels(_model({}), ["sar", "radar"])
    assert info.value.option == "data.features" and "radar" in str(info.value)


def test_spec_reads_only_features_and_downsample_and_ignores_other_sections(
    tmp_path: Path,
) -> None:
    raw = {
        "model": {"aspp": {"rates": [2, 4]}, "encoder": {"pretrained": "weights/r18.pth"}},
        "data": {"features": ["sar", "amsr2"], "downsample": 4, "root": "/nowhere", "x": 1},
        "train": {"anything": "goes"},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    spec = load_model_spec(path, ["model.aspp.rates=[6,12]", "data.downsample=2"])
    assert spec.in_channels == 16 and spec.downsample == 2
    assert spec.model.aspp.rates == [6, 12]
    assert spec.features is not None and spec.features[0] == "nersc_sar_primary"
    # relative paths are taken from the config file's folder
    assert spec.model.encoder.pretrained == tmp_path.resolve() / "weights" / "r18.pth"
    with pytest.raises(ConfigError) as info:
        model_spec_from_mapping({"model": {}, "data": {"features": ["sar"], "downsample": 0}})
    assert info.value.option == "data.downsample"
    with pytest.raises(ConfigError) as info:
        load_model_spec(path, ["model.aspp.rates=[]"])
    assert info.value.option == "model.aspp.rates"


def test_spec_reads_patch_size_and_tile_and_inlines_a_preset_for_overrides(
    tmp_path: Path,
) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "m.yaml").write_text(
        yaml.safe_dump({"model": {"aspp": {"rates": [3]}, "encoder": {"pretrained": "w.pth"}}})
    )
    raw = {
        "model": "model/m.yaml",
        "data": {"features": ["sar"], "patch_size": 192},
        "train": {"validation": {"tile": 640}},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    spec = load_model_spec(path)
    assert (spec.patch_size, spec.tile) == (192, 640)
    assert spec.model.aspp.rates == [3]
    # overrides reach the preset; its relative paths stay relative to the preset's folder
    spec = load_model_spec(path, ["model.aspp.rates=[1,2]", "data.patch_size=64"])
    assert spec.model.aspp.rates == [1, 2] and spec.patch_size == 64
    assert spec.model.encoder.pretrained == tmp_path.resolve() / "model" / "w.pth"
    assert load_model_spec(CONFIGS / "small_cpu.yaml").patch_size is None
    with pytest.raises(ConfigError) as info:
        load_model_spec(path, ["train.validation.tile=0"])
    assert info.value.option == "train.validation.tile"


@pytest.mark.parametrize("name", ["small_cpu.yaml", "autoice_reference.yaml"])
def test_presets_validate(name: str) -> None:
    spec = load_model_spec(CONFIGS / name)
    if name == "autoice_reference.yaml":
        assert spec.in_channels == 18
        assert spec.model.encoder.name == "resnet152" and spec.model.encoder.depth == "layer3"
        assert spec.model.aspp.rates == [12, 24, 36] and spec.model.aspp.channels == 32
    else:
        assert spec.model.encoder.name == "resnet18" and spec.model.encoder.depth == "layer3"
