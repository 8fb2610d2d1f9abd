"""The quickstart report: score table, maps, curves, confusion matrices, in Markdown.

:class:`MapCollector` keeps what the map figure needs from the evaluation pass (one
test scene's reference, network prediction and baseline prediction, all at 80 m);
:func:`write_report` writes ``report.md`` and ``maps.png`` next to it. Images are
referenced by relative paths, so the folder can be moved or zipped.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from icecontext import __version__
from icecontext.atomic import write_text_atomic
from icecontext.data.io.format import CHART_FILL, CHART_LONG_NAMES, CHARTS, PIXEL_SPACING_M
from icecontext.inference.predictor import upsample_nearest

if TYPE_CHECKING:
    from icecontext.evaluation.scorer import ChartScorer
    from icecontext.run.config import RunConfig
    from icecontext.training.fit import RunResult
    from icecontext.workflows.baselines import MajorityBaseline, PixelBaseline
    from icecontext.workflows.quickstart import QuickstartSection

MODEL_LABELS = {
    "network": "network",
    "amsr2_pixel": "per-pixel AMSR2 logistic regression",
    "majority": "majority class per chart",
}


def chart_variety(reference: dict[str, np.ndarray]) -> float:
    """How much a scene shows: labelled ice pixels times the SOD classes present.

    Used to pick the test scene of the map figure: a scene of open water only (common in
    the data) shows nothing of what the network learned.
    """
    sic = np.asarray(reference["SIC"])
    sod = np.asarray(reference["SOD"])
    ice = int(np.count_nonzero((sic > 0) & (sic != CHART_FILL)))
    classes = np.unique(sod[sod != CHART_FILL]).size
    return float(ice * max(classes, 1))


@dataclass
class MapCollector:
    """Collects one scene's charts for the map figure during evaluation.

    Use as ``on_prediction`` of :func:`~icecontext.workflows.evaluate_checkpoint.score_scenes`,
    then pass baseline predictions through :meth:`capture_baseline`. Only one scene is
    held at a time (memory: one scene's charts).

    Attributes:
        choose: ``first``: the first scene seen; ``variety``: the scene with the highest
            :func:`chart_variety` (most ice, most stages of development).
        name: Scene kept.
        path: Its file (for the input images).
        reference: Reference charts at 80 m.
        network: Network class maps at 80 m.
        baseline: Baseline class maps at 80 m.
        variety: :func:`chart_variety` of the kept scene.
    """

    choose: Literal["first", "variety"] = "variety"
    name: str | None = None
    path: Path | None = None
    reference: dict[str, np.ndarray] = field(default_factory=dict)
    network: dict[str, np.ndarray] = field(default_factory=dict)
    baseline: dict[str, np.ndarray] = field(default_factory=dict)
    variety: float = -1.0

    def __call__(self, scene: Any, prediction: Any, reference: dict[str, np.ndarray]) -> None:
        """Keep the scene if it is the first one or shows more than the one kept."""
        if self.name is not None and self.choose == "first":
            return
        variety = chart_variety(reference)
        if self.name is not None and variety <= self.variety:
            return
        self.name = scene.source.name
        self.path = getattr(scene.source, "path", None)
        self.variety = variety
        self.reference = {k: np.asarray(v) for k, v in reference.items()}
        self.network = {k: np.asarray(v) for k, v in prediction.classes.items()}

    def capture_baseline(self, source: Any, pred: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Keep the baseline prediction of the collected scene; return ``pred`` unchanged."""
        if source.name == self.name:
            k, shape = source.downsample, source.full_shape
            self.baseline = {t: upsample_nearest(v, k, shape) for t, v in pred.items()}
        return pred


def _display(values: np.ndarray, k: int) -> np.ndarray:
    from icecontext.plotting.scene import block_centre

    return block_centre(values, k)


def plot_maps(maps: MapCollector, path: Path, max_size: int = 400) -> Path | None:
    """Inputs and charts of one scene: reference vs network vs AMSR2 baseline.

    Returns:
        The PNG path, or ``None`` when no scene was collected.
    """
    if maps.name is None:
        return None
    from matplotlib.figure import Figure

    from icecontext.data.io.scene import open_scene
    from icecontext.evaluation.plots import save_figure
    from icecontext.plotting.charts import draw_chart
    from icecontext.plotting.scene import block_nanmean, display_factor, sar_db

    shape = next(iter(maps.reference.values())).shape
    k = display_factor(shape, max_size)
    fig = Figure(figsize=(17, 12), layout="constrained")
    axes = fig.subplots(3, 4)
    inputs: list[tuple[str, np.ndarray | None, str]] = [
        ("HH (dB)", None, "nersc_sar_primary"),
        ("HV (dB)", None, "nersc_sar_secondary"),
        ("AMSR2 36.5 GHz H (K)", None, "btemp_36_5h"),
    ]
    if maps.path is not None:
        ds = open_scene(maps.path, validate=False)
        try:
            from icecontext.data.io.variables import denormalise

            for i, (title, _, var) in enumerate(inputs):
                if var.startswith("nersc"):
                    img = block_nanmean(sar_db(ds, var), k)
                else:
                    tb = denormalise(var, np.asarray(ds[var].values))
                    img = upsample_nearest(tb, 25, shape)[::k, ::k]
                inputs[i] = (title, img, var)
        finally:
            ds.close()
    for row, task in enumerate(CHARTS):
        title, image, _ = inputs[row]
        ax = axes[row, 0]
        if image is not None:
            im = ax.imshow(image, cmap="gray" if "dB" in title else "viridis")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(title, fontsize=10)
        for col, (label, charts) in enumerate(
            (
                ("reference", maps.reference),
                ("network", maps.network),
                ("AMSR2 per-pixel baseline", maps.baseline),
            ),
            start=1,
        ):
            ax = axes[row, col]
            if task in charts:
                draw_chart(
                    ax,
                    task,  # type: ignore[arg-type]
                    _display(charts[task], k),
                    title=f"{task} {label}",
                    legend=col == 3,
                )
            else:
                ax.set_title(f"{task} {label}: n/a", fontsize=10)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    km = (shape[0] * PIXEL_SPACING_M / 1000, shape[1] * PIXEL_SPACING_M / 1000)
    fig.suptitle(
        f"{maps.name}: held-out test scene, {shape[0]} x {shape[1]} px ({km[0]:.0f} x "
        f"{km[1]:.0f} km); grey = masked",
        fontsize=12,
    )
    return save_figure(fig, path, dpi=80)


def _fmt(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "n/a" if not np.isfinite(v) else f"{v:.1f}"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def self_check_text(scores: dict[str, dict[str, Any]], margin: float) -> str:
    """The report's self-check paragraph: the rule, the verdict and both gaps.

    The verdict is :func:`~icecontext.workflows.quickstart.self_check`'s, the rule the
    command's exit status follows.

    Args:
        scores: Combined scores of ``network``, ``amsr2_pixel`` and ``majority``.
        margin: Points required over each baseline (``quickstart.margin``).
    """
    from icecontext.workflows.quickstart import self_check

    passed, gaps = self_check(scores, margin)
    verdict = (
        "**Self-check: passed.** The network clearly beats both baselines."
        if passed
        else "**Self-check: FAILED.** The network does NOT clearly beat both baselines, "
        "so `icecontext quickstart` exits with status 1."
    )
    return (
        f"{verdict} Rule: the network's combined score must be at least {margin:g} points "
        f"(`quickstart.margin`) above each baseline's. Network minus per-pixel AMSR2: "
        f"{gaps['amsr2_pixel']:+.2f}; network minus majority class: {gaps['majority']:+.2f}."
    )


@dataclass(frozen=True)
class ReportInputs:
    """What the quickstart report describes.

    Attributes:
        cfg: The run configuration as trained (plan applied).
        qs: The quickstart settings.
        result: The training run's result.
        scorer: The network's scorer on the test scenes (per-scene breakdown).
        scores: SIC, SOD, FLOE and combined score of ``network``, ``amsr2_pixel`` and
            ``majority``.
        majority: The fitted majority-class baseline.
        pixel: The fitted per-pixel AMSR2 baseline.
        maps: The scene collected for the map figure.
        plan: The work plan and the scored checkpoint.
        timings: Seconds per phase.
        scored: Names of the test scenes scored.
    """

    cfg: RunConfig
    qs: QuickstartSection
    result: RunResult
    scorer: ChartScorer
    scores: dict[str, dict[str, Any]]
    majority: MajorityBaseline
    pixel: PixelBaseline
    maps: MapCollector
    plan: dict[str, Any]
    timings: dict[str, float]
    scored: list[str]

    @property
    def checkpoint_name(self) -> str:
        """File name of the scored checkpoint (``last.ckpt`` or ``best.ckpt``)."""
        return Path(str(self.plan.get("checkpoint", "best.ckpt"))).name


def _header_lines(timings: dict[str, float]) -> list[str]:
    """Title and the line saying when, by what and where the report was made."""
    import os

    import torch

    from icecontext.provenance import git_commit

    return [
        "# icecontext quickstart report",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by icecontext {__version__} "
        f"(commit {git_commit() or 'unknown'}) on {_cpu_name()}, "
        f"{torch.get_num_threads()} torch thread(s), {os.cpu_count()} CPU cores; "
        f"total {timings.get('total_s', 0) / 60:.1f} min.",
        "",
    ]


def _score_lines(inputs: ReportInputs) -> list[str]:
    """The score table of the network and both baselines, the self-check, the baselines."""
    scores, majority, pixel = inputs.scores, inputs.majority, inputs.pixel
    lines = [
        "## Scores on the held-out test scenes",
        "",
        f"AutoICE challenge metric on {len(inputs.scored)} synthetic test scenes never seen "
        "in training, all pixels pooled, scored at 80 m against the reference charts (SIC: "
        "R² of the class index; SOD, FLOE: weighted F1; x100; combined = (2 SIC + 2 SOD + "
        "FLOE) / 5).",
        "",
        "| model | SIC | SOD | FLOE | combined |",
        "|---|---:|---:|---:|---:|",
    ]
    for key in ("network", "amsr2_pixel", "majority"):
        row = [_fmt(scores[key][c]) for c in (*CHARTS, "combined")]
        name = MODEL_LABELS[key]
        if key == "network":
            name = f"**{name} ({inputs.checkpoint_name})**"
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return [
        *lines,
        "",
        self_check_text(scores, inputs.qs.margin),
        "",
        f"- majority classes (from the training pixels): SIC {majority.classes['SIC']}, "
        f"SOD {majority.classes['SOD']}, FLOE {majority.classes['FLOE']};",
        f"- AMSR2 baseline: logistic regression per chart on the {len(pixel.features)} "
        f"AMSR2 brightness temperatures of single pixels, fitted on "
        f"{pixel.n_train['SIC']:,} training pixels per chart drawn from the network's "
        "training scenes; it has neither SAR nor spatial context.",
        "",
    ]


def _per_scene_lines(scorer: ChartScorer) -> list[str]:
    """The network's scores per test scene."""
    lines = [
        "Per test scene (network):",
        "",
        "| scene | SIC | SOD | FLOE | combined | labelled SIC px |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for _, r in scorer.breakdown("scene").reset_index().iterrows():
        lines.append(
            f"| {r['scene']} | {_fmt(r['SIC'])} | {_fmt(r['SOD'])} | {_fmt(r['FLOE'])} | "
            f"{_fmt(r['combined'])} | {int(r['n_SIC']):,} |"
        )
    return [*lines, ""]


def _map_lines(maps: MapCollector, maps_png: Path | None) -> list[str]:
    """The map figure's section (none when no scene was collected)."""
    if maps_png is None:
        return []
    return [
        f"## Maps: {maps.name}",
        "",
        "The test scene with the most ice and stages of development: inputs (left) "
        "and, per chart, the reference, the network's prediction and the per-pixel "
        "AMSR2 baseline's.",
        "",
        "![maps](maps.png)",
        "",
    ]


def _setup_lines(cfg: RunConfig, qs: QuickstartSection) -> list[str]:
    """The training data, inputs and model of the run."""
    s = qs.synth
    k = cfg.data.downsample
    px_km = PIXEL_SPACING_M * k / 1000
    last_seed = s.seed + s.train_scenes + s.val_scenes + s.test_scenes - 1
    return [
        f"- data: {s.train_scenes} training + {s.val_scenes} validation + {s.test_scenes} "
        f"test scenes of {s.height} x {s.width} px at 80 m "
        f"({s.height * 0.08:.0f} x {s.width * 0.08:.0f} km), generator scales "
        f"'{s.scale}', seeds {s.seed}..{last_seed};",
        f"- inputs: {len(cfg.data.channels)} channels ({', '.join(cfg.data.features)}), "
        f"downsampled x{k} ({px_km * 1000:.0f} m pixels), patches of {cfg.data.patch_size} px "
        f"({cfg.data.patch_size * px_km:.1f} km), batch {cfg.data.batch_size};",
        f"- model: {cfg.model.encoder.name} to {cfg.model.encoder.depth} (output stride "
        f"{cfg.model.encoder.output_stride}), one ASPP decoder per chart with rates "
        f"{cfg.model.aspp.rates}, SIC {cfg.model.sic_mode};",
    ]


def _work_lines(inputs: ReportInputs) -> list[str]:
    """How much the run trained: fixed work, or the time budget and its calibration."""
    plan, qs = inputs.plan, inputs.qs
    tried = ", ".join(
        f"{key.split('@')[1]}: {value:.2f} s"
        for key, value in sorted(plan.items())
        if key.startswith("step_s@")
    )
    threads = int(plan.get("threads", 0))
    precision = plan.get("precision", "n/a")
    done = (
        f"{inputs.result.steps} steps done in {inputs.timings.get('train_s', 0) / 60:.1f} min "
        f"with {threads} torch thread(s) (`trainer.threads`) in {precision} "
        "(`trainer.precision`)"
    )
    epochs, per_epoch = plan["epochs"], int(plan["steps_per_epoch"])
    if plan.get("mode", "fixed") == "fixed":
        return [
            f"- work: fixed at {epochs} epochs of {per_epoch} steps = {epochs * per_epoch} "
            f"steps (`quickstart.epochs`), nothing timed, so the run is the same on a busy "
            f"machine as on an idle one; {done};"
        ]
    lines = [
        f"- work: time budget of {qs.minutes:g} min (`quickstart.minutes`); calibration "
        f"measured {plan['step_s']:.2f} s per training step (by torch thread count: "
        f"{tried}) and {plan['val_scene_s']:.1f} s per validation scene, so the run was "
        f"sized to {epochs} epochs of {per_epoch} steps; {done};"
    ]
    if plan.get("budget_epochs", epochs) < epochs:
        lines.append(
            f"- the budget alone bought {int(plan['budget_epochs'])} epoch(s); "
            f"`quickstart.min_epochs` raised it to {epochs}, so this run took "
            "longer than the budget (a busy machine) rather than training too little;"
        )
    return lines


def _scored_weights_line(inputs: ReportInputs) -> str:
    """Which weights the scores are of: the final ones or the best validation epoch."""
    cfg, result = inputs.cfg, inputs.result
    sched = cfg.train.scheduler
    lr = cfg.train.optimizer.lr
    final_lr = f"{lr * sched.min_lr_ratio:.1e}" if sched.name == "cosine" else "n/a"
    best_text = (
        f"best validation combined score {_fmt(result.best_score)} at epoch {result.best_epoch}"
    )
    if getattr(inputs.qs, "checkpoint", "best") == "last":
        return (
            f"- scored: the final weights (`run/checkpoints/last.ckpt`, after {result.epochs} "
            f"epochs, learning rate {sched.name} from {lr:.1e} to {final_lr}; "
            f"`quickstart.checkpoint: last`); the {best_text} (`best.ckpt`) is not used: "
            f"on {cfg.data.splits.val_count} validation scene(s) the score swings too much "
            "from epoch to epoch to choose by."
        )
    return f"- scored: the {best_text} (`run/checkpoints/best.ckpt`, `quickstart.checkpoint`)."


def _training_lines(inputs: ReportInputs) -> list[str]:
    """The training section: curves, data, inputs, model, work and the scored weights."""
    return [
        "## Training",
        "",
        "![training curves](run/curves.png)",
        "",
        *_setup_lines(inputs.cfg, inputs.qs),
        *_work_lines(inputs),
        _scored_weights_line(inputs),
        "",
    ]


def _closing_lines(out: Path, inputs: ReportInputs) -> list[str]:
    """Confusion matrices, timings and the commands to go further."""
    lines = ["## Confusion matrices (network, test scenes)", ""]
    lines += [f"![{CHART_LONG_NAMES[c]}](eval/confusion_{c}.png)" for c in CHARTS]
    lines += [
        "",
        "Per-class F1: `eval/per_class_f1.png`; all numbers: `eval/metrics.json`, `eval/*.csv`.",
        "",
        "## Timings",
        "",
        "| step | seconds |",
        "|---|---:|",
    ]
    lines += [
        f"| {key.removesuffix('_s')} | {value:.0f} |" for key, value in inputs.timings.items()
    ]
    return [
        *lines,
        "",
        "## Next",
        "",
        "```bash",
        f"icecontext evaluate --checkpoint {out}/run/checkpoints/{inputs.checkpoint_name} "
        f"--scenes {out}/data/test",
        f"tensorboard --logdir {out}/run/logs",
        "icecontext train --config configs/train/small_cpu.yaml data.store=YOUR_STORE",
        "```",
        "",
    ]


def write_report(out: Path, inputs: ReportInputs) -> Path:
    """Write ``report.md`` (and ``maps.png``) into ``out`` and return the report path."""
    out = Path(out)
    maps_png = plot_maps(inputs.maps, out / "maps.png")
    lines = [
        *_header_lines(inputs.timings),
        *_score_lines(inputs),
        *_per_scene_lines(inputs.scorer),
        *_map_lines(inputs.maps, maps_png),
        *_training_lines(inputs),
        *_closing_lines(out, inputs),
    ]
    return write_text_atomic(out / "report.md", "\n".join(lines))
