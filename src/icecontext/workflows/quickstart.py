"""The quickstart: synthetic data -> store -> a fixed amount of training -> report.

``icecontext quickstart`` (what ``make quickstart`` runs) does, in ``--out``
(default ``runs/quickstart``):

1. **data**: writes physically based synthetic scenes (:mod:`icecontext.synthetic`)
   in the AI4Arctic ready-to-train format: training + validation scenes into
   ``data/train``, held-out test scenes in the test layout (``_prep.nc`` without
   labels + ``_prep_reference.nc``) into ``data/test``;
2. **store**: prepares ``data/store.zarr`` from the training folder;
3. **plan**: fixed work by default: ``quickstart.epochs`` epochs of the config's steps,
   with the config's thread count (``trainer.threads``) and precision. Nothing is timed,
   so the same seed gives the same run on a busy machine as on an idle one, and the same
   score on any machine up to floating-point rounding. Opt-in (``quickstart.minutes`` or
   ``--minutes``): the former time budget, which times a few training steps and one
   full-scene validation and turns the minutes into whole epochs (at least
   ``quickstart.min_epochs``, with a wall-clock guard of 1.5x the planned time);
4. **training**: the small CPU preset (``configs/quickstart.yaml``), in ``run/``;
5. **evaluation**: the final weights (``quickstart.checkpoint: last``, taken at the end
   of the cosine schedule) or the best validation epoch (``best``) on the test scenes,
   scored at 80 m, in ``eval/``;
6. **baselines**: majority class and a per-pixel AMSR2 logistic regression
   (:mod:`icecontext.workflows.baselines`), scored on the same test pixels;
7. **report**: ``report.md`` with the score table, the self-check (:func:`self_check`:
   the network's combined score at least ``quickstart.margin`` points above each
   baseline's), prediction-vs-reference maps of a test scene, the training curves and
   confusion matrices.

Rerunning reuses the synthetic scenes and the store; the training run starts afresh
(``run/`` is replaced) so the report always describes one complete run.
"""

from __future__ import annotations

import functools
import logging
import operator
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from icecontext.config import Section, load_yaml, validate
from icecontext.data.io.format import CHARTS
from icecontext.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from icecontext.evaluation.scorer import ChartScorer
    from icecontext.run.config import RunConfig
    from icecontext.training.fit import RunResult
    from icecontext.workflows.baselines import MajorityBaseline, PixelBaseline
    from icecontext.workflows.report import MapCollector

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "quickstart.yaml"
"""``configs/quickstart.yaml`` of a source checkout (editable install)."""


class SynthSection(Section):
    """Synthetic data of the quickstart.

    Attributes:
        train_scenes: Scenes the network trains on.
        val_scenes: Scenes for full-scene validation (model selection).
        test_scenes: Held-out scenes of the report (test layout, never seen in training).
        height: Lines of every scene at 80 m.
        width: Samples of every scene at 80 m.
        scale: Spatial-context scales of the generator (``fine``/``medium``/``coarse``
            or a multiplier).
        polygon_size_km: Typical ice-chart polygon size.
        seed: Scene ``i`` uses seed ``seed + i``.
    """

    train_scenes: PositiveInt = 8
    val_scenes: PositiveInt = 2
    test_scenes: PositiveInt = 3
    height: int = Field(default=1000, ge=100, le=5000)
    width: int = Field(default=1040, ge=100, le=5200)
    scale: str = "medium"
    polygon_size_km: float = Field(default=25.0, gt=1.0)
    seed: NonNegativeInt = 1000


