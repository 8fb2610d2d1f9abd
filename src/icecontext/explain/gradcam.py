"""Grad-CAM for one task head of a dict-output multi-task model, on a batch of inputs.

Grad-CAM (Selvaraju et al. 2017) explains a scalar target ``y`` through a layer with
activations ``A_k`` (channel ``k``): the channel weights are the spatial means of the
gradients, ``alpha_k = mean_p dy/dA_k(p)``, and the map is
``CAM(p) = ReLU(sum_k alpha_k A_k(p))`` at the layer's resolution, upsampled to the
input size (bilinear, as the model upsamples its outputs).

HiResCAM (Draelos and Carin 2020), ``--method hirescam``, keeps the gradient at each
position instead of averaging it: ``CAM(p) = ReLU(sum_k dy/dA_k(p) A_k(p))``. It is zero
wherever the target's gradient does not reach, so it shows *where the target draws on*,
while Grad-CAM shows *where the features that the target uses are present*, anywhere
in the input (see docs/explain.md).

This module wraps pytorch-grad-cam's :class:`~pytorch_grad_cam.GradCAM` and
:class:`~pytorch_grad_cam.HiResCAM`:

* :class:`TaskOutput` turns the model's ``{"SIC", "SOD", "FLOE"}`` output into the one
  tensor pytorch-grad-cam expects (the chosen head);
* the targets are :class:`~icecontext.explain.targets.RegionTarget` callables, one per
  sample, so every sample of a batch is explained with its own mask (the library sums
  ``target_b(output_b)`` over the batch, and the samples do not interact);
* the map is returned *raw* (ReLU'd, not min-max normalised per sample as the library
  does), so maps of tiles, samples and models keep comparable units and the distance
  summary measures mass, not contrast.

Layers are addressed by their ``named_modules()`` name (see
:meth:`icecontext.models.multitask.MultiTaskModel.layer_names`). The defaults answer the
question the project asks, how far from the target the evidence lies: HiResCAM
(:data:`DEFAULT_METHOD`) at the ASPP input, the encoder's last kept stage
(:func:`default_layer`). There the target's gradient has passed through every atrous
branch, so the map spreads as far as the ASPP and decoder reach; after the ASPP
(``decoders.<D>.project``) only a 3x3 convolution and the head follow, and a HiResCAM
map stays within about one feature cell whatever the rates (docs/explain.md, "Layers").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM, HiResCAM
from pytorch_grad_cam.base_cam import BaseCAM
from torch import Tensor, nn

from icecontext.errors import ConfigError

CamMethod = Literal["gradcam", "hirescam"]

DEFAULT_METHOD: CamMethod = "hirescam"
"""HiResCAM: zero where the target's gradient does not reach, so its distance curve
measures context (Grad-CAM's globally averaged weights light similar features anywhere)."""


class TaskOutput(nn.Module):
    """The output tensor of one task of a dict-output model (for pytorch-grad-cam).

    Args:
        model: ``model(x) -> {task: (B, K, H, W)}``.
        task: The head to return.
    """

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, x: Tensor) -> Tensor:
        """Run the model and return ``task``'s output ``(B, K, H, W)``."""
        out: dict[str, Tensor] = self.model(x)
        if self.task not in out:
            raise ConfigError("--task", f"the model has no '{self.task}' output ({', '.join(out)})")
        return out[self.task]


