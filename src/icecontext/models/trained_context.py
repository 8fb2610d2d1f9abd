"""Trained context: which ASPP taps read data in training patches, and the fields that follow.

With zero padding, a 3x3 ASPP tap of dilation ``r`` reads real data only at the
feature positions from which it lands inside the feature map. A training patch of
``P`` input pixels gives a map of ``W = ceil(P / OS)`` cells (``OS`` = output stride;
what the timm and torchvision encoders produce, tested). Along one axis the
off-centre tap at offset ``+r`` reads data at the positions ``p`` with
``p + r <= W - 1``, so

``axis share = max(0, W - r) / W``

(the tap at ``-r`` reads data at as many positions). The diagonal tap ``(+r, +r)``,
the worst one, reads data where both axes do: ``share(H) * share(W)``. A rate is
*trained* when its axis share is positive: every tap then reads data at some position
of a training patch (for a square patch the diagonal too) and gets a gradient. A
rate whose taps read only zero padding never learns: its weights stay random, yet
inference, on tiles larger than the patch, switches them on.

* smallest patch that trains rate ``r`` (a multiple of OS): ``W >= r + 1``, so
  ``P >= (r + 1) * OS``;
* smallest patch that trains it on at least half the positions: ``W >= 2 r``, so
  ``P >= 2 r * OS``.

The 1x1 branch has no off-centre tap. An ``avg:K`` pooling branch (stride-1 average,
``count_include_pad=False``) always covers its own cell and averages only cells
inside the map, so it reads data at every position; ``global`` pooling averages the
whole patch at every position (at inference it averages the whole tile instead, see
docs/models.md). Both count as reading data everywhere.

Fields (:func:`trained_fields`):

* *trained field*: the theoretical receptive field
  (:func:`icecontext.models.receptive_field.theoretical_receptive_fields`) through the
  trained branches only, capped at ``2 P - 1`` (no dependency longer than the patch can
  be learnt);
* *applied field* at an inference tile ``T``: the theoretical field through every
  branch (what inference runs), capped at ``2 T - 1``.

:func:`check_trained_context` refuses (``ConfigError``) a configuration with an
untrained rate unless ``model.allow_untrained_taps`` is set, and logs one warning per
task and rate trained on less than half the positions. This module needs no torch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from icecontext.data.io.format import CHARTS
from icecontext.errors import ConfigError
from icecontext.models.config import SECTION, ModelConfig

if TYPE_CHECKING:
    from icecontext.models.receptive_field import TaskRF

log = logging.getLogger(__name__)

HALF: Final = 0.5
"""Axis share below which a trained rate draws a warning."""

_warned: set[str] = set()  # warnings already logged by this process (printed once)


def feature_cells(patch: int, output_stride: int) -> int:
    """Feature-map cells along one axis of a ``patch``-pixel input: ``ceil(patch / OS)``."""
    if patch < 1 or output_stride < 1:
        raise ValueError(f"patch and output stride must be >= 1, got {patch}, {output_stride}")
    return -(-patch // output_stride)


def axis_share(rate: int, cells: int) -> float:
    """Share of the ``cells`` positions of one axis at which the tap at ``+rate`` reads data."""
    return max(0, cells - rate) / cells


def smallest_trained_patch(rate: int, output_stride: int) -> int:
    """Smallest patch (px, a multiple of OS) in which rate ``rate`` reads data somewhere."""
    return (rate + 1) * output_stride


def smallest_half_trained_patch(rate: int, output_stride: int) -> int:
    """Smallest patch (px, a multiple of OS) in which ``rate`` reads data at half the positions."""
    return 2 * rate * output_stride


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


@dataclass(frozen=True)
class BranchShare:
    """Where one ASPP branch reads data in a training patch.

    Attributes:
        index: Branch index (``aspp.branches.<index>``): 0 = 1x1, then the rates, then
            the pooling branch.
        name: ``1x1``, ``rate R``, ``pool avg:K`` or ``pool global``.
        rate: The atrous rate, ``None`` for the 1x1 and pooling branches.
        axis: Share of positions at which the off-centre taps along the narrower axis
            read data (1 for branches without off-centre taps).
        diagonal: The same for the diagonal taps (the product of the two axes' shares).
        trained_from: Smallest square patch (px) that trains the rate; ``None`` if no rate.
        half_from: Smallest square patch (px) that trains it on half the positions.
    """

    index: int
    name: str
    rate: int | None
    axis: float
    diagonal: float
    trained_from: int | None = None
    half_from: int | None = None

    @property
    def trained(self) -> bool:
        """Whether every tap reads data at some position of a training patch."""
        return self.axis > 0

    @property
    def under_half(self) -> bool:
        """Trained, but on less than half the positions along an axis."""
        return self.trained and self.axis < HALF


@dataclass(frozen=True)
class TaskContext:
    """The branches of one task's decoder in a training patch.

    Attributes:
        task: Task name.
        decoder: ``shared`` or the task.
        option: The option that sets the task's rates (``model.aspp.rates`` or
            ``model.task_rates.<task>``).
        branches: Every ASPP branch, in module order.
    """

    task: str
    decoder: str
    option: str
    branches: tuple[BranchShare, ...]

    @property
    def rates(self) -> list[BranchShare]:
        """The atrous-rate branches."""
        return [b for b in self.branches if b.rate is not None]

    @property
    def untrained(self) -> list[BranchShare]:
        """Rate branches whose taps read only zero padding."""
        return [b for b in self.rates if not b.trained]

    @property
    def under_half(self) -> list[BranchShare]:
        """Rate branches trained on less than half the positions."""
        return [b for b in self.rates if b.under_half]


@dataclass(frozen=True)
class TrainedContext:
    """Per task and ASPP branch, where the taps read data in a training patch.

    Attributes:
        patch: Training patch ``(height, width)`` in input pixels.
        output_stride: Input pixels per feature cell.
        cells: Feature-map ``(height, width)`` of a patch.
        allow_untrained_taps: ``model.allow_untrained_taps``.
        tasks: One entry per task, in output order.
    """

    patch: tuple[int, int]
    output_stride: int
    cells: tuple[int, int]
    allow_untrained_taps: bool
    tasks: dict[str, TaskContext]

    @property
    def untrained(self) -> list[tuple[str, BranchShare]]:
        """``(task, branch)`` of every untrained rate."""
        return [(t, b) for t, c in self.tasks.items() for b in c.untrained]

    @property
    def under_half(self) -> list[tuple[str, BranchShare]]:
        """``(task, branch)`` of every rate trained on less than half the positions."""
        return [(t, b) for t, c in self.tasks.items() for b in c.under_half]

    def describe_patch(self) -> str:
        """``128 px training patches (8 x 8 feature cells at output stride 16)``."""
        h, w = self.patch
        size = f"{h} px" if h == w else f"{h} x {w} px"
        return (
            f"{size} training patches ({self.cells[0]} x {self.cells[1]} feature cells at "
            f"output stride {self.output_stride})"
        )

    def record(self) -> dict[str, Any]:
        """A JSON-friendly record of the shares (for a run's metrics.json and provenance)."""
        return {
            "patch_px": list(self.patch),
            "output_stride": self.output_stride,
            "feature_cells": list(self.cells),
            "allow_untrained_taps": self.allow_untrained_taps,
            "untrained_taps": bool(self.untrained),
            "tasks": {
                task: {
                    "decoder": c.decoder,
                    "rates": [
                        {
                            "rate": b.rate,
                            "axis_share": b.axis,
                            "diagonal_share": b.diagonal,
                            "trained": b.trained,
                            "trained_from_px": b.trained_from,
                            "half_from_px": b.half_from,
                        }
                        for b in c.rates
                    ],
                }
                for task, c in self.tasks.items()
            },
        }


def _branch_shares(
    model: ModelConfig, rates: list[int], cells: tuple[int, int], stride: int
) -> tuple[BranchShare, ...]:
    out = [BranchShare(0, "1x1", None, 1.0, 1.0)]
    for i, r in enumerate(rates, start=1):
        sh, sw = axis_share(r, cells[0]), axis_share(r, cells[1])
        out.append(
            BranchShare(
                i,
                f"rate {r}",
                r,
                min(sh, sw),
                sh * sw,
                smallest_trained_patch(r, stride),
                smallest_half_trained_patch(r, stride),
            )
        )
    pooling = model.aspp.pooling_choice
    if pooling.kind != "none":
        out.append(BranchShare(len(rates) + 1, f"pool {pooling}", None, 1.0, 1.0))
    return tuple(out)


def trained_context(
    model: ModelConfig, patch: int | tuple[int, int], output_stride: int | None = None
) -> TrainedContext:
    """Where each task's ASPP taps read data in training patches of ``patch`` pixels.

    Args:
        model: The model section.
        patch: Training patch side (``data.patch_size``), or ``(height, width)``, in
            model-input pixels.
        output_stride: Input pixels per feature cell (default: the encoder's).

    Returns:
        The shares per task and branch.
    """
    stride = model.encoder.output_stride if output_stride is None else output_stride
    size = _pair(patch)
    cells = (feature_cells(size[0], stride), feature_cells(size[1], stride))
    tasks: dict[str, TaskContext] = {}
    for task in CHARTS:
        if model.shared_decoder:
            decoder, option = "shared", f"{SECTION}.aspp.rates"
        else:
            decoder = task
            option = (
                f"{SECTION}.task_rates.{task}"
                if task in model.task_rates
                else f"{SECTION}.aspp.rates"
            )
        branches = _branch_shares(model, model.rates_for(task), cells, stride)
        tasks[task] = TaskContext(task, decoder, option, branches)
    return TrainedContext(size, stride, cells, model.allow_untrained_taps, tasks)


def _rates_text(rates: Iterable[int]) -> str:
    return ", ".join(str(r) for r in rates)


def _pct(share: float) -> str:
    """A share as a percentage, never rounding a positive share to 0."""
    pct = 100 * share
    if 0 < pct < 1:
        return "<1 %"
    return f"{pct:.0f} %"


def untrained_message(context: TrainedContext) -> str | None:
    """The refusal text for ``context`` (``None`` when every rate trains)."""
    untrained = context.untrained
    if not untrained:
        return None
    task, first = untrained[0]
    stride = context.output_stride
    text = (
        f"rate {first.rate} of task {task} reads only zero padding in "
        f"{context.describe_patch()}; the smallest patch (a multiple of {stride} px) that "
        f"trains it is {first.trained_from} px"
    )
    others: dict[str, list[int]] = {}
    for t, b in untrained[1:]:
        others.setdefault(t, []).append(int(b.rate or 0))
    if others:
        text += "; also untrained: " + "; ".join(
            f"{t} {_rates_text(rs)}" for t, rs in others.items()
        )
        every = smallest_trained_patch(max(int(b.rate or 0) for _, b in untrained), stride)
        if every > (first.trained_from or 0):
            text += f"; every rate trains from {every} px"
    return text + " (or lower the rate / output stride, or set model.allow_untrained_taps: true)"


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def check_trained_context(
    model: ModelConfig, patch: int | tuple[int, int], output_stride: int | None = None
) -> TrainedContext:
    """Refuse untrained ASPP taps; warn about taps trained on less than half the positions.

    Warnings are logged once per process and message (one line per task and rate).

    Args:
        model: The model section.
        patch: Training patch side or ``(height, width)``, in model-input pixels.
        output_stride: Input pixels per feature cell (default: the encoder's).

    Returns:
        The context (for the run's records).

    Raises:
        ConfigError: Naming the option that sets the first untrained rate (its task,
            rate, the patch, feature cells and output stride, and the smallest patch
            that trains it), unless ``model.allow_untrained_taps`` is true.
    """
    context = trained_context(model, patch, output_stride)
    message = untrained_message(context)
    if message is not None:
        task, _ = context.untrained[0]
        option = context.tasks[task].option
        if not model.allow_untrained_taps:
            raise ConfigError(option, message)
        _warn_once(
            f"{SECTION}.allow_untrained_taps is true: "
            + message.split(" (or lower", 1)[0]
            + "; those taps keep their random weights and run at inference"
        )
    for task, b in context.under_half:
        _warn_once(
            f"{context.tasks[task].option}: rate {b.rate} of task {task} reads data at only "
            f"{_pct(b.axis)} of the positions along an axis ({_pct(b.diagonal)} on the "
            f"diagonal) in {context.describe_patch()}; {b.half_from} px patches train it on "
            "half"
        )
    return context


# ----------------------------------------------------------------------------- fields


@dataclass(frozen=True)
class TaskFields:
    """Theoretical, trained and applied receptive field of one task, in input pixels.

    Attributes:
        task: Task name.
        theory_px: Through every branch (``None``: global pooling, the whole input).
        trained_px: Through the trained branches only, capped at ``2 * patch - 1``.
        applied_px: Through every branch, capped at ``2 * tile - 1`` (``None`` without
            a tile, or with global pooling and no tile).
        untrained_rates: Rates dropped from the trained field.
    """

    task: str
    theory_px: int | None
    trained_px: int
    applied_px: int | None
    untrained_rates: tuple[int, ...]


def _cap(px: int | None, limit: int) -> int:
    return limit if px is None else min(px, limit)


def trained_fields(
    theory: Mapping[str, TaskRF],
    context: TrainedContext,
    tile: int | tuple[int, int] | None = None,
) -> dict[str, TaskFields]:
    """Trained and applied receptive fields per task.

    Args:
        theory: :func:`~icecontext.models.receptive_field.theoretical_receptive_fields`
            of the model ``context`` was computed for.
        context: Its :func:`trained_context` at the training patch size.
        tile: Inference tile side (or ``(height, width)``), e.g. ``train.validation.tile``.

    Returns:
        One entry per task of ``theory``.
    """
    patch_cap = 2 * min(context.patch) - 1
    tile_cap = None if tile is None else 2 * min(_pair(tile)) - 1
    out: dict[str, TaskFields] = {}
    for task, rf in theory.items():
        shares = context.tasks[task].branches
        if [(s.name, s.rate) for s in shares] != [(b.name, b.rate) for b in rf.branches]:
            raise ValueError(f"{task}: the context and the model have different ASPP branches")
        kept = [b for b, s in zip(rf.branches, shares, strict=True) if s.trained]
        trained = (
            patch_cap
            if any(b.total_px is None for b in kept)
            else min(max(int(b.total_px or 0) for b in kept), patch_cap)
        )
        applied = None if tile_cap is None else _cap(rf.total_px, tile_cap)
        untrained = tuple(int(b.rate or 0) for b in context.tasks[task].untrained)
        out[task] = TaskFields(task, rf.total_px, trained, applied, untrained)
    return out


# ----------------------------------------------------------------------------- report


def format_trained_context(
    context: TrainedContext,
    fields: Mapping[str, TaskFields],
    downsample: int = 1,
    *,
    patch_source: str = "data.patch_size",
    tile: int | None = None,
    tile_source: str = "train.validation.tile",
) -> str:
    """Two small tables: the share of positions each rate trains on, and the fields per task.

    Args:
        context: The shares at the training patch size.
        fields: :func:`trained_fields` of the same model.
        downsample: Data downsampling factor (km figures).
        patch_source: Where the patch size came from (printed).
        tile: The inference tile the applied fields were capped with (printed).
        tile_source: Where the tile size came from (printed).
    """
    from icecontext.models.receptive_field import pixels_to_km

    def km(px: int | None) -> str:
        return "global" if px is None else f"{pixels_to_km(px, downsample):.2f}"

    def px(value: int | None) -> str:
        return "global" if value is None else str(value)

    lines = [f"trained context: {context.describe_patch()} [{patch_source}]"]
    if tile is not None:
        lines.append(f"inference tile: {tile} px [{tile_source}]")
    by_rate: dict[int, tuple[BranchShare, list[str]]] = {}
    for task, c in context.tasks.items():
        for b in c.rates:
            by_rate.setdefault(int(b.rate or 0), (b, []))[1].append(task)
    header = (
        f"{'rate':>5}  {'tasks':<13} {'axis':>6} {'diagonal':>8} {'trains from':>11} "
        f"{'half from':>9}  note"
    )
    lines += [header, "-" * len(header)]
    for rate in sorted(by_rate):
        b, tasks = by_rate[rate]
        note = "UNTRAINED" if not b.trained else ("under half" if b.under_half else "")
        lines.append(
            f"{rate:>5}  {' '.join(tasks):<13} {_pct(b.axis):>6} {_pct(b.diagonal):>8} "
            f"{b.trained_from:>8} px {b.half_from:>6} px  {note}".rstrip()
        )
    pools = sorted({b.name for c in context.tasks.values() for b in c.branches if b.rate is None})
    lines.append("axis: share of feature positions at which the taps (+-r, 0), (0, +-r) read data")
    lines.append(
        f"(not zero padding); diagonal: the same for (+-r, +-r); {' and '.join(pools)} read "
        "data at every position"
    )
    header = (
        f"{'task':<5} {'theory px':>9} {'theory km':>9} {'trained px':>10} {'trained km':>10} "
        f"{'at tile px':>10} {'at tile km':>10}  untrained rates"
    )
    lines += ["", header, "-" * len(header)]
    for task, f in fields.items():
        applied = ("", "") if tile is None else (px(f.applied_px), km(f.applied_px))
        lines.append(
            f"{task:<5} {px(f.theory_px):>9} {km(f.theory_px):>9} {f.trained_px:>10} "
            f"{km(f.trained_px):>10} {applied[0]:>10} {applied[1]:>10}  "
            f"{_rates_text(f.untrained_rates) or '-'}"
        )
    lines.append(
        f"trained: the rates that train, capped at 2 x patch - 1 = {2 * min(context.patch) - 1} px"
    )
    if tile is not None:
        lines.append(f"at tile: every rate (what inference runs), capped at {2 * tile - 1} px")
    return "\n".join(lines)
