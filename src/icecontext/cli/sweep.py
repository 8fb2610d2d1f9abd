"""``icecontext sweep --config configs/study/NAME.yaml``: run the spatial-context study grid.

Every point of the grid (atrous rates x per-task rates x feature set x seed) is an
ordinary training run directory under ``--runs-dir`` (default ``runs/study-<name>``).
Running the command again skips finished runs and resumes interrupted ones from their
``last.ckpt``. ``--jobs N`` trains N runs at once (one GPU each when GPUs are visible,
otherwise the CPU cores split between them); ``--shard i/n`` takes every n-th run, for
machines sharing the folder. A lock per run makes sure no run is trained twice, also by
two processes given the same shard. Exit status 1 if any run failed (the others go on).

A finished or partial run whose config the study no longer makes (another
``train.max_epochs``, ...) is not skipped or resumed: the sweep refuses, naming the runs
and options, before it creates or trains anything (exit status 2), unless
``--rerun-changed`` moves those run directories to ``<runs>/.sweep/replaced/`` and trains
them again. ``--launcher slurm`` submits the grid as a SLURM job array (one shard per
task) through submitit and returns; tasks that hit their time limit or are preempted
save and requeue. See docs/study.md.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from icecontext.atomic import check_writable
from icecontext.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument(
        "--config", "-c", type=Path, required=True, help="study config (configs/study/*.yaml)"
    )
    parser.add_argument("--jobs", "-j", type=int, default=1, help="runs trained at once")
    parser.add_argument("--shard", default="1/1", help="i/n: train every n-th run from the i-th")
    parser.add_argument(
        "--runs-dir", type=Path, help="folder of the run directories (default: study.runs_dir)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="list the runs and their state; train nothing"
    )
    parser.add_argument(
        "--rerun-changed",
        action="store_true",
        help="retrain finished or partial runs whose config changed (old folders are moved "
        "to <runs>/.sweep/replaced/) instead of refusing them",
    )
    slurm = parser.add_argument_group(
        "SLURM (--launcher slurm: submit the grid as a job array through submitit)"
    )
    slurm.add_argument(
        "--launcher",
        choices=("local", "slurm"),
        default="local",
        help="local: train here (default); slurm: submit one array task per shard and return",
    )
    slurm.add_argument("--tasks", type=int, default=None, help="array tasks = shards (4)")
    slurm.add_argument("--partition", default=None, help="SLURM partition")
    slurm.add_argument("--gpus-per-task", type=int, default=0, help="GPUs of each task (0)")
    slurm.add_argument("--cpus-per-task", type=int, default=4, help="CPU cores of each task (4)")
    slurm.add_argument(
        "--time-min", type=int, default=240, help="time limit per task; tasks requeue (240)"
    )
    slurm.add_argument(
        "--array-parallelism", type=int, default=None, help="tasks running at once (all)"
    )
    parser.add_argument(
        "--stale-after",
        type=float,
        default=None,
        help="seconds without heartbeat after which another host's lock is abandoned (900)",
    )


def run(args: argparse.Namespace) -> int:
    """Run (or list) the shard's runs; 1 if any failed."""
    from icecontext.experiments.grid import load_study, parse_shard
    from icecontext.experiments.locking import DEFAULT_STALE_AFTER
    from icecontext.experiments.sweep import SweepOptions, SweepRunner

    logging.getLogger("lightning.pytorch").propagate = False
    study = load_study(args.config)
    index, count = parse_shard(args.shard)
    runs_dir = args.runs_dir or study.runs_dir
    options = SweepOptions(
        jobs=args.jobs,
        shard_index=index,
        shard_count=count,
        stale_after=args.stale_after or DEFAULT_STALE_AFTER,
        rerun_changed=args.rerun_changed,
    )
    runner = SweepRunner(study, runs_dir, options, log=lambda text: print(text, flush=True))
    if args.dry_run:
        plan = runner.plan()
        print(f"study '{study.section.name}': {len(plan)} runs in shard {index}/{count}")
        print(f"runs folder: {runs_dir}")
        for spec, state, _ in plan:
            task = f" task_rates={spec.task_rates}" if spec.task_rates else ""
            print(
                f"  {state:<8} {spec.run_id:<40} rates={list(spec.rates)} "
                f"features={list(spec.features)} seed={spec.seed}{task}"
            )
        changed = [c for _, _, c in plan if c is not None]
        if changed:
            what = "retrained" if args.rerun_changed else "refused without --rerun-changed"
            print(f"changed runs ({what}):")
            for c in changed:
                print(f"  {c.describe()}")
        return 0
    # a dry run only reads: a read-only runs folder can be listed
    check_writable(runs_dir, "--runs-dir" if args.runs_dir else "study.runs_dir", folder=True)
    if args.launcher == "slurm":
        return _submit(args, runner, runs_dir)
    summary = runner.run()
    status = 0
    if summary.failed:
        print(f"failed runs: {', '.join(summary.failed)} (logs in {runs_dir}/.sweep/logs)")
        status = 1
    stopped = [o.run_id for o in summary.outcomes if o.status == "interrupted"]
    if stopped:
        print(f"runs stopped by a signal (they resume next time): {', '.join(stopped)}")
        status = 1
    if summary.changed:
        print(
            f"runs whose config changed while the sweep ran (not trained): "
            f"{', '.join(summary.changed)}; run the sweep again"
        )
        status = 1
    return status


def _submit(args: argparse.Namespace, runner: Any, runs_dir: Path) -> int:
    """Validate the grid here, then submit it as a SLURM job array."""
    from icecontext.experiments.slurm import SlurmOptions, submit_sweep
    from icecontext.experiments.sweep import changed_error

    if args.shard != "1/1":
        raise ConfigError("--shard", "is chosen per array task with --launcher slurm; drop it")
    configs = runner.configs()  # an invalid grid point fails here, not on the cluster
    changed = runner.changed(configs)
    if changed and not args.rerun_changed:
        raise changed_error(changed, runs_dir)
    if changed:
        raise ConfigError("--rerun-changed", "move the changed runs aside with a local sweep first")
    options = SlurmOptions(
        tasks=args.tasks or min(4, len(configs)),
        partition=args.partition,
        gpus_per_task=args.gpus_per_task,
        cpus_per_task=args.cpus_per_task,
        time_min=args.time_min,
        parallelism=args.array_parallelism,
        jobs=args.jobs,
    )
    jobs = submit_sweep(args.config, runs_dir, options)
    ids = ", ".join(str(j.job_id) for j in jobs)
    print(f"submitted {len(jobs)} array tasks for {len(configs)} runs: {ids}")
    print(
        f"task logs: {runs_dir}/.sweep/slurm/; progress: icecontext sweep --config "
        f"{args.config} --runs-dir {runs_dir} --dry-run"
    )
    return 0