class QuickstartSection(Section):
    """Quickstart settings (the ``quickstart:`` section of ``configs/quickstart.yaml``).

    Attributes:
        synth: Synthetic data.
        epochs: Fixed work: train exactly this many epochs (``data.patches_per_epoch /
            data.batch_size`` steps each), whatever the machine's speed or load.
        minutes: Opt-in time budget in minutes (data, calibration and report come on
            top): when set, timed training steps size the run instead of ``epochs``.
        min_epochs: With ``minutes``: never plan fewer epochs than this, whatever the
            budget buys (on a busy machine 5 minutes bought 1-2 epochs, too few to beat
            the baselines).
        calibration_steps: With ``minutes``: training steps timed to size the run.
        checkpoint: Weights the report scores: ``last`` (the final ones, after the cosine
            schedule has decayed the learning rate) or ``best`` (the epoch with the best
            validation score, which two validation scenes choose unreliably).
        baseline_pixels_per_scene: Pixels per training scene for the AMSR2 baseline.
        margin: Self-check: combined-score points by which the network must beat each
            baseline for the quickstart to pass.
    """

    synth: SynthSection = Field(default_factory=SynthSection)
    epochs: PositiveInt = 12
    minutes: PositiveFloat | None = None
    min_epochs: PositiveInt = 4
    calibration_steps: PositiveInt = 4
    checkpoint: Literal["last", "best"] = "last"
    baseline_pixels_per_scene: PositiveInt = 4000
    margin: NonNegativeFloat = 5.0


BASELINES: tuple[str, ...] = ("amsr2_pixel", "majority")
"""Keys of the baselines in the quickstart's scores; the self-check covers each."""


def self_check(scores: dict[str, dict[str, Any]], margin: float) -> tuple[bool, dict[str, float]]:
    """The quickstart's pass rule: network combined >= each baseline's combined + ``margin``.

    Args:
        scores: ``{"network": {...}, "amsr2_pixel": {...}, "majority": {...}}`` with a
            ``combined`` score each (percent points).
        margin: Points required over every baseline (``quickstart.margin``).

    Returns:
        ``(passed, {baseline: network - baseline})``; a NaN score fails.
    """
    net = float(scores["network"]["combined"])
    gaps = {b: net - float(scores[b]["combined"]) for b in BASELINES}
    return all(g >= margin for g in gaps.values()), gaps


@dataclass
class QuickstartResult:
    """Where the quickstart put things and what it measured.

    Attributes:
        out: Output folder.
        report: ``report.md``.
        scores: SIC, SOD, FLOE and combined score of ``network``, ``majority`` and
            ``amsr2_pixel``.
        beats_baselines: Whether the self-check passed (:func:`self_check`).
        margin: The self-check's margin (``quickstart.margin``).
        timings: Seconds per phase.
        plan: The work plan (:func:`plan_work`) and the scored checkpoint.
    """

    out: Path
    report: Path
    scores: dict[str, dict[str, float]]
    beats_baselines: bool
    margin: float = 5.0
    timings: dict[str, float] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)


