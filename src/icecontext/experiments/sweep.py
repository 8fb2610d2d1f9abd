"""Run a study grid: resumable, parallel on one machine, shardable across machines.

Layout of the runs folder::

    <runs_dir>/
      _data/                    synthetic scenes and the prepared store (``study.synth``)
      <run_id>/                 an ordinary training run directory (``icecontext train``)
        study.json              the grid point (axes values, labels) and its config hash
        study-done.json         written when the run finished (rc 0), with the config hash
      .sweep/configs/<id>.yaml  the resolved run config (``icecontext train --config`` it)
      .sweep/logs/<id>.log      the run's stdout and stderr
      .sweep/locks/<id>.lock    held while a process trains the run (see ``locking``)
      .sweep/failed/<id>.json   the last failure of a run (removed when it succeeds)
      .sweep/replaced/<id>-<time>/  a run directory set aside by ``--rerun-changed``

Each run trains in a child process (``icecontext train``), which resumes from the run
directory's ``last.ckpt`` when an earlier attempt was interrupted. On Linux the child
dies with the sweep (``PR_SET_PDEATHSIG``), so a killed sweep leaves no orphan training
in the folder and its lock becomes stale at once. SIGTERM or SIGINT stops the sweep
cleanly: no new run starts, the running ones get SIGTERM and save their checkpoints, and
:class:`~icecontext.errors.Interrupted` is raised (exit 143 or 130); the same command
continues where it stopped.

Changed configs. A finished or partial run counts (is skipped, or resumed) only while
the study still makes the config it was trained with: :func:`config_hash` of the
resolved run config, without the options of :data:`HASH_EXCLUDED` and with paths made
portable (:func:`canonical_config`), is recorded in ``study.json`` and
``study-done.json``; :func:`changed_run` compares it, and names the differing keys from
the saved ``.sweep/configs/<id>.yaml``. A sweep refuses changed runs before it creates
or trains anything (:func:`changed_error`), unless ``rerun_changed``: then each changed
run directory is moved aside (:func:`replace_run`) and trained again.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
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
from pathlib import Path, PurePath
from typing import Any, Literal

import yaml

from icecontext.atomic import write_text_atomic
from icecontext.errors import ConfigError, Interrupted
from icecontext.experiments.grid import RunSpec, Study, expand, shard
from icecontext.experiments.locking import DEFAULT_STALE_AFTER, RunLock, try_lock
from icecontext.signals import handling_signals

HEARTBEAT_S = 30.0
DONE_MARKER = "study-done.json"
SPEC_FILE = "study.json"

RunState = Literal["done", "running", "failed", "partial", "pending", "changed"]

HASH_EXCLUDED: tuple[str, ...] = (
    "trainer.threads",  # cores / --jobs of the machine that trains it
    "train.progress_bar",  # display only (the sweep turns it off)
    "train.resume",  # the child's resume policy, set by the sweep
    "data.workers",  # loader processes: batches do not depend on them (docs/training.md)
    "data.threads",  # threads reading a batch's patches: the same patches
    "output.root",  # where the runs folder is: moving the folder changes no result
)
"""Options left out of a run's config hash: they differ between invocations and machines
without changing the result (dotted keys; a key and everything under it)."""


def run_dir(runs_dir: Path, spec: RunSpec) -> Path:
    """The run directory of ``spec``."""
    return runs_dir / spec.run_id


def is_done(runs_dir: Path, spec: RunSpec) -> bool:
    """Whether the run finished (its done marker exists)."""
    return (run_dir(runs_dir, spec) / DONE_MARKER).is_file()


def _lock_path(runs_dir: Path, run_id: str) -> Path:
    return runs_dir / ".sweep" / "locks" / f"{run_id}.lock"


def run_state(runs_dir: Path, spec: RunSpec) -> RunState:
    """Status of a run as seen from the folder (for ``--dry-run`` and progress).

    Whether a done or partial run's config still matches the study is
    :func:`changed_run` (``SweepRunner.plan`` reports ``changed``).
    """
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


def store_path(study: Study, runs_dir: Path, label: str = "") -> Path | None:
    """Where :func:`prepare_data` puts the store of data variant ``label``.

    ``_data/store.zarr`` (``_data/<label>/store.zarr`` on a data axis); ``None`` without
    ``study.synth``. Known before the store exists, so run configs can be validated first.
    """
    if study.section.synth is None:
        return None
    return runs_dir / "_data" / label / "store.zarr" if label else runs_dir / "_data" / "store.zarr"


def _scene_writer(synth: Any) -> Callable[[Any, int], Any]:
    """``(params, seed) -> PhysicalScene`` for the study's kind of synthetic scene."""
    truth = synth.known_truth_params()
    if truth is None:
        from icecontext.synthetic.generator import generate_scene

        return generate_scene
    from icecontext.synthetic.known_truth import generate_known_truth_scene

    return lambda params, seed: generate_known_truth_scene(params, truth, seed)


