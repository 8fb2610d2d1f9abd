"""`icecontext train`: run directory, outputs, resume on a second call, named errors."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert not (config_file.parent / "runs" / "bad" / "checkpoints" / "last.ckpt").exists()


def test_missing_config_file_is_named(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err
