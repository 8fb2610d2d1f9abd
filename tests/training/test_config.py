"""Run configuration: validation names the key; section files; overrides; paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from icecontext.errors import ConfigError
from icecontext.run.config import RunConfig, check_run_context, load_run_config

# 384 px = 24 feature cells at output stride 16: the default rates 6/12/18 all train
# (256 px, the default patch, leaves rate 18 reading only zero padding: refused)
BASE = {"data": {"store": "store.zarr", "features": ["sar", "amsr2:18.7"], "patch_size": 384}}


def _load(tmp_path, overrides=(), data=None):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data or BASE))
    return load_run_config(path, list(overrides))


def test_defaults_and_name_from_file(tmp_path):
    cfg = _load(tmp_path)
    assert isinstance(cfg, RunConfig)
    assert cfg.output.name == "exp"
    assert cfg.data.store == tmp_path / "store.zarr"  # relative to the config file
    assert cfg.sic_loss == "mse"
    assert cfg.train.optimizer.name == "adamw"


@pytest.mark.parametrize(
    ("override", "option", "words"),
    [
        ("train.optimiser.lr=0.1", "train.optimiser", "unknown option"),
        ("train.max_epochs=abc", "train.max_epochs", "integer"),
        ("train.optimizer.name=adam", "train.optimizer.name", "adamw"),
        ("trainer.precision=fp8", "trainer.precision", "bf16-mixed"),
        ("trainer.strategy=ddp", "trainer.strategy", "trainer.devices"),
        ("trainer.sync_batchnorm=true", "trainer.sync_batchnorm", "several processes"),
        ("model.in_channels=5", "model.in_channels", "selects 4 channels"),
        ("train.loss.sic=cross_entropy", "train.loss.sic", "classification"),
        ("train.max_epochs=null", "train.max_epochs", "never stop"),
        ("data.features=[sar,radar]", "data.features", "unknown feature 'radar'"),
        ("output.name=a/b", "output.name", "plain folder name"),
        ("seed=-1", "seed", "greater than or equal"),
    ],
)
def test_bad_values_name_the_key(tmp_path, override, option, words):
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, [override])
    assert exc.value.option == option
    assert words in str(exc.value)


def test_16_mixed_on_cpu_is_rejected(tmp_path):
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, ["trainer.accelerator=cpu", "trainer.precision=16-mixed"])
    assert exc.value.option == "trainer.precision"


def test_ddp_with_devices_is_fine(tmp_path):
    cfg = _load(tmp_path, ["trainer.strategy=ddp", "trainer.devices=2"])
    assert cfg.trainer.devices == 2 and cfg.trainer.strategy == "ddp"
    cfg = _load(tmp_path, ["trainer.num_nodes=2"])
    assert cfg.trainer.num_nodes == 2


def test_classification_sic(tmp_path):
    cfg = _load(tmp_path, ["model.sic_mode=classification"])
    assert cfg.sic_loss == "cross_entropy"


def test_section_file_and_paths(tmp_path, monkeypatch):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "m.yaml").write_text(
        yaml.safe_dump(
            {
                "model": {"encoder": {"name": "resnet34", "pretrained": "w.pth"}},
                "data": {"features": ["ignored"]},
            }
        )
    )
    (tmp_path / "exp").mkdir()
    path = tmp_path / "exp" / "run.yaml"
    path.write_text(yaml.safe_dump({**BASE, "model": "../model/m.yaml"}))
    monkeypatch.chdir(tmp_path)
    cfg = load_run_config(path, ["data.root=scenes"])
    assert cfg.model.encoder.name == "resnet34"
    # path inside a section file: relative to that file
    assert cfg.model.encoder.pretrained == (tmp_path / "model" / "w.pth")
    # path in the config file: relative to the config file; override: to the working dir
    assert cfg.data.store == tmp_path / "exp" / "store.zarr"
    assert cfg.data.root == tmp_path / "scenes"
    # overrides beat the file
    cfg = load_run_config(path, ["model.encoder.name=resnet50"])
    assert cfg.model.encoder.name == "resnet50"


def test_missing_section_file(tmp_path):
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, data={**BASE, "model": "nope.yaml"})
    assert exc.value.option == "model" and "nope.yaml" in str(exc.value)


def test_repository_configs_validate():
    root = Path(__file__).resolve().parents[2] / "configs"
    files = sorted((root / "train").glob("*.yaml"))
    assert files
    for f in files:
        cfg = load_run_config(f, ["data.store=x.zarr"])
        assert cfg.output.name == f.stem


def test_untrained_rates_are_refused_naming_the_rate_and_the_smallest_patch(tmp_path):
    # 128 px at output stride 16 = 8 x 8 feature cells: rate 24 reads only zero padding
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, ["data.patch_size=128", "model.aspp.rates=[24,48,72]"])
    assert exc.value.option == "model.aspp.rates"
    assert str(exc.value).startswith(
        "option 'model.aspp.rates': rate 24 of task SIC reads only zero padding in 128 px "
        "training patches (8 x 8 feature cells at output stride 16); the smallest patch (a "
        "multiple of 16 px) that trains it is 400 px"
    )
    with pytest.raises(ConfigError) as exc:
        _load(
            tmp_path,
            ["data.patch_size=128", "model.aspp.rates=[1]", "model.task_rates.SOD=[1,8]"],
        )
    assert exc.value.option == "model.task_rates.SOD" and "rate 8 of task SOD" in str(exc.value)
    # rates that train are accepted; a smaller output stride gives more cells
    assert _load(tmp_path, ["data.patch_size=128", "model.aspp.rates=[1,2,7]"])
    _load(
        tmp_path, ["data.patch_size=128", "model.aspp.rates=[9]", "model.encoder.output_stride=8"]
    )


def test_allow_untrained_taps_lets_an_expert_run_it(tmp_path, caplog, monkeypatch):
    from icecontext.models import trained_context

    monkeypatch.setattr(trained_context, "_warned", set())  # warnings print once per process
    cfg = _load(
        tmp_path,
        ["data.patch_size=128", "model.aspp.rates=[24]", "model.allow_untrained_taps=true"],
    )
    assert cfg.model.allow_untrained_taps
    assert "allow_untrained_taps is true: rate 24 of task SIC" in caplog.text


def test_check_run_context_reports_the_shares(tmp_path):
    cfg = _load(tmp_path, ["data.patch_size=256", "model.aspp.rates=[4,12]"])
    ctx = check_run_context(cfg)
    assert ctx.cells == (16, 16)
    shares = {b.rate: (b.axis, b.diagonal) for b in ctx.tasks["FLOE"].rates}
    assert shares == {4: (0.75, 0.5625), 12: (0.25, 0.0625)}


def test_precision_32_as_a_yaml_number_is_accepted(tmp_path):
    # `precision: 32` (docs/training.md) and `trainer.precision=32` parse as the int 32
    cfg = _load(tmp_path, ["trainer.precision=32", "train.validation.precision=32"])
    assert cfg.trainer.precision == "32" and cfg.train.validation.precision == "32"
    with pytest.raises(ConfigError, match="trainer.precision"):  # 16-mixed needs a GPU
        _load(tmp_path, ["trainer.precision=16", "trainer.accelerator=cpu"])
    with pytest.raises(ConfigError, match="trainer.precision"):
        _load(tmp_path, ["trainer.precision=8"])


def test_a_misspelt_key_is_named_with_the_closest_valid_one(tmp_path):
    """A top-level typo used to be reported as its intended section being missing."""
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, data={"modle": {"aspp": {"rates": [1]}}})
    assert exc.value.option == "modle"
    assert "did you mean 'model'?" in str(exc.value)
    assert "valid here: seed, data, model, train, trainer, output" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, ["train.max_epoch=3"])
    assert exc.value.option == "train.max_epoch" and "did you mean 'max_epochs'?" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, ["model.aspp.zzz=3"])
    assert "did you mean" not in str(exc.value) and "valid here: rates, channels" in str(exc.value)


@pytest.mark.parametrize(
    ("override", "value"),
    [
        ("trainer.precision=bf16", "bf16-mixed"),  # the command line's spelling
        ("trainer.precision=16", "16-mixed"),
        ("trainer.precision=32", "32"),
        ("trainer.precision=bf16-mixed", "bf16-mixed"),
    ],
)
def test_trainer_precision_takes_the_command_line_spellings(tmp_path, override, value):
    assert _load(tmp_path, [override, "trainer.accelerator=gpu"]).trainer.precision == value


def test_validation_precision_takes_the_trainer_spelling(tmp_path):
    cfg = _load(tmp_path, ["train.validation.precision=bf16-mixed"])
    assert cfg.train.validation.precision == "bf16"
