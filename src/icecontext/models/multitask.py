"""The multi-task network: ResNet encoder, ASPP decoders (per task or shared), one head per task.

Submodule names (stable; Grad-CAM and hooks address layers by them; see
:meth:`MultiTaskModel.layer_names`):

=================================  ==============================================
``encoder.layer3``                 last encoder stage (``layer4`` if kept)
``decoders.<D>.aspp.branches.<i>`` ASPP branch i (0 = 1x1, 1..n = rates, n+1 = pool)
``decoders.<D>.aspp.project``      1x1 fusion of the branches
``decoders.<D>.project``           3x3 conv - BN - ReLU after the ASPP
``heads.<T>``                      1x1 convolution to the task's outputs
=================================  ==============================================

``<D>`` is the task (``SIC``, ``SOD``, ``FLOE``) with per-task decoders, or ``shared``;
``<T>`` is always the task.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from icecontext.data.io.format import CHARTS
from icecontext.errors import ConfigError
from icecontext.models.aspp import ASPP, upsample_to
from icecontext.models.backbones import ResNetEncoder, build_encoder
from icecontext.models.config import ModelConfig

SHARED = "shared"
"""Key of the decoder in shared-decoder mode."""


class Decoder(nn.Module):
    """ASPP followed by a 3x3 convolution - BN - ReLU (``project``).

    Args:
        aspp: The ASPP module.
        channels: Width of the 3x3 convolution.
    """

    def __init__(self, aspp: ASPP, channels: int):
        super().__init__()
        self.aspp = aspp
        self.project = nn.Sequential(
            nn.Conv2d(aspp.out_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map encoder features to decoder features at the same resolution."""
        return self.project(self.aspp(x))


