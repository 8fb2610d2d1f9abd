"""Programmatic training: ``train(cfg) -> RunResult``.

:func:`train` builds everything a run needs from a :class:`RunConfig`: the run
directory (with the resolved config and provenance), the data module, the Lightning
module, the trainer (precision, devices, DDP, loggers, checkpoints) and, after
fitting, the training curves and a JSON summary. It resumes from ``last.ckpt`` when
the run directory has one (see :mod:`icecontext.run.rundir`).

Multi-process runs (``trainer.devices > 1`` or ``trainer.num_nodes > 1``) must start
from a script or command (``icecontext train``, ``python -m ...``, ``srun``,
``torchrun``): Lightning's DDP launcher re-executes the command line once per extra
process, and every process runs :func:`train` up to ``trainer.fit``. Only rank 0 writes
the run record, logs, curves and summary.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only

from icecontext.atomic import write_text_atomic
from icecontext.data.io.format import CHARTS, N_CLASSES
from icecontext.errors import ConfigError, DataError
from icecontext.inference.checkpoint import resume_point
from icecontext.inference.predictor import cpu_has_native_bf16
from icecontext.provenance import seed_everything, write_run_record
from icecontext.run.config import RunConfig, check_run_context
from icecontext.run.rundir import RunDir, resume_checkpoint, run_dir_for
from icecontext.training.callbacks import (
    FinalCheckpoint,
    FlushLogs,
    LossBar,
    RankRecord,
    StopOnSignal,
)
from icecontext.training.checkpoint_io import AtomicCheckpointIO
from icecontext.training.losses import class_weights_from_histogram
from icecontext.training.module import IceChartModule, SceneIndexDataset
from icecontext.training.optim import MONITOR

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger

log = logging.getLogger(__name__)

# Lightning 2.6 calls a torch pytree API that torch deprecates, once per batch transfer;
# nothing a user can act on
warnings.filterwarnings(
    "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
)


@dataclass
class RunResult:
    """What a finished (or stopped) run produced.

    Attributes:
        run_dir: The run directory.
        best_checkpoint: ``best.ckpt`` (``None`` if the run never validated).
        last_checkpoint: ``last.ckpt``.
        best_score: Best validation combined score.
        best_epoch: Epoch of the best score.
        last_scores: Scores of the final validation.
        epochs: Epochs completed.
        steps: Optimiser steps taken in total.
        seconds: Wall time of this invocation.
        resumed_from: Checkpoint the run resumed from, if any.
    """

    run_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path
    best_score: float | None
    best_epoch: int | None
    last_scores: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0
    steps: int = 0
    seconds: float = 0.0
    resumed_from: Path | None = None


# ----------------------------------------------------------------------------- hardware


def resolve_accelerator(cfg: RunConfig) -> str:
    """``"cpu"`` or ``"gpu"`` for ``trainer.accelerator``.

    Raises:
        ConfigError: ``trainer.accelerator`` when ``gpu`` is asked and no GPU is visible.
    """
    acc = cfg.trainer.accelerator
    if acc == "gpu" and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator", "gpu was asked but no CUDA GPU is visible")
    if acc == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return acc


def resolve_channels_last(cfg: RunConfig, accelerator: str) -> bool:
    """``trainer.channels_last``: ``auto`` is on for GPUs and for bf16 on a CPU."""
    choice = cfg.trainer.channels_last
    if choice != "auto":
        return bool(choice)
    return accelerator == "gpu" or resolve_precision(cfg, accelerator) == "bf16-mixed"


def _on_gpu_if_auto(choice: Literal["auto"] | bool, accelerator: str) -> bool:
    return accelerator == "gpu" if choice == "auto" else bool(choice)


def resolve_coarse_on_device(cfg: RunConfig, accelerator: str) -> bool:
    """``data.coarse_on_device``: ``auto`` is on for GPUs.

    On a CPU the "device" is the training process itself: the upsampling would move
    from the loader workers onto the critical path, and there is no copy to a GPU to
    save.
    """
    return _on_gpu_if_auto(cfg.data.coarse_on_device, accelerator)


def resolve_compile(cfg: RunConfig, accelerator: str) -> bool:
    """``trainer.compile``: ``auto`` is on for GPUs."""
    return _on_gpu_if_auto(cfg.trainer.compile, accelerator)


TrainPrecision = Literal["32-true", "bf16-mixed", "16-mixed"]
"""A Lightning precision as :func:`resolve_precision` resolves ``trainer.precision``."""


def resolve_precision(cfg: RunConfig, accelerator: str) -> TrainPrecision:
    """Lightning precision string for ``trainer.precision``.

    ``auto``: ``bf16-mixed`` on GPUs that support bf16 and on CPUs with native bf16,
    ``16-mixed`` (float16 with a gradient scaler) on older GPUs, else ``32-true``.

    Raises:
        ConfigError: ``trainer.precision`` for a precision the hardware cannot run.
    """
    p = cfg.trainer.precision
    gpu = accelerator == "gpu"
    gpu_bf16 = gpu and torch.cuda.is_bf16_supported()
    if p == "auto":
        if gpu:
            return "bf16-mixed" if gpu_bf16 else "16-mixed"
        return "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    if p == "32":
        return "32-true"
    if p == "16-mixed" and not gpu:
        raise ConfigError(
            "trainer.precision",
            "16-mixed (float16 with a gradient scaler) needs a GPU; on CPU use bf16-mixed "
            "(CPUs with native bf16) or 32",
        )
    if p == "bf16-mixed":
        if gpu and not gpu_bf16:
            raise ConfigError(
                "trainer.precision", "this GPU does not support bfloat16; use 16-mixed or 32"
            )
        if not gpu and not cpu_has_native_bf16():
            raise ConfigError(
                "trainer.precision",
                "bf16-mixed on this CPU would be emulated (no AVX512-BF16/AMX) and slower "
                "than float32; use precision=32",
            )
    return p


def step_autocast(cfg: RunConfig, accelerator: str) -> torch.autocast:
    """The autocast a training step runs under: what Lightning's precision plugin sets.

    For code that times or reproduces a training step outside the trainer (the
    quickstart's calibration).
    """
    precision = resolve_precision(cfg, accelerator)
    device = "cuda" if accelerator == "gpu" else "cpu"
    if precision == "bf16-mixed":
        return torch.autocast(device, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device, dtype=torch.float16)
    return torch.autocast(device, enabled=False)


ResolvedValPrecision = Literal["32", "bf16", "16"]
"""A validation precision as :func:`validation_precision` resolves it (no ``auto``)."""

_VALIDATION_UNDER: dict[str, ResolvedValPrecision] = {"bf16-mixed": "bf16", "16-mixed": "16"}
"""Validation precision by the training precision it follows (any other: ``32``)."""


def validation_precision(cfg: RunConfig, accelerator: str) -> ResolvedValPrecision:
    """``train.validation.precision`` resolved: ``auto`` follows the training precision.

    Returns:
        ``"32"``, ``"bf16"`` or ``"16"`` (float16 autocast, under ``16-mixed`` on a GPU).
    """
    val = cfg.train.validation.precision
    if val != "auto":
        return val
    return _VALIDATION_UNDER.get(resolve_precision(cfg, accelerator), "32")


# ----------------------------------------------------------------------------- data


class FullSceneDataModule(pl.LightningDataModule):
    """Training patches from the data pipeline; validation = whole scenes, by index.

    Wraps :class:`icecontext.data.loader.datamodule.IceDataModule`: its training loader (a
    rank-aware, epoch-seeded patch sampler) is used as it is, and the validation loader
    is replaced by the scene indices of :class:`SceneIndexDataset`, which the Lightning
    module turns into tiled full-scene predictions.
    """

    def __init__(self, inner: Any, n_val: int):
        super().__init__()
        self.inner = inner
        self.n_val = n_val

    def setup(self, stage: str) -> None:
        """Set up the wrapped module."""
        self.inner.setup(stage)

    def train_dataloader(self) -> Any:
        """The wrapped module's patch loader (it reads the rank from the trainer)."""
        self.inner.trainer = self.trainer
        return self.inner.train_dataloader()

    def val_dataloader(self) -> Any:
        """Validation scene indices of this process."""
        from torch.utils.data import DataLoader

        return DataLoader(SceneIndexDataset(self.n_val), batch_size=None)

    def state_dict(self) -> dict[str, Any]:
        """The resolved splits (recorded in checkpoints)."""
        return self.inner.state_dict()


def _check_store_features(cfg: RunConfig) -> None:
    if cfg.data.store is None:
        return
    from icecontext.data.store.prepared import PreparedStore

    try:
        store = PreparedStore(cfg.data.store)
    except DataError as exc:
        raise ConfigError("data.store", str(exc)) from None
    missing = [f for f in cfg.data.channels if f not in store.features]
    if missing:
        raise ConfigError(
            "data.features",
            f"feature '{missing[0]}' is not in the store {cfg.data.store}, which holds "
            f"{', '.join(store.features)}; re-run 'icecontext prepare' with it in --features "
            "or remove it from data.features",
        )
    if store.manifest.downsample != cfg.data.downsample:
        raise ConfigError(
            "data.downsample",
            f"is {cfg.data.downsample} but the store {cfg.data.store} was prepared with "
            f"--downsample {store.manifest.downsample}",
        )


def class_weights_for(cfg: RunConfig, sources: Sequence[Any]) -> dict[str, torch.Tensor | None]:
    """Per-task loss class weights from the training scenes' chart histograms.

    Raises:
        ConfigError: ``train.loss.class_weights`` if the training scenes hold no label
            of a task.
    """
    mode = cfg.train.loss.class_weights
    if mode == "none":
        return {}
    totals = {t: torch.zeros(256, dtype=torch.float64) for t in CHARTS}
    for src in sources:
        for task, hist in src.histograms().items():
            totals[task] += torch.as_tensor(hist, dtype=torch.float64)
    out: dict[str, torch.Tensor | None] = {}
    for task in CHARTS:
        try:
            out[task] = class_weights_from_histogram(totals[task].numpy(), N_CLASSES[task], mode)
        except ValueError as exc:
            raise ConfigError("train.loss.class_weights", f"{task}: {exc}") from None
    return out


# ----------------------------------------------------------------------------- trainer


def _move_previous_csv(run: RunDir) -> None:
    """Keep the CSV log of an earlier segment (Lightning's CSV logger would delete it)."""
    current = run.logs / "csv" / "metrics.csv"
    if not current.exists():
        return
    previous = run.logs / "csv_previous"
    previous.mkdir(parents=True, exist_ok=True)
    n = len(list(previous.glob("part-*.csv")))
    shutil.move(str(current), previous / f"part-{n:03d}.csv")
    for extra in (run.logs / "csv").glob("*"):
        extra.unlink()


def _process_rank() -> int:
    """This process's global rank as Lightning's rank-zero helpers see it.

    Lightning sets ``rank_zero_only.rank`` at import time and again when DDP starts; the
    attribute is not part of the function's declared type.
    """
    return int(cast(Any, rank_zero_only).rank)


def _run_callbacks(
    cfg: RunConfig, run: RunDir, has_validation: bool, extra: Sequence[pl.Callback]
) -> list[pl.Callback]:
    """Checkpointing, logging and diagnostics callbacks of a run, then ``extra``.

    ``best.ckpt`` follows the validation combined score (none without validation);
    ``last.ckpt`` is written after every epoch and once more when the run ends.
    """
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    checkpoint = ModelCheckpoint(
        dirpath=run.checkpoints,
        filename="best",
        monitor=MONITOR if has_validation else None,
        mode="max",
        save_top_k=1 if has_validation else 0,
        save_last=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    cbs: list[pl.Callback] = [
        FlushLogs(),
        checkpoint,
        LearningRateMonitor(logging_interval="step"),
        FinalCheckpoint(run.last),
    ]
    if cfg.train.progress_bar:
        # showing the loss reads it back to the host: once per logging interval, not
        # once per step (a GPU waits at each read)
        cbs.append(LossBar(refresh_rate=cfg.train.log_every_n_steps))
    if cfg.train.record_samples:
        cbs.append(RankRecord(run.ranks))
    cbs.extend(extra)
    return cbs


def _run_loggers(run: RunDir) -> list[Logger]:
    """The CSV and TensorBoard loggers, both writing under ``run.logs``."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    return [
        CSVLogger(run.logs, name="csv", version=""),
        TensorBoardLogger(run.logs, name="tensorboard", version="", default_hp_metric=False),
    ]


def _determinism(cfg: RunConfig, accelerator: str) -> bool | Literal["warn"]:
    """``train.deterministic`` resolved: ``auto`` is strict on CPU and warn-only on GPU."""
    deterministic = cfg.train.deterministic
    if deterministic == "auto":
        return True if accelerator == "cpu" else "warn"
    return deterministic


def build_trainer(
    cfg: RunConfig,
    run: RunDir,
    *,
    has_validation: bool,
    callbacks: Sequence[pl.Callback] = (),
    resuming: bool = False,
) -> pl.Trainer:
    """Build the Lightning trainer of a run.

    Args:
        cfg: The run configuration.
        run: Its run directory.
        has_validation: Whether there are validation scenes (else no validation loop).
        callbacks: Extra callbacks.
        resuming: Whether the run resumes (earlier CSV logs are kept aside).
    """
    accelerator = resolve_accelerator(cfg)
    precision = resolve_precision(cfg, accelerator)
    t = cfg.trainer
    tr = cfg.train
    if resuming and _process_rank() == 0:
        _move_previous_csv(run)
    cbs = _run_callbacks(cfg, run, has_validation, callbacks)
    devices: Any = t.devices
    if devices == "auto" and accelerator == "cpu":
        devices = 1
    return pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=precision,
        sync_batchnorm=t.sync_batchnorm,
        max_epochs=tr.max_epochs if tr.max_epochs is not None else -1,
        max_steps=tr.max_steps if tr.max_steps is not None else -1,
        max_time=timedelta(minutes=tr.max_minutes) if tr.max_minutes else None,
        check_val_every_n_epoch=tr.validation.every_n_epochs,
        limit_val_batches=None if has_validation else 0,
        num_sanity_val_steps=0,
        gradient_clip_val=tr.grad_clip,
        gradient_clip_algorithm=tr.grad_clip_algorithm,
        accumulate_grad_batches=tr.accumulate_grad_batches,
        deterministic=_determinism(cfg, accelerator),
        benchmark=False,
        log_every_n_steps=tr.log_every_n_steps,
        enable_progress_bar=tr.progress_bar,
        enable_model_summary=tr.progress_bar,
        logger=_run_loggers(run),
        callbacks=cbs,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=run.path,
    )


# ----------------------------------------------------------------------------- summary


def _write_summary(
    run: RunDir, result: RunResult, module: IceChartModule, context: dict[str, Any]
) -> None:
    data = asdict(result)
    data = {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}
    data["per_scene"] = module.last_breakdown
    for by in ("service", "month"):  # pooled over the group's pixels
        data[f"per_{by}"] = module.last_groups.get(by, [])
    data["trained_context"] = context  # which ASPP taps the patches trained (reports)
    write_text_atomic(run.summary, json.dumps(data, indent=2, default=str) + "\n")


@dataclass(frozen=True)
class _RunStart:
    """A run directory ready for fitting.

    Attributes:
        run: The run directory.
        resume: The checkpoint to resume from (``None``: a fresh run).
        context: The record of the context the patches train (for the summary).
    """

    run: RunDir
    resume: Path | None
    context: dict[str, Any]


def _start_run(cfg: RunConfig, rank0: bool) -> _RunStart:
    """Check the config, find the run directory and its resume point, write the run record.

    Raises:
        ConfigError: For rates the patches cannot train or features the store lacks,
            before the run directory exists (a refused config leaves no trace).
    """
    context = check_run_context(cfg).record()
    _check_store_features(cfg)
    run = run_dir_for(cfg)
    resume = resume_checkpoint(cfg, run)
    if resume is not None:
        epoch, step = resume_point(resume)
        if rank0:
            log.info("resuming from %s at epoch %d, step %d", resume, epoch, step)
    if rank0:
        run.path.mkdir(parents=True, exist_ok=True)
        write_run_record(
            run.path,
            cfg,
            cfg.seed,
            extra={"resumed_from": str(resume) if resume else None, "trained_context": context},
        )
    return _RunStart(run=run, resume=resume, context=context)


def _seed_process(cfg: RunConfig) -> None:
    """Set the CPU thread count and seed every generator (and the loader workers)."""
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    seed_everything(cfg.seed)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)


@dataclass(frozen=True)
class _FitData:
    """The data a run fits on.

    Attributes:
        inner: The set-up patch data module.
        train_sources: The training scenes.
        val_sources: The validation scenes (at most ``train.validation.max_scenes``).
    """

    inner: Any
    train_sources: Sequence[Any]
    val_sources: list[Any]


def _fit_data(cfg: RunConfig, datamodule: Any) -> _FitData:
    """Set up ``datamodule`` (default: built from ``cfg``) and pick the scenes of each split.

    Raises:
        ConfigError: ``data.splits.train`` when there is no training scene.
    """
    from icecontext.data.loader.datamodule import IceDataModule

    inner = datamodule
    if inner is None:
        coarse = resolve_coarse_on_device(cfg, resolve_accelerator(cfg))
        inner = IceDataModule(cfg.data.model_copy(update={"coarse_on_device": coarse}), cfg.seed)
    inner.setup("fit")
    train_sources = inner.sources("train")
    if not train_sources:
        raise ConfigError("data.splits.train", "no training scene: check the splits and the data")
    val_sources = list(inner.sources("val"))
    if cfg.train.validation.max_scenes is not None:
        val_sources = val_sources[: cfg.train.validation.max_scenes]
    return _FitData(inner=inner, train_sources=train_sources, val_sources=val_sources)


@dataclass(frozen=True)
class _Best:
    """The best checkpoint of a finished run (all ``None`` if there is none)."""

    path: Path | None
    score: float | None
    epoch: int | None


def _best_checkpoint(
    trainer: pl.Trainer, run: RunDir, *, has_validation: bool, rank0: bool
) -> _Best:
    """The best checkpoint, its exact score and epoch.

    Without validation, rank 0 (``rank0``: this process) copies ``last.ckpt`` to
    ``best.ckpt``: the final weights are the "best".
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    ckpt_cb = trainer.checkpoint_callback
    if not isinstance(ckpt_cb, ModelCheckpoint):
        ckpt_cb = None
    best_path = (
        Path(ckpt_cb.best_model_path).resolve() if ckpt_cb and ckpt_cb.best_model_path else None
    )
    best_score = None
    if ckpt_cb is not None and ckpt_cb.best_model_score is not None:
        best_score = float(ckpt_cb.best_model_score)
    if rank0 and not has_validation and run.last.exists():
        shutil.copyfile(run.last, run.best)
        best_path = run.best
    best_epoch = None
    if best_path is not None and best_path.exists():
        from icecontext.inference.checkpoint import CHECKPOINT_KEY, read_checkpoint

        best = read_checkpoint(best_path)
        best_epoch = int(best.get("epoch", -1))
        # the exact score (the callback keeps a float32 copy)
        stored = best.get(CHECKPOINT_KEY, {}).get("scores", {}).get("combined")
        if stored is not None:
            best_score = float(stored)
    return _Best(path=best_path, score=best_score, epoch=best_epoch)


def _write_outputs(
    run: RunDir, result: RunResult, module: IceChartModule, context: dict[str, Any]
) -> None:
    """Draw the training curves and write the JSON summary (rank 0)."""
    from icecontext.training.plots import plot_training_curves

    try:
        plot_training_curves(run, run.curves)
    except Exception as exc:  # a missing figure must not lose a trained model
        log.warning("could not draw the training curves: %s", exc)
    _write_summary(run, result, module, context)


def train(
    cfg: RunConfig,
    *,
    callbacks: Sequence[pl.Callback] = (),
    datamodule: Any = None,
) -> RunResult:
    """Train a model as ``cfg`` describes and return where everything went.

    Args:
        cfg: The resolved run configuration.
        callbacks: Extra Lightning callbacks (e.g. :class:`~.callbacks.StepTimer`).
        datamodule: A ready :class:`~icecontext.data.loader.datamodule.IceDataModule` (default:
            built from ``cfg.data`` and ``cfg.seed``).

    Returns:
        The run's result (checkpoints, best score, ...).

    Raises:
        ConfigError: For settings that contradict the data or the hardware, naming the key;
            for atrous rates that the training patches cannot train
            (:func:`~icecontext.run.config.check_run_context`), before anything is
            written or loaded.
        DataError: For unusable data.
    """
    t0 = time.perf_counter()
    rank0 = _process_rank() == 0  # as the run starts (DDP sets the rank again later)
    start = _start_run(cfg, rank0)
    run, resume = start.run, start.resume
    _seed_process(cfg)
    data = _fit_data(cfg, datamodule)
    features = list(data.inner.features)
    weights = class_weights_for(cfg, data.train_sources)
    module = IceChartModule(cfg, features, weights, data.val_sources)
    accelerator = resolve_accelerator(cfg)
    module.channels_last = resolve_channels_last(cfg, accelerator)
    module.compile_steps = resolve_compile(cfg, accelerator)
    dm = FullSceneDataModule(data.inner, len(data.val_sources))
    stopper = StopOnSignal(run.last)
    trainer = build_trainer(
        cfg,
        run,
        has_validation=bool(data.val_sources),
        callbacks=[stopper, *callbacks],
        resuming=resume is not None,
    )
    with stopper.listening():
        trainer.fit(module, datamodule=dm, ckpt_path=str(resume) if resume else None)

    best = _best_checkpoint(trainer, run, has_validation=bool(data.val_sources), rank0=rank0)
    result = RunResult(
        run_dir=run.path.resolve(),
        best_checkpoint=best.path,
        last_checkpoint=run.last.resolve(),
        best_score=best.score,
        best_epoch=best.epoch,
        last_scores=dict(module.last_scores),
        epochs=int(trainer.current_epoch),
        steps=int(trainer.global_step),
        seconds=time.perf_counter() - t0,
        resumed_from=resume,
    )
    if rank0:
        _write_outputs(run, result, module, start.context)
    return result


def is_global_zero() -> bool:
    """Whether this process is rank 0 (also before DDP starts, from the environment)."""
    return _process_rank() == 0 and os.environ.get("LOCAL_RANK", "0") == "0"
