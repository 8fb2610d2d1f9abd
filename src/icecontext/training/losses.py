"""Masked multi-task losses: SIC (MSE on class index or cross-entropy), SOD and FLOE.

Chart pixels equal to 255 are masked: they contribute nothing to a loss and nothing
to its normaliser. Every task loss is a (class-)weighted mean over the task's own
valid pixels, so a batch in which one chart is entirely masked (e.g. FLOE on fast ice)
gives that task a zero loss instead of NaN. The total is ``sum_t w_t * loss_t``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icecontext.data.io.format import CHART_FILL, CHARTS, N_CLASSES

SicLoss = Literal["mse", "cross_entropy"]
ClassWeighting = Literal["none", "inverse", "sqrt_inverse"]


def _pixel_weights(class_weights: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Each pixel's class weight, 0 where masked (no boolean indexing: no host sync)."""
    w = class_weights.to(target.device, torch.float32)
    return torch.where(valid, w[target.clamp(0, w.numel() - 1)], 0.0)


def masked_cross_entropy(
    logits: Tensor,
    target: Tensor,
    class_weights: Tensor | None = None,
    ignore_index: int = CHART_FILL,
) -> Tensor:
    """Cross-entropy averaged over the pixels whose target is not ``ignore_index``.

    With ``class_weights`` the mean is weighted by the weight of each pixel's true
    class (the convention of :func:`torch.nn.functional.cross_entropy`).

    Args:
        logits: ``(B, K, H, W)`` unnormalised scores.
        target: ``(B, H, W)`` integer classes; ``ignore_index`` marks masked pixels.
        class_weights: Optional ``(K,)`` weights.
        ignore_index: Value of masked pixels.

    Returns:
        A scalar; zero (attached to the graph, as DDP needs) when no pixel is valid.
    """
    # No value is read back to the host (no `if`, no boolean indexing): a GPU never
    # waits for the host here. With no valid pixel the sum is 0 and 0 / tiny = 0.
    target = target.long()
    valid = target != ignore_index
    # Loss in float32 even under autocast: the log-softmax sum over many pixels is
    # where half precision loses digits.
    weight = None if class_weights is None else class_weights.to(logits.device, torch.float32)
    total = F.cross_entropy(
        logits.float(), target, weight=weight, ignore_index=ignore_index, reduction="sum"
    )
    denom = valid.sum() if weight is None else _pixel_weights(weight, target, valid).sum()
    return total / denom.clamp_min(torch.finfo(torch.float32).tiny)


def masked_mse(
    pred: Tensor,
    target: Tensor,
    class_weights: Tensor | None = None,
    ignore_index: int = CHART_FILL,
) -> Tensor:
    """Mean squared error between a regression output and class indices, masked.

    SIC regression predicts the class index (0..10, i.e. tenths of concentration)
    directly; the challenge scores R² on the same units.

    Args:
        pred: ``(B, 1, H, W)`` or ``(B, H, W)`` regression output.
        target: ``(B, H, W)`` integer classes; ``ignore_index`` marks masked pixels.
        class_weights: Optional ``(K,)`` per-class weights of each pixel's true class.
        ignore_index: Value of masked pixels.

    Returns:
        A scalar; zero (attached to the graph, as DDP needs) when no pixel is valid.
    """
    if pred.dim() == 4:
        pred = pred[:, 0]
    target = target.long()
    valid = target != ignore_index
    # masked by multiplication, not boolean indexing: nothing is read back to the host
    err = torch.where(valid, pred.float() - target.float(), 0.0) ** 2
    tiny = torch.finfo(torch.float32).tiny
    if class_weights is None:
        return err.sum() / valid.sum().clamp_min(1)
    w = _pixel_weights(class_weights, target, valid)
    return (w * err).sum() / w.sum().clamp_min(tiny)


