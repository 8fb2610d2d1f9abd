"""``icecontext rf --config C``: receptive field per task and ASPP branch, in pixels and km.

Prints, per task and ASPP branch, the theoretical receptive field, the measured extent
of non-zero input gradients (positive surrogate of the model) and, per task, the
effective receptive field (95 % of the gradient mass, Luo et al. 2016). Then the trained
context (:mod:`icecontext.models.trained_context`): per rate, the share of feature
positions at which its taps read data in a training patch, and per task the trained
field (rates that train, capped at 2 x patch - 1) and the field applied at the inference
tile. Reads the ``model:`` section of any config and only ``features``/``downsample``/
``patch_size`` of ``data:`` and ``validation.tile`` of ``train:``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from icecontext.atomic import atomic_path, check_writable
from icecontext.errors import ConfigError

if TYPE_CHECKING:
    from icecontext.models.config import ModelSpec
    from icecontext.models.receptive_field import Extent, TaskMeasurement, TaskRF

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument(
        "--config", "-c", type=Path, required=True, help="YAML file with a model section"
    )
    parser.add_argument("--plot", type=Path, help="write gradient profiles to this PNG")
    parser.add_argument(
        "--input-size",
        type=int,
        help="width in pixels of the measurement strip (default: widest field + 4 cells)",
    )
    parser.add_argument(
        "--height", type=int, help="height of the measurement strip (default: output stride + 1)"
    )
    parser.add_argument("--samples", type=int, default=2, help="random inputs for the ERF")
    parser.add_argument("--mass", type=float, default=0.95, help="gradient mass of the ERF")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    parser.add_argument("--device", default="cpu", help="torch device for the measurement")
    parser.add_argument(
        "--theory-only", action="store_true", help="skip the gradient measurements (instant)"
    )
    parser.add_argument("--no-erf", action="store_true", help="skip the effective receptive field")
    add_context_arguments(parser)
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. model.aspp.rates=[1]",
    )


def add_context_arguments(parser: argparse.ArgumentParser) -> None:
    """``--patch-size`` and ``--tile`` (shared with ``model-summary``)."""
    parser.add_argument(
        "--patch-size",
        type=int,
        help="training patch side in pixels for the trained field (default: data.patch_size)",
    )
    parser.add_argument(
        "--tile",
        type=int,
        help="inference tile side in pixels for the applied field (default: train.validation.tile)",
    )


def check_context_arguments(args: argparse.Namespace) -> None:
    """Refuse ``--patch-size`` / ``--tile`` below 1 (before any model is built).

    Raises:
        ConfigError: Naming the flag.
    """
    for flag, value in (("--patch-size", args.patch_size), ("--tile", args.tile)):
        if value is not None and value < 1:
            raise ConfigError(flag, f"must be >= 1, got {value}")


def trained_context_report(
    spec: ModelSpec, theory: Mapping[str, TaskRF], patch: int | None, tile: int | None
) -> str:
    """The trained-context tables of a model spec, saying where patch and tile came from.

    Args:
        spec: The model spec read from the config.
        theory: Its theoretical receptive fields.
        patch: ``--patch-size`` (``None``: the config's ``data.patch_size``, else the
            default of that option).
        tile: ``--tile`` (``None``: ``train.validation.tile``, else its default).
    """
    from icecontext.data.config import DataConfig
    from icecontext.models.trained_context import (
        format_trained_context,
        trained_context,
        trained_fields,
    )
    from icecontext.run.config import ValidationConfig

    def pick(
        arg: int | None, flag: str, configured: int | None, option: str, default: int
    ) -> tuple[int, str]:
        if arg is not None:
            return arg, flag
        if configured is not None:
            return configured, option
        return default, f"default of {option}"

    patch_px, patch_source = pick(
        patch,
        "--patch-size",
        spec.patch_size,
        "data.patch_size",
        int(DataConfig.model_fields["patch_size"].default),
    )
    tile_px, tile_source = pick(
        tile,
        "--tile",
        spec.tile,
        "train.validation.tile",
        int(ValidationConfig.model_fields["tile"].default),
    )
    context = trained_context(spec.model, patch_px)
    return format_trained_context(
        context,
        trained_fields(theory, context, tile_px),
        spec.downsample,
        patch_source=patch_source,
        tile=tile_px,
        tile_source=tile_source,
    )


def _fmt_px(px: int | None, truncated: bool = False) -> str:
    if px is None:
        return "global"
    return f">={px}" if truncated else str(px)


def _fmt_km(km: float | None) -> str:
    return "global" if km is None else f"{km:.2f}"


def run(args: argparse.Namespace) -> int:
    """Build the model, compute and print the table; optionally plot."""
    from icecontext.models.config import load_model_spec
    from icecontext.models.multitask import build_model
    from icecontext.models.receptive_field import (
        ERFSettings,
        default_width,
        measure_receptive_fields,
        theoretical_receptive_fields,
    )

    _check_arguments(args)
    spec = load_model_spec(args.config, args.overrides)
    model = build_model(spec.model, spec.in_channels, seed=args.seed)
    stride = model.encoder.output_stride
    width = args.input_size or default_width(model)
    if width < 2 * stride:
        raise ConfigError("--input-size", f"must be at least {2 * stride} pixels, got {width}")
    height = min(args.height or stride + 1, width)

    theory = theoretical_receptive_fields(model)
    measured = None
    if not args.theory_only:
        erf = None if args.no_erf else ERFSettings(args.samples, args.mass, args.seed)
        measured = measure_receptive_fields(model, width, height, erf=erf, device=args.device)

    _print_setup(args, spec, stride, f"{height} x {width}", measured is not None)
    worst = _print_table(theory, measured, spec.downsample, erf=not args.no_erf)
    if measured is not None:
        verdict = "within" if worst <= stride else "NOT within"
        print(
            f"theory vs non-zero gradient extent: largest difference {worst} px, {verdict} one "
            f"feature cell ({stride} px)"
        )
    print()
    print(trained_context_report(spec, theory, args.patch_size, args.tile))
    if args.plot is not None:
        if measured is None:
            raise ConfigError("--plot", "needs the measurements; drop --theory-only")
        _plot(args.plot, theory, measured, spec.downsample, args.mass)
        print(f"plot written to {args.plot}")
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse bad ``--samples``, ``--mass``, ``--plot`` and context options up front.

    Raises:
        ConfigError: Naming the flag.
    """
    if args.samples < 1:
        raise ConfigError("--samples", f"must be >= 1, got {args.samples}")
    if args.plot is not None:
        check_writable(args.plot, "--plot", folder=False)
    if not 0 < args.mass <= 1:
        raise ConfigError("--mass", f"must be in (0, 1], got {args.mass}")
    check_context_arguments(args)


