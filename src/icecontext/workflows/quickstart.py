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

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from icecontext.config import Section, load_yaml, validate
from icecontext.errors import ConfigError

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
    from icecontext.synthetic.params import SynthParams, resolve_scales

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
        params = SynthParams(
            height=s.height,
            width=s.width,
            service="dmi" if i % 2 == 0 else "cis",
            scales=scales,
            polygon_size_km=s.polygon_size_km,
            keep_truth_arrays=False,
        )
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
    import numpy as np
    import torch

    from icecontext.data.loader.datamodule import IceDataModule, steps_per_epoch
    from icecontext.inference.predictor import model_overlap, predict_scene
    from icecontext.inference.tiling import TileSettings
    from icecontext.models.multitask import build_model
    from icecontext.training.fit import (
        resolve_accelerator,
        step_autocast,
        validation_precision,
    )
    from icecontext.training.losses import MultiTaskLoss
    from icecontext.training.optim import build_optimizer, parameter_groups

    threads = threads or thread_candidates(cfg.trainer.threads)
    # time where and how training will run: the same device and autocast
    accelerator = resolve_accelerator(cfg)
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    dm = IceDataModule(cfg.data.model_copy(update={"workers": 0}), seed=cfg.seed)
    dm.setup("fit")
    model = build_model(cfg.model, len(dm.features), seed=cfg.seed).to(device)
    crit = MultiTaskLoss(cfg.sic_loss, cfg.train.loss.task_weights.model_dump())
    opt = build_optimizer(parameter_groups(model, 0.0), cfg.train.optimizer)
    loader = iter(dm.train_dataloader())
    per_thread: dict[int, float] = {}
    for n in threads:
        torch.set_num_threads(n)
        times = []
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            try:
                batch = next(loader)
            except StopIteration:
                loader = iter(dm.train_dataloader())
                batch = next(loader)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with step_autocast(cfg, accelerator):  # e.g. bf16 on CPUs with native bf16
                outputs = model(batch["x"])
                loss, _ = crit(outputs, {t: batch[t] for t in ("SIC", "SOD", "FLOE")})
            loss.backward()
            opt.step()
            opt.zero_grad()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
            timed = times[1:]
            if (
                per_thread
                and len(timed) >= max(1, steps // 2)
                and float(np.median(timed)) > 1.5 * min(per_thread.values())
            ):
                break  # clearly slower: do not spend the whole calibration on it
        per_thread[n] = float(np.median(times[1:]))
    best = min(per_thread, key=lambda n: per_thread[n])
    torch.set_num_threads(best)
    val = dm.sources("val")
    val_s = 0.0
    if val:
        t0 = time.perf_counter()
        v = cfg.train.validation
        predict_scene(
            model,
            val[0],
            dm.features,
            tiling=TileSettings(
                tile=v.tile, overlap=model_overlap(model, v.overlap, v.tile), batch=v.batch
            ),
            device=device,
            precision=validation_precision(cfg, accelerator),
        )
        val_s = time.perf_counter() - t0
    del model, opt, loader
    torch.set_grad_enabled(True)
    return {
        "step_s": per_thread[best],
        "val_scene_s": val_s,
        "steps_per_epoch": float(steps_per_epoch(cfg.data)),
        "val_scenes": float(len(val)),
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
    from icecontext.run.config import RunConfig
    from icecontext.training.fit import train
    from icecontext.workflows.baselines import (
        MajorityBaseline,
        PixelBaseline,
        score_baseline,
    )
    from icecontext.workflows.evaluate_checkpoint import (
        open_eval_scenes,
        score_scenes,
        write_evaluation,
    )
    from icecontext.workflows.report import MapCollector, write_report

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    qs, raw, _ = load_quickstart_config(config, overrides)
    if minutes is not None:
        if minutes <= 0:
            raise ConfigError("--minutes", f"must be positive, got {minutes}")
        qs = qs.model_copy(update={"minutes": float(minutes)})
    out = Path(out).resolve()
    data_dir = out / "data"
    store = data_dir / "store.zarr"
    raw.setdefault("data", {})
    raw["data"]["store"] = str(store)
    raw["data"].pop("root", None)
    raw["output"] = {"root": str(out), "name": "run"}
    if not progress:
        raw.setdefault("train", {})["progress_bar"] = False
    cfg = validate(RunConfig, raw)

    t = time.perf_counter()
    folders = synthesise(qs, data_dir, progress=progress)
    timings["synthesise_s"] = time.perf_counter() - t
    t = time.perf_counter()
    prepare(folders["train"], store, cfg.data.features, cfg.data.downsample)
    timings["prepare_s"] = time.perf_counter() - t

    t = time.perf_counter()
    plan = plan_work(qs, cfg)
    if plan["mode"] == "budget":
        timings["calibrate_s"] = time.perf_counter() - t
    train_cfg = cfg.train.model_copy(
        update={"max_epochs": plan["epochs"], "max_minutes": plan["guard_minutes"]}
    )
    trainer_cfg = cfg.trainer.model_copy(update={"threads": plan["threads"]})
    cfg = cfg.model_copy(update={"train": train_cfg, "trainer": trainer_cfg})
    cfg = RunConfig.model_validate(cfg.model_dump(mode="json"))
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)

    t = time.perf_counter()
    result = train(cfg)
    timings["train_s"] = time.perf_counter() - t
    scored_ckpt = result.last_checkpoint if qs.checkpoint == "last" else result.best_checkpoint
    if scored_ckpt is None or not Path(scored_ckpt).is_file():
        raise ConfigError(
            "quickstart.checkpoint", f"training produced no {qs.checkpoint} checkpoint"
        )
    plan["checkpoint"] = str(scored_ckpt)

    from icecontext.inference.checkpoint import load_checkpoint

    t = time.perf_counter()
    loaded = load_checkpoint(scored_ckpt)
    test_scenes = open_eval_scenes(
        folders["test"], loaded.features, cfg.data.downsample, cfg.data.upsampling
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
    eval_dir = out / "eval"
    write_evaluation(scorer, eval_dir, extra={"checkpoint": str(scored_ckpt)})
    timings["evaluate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    from icecontext.data.loader.sources import store_sources
    from icecontext.data.store.prepared import PreparedStore
    from icecontext.inference.checkpoint import read_checkpoint

    prepared = PreparedStore(store)
    train_names = list(read_checkpoint(scored_ckpt)["FullSceneDataModule"]["train"])
    train_sources = store_sources(prepared, train_names)
    hist = {c: sum(s.histograms()[c] for s in train_sources) for c in ("SIC", "SOD", "FLOE")}
    majority = MajorityBaseline.fit(hist)
    pixel = PixelBaseline.fit(
        train_sources, pixels_per_scene=qs.baseline_pixels_per_scene, seed=cfg.seed
    )
    baseline_scenes = open_eval_scenes(
        folders["test"],
        list(pixel.features),
        cfg.data.downsample,
        cfg.data.upsampling,
    )
    maj_scorer = score_baseline(majority.predict, baseline_scenes)
    pix_scorer = score_baseline(
        lambda src: maps.capture_baseline(src, pixel.predict(src)), baseline_scenes
    )
    timings["baselines_s"] = time.perf_counter() - t

    scores = {
        "network": scorer.compute(),
        "majority": maj_scorer.compute(),
        "amsr2_pixel": pix_scorer.compute(),
    }
    beats, _ = self_check(scores, qs.margin)
    timings["total_s"] = time.perf_counter() - t_start
    report = write_report(
        out,
        cfg=cfg,
        qs=qs,
        result=result,
        scorer=scorer,
        scores=scores,
        majority=majority,
        pixel=pixel,
        maps=maps,
        plan=plan,
        timings=timings,
        scored=scored,
    )
    return QuickstartResult(
        out=out,
        report=report,
        scores={
            k: {c: v[c] for c in ("SIC", "SOD", "FLOE", "combined")} for k, v in scores.items()
        },
        beats_baselines=beats,
        margin=qs.margin,
        timings=timings,
        plan=plan,
    )
