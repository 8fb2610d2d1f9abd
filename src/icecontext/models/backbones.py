"""ResNet encoders from timm or torchvision: any input channels, output stride 8/16/32, truncation.

The encoder is an ``nn.Sequential`` holding the ResNet's own modules under their usual
names (``conv1``, ``bn1``, ``act1``/``relu``, ``maxpool``, ``layer1`` ...), so

* Grad-CAM and hooks address layers as ``encoder.layer3`` or ``encoder.layer3.5.conv2``;
* a torchvision/timm ImageNet state dict loads into it key for key (the two libraries
  use the same key names for the ResNet family).

Pretrained weights come only from a local file (there is no download path): the
first convolution's weights are adapted to the number of input channels with timm's
``adapt_input_conv`` (repeat the RGB filters, rescale by ``3 / C``), instead of being
thrown away.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from icecontext.errors import ConfigError
from icecontext.models.config import NATURAL_STRIDE, EncoderConfig

if TYPE_CHECKING:
    from timm.models._features import FeatureInfo

log = logging.getLogger(__name__)

STAGES = ("layer1", "layer2", "layer3", "layer4")
_STAGE_INDEX = {name: i + 1 for i, name in enumerate(STAGES)}


class ResNetEncoder(nn.Sequential):
    """A truncated ResNet returning the last kept stage's feature map.

    Attributes:
        out_channels: Channels of the returned feature map.
        output_stride: Input pixels per feature cell.
        in_channels: Input channels the first convolution expects.
    """

    def __init__(
        self,
        modules: OrderedDict[str, nn.Module],
        out_channels: int,
        output_stride: int,
        in_channels: int,
    ):
        super().__init__(modules)
        self.out_channels = out_channels
        self.output_stride = output_stride
        self.in_channels = in_channels


def _dilations(output_stride: int, depth: str) -> list[bool]:
    """``replace_stride_with_dilation`` for layer2..layer4, only for the stages kept."""
    n_kept = _STAGE_INDEX[depth]
    # Each stage after layer1 halves the resolution; replace the last strides by dilation
    # until the kept stages reach the requested stride.
    ratio = NATURAL_STRIDE[depth] // output_stride
    n_dilated = ratio.bit_length() - 1  # 1 -> 0, 2 -> 1, 4 -> 2
    flags = [False, False, False]  # layer2, layer3, layer4
    for stage in range(n_kept, n_kept - n_dilated, -1):
        flags[stage - 2] = True
    return flags


def _build_torchvision(cfg: EncoderConfig, in_channels: int) -> ResNetEncoder:
    import torchvision

    flags = _dilations(cfg.output_stride, cfg.depth)
    net = getattr(torchvision.models, cfg.name)(weights=None, replace_stride_with_dilation=flags)
    if in_channels != 3:
        # Same geometry as the RGB stem; kaiming init as torchvision does.
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    keep = ["conv1", "bn1", "relu", "maxpool", *STAGES[: _STAGE_INDEX[cfg.depth]]]
    modules = OrderedDict((name, getattr(net, name)) for name in keep)
    last = modules[keep[-1]][-1]
    out_channels = (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels
    return ResNetEncoder(modules, out_channels, cfg.output_stride, in_channels)


def _build_timm(cfg: EncoderConfig, in_channels: int) -> ResNetEncoder:
    import timm

    extra: dict[str, Any] = {}
    if cfg.width != 1.0:
        import inspect

        from timm.models.resnet import ResNet

        if "channels" not in inspect.signature(ResNet.__init__).parameters:
            raise ConfigError(
                "model.encoder.width",
                f"needs a timm whose ResNet takes `channels` (this is timm {timm.__version__}); "
                "upgrade timm or use width 1",
            )
        base = (64, 128, 256, 512)
        # the 7x7 stem keeps its 64 channels (timm's stem_width applies to deep stems only)
        extra = {"channels": tuple(round(c * cfg.width) for c in base)}
    net = timm.create_model(
        cfg.name,
        pretrained=False,
        features_only=True,
        out_indices=(_STAGE_INDEX[cfg.depth],),
        # timm takes 8, 16 or 32; layer1 sits at stride 4 whatever is asked
        output_stride=max(cfg.output_stride, 8),
        in_chans=in_channels,
        **extra,
    )
    info = cast("FeatureInfo", net.feature_info)
    out_channels = int(info.channels()[-1])
    reduction = int(info.reduction()[-1])
    if reduction != cfg.output_stride:  # pragma: no cover - guarded by ModelConfig
        raise ConfigError(
            "model.encoder.output_stride",
            f"timm built stride {reduction}, expected {cfg.output_stride}",
        )
    modules = OrderedDict(net.named_children())
    return ResNetEncoder(modules, out_channels, cfg.output_stride, in_channels)


def build_encoder(cfg: EncoderConfig, in_channels: int) -> ResNetEncoder:
    """Build a randomly initialised encoder, then load ``cfg.pretrained`` if given.

    Args:
        cfg: Encoder options.
        in_channels: Number of input channels.

    Returns:
        The encoder; ``encoder(x)`` maps ``(B, C, H, W)`` to
        ``(B, out_channels, ceil(H / stride), ceil(W / stride))``.

    Raises:
        ConfigError: If the pretrained file is missing or does not fit the encoder.
    """
    if in_channels < 1:
        raise ConfigError("model.in_channels", f"must be >= 1, got {in_channels}")
    builder = _build_timm if cfg.backend == "timm" else _build_torchvision
    encoder = builder(cfg, in_channels)
    if cfg.pretrained is not None:
        load_pretrained(encoder, cfg.pretrained)
    return encoder


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a weights file (``.safetensors`` or a torch pickle read with ``weights_only``).

    Checkpoints that wrap the weights (``{"state_dict": ...}``, ``{"model": ...}``) and
    DataParallel ``module.`` prefixes are unwrapped.

    Raises:
        ConfigError: ``model.encoder.pretrained`` if the file is missing or unreadable.
    """
    option = "model.encoder.pretrained"
    path = Path(path)
    if not path.is_file():
        raise ConfigError(option, f"weights file '{path}' does not exist (nothing is downloaded)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure is a bad user file
        raise ConfigError(option, f"cannot read weights file '{path}': {exc}") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(option, f"'{path}' does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt RGB first-layer weights ``(O, 3, k, k)`` to ``in_channels`` inputs.

    Uses timm's ``adapt_input_conv``: for C > 3 the RGB filters are repeated (R, G, B,
    R, ...) and scaled by ``3 / C``, which keeps the activation scale (exactly, for a
    constant input, when C is a multiple of 3); for C = 1 the RGB filters are summed.
    """
    from timm.models import adapt_input_conv

    if weight.shape[1] == in_channels:
        return weight
    return adapt_input_conv(in_channels, weight, base_chans=weight.shape[1])


def load_pretrained(encoder: ResNetEncoder, path: str | os.PathLike[str]) -> list[str]:
    """Load ImageNet weights from a local file into ``encoder``.

    Keys of stages that were cut off (``layer4`` when truncated, ``fc``) are ignored;
    the first convolution is adapted to the encoder's input channels.

    Returns:
        The keys that were loaded.

    Raises:
        ConfigError: ``model.encoder.pretrained`` naming the file and the first missing
            or mismatched key, if the file does not fit this encoder.
    """
    option = "model.encoder.pretrained"
    state = read_state_dict(path)
    target = encoder.state_dict()
    if "conv1.weight" in state:
        state["conv1.weight"] = adapt_first_conv(state["conv1.weight"], encoder.in_channels)
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ConfigError(
            option,
            f"'{path}' lacks {len(missing)} weights of this encoder (first: '{missing[0]}'); "
            "expected a torchvision/timm ResNet state dict of the same depth",
        )
    picked = {k: state[k] for k in target if k in state}
    for key, value in picked.items():
        if value.shape != target[key].shape:
            raise ConfigError(
                option,
                f"'{path}': weight '{key}' has shape {tuple(value.shape)}, "
                f"the encoder expects {tuple(target[key].shape)} (another ResNet variant?)",
            )
    encoder.load_state_dict(picked, strict=False)
    log.info("loaded %d pretrained tensors from %s", len(picked), path)
    return list(picked)
