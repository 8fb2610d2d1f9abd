"""Grad-CAM targets: what scalar of a task head's output is explained.

A target is the task output summed over a set of pixels, one channel per pixel:

``y = sum over p in M of out[c(p), p]``

* **SIC regression** (one output channel): ``c(p) = 0``, so ``y`` is the predicted
  concentration summed over ``M``.
* **A class ``C``** (``--class C``): ``c(p) = C`` and ``M`` holds the pixels of class
  ``C`` in the class map (the reference chart or the model's prediction). For SIC
  regression the class map of the prediction is the rounded, clipped output.
* **No class** (``--class`` omitted): ``M`` is every pixel of the region that has a
  class in the class map (not 255), and ``c(p)`` is that pixel's own class: the target
  explains the chart *as drawn* (reference) or *as predicted*, all classes at once.

Only pixels of the *region* take part (inside the window or tile core, with SAR data;
see :mod:`icecontext.explain.scene`). The class map comes from the reference chart
(``mask="reference"``), from the model's own prediction in the same forward pass
(``mask="prediction"``, detached, so the mask itself is not differentiated), or is given
explicitly (how ``--compare`` makes every model explain the same pixels).

:class:`RegionTarget` is a callable in the form pytorch-grad-cam expects: it takes one
sample's output ``(K, H, W)`` and returns a scalar. After a call, :attr:`RegionTarget.mask`
holds the pixels that were summed, which the distance summary and figures use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from icecontext.data.io.format import CHART_FILL, CHARTS, N_CLASSES
from icecontext.errors import ConfigError

MaskSource = Literal["reference", "prediction"]
Task = Literal["SIC", "SOD", "FLOE"]
ClassesFn = Callable[[Tensor], Tensor]
"""Maps one sample's output ``(K, H, W)`` to its class map ``(H, W)`` (int)."""


@dataclass(frozen=True)
class TargetSpec:
    """What to explain, as the user states it.

    Attributes:
        task: ``"SIC"``, ``"SOD"`` or ``"FLOE"``.
        class_index: Explain this class (``--class``); ``None`` = every pixel's own class.
        mask: Where the class map comes from: ``"reference"`` or ``"prediction"``.
    """

    task: Task
    class_index: int | None = None
    mask: MaskSource = "prediction"

    def __post_init__(self) -> None:
        if self.task not in CHARTS:
            raise ConfigError("--task", f"expected one of {', '.join(CHARTS)}, got {self.task!r}")
        if self.mask not in ("reference", "prediction"):
            raise ConfigError("--mask", f"expected 'reference' or 'prediction', got {self.mask!r}")
        n = N_CLASSES[self.task]
        if self.class_index is not None and not 0 <= self.class_index < n:
            raise ConfigError(
                "--class", f"{self.task} classes are 0..{n - 1}, got {self.class_index}"
            )

    def describe(self) -> str:
        """One line for titles and file attributes, e.g. ``SOD class 4 (reference mask)``."""
        what = "every pixel's class" if self.class_index is None else f"class {self.class_index}"
        return f"{self.task} {what} ({self.mask} mask)"

    def slug(self) -> str:
        """A file-name fragment, e.g. ``SOD-c4-reference`` or ``SIC-all-prediction``."""
        cls = "all" if self.class_index is None else f"c{self.class_index}"
        return f"{self.task}-{cls}-{self.mask}"


def argmax_classes(output: Tensor) -> Tensor:
    """Class map of one sample's logits ``(K, H, W)``: argmax over channels."""
    return output.argmax(dim=0)


def sic_regression_classes(output: Tensor) -> Tensor:
    """Class map of a SIC regression output ``(1, H, W)``: round half away from zero, clip 0..10.

    The same rule as :meth:`icecontext.models.multitask.MultiTaskModel.to_classes`
    (2.5 -> 3); a test keeps the two equal.
    """
    x = output[0].float()
    a = x.abs()
    fl = a.floor()
    r = torch.copysign(fl + (a - fl >= 0.5).to(x.dtype), x)
    return torch.nan_to_num(r, nan=0.0).clamp(0, 10).long()