def class_weights_from_histogram(
    histogram: np.ndarray | list[int], n_classes: int, mode: ClassWeighting = "inverse"
) -> Tensor | None:
    """Turn a chart's class histogram into per-class loss weights.

    Args:
        histogram: Pixel counts per value (256 bins like the store manifest, or at least
            ``n_classes``); bins ``>= n_classes`` (255 = masked) are ignored.
        n_classes: Number of classes of the chart.
        mode: ``"none"`` (returns ``None``), ``"inverse"`` (``1 / frequency``) or
            ``"sqrt_inverse"`` (``1 / sqrt(frequency)``, milder).

    Returns:
        ``(n_classes,)`` float32 weights whose pixel-weighted mean over the histogram
        is 1 (so the loss scale does not change), with 0 for classes absent from the
        histogram; ``None`` for ``"none"``.

    Raises:
        ValueError: If the histogram has fewer than ``n_classes`` bins or no valid pixel.
    """
    if mode == "none":
        return None
    counts = np.asarray(histogram, dtype=np.float64)
    if counts.ndim != 1 or counts.size < n_classes:
        raise ValueError(f"histogram must have at least {n_classes} bins, got {counts.shape}")
    counts = counts[:n_classes]
    total = counts.sum()
    if total <= 0:
        raise ValueError("histogram holds no valid (non-255) pixel")
    freq = counts / total
    raw = np.zeros(n_classes)
    present = freq > 0
    raw[present] = 1.0 / (freq[present] if mode == "inverse" else np.sqrt(freq[present]))
    raw /= float((raw * freq).sum())
    return torch.tensor(raw, dtype=torch.float32)


class MultiTaskLoss(nn.Module):
    """Weighted sum of the masked task losses.

    Args:
        sic_loss: ``"mse"`` (SIC head has one channel: class index regression) or
            ``"cross_entropy"`` (SIC head has 11 channels).
        task_weights: Weight of each task's loss, ``{"SIC": w, "SOD": w, "FLOE": w}``.
        class_weights: Optional per-task ``(K,)`` class weights.
    """

    def __init__(
        self,
        sic_loss: SicLoss,
        task_weights: Mapping[str, float],
        class_weights: Mapping[str, Tensor | None] | None = None,
    ):
        super().__init__()
        self.sic_loss = sic_loss
        self.task_weights = {t: float(task_weights.get(t, 0.0)) for t in CHARTS}
        for task in CHARTS:
            w = (class_weights or {}).get(task)
            if w is not None and w.numel() != N_CLASSES[task]:
                raise ValueError(
                    f"class weights of {task} have {w.numel()} entries, expected {N_CLASSES[task]}"
                )
            # Buffers move with the module (.to(device)) and are saved in checkpoints.
            self.register_buffer(f"weights_{task}", w, persistent=True)

    def class_weights(self, task: str) -> Tensor | None:
        """Return the class weights of ``task`` (or ``None``)."""
        return getattr(self, f"weights_{task}")

    def forward(
        self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Compute the total loss and the per-task losses.

        Args:
            outputs: Model outputs ``{"SIC": (B, 1|11, H, W), "SOD": ..., "FLOE": ...}``.
            targets: Charts ``{"SIC": (B, H, W), ...}`` with 255 = masked.

        Returns:
            ``(total, {"SIC": loss, "SOD": loss, "FLOE": loss})``.

        Raises:
            ValueError: If the SIC head's channel count does not match ``sic_loss``.
        """
        parts: dict[str, Tensor] = {}
        for task in CHARTS:
            out, tgt, cw = outputs[task], targets[task], self.class_weights(task)
            if task == "SIC" and self.sic_loss == "mse":
                if out.shape[1] != 1:
                    raise ValueError(
                        f"train.loss.sic=mse needs a 1-channel SIC head, got {out.shape[1]}"
                    )
                parts[task] = masked_mse(out, tgt, cw)
            else:
                parts[task] = masked_cross_entropy(out, tgt, cw)
        total = torch.stack([self.task_weights[t] * parts[t] for t in CHARTS]).sum()
        return total, parts