def load_quickstart_config(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[QuickstartSection, dict[str, Any], Path]:
    """Read ``configs/quickstart.yaml``: the quickstart section and the run config mapping.

    Overrides starting with ``quickstart.`` go to the quickstart section, the others to
    the run configuration.

    Returns:
        ``(quickstart settings, run config mapping, config path)``.

    Raises:
        ConfigError: If the file is missing (outside a source checkout pass --config)
            or a value is invalid (naming the key).
    """
    from icecontext.config import apply_overrides
    from icecontext.run.config import _absolute_overrides, resolve_section_files

    cfg_path = Path(path) if path is not None else DEFAULT_CONFIG
    if not cfg_path.is_file():
        raise ConfigError(
            "--config",
            f"quickstart config '{cfg_path}' not found; pass --config configs/quickstart.yaml",
        )
    raw = load_yaml(cfg_path)
    qs_over = [o for o in overrides if o.startswith("quickstart.")]
    run_over = [o for o in overrides if not o.startswith("quickstart.")]
    raw = apply_overrides(raw, qs_over)
    qs = validate(QuickstartSection, raw.pop("quickstart", {}) or {}, prefix="quickstart")
    # Section files first (``model: model/small_cpu.yaml``), so that ``model.aspp.rates=...``
    # overrides a key of the loaded section rather than the path string.
    raw = resolve_section_files(raw, cfg_path.resolve().parent)
    raw = apply_overrides(raw, _absolute_overrides(run_over))
    return qs, raw, cfg_path


# ----------------------------------------------------------------------------- data


def synthesise(qs: QuickstartSection, data_dir: Path, progress: bool = True) -> dict[str, Path]:
    """Write the synthetic scenes (skipped when the folders are already complete).

    Returns:
        ``{"train": folder, "test": folder}``.
    """
    from tqdm.auto import tqdm

    from icecontext.synthetic.files import write_synthetic_scene
    from icecontext.synthetic.generator import generate_scene
    from icecontext.synthetic.params import resolve_scales, set_scene_params

    s = qs.synth
    n_fit = s.train_scenes + s.val_scenes
    folders = {"train": data_dir / "train", "test": data_dir / "test"}
    plan = [("train", i) for i in range(n_fit)]
    plan += [("test", n_fit + i) for i in range(s.test_scenes)]
    done_marker = data_dir / ".synth-complete"
    signature = s.model_dump_json()
    if done_marker.is_file() and done_marker.read_text() == signature:
        return folders
    for f in folders.values():
        shutil.rmtree(f, ignore_errors=True)
        f.mkdir(parents=True)
    scales = resolve_scales(s.scale, option="quickstart.synth.scale")
    taken: set[str] = set()
    for split, i in tqdm(plan, desc="synthesise", unit="scene", disable=not progress):
        params = set_scene_params(i, s.height, s.width, scales, s.polygon_size_km)
        scene = generate_scene(params, s.seed + i)
        if scene.scene_name in taken:  # practically never: names carry the seed's date
            raise ConfigError("quickstart.synth.seed", f"scene name clash {scene.scene_name}")
        taken.add(scene.scene_name)
        write_synthetic_scene(scene, folders[split], seed=s.seed + i, test_set=split == "test")
    done_marker.write_text(signature)
    return folders


def prepare(train_dir: Path, store: Path, features: list[str], downsample: int) -> Path:
    """Prepare (or complete) the training store.

    The store holds the run's features plus all 14 AMSR2 channels (the per-pixel
    baseline's inputs). The quickstart owns its store: one made with other settings (an
    earlier quickstart configuration) is rebuilt.
    """
    from icecontext.data.store.prepare import prepare_store

    wanted = list(dict.fromkeys([*features, "amsr2"]))
    try:
        result = prepare_store(
            train_dir, store, features=wanted, downsample=downsample, progress=False
        )
    except ConfigError:
        shutil.rmtree(store, ignore_errors=True)
        result = prepare_store(
            train_dir, store, features=wanted, downsample=downsample, progress=False
        )
    if result.failed:
        raise ConfigError("quickstart", f"could not prepare scenes: {result.failed}")
    return store


# ----------------------------------------------------------------------------- plan


def thread_candidates(configured: int | None, available: int | None = None) -> list[int]:
    """Torch thread counts the calibration tries.

    ``trainer.threads`` set: only that. Otherwise torch's default and 1: on a CPU shared
    with other work, OpenMP threads that wait for each other at every operator can make
    two threads several times slower than one (measured here: 2 threads 3-6 s per step,
    1 thread 1.2-1.9 s, while other jobs kept the load at 5 on 2 cores), and on an idle
    machine the default wins.
    """
    if configured:
        return [int(configured)]
    default = int(available if available is not None else torch_threads())
    return sorted({default, 1})


def torch_threads() -> int:
    """Torch's current intra-op thread count."""
    import torch

    return torch.get_num_threads()


class _CalibrationRig:
    """A model, loss, optimiser and patch stream stepped as the trainer will step them.

    On the device and under the autocast training will use (e.g. bf16 on CPUs with
    native bf16); the patch loader runs in the process (``data.workers: 0``) and starts
    over when an epoch's patches run out.
    """

    def __init__(self, cfg: RunConfig):
        import torch

        from icecontext.data.loader.datamodule import IceDataModule
        from icecontext.models.coarse_inputs import CoarseInputs
        from icecontext.models.multitask import build_model
        from icecontext.training.fit import resolve_accelerator
        from icecontext.training.losses import MultiTaskLoss
        from icecontext.training.optim import build_optimizer, parameter_groups

        self.cfg = cfg
        self.accelerator = resolve_accelerator(cfg)
        self.device = torch.device("cuda" if self.accelerator == "gpu" else "cpu")
        self.dm = IceDataModule(cfg.data.model_copy(update={"workers": 0}), seed=cfg.seed)
        self.dm.setup("fit")
        self.model = build_model(cfg.model, len(self.dm.features), seed=cfg.seed).to(self.device)
        self.inputs = CoarseInputs(self.dm.features, cfg.data.upsampling)
        self.crit = MultiTaskLoss(cfg.sic_loss, cfg.train.loss.task_weights.model_dump())
        self.opt = build_optimizer(parameter_groups(self.model, 0.0), cfg.train.optimizer)
        self.loader = iter(self.dm.train_dataloader())

    def _next_batch(self) -> dict[str, torch.Tensor]:
        try:
            return next(self.loader)
        except StopIteration:
            self.loader = iter(self.dm.train_dataloader())
            return next(self.loader)

    def step_seconds(self) -> float:
        """Seconds of one training step, drawing its batch included."""
        import torch

        from icecontext.training.fit import step_autocast

        t0 = time.perf_counter()
        batch = self._next_batch()
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with step_autocast(self.cfg, self.accelerator):
            outputs = self.model(self.inputs(batch))
            loss, _ = self.crit(outputs, {t: batch[t] for t in ("SIC", "SOD", "FLOE")})
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    def validation_seconds(self) -> tuple[float, int]:
        """Seconds of one full-scene validation prediction, and the validation scenes.

        Returns:
            ``(seconds, scenes)``; ``(0.0, 0)`` without validation scenes.
        """
        from icecontext.inference.predictor import model_overlap, predict_scene
        from icecontext.inference.tiling import TileSettings
        from icecontext.training.fit import validation_precision

        val = self.dm.sources("val")
        if not val:
            return 0.0, 0
        t0 = time.perf_counter()
        v = self.cfg.train.validation
        predict_scene(
            self.model,
            val[0],
            self.dm.features,
            tiling=TileSettings(
                tile=v.tile, overlap=model_overlap(self.model, v.overlap, v.tile), batch=v.batch
            ),
            device=self.device,
            precision=validation_precision(self.cfg, self.accelerator),
        )
        return time.perf_counter() - t0, len(val)


def _time_thread_counts(rig: _CalibrationRig, threads: list[int], steps: int) -> dict[int, float]:
    """Median seconds per training step for each thread count (after one warm-up step).

    A count stops early once it is clearly slower than the best so far: half its steps
    at 1.5x the best's median.
    """
    import numpy as np
    import torch

    per_thread: dict[int, float] = {}
    for n in threads:
        torch.set_num_threads(n)
        times = []
        for _ in range(steps + 1):
            times.append(rig.step_seconds())
            timed = times[1:]
            if (
                per_thread
                and len(timed) >= max(1, steps // 2)
                and float(np.median(timed)) > 1.5 * min(per_thread.values())
            ):
                break  # clearly slower: do not spend the whole calibration on it
        per_thread[n] = float(np.median(times[1:]))
    return per_thread


def calibrate(cfg: Any, steps: int, threads: list[int] | None = None) -> dict[str, float]:
    """Time real training steps (data included) and one full-scene validation.

    Each thread count of ``threads`` (default: :func:`thread_candidates`) is timed on
    ``steps`` steps after one warm-up step (a count stops early once it is clearly
    slower than the best so far: half its steps at 1.5x the best's median); the fastest
    is kept (and left set in torch).

    Returns:
        ``{"step_s", "val_scene_s", "steps_per_epoch", "val_scenes", "threads"}`` plus
        ``step_s@N`` for every thread count tried.
    """
    import torch

    from icecontext.data.loader.datamodule import steps_per_epoch

    threads = threads or thread_candidates(cfg.trainer.threads)
    # time where and how training will run: the same device and autocast
    rig = _CalibrationRig(cfg)
    per_thread = _time_thread_counts(rig, threads, steps)
    best = min(per_thread, key=lambda n: per_thread[n])
    torch.set_num_threads(best)
    val_s, val_scenes = rig.validation_seconds()
    del rig
    torch.set_grad_enabled(True)
    return {
        "step_s": per_thread[best],
        "val_scene_s": val_s,
        "steps_per_epoch": float(steps_per_epoch(cfg.data)),
        "val_scenes": float(val_scenes),
        "threads": float(best),
        **{f"step_s@{n}": v for n, v in per_thread.items()},
    }


def fixed_plan(cfg: Any) -> dict[str, float]:
    """The plan's figures for fixed work: nothing timed."""
    from icecontext.data.loader.datamodule import steps_per_epoch

    return {
        "step_s": float("nan"),
        "val_scene_s": float("nan"),
        "steps_per_epoch": float(steps_per_epoch(cfg.data)),
        "val_scenes": float(cfg.data.splits.val_count or 0),
        "threads": float(cfg.trainer.threads or torch_threads()),
    }


def training_precision(cfg: Any) -> str:
    """The precision the run trains in (``trainer.precision`` resolved for this machine)."""
    from icecontext.training.fit import resolve_accelerator, resolve_precision

    return resolve_precision(cfg, resolve_accelerator(cfg))


def plan_work(qs: QuickstartSection, cfg: Any) -> dict[str, Any]:
    """How much to train: fixed by the config, or (opt-in) sized by timing steps.

    Fixed work (``quickstart.minutes`` unset, the default) times nothing: the run trains
    ``quickstart.epochs`` epochs with ``trainer.threads`` threads whatever the machine's
    speed or load. With ``quickstart.minutes`` the former time budget applies
    (:func:`calibrate`, :func:`plan_epochs`, a wall-clock guard of 1.5x the plan).

    Returns:
        ``mode`` (``fixed`` or ``budget``), ``epochs``, ``steps`` (planned optimiser
        steps), ``threads``, ``precision`` (the resolved training precision),
        ``guard_minutes`` (``None`` for fixed work) and the timing figures
        (``step_s``, ``val_scene_s``: NaN when nothing was timed).
    """
    if qs.minutes is None:
        timing = fixed_plan(cfg)
        epochs, guard, extra = qs.epochs, None, {}
    else:
        timing = calibrate(cfg, qs.calibration_steps)
        epochs = plan_epochs(qs.minutes, timing, qs.min_epochs)
        # the guard scales with the plan, so a floor of min_epochs is not cut short
        guard = 1.5 * max(qs.minutes, epochs * epoch_seconds(timing) / 60.0)
        extra = {"minutes": qs.minutes, "budget_epochs": plan_epochs(qs.minutes, timing)}
    return {
        **timing,
        **extra,
        "mode": "fixed" if qs.minutes is None else "budget",
        "epochs": int(epochs),
        "steps": int(epochs * timing["steps_per_epoch"]),
        "threads": int(timing["threads"]),
        "precision": training_precision(cfg),
        "guard_minutes": guard,
    }


def epoch_seconds(timing: dict[str, float]) -> float:
    """Predicted seconds per epoch (training steps plus full-scene validation)."""
    return (
        timing["steps_per_epoch"] * timing["step_s"] + timing["val_scenes"] * timing["val_scene_s"]
    )


def plan_epochs(minutes: float, timing: dict[str, float], min_epochs: int = 1) -> int:
    """Whole epochs closest to ``minutes``, validation included, at least ``min_epochs``.

    Rounded, not floored: flooring left up to one epoch of the budget unused (2.9
    epochs' worth of time became 2 epochs, a third of the training lost); the run may
    overshoot the budget by half an epoch, and the wall-clock guard bounds the rest.
    """
    return max(1, min_epochs, round(minutes * 60.0 / max(epoch_seconds(timing), 1e-6)))


# ----------------------------------------------------------------------------- main


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Record the seconds the ``with`` body took as ``timings[key]`` (when it succeeds)."""
    t0 = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - t0


def _run_config(raw: dict[str, Any], out: Path, store: Path, progress: bool) -> RunConfig:
    """The run configuration of the quickstart: trains on ``store``, in ``<out>/run``."""
    from icecontext.run.config import RunConfig

    raw.setdefault("data", {})
    raw["data"]["store"] = str(store)
    raw["data"].pop("root", None)
    raw["output"] = {"root": str(out), "name": "run"}
    if not progress:
        raw.setdefault("train", {})["progress_bar"] = False
    return validate(RunConfig, raw)


def _timed_plan(qs: QuickstartSection, cfg: RunConfig, timings: dict[str, float]) -> dict[str, Any]:
    """:func:`plan_work`; its seconds go to ``timings["calibrate_s"]`` when it calibrated."""
    t0 = time.perf_counter()
    plan = plan_work(qs, cfg)
    if plan["mode"] == "budget":
        timings["calibrate_s"] = time.perf_counter() - t0
    return plan


def _planned_config(cfg: RunConfig, plan: dict[str, Any]) -> RunConfig:
    """``cfg`` with the plan's epochs, wall-clock guard and thread count."""
    from icecontext.run.config import RunConfig

    train_cfg = cfg.train.model_copy(
        update={"max_epochs": plan["epochs"], "max_minutes": plan["guard_minutes"]}
    )
    trainer_cfg = cfg.trainer.model_copy(update={"threads": plan["threads"]})
    cfg = cfg.model_copy(update={"train": train_cfg, "trainer": trainer_cfg})
    return RunConfig.model_validate(cfg.model_dump(mode="json"))


def _scored_checkpoint(result: RunResult, qs: QuickstartSection) -> Path:
    """The checkpoint ``quickstart.checkpoint`` asks for.

    Raises:
        ConfigError: ``quickstart.checkpoint`` when training did not write it.
    """
    scored = result.last_checkpoint if qs.checkpoint == "last" else result.best_checkpoint
    if scored is None or not Path(scored).is_file():
        raise ConfigError(
            "quickstart.checkpoint", f"training produced no {qs.checkpoint} checkpoint"
        )
    return Path(scored)


@dataclass(frozen=True)
class _NetworkEvaluation:
    """The network's evaluation on the test scenes.

    Attributes:
        scorer: Its scores, pooled and per scene.
        scored: Names of the scenes scored.
        maps: The scene kept for the map figure (the baselines add theirs).
    """

    scorer: ChartScorer
    scored: list[str]
    maps: MapCollector


def _evaluate_network(
    checkpoint: Path, test_dir: Path, cfg: RunConfig, out: Path
) -> _NetworkEvaluation:
    """Score ``checkpoint`` on the test scenes at 80 m and write ``<out>/eval``."""
    from icecontext.inference.checkpoint import load_checkpoint
    from icecontext.workflows.evaluate_checkpoint import (
        open_eval_scenes,
        score_scenes,
        write_evaluation,
    )
    from icecontext.workflows.report import MapCollector

    loaded = load_checkpoint(checkpoint)
    test_scenes = open_eval_scenes(
        test_dir, loaded.features, cfg.data.downsample, cfg.data.upsampling
    )
    maps = MapCollector(choose="variety")
    scorer, scored, _ = score_scenes(
        loaded.model,
        loaded.features,
        test_scenes,
        tile=cfg.train.validation.tile,
        overlap=cfg.train.validation.overlap,
        batch=cfg.train.validation.batch,
        device="cpu",
        on_prediction=maps,
    )
    write_evaluation(scorer, out / "eval", extra={"checkpoint": str(checkpoint)})
    return _NetworkEvaluation(scorer=scorer, scored=scored, maps=maps)


def _summed_histograms(sources: Sequence[Any]) -> dict[str, np.ndarray]:
    """Chart histograms of ``sources`` added up, per chart."""
    histograms = [s.histograms() for s in sources]
    return {c: functools.reduce(operator.add, (h[c] for h in histograms)) for c in CHARTS}


@dataclass(frozen=True)
class _Baselines:
    """The fitted baselines and their scores on the test scenes.

    Attributes:
        majority: Majority class per chart.
        pixel: Per-pixel AMSR2 logistic regression.
        majority_scorer: The majority baseline's scores.
        pixel_scorer: The per-pixel baseline's scores.
    """

    majority: MajorityBaseline
    pixel: PixelBaseline
    majority_scorer: ChartScorer
    pixel_scorer: ChartScorer


def _baselines(
    checkpoint: Path,
    store: Path,
    test_dir: Path,
    cfg: RunConfig,
    qs: QuickstartSection,
    maps: MapCollector,
) -> _Baselines:
    """Fit both baselines on the network's training scenes and score them on the test scenes.

    The per-pixel baseline's prediction of the map scene goes to ``maps``.
    """
    from icecontext.data.loader.sources import store_sources
    from icecontext.data.store.prepared import PreparedStore
    from icecontext.inference.checkpoint import read_checkpoint
    from icecontext.workflows.baselines import MajorityBaseline, PixelBaseline, score_baseline
    from icecontext.workflows.evaluate_checkpoint import open_eval_scenes

    prepared = PreparedStore(store)
    train_names = list(read_checkpoint(checkpoint)["FullSceneDataModule"]["train"])
    train_sources = store_sources(prepared, train_names)
    majority = MajorityBaseline.fit(_summed_histograms(train_sources))
    pixel = PixelBaseline.fit(
        train_sources, pixels_per_scene=qs.baseline_pixels_per_scene, seed=cfg.seed
    )
    scenes = open_eval_scenes(
        test_dir, list(pixel.features), cfg.data.downsample, cfg.data.upsampling
    )
    maj_scorer = score_baseline(majority.predict, scenes)
    pix_scorer = score_baseline(lambda src: maps.capture_baseline(src, pixel.predict(src)), scenes)
    return _Baselines(
        majority=majority, pixel=pixel, majority_scorer=maj_scorer, pixel_scorer=pix_scorer
    )


def _load_settings(
    config: str | os.PathLike[str] | None,
    overrides: list[str] | tuple[str, ...],
    minutes: float | None,
) -> tuple[QuickstartSection, dict[str, Any]]:
    """The quickstart section (with ``--minutes`` applied) and the run config mapping.

    Raises:
        ConfigError: ``--minutes`` when it is not positive; see
            :func:`load_quickstart_config`.
    """
    qs, raw, _ = load_quickstart_config(config, overrides)
    if minutes is not None:
        if minutes <= 0:
            raise ConfigError("--minutes", f"must be positive, got {minutes}")
        qs = qs.model_copy(update={"minutes": float(minutes)})
    return qs, raw


def run_quickstart(
    out: str | os.PathLike[str] = "runs/quickstart",
    *,
    minutes: float | None = None,
    config: str | os.PathLike[str] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
) -> QuickstartResult:
    """Run the whole quickstart and write ``<out>/report.md``.

    Args:
        out: Output folder.
        minutes: Opt in to a time budget of this many training minutes (default: the
            config's ``quickstart.minutes``, unset: fixed work of ``quickstart.epochs``).
        config: Quickstart config (default ``configs/quickstart.yaml``).
        overrides: Dotted overrides (``quickstart.synth.train_scenes=4``, ``train.*``...).
        progress: Progress bars.

    Returns:
        Paths, scores, whether the network passed the self-check (:func:`self_check`),
        timings, the plan.
    """
    from icecontext.training.fit import train
    from icecontext.workflows.report import ReportInputs, write_report

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    qs, raw = _load_settings(config, overrides, minutes)
    out = Path(out).resolve()
    data_dir = out / "data"
    store = data_dir / "store.zarr"
    cfg = _run_config(raw, out, store, progress)
    with _timed(timings, "synthesise_s"):
        folders = synthesise(qs, data_dir, progress=progress)
    with _timed(timings, "prepare_s"):
        prepare(folders["train"], store, cfg.data.features, cfg.data.downsample)
    plan = _timed_plan(qs, cfg, timings)
    cfg = _planned_config(cfg, plan)
    shutil.rmtree(out / "run", ignore_errors=True)
    with _timed(timings, "train_s"):
        result = train(cfg)
    scored_ckpt = _scored_checkpoint(result, qs)
    plan["checkpoint"] = str(scored_ckpt)
    with _timed(timings, "evaluate_s"):
        network = _evaluate_network(scored_ckpt, folders["test"], cfg, out)
    with _timed(timings, "baselines_s"):
        baselines = _baselines(scored_ckpt, store, folders["test"], cfg, qs, network.maps)
    scores = {
        "network": network.scorer.compute(),
        "majority": baselines.majority_scorer.compute(),
        "amsr2_pixel": baselines.pixel_scorer.compute(),
    }
    beats, _ = self_check(scores, qs.margin)
    timings["total_s"] = time.perf_counter() - t_start
    inputs = ReportInputs(
        cfg=cfg,
        qs=qs,
        result=result,
        scorer=network.scorer,
        scores=scores,
        majority=baselines.majority,
        pixel=baselines.pixel,
        maps=network.maps,
        plan=plan,
        timings=timings,
        scored=network.scored,
    )
    return QuickstartResult(
        out=out,
        report=write_report(out, inputs),
        scores={
            k: {c: v[c] for c in ("SIC", "SOD", "FLOE", "combined")} for k, v in scores.items()
        },
        beats_baselines=beats,
        margin=qs.margin,
        timings=timings,
        plan=plan,
    )
