"""Parameters and FLOPs of the encoder, each decoder and each head.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode` on a copy of the
model on the ``meta`` device, so counting a ResNet-152 at 768 x 768 costs no compute.
The counter counts convolutions and matrix products (2 FLOPs per multiply-add); it
does not count BatchNorm, activations, pooling or the bilinear upsampling, which are
a small fraction of the total.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from icecontext.models.multitask import MultiTaskModel


@dataclass(frozen=True)
class PartSummary:
    """One row of the summary.

    Attributes:
        part: What it is (``encoder``, ``decoder SOD``, ``head SOD``, ``task SOD``, ``total``).
        module: Module name in the model (empty for sums).
        params: Number of parameters.
        flops: FLOPs for one forward pass at the summary's input size and batch.
    """

    part: str
    module: str
    params: int
    flops: int


@dataclass(frozen=True)
class ModelSummary:
    """Parameter and FLOP counts of a model at one input size.

    Attributes:
        rows: Encoder, decoders and heads, then one ``task`` row per task (its decoder
            and head, plus the shared encoder in ``task_with_encoder``), then ``total``.
        input_shape: ``(B, C, H, W)`` counted.
    """

    rows: list[PartSummary]
    input_shape: tuple[int, int, int, int]

    def row(self, part: str) -> PartSummary:
        """The row named ``part``."""
        for r in self.rows:
            if r.part == part:
                return r
        raise KeyError(part)

    @property
    def total(self) -> PartSummary:
        """The ``total`` row."""
        return self.row("total")


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def summarise(model: MultiTaskModel, height: int, width: int, batch: int = 1) -> ModelSummary:
    """Count parameters and forward FLOPs per part of ``model`` for one ``(B, C, H, W)`` input."""
    meta = copy.deepcopy(model).to("meta").eval()
    shape = (batch, model.encoder.in_channels, height, width)
    x = torch.empty(shape, device="meta")
    with FlopCounterMode(display=False) as counter:
        meta(x)
    counts = counter.get_flop_counts()
    root = type(model).__name__

    def flops(name: str) -> int:
        return int(sum(counts.get(f"{root}.{name}", {}).values()))

    rows = [PartSummary("encoder", "encoder", _params(model.encoder), flops("encoder"))]
    for name, decoder in model.decoders.items():
        rows.append(
            PartSummary(
                f"decoder {name}", f"decoders.{name}", _params(decoder), flops(f"decoders.{name}")
            )
        )
    for task, head in model.heads.items():
        rows.append(
            PartSummary(f"head {task}", f"heads.{task}", _params(head), flops(f"heads.{task}"))
        )
    for task in model.tasks:
        parts = [r for r in rows if r.module in (f"decoders.{task}", f"heads.{task}")]
        rows.append(
            PartSummary(
                f"task {task}", "", sum(r.params for r in parts), sum(r.flops for r in parts)
            )
        )
    total_flops = int(sum(counts.get("Global", {}).values()))
    rows.append(PartSummary("total", "", _params(model), total_flops))
    return ModelSummary(rows, shape)


def format_summary(summary: ModelSummary) -> str:
    """Render the summary as a fixed-width table (params in millions, GFLOPs)."""
    b, c, h, w = summary.input_shape
    lines = [
        f"input {b} x {c} x {h} x {w}",
        f"{'part':<16} {'module':<16} {'params':>12} {'params (M)':>11} {'GFLOPs':>11}",
        "-" * 70,
    ]
    first_task = next((i for i, r in enumerate(summary.rows) if r.part.startswith("task ")), -1)
    for i, r in enumerate(summary.rows):
        if i == first_task or r.part == "total":
            lines.append("-" * 70)
        lines.append(
            f"{r.part:<16} {r.module:<16} {r.params:>12,d} {r.params / 1e6:>11.3f} "
            f"{r.flops / 1e9:>11.3f}"
        )
    lines.append(
        "task rows: the task's own decoder and head (the encoder, and a shared decoder, "
        "serve every task)"
    )
    return "\n".join(lines)
