"""The ``data`` configuration section: where scenes are, which channels, how patches are drawn.

Example (YAML)::

    data:
      store: stores/train-k1          # prepared with 'icecontext prepare' (or use root)
      features: [sar, incidence, distance, amsr2, era5]
      patch_size: 256
      min_valid_fraction: 0.1
      class_balance: [SOD]
      splits:
        val_count: 10                 # seeded draw from the training scenes
        test: official                # the 20 AutoICE test scenes
      batch_size: 16
      patches_per_epoch: 4000

Relative paths are resolved against the config file's folder with
:meth:`DataConfig.resolve_paths`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from icecontext.config import Section
from icecontext.data.io.format import Chart
from icecontext.data.io.geometry import Upsampling
from icecontext.data.io.variables import resolve_features
from icecontext.errors import ConfigError

SceneList = list[str] | Path


def _cuda_visible() -> bool:
    """Whether torch sees a GPU.

    Asked only when the process has imported torch: this module never imports it, so
    configs load light.
    """
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available())


def default_workers(cpu_count: int | None = None, cuda: bool | None = None) -> int:
    """Default number of DataLoader worker processes.

    With CUDA the model runs on the GPU and the CPU only feeds it: use all cores but one
    (at most 8). Without CUDA the model competes with the loader for the cores: use
    half of them (at most 4), and none on a single core.

    Args:
        cpu_count: Cores available (default ``os.cpu_count()``).
        cuda: Whether a GPU is used (default: torch sees one, when the process has
            imported torch; this module itself never imports it, so configs load light).
    """
    cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    gpu = _cuda_visible() if cuda is None else cuda
    if gpu:
        return max(1, min(8, cpus - 1))
    return min(4, cpus // 2)


def default_threads(workers: int, cpu_count: int | None = None) -> int:
    """Default number of threads reading the patches of a batch in a loading process.

    Worker processes already load in parallel: one thread each. Without workers the
    training process loads the batch itself, with up to 4 threads (the decompression and
    copies release the GIL; on 2 cores, 2 threads read 1.5x the patches of one).
    """
    if workers > 0:
        return 1
    return max(1, min(4, cpu_count if cpu_count is not None else (os.cpu_count() or 1)))


class AugmentConfig(Section):
    """Augmentations applied identically to inputs and charts of training patches."""

    flip: bool = Field(default=True, description="random horizontal and vertical flips")
    rotate: bool = Field(default=True, description="random rotation by a multiple of 90 degrees")


class SplitsConfig(Section):
    """Which scenes train, validate and test.

    Lists are scene names (``20180124T194759_dmi``; file names are accepted) or the
    path of a text file with one name per line (``#`` starts a comment).
    """

    train: SceneList | None = Field(
        default=None, description="training scenes; default: every scene not in val/test"
    )
    val: SceneList | None = Field(
        default=None, description="validation scenes; default: val_count draw"
    )
    val_count: int = Field(default=0, ge=0, description="scenes drawn at random from train for val")
    val_seed: int = Field(default=0, description="seed of the validation draw")
    test: Literal["official"] | SceneList | None = Field(
        default=None, description="test scenes, or 'official' for the 20 AutoICE test scenes"
    )

    @model_validator(mode="after")
    def _one_val_source(self) -> SplitsConfig:
        if self.val is not None and self.val_count:
            raise ConfigError(
                "data.splits.val_count", "give either an explicit val list or val_count, not both"
            )
        return self


class DataConfig(Section):
    """Data section of a training or evaluation config."""

    root: Path | None = Field(None, description="folder of _prep.nc scenes (no store)")
    store: Path | None = Field(None, description="prepared Zarr store (preferred for training)")
    test_root: Path | None = Field(
        None, description="folder of test scenes when they are not in the store/root"
    )
    features: list[str] = Field(
        default_factory=lambda: ["challenge"], description="feature selectors"
    )
    downsample: int = Field(1, ge=1, le=64, description="integer downsampling factor K")
    # 384 px: 24 feature cells at output stride 16, so the default rates 6/12/18 all train
    patch_size: int = Field(384, ge=8, le=4096, description="square patch side, pixels")
    min_valid_fraction: float = Field(
        0.1, ge=0.0, le=1.0, description="minimum share of labelled pixels in a patch"
    )
    class_balance: list[Chart] = Field(
        default_factory=list, description="charts whose rare classes are oversampled"
    )
    balance_power: float = Field(0.5, ge=0.0, le=2.0, description="class weight = freq^-power")
    scene_weighting: Literal["uniform", "labelled"] = Field(
        "labelled", description="scene choice without class balance"
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    upsampling: Upsampling = Field("nearest", description="2 km -> SAR grid: nearest|bilinear")
    coarse_on_device: Literal["auto"] | bool = Field(
        "auto",
        description="training batches carry AMSR2/ERA5 at 2 km and the training device "
        "upsamples them (same values, fewer batch bytes); auto: when training on a GPU",
    )
    splits: SplitsConfig = Field(default_factory=SplitsConfig)
    batch_size: int = Field(16, ge=1)
    workers: int | None = Field(None, ge=0, description="DataLoader workers; None = default")
    threads: int | None = Field(
        None, ge=1, description="threads reading each batch's patches; None = default"
    )
    patches_per_epoch: int = Field(2000, ge=1)
    val_patches: int = Field(256, ge=0, description="fixed validation patches per epoch")
    max_attempts: int = Field(10, ge=1, description="draws per patch to meet min_valid_fraction")

    @field_validator("features")
    @classmethod
    def _features_known(cls, value: list[str]) -> list[str]:
        resolve_features(value, option="data.features")  # raises ConfigError naming the key
        return value

    @model_validator(mode="after")
    def _has_data(self) -> DataConfig:
        if self.root is None and self.store is None:
            raise ConfigError("data.store", "set data.store (a prepared store) or data.root")
        return self

    @property
    def channels(self) -> list[str]:
        """The resolved, ordered channel names."""
        return resolve_features(self.features, option="data.features")

    @property
    def num_workers(self) -> int:
        """``workers``, or :func:`default_workers` when unset."""
        return default_workers() if self.workers is None else self.workers

    @property
    def coarse_batches(self) -> bool:
        """``coarse_on_device``, ``auto`` being on when torch sees a GPU.

        Training resolves ``auto`` from the trainer's accelerator instead (``training.fit``).
        """
        if self.coarse_on_device != "auto":
            return bool(self.coarse_on_device)
        return _cuda_visible()

    @property
    def num_threads(self) -> int:
        """``threads``, or :func:`default_threads` for :attr:`num_workers` when unset."""
        return default_threads(self.num_workers) if self.threads is None else self.threads

    def resolve_paths(self, base: str | os.PathLike[str]) -> DataConfig:
        """Return a copy with relative paths taken relative to ``base`` (a folder)."""
        base = Path(base)
        updates: dict[str, object] = {}
        for key in ("root", "store", "test_root"):
            value = getattr(self, key)
            if value is not None and not value.is_absolute():
                updates[key] = base / value
        split_updates = {
            key: base / value
            for key in ("train", "val", "test")
            if isinstance(value := getattr(self.splits, key), Path) and not value.is_absolute()
        }
        updates["splits"] = self.splits.model_copy(update=split_updates)
        return self.model_copy(update=updates)
