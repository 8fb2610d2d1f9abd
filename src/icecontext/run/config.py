"""Run configuration: the ``train``, ``trainer`` and ``output`` sections, and :class:`RunConfig`.

:class:`RunConfig` composes ``data`` + ``model`` + ``train`` + ``trainer`` + ``seed`` +
``output``.

A run config is one YAML file::

    seed: 0
    data: {store: data/quick.zarr, features: [sar, amsr2:18.7], patch_size: 128, ...}
    model: ../model/small_cpu.yaml        # a section may be a path to another YAML file
    train:
      max_epochs: 20
      optimizer: {name: adamw, lr: 0.001, weight_decay: 0.0001}
      scheduler: {name: cosine, warmup_steps: 50}
      loss: {task_weights: {SIC: 1, SOD: 1, FLOE: 1}, class_weights: none}
      validation: {every_n_epochs: 1, tile: 512, overlap: 64}
    trainer: {accelerator: auto, devices: 1, precision: auto}
    output: {root: runs, name: my-run}

:func:`load_run_config` reads it, replaces section paths by the files' contents,
applies dotted overrides (``train.optimizer.lr=3e-4``) and validates everything:
unknown keys, wrong types and impossible combinations raise
:class:`~icecontext.errors.ConfigError` naming the dotted key. That includes atrous
rates whose taps would read only zero padding in the training patches
(:func:`check_run_context`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from icecontext.config import Section, apply_overrides, load_yaml, validate
from icecontext.data.config import DataConfig
from icecontext.errors import ConfigError
from icecontext.models.config import ModelConfig, resolve_in_channels
from icecontext.models.trained_context import TrainedContext, check_trained_context

OptimizerName = Literal["adamw", "sgd"]
SchedulerName = Literal["cosine", "plateau", "constant"]
SicLossName = Literal["auto", "mse", "cross_entropy"]
ClassWeighting = Literal["none", "inverse", "sqrt_inverse"]
Precision = Literal["auto", "32", "bf16-mixed", "16-mixed"]
Accelerator = Literal["auto", "cpu", "gpu"]
Strategy = Literal["auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"]
ResumePolicy = Literal["auto", "never"]
ValPrecision = Literal["auto", "32", "bf16"]


def _as_text(value: Any) -> Any:
    """YAML and command-line overrides read ``precision: 32`` as a number."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class OptimizerConfig(Section):
    """Optimiser.

    Attributes:
        name: ``adamw`` or ``sgd``.
        lr: Peak learning rate.
        weight_decay: Decoupled (AdamW) or L2 (SGD) weight decay; not applied to biases
            and normalisation parameters.
        momentum: SGD momentum.
        nesterov: SGD Nesterov momentum.
        betas: AdamW betas.
    """

    name: OptimizerName = "adamw"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 1e-4
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)


class SchedulerConfig(Section):
    """Learning-rate schedule.

    Attributes:
        name: ``cosine`` (per step, to ``min_lr_ratio * lr`` at the last step),
            ``plateau`` (multiply by ``factor`` when the validation combined score has
            not improved for ``patience`` validations) or ``constant``.
        warmup_steps: Linear warm-up from ``warmup_start * lr`` over this many steps.
        warmup_start: Starting fraction of the warm-up.
        min_lr_ratio: Final learning rate of the cosine schedule, as a fraction of ``lr``.
        factor: Plateau reduction factor.
        patience: Plateau patience in validations.
    """

    name: SchedulerName = "cosine"
    warmup_steps: NonNegativeInt = 0
    warmup_start: float = Field(default=0.01, gt=0.0, le=1.0)
    min_lr_ratio: float = Field(default=0.01, ge=0.0, le=1.0)
    factor: float = Field(default=0.5, gt=0.0, lt=1.0)
    patience: NonNegativeInt = 2


class TaskWeights(Section):
    """Weight of each task's loss in the total."""

    SIC: NonNegativeFloat = 1.0
    SOD: NonNegativeFloat = 1.0
    FLOE: NonNegativeFloat = 1.0

    @model_validator(mode="after")
    def _not_all_zero(self) -> TaskWeights:
        if self.SIC == self.SOD == self.FLOE == 0:
            raise ConfigError("train.loss.task_weights", "all task weights are 0: nothing to learn")
        return self


