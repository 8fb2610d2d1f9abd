"""``icecontext train --config C [key=value ...]``: train a multi-task model.

The run directory (``<output.root>/<output.name>``, by default ``runs/<config stem>``)
receives the resolved config, provenance, checkpoints (``best.ckpt``, ``last.ckpt``),
CSV and TensorBoard logs, ``curves.png`` and ``metrics.json``. Running the same command
again resumes from ``last.ckpt``. Multi-GPU / multi-node: ``trainer.devices=4``,
``trainer.num_nodes=2`` (see docs/training.md).

The config is checked before anything is written: among the checks, atrous rates whose
taps would read only zero padding in the training patches are refused (unless
``model.allow_untrained_taps: true``; see docs/models.md, "Trained receptive field").
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from icecontext.atomic import check_writable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument(
        "--config", "-c", type=Path, required=True, help="run config YAML (configs/train/*.yaml)"
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (the same as train.progress_bar=false)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. train.max_epochs=5 data.store=stores/train.zarr",
    )


def run(args: argparse.Namespace) -> int:
    """Train; print the run directory and the best checkpoint."""
    from icecontext.run.config import load_run_config

    # Validated before Lightning is imported: a refused config (e.g. atrous rates that the
    # training patches cannot train) fails in seconds and leaves no run directory.
    overrides = [*args.overrides, *(["train.progress_bar=false"] if args.no_progress else [])]
    cfg = load_run_config(args.config, overrides)

    from icecontext.run.rundir import run_dir_for
    from icecontext.training.fit import is_global_zero, train

    check_writable(run_dir_for(cfg).path, "output.root", folder=True)

    # Lightning logs through its own handler; without this every line prints twice.
    logging.getLogger("lightning.pytorch").propagate = False
    if is_global_zero():
        print(f"run directory: {run_dir_for(cfg).path}", flush=True)
    result = train(cfg)
    if is_global_zero():
        if result.resumed_from:
            print(f"resumed from: {result.resumed_from}")
        score = "n/a" if result.best_score is None else f"{result.best_score:.3f}"
        print(f"best validation combined score: {score} (epoch {result.best_epoch})")
        print(f"best checkpoint: {result.best_checkpoint}")
        print(f"last checkpoint: {result.last_checkpoint}")
        print(f"training curves: {result.run_dir / 'curves.png'}")
        print(f"run directory: {result.run_dir}")
    return 0
