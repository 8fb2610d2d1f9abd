"""Run records hold the resolved config, versions, commit and seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml

from icecontext.config import Section
from icecontext.provenance import seed_everything, write_run_record


class Cfg(Section):
    seed: int = 3
    lr: float = 0.1


def test_run_record(tmp_path: Path) -> None:
    write_run_record(tmp_path, Cfg(), seed=3, extra={"note": "x"})
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == {"seed": 3, "lr": 0.1}
    record = json.loads((tmp_path / "provenance.json").read_text())
    assert record["seed"] == 3 and record["note"] == "x"
    assert record["versions"]["torch"].startswith("2.")
    assert "git_commit" in record


def test_seed_everything_is_repeatable() -> None:
    seed_everything(11)
    a = (np.random.rand(), torch.rand(1).item())
    seed_everything(11)
    assert (np.random.rand(), torch.rand(1).item()) == a