class LossConfig(Section):
    """Losses.

    Attributes:
        sic: ``mse`` (regression on the class index; needs ``model.sic_mode=regression``),
            ``cross_entropy`` (needs ``classification``) or ``auto`` (follows the model).
        task_weights: Weight of each task's loss.
        class_weights: ``none``, ``inverse`` or ``sqrt_inverse`` class frequency, from
            the training store's class histograms (per task).
    """

    sic: SicLossName = "auto"
    task_weights: TaskWeights = Field(default_factory=TaskWeights)
    class_weights: ClassWeighting = "none"


class ValidationConfig(Section):
    """Full-scene validation with the tiled predictor.

    Attributes:
        every_n_epochs: Validate after every this many epochs.
        tile: Tile side in pixels (at the data's resolution).
        overlap: Context margin around each tile core in pixels; ``auto`` = the
            radius of the model's theoretical receptive field capped at ``tile / 16``;
            ``rf`` = the whole radius (validation equals a single pass, slower).
        batch: Tiles per forward pass.
        precision: ``auto`` (bf16 when training in bf16), ``32`` or ``bf16``.
        max_scenes: Validate on at most this many validation scenes (``null`` = all).
    """

    every_n_epochs: PositiveInt = 1
    tile: PositiveInt = 512
    overlap: NonNegativeInt | Literal["auto", "rf"] = "auto"
    batch: PositiveInt = 4
    precision: ValPrecision = "auto"

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        # one spelling everywhere: the trainer's bf16-mixed is accepted here too
        value = _as_text(value)
        return "bf16" if value == "bf16-mixed" else value

    max_scenes: PositiveInt | None = None


class TrainConfig(Section):
    """Optimisation loop.

    Attributes:
        max_epochs: Stop after this many epochs (an epoch is ``data`` patches per epoch).
        max_steps: Stop after this many optimiser steps (``null`` = no limit).
        max_minutes: Stop after this much wall time (``null`` = no limit); the run is
            still resumable and ``last.ckpt`` is written when it stops.
        optimizer: Optimiser options.
        scheduler: Learning-rate schedule.
        loss: Loss options.
        validation: Full-scene validation options.
        grad_clip: Clip the gradient norm (or value) at this (``null`` = no clipping).
        grad_clip_algorithm: ``norm`` or ``value``.
        accumulate_grad_batches: Batches per optimiser step.
        resume: ``auto`` resumes from the run directory's ``last.ckpt`` when it exists;
            ``never`` refuses to reuse a run directory that holds checkpoints.
        log_every_n_steps: Logging interval of the training losses.
        progress_bar: Show progress bars.
        deterministic: ``auto`` = deterministic algorithms on CPU, warn-only on GPU.
        record_samples: Write per-rank fingerprints of the batches seen and of the final
            weights to ``ranks/`` (diagnostics for the multi-process tests).
    """

    max_epochs: PositiveInt | None = 10
    max_steps: PositiveInt | None = None
    max_minutes: PositiveFloat | None = None
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    grad_clip: PositiveFloat | None = 1.0
    grad_clip_algorithm: Literal["norm", "value"] = "norm"
    accumulate_grad_batches: PositiveInt = 1
    resume: ResumePolicy = "auto"
    log_every_n_steps: PositiveInt = 10
    progress_bar: bool = True
    deterministic: Literal["auto"] | bool = "auto"
    record_samples: bool = False

    @model_validator(mode="after")
    def _has_a_stop(self) -> TrainConfig:
        if self.max_epochs is None and self.max_steps is None and self.max_minutes is None:
            raise ConfigError(
                "train.max_epochs",
                "training would never stop: set train.max_epochs, train.max_steps or "
                "train.max_minutes",
            )
        return self


