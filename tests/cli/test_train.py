"""`icecontext train`: run directory, outputs, resume on a second call, named errors."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from icecontext.cli.main import main
from icecontext.testing import tiny_run_config, write_tiny_store


def _config(store: Path, root: Path) -> dict:
    return tiny_run_config(
        store, root, seed=1, data={"patches_per_epoch": 8}, train={"max_epochs": 1}
    )


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli_train")
    write_tiny_store(folder, 2, height=140, width=150, seed=5)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(_config(folder / "store.zarr", folder / "runs")))
    return path


@pytest.mark.xdist_group("cli_train")
def test_train_writes_the_run_and_a_second_call_resumes(config_file, capsys):
    assert main(["train", "--config", str(config_file), "output.name=r"]) == 0
    printed = capsys.readouterr().out
    run = config_file.parent / "runs" / "r"
    assert f"run directory: {run}" in printed
    assert f"best checkpoint: {run / 'checkpoints' / 'best.ckpt'}" in printed
    for name in ("config.yaml", "provenance.json", "curves.png", "metrics.json"):
        assert (run / name).is_file(), name
    assert (run / "logs" / "csv" / "metrics.csv").is_file()
    assert list((run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["output"]["name"] == "r"  # the override reached the resolved config
    first = json.loads((run / "metrics.json").read_text())
    assert (first["epochs"], first["steps"]) == (1, 2)
    # 64 px at output stride 8 = 8 x 8 cells: rates 1 and 2 read data at 7/8 and 6/8
    context = first["trained_context"]
    assert context["allow_untrained_taps"] is False and context["untrained_taps"] is False
    assert [r["axis_share"] for r in context["tasks"]["SIC"]["rates"]] == [0.875, 0.75]
    assert "allow_untrained_taps" not in saved["model"]  # only saved when set

    # same command with a later stop: continues from last.ckpt instead of starting over
    argv = ["train", "--config", str(config_file), "output.name=r", "train.max_epochs=2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"resumed from: {run / 'checkpoints' / 'last.ckpt'}" in printed
    second = json.loads((run / "metrics.json").read_text())
    assert (second["epochs"], second["steps"]) == (2, 4)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.optimizer.lr=-1", "train.optimizer.lr"),
        ("train.nope=1", "train.nope"),
        ("data.features=[sar,amsr2:89.0]", "data.features"),  # not in the store
        ("model.in_channels=3", "model.in_channels"),  # 4 channels come from the features
    ],
)
def test_bad_overrides_exit_2_naming_the_key(config_file, capsys, override, named):
    argv = ["train", "--config", str(config_file), "output.name=bad", override]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert named in err, err
    assert not (config_file.parent / "runs" / "bad").exists()  # refused before any folder


def test_no_progress_turns_the_bars_off(config_file, monkeypatch, capsys):
    """``-c`` and ``--no-progress`` (= ``train.progress_bar=false``); the training is faked."""
    import icecontext.training.fit as fit

    seen = []

    def fake_train(cfg):
        seen.append(cfg.train.progress_bar)
        return SimpleNamespace(
            resumed_from=None, best_score=None, best_epoch=None, run_dir=Path("r"),
            best_checkpoint=Path("b.ckpt"), last_checkpoint=Path("l.ckpt"),
        )  # fmt: skip

    monkeypatch.setattr(fit, "train", fake_train)
    argv = ["train", "-c", str(config_file), "output.name=bars", "train.progress_bar=true"]
    assert main(argv) == 0
    assert main([*argv, "--no-progress"]) == 0  # wins over the config and its overrides
    assert seen == [True, False]
    assert "best checkpoint: b.ckpt" in capsys.readouterr().out


def test_missing_config_file_is_named(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err


UNTRAINED = [
    "model.encoder.depth=layer3",
    "model.encoder.output_stride=16",
    "data.patch_size=128",
    "model.aspp.rates=[24,48,72]",
]


def test_untrained_rates_are_refused_before_anything_is_written(config_file, capsys):
    t0 = time.perf_counter()
    assert main(["train", "--config", str(config_file), "output.name=untrained", *UNTRAINED]) == 2
    assert time.perf_counter() - t0 < 30  # no model, no data: arithmetic on the config
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.err.startswith(
        "icecontext train: error: option 'model.aspp.rates': rate 24 of task SIC reads only "
        "zero padding in 128 px training patches (8 x 8 feature cells at output stride 16); "
        "the smallest patch (a multiple of 16 px) that trains it is 400 px"
    )
    assert "model.allow_untrained_taps: true" in captured.err
    assert "run directory" not in captured.out
    assert not (config_file.parent / "runs" / "untrained").exists()


def test_train_refuses_a_config_built_without_the_loader(config_file, tmp_path):
    """``train(cfg)`` checks too (the quickstart builds its RunConfig itself)."""
    from icecontext.errors import ConfigError
    from icecontext.run.config import RunConfig
    from icecontext.training.fit import train

    raw = yaml.safe_load(config_file.read_text())
    raw["output"] = {"root": str(tmp_path / "runs"), "name": "direct"}
    raw["model"]["encoder"].update(depth="layer3", output_stride=16)
    raw["model"]["aspp"]["rates"] = [24, 48, 72]
    raw["data"]["patch_size"] = 128
    with pytest.raises(ConfigError) as exc:
        train(RunConfig.model_validate(raw))
    assert exc.value.option == "model.aspp.rates"
    assert not (tmp_path / "runs").exists()


@pytest.mark.xdist_group("cli_train")
def test_allowed_untrained_taps_train_and_are_recorded(config_file, capsys):
    # 64 px at output stride 8 = 8 x 8 cells: rate 8 reads only zero padding, rate 2 trains
    # on 6/8 of the positions per axis
    argv = ["train", "--config", str(config_file), "output.name=allowed", "model.aspp.rates=[2,8]"]
    assert main(argv) == 2
    assert "rate 8 of task SIC" in capsys.readouterr().err
    assert main([*argv, "model.allow_untrained_taps=true"]) == 0
    run = config_file.parent / "runs" / "allowed"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["allow_untrained_taps"] is True
    for name in ("metrics.json", "provenance.json"):
        record = json.loads((run / name).read_text())["trained_context"]
        assert record["allow_untrained_taps"] is True and record["untrained_taps"] is True
        assert (record["patch_px"], record["output_stride"]) == ([64, 64], 8)
        rates = {r["rate"]: r for r in record["tasks"]["SOD"]["rates"]}
        assert rates[8]["trained"] is False and rates[8]["axis_share"] == 0.0
        assert rates[2]["axis_share"] == 0.75 and rates[2]["diagonal_share"] == 0.5625
        assert rates[8]["trained_from_px"] == 72
