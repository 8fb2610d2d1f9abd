"""Receptive fields: theoretical (per ASPP branch and task) and measured from input gradients.

Theory. For a chain of layers with kernel ``k``, dilation ``d`` and stride ``s``, the
receptive field ``r`` and the jump ``j`` (input pixels between neighbouring cells)
grow as ``r <- r + (k - 1) d j`` and ``j <- j s`` (Araujo et al. 2019, Distill). A
ResNet's widest path is its main path (the shortcut adds no spatial extent), so the
encoder's field is that of its 3x3/7x7 convolutions and max pooling. At the encoder
output ``j`` is the output stride ``OS``; every later layer has stride 1, so

``RF(branch) = RF_enc + OS * [sum over branch layers (k - 1) d + 2 (3x3 project) + 1]``

where a 3x3 branch of rate ``r`` contributes ``2 r``, an ``avg:K`` pooling branch
``K - 1``, the 1x1 branch 0, and the final ``+ 1`` is the bilinear upsampling (an
output pixel between two feature cells reads both). Global pooling makes the field the
whole input. The task's field is the widest branch. Which of these branches a training
patch can train, and the field that remains, is :mod:`icecontext.models.trained_context`.

Measurement. :func:`measure_receptive_fields` backpropagates from the central output
pixel to the input:

* *non-zero extent*: on a positive surrogate of the model (every weight positive,
  BatchNorm as identity, max pooling replaced by average pooling of the same
  geometry, float64, constant positive input), nothing cancels, so the span of
  non-zero input gradients is exactly the field the architecture allows. Each ASPP
  branch is isolated by zeroing the other branches' fusion weights.
* *effective receptive field* (Luo et al. 2016): on the model as it is (eval mode),
  random normal inputs; the gradient magnitude is summed over channels and rows and
  averaged over samples, and the ERF is the width ``2 r + 1`` of the centred window
  holding 95 % of that mass.

Both are measured along the row through the central pixel of a strip ``height`` rows
tall (the theoretical field is square), which keeps the cost affordable on a CPU.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import overload

import numpy as np
import torch
from torch import nn

from icecontext.data.io.format import PIXEL_SPACING_M
from icecontext.models.aspp import ASPP, GlobalPoolBranch, upsample_to
from icecontext.models.multitask import Decoder, MultiTaskModel


@dataclass(frozen=True)
class LayerGeometry:
    """Spatial geometry of one layer along one axis.

    Attributes:
        name: Module name.
        kernel: Kernel size.
        stride: Stride.
        dilation: Dilation.
    """

    name: str
    kernel: int
    stride: int = 1
    dilation: int = 1


def _first(value: int | tuple[int, ...]) -> int:
    return int(value[0] if isinstance(value, tuple) else value)


def layer_geometry(name: str, module: nn.Module) -> LayerGeometry | None:
    """Geometry of a convolution or pooling module, ``None`` for other modules."""
    if isinstance(module, nn.Conv2d):
        return LayerGeometry(
            name, _first(module.kernel_size), _first(module.stride), _first(module.dilation)
        )
    if isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
        stride = module.stride if module.stride is not None else module.kernel_size
        dilation = getattr(module, "dilation", 1)
        return LayerGeometry(name, _first(module.kernel_size), _first(stride), _first(dilation))
    return None


def main_path(module: nn.Module, prefix: str = "") -> list[LayerGeometry]:
    """Convolutions and poolings of ``module`` in order, skipping residual shortcuts.

    Shortcut modules (``downsample``) share the block's stride but add no extent, so
    the widest path is the main one.
    """
    out = []
    for name, sub in module.named_modules(prefix=prefix):
        if ".downsample" in f".{name}":
            continue
        geometry = layer_geometry(name, sub)
        if geometry is not None:
            out.append(geometry)
    return out


def chain_receptive_field(
    layers: list[LayerGeometry], rf: int = 1, jump: int = 1
) -> tuple[int, int]:
    """Receptive field and jump after a chain of layers (``r += (k-1) d j``, ``j *= s``)."""
    for layer in layers:
        rf += (layer.kernel - 1) * layer.dilation * jump
        jump *= layer.stride
    return rf, jump


@dataclass(frozen=True)
class BranchRF:
    """Theoretical receptive field through one ASPP branch.

    Attributes:
        index: Branch index (``aspp.branches.<index>``).
        name: ``1x1``, ``rate R`` or ``pool avg:K`` / ``pool global``.
        module: Full module name of the branch.
        total_px: Receptive field of the output through this branch, in input pixels;
            ``None`` for global pooling (the whole input).
        rate: The atrous rate of a 3x3 branch; ``None`` for the 1x1 and pooling branches.
    """

    index: int
    name: str
    module: str
    total_px: int | None
    rate: int | None = None


@dataclass(frozen=True)
class TaskRF:
    """Theoretical receptive field of one task's output.

    Attributes:
        task: Task name.
        decoder: Key of the decoder serving it (the task or ``shared``).
        encoder_px: Receptive field of one encoder feature cell.
        output_stride: Input pixels per feature cell.
        branches: One entry per ASPP branch.
        total_px: The widest branch; ``None`` if any branch pools globally.
    """

    task: str
    decoder: str
    encoder_px: int
    output_stride: int
    branches: list[BranchRF]
    total_px: int | None


def _decoder_tail(decoder: Decoder, head: nn.Module, prefix: str) -> list[LayerGeometry]:
    return [
        *main_path(decoder.aspp.project, f"{prefix}.aspp.project"),
        *main_path(decoder.project, f"{prefix}.project"),
        *main_path(head, "head"),
    ]


def theoretical_receptive_fields(model: MultiTaskModel) -> dict[str, TaskRF]:
    """Theoretical receptive field of every task and ASPP branch of ``model``, in pixels."""
    enc_rf, jump = chain_receptive_field(main_path(model.encoder, "encoder"))
    out: dict[str, TaskRF] = {}
    for task in model.tasks:
        dname = model.decoder_name(task)
        decoder = model.decoders[dname]
        assert isinstance(decoder, Decoder)
        prefix = f"decoders.{dname}"
        tail = _decoder_tail(decoder, model.heads[task], prefix)
        branches = []
        n_rates = len(decoder.aspp.rates)
        for i, (bname, branch) in enumerate(
            zip(decoder.aspp.branch_names(), decoder.aspp.branches, strict=True)
        ):
            module = f"{prefix}.aspp.branches.{i}"
            rate = decoder.aspp.rates[i - 1] if 1 <= i <= n_rates else None
            if isinstance(branch, GlobalPoolBranch):
                branches.append(BranchRF(i, bname, module, None))
                continue
            layers = [*main_path(branch, module), *tail]
            # + the bilinear upsampling: a 2-tap kernel on the feature grid
            layers.append(LayerGeometry("upsample", 2))
            rf, _ = chain_receptive_field(layers, enc_rf, jump)
            branches.append(BranchRF(i, bname, module, rf, rate))
        sizes = [b.total_px for b in branches]
        total = None if any(s is None for s in sizes) else max(s for s in sizes if s is not None)
        out[task] = TaskRF(task, dname, enc_rf, jump, branches, total)
    return out


@overload
def pixels_to_km(
    pixels: float, downsample: int = 1, spacing_m: float = PIXEL_SPACING_M
) -> float: ...
@overload
def pixels_to_km(
    pixels: np.ndarray, downsample: int = 1, spacing_m: float = PIXEL_SPACING_M
) -> np.ndarray: ...
def pixels_to_km(
    pixels: float | np.ndarray, downsample: int = 1, spacing_m: float = PIXEL_SPACING_M
) -> float | np.ndarray:
    """Length of ``pixels`` model-input pixels in km (80 m spacing x data downsampling)."""
    return pixels * spacing_m * downsample / 1000.0


# --------------------------------------------------------------------------- measurement


def positive_surrogate(model: MultiTaskModel) -> MultiTaskModel:
    """A float64 copy whose input gradients cannot cancel (see module docstring).

    Every convolution averages its inputs (weights ``1 / fan_in``, no bias), BatchNorm
    is the identity, max pooling becomes average pooling of the same geometry, the
    model is in eval mode (no dropout) and no parameter requires gradients.
    """
    m = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for sub in m.modules():
            if isinstance(sub, nn.Conv2d):
                fan_in = sub.weight[0].numel()
                sub.weight.fill_(1.0 / fan_in)
                if sub.bias is not None:
                    sub.bias.zero_()
            elif isinstance(sub, nn.BatchNorm2d):
                sub.reset_parameters()  # running mean 0, var 1, weight 1, bias 0
                sub.eps = 0.0
    for parent in list(m.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(
                    parent,
                    name,
                    nn.AvgPool2d(child.kernel_size, child.stride, child.padding),
                )
    m.requires_grad_(False)
    return m


@contextlib.contextmanager
def isolate_branch(aspp: ASPP, index: int | None) -> Iterator[None]:
    """Zero the fusion weights of every ASPP branch except ``index`` (``None``: keep all)."""
    if index is None:
        yield
        return
    conv = aspp.project[0]
    assert isinstance(conv, nn.Conv2d)
    saved = conv.weight.detach().clone()
    c = aspp.out_channels
    with torch.no_grad():
        mask = torch.zeros_like(conv.weight)
        mask[:, index * c : (index + 1) * c] = 1
        conv.weight.mul_(mask)
    try:
        yield
    finally:
        with torch.no_grad():
            conv.weight.copy_(saved)


@dataclass
class Extent:
    """A measured span of non-zero input gradients along the central row.

    Attributes:
        px: Width in input pixels (``last - first + 1``).
        truncated: Whether it reached the input's edge (then ``px`` is a lower bound).
    """

    px: int
    truncated: bool


@dataclass
class TaskMeasurement:
    """Measured receptive fields of one task.

    Attributes:
        task: Task name.
        branch_extent: Non-zero gradient extent through each ASPP branch, in order.
        total_extent: Non-zero gradient extent of the full output.
        erf_px: Effective receptive field: width ``2 r + 1`` of the centred window
            holding ``mass`` of the gradient magnitude.
        erf_profile: Mean gradient magnitude per input column (for plots).
        extent_profile: Surrogate gradient per input column (for plots).
        centre: Column of the output pixel.
    """

    task: str
    branch_extent: list[Extent]
    total_extent: Extent
    erf_px: int
    erf_profile: np.ndarray = field(repr=False)
    extent_profile: np.ndarray = field(repr=False)
    centre: int = 0


def _extent(profile: np.ndarray) -> Extent:
    nz = np.flatnonzero(profile > 0)
    if nz.size == 0:
        return Extent(0, False)
    return Extent(int(nz[-1] - nz[0] + 1), bool(nz[0] == 0 or nz[-1] == profile.size - 1))


def erf_width(profile: np.ndarray, centre: int, mass: float = 0.95) -> int:
    """Width ``2 r + 1`` of the smallest window centred on ``centre`` holding ``mass``.

    Args:
        profile: Non-negative gradient magnitude per column.
        centre: Column of the output pixel.
        mass: Fraction of the total to hold (0 < mass <= 1).
    """
    total = float(profile.sum())
    if total <= 0:
        return 0
    n = profile.size
    for r in range(n):
        lo, hi = max(0, centre - r), min(n, centre + r + 1)
        if profile[lo:hi].sum() >= mass * total * (1 - 1e-12):
            return 2 * r + 1
    return 2 * n + 1  # pragma: no cover - the loop reaches the whole profile


def _centre_value(
    model: MultiTaskModel, features: torch.Tensor, task: str, size: list[int], row: int, col: int
) -> torch.Tensor:
    decoder = model.decoders[model.decoder_name(task)]
    y = upsample_to(model.heads[task](decoder(features)), size)
    return y[:, :, row, col].sum()


def _column_profile(grad: torch.Tensor) -> np.ndarray:
    return grad.abs().sum(dim=(0, 1, 2)).double().cpu().numpy()


def default_width(model: MultiTaskModel) -> int:
    """Strip width that holds every finite theoretical field plus a margin of 4 cells."""
    rfs = theoretical_receptive_fields(model)
    stride = model.encoder.output_stride
    finite = [b.total_px for t in rfs.values() for b in t.branches if b.total_px is not None]
    widest = max(finite) if finite else 1
    return int(math.ceil((widest + 4 * stride) / stride) * stride + 1)


@dataclass(frozen=True)
class ERFSettings:
    """How the effective receptive field is measured.

    Attributes:
        samples: Random inputs averaged.
        mass: Fraction of gradient mass defining the ERF (0 < mass <= 1).
        seed: Seed of the random inputs.
    """

    samples: int = 4
    mass: float = 0.95
    seed: int = 0


DEFAULT_ERF = ERFSettings()
"""Four random inputs, 95 % of the gradient mass, seed 0."""


@dataclass(frozen=True)
class _Strip:
    """The measurement strip and its central output pixel."""

    height: int
    width: int

    @property
    def row(self) -> int:
        return self.height // 2

    @property
    def col(self) -> int:
        return self.width // 2

    @property
    def size(self) -> list[int]:
        return [self.height, self.width]


class _ExtentProbe:
    """Surrogate input-gradient profiles per task and ASPP branch, one backward pass each.

    Tasks sharing a decoder configuration share their profiles (cached by the
    decoder's branch names and the isolated branch).
    """

    def __init__(self, model: MultiTaskModel, strip: _Strip, device: str | torch.device) -> None:
        self.strip = strip
        self.surrogate = positive_surrogate(model).to(device)
        shape = (1, model.encoder.in_channels, strip.height, strip.width)
        self.x = torch.ones(shape, dtype=torch.float64, device=device, requires_grad=True)
        self.features = self.surrogate.encoder(self.x)
        self.cache: dict[tuple[str, int | None], np.ndarray] = {}

    def decoder(self, task: str) -> Decoder:
        decoder = self.surrogate.decoders[self.surrogate.decoder_name(task)]
        assert isinstance(decoder, Decoder)
        return decoder

    def profile(self, task: str, branch: int | None) -> np.ndarray:
        """Gradient per input column through ``branch`` alone (``None``: all branches)."""
        aspp = self.decoder(task).aspp
        key = (str(aspp.branch_names()), branch)
        if key not in self.cache:
            s = self.strip
            with isolate_branch(aspp, branch):
                value = _centre_value(self.surrogate, self.features, task, s.size, s.row, s.col)
                (grad,) = torch.autograd.grad(value, self.x, retain_graph=True)
            self.cache[key] = _column_profile(grad)
        return self.cache[key]

    def branch_extents(self, task: str) -> list[Extent]:
        """Non-zero gradient extent through each ASPP branch of the task, in order."""
        n_branches = len(self.decoder(task).aspp.branches)
        return [_extent(self.profile(task, i)) for i in range(n_branches)]


def _erf_profiles(
    model: MultiTaskModel, strip: _Strip, settings: ERFSettings, device: str | torch.device
) -> dict[str, np.ndarray]:
    """Mean gradient magnitude per input column of each task, on random inputs."""
    probe = copy.deepcopy(model).float().eval().to(device)
    probe.requires_grad_(False)
    gen = torch.Generator().manual_seed(settings.seed)
    acc = {t: np.zeros(strip.width) for t in model.tasks}
    shape = (1, model.encoder.in_channels, strip.height, strip.width)
    for _ in range(settings.samples):
        xr = torch.randn(shape, generator=gen).to(device).requires_grad_()
        feats = probe.encoder(xr)
        for task in model.tasks:
            value = _centre_value(probe, feats, task, strip.size, strip.row, strip.col)
            (grad,) = torch.autograd.grad(value, xr, retain_graph=True)
            acc[task] += _column_profile(grad)
    return {t: a / settings.samples for t, a in acc.items()}


def measure_receptive_fields(
    model: MultiTaskModel,
    width: int | None = None,
    height: int | None = None,
    *,
    erf: ERFSettings | None = DEFAULT_ERF,
    branches: bool = True,
    device: str | torch.device = "cpu",
) -> dict[str, TaskMeasurement]:
    """Measure each task's non-zero gradient extent (per branch and total) and its ERF.

    Args:
        model: The model (not modified).
        width: Strip width in input pixels (default: :func:`default_width`).
        height: Strip height (default ``output_stride + 1``, capped at ``width``).
        erf: How to measure the effective receptive field (on ``model`` itself:
            samples, gradient mass, seed); ``None`` skips it (``erf_px`` is then 0).
        branches: Also measure each ASPP branch alone (one backward pass per branch).
        device: Where to run the measurement.

    Returns:
        Measurements per task.
    """
    width = width or default_width(model)
    stride = model.encoder.output_stride
    strip = _Strip(min(height or stride + 1, width), width)
    extents = _ExtentProbe(model, strip, device)
    erf_profiles = _erf_profiles(model, strip, erf, device) if erf is not None else {}

    out: dict[str, TaskMeasurement] = {}
    for task in model.tasks:
        branch_extent = extents.branch_extents(task) if branches else []
        total_profile = extents.profile(task, None)
        erf_profile = erf_profiles.get(task, np.zeros(width))
        out[task] = TaskMeasurement(
            task=task,
            branch_extent=branch_extent,
            total_extent=_extent(total_profile),
            erf_px=erf_width(erf_profile, strip.col, erf.mass) if erf is not None else 0,
            erf_profile=erf_profile,
            extent_profile=total_profile,
            centre=strip.col,
        )
    return out