def prepare_data(
    study: Study, runs_dir: Path, log: Callable[[str], None] = print, label: str = ""
) -> Path | None:
    """Synthesise and prepare the data of variant ``label`` once; return the store.

    Several sweep processes may start together: one prepares, the others wait for its
    ``.complete`` marker. Returns ``None`` when the study has no ``synth`` section
    (the base config's ``data.store`` / ``data.root`` is used).
    """
    s = study.section.synth_for(label)
    store = store_path(study, runs_dir, label)
    if s is None or store is None:
        return None
    from icecontext.data.store.prepare import prepare_store
    from icecontext.synthetic.files import write_synthetic_scene
    from icecontext.synthetic.params import resolve_scales, set_scene_params

    data = store.parent
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
        lock = try_lock(runs_dir / ".sweep" / "locks" / f"_data{'-' + label if label else ''}.lock")
        if lock is None:
            time.sleep(2.0)  # another process is preparing
            continue
        break
    with lock:
        if marker.is_file():
            return prepare_data(study, runs_dir, log, label)
        scenes = data / "scenes"
        shutil.rmtree(scenes, ignore_errors=True)
        scenes.mkdir(parents=True)
        scales = resolve_scales(s.scale, option="study.synth.scale")
        make_scene = _scene_writer(s)
        n = s.train_scenes + s.val_scenes
        t0 = time.perf_counter()
        for i in range(n):
            params = set_scene_params(i, s.height, s.width, scales, s.polygon_size_km)
            write_synthetic_scene(make_scene(params, s.seed + i), scenes, seed=s.seed + i)
            lock.heartbeat()
        kind = "known-truth" if s.known_truth is not None else f"scale {s.scale}"
        where = f" for data '{label}'" if label else ""
        log(f"[sweep] synthesised {n} scenes ({kind}){where} in {time.perf_counter() - t0:.0f} s")
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
    from icecontext.run.config import load_run_config

    raw = json.loads(json.dumps(study.base, default=str))
    for key, value in spec.overrides().items():
        _set(raw, key, value)
    if store is not None:
        synth = study.section.synth_for(spec.data_label)
        assert synth is not None
        _set(raw, "data.store", str(store.resolve()))
        _set(raw, "data.root", None)
        _set(raw, "data.splits.val_count", synth.val_scenes)
    _set(raw, "output.root", str(runs_dir.resolve()))
    _set(raw, "output.name", spec.run_id)
    _set(raw, "train.resume", "auto")
    _set(raw, "train.progress_bar", False)
    if threads is not None and not (raw.get("trainer") or {}).get("threads"):
        _set(raw, "trainer.threads", threads)
    cfg = load_run_config(None, [], base=raw)
    return cfg.model_dump(mode="json")


# ----------------------------------------------------------------------------- changed configs


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{dotted key: leaf}`` (an empty mapping is a leaf)."""
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def _portable_path(value: Any, runs_root: str | None) -> Any:
    """A path option as compared across machines (other values unchanged).

    Inside the runs folder (the synthetic store): relative to it, so a moved folder still
    matches. Elsewhere: the last path component, so the same store mounted at another
    place matches (a different store under the same name is not detected).
    """
    if not isinstance(value, str) or not os.path.isabs(value):
        return value
    path = PurePath(value)
    if runs_root and path.is_relative_to(runs_root):
        return "<runs>/" + path.relative_to(runs_root).as_posix()
    return "<elsewhere>/" + path.name


def canonical_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved run config that defines a run's result, flat and portable.

    Args:
        cfg: ``RunConfig.model_dump(mode="json")`` (what :func:`run_config` returns).

    Returns:
        ``{dotted key: value}`` without :data:`HASH_EXCLUDED`, with the path options
        (``data.store``, ``data.root``, ...) made portable by :func:`_portable_path`
        against the config's own ``output.root``.
    """
    from icecontext.run.config import PATH_OPTIONS

    root = (cfg.get("output") or {}).get("root")
    out: dict[str, Any] = {}
    for key, value in _flatten(cfg).items():
        if any(key == x or key.startswith(x + ".") for x in HASH_EXCLUDED):
            continue
        out[key] = _portable_path(value, root) if key in PATH_OPTIONS else value
    return out


