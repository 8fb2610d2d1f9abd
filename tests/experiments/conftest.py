"""Fixtures of the study tests: fake finished run directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml


def write_fake_run(
    runs_dir: Path,
    run_id: str,
    *,
    rates: list[int],
    features: str,
    seed: int,
    scores: dict[str, float],
    per_scene: list[dict] | None = None,
    groups: dict[str, list[dict]] | None = None,
    downsample: int = 1,
) -> Path:
    """A finished run directory as the sweep and training leave it (no checkpoints).

    ``groups`` maps ``service``/``month`` to the pooled rows training saves as
    ``per_service``/``per_month``; without it the run looks like an older one.
    """
    d = runs_dir / run_id
    d.mkdir(parents=True)
    spec = {
        "run_id": run_id,
        "config_id": run_id.rsplit("_s", 1)[0],
        "rates": rates,
        "features_label": features,
        "features": ["sar"],
        "task_rates_label": "",
        "task_rates": {},
        "seed": seed,
    }
    (d / "study.json").write_text(json.dumps(spec))
    metrics = {"last_scores": scores, "steps": 10, "per_scene": per_scene or []}
    metrics.update({f"per_{by}": rows for by, rows in (groups or {}).items()})
    (d / "metrics.json").write_text(json.dumps(metrics))
    config = {
        "data": {"features": ["sar"], "downsample": downsample},
        "model": {
            "encoder": {"name": "resnet18", "depth": "layer2", "output_stride": 8},
            "aspp": {"rates": rates, "channels": 8},
        },
    }
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    return d


@pytest.fixture(scope="session")
def fake_run():
    """``fake_run(runs_dir, run_id, **kwargs)``: see :func:`write_fake_run`."""
    return write_fake_run
