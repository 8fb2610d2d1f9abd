"""What makes a run reproducible: seeding, and the record saved beside its outputs.

Every command that produces results writes ``config.yaml`` (the resolved config) and
``provenance.json`` (package versions, git commit, seed, command line, host) into its
output folder through :func:`write_run_record`.
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from icecontext.atomic import write_text_atomic
from icecontext.config import dump_config

RECORDED_PACKAGES = (
    "icecontext",
    "torch",
    "torchvision",
    "lightning",
    "timm",
    "numpy",
    "xarray",
    "zarr",
    "netCDF4",
    "h5netcdf",
    "rasterio",
    "scikit-learn",
    "grad-cam",
)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (when installed) torch, including CUDA."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - global state used by third-party code
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.manual_seed(seed)


def package_versions() -> dict[str, str]:
    """Return the installed versions of the packages results depend on."""
    out: dict[str, str] = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(path: str | os.PathLike[str] | None = None) -> str | None:
    """Return the git commit of the source tree (with ``-dirty``), or ``None`` outside git."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def provenance(seed: int | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the provenance record of a run."""
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "command": sys.argv,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "host": platform.node(),
        "platform": platform.platform(),
        **(extra or {}),
    }


def write_run_record(
    out_dir: str | os.PathLike[str],
    cfg: BaseModel | None,
    seed: int | None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``config.yaml`` and ``provenance.json`` into ``out_dir`` (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg is not None:
        write_text_atomic(out / "config.yaml", dump_config(cfg))
    write_text_atomic(
        out / "provenance.json", json.dumps(provenance(seed, extra), indent=2, default=str) + "\n"
    )
