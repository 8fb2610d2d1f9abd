"""Fixtures of the training tests: a tiny prepared store and a tiny run config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from icecontext.data.store import prepare_store
from icecontext.testing import write_scene_files

TINY_FEATURES = ["sar", "amsr2:18.7"]


def _tiny_config(store: Path, root: Path, name: str = "tiny", **sections) -> dict:
    """A run config that trains in seconds on CPU (4 steps per epoch, one val scene)."""
    cfg = {
        "seed": 3,
        "data": {
            "store": str(store),
            "features": TINY_FEATURES,
            "patch_size": 64,
            "batch_size": 4,
            "patches_per_epoch": 16,
            "workers": 0,
            "val_patches": 0,
            "splits": {"val_count": 1},
        },
        "model": {
            "encoder": {"name": "resnet18", "depth": "layer2", "output_stride": 8},
            "aspp": {"rates": [1, 2], "channels": 8, "dropout": 0.1},
        },
        "train": {
            "max_epochs": 2,
            "progress_bar": False,
            "log_every_n_steps": 1,
            "validation": {"tile": 128, "overlap": 32},
        },
        "trainer": {"threads": 1},
        "output": {"root": str(root), "name": name},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(store, root, name="tiny", **sections)`` -> config mapping."""
    return _tiny_config


@pytest.fixture(scope="session")
def write_config():
    """``write_config(path, cfg)`` writes a config mapping as YAML and returns the path."""

    def write(path: Path, cfg: dict) -> Path:
        path.write_text(yaml.safe_dump(cfg))
        return path

    return write


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three labelled 160 x 170 scenes prepared with SAR and AMSR2 18.7 GHz (read-only)."""
    folder = tmp_path_factory.mktemp("tiny")
    write_scene_files(folder / "scenes", 3, height=160, width=170, seed=0)
    prepare_store(folder / "scenes", folder / "store.zarr", features=TINY_FEATURES, progress=False)
    return folder / "store.zarr"
