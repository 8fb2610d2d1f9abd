"""Run a study grid as a SLURM job array, through submitit.

Each array task runs one shard of the grid (``--shard i/n`` of :mod:`.sweep`) in the
shared runs folder, so the per-run locks, the resume from ``last.ckpt`` and the
refusal of changed configs work exactly as for shards started by hand. Submitit writes
each task's stdout/stderr and pickled result under ``<runs>/.sweep/slurm/``.

Time limits and preemption: submitit asks SLURM for a USR2 signal shortly before the
time limit and on preemption; it then calls :meth:`ShardJob.checkpoint`, which stops the
running trainings through SIGTERM (each writes ``last.ckpt`` at its current step) and
requeues the task, which resumes them. Multi-GPU runs inside a task use Lightning's
SLURM environment as usual (``trainer.devices``).

Only the submission is written here; scheduling, requeueing and logs are submitit's.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icecontext.errors import ConfigError

STOP_WAIT_S = 60.0
"""How long :meth:`ShardJob.checkpoint` waits for the running trainings to save."""


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ConfigError(
            "--launcher", "slurm needs the submitit package: pip install 'icecontext[slurm]'"
        ) from None
    return submitit


@dataclass
class SlurmOptions:
    """What each array task asks SLURM for.

    Attributes:
        tasks: Array tasks (= shards of the grid); each runs its runs one after another.
        partition: SLURM partition (``None``: the cluster's default).
        gpus_per_task: GPUs of each task (its runs share them through ``jobs``).
        cpus_per_task: CPU cores of each task.
        time_min: Time limit of each task in minutes (tasks requeue when they hit it).
        parallelism: Array tasks running at once (``None``: no limit).
        jobs: Runs trained at once inside a task.
        extra: Further ``slurm_*`` parameters of submitit (e.g. ``{"slurm_account": "x"}``).
    """

    tasks: int
    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 4
    time_min: int = 240
    parallelism: int | None = None
    jobs: int = 1
    extra: dict[str, Any] | None = None


class ShardJob:
    """The callable each array task runs: one shard of the study (picklable).

    Its :meth:`checkpoint` method is what submitit calls on a time limit or preemption
    (submitit's ``Checkpointable`` protocol: any callable with that method is requeued).

    Args:
        study_path: The study config file.
        runs_dir: The shared runs folder.
        shard_count: Number of shards (array tasks).
        jobs: Runs trained at once inside the task.
        train_command: Command prefix of a training run (tests use a stand-in).
    """

    def __init__(
        self,
        study_path: Path,
        runs_dir: Path,
        shard_count: int,
        jobs: int = 1,
        train_command: list[str] | None = None,
    ):
        self.study_path = Path(study_path)
        self.runs_dir = Path(runs_dir)
        self.shard_count = shard_count
        self.jobs = jobs
        self.train_command = train_command
        self._runner: Any = None

    def __call__(self, shard_index: int) -> dict[str, list[str]]:
        """Run shard ``shard_index`` (1-based) and return the run ids per outcome."""
        from icecontext.experiments.grid import load_study
        from icecontext.experiments.sweep import SweepOptions, SweepRunner

        options = SweepOptions(
            jobs=self.jobs,
            shard_index=shard_index,
            shard_count=self.shard_count,
            train_command=tuple(self.train_command or ()),
            # submitit owns the signals: it ignores SLURM's SIGTERM (the trainings get it
            # from SLURM themselves) and calls checkpoint() on USR2
            stop_on_signals=False,
        )
        self._runner = SweepRunner(
            load_study(self.study_path),
            self.runs_dir,
            options,
            log=lambda text: print(text, flush=True),
        )
        summary = self._runner.run()
        out: dict[str, list[str]] = {}
        for o in summary.outcomes:
            out.setdefault(o.status, []).append(o.run_id)
        return out

    def checkpoint(self, shard_index: int) -> Any:
        """Time limit or preemption: let the trainings save, then requeue the same shard."""
        if self._runner is not None:
            import signal

            self._runner.request_stop(signal.SIGTERM)
            self._runner.wait_stopped(STOP_WAIT_S)
        fresh = ShardJob(
            self.study_path, self.runs_dir, self.shard_count, self.jobs, self.train_command
        )
        return _submitit().helpers.DelayedSubmission(fresh, shard_index)


def submit_sweep(
    study_path: Path,
    runs_dir: Path,
    options: SlurmOptions,
    *,
    cluster: str = "slurm",
    train_command: list[str] | None = None,
) -> list[Any]:
    """Submit the study as a job array of ``options.tasks`` shards.

    Args:
        study_path: The study config file.
        runs_dir: The shared runs folder (on a file system every node sees).
        options: Resources and array settings.
        cluster: submitit's cluster: ``"slurm"``, or ``"local"`` (subprocesses on this
            machine; the tests use it).
        train_command: Command prefix of a training run (default: ``icecontext train``).

    Returns:
        The submitit jobs, one per array task (``job.job_id``, ``job.result()``).

    Raises:
        ConfigError: Bad options, or ``slurm`` without ``sbatch`` on the PATH.
    """
    submitit = _submitit()
    if options.tasks < 1:
        raise ConfigError("--tasks", f"must be at least 1, got {options.tasks}")
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError(
            "--launcher",
            "slurm: 'sbatch' is not on the PATH; submit from a SLURM login node, or run the "
            "shards by hand with --shard i/n",
        )
    folder = Path(runs_dir) / ".sweep" / "slurm" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params: dict[str, Any] = {
        "timeout_min": options.time_min,
        "cpus_per_task": options.cpus_per_task,
        "name": f"icecontext-{Path(study_path).stem}",
    }
    if cluster == "slurm":
        params["slurm_array_parallelism"] = options.parallelism or options.tasks
        if options.partition:
            params["slurm_partition"] = options.partition
        if options.gpus_per_task:
            params["slurm_gpus_per_task"] = options.gpus_per_task
        params.update(options.extra or {})
    executor.update_parameters(**params)
    job = ShardJob(
        Path(study_path).resolve(),
        Path(runs_dir).resolve(),
        options.tasks,
        options.jobs,
        train_command,
    )
    env = {"OMP_NUM_THREADS": str(max(1, options.cpus_per_task // max(1, options.jobs)))}
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # submitit copies the submitting environment to the tasks
    try:
        return list(executor.map_array(job, list(range(1, options.tasks + 1))))
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
