"""The Lightning module: multi-task training with full-scene validation.

Training steps run the network on patch batches (``{"x", "SIC", "SOD", "FLOE"}`` from
the data pipeline, with the 2 km channels upsampled here on the device:
:class:`~icecontext.models.coarse_inputs.CoarseInputs`) and minimise the masked
multi-task loss. Validation runs the tiled
full-scene predictor over the validation scenes and scores them with the challenge
metric (:class:`~icecontext.evaluation.ChartScorer`): ``val/combined`` selects the best
checkpoint and drives the plateau schedule.

Validation is scored at **80 m** whatever ``data.downsample``: a model trained at
``K x 80 m`` predicts at that resolution, its class maps are brought to the 80 m grid by
nearest-neighbour replication (each 80 m pixel takes the class of the ``K x K`` block it
lies in: the predictor's ``classes``, as ``icecontext evaluate`` and ``predict`` use),
and they are scored against the original 80 m charts
(:func:`~icecontext.data.loader.sources.full_resolution_charts`), not the block-reduced charts
the patches are trained on. ``last_scores["score_resolution_m"]`` records it.

Validation is sharded over processes: rank ``r`` of ``w`` predicts scenes ``r, r + w,
...`` (every rank runs the same number of steps; padding steps do nothing), then the
confusion matrices are gathered and merged, so every rank logs the same pooled scores
that one process would have computed.

Reproducibility: the global torch generator (dropout) is reseeded before every training
batch from ``(seed, epoch, batch, rank)``, and the patch sampler draws patch ``i`` of
epoch ``e`` from ``(seed, e, i)`` whatever the rank or worker; hence a run resumed from
an epoch-end checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from icecontext.data.io.format import CHARTS, PIXEL_SPACING_M
from icecontext.data.loader.datamodule import steps_per_epoch
from icecontext.data.loader.sources import full_resolution_charts
from icecontext.errors import DataError
from icecontext.evaluation import ChartScorer, scene_groups
from icecontext.inference.checkpoint import CHECKPOINT_KEY, checkpoint_record
from icecontext.inference.predictor import InferencePrecision, model_overlap, predict_scene
from icecontext.inference.tiling import TileSettings
from icecontext.models.coarse_inputs import CoarseInputs
from icecontext.run.config import RunConfig
from icecontext.training.losses import MultiTaskLoss
from icecontext.training.optim import (
    MONITOR,
    build_optimizer,
    build_scheduler,
    parameter_groups,
    warmup_factor,
)

log = logging.getLogger(__name__)

VAL_KEYS = ("SIC", "SOD", "FLOE", "combined")

SCORE_RESOLUTION_M = int(PIXEL_SPACING_M)
"""Pixel size, in metres, of the grid validation scores on (the charts' own 80 m)."""


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class SceneIndexDataset(IterableDataset):
    """The validation scenes of this process, as indices (``-1`` = padding step)."""

    def __init__(self, n_scenes: int):
        self.n_scenes = n_scenes

    def _mine(self) -> list[int]:
        rank, world = _dist()
        mine = list(range(rank, self.n_scenes, world))
        per_rank = -(-self.n_scenes // world)
        return mine + [-1] * (per_rank - len(mine))

    def __iter__(self):
        return iter(self._mine())


def batch_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    """A 63-bit seed derived from ``(seed, epoch, batch, rank)`` (stable across resumes)."""
    ss = np.random.SeedSequence([seed, epoch, batch, rank, 0x1CE])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> 1)


def sample_fingerprints(x: Tensor) -> list[str]:
    """Short SHA-1 digests of each sample of a batch (to compare what processes saw)."""
    arr = x.detach().float().cpu().contiguous().numpy()
    return [hashlib.sha1(a.tobytes()).hexdigest()[:16] for a in arr]


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer, in name order."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _has_full_charts(source: Any) -> bool:
    check = getattr(source, "has_full_charts", None)
    if check is None:
        return hasattr(source, "read_full_charts")
    try:
        return bool(check())
    except DataError:
        return False


class IceChartModule(pl.LightningModule):
    """Multi-task sea ice charting.

    Args:
        cfg: The resolved run configuration.
        features: Input channel names, in model order.
        class_weights: Optional per-task class weights of the losses.
        val_sources: Full-scene validation sources (``SceneSource``); may be empty.

    Raises:
        DataError: If a downsampled validation source cannot serve its 80 m charts (a
            store prepared before store format 2), naming the scene and the fix.
    """

    def __init__(
        self,
        cfg: RunConfig,
        features: Sequence[str],
        class_weights: Mapping[str, Tensor | None] | None = None,
        val_sources: Sequence[Any] = (),
    ):
        super().__init__()
        from icecontext.models.multitask import build_model

        self.cfg = cfg
        self.features = list(features)
        self.model = build_model(cfg.model, len(self.features), seed=cfg.seed)
        self.inputs = CoarseInputs(self.features, cfg.data.upsampling)  # 2 km -> patch
        self.criterion = MultiTaskLoss(
            cfg.sic_loss, cfg.train.loss.task_weights.model_dump(), class_weights
        )
        self.val_sources = list(val_sources)
        for source in self.val_sources:
            if int(getattr(source, "downsample", 1)) > 1 and not _has_full_charts(source):
                full_resolution_charts(source, (0, 0, 1, 1))  # raises, naming the fix
        self.scorer = ChartScorer()
        self.last_scores: dict[str, Any] = {}
        self.last_breakdown: list[dict[str, Any]] = []
        self.last_groups: dict[str, list[dict[str, Any]]] = {}
        self.seen_samples: list[str] = []
        self.channels_last = False
        """Train channels-last (set by :func:`~icecontext.training.fit.train`)."""
        self.compile_steps = False
        """Compile the training steps' network (set by :func:`~icecontext.training.fit.train`)."""
        self._compiled: Any = None  # see on_fit_start

    # ------------------------------------------------------------------ forward

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Raw outputs of the network."""
        return self.model(x)

    # ------------------------------------------------------------------ training

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Reseed dropout; apply the warm-up of the plateau schedule (the others include it).

        The global torch generator is reseeded from ``(seed, epoch, batch, rank)`` before
        every batch: Lightning and the DataLoader draw from it at moments that differ
        between an uninterrupted and a resumed run (iterator creation), so a per-epoch
        seed is not enough for resumed runs to match.
        """
        torch.manual_seed(
            batch_seed(self.cfg.seed, self.current_epoch, batch_idx, self.global_rank)
        )
        sched = self.cfg.train.scheduler
        if sched.name == "plateau" and self.global_step <= sched.warmup_steps:
            factor = warmup_factor(self.global_step, sched)
            for group in self.optimizers().optimizer.param_groups:  # type: ignore[union-attr]
                group["lr"] = self.cfg.train.optimizer.lr * factor

    def on_fit_start(self) -> None:
        """Put the network in the training layout; compile it when the run asks."""
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.compile_steps:
            # a compiled view of the same network (same parameters); kept out of the
            # module tree so checkpoints keep their keys
            object.__setattr__(self, "_compiled", torch.compile(self.model))

    def _train_forward(self, x: Tensor) -> dict[str, Tensor]:
        """The network on a training batch: compiled when it compiles, else eager."""
        if self._compiled is None:
            return self.model(x)
        try:
            return self._compiled(x)
        except Exception as exc:  # no compiler, an unsupported op, ...: train eagerly
            log.warning(
                "trainer.compile: torch.compile failed (%s: %s); training continues "
                "without it (set trainer.compile: false to skip the attempt)",
                type(exc).__name__,
                str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "",
            )
            object.__setattr__(self, "_compiled", None)
            return self.model(x)  # a real error in the network raises here

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step on a patch batch."""
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        x = self.inputs(batch, layout)
        outputs = self._train_forward(x)
        loss, parts = self.criterion(outputs, {t: batch[t] for t in CHARTS})
        n = x.shape[0]
        # not prog_bar=True: Lightning would read it back to the host every step (LossBar)
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=n)
        for task, value in parts.items():
            self.log(f"train/loss_{task}", value, on_step=True, on_epoch=True, batch_size=n)
        if self.cfg.train.record_samples:
            self.seen_samples.extend(sample_fingerprints(x))
        return loss

    def configure_optimizers(self) -> Any:
        """AdamW/SGD with the configured schedule (horizon = the run's total steps)."""
        opt_cfg = self.cfg.train.optimizer
        optimizer = build_optimizer(
            parameter_groups(self.model, opt_cfg.weight_decay),
            opt_cfg,
            fused=self.device.type == "cuda",  # one kernel per step instead of one per tensor
        )
        horizon = self._total_steps()
        sched = build_scheduler(optimizer, self.cfg.train.scheduler, horizon)
        if sched is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": sched}

    def _total_steps(self) -> int | None:
        """The run's optimizer steps (``None``: no limit), computed from the config.

        What ``trainer.estimated_stepping_batches`` gives, without its side effect: it
        builds the training loader before a resumed run's loop state is restored, and
        the loader then misses its place in the epoch (``ResumableLoader``).
        """
        tr = self.cfg.train
        batches = steps_per_epoch(self.cfg.data, self.trainer.world_size)
        total = None
        if tr.max_epochs is not None:
            total = math.ceil(batches / tr.accumulate_grad_batches) * max(tr.max_epochs, 1)
        if tr.max_steps is not None:
            total = tr.max_steps if total is None else min(total, tr.max_steps)
        return total

    # ------------------------------------------------------------------ validation

    def on_validation_epoch_start(self) -> None:
        """Start a fresh scorer."""
        self.scorer = ChartScorer()

    def _overlap(self) -> int:
        val = self.cfg.train.validation
        return model_overlap(self.model, val.overlap, val.tile)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Predict one whole scene with the tiled predictor and add it to the scorer."""
        index = int(batch)
        if index < 0:
            return
        source = self.val_sources[index]
        val = self.cfg.train.validation
        ctx: contextlib.AbstractContextManager = contextlib.nullcontext()
        precision: InferencePrecision = "32"  # with "auto", the trainer's own autocast applies
        if val.precision == "32":
            ctx = torch.autocast(self.device.type, enabled=False)
        elif val.precision == "bf16":
            precision = "bf16"
        with ctx:
            pred = predict_scene(
                self.model,
                source,
                self.features,
                tiling=TileSettings(tile=val.tile, overlap=self._overlap(), batch=val.batch),
                device=self.device,
                precision=precision,
            )
        # 80 m: the prediction replicated from K x 80 m blocks against the original charts
        reference = full_resolution_charts(source)
        self.scorer.update(reference, pred.classes, groups=scene_groups(source.name))

    def on_validation_epoch_end(self) -> None:
        """Merge the scorers of all processes and log the pooled challenge scores."""
        scorer = self.scorer
        _, world = _dist()
        if world > 1:
            gathered: list[Any] = [None] * world
            torch.distributed.all_gather_object(gathered, scorer.to_dict())
            scorer = ChartScorer()
            for record in gathered:
                scorer.merge(ChartScorer.from_dict(record))
        if not scorer.groups:
            return
        scores = scorer.compute()
        self.last_scores = {k: scores[k] for k in VAL_KEYS}
        self.last_scores["score_resolution_m"] = SCORE_RESOLUTION_M
        self.last_scores["epoch"] = int(self.current_epoch)
        self.last_scores["step"] = int(self.global_step)
        # pooled scores per scene, and per service and month (from the same matrices); a
        # breakdown is a convenience: never fail validation on one
        try:
            self.last_breakdown = scorer.breakdown("scene").reset_index().to_dict("records")
        except Exception:
            self.last_breakdown = []
        try:
            self.last_groups = {
                by: scorer.breakdown(by).reset_index().to_dict("records")
                for by in ("service", "month")
            }
        except Exception:
            self.last_groups = {}
        for key in VAL_KEYS:
            value = float(scores[key])
            self.log(f"val/{key}", value, prog_bar=key == "combined", sync_dist=False)

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the resolved configuration, the channels and the latest scores."""
        checkpoint[CHECKPOINT_KEY] = checkpoint_record(
            self.cfg, self.features, self.last_scores, monitor=MONITOR
        )