def config_hash(cfg: dict[str, Any]) -> str:
    """SHA-256 of :func:`canonical_config` as JSON with sorted keys."""
    text = json.dumps(canonical_config(cfg), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Change:
    """One option whose value differs between a run's saved config and the study's."""

    key: str
    old: Any
    new: Any


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[Change]:
    """The options (dotted keys) whose canonical values differ, with the values as written."""
    a, b = canonical_config(saved), canonical_config(current)
    raw_a, raw_b = _flatten(saved), _flatten(current)
    missing = object()
    return [
        Change(k, raw_a.get(k, a.get(k)), raw_b.get(k, b.get(k)))
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    ]


@dataclass(frozen=True)
class ChangedRun:
    """A finished or partial run trained with a config the study no longer makes.

    Attributes:
        spec: The grid point.
        state: ``done`` (finished) or ``partial`` (has ``last.ckpt``).
        changes: The differing options; empty when the saved config is missing (only
            the recorded hash differs).
    """

    spec: RunSpec
    state: Literal["done", "partial"]
    changes: tuple[Change, ...] = ()

    def describe(self) -> str:
        """``run r1_f-sar_s0 finished with train.max_epochs=3, the study now says 5``."""
        verb = "finished" if self.state == "done" else "was started (checkpoint, not finished)"
        head = f"run {self.spec.run_id} {verb} with"
        if not self.changes:
            return (
                f"{head} another config (its recorded config hash differs and its saved "
                "config is missing, so the options cannot be named)"
            )
        parts = [
            f"{c.key}={_show(c.old)}, the study now says {_show(c.new)}" for c in self.changes[:8]
        ]
        more = f" (and {len(self.changes) - 8} more)" if len(self.changes) > 8 else ""
        return f"{head} " + "; ".join(parts) + more


def _show(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value, default=str).strip('"')


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def saved_config(runs_dir: Path, spec: RunSpec) -> dict[str, Any] | None:
    """The config a run was trained with: ``.sweep/configs/<id>.yaml``, else its ``config.yaml``."""
    for path in (
        runs_dir / ".sweep" / "configs" / f"{spec.run_id}.yaml",
        run_dir(runs_dir, spec) / "config.yaml",
    ):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict):
            return data
    return None


