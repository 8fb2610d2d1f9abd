"""Atrous spatial pyramid pooling with any list of rates and a choice of pooling branch.

Branch layout (``aspp.branches.<i>``), the same as torchvision's DeepLabv3 ``ASPP``
so that parameter counts match it exactly:

* ``branches.0``: 1x1 convolution - BN - ReLU;
* ``branches.1 .. n``: 3x3 convolution with dilation ``rates[i-1]`` - BN - ReLU;
* ``branches.n+1`` (unless pooling is ``none``): pooling - 1x1 convolution - BN - ReLU.

The branches are concatenated and fused by ``aspp.project`` (1x1 convolution - BN -
ReLU - dropout).

Pooling choices and full-scene inference:

* ``global``: the image-level average of DeepLabv3. The branch output is the same
  vector at every position, computed from the *whole* input, so a tile predicted alone
  differs from the same tile inside a full scene; the receptive field is unbounded.
* ``avg:K``: a stride-1 ``K x K`` average over feature cells with same padding (cells
  outside the map are not counted). Local and translation-equivariant: a tile and the
  same region of a larger input agree away from borders; adds ``(K - 1)`` feature
  cells to the receptive field of that branch.
* ``none``: no pooling branch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from icecontext.models.config import Pooling


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(),
    )


class GlobalPoolBranch(nn.Sequential):
    """Image-level pooling branch: average of the whole map, 1x1 conv, broadcast back."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pooled vector broadcast to ``x``'s spatial size."""
        size = x.shape[-2:]
        y = x
        for module in self:
            y = module(y)
        return y.expand(-1, -1, size[0], size[1])


class LocalPoolBranch(nn.Sequential):
    """Stride-1 ``K x K`` average pooling (same padding, padding not counted), 1x1 conv."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int):
        super().__init__(
            nn.AvgPool2d(kernel, stride=1, padding=kernel // 2, count_include_pad=False),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(),
        )


class ASPP(nn.Module):
    """ASPP over a feature map, any rates, optional pooling branch.

    Args:
        in_channels: Channels of the encoder feature map.
        rates: Atrous rates of the 3x3 branches (each >= 1, any number).
        channels: Width of each branch and of the output.
        pooling: Parsed pooling choice.
        dropout: Dropout probability after the fusion (0 = none).

    Attributes:
        rates: The rates, in branch order (``branches.1`` has ``rates[0]``).
        pooling: The pooling choice as text (``global``, ``avg:K``, ``none``).
    """

    def __init__(
        self,
        in_channels: int,
        rates: Sequence[int],
        channels: int,
        pooling: Pooling,
        dropout: float = 0.5,
    ):
        super().__init__()
        if not rates or any(int(r) < 1 for r in rates):
            raise ValueError(f"ASPP rates must be a non-empty list of integers >= 1, got {rates}")
        self.rates = [int(r) for r in rates]
        self.pooling = str(pooling)
        branches: list[nn.Module] = [_conv_bn_relu(in_channels, channels, 1)]
        branches += [_conv_bn_relu(in_channels, channels, 3, r) for r in self.rates]
        if pooling.kind == "global":
            branches.append(GlobalPoolBranch(in_channels, channels))
        elif pooling.kind == "avg":
            branches.append(LocalPoolBranch(in_channels, channels, pooling.kernel))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.out_channels = channels

    def branch_names(self) -> list[str]:
        """Human-readable name of each branch, in order (``1x1``, ``rate 12``, ``pool avg:3``)."""
        names = ["1x1"] + [f"rate {r}" for r in self.rates]
        if self.pooling != "none":
            names.append(f"pool {self.pooling}")
        return names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, h, w)`` to ``(B, channels, h, w)``."""
        outs: list[torch.Tensor] = []
        for branch in self.branches:
            outs.append(branch(x))
        return self.project(torch.cat(outs, dim=1))


def upsample_to(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Bilinear upsampling (``align_corners=False``) to ``size``; used for every output."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
