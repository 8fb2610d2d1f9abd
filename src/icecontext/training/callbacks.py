"""Lightning callbacks of icecontext training.

* :class:`LossBar` is the progress bar: it shows the step loss without reading it back
  to the host every step;
* :class:`FinalCheckpoint` writes ``last.ckpt`` when training stops between
  validations (``max_steps`` or ``max_minutes`` reached mid-epoch), so the resume point
  is always the final state;
* :class:`FlushLogs` writes the logs to disk before each checkpoint, so a killed run
  keeps its log up to its resume point;
* :class:`RankRecord` writes, per process, fingerprints of the samples it trained on
  and a digest of its final weights (the multi-process tests compare them);
* :class:`StopOnSignal` turns SIGTERM (what SLURM and Kubernetes send before a kill)
  and SIGINT (Ctrl+C) into a stop at the next step with a resumable ``last.ckpt``;
* :class:`StepTimer` measures step time and the part of it spent waiting for data
  (used by ``benchmarks/train.py``).
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

from icecontext.atomic import write_text_atomic
from icecontext.errors import Interrupted
from icecontext.signals import handling_signals, install


class LossBar(TQDMProgressBar):
    """Lightning's progress bar, showing the step loss at its refreshes only.

    A metric logged with ``prog_bar=True`` is read back to the host at every step,
    refreshed or not, and on a GPU each read waits for the step to finish. This bar
    reads the logged ``train/loss`` itself, once per refresh (every ``refresh_rate``
    steps).
    """

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """The bar's metrics, with the latest step loss as ``loss``."""
        items = dict(super().get_metrics(trainer, pl_module))
        loss = trainer.callback_metrics.get("train/loss_step")
        if loss is not None:
            items["loss"] = f"{float(loss):.3g}"
        return items


class FinalCheckpoint(pl.Callback):
    """Save ``last.ckpt`` at the end of training if steps were taken since the last save.

    Args:
        path: The ``last.ckpt`` path.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._saved_step = -1

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Remember the step of the latest checkpoint written by anyone."""
        self._saved_step = trainer.global_step

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write ``last.ckpt`` when the final steps are not in a checkpoint yet."""
        if trainer.global_step > 0 and trainer.global_step != self._saved_step:
            trainer.save_checkpoint(self.path)  # every rank calls; rank 0 writes


class FlushLogs(pl.Callback):
    """Write buffered log rows to disk after every validation.

    Lightning's CSV logger keeps rows in memory until it has 100 or the run ends; a
    killed run would lose everything since the last flush. Flushing right before the
    checkpoint is written keeps the log and the resume point consistent.
    """

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Flush every logger (they write on rank 0 only)."""
        for logger in trainer.loggers:
            logger.save()


