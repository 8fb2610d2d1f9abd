"""Run a study grid: resumable, parallel on one machine, shardable across machines.

Layout of the runs folder::

    <runs_dir>/
      _data/                    synthetic scenes and the prepared store (``study.synth``)
      <run_id>/                 an ordinary training run directory (``icecontext train``)
        study.json              the grid point (axes values, labels)
        study-done.json         written when the run finished (rc 0): the sweep skips it
      .sweep/configs/<id>.yaml  the resolved run config (``icecontext train --config`` it)
      .sweep/logs/<id>.log      the run's stdout and stderr
      .sweep/locks/<id>.lock    held while a process trains the run (see ``locking``)
      .sweep/failed/<id>.json   the last failure of a run (removed when it succeeds)

Each run trains in a child process (``icecontext train``), which resumes from the run
directory's ``last.ckpt`` when an earlier attempt was interrupted. On Linux the child
dies with the sweep (``PR_SET_PDEATHSIG``), so a killed sweep leaves no orphan training
in the folder and its lock becomes stale at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from icecontext.atomic import write_text_atomic
from icecontext.errors import ConfigError
from icecontext.experiments.grid import RunSpec, Study, expand, shard
from icecontext.experiments.locking import DEFAULT_STALE_AFTER, RunLock, try_lock

HEARTBEAT_S = 30.0
DONE_MARKER = "study-done.json"
SPEC_FILE = "study.json"

RunState = Literal["done", "running", "failed", "partial", "pending"]


def run_dir(runs_dir: Path, spec: RunSpec) -> Path:
    """The run directory of ``spec``."""
    return runs_dir / spec.run_id


def is_done(runs_dir: Path, spec: RunSpec) -> bool:
    """Whether the run finished (its done marker exists)."""
    return (run_dir(runs_dir, spec) / DONE_MARKER).is_file()


def _lock_path(runs_dir: Path, run_id: str) -> Path:
    return runs_dir / ".sweep" / "locks" / f"{run_id}.lock"


def run_state(runs_dir: Path, spec: RunSpec) -> RunState:
    """Status of a run as seen from the folder (for ``--dry-run`` and progress)."""
    from icecontext.experiments.locking import is_stale, read_lock

    if is_done(runs_dir, spec):
        return "done"
    lock = _lock_path(runs_dir, spec.run_id)
    owner = read_lock(lock)
    if owner is not None and not is_stale(lock, owner):
        return "running"
    if (runs_dir / ".sweep" / "failed" / f"{spec.run_id}.json").is_file():
        return "failed"
    if (run_dir(runs_dir, spec) / "checkpoints" / "last.ckpt").is_file():
        return "partial"
    return "pending"


# ----------------------------------------------------------------------------- data


def _store_features(study: Study) -> list[str]:
    feats: list[str] = []
    for sel in study.section.axes.features.values():
        feats += [f for f in sel if f not in feats]
    return feats


def prepare_data(study: Study, runs_dir: Path, log: Callable[[str], None] = print) -> Path | None:
    """Synthesise and prepare the study's data once (``study.synth``); return the store.

    Several sweep processes may start together: one prepares, the others wait for its
    ``_data/.complete`` marker. Returns ``None`` when the study has no ``synth`` section
    (the base config's ``data.store`` / ``data.root`` is used).
    """
    s = study.section.synth
    if s is None:
        return None
    from icecontext.cli.synth import write_synthetic_scene
    from icecontext.data.store import prepare_store
    from icecontext.synthetic.generator import generate_scene
    from icecontext.synthetic.params import SynthParams, resolve_scales

    data = runs_dir / "_data"
    store = data / "store.zarr"
    marker = data / ".complete"
    features = _store_features(study)
    downsample = int((study.base.get("data") or {}).get("downsample", 1))
    signature = json.dumps(
        {"synth": s.model_dump(mode="json"), "features": features, "downsample": downsample}
    )
    while True:
        if marker.is_file():
            if marker.read_text() == signature:
                return store
            raise ConfigError(
                "study.synth",
                f"{data} was made with other settings ({marker.read_text()}); use another "
                "--runs-dir or delete the folder",
            )
        lock = try_lock(data.parent / ".sweep" / "locks" / "_data.lock")
        if lock is None:
            time.sleep(2.0)  # another process is preparing
            continue
        break
    with lock:
        if marker.is_file():
            return prepare_data(study, runs_dir, log)
        scenes = data / "scenes"
        shutil.rmtree(scenes, ignore_errors=True)
        scenes.mkdir(parents=True)
        scales = resolve_scales(s.scale, option="study.synth.scale")
        n = s.train_scenes + s.val_scenes
        t0 = time.perf_counter()
        for i in range(n):
            params = SynthParams(
                height=s.height,
                width=s.width,
                service="dmi" if i % 2 == 0 else "cis",
                scales=scales,
                polygon_size_km=s.polygon_size_km,
                keep_truth_arrays=False,
            )
            write_synthetic_scene(generate_scene(params, s.seed + i), scenes, seed=s.seed + i)
            lock.heartbeat()
        log(f"[sweep] synthesised {n} scenes (scale {s.scale}) in {time.perf_counter() - t0:.0f} s")
        t0 = time.perf_counter()
        result = prepare_store(
            scenes, store, features=features, downsample=downsample, progress=False
        )
        if result.failed:
            raise ConfigError("study.synth", f"could not prepare scenes: {result.failed}")
        log(f"[sweep] prepared {store} in {time.perf_counter() - t0:.0f} s")
        write_text_atomic(marker, signature)
    return store


# ----------------------------------------------------------------------------- configs


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, last = dotted.split(".")
    for p in parents:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        elif not isinstance(child, dict):
            raise ConfigError(dotted, f"'{p}' is a value, not a section")
        node = child
    node[last] = value


def run_config(
    study: Study,
    spec: RunSpec,
    runs_dir: Path,
    store: Path | None,
    threads: int | None = None,
) -> dict[str, Any]:
    """The resolved, validated run config of ``spec`` as a JSON-friendly mapping.

    Raises:
        ConfigError: If the point of the grid makes an invalid run config (naming the key).
    """
    from icecontext.training.config import load_run_config

    raw = json.loads(json.dumps(study.base, default=str))
    for key, value in spec.overrides().items():
        _set(raw, key, value)
    if store is not None:
        _set(raw, "data.store", str(store.resolve()))
        _set(raw, "data.root", None)
        assert study.section.synth is not None
        _set(raw, "data.splits.val_count", study.section.synth.val_scenes)
    _set(raw, "output.root", str(runs_dir.resolve()))
    _set(raw, "output.name", spec.run_id)
    _set(raw, "train.resume", "auto")
    _set(raw, "train.progress_bar", False)
    if threads is not None and not (raw.get("trainer") or {}).get("threads"):
        _set(raw, "trainer.threads", threads)
    cfg = load_run_config(None, [], base=raw)
    return cfg.model_dump(mode="json")


# ----------------------------------------------------------------------------- running


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the child gets SIGKILL when the sweep process dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Outcome:
    """What happened to one run in this sweep invocation."""

    run_id: str
    status: Literal["trained", "skipped-done", "skipped-locked", "failed"]
    seconds: float = 0.0
    rc: int | None = None
    scores: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepSummary:
    """All outcomes of a sweep invocation."""

    outcomes: list[Outcome]

    def count(self, status: str) -> int:
        """Runs with this status."""
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[str]:
        """Ids of the runs that failed."""
        return [o.run_id for o in self.outcomes if o.status == "failed"]


def default_threads(jobs: int) -> int:
    """CPU threads per training process when ``jobs`` run at once."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, jobs))


def visible_gpus() -> list[str]:
    """GPU ids the sweep may hand out (``CUDA_VISIBLE_DEVICES`` order), ``[]`` without CUDA."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


class SweepRunner:
    """Runs the runs of one shard with ``jobs`` parallel slots (see module docstring).

    Args:
        study: The loaded study.
        runs_dir: Folder of the run directories.
        jobs: Parallel training processes on this machine.
        shard_index: 1-based shard of this process.
        shard_count: Number of shards.
        stale_after: Heartbeat age after which another host's lock is abandoned.
        log: Where progress lines go.
        train_command: Command prefix of a training run (default: this Python running
            ``icecontext train``); the run config path is appended after ``--config``.
    """

    def __init__(
        self,
        study: Study,
        runs_dir: Path,
        *,
        jobs: int = 1,
        shard_index: int = 1,
        shard_count: int = 1,
        stale_after: float = DEFAULT_STALE_AFTER,
        log: Callable[[str], None] = print,
        train_command: list[str] | None = None,
    ):
        if jobs < 1:
            raise ConfigError("--jobs", f"must be at least 1, got {jobs}")
        self.study = study
        self.runs_dir = Path(runs_dir)
        self.jobs = jobs
        self.specs = shard(expand(study.section.axes), shard_index, shard_count)
        self.shard_label = f"{shard_index}/{shard_count}"
        self.stale_after = stale_after
        self._log = log
        self._print_lock = threading.Lock()
        self.train_command = train_command or [
            sys.executable,
            "-m",
            "icecontext.cli.main",
            "train",
        ]
        self.gpus = visible_gpus()
        self.threads = None if self.gpus else default_threads(jobs)

    def log(self, text: str) -> None:
        """Print a progress line (thread-safe, flushed)."""
        with self._print_lock:
            self._log(text)

    def plan(self) -> list[tuple[RunSpec, RunState]]:
        """Every run of this shard with its current state."""
        return [(s, run_state(self.runs_dir, s)) for s in self.specs]

    def run(self) -> SweepSummary:
        """Prepare the data, then train every run of the shard not done elsewhere."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        store = prepare_data(self.study, self.runs_dir, self.log)
        # validate every grid point before training any: a typo fails in seconds
        configs = {
            s.run_id: run_config(self.study, s, self.runs_dir, store, self.threads)
            for s in self.specs
        }
        todo: queue.Queue[RunSpec] = queue.Queue()
        for s in self.specs:
            todo.put(s)
        outcomes: list[Outcome] = []
        total = len(self.specs)
        hardware = (
            "GPUs " + ",".join(self.gpus) if self.gpus else f"{self.threads} CPU threads each"
        )
        self.log(
            f"[sweep] {total} runs in shard {self.shard_label}, {self.jobs} at a time ({hardware})"
        )

        def worker(slot: int) -> None:
            while True:
                try:
                    spec = todo.get_nowait()
                except queue.Empty:
                    return
                outcome = self._run_one(spec, configs[spec.run_id], slot)
                with self._print_lock:
                    outcomes.append(outcome)
                    n = len(outcomes)
                self.log(f"[sweep] {n}/{total} {outcome.status:<14} {spec.run_id}{_tail(outcome)}")

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(self.jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        order = {s.run_id: i for i, s in enumerate(self.specs)}
        outcomes.sort(key=lambda o: order[o.run_id])
        summary = SweepSummary(outcomes)
        self.log(
            f"[sweep] shard {self.shard_label}: {summary.count('trained')} trained, "
            f"{summary.count('skipped-done')} already done, "
            f"{summary.count('skipped-locked')} running elsewhere, "
            f"{summary.count('failed')} failed"
        )
        return summary

    def _run_one(self, spec: RunSpec, cfg: dict[str, Any], slot: int) -> Outcome:
        if is_done(self.runs_dir, spec):
            return Outcome(spec.run_id, "skipped-done")
        lock = try_lock(
            _lock_path(self.runs_dir, spec.run_id),
            stale_after=self.stale_after,
            info={"shard": self.shard_label},
        )
        if lock is None:
            return Outcome(spec.run_id, "skipped-locked")
        try:
            if is_done(self.runs_dir, spec):  # finished between our check and the lock
                return Outcome(spec.run_id, "skipped-done")
            return self._train(spec, cfg, slot, lock)
        finally:
            lock.release()

    def _train(self, spec: RunSpec, cfg: dict[str, Any], slot: int, lock: RunLock) -> Outcome:
        meta = self.runs_dir / ".sweep"
        cfg_path = meta / "configs" / f"{spec.run_id}.yaml"
        write_text_atomic(cfg_path, yaml.safe_dump(cfg, sort_keys=False))
        rdir = run_dir(self.runs_dir, spec)
        rdir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(rdir / SPEC_FILE, json.dumps(spec.as_record(), indent=2) + "\n")
        log_path = meta / "logs" / f"{spec.run_id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        elif self.threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        resuming = (rdir / "checkpoints" / "last.ckpt").is_file()
        self.log(
            f"[sweep] {'resume' if resuming else 'start '} {spec.run_id}"
            + (f" (GPU {env['CUDA_VISIBLE_DEVICES']})" if self.gpus else "")
        )
        t0 = time.perf_counter()
        with open(log_path, "a", encoding="utf-8") as logf:
            logf.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {socket.gethostname()}\n")
            logf.flush()
            proc = subprocess.Popen(
                [*self.train_command, "--config", str(cfg_path)],
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
            beat = time.monotonic()
            while proc.poll() is None:
                time.sleep(0.5)
                if time.monotonic() - beat > HEARTBEAT_S:
                    lock.heartbeat()
                    beat = time.monotonic()
        seconds = time.perf_counter() - t0
        failed_marker = meta / "failed" / f"{spec.run_id}.json"
        rc = proc.returncode
        metrics = rdir / "metrics.json"
        if rc == 0 and metrics.is_file():
            summary = json.loads(metrics.read_text(encoding="utf-8"))
            write_text_atomic(
                rdir / DONE_MARKER,
                json.dumps(
                    {
                        "run_id": spec.run_id,
                        "host": socket.gethostname(),
                        "finished": time.time(),
                        "seconds": seconds,
                        "steps": summary.get("steps"),
                    },
                    indent=2,
                )
                + "\n",
            )
            failed_marker.unlink(missing_ok=True)
            return Outcome(spec.run_id, "trained", seconds, rc, summary.get("last_scores") or {})
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        write_text_atomic(
            failed_marker,
            json.dumps(
                {"run_id": spec.run_id, "rc": rc, "time": time.time(), "log_tail": tail}, indent=2
            )
            + "\n",
        )
        return Outcome(spec.run_id, "failed", seconds, rc)


def _tail(o: Outcome) -> str:
    if o.status == "trained":
        s = o.scores
        score = ""
        if "combined" in s:
            score = (
                f": combined {s['combined']:.1f} (SIC {s.get('SIC', float('nan')):.1f}, "
                f"SOD {s.get('SOD', float('nan')):.1f}, FLOE {s.get('FLOE', float('nan')):.1f})"
            )
        return f" in {o.seconds:.0f} s{score}"
    if o.status == "failed":
        return f" (exit {o.rc}; see .sweep/logs and .sweep/failed)"
    return ""
