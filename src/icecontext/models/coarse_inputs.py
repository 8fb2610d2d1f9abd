"""The input stage of training: 2 km channels upsampled on the device.

AMSR2 and ERA5 live on the 2 km grid (10 of the reference preset's 18 inputs). With
``data.coarse_on_device`` training batches carry them at 2 km, one small block per
patch with its exact per-pixel sampling
(:class:`~icecontext.data.io.geometry.CoarseSlot`), instead of 625 copies of each cell:
the batch that crosses from the loader workers and to the GPU is half the size.
:class:`CoarseInputs` rebuilds the full input tensor on the device with the same
arithmetic as the host path (:func:`~icecontext.data.io.geometry.upsample_coarse`), so
a model sees identical inputs either way.

This is not part of the network's ``forward``: exported models and full-scene
inference still take one ``(B, C, H, W)`` tensor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from icecontext.data.io.variables import split_coarse


def _gather(values: Tensor, index: Tensor, dim: int) -> Tensor:
    """``values`` (B, C, R, S) taken at per-sample ``index`` (B, L) along ``dim`` 2 or 3."""
    b, c, r, s = values.shape
    if dim == 3:
        return values.gather(3, index[:, None, None, :].expand(b, c, r, index.shape[-1]))
    return values.gather(2, index[:, None, :, None].expand(b, c, index.shape[-1], s))


def _interp(values: Tensor, lower: Tensor, upper: Tensor, weight: Tensor | None, dim: int):
    """One axis of the separable interpolation, in the host path's order of operations."""
    low = _gather(values, lower, dim)
    if weight is None:
        return low
    high = _gather(values, upper, dim)
    shape = (weight.shape[0], 1, 1, -1) if dim == 3 else (weight.shape[0], 1, -1, 1)
    return high.sub_(low).mul_(weight.reshape(shape)).add_(low)


def upsample_coarse_batch(block: Tensor, index: Tensor, weight: Tensor, bilinear: bool) -> Tensor:
    """Upsample a batch of 2 km blocks to their patches' pixels.

    Args:
        block: float ``(B, C, n, n)`` cells (see ``CoarseSlot``).
        index: int64 ``(B, 4, P)``: row lower/upper, column lower/upper.
        weight: float ``(B, 2, P)``: weights of the upper row / column.
        bilinear: Interpolate (else nearest: the lower index only).

    Returns:
        ``(B, C, P, P)`` values in ``block``'s dtype.
    """
    w = weight.to(block.dtype)
    # columns first, on the small block, as the host path does
    cols = _interp(block, index[:, 2], index[:, 3], w[:, 1] if bilinear else None, 3)
    return _interp(cols, index[:, 0], index[:, 1], w[:, 0] if bilinear else None, 2)


class CoarseInputs:
    """Builds a batch's ``(B, C, P, P)`` inputs in the order of ``features``.

    Args:
        features: The run's input channels, in the network's order.
        upsampling: ``data.upsampling`` (``"nearest"`` or ``"bilinear"``).
    """

    def __init__(self, features: Sequence[str], upsampling: str = "nearest") -> None:
        order = list(features)
        fine, coarse = split_coarse(order)
        self.bilinear = upsampling == "bilinear"
        self.fine = [order.index(f) for f in fine]
        self.coarse = [order.index(f) for f in coarse]

    def __call__(
        self,
        batch: Mapping[str, Tensor],
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> Tensor:
        """The inputs of ``batch`` (``batch["x"]`` itself when it holds every channel)."""
        x = batch["x"]
        if "coarse" not in batch:
            return x.contiguous(memory_format=memory_format)
        up = upsample_coarse_batch(
            batch["coarse"], batch["coarse_index"], batch["coarse_weight"], self.bilinear
        )
        b, _, h, w = x.shape
        out = x.new_empty((b, len(self.fine) + len(self.coarse), h, w))
        out = out.contiguous(memory_format=memory_format)
        out[:, self.fine] = x
        out[:, self.coarse] = up.to(x.dtype)
        return out