class StopOnSignal(pl.Callback):
    """Stop training at the next step on SIGTERM or SIGINT, leaving a resumable checkpoint.

    Use :meth:`listening` around ``trainer.fit``: it installs the handlers (so a signal
    during set-up is not lost), and :meth:`on_train_start` installs them again over the
    ones Lightning registers when fitting starts (Lightning's own SIGTERM handling only
    stops at the end of an epoch or raises inside validation, with no checkpoint). After
    the signal, the next optimizer step writes ``last.ckpt`` (logs flushed first) and
    :class:`~icecontext.errors.Interrupted` is raised: exit status 143 or 130; at the
    end of an epoch, after its validation. In multi-process runs the ranks decide
    together, so all stop at the same step. A second SIGINT stops at once
    (``KeyboardInterrupt``; Lightning then exits with status 1). Data-loader workers,
    forked while the handlers are installed, inherit them and ignore the signal: their
    parent ends them.

    Args:
        path: The ``last.ckpt`` path.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.received: int | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl+C: stop now
        self.received = signum

    def listening(self) -> contextlib.AbstractContextManager[None]:
        """Install the handlers for the duration of the block, then restore the old ones."""
        return handling_signals(self._handle)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Take SIGTERM back from Lightning's handler (restored by its teardown)."""
        install(self._handle)

    def _stop_now(self, trainer: pl.Trainer) -> bool:
        """Whether any process got a signal (decided together: ranks must stop at one step)."""
        stop = self.received is not None
        if trainer.world_size > 1:
            stop = bool(trainer.strategy.reduce_boolean_decision(stop, all=False))
        return stop

    def _save_and_stop(self, trainer: pl.Trainer) -> None:
        for logger in trainer.loggers:
            logger.save()
        trainer.save_checkpoint(self.path)  # every rank calls; rank 0 writes
        raise Interrupted(
            self.received or signal.SIGTERM,  # a rank another rank's signal stopped
            f"saved {self.path} at epoch {trainer.current_epoch}, step {trainer.global_step}",
        )

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """After a signal: flush the logs, write ``last.ckpt`` and stop.

        Only where an optimizer step has just been taken (gradients accumulated over a
        partial window are not in a checkpoint), and not after the epoch's last batch:
        there the epoch's validation comes first (:meth:`on_train_epoch_end`).
        """
        last = batch_idx + 1 >= trainer.num_training_batches
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if last or not stepped or not self._stop_now(trainer):
            return
        self._save_and_stop(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A signal during the epoch's last batch or its validation: stop after them."""
        if self._stop_now(trainer):
            self._save_and_stop(trainer)


class RankRecord(pl.Callback):
    """Per-process diagnostics: samples seen and final weights digest.

    Writes ``<folder>/rank<r>.json`` with ``rank``, ``world_size``, ``samples`` (one
    fingerprint per training sample, in order) and ``weights_sha256``.

    Args:
        folder: Output folder.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write this process's record."""
        from icecontext.training.module import weights_digest

        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "global_step": trainer.global_step,
            "samples": list(getattr(pl_module, "seen_samples", [])),
            "weights_sha256": weights_digest(cast(torch.nn.Module, pl_module.model)),
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.folder / f"rank{trainer.global_rank}.json", json.dumps(record))


class StepTimer(pl.Callback):
    """Measure training step time and the time spent waiting for the next batch.

    The wait of step ``i`` is the time from the end of step ``i - 1`` to the start of
    step ``i``: Lightning fetches the next batch in between, so this is the data wait
    plus the (small) loop overhead — an upper bound on the data wait. The step time is
    from the end of step ``i - 1`` to the end of step ``i``. The first ``skip`` steps
    (start-up, worker spawn) are ignored.

    Args:
        skip: Steps to ignore at the start.
    """

    def __init__(self, skip: int = 5):
        self.skip = skip
        self.waits: list[float] = []
        self.steps: list[float] = []
        self._last_end: float | None = None
        self._start: float | None = None
        self._count = 0

    def _sync(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Record the data wait since the previous step ended."""
        self._start = time.perf_counter()
        if self._last_end is not None and self._count >= self.skip:
            self.waits.append(self._start - self._last_end)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Record the step time."""
        self._sync(pl_module)
        now = time.perf_counter()
        if self._last_end is not None and self._count >= self.skip:
            self.steps.append(now - self._last_end)
        self._last_end = now
        self._count += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Do not count validation and epoch boundaries as data wait."""
        self._last_end = None

    def summary(self) -> dict[str, float]:
        """Mean step time, steps/s and the data-wait fraction over the measured steps."""
        n = min(len(self.steps), len(self.waits))
        if n == 0:
            return {"steps": 0, "step_s": float("nan"), "steps_per_s": 0.0, "wait_fraction": 0.0}
        step = float(np.mean(self.steps[:n]))
        wait = float(np.mean(self.waits[:n]))
        return {
            "steps": n,
            "step_s": step,
            "steps_per_s": 1.0 / step,
            "wait_s": wait,
            "wait_fraction": wait / step,
        }