def suggested_layers(model: nn.Module, task: str) -> dict[str, str]:
    """Layers worth explaining for ``task``, name -> description (encoder first).

    Uses the model's own ``layer_names(task)`` when it has one (the multi-task network
    does); otherwise every convolution of the model.
    """
    names = getattr(model, "layer_names", None)
    if callable(names):
        try:
            return dict(names(task))
        except (KeyError, AttributeError):
            return dict(names())
    return {n: type(m).__name__ for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def default_layer(model: nn.Module, task: str) -> str:
    """The default layer of ``task``: the ASPP input, i.e. the encoder's last kept stage.

    ``encoder.layer3`` for the presets (``encoder.layer2`` for a ResNet cut after
    layer2). A HiResCAM map there spreads as far as the layers after it, the task's
    ASPP and decoder, let the target reach back, so its distance curve shows the context
    the atrous rates add (:func:`icecontext.explain.distance.explained_field`). Falls
    back to the last suggested layer before the head for models without decoders.
    """
    encoder = getattr(model, "encoder", None)
    if callable(getattr(model, "decoder_name", None)) and isinstance(encoder, nn.Module):
        stages = [n for n, _ in encoder.named_children() if n.startswith("layer")]
        if stages:
            return f"encoder.{stages[-1]}"
    candidates = [n for n in suggested_layers(model, task) if not n.startswith("heads.")]
    if not candidates:
        raise ConfigError("--layer", "the model has no convolution to explain; name a layer")
    return candidates[-1]


def find_layer(model: nn.Module, name: str | None, task: str) -> tuple[str, nn.Module]:
    """Look a layer up by its ``named_modules()`` name.

    Args:
        model: The multi-task network.
        name: Dotted name (``decoders.SOD.aspp.branches.2``); ``None`` = :func:`default_layer`.
        task: The task explained (for the default and the list of suggestions).

    Returns:
        ``(name, module)``.

    Raises:
        ConfigError: ``--layer`` naming the unknown layer and listing the valid names.
    """
    if name is None:
        name = default_layer(model, task)
    modules = dict(model.named_modules())
    if not name or name not in modules:
        listed = "\n  ".join(f"{n}: {d}" for n, d in suggested_layers(model, task).items())
        raise ConfigError(
            "--layer",
            f"unknown layer '{name}'; layers of the {task} path:\n  {listed}\n"
            "(any other module name of the model works too, e.g. encoder.layer3.1.conv2)",
        )
    return name, modules[name]


class _RawMaps:
    """Mixin for pytorch-grad-cam CAM classes: raw maps at the layer's grid.

    The library's ``forward`` runs the model, sums the per-sample targets, backpropagates
    and combines activations and gradients through the class's ``get_cam_image``; only
    the last step (per-sample min-max scaling and resizing) is replaced, so maps keep
    their units and can be stitched, compared and summed.

    Attributes:
        last_mean_gradients: ``(B, C)`` spatial means of the gradients of the last call
            (Grad-CAM's channel weights ``alpha``).
    """

    last_mean_gradients: np.ndarray | None = None
    activations_and_grads: Any
    target_layers: list[nn.Module]
    get_cam_image: Any

    def compute_cam_per_layer(
        self, input_tensor: Tensor, targets: list[Any], eigen_smooth: bool
    ) -> list[np.ndarray]:
        acts = [a.cpu().numpy() for a in self.activations_and_grads.activations]
        grads = [g.cpu().numpy() for g in self.activations_and_grads.gradients]
        if len(grads) < len(self.target_layers):
            raise _NoGradient
        cams = []
        for layer, a, g in zip(self.target_layers, acts, grads, strict=False):
            if a.ndim != 4:
                raise ConfigError(
                    "--layer", f"Grad-CAM needs a (B, C, h, w) layer output, got {a.shape}"
                )
            self.last_mean_gradients = g.mean(axis=(2, 3))
            cam = self.get_cam_image(input_tensor, layer, targets, a, g, eigen_smooth)
            cams.append(np.maximum(cam, 0)[:, None])
        return cams

    def aggregate_multi_layers(self, cam_per_target_layer: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(cam_per_target_layer, axis=1).mean(axis=1)


class RawGradCAM(_RawMaps, GradCAM):
    """Grad-CAM: ``ReLU(sum_k alpha_k A_k(p))``, ``alpha_k`` the mean gradient of channel k."""


class RawHiResCAM(_RawMaps, HiResCAM):
    """HiResCAM: ``ReLU(sum_k dy/dA_k(p) A_k(p))``, the gradient taken at each position.

    Unlike Grad-CAM it is zero where the target's gradient does not reach, so its mass
    stays within the reach of the target through the layers after the explained one
    (Draelos and Carin 2020).
    """


CAM_CLASSES: dict[str, type[BaseCAM]] = {"gradcam": RawGradCAM, "hirescam": RawHiResCAM}
"""pytorch-grad-cam classes behind each ``--method``."""


class _NoGradient(Exception):
    """The layer received no gradient: it does not feed the explained head."""


def upsample_cam(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling (``align_corners=False``) of ``(..., h, w)`` maps to ``size``.

    The same interpolation as the model's output upsampling, so a feature cell's value
    lands on the pixels whose outputs that cell drives.
    """
    t = torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32))
    lead = t.shape[:-2]
    t = t.reshape(-1, 1, *t.shape[-2:])
    up = F.interpolate(t, size=list(size), mode="bilinear", align_corners=False)
    return up.reshape(*lead, *size).numpy()


@dataclass
class CamBatch:
    """Grad-CAM maps of a batch.

    Attributes:
        cam: float32 ``(B, H, W)`` at the input size, >= 0, raw units.
        features: float32 ``(B, h, w)`` at the layer's grid.
        weights: float32 ``(B, C)`` mean gradient per channel (Grad-CAM's ``alpha``,
            reported for both methods).
        masks: bool ``(B, H, W)``: the pixels each sample's target summed.
        layer: The layer name.
        task: The task explained.
        method: ``"gradcam"`` or ``"hirescam"``.
    """

    cam: np.ndarray
    features: np.ndarray
    weights: np.ndarray
    masks: np.ndarray
    layer: str
    task: str
    method: str = DEFAULT_METHOD


def gradcam_batch(
    model: nn.Module,
    x: Tensor,
    task: str,
    targets: Sequence[Any],
    layer: str | None = None,
    method: CamMethod = DEFAULT_METHOD,
) -> CamBatch:
    """Grad-CAM (or HiResCAM) of one task head for a batch, each sample with its own target.

    Args:
        model: Dict-output multi-task network (put in eval mode for the call and
            restored afterwards).
        x: Inputs ``(B, C, H, W)`` (moved to the model's device).
        task: ``"SIC"``, ``"SOD"`` or ``"FLOE"``.
        targets: ``B`` callables ``target(output_b (K, H, W)) -> scalar``, usually
            :class:`~icecontext.explain.targets.RegionTarget`.
        layer: Layer name; ``None`` = :func:`default_layer`.
        method: ``"hirescam"`` (default: gradient times activation at each position) or
            ``"gradcam"`` (channel weights averaged over the input).

    Returns:
        The maps (see :class:`CamBatch`).

    Raises:
        ConfigError: ``--layer`` if the layer is unknown or does not feed ``task``'s head;
            ``--method`` if the method is unknown.
    """
    if x.ndim != 4:
        raise ValueError(f"expected inputs (B, C, H, W), got {tuple(x.shape)}")
    if len(targets) != x.shape[0]:
        raise ValueError(f"{len(targets)} targets for a batch of {x.shape[0]}")
    if method not in CAM_CLASSES:
        raise ConfigError("--method", f"expected one of {', '.join(CAM_CLASSES)}, got {method!r}")
    name, module = find_layer(model, layer, task)
    was_training = model.training
    try:
        with CAM_CLASSES[method](TaskOutput(model, task), [module]) as cam:
            try:
                feats = cam(x, list(targets))
            except _NoGradient:
                raise ConfigError(
                    "--layer",
                    f"layer '{name}' does not feed the {task} head (no gradient reaches it); "
                    f"choose one of: {', '.join(suggested_layers(model, task))}",
                ) from None
            weights = cam.last_mean_gradients
            cam.outputs = None  # drop the graph the library keeps for its users
    finally:
        model.train(was_training)
    feats = np.asarray(feats, dtype=np.float32)
    masks = np.stack(
        [
            np.zeros(x.shape[-2:], bool) if getattr(t, "mask", None) is None else t.mask
            for t in targets
        ]
    )
    assert weights is not None
    return CamBatch(
        cam=upsample_cam(feats, (int(x.shape[-2]), int(x.shape[-1]))),
        features=feats,
        weights=np.asarray(weights, dtype=np.float32),
        masks=masks,
        layer=name,
        task=task,
        method=method,
    )
