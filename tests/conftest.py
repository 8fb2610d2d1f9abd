"""Shared pytest fixtures: small exact-format scenes on disk."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest
import torch

from icecontext.testing import write_scene_files

matplotlib.use("Agg")


def pytest_configure(config: pytest.Config) -> None:
    """Run torch on one thread in every test process.

    CI runs two pytest workers on two cores; torch's default of one thread per core
    oversubscribes them, and OpenMP spin-waits then slow the small convolutions of the
    tests down several-fold (up to 100x on a loaded machine). Subprocesses the tests start
    (DDP, kill-and-resume, sweeps) inherit the limit through OMP_NUM_THREADS.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    torch.set_num_threads(1)


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