class TrainerConfig(Section):
    """Hardware and scale-out (passed to Lightning's ``Trainer``).

    Attributes:
        accelerator: ``auto`` (GPU when present), ``cpu`` or ``gpu``.
        devices: Devices per node (``auto`` = all visible GPUs, or 1 CPU process).
        num_nodes: Nodes (multi-node DDP; Lightning reads SLURM/torchrun variables).
        strategy: ``auto`` (DDP when more than one process), ``ddp`` (one process per
            device, launched by Lightning or by ``srun``/``torchrun``), ``ddp_spawn``
            or ``ddp_find_unused_parameters_true``.
        precision: ``auto`` (bf16-mixed on GPUs and CPUs with native bf16, else 32),
            ``32``, ``bf16-mixed`` or ``16-mixed`` (float16 with a gradient scaler; GPU only).
        sync_batchnorm: Synchronise batch-norm statistics across processes.
        threads: Torch CPU threads per process (``null`` = torch's default).
        channels_last: Train in the channels-last memory layout (model and batches):
            ``auto`` = on a GPU, and on a CPU in bf16 (oneDNN's bf16 convolutions need
            it); float32 CPU training keeps the default layout.
        compile: Run the training steps' network through ``torch.compile``: ``auto`` =
            on a GPU. Validation stays eager. If compiling fails, the run says why and
            trains without it.
    """

    accelerator: Accelerator = "auto"
    devices: PositiveInt | Literal["auto"] = 1
    num_nodes: PositiveInt = 1
    strategy: Strategy = "auto"
    precision: Precision = "auto"
    sync_batchnorm: bool = False
    threads: PositiveInt | None = None
    channels_last: Literal["auto"] | bool = "auto"
    compile: Literal["auto"] | bool = "auto"

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        # one spelling everywhere: bf16 and 16 (as on the command line) mean the mixed modes
        value = _as_text(value)
        return {"bf16": "bf16-mixed", "16": "16-mixed"}.get(value, value)

    @model_validator(mode="after")
    def _check_scale_out(self) -> TrainerConfig:
        single = self.devices == 1 and self.num_nodes == 1
        if self.strategy != "auto" and single:
            raise ConfigError(
                "trainer.strategy",
                f"'{self.strategy}' runs one process per device but trainer.devices=1 and "
                "trainer.num_nodes=1; set trainer.devices (e.g. 2 or auto) or "
                "trainer.num_nodes, or use strategy=auto",
            )
        if self.sync_batchnorm and single:
            raise ConfigError(
                "trainer.sync_batchnorm",
                "synchronising batch norm needs several processes (trainer.devices > 1 or "
                "trainer.num_nodes > 1)",
            )
        if self.precision == "16-mixed" and self.accelerator == "cpu":
            raise ConfigError(
                "trainer.precision",
                "16-mixed (float16 with a gradient scaler) needs a GPU; on CPU use bf16-mixed "
                "(CPUs with native bf16) or 32",
            )
        return self


class OutputConfig(Section):
    """Where the run directory goes.

    Attributes:
        root: Folder holding run directories.
        name: Run directory name under ``root``; ``null`` = the config file's stem
            (so running the same config again resumes the same run).
    """

    root: Path = Path("runs")
    name: str | None = None

    @model_validator(mode="after")
    def _check_name(self) -> OutputConfig:
        bad = self.name is not None and (not self.name or "/" in self.name)
        if bad or self.name in {".", ".."}:
            raise ConfigError("output.name", f"must be a plain folder name, got {self.name!r}")
        return self


class RunConfig(Section):
    """A complete training run.

    Attributes:
        seed: Seed of everything (weights, sampling, augmentation, dropout).
        data: Data pipeline (``icecontext.data.config.DataConfig``).
        model: Network (``icecontext.models.config.ModelConfig``).
        train: Optimisation loop.
        trainer: Hardware and scale-out.
        output: Run directory.
    """

    seed: NonNegativeInt = 0
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="after")
    def _check_combination(self) -> RunConfig:
        resolve_in_channels(self.model, self.data.features)
        sic = self.train.loss.sic
        if sic == "mse" and self.model.sic_mode != "regression":
            raise ConfigError(
                "train.loss.sic",
                "mse needs model.sic_mode=regression (one SIC output); use cross_entropy "
                "or auto for classification",
            )
        if sic == "cross_entropy" and self.model.sic_mode != "classification":
            raise ConfigError(
                "train.loss.sic",
                "cross_entropy needs model.sic_mode=classification (11 SIC outputs); use mse "
                "or auto for regression",
            )
        return self

    @property
    def sic_loss(self) -> Literal["mse", "cross_entropy"]:
        """The SIC loss actually used."""
        if self.train.loss.sic != "auto":
            return self.train.loss.sic
        return "mse" if self.model.sic_mode == "regression" else "cross_entropy"


# Options holding file paths: relative values in a config file are taken from the file's
# folder; relative values given as command-line overrides from the working directory.
# (output.root is always relative to the working directory: runs/ lands where you are.)
PATH_OPTIONS: tuple[str, ...] = (
    "data.root",
    "data.store",
    "data.test_root",
    "data.splits.train",
    "data.splits.val",
    "data.splits.test",
    "model.encoder.pretrained",
)


