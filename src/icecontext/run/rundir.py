"""Run directories: where a run's files go, and whether a run resumes.

Layout of ``<output.root>/<output.name>/``::

    config.yaml            resolved configuration (validated, overrides applied)
    provenance.json        package versions, git commit, seed, command line, host
    checkpoints/best.ckpt  weights with the best validation combined score
    checkpoints/last.ckpt  the latest state (weights, optimiser, schedule, loop counters)
    logs/metrics.csv       every logged value (Lightning CSVLogger)
    logs/events.*          the same for TensorBoard (``tensorboard --logdir <run>/logs``)
    curves.png             training loss and validation scores
    metrics.json           final summary: best score and epoch, last scores, paths
    ranks/                 per-process diagnostics (``train.record_samples``)

Both checkpoints hold the resolved configuration, so ``evaluate`` and ``predict`` need
nothing but the checkpoint.

Resuming: with ``train.resume=auto`` a run directory that already has ``last.ckpt``
continues from it, provided the settings that define the experiment (seed, data, model,
optimiser, schedule, losses) are unchanged; the stopping criteria, hardware and logging
options may change (e.g. raise ``train.max_epochs`` to train longer).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from icecontext.errors import ConfigError
from icecontext.run.config import RunConfig

DEFAULT_RUN_NAME = "run"

# Keys that may change between a run and its resumption (dotted prefixes).
RESUMABLE_CHANGES: tuple[str, ...] = (
    "output.",
    "trainer.",
    "train.max_epochs",
    "train.max_steps",
    "train.max_minutes",
    "train.resume",
    "train.log_every_n_steps",
    "train.progress_bar",
    "train.record_samples",
    "train.validation.",
    "data.num_workers",
    "data.workers",
)


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory."""

    path: Path

    @property
    def checkpoints(self) -> Path:
        """Folder of the checkpoints."""
        return self.path / "checkpoints"

    @property
    def best(self) -> Path:
        """Best checkpoint (highest validation combined score)."""
        return self.checkpoints / "best.ckpt"

    @property
    def last(self) -> Path:
        """Latest checkpoint (resume point)."""
        return self.checkpoints / "last.ckpt"

    @property
    def logs(self) -> Path:
        """Folder of the CSV and TensorBoard logs."""
        return self.path / "logs"

    @property
    def metrics_csv(self) -> Path:
        """Every logged value, one row per logging step."""
        return self.logs / "metrics.csv"

    @property
    def curves(self) -> Path:
        """Training-curve figure."""
        return self.path / "curves.png"

    @property
    def summary(self) -> Path:
        """Final summary JSON."""
        return self.path / "metrics.json"

    @property
    def config(self) -> Path:
        """Resolved configuration."""
        return self.path / "config.yaml"

    @property
    def ranks(self) -> Path:
        """Per-process diagnostics."""
        return self.path / "ranks"


def run_dir_for(cfg: RunConfig) -> RunDir:
    """Return the run directory of a configuration (not created)."""
    return RunDir(Path(cfg.output.root) / (cfg.output.name or DEFAULT_RUN_NAME))


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Return the dotted keys whose values differ and that a resumed run may not change."""
    a, b = _flatten(saved), _flatten(current)
    keys = sorted(set(a) | set(b))
    return [
        k
        for k in keys
        if a.get(k) != b.get(k) and not any(k.startswith(p) for p in RESUMABLE_CHANGES)
    ]


def resume_checkpoint(cfg: RunConfig, run: RunDir) -> Path | None:
    """Decide whether the run resumes, and from which checkpoint.

    Args:
        cfg: The resolved configuration of the run about to start.
        run: Its run directory.

    Returns:
        ``run.last`` when resuming, ``None`` for a fresh start.

    Raises:
        ConfigError: ``train.resume`` when the directory holds checkpoints and resuming
            is off; ``output.name`` when the directory's saved configuration differs in
            a setting that defines the experiment (the message lists the keys).
    """
    has_ckpt = run.last.exists() or run.best.exists()
    if not has_ckpt:
        return None
    if cfg.train.resume == "never":
        raise ConfigError(
            "train.resume",
            f"run directory {run.path} already holds checkpoints; choose another "
            "output.name, delete the folder, or set train.resume=auto to continue it",
        )
    if not run.last.exists():
        return None
    if run.config.exists():
        saved = yaml.safe_load(run.config.read_text(encoding="utf-8")) or {}
        diff = config_differences(saved, cfg.model_dump(mode="json"))
        if diff:
            raise ConfigError(
                "output.name",
                f"run directory {run.path} was trained with different settings "
                f"({', '.join(diff[:8])}{' ...' if len(diff) > 8 else ''}); resuming would mix "
                "two experiments: choose another output.name or restore those settings",
            )
    return run.last


def rank_env() -> tuple[int, int]:
    """``(global_rank, world_size)`` from the launcher's environment (before DDP starts)."""
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) or 0)
    world = int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")) or 1)
    return rank, world