class MultiTaskModel(nn.Module):
    """Encoder, decoders and per-task heads; outputs at the input size.

    ``forward(x)`` takes ``(B, C, H, W)`` for any ``H, W`` and returns
    ``{"SIC": (B, 1 or 11, H, W), "SOD": (B, 6, H, W), "FLOE": (B, 7, H, W)}``: raw
    outputs (regression values or logits), bilinearly upsampled from the feature grid.

    Attributes:
        encoder: The ResNet encoder.
        decoders: Decoder per task, or one under ``"shared"``.
        heads: 1x1 output convolution per task.
        sic_regression: Whether SIC is one regression output (else 11 logits).
        config: The :class:`ModelConfig` it was built from (``None`` if built by hand).
    """

    # Read by TorchScript: Python-only members it must not compile.
    __jit_ignored_attributes__ = ["config"]  # noqa: RUF012
    __jit_unused_properties__ = ["tasks", "shared"]  # noqa: RUF012

    def __init__(
        self,
        encoder: ResNetEncoder,
        decoders: nn.ModuleDict,
        heads: nn.ModuleDict,
        sic_regression: bool,
        config: ModelConfig | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.decoders = decoders
        self.heads = heads
        self.sic_regression = sic_regression
        self.config = config

    @property
    def tasks(self) -> list[str]:
        """Task names in output order."""
        return list(self.heads.keys())

    @property
    def shared(self) -> bool:
        """Whether one decoder serves every task."""
        return SHARED in self.decoders

    def decoder_name(self, task: str) -> str:
        """Key in :attr:`decoders` of the decoder that serves ``task``."""
        return SHARED if self.shared else task

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict every task at the input's size."""
        size = [x.shape[-2], x.shape[-1]]
        features = self.encoder(x)
        decoded: dict[str, torch.Tensor] = {}
        for name, decoder in self.decoders.items():
            decoded[name] = decoder(features)
        out: dict[str, torch.Tensor] = {}
        for task, head in self.heads.items():
            z = decoded[task] if task in decoded else decoded["shared"]
            out[task] = upsample_to(head(z), size)
        return out

    @torch.jit.export
    def to_classes(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Class maps ``(B, H, W)`` (int64): :func:`outputs_to_classes`."""
        return outputs_to_classes(outputs, self.sic_regression)

    @torch.jit.export
    def to_probabilities(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Softmax over channels for class outputs: :func:`outputs_to_probabilities`."""
        return outputs_to_probabilities(outputs, self.sic_regression)

    @torch.jit.ignore
    def layer_names(self, task: str | None = None) -> dict[str, str]:
        """Names of the layers worth hooking (Grad-CAM targets), with what each is.

        Args:
            task: Only the layers ``task``'s output depends on; ``None`` for all.

        Returns:
            Mapping of ``named_modules()`` name to a description, encoder first.
        """
        last_stage = [n for n, _ in self.encoder.named_children() if n.startswith("layer")][-1]
        names = {f"encoder.{last_stage}": "encoder output (last kept stage)"}
        tasks = self.tasks if task is None else [task]
        for d in dict.fromkeys(self.decoder_name(t) for t in tasks):
            decoder = self.decoders[d]
            assert isinstance(decoder, Decoder)
            for i, branch in enumerate(decoder.aspp.branch_names()):
                names[f"decoders.{d}.aspp.branches.{i}"] = f"{d} ASPP branch: {branch}"
            names[f"decoders.{d}.aspp.project"] = f"{d} ASPP 1x1 fusion"
            names[f"decoders.{d}.project"] = f"{d} 3x3 conv after the ASPP"
        for t in tasks:
            names[f"heads.{t}"] = f"{t} output head (1x1 conv)"
        return names

    @torch.jit.ignore
    def receptive_field(self) -> int | None:
        """Largest theoretical receptive field over tasks, in input pixels.

        ``None`` when a decoder uses global pooling (the output depends on the whole
        input). Full-scene tiling needs at least half of this as overlap.
        """
        from icecontext.models.receptive_field import theoretical_receptive_fields

        sizes = [rf.total_px for rf in theoretical_receptive_fields(self).values()]
        return None if any(s is None for s in sizes) else max(s for s in sizes if s is not None)


def outputs_to_classes(
    outputs: dict[str, torch.Tensor], sic_regression: bool
) -> dict[str, torch.Tensor]:
    """Turn network outputs into class maps ``(B, H, W)`` (int64).

    SIC regression: the project's one rule, :func:`icecontext.evaluation.sic_to_classes`
    with ``rule="round"``: round half away from zero (2.5 -> 3), clip to 0..10, NaN ->
    255. Written out here so it stays TorchScript-able (the model's ``to_classes``
    calls it); a test keeps the two equal. Class outputs: argmax over channels.
    """
    classes: dict[str, torch.Tensor] = {}
    for task, y in outputs.items():
        if task == "SIC" and sic_regression:
            x = y[:, 0].float()
            a = x.abs()
            fl = a.floor()
            # a - floor(a) is exact in floating point, so halves are detected exactly
            r = torch.copysign(fl + (a - fl >= 0.5).to(x.dtype), x)
            out = torch.nan_to_num(r, nan=0.0).clamp(0, 10).long()  # SIC classes 0..10
            classes[task] = torch.where(torch.isnan(x), torch.full_like(out, 255), out)
        else:
            classes[task] = y.argmax(dim=1)
    return classes


def outputs_to_probabilities(
    outputs: dict[str, torch.Tensor], sic_regression: bool
) -> dict[str, torch.Tensor]:
    """Softmax over channels for class outputs.

    A SIC regression output has no distribution; it is returned as the value clipped to
    ``[0, 10]``, shape ``(B, 1, H, W)``.
    """
    probs: dict[str, torch.Tensor] = {}
    for task, y in outputs.items():
        if task == "SIC" and sic_regression:
            probs[task] = y.clamp(0.0, 10.0)
        else:
            probs[task] = torch.softmax(y, dim=1)
    return probs


def build_model(cfg: ModelConfig, in_channels: int, *, seed: int | None = None) -> MultiTaskModel:
    """Build the multi-task network of ``cfg`` for ``in_channels`` inputs.

    Args:
        cfg: The model section.
        in_channels: Number of input channels (see
            :func:`icecontext.models.config.resolve_in_channels`).
        seed: If given, the random initialisation uses this seed without touching the
            global random state; otherwise it draws from the global torch generator.

    Returns:
        The model in training mode, on the CPU, float32.

    Raises:
        ConfigError: If ``in_channels`` disagrees with ``model.in_channels`` or the
            pretrained file does not fit.
    """
    if cfg.in_channels is not None and cfg.in_channels != in_channels:
        raise ConfigError(
            "model.in_channels",
            f"is {cfg.in_channels} but the model is built for {in_channels} input channels",
        )
    ctx = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with ctx:
        if seed is not None:
            torch.manual_seed(seed)
        encoder = build_encoder(cfg.encoder, in_channels)
        pooling = cfg.aspp.pooling_choice
        project_ch = cfg.project_channels or cfg.aspp.channels

        def make_decoder(rates: list[int]) -> Decoder:
            aspp = ASPP(encoder.out_channels, rates, cfg.aspp.channels, pooling, cfg.aspp.dropout)
            return Decoder(aspp, project_ch)

        decoders = nn.ModuleDict()
        if cfg.shared_decoder:
            decoders[SHARED] = make_decoder(cfg.aspp.rates)
        else:
            for task in CHARTS:
                decoders[task] = make_decoder(cfg.rates_for(task))
        heads = nn.ModuleDict(
            {task: nn.Conv2d(project_ch, n, 1) for task, n in cfg.out_channels.items()}
        )
        return MultiTaskModel(encoder, decoders, heads, cfg.sic_mode == "regression", cfg)