def classes_fn_for(output_channels: int) -> ClassesFn:
    """The class rule of a head with ``output_channels`` outputs (1 = SIC regression)."""
    return sic_regression_classes if output_channels == 1 else argmax_classes


class RegionTarget:
    """A task output summed over pixels of a region (a pytorch-grad-cam target).

    Args:
        region: bool ``(H, W)``: pixels allowed to take part (e.g. inside the tile core
            and with SAR data).
        class_index: Explain this class; ``None`` = each pixel's own class.
        classes: Fixed class map ``(H, W)`` (uint8, 255 = no class) taken as the mask
            source (the reference chart, or another model's prediction); ``None`` =
            the prediction of the output being explained.

    Attributes:
        mask: bool ``(H, W)`` of the pixels summed by the last call (``None`` before).
    """

    def __init__(
        self,
        region: np.ndarray,
        class_index: int | None = None,
        classes: np.ndarray | None = None,
    ) -> None:
        self.region = np.asarray(region, dtype=bool)
        self.class_index = class_index
        self.classes = None if classes is None else np.asarray(classes)
        if self.classes is not None and self.classes.shape != self.region.shape:
            raise ValueError(
                f"class map shape {self.classes.shape} differs from region {self.region.shape}"
            )
        self.mask: np.ndarray | None = None

    def _class_map(self, output: Tensor) -> Tensor:
        """Class of every pixel (``CHART_FILL`` where there is none), on ``output``'s device."""
        if self.classes is not None:
            return torch.as_tensor(self.classes.astype(np.int64), device=output.device)
        with torch.no_grad():
            return classes_fn_for(output.shape[0])(output.detach()).long()

    def __call__(self, output: Tensor) -> Tensor:
        """Return the target scalar for one sample's output ``(K, H, W)``."""
        if output.ndim != 3:
            raise ValueError(f"expected one sample's output (K, H, W), got {tuple(output.shape)}")
        if tuple(output.shape[1:]) != self.region.shape:
            raise ValueError(
                f"output size {tuple(output.shape[1:])} differs from region {self.region.shape}"
            )
        cls = self._class_map(output)
        region = torch.as_tensor(self.region, device=output.device)
        if self.class_index is None:
            mask = region & (cls != CHART_FILL)
        else:
            mask = region & (cls == self.class_index)
        self.mask = mask.cpu().numpy()
        if output.shape[0] == 1:  # regression: the value itself, whatever the class
            return (output[0] * mask).sum()
        if self.class_index is not None:
            return (output[self.class_index] * mask).sum()
        channel = torch.where(mask, cls, torch.zeros_like(cls)).clamp(0, output.shape[0] - 1)
        picked = output.gather(0, channel[None])[0]
        return (picked * mask).sum()


def make_targets(
    spec: TargetSpec,
    regions: np.ndarray,
    references: np.ndarray | None = None,
    classes: np.ndarray | None = None,
) -> list[RegionTarget]:
    """One target per sample for a batch.

    Args:
        spec: What to explain.
        regions: bool ``(B, H, W)``.
        references: uint8 ``(B, H, W)`` reference charts of ``spec.task`` (needed when
            ``spec.mask == "reference"``).
        classes: Fixed class maps ``(B, H, W)`` that override the mask source (used by
            ``--compare`` to give every model the same pixels).

    Returns:
        ``B`` targets, sample ``b`` restricted to its own region and class map.

    Raises:
        ConfigError: ``--mask`` when the reference is needed but not given.
    """
    regions = np.asarray(regions, dtype=bool)
    fixed = classes
    if fixed is None and spec.mask == "reference":
        if references is None:
            raise ConfigError("--mask", "'reference' needs the reference chart of the scene")
        fixed = references
    return [
        RegionTarget(regions[b], spec.class_index, None if fixed is None else fixed[b])
        for b in range(regions.shape[0])
    ]
