"""Fixtures of the training tests: a tiny prepared store and a tiny run config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from icecontext.testing import tiny_run_config, write_tiny_store


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(store, root, name="tiny", **sections)`` -> config mapping."""

    def config(store: Path, root: Path, name: str = "tiny", **sections) -> dict:
        return tiny_run_config(store, root, name=name, **sections)

    return config


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
    return write_tiny_store(tmp_path_factory.mktemp("tiny"))