def _absolutise(data: dict[str, Any], option: str, base: Path) -> None:
    """Make the path at dotted ``option`` absolute against ``base`` (in place)."""
    *parents, leaf = option.split(".")
    node: Any = data
    for p in parents:
        node = node.get(p) if isinstance(node, dict) else None
        if node is None:
            return
    if not isinstance(node, dict):
        return
    value = node.get(leaf)
    # Scene lists may be inline lists, and test may be the keyword 'official'.
    if isinstance(value, str) and value and value != "official" and not Path(value).is_absolute():
        node[leaf] = str(base / value)


def _absolutise_all(data: dict[str, Any], base: Path, prefix: str = "") -> None:
    for option in PATH_OPTIONS:
        if prefix:
            if not option.startswith(prefix + "."):
                continue
            _absolutise(data, option[len(prefix) + 1 :], base)
        else:
            _absolutise(data, option, base)


def resolve_section_files(data: dict[str, Any], base_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Replace sections given as file paths by the mappings those files hold.

    ``model: ../model/small_cpu.yaml`` loads that file (relative to ``base_dir``); when
    the file has a top-level key named like the section (``model:``), its value is
    used, otherwise the whole file. Relative paths inside it are taken from its folder.

    Raises:
        ConfigError: Naming the section if the file is missing or not a mapping.
    """
    out = dict(data)
    for key in ("data", "model", "train", "trainer", "output"):
        value = out.get(key)
        if isinstance(value, str | os.PathLike):
            path = Path(base_dir) / Path(value)
            if not path.is_file():
                raise ConfigError(key, f"section file '{path}' does not exist")
            try:
                loaded = load_yaml(path)
            except ConfigError as exc:
                raise ConfigError(key, exc.problem) from None
            if key in loaded and isinstance(loaded[key], dict):
                loaded = loaded[key]
            _absolutise_all(loaded, path.resolve().parent, prefix=key)
            out[key] = loaded
        elif isinstance(value, dict):
            value = dict(value)
            _absolutise_all(value, Path(base_dir).resolve(), prefix=key)
            out[key] = value
    return out


def _absolute_overrides(overrides: list[str] | tuple[str, ...]) -> list[str]:
    out = []
    cwd = Path.cwd()
    for text in overrides:
        key, sep, value = text.partition("=")
        if sep and key.strip() in PATH_OPTIONS:
            v = value.strip()
            if (
                v
                and v not in ("null", "~", "official")
                and not v.startswith("[")
                and (not Path(v).is_absolute())
            ):
                text = f"{key}={cwd / v}"
        out.append(text)
    return out


def check_run_context(cfg: RunConfig) -> TrainedContext:
    """Refuse ASPP rates that no training patch trains; warn about those trained on under half.

    :func:`~icecontext.models.trained_context.check_trained_context` for the run's model
    at ``data.patch_size``. Pure arithmetic on the config: no model, no data.

    Returns:
        The shares per task and rate, for the run's records.

    Raises:
        ConfigError: ``model.aspp.rates`` (or ``model.task_rates.<task>``) when a rate's
            taps read only zero padding in the training patches, unless
            ``model.allow_untrained_taps`` is true.
    """
    return check_trained_context(cfg.model, cfg.data.patch_size)


def load_run_config(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Load, override and validate a run configuration.

    Args:
        path: YAML file (optional when ``base`` is given).
        overrides: ``key.sub=value`` strings, applied in order after the file.
        base: A mapping to start from (the file's keys replace its top-level keys).

    Returns:
        The validated configuration, with every data/model path absolute (file paths
        from the file's folder, override paths from the working directory). When
        ``output.name`` is unset it is set to the config file's stem.

    Raises:
        ConfigError: Naming the dotted key of the first problem, including untrained
            atrous rates (:func:`check_run_context`).
    """
    raw: dict[str, Any] = dict(base or {})
    base_dir = Path.cwd()
    if path is not None:
        raw.update(load_yaml(path))
        base_dir = Path(path).resolve().parent
    raw = resolve_section_files(raw, base_dir)
    raw = apply_overrides(raw, _absolute_overrides(overrides))
    if path is not None:
        output = raw.setdefault("output", {})
        if isinstance(output, dict) and output.get("name") is None:
            output["name"] = Path(path).stem
    cfg = validate(RunConfig, raw)
    check_run_context(cfg)
    return cfg
