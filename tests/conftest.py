"""Shared pytest fixtures: small exact-format scenes on disk."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

from icecontext.testing import write_scene_files

matplotlib.use("Agg")


@pytest.fixture(scope="session")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three labelled 200 x 225 scenes (read-only: copy before modifying)."""
    folder = tmp_path_factory.mktemp("scenes")
    write_scene_files(folder, 3, height=200, width=225, seed=0)
    return folder


@pytest.fixture(scope="session")
def test_set_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two test-layout scenes: unlabelled _prep.nc plus _prep_reference.nc (read-only)."""
    folder = tmp_path_factory.mktemp("testset")
    write_scene_files(folder, 2, height=200, width=225, seed=10, test_set=True)
    return folder