def _revalidated(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` through today's validation: options added since get their defaults."""
    from icecontext.run.config import load_run_config

    try:
        return load_run_config(None, [], base=cfg).model_dump(mode="json")
    except ConfigError:  # refused today (e.g. a new check): compare it as written
        return cfg


def _synth_changes(rdir: Path, synth: dict[str, Any] | None) -> list[Change]:
    """How the data settings a run recorded (``study.json: synth``) differ from ``synth``."""
    if synth is None or not (rdir / SPEC_FILE).is_file():
        return []
    recorded = _read_json(rdir / SPEC_FILE).get("synth")
    if recorded is None:  # a run of a sweep that did not record them
        return []
    old, new = _flatten(recorded), _flatten(synth)
    missing = object()
    return [
        Change(f"study.synth.{k}", old.get(k), new.get(k))
        for k in sorted(set(old) | set(new))
        if old.get(k, missing) != new.get(k, missing)
    ]


def changed_run(
    runs_dir: Path,
    spec: RunSpec,
    cfg: dict[str, Any],
    notice: Callable[[str], None] | None = None,
    synth: dict[str, Any] | None = None,
) -> ChangedRun | None:
    """Whether a finished or partial run was trained with another config than ``cfg``.

    The hash recorded in ``study-done.json`` (finished) or ``study.json`` (partial) is
    compared with :func:`config_hash` of ``cfg``. When they differ, or no hash was
    recorded (runs of older versions), the saved config (:func:`saved_config`) is
    validated again, so options added to the schema since count with their defaults,
    and compared key by key: only real differences make the run changed. A run with
    neither a hash nor a saved config cannot be checked; it counts as matching and
    ``notice`` says so. With ``synth`` (the data settings of the run's variant), data
    settings that differ from those the run recorded make it changed too: the store
    may have been rebuilt from other scenes under the same path.

    Returns:
        ``None`` for a pending run or a matching one.
    """
    rdir = run_dir(runs_dir, spec)
    state: Literal["done", "partial"]
    if (rdir / DONE_MARKER).is_file():
        state, record = "done", _read_json(rdir / DONE_MARKER)
    elif (rdir / "checkpoints" / "last.ckpt").is_file():
        state, record = "partial", _read_json(rdir / SPEC_FILE)
    else:
        return None
    data = _synth_changes(rdir, synth)
    recorded = record.get("config_hash")
    if recorded == config_hash(cfg):
        return ChangedRun(spec, state, tuple(data)) if data else None
    saved = saved_config(runs_dir, spec)
    if saved is None:
        if recorded is None and not data:
            if notice is not None:
                notice(
                    f"[sweep] {spec.run_id}: {state} without a recorded config hash or a saved "
                    "config (an older sweep); counted as matching the study"
                )
            return None
        return ChangedRun(spec, state, tuple(data))
    changes = config_changes(_revalidated(saved), cfg) + data
    return ChangedRun(spec, state, tuple(changes)) if changes else None


def changed_error(changed: list[ChangedRun], runs_dir: Path) -> ConfigError:
    """The refusal of a sweep with changed runs, naming the first differing option."""
    option = next((c.changes[0].key for c in changed if c.changes), "--rerun-changed")
    lines = "\n  ".join(c.describe() for c in changed)
    n = len(changed)
    return ConfigError(
        option,
        f"{n} run{'s' if n > 1 else ''} in {runs_dir} {'were' if n > 1 else 'was'} trained "
        f"with settings the study no longer makes:\n  {lines}\nrerun with --rerun-changed "
        f"to retrain {'them' if n > 1 else 'it'} (the old folders are kept under "
        f"{runs_dir / '.sweep' / 'replaced'}), or restore the study file",
    )


def replace_run(runs_dir: Path, spec: RunSpec) -> Path:
    """Move a run directory aside to ``.sweep/replaced/<id>-<time>/``; return the new place.

    The run's saved sweep config goes with it (``sweep-config.yaml``), as it is about to
    be overwritten; nothing is deleted.
    """
    src = run_dir(runs_dir, spec)
    base = runs_dir / ".sweep" / "replaced" / f"{spec.run_id}-{time.strftime('%Y%m%dT%H%M%S')}"
    dest, n = base, 2
    while dest.exists():
        dest, n = base.with_name(f"{base.name}-{n}"), n + 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)
    cfg_path = runs_dir / ".sweep" / "configs" / f"{spec.run_id}.yaml"
    if cfg_path.is_file():
        shutil.copy2(cfg_path, dest / "sweep-config.yaml")
    return dest


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
    status: Literal[
        "trained", "skipped-done", "skipped-locked", "skipped-changed", "failed", "interrupted"
    ]
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

    @property
    def changed(self) -> list[str]:
        """Ids of the runs left alone because their config changed while the sweep ran."""
        return [o.run_id for o in self.outcomes if o.status == "skipped-changed"]


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


@dataclass(frozen=True)
class SweepOptions:
    """How a :class:`SweepRunner` runs its shard.

    Attributes:
        jobs: Parallel training processes on this machine.
        shard_index: 1-based shard of this process.
        shard_count: Number of shards.
        stale_after: Heartbeat age after which another host's lock is abandoned.
        train_command: Command prefix of a training run (default: this Python running
            ``icecontext train``); the run config path is appended after ``--config``.
        rerun_changed: Retrain finished or partial runs whose config changed (their
            directories are moved to ``.sweep/replaced/``) instead of refusing them.
        stop_on_signals: Stop on SIGTERM/SIGINT (:meth:`SweepRunner.request_stop`); off
            under a launcher that handles the signals itself (submitit).
    """

    jobs: int = 1
    shard_index: int = 1
    shard_count: int = 1
    stale_after: float = DEFAULT_STALE_AFTER
    train_command: tuple[str, ...] | None = None
    rerun_changed: bool = False
    stop_on_signals: bool = True


class SweepRunner:
    """Runs the runs of one shard with ``options.jobs`` parallel slots (see module docstring).

    Args:
        study: The loaded study.
        runs_dir: Folder of the run directories.
        options: Parallel jobs, shard, lock staleness, training command, changed runs,
            signals (default: :class:`SweepOptions`'s defaults).
        log: Where progress lines go.

    Raises:
        ConfigError: ``--jobs`` when ``options.jobs`` is below 1.
    """

    def __init__(
        self,
        study: Study,
        runs_dir: Path,
        options: SweepOptions | None = None,
        *,
        log: Callable[[str], None] = print,
    ):
        options = options or SweepOptions()
        if options.jobs < 1:
            raise ConfigError("--jobs", f"must be at least 1, got {options.jobs}")
        self.study = study
        self.runs_dir = Path(runs_dir)
        self.jobs = options.jobs
        self.stop_on_signals = options.stop_on_signals
        self.specs = shard(expand(study.section.axes), options.shard_index, options.shard_count)
        self.shard_label = f"{options.shard_index}/{options.shard_count}"
        self.stale_after = options.stale_after
        self.rerun_changed = options.rerun_changed
        self._log = log
        self._print_lock = threading.RLock()
        self._procs_lock = threading.RLock()
        self._stop: int | None = None  # the signal that stops the sweep
        self._procs: set[subprocess.Popen[bytes]] = set()  # training processes running now
        self.train_command = list(options.train_command or ()) or [
            sys.executable,
            "-m",
            "icecontext.cli.main",
            "train",
        ]
        self.gpus = visible_gpus()
        self.threads = None if self.gpus else default_threads(options.jobs)

    def log(self, text: str) -> None:
        """Print a progress line (thread-safe, flushed)."""
        with self._print_lock:
            self._log(text)

    def configs(self) -> dict[str, dict[str, Any]]:
        """The validated run config of every run of the shard, by run id.

        Needs no data: the store of ``study.synth`` is named before it exists.

        Raises:
            ConfigError: The first grid point that makes an invalid run config.
        """
        return {
            s.run_id: run_config(
                self.study,
                s,
                self.runs_dir,
                store_path(self.study, self.runs_dir, s.data_label),
                self.threads,
            )
            for s in self.specs
        }

    def _changed(
        self, spec: RunSpec, cfg: dict[str, Any], notice: Callable[[str], None] | None = None
    ) -> ChangedRun | None:
        """:func:`changed_run` with the data settings of the run's variant."""
        synth = self.study.section.synth_for(spec.data_label)
        dump = synth.model_dump(mode="json") if synth is not None else None
        return changed_run(self.runs_dir, spec, cfg, notice, synth=dump)

    def changed(
        self, configs: dict[str, dict[str, Any]], notice: Callable[[str], None] | None = None
    ) -> list[ChangedRun]:
        """The finished or partial runs of the shard whose config differs from ``configs``."""
        out = []
        for s in self.specs:
            change = self._changed(s, configs[s.run_id], notice)
            if change is not None:
                out.append(change)
        return out

    def plan(self) -> list[tuple[RunSpec, RunState, ChangedRun | None]]:
        """Every run of this shard with its current state (``changed``: see :func:`changed_run`).

        Raises:
            ConfigError: If a grid point makes an invalid run config.
        """
        configs = self.configs()
        rows: list[tuple[RunSpec, RunState, ChangedRun | None]] = []
        for s in self.specs:
            state = run_state(self.runs_dir, s)
            change = None
            if state != "running":
                change = self._changed(s, configs[s.run_id], self.log)
            rows.append((s, "changed" if change else state, change))
        return rows

    def run(self) -> SweepSummary:
        """Validate, check changed runs, prepare the data, then train the shard's runs.

        Raises:
            ConfigError: Before anything is created or trained, if a grid point makes an
                invalid run config, or if finished or partial runs were trained with
                another config and ``rerun_changed`` is off.
        """
        # validate every grid point before data or training: a typo fails in seconds
        configs = self.configs()
        changed = self.changed(configs, notice=self.log)
        if changed and not self.rerun_changed:
            raise changed_error(changed, self.runs_dir)
        for c in changed:
            self.log(f"[sweep] {c.describe()}: retrained (--rerun-changed)")
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        for label in dict.fromkeys(spec.data_label for spec in self.specs):
            store = prepare_data(self.study, self.runs_dir, self.log, label)
            assert store == store_path(self.study, self.runs_dir, label)
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
            while self._stop is None:
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
        stopping = self._stopping_on_signals() if self.stop_on_signals else contextlib.nullcontext()
        with stopping:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if self._stop is not None:
            stopped = [o.run_id for o in outcomes if o.status == "interrupted"]
            raise Interrupted(
                self._stop,
                f"{sum(o.status == 'trained' for o in outcomes)} runs finished; "
                + (f"{', '.join(stopped)} saved their checkpoints" if stopped else "none running"),
            )
        order = {s.run_id: i for i, s in enumerate(self.specs)}
        outcomes.sort(key=lambda o: order[o.run_id])
        summary = SweepSummary(outcomes)
        self.log(
            f"[sweep] shard {self.shard_label}: {summary.count('trained')} trained, "
            f"{summary.count('skipped-done')} already done, "
            f"{summary.count('skipped-locked')} running elsewhere, "
            f"{summary.count('failed')} failed"
            + (
                f", {summary.count('skipped-changed')} changed meanwhile (not trained)"
                if summary.changed
                else ""
            )
        )
        return summary

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Start no new run; send SIGTERM to the running ones (they save and exit)."""
        # Runs as a signal handler in the main thread, possibly inside another handler:
        # the flag first, so that a second signal neither logs nor waits for a lock
        # this thread already holds (both locks are re-entrant).
        first = self._stop is None
        self._stop = signum
        with self._procs_lock:
            procs = list(self._procs)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if first:
            self.log(
                f"[sweep] {signal.Signals(signum).name}: stopping the running runs "
                "(they save their checkpoints); no new run starts"
            )

    def wait_stopped(self, timeout: float) -> bool:
        """After :meth:`request_stop`: wait until no run is running; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._procs_lock:
                if not self._procs:
                    return True
            time.sleep(0.2)
        return False

    def _stopping_on_signals(self) -> contextlib.AbstractContextManager[None]:
        """On SIGTERM/SIGINT: start no more runs and stop the running ones.

        The running training processes get SIGTERM (also after a Ctrl+C, which reaches
        them directly too: a second SIGINT would make them stop without saving), write
        their checkpoints and exit; the sweep then raises
        :class:`~icecontext.errors.Interrupted`. Only from the main thread.
        """
        return handling_signals(lambda signum, frame: self.request_stop(signum))

    def _run_one(self, spec: RunSpec, cfg: dict[str, Any], slot: int) -> Outcome:
        if is_done(self.runs_dir, spec) and self._changed(spec, cfg) is None:
            return Outcome(spec.run_id, "skipped-done")
        lock = try_lock(
            _lock_path(self.runs_dir, spec.run_id),
            stale_after=self.stale_after,
            info={"shard": self.shard_label},
        )
        if lock is None:
            return Outcome(spec.run_id, "skipped-locked")
        try:
            # again under the lock: another process may have finished it meanwhile
            change = self._changed(spec, cfg)
            if change is not None:
                if not self.rerun_changed:
                    return Outcome(spec.run_id, "skipped-changed")
                moved = replace_run(self.runs_dir, spec)
                self.log(f"[sweep] moved {change.state} {spec.run_id} aside to {moved}")
            elif is_done(self.runs_dir, spec):
                return Outcome(spec.run_id, "skipped-done")
            return self._train(spec, cfg, slot, lock)
        finally:
            lock.release()

    def _write_run_inputs(self, spec: RunSpec, cfg: dict[str, Any]) -> _RunFiles:
        """Write the run's config file and its spec record (grid point, config hash, data)."""
        meta = self.runs_dir / ".sweep"
        cfg_path = meta / "configs" / f"{spec.run_id}.yaml"
        write_text_atomic(cfg_path, yaml.safe_dump(cfg, sort_keys=False))
        rdir = run_dir(self.runs_dir, spec)
        rdir.mkdir(parents=True, exist_ok=True)
        digest = config_hash(cfg)
        record = {**spec.as_record(), "config_hash": digest}
        if self.study.section.purpose:
            record["purpose"] = self.study.section.purpose
        synth = self.study.section.synth_for(spec.data_label)
        if synth is not None:  # what the data were (known-truth radii for the report)
            record["synth"] = synth.model_dump(mode="json")
        write_text_atomic(rdir / SPEC_FILE, json.dumps(record, indent=2) + "\n")
        log_path = meta / "logs" / f"{spec.run_id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        return _RunFiles(
            config=cfg_path,
            run_dir=rdir,
            log=log_path,
            failed_marker=meta / "failed" / f"{spec.run_id}.json",
            config_hash=digest,
        )

    def _environment(self, slot: int) -> dict[str, str]:
        """The training process's environment: its GPU, or its share of the CPU threads."""
        env = dict(os.environ)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[slot % len(self.gpus)]
        elif self.threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        return env

    def _run_training(self, files: _RunFiles, env: dict[str, str], lock: RunLock) -> int:
        """Run the training command to its end, keeping the lock alive; its exit status.

        The process is registered while it runs, so that :meth:`request_stop` reaches it.
        """
        with open(files.log, "a", encoding="utf-8") as logf:
            logf.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {socket.gethostname()}\n")
            logf.flush()
            proc = subprocess.Popen(
                [*self.train_command, "--config", str(files.config)],
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
            with self._procs_lock:
                self._procs.add(proc)
            if self._stop is not None:  # the signal came while this run was starting
                proc.send_signal(signal.SIGTERM)
            beat = time.monotonic()
            while proc.poll() is None:
                time.sleep(0.5)
                if time.monotonic() - beat > HEARTBEAT_S:
                    lock.heartbeat()
                    beat = time.monotonic()
            with self._procs_lock:
                self._procs.discard(proc)
        return proc.returncode

    def _train(self, spec: RunSpec, cfg: dict[str, Any], slot: int, lock: RunLock) -> Outcome:
        files = self._write_run_inputs(spec, cfg)
        env = self._environment(slot)
        resuming = (files.run_dir / "checkpoints" / "last.ckpt").is_file()
        self.log(
            f"[sweep] {'resume' if resuming else 'start '} {spec.run_id}"
            + (f" (GPU {env['CUDA_VISIBLE_DEVICES']})" if self.gpus else "")
        )
        t0 = time.perf_counter()
        rc = self._run_training(files, env, lock)
        seconds = time.perf_counter() - t0
        # stopped by the sweep, or by a signal sent to the training itself (a scheduler):
        # it saved its checkpoint and resumes next time, it did not fail
        if rc in (130, 143) or (self._stop is not None and rc != 0):
            return Outcome(spec.run_id, "interrupted", seconds, rc)
        metrics = files.run_dir / "metrics.json"
        if rc == 0 and metrics.is_file():
            summary = json.loads(metrics.read_text(encoding="utf-8"))
            _mark_done(spec, files, seconds, summary)
            return Outcome(spec.run_id, "trained", seconds, rc, summary.get("last_scores") or {})
        tail = files.log.read_text(encoding="utf-8", errors="replace")[-4000:]
        write_text_atomic(
            files.failed_marker,
            json.dumps(
                {"run_id": spec.run_id, "rc": rc, "time": time.time(), "log_tail": tail}, indent=2
            )
            + "\n",
        )
        return Outcome(spec.run_id, "failed", seconds, rc)


@dataclass(frozen=True)
class _RunFiles:
    """The files of one training run of the sweep.

    Attributes:
        config: The run config the training reads.
        run_dir: The run directory.
        log: The training's output (appended to on every attempt).
        failed_marker: Written when the training fails, removed when it succeeds.
        config_hash: :func:`config_hash` of the run config.
    """

    config: Path
    run_dir: Path
    log: Path
    failed_marker: Path
    config_hash: str


def _mark_done(spec: RunSpec, files: _RunFiles, seconds: float, summary: dict[str, Any]) -> None:
    """Write the run's done marker (host, time, steps, config hash); clear a failure."""
    write_text_atomic(
        files.run_dir / DONE_MARKER,
        json.dumps(
            {
                "run_id": spec.run_id,
                "host": socket.gethostname(),
                "finished": time.time(),
                "seconds": seconds,
                "steps": summary.get("steps"),
                "config_hash": files.config_hash,
            },
            indent=2,
        )
        + "\n",
    )
    files.failed_marker.unlink(missing_ok=True)


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
    if o.status == "interrupted":
        return f" after {o.seconds:.0f} s (resumes from its checkpoint next time)"
    return ""