def _print_setup(
    args: argparse.Namespace, spec: ModelSpec, stride: int, strip: str, measured: bool
) -> None:
    """The model line and, with measurements, how they were taken."""
    from icecontext.models.receptive_field import pixels_to_km

    enc = spec.model.encoder
    print(
        f"{args.config}: {enc.name} ({enc.backend}) to {enc.depth}, output stride {stride}, "
        f"{spec.in_channels} inputs; 1 px = {pixels_to_km(1, spec.downsample) * 1000:.0f} m "
        f"(80 m x downsample {spec.downsample})"
    )
    if measured:
        print(
            f"measured on a {strip} strip along the row through its centre pixel; "
            f"ERF = width holding {args.mass:.0%} of |input gradient| "
            f"({args.samples} random inputs, seed {args.seed})"
        )


def _print_table(
    theory: Mapping[str, TaskRF],
    measured: Mapping[str, TaskMeasurement] | None,
    downsample: int,
    *,
    erf: bool,
) -> int:
    """Print one row per task and branch plus the network row of each task.

    Returns:
        The largest difference in pixels between a finite theoretical field and its
        measured non-zero extent (0 without measurements).
    """
    from icecontext.models.receptive_field import pixels_to_km

    def km(px: int | None) -> str:
        return _fmt_km(None if px is None else pixels_to_km(px, downsample))

    header = (
        f"{'task':<5} {'branch':<12} {'module':<28} {'theory px':>9} {'theory km':>9} "
        f"{'nonzero px':>10} {'ERF px':>7} {'ERF km':>7}"
    )
    print(header)
    print("-" * len(header))
    worst = 0
    for task, rf in theory.items():
        m = measured[task] if measured is not None else None
        for i, b in enumerate(rf.branches):
            got = ""
            if m is not None:
                got, diff = _measured_cell(b.total_px, m.branch_extent[i])
                worst = max(worst, diff)
            print(
                f"{task:<5} {b.name:<12} {b.module:<28} {_fmt_px(b.total_px):>9} "
                f"{km(b.total_px):>9} {got:>10}"
            )
        got, erf_px, erf_km = "", "", ""
        if m is not None:
            got, diff = _measured_cell(rf.total_px, m.total_extent)
            worst = max(worst, diff)
            if erf:
                erf_px, erf_km = str(m.erf_px), km(m.erf_px)
        print(
            f"{task:<5} {'network':<12} {'decoders.' + rf.decoder:<28} {_fmt_px(rf.total_px):>9} "
            f"{km(rf.total_px):>9} {got:>10} {erf_px:>7} {erf_km:>7}"
        )
    return worst


def _measured_cell(theory_px: int | None, extent: Extent) -> tuple[str, int]:
    """The measured extent as printed, and its difference from a finite theory."""
    got = _fmt_px(None if theory_px is None and extent.truncated else extent.px, extent.truncated)
    return got, (0 if theory_px is None else abs(theory_px - extent.px))


def _plot(
    path: Path,
    theory: Mapping[str, TaskRF],
    measured: Mapping[str, TaskMeasurement],
    downsample: int,
    mass: float,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from icecontext.models.receptive_field import pixels_to_km

    tasks = list(theory)
    fig, axes = plt.subplots(len(tasks), 1, figsize=(8, 2.4 * len(tasks)), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, task in zip(axes, tasks, strict=True):
        m = measured[task]
        offsets = pixels_to_km(np.arange(m.erf_profile.size) - m.centre, downsample)
        if m.erf_profile.sum() > 0:
            ax.plot(offsets, m.erf_profile / m.erf_profile.max(), label="|input gradient| (ERF)")
        nz = np.flatnonzero(m.extent_profile > 0)
        if nz.size:
            ax.axvspan(offsets[nz[0]], offsets[nz[-1]], color="0.85", label="non-zero extent")
        total = theory[task].total_px
        if total is not None:
            half = pixels_to_km(total / 2, downsample)
            ax.axvline(-half, color="k", ls="--", lw=1, label="theoretical field")
            ax.axvline(half, color="k", ls="--", lw=1)
        if m.erf_px:
            half = pixels_to_km(m.erf_px / 2, downsample)
            ax.axvline(-half, color="C1", ls=":", lw=1, label=f"ERF ({mass:.0%})")
            ax.axvline(half, color="C1", ls=":", lw=1)
        ax.set_ylabel(task)
        ax.legend(loc="upper right", fontsize=7)
    axes[-1].set_xlabel("offset from the output pixel (km)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
