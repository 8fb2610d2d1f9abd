"""Grad-CAM over a whole scene (or a window of it) in tiles, with bounded memory.

Grad-CAM's channel weights are spatial means of the gradient of one scalar target
over the *whole* input, ``alpha_k = (1/N) sum_p dy/dA_k(p)``, so a scene cannot be
explained by running pytorch-grad-cam tile by tile (each tile would get its own
weights and its own min-max scaling). Instead the scene target is split over the tile
cores, ``y = sum_t y_t`` with ``y_t`` the target summed over tile ``t``'s core, and,
because gradients are linear,

``sum_p dy/dA_k(p) = sum_t sum_(p in tile t) dy_t/dA_k(p)``.

Pass 1 runs every tile forward and backward (:func:`torch.autograd.grad` from
``y_t`` to the layer only) and accumulates the per-channel gradient sums; each tile
also contributes the layer activations of its core cells. Then
``CAM = ReLU(sum_k alpha_k A_k)`` on the scene's layer grid, upsampled once to pixels.
When the activations of the whole scene would exceed ``cache_mb`` they are not kept:
a forward-only pass 2 recomputes them tile by tile. Memory is then bounded by one
batch of tiles plus the layer-grid map and the pixel-grid outputs.

HiResCAM (``method="hirescam"``) needs the gradient at every position rather than its
mean: each tile adds ``sum_k dy_t/dA_k(p) A_k(p)`` over its whole window, halo
included (a halo position influences the tile's core targets), into one scene map; no
second pass is needed.

Exactness: as for the tiled predictor (:mod:`icecontext.inference.tiling`), a tile's
core outputs, and the gradients of its core target with respect to the activations
anywhere in the tile, equal those of a whole-scene pass when the tile margin is at
least the model's receptive-field radius (and the ASPP has no global pooling). The
result then equals a single pytorch-grad-cam pass over the whole (padded) scene;
:attr:`SceneCam.exact` records whether the margin was large enough.

A window (``--window r c h w``) is explained as an input of its own: the model sees
only the window (zero-padded like a scene edge), the target lies inside it, and the
channel weights average over it. A window equals a batch of one, so
:func:`~icecontext.explain.gradcam.gradcam_batch` on the cropped window gives the same
map.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from icecontext.atomic import atomic_path
from icecontext.data.io.format import CHART_FILL, PIXEL_SPACING_M
from icecontext.errors import ConfigError, DataError
from icecontext.explain.gradcam import (
    CAM_CLASSES,
    DEFAULT_METHOD,
    CamMethod,
    TaskOutput,
    find_layer,
    suggested_layers,
    upsample_cam,
)
from icecontext.explain.targets import RegionTarget, TargetSpec, classes_fn_for, make_targets
from icecontext.inference.predictor import model_overlap, receptive_field_of
from icecontext.inference.tile_batches import (
    TileBatch,
    TileSource,
    Window,
    check_window,
    iter_tile_batches,
)
from icecontext.inference.tiling import DEFAULT_ALIGN, Tile, TileLayout, TileSettings, round_up

log = logging.getLogger(__name__)


@dataclass
class SceneCam:
    """A Grad-CAM map of one target over a scene or window.

    Attributes:
        name: Scene name.
        spec: What was explained.
        layer: Layer name.
        window: ``(row, col, height, width)`` of the explained domain, source pixels.
        downsample: The source's factor ``K`` (one pixel = ``K`` x 80 m).
        cam: float32 ``(h, w)``: ``ReLU(sum_k alpha_k A_k)`` upsampled to pixels; raw
            units (target units per activation unit), >= 0.
        features: float32 map at the layer's grid over the padded domain.
        weights: float32 ``(C,)`` channel weights ``alpha`` (mean gradients; reported
            for both methods).
        target_mask: bool ``(h, w)``: the pixels the target summed.
        prediction: uint8 ``(h, w)``: the model's classes for the task (255 = no data).
        reference: uint8 ``(h, w)`` reference chart of the task, or ``None``.
        valid: bool ``(h, w)``: pixels with SAR data.
        layer_stride: Input pixels per layer cell.
        tile: Tile side used.
        margin: Context margin kept around tile cores.
        tiles: Number of tiles.
        receptive_field_px: The model's theoretical receptive field (``None`` unknown or
            global).
        exact: Whether the tiling reproduces a whole-domain pass (single tile, or margin
            >= receptive-field radius).
        method: ``"gradcam"`` or ``"hirescam"``.
        seconds: Wall time.
        extra: Free-form provenance (checkpoint, run name...).
    """

    name: str
    spec: TargetSpec
    layer: str
    window: Window
    downsample: int
    cam: np.ndarray
    features: np.ndarray
    weights: np.ndarray
    target_mask: np.ndarray
    prediction: np.ndarray
    reference: np.ndarray | None
    valid: np.ndarray
    layer_stride: int
    tile: int
    margin: int
    tiles: int
    receptive_field_px: int | None
    exact: bool
    method: str = DEFAULT_METHOD
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pixel_km(self) -> float:
        """Side of one pixel in km (80 m x ``downsample``)."""
        return PIXEL_SPACING_M * self.downsample / 1000.0


def _core_cells(start: int, stop: int, stride: int) -> tuple[int, int]:
    """Layer cells ``[a, b)`` whose centre pixel ``i s + s // 2`` lies in ``[start, stop)``.

    Cores partition the padded axis, so these cell ranges partition the layer grid.
    """
    half = stride // 2
    return -(-(start - half) // stride), -(-(stop - half) // stride)


class _LayerHook:
    """Captures a module's output tensor during a forward pass."""

    def __init__(self, module: nn.Module) -> None:
        self.outputs: list[Tensor] = []
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        self.outputs.append(output)

    def take(self, name: str) -> Tensor:
        if len(self.outputs) != 1:
            raise ConfigError(
                "--layer",
                f"layer '{name}' ran {len(self.outputs)} times in one forward pass; "
                "Grad-CAM needs a layer that runs once",
            )
        out = self.outputs.pop()
        if not isinstance(out, Tensor) or out.ndim != 4:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ConfigError(
                "--layer", f"Grad-CAM needs a (B, C, h, w) output; '{name}' gives {shape}"
            )
        return out

    def close(self) -> None:
        self.handle.remove()


def _pad(values: np.ndarray, shape: tuple[int, int], fill: Any) -> np.ndarray:
    out = np.full(shape, fill, dtype=values.dtype)
    out[: values.shape[0], : values.shape[1]] = values
    return out


def auto_tiling(model: nn.Module, tile: int) -> tuple[int, int, int | None]:
    """Tile side and margin that make the tiled map exact, and the receptive field.

    The margin is the model's receptive-field radius; the tile grows (to a multiple of
    32) until its core is at least half of it, ``tile >= 4 * margin``. Without a finite
    receptive field (global pooling) the margin is ``tile / 4`` and the map is exact
    only when the domain fits in one tile.

    Returns:
        ``(tile, margin, receptive field px or None)``.
    """
    rf = receptive_field_of(model)
    if rf is None:
        return tile, max(0, tile // 4), None
    margin = -(-int(rf) // 2)
    return max(tile, round_up(4 * margin, DEFAULT_ALIGN)), margin, int(rf)


@dataclass(frozen=True, eq=False)
class CamSettings:
    """What to explain besides the target, and how (``explain``'s non-tiling options).

    Attributes:
        layer: Layer name (``None`` = the ASPP input: :func:`.gradcam.default_layer`).
        method: ``"hirescam"`` (default; gradient x activation per position: each tile
            adds its products over its whole window, halo included, since a position's
            gradient gathers the targets of every tile it influences) or ``"gradcam"``.
        window: ``(row, col, height, width)`` to explain alone, in the source's pixels;
            ``None`` = the whole scene.
        classes: Fixed class map ``(h, w)`` of the domain that decides the target pixels
            (overrides the target's mask source; ``--compare`` passes the first model's
            mask).
        cache_mb: Keep the layer activations of the whole domain in memory up to this
            size; beyond it they are recomputed in a forward-only second pass (Grad-CAM
            only).

    Raises:
        ConfigError: For an unknown method (names ``--method``).
    """

    layer: str | None = None
    method: CamMethod = DEFAULT_METHOD
    window: Window | None = None
    classes: np.ndarray | None = None
    cache_mb: float = 512.0

    def __post_init__(self) -> None:
        if self.method not in CAM_CLASSES:
            raise ConfigError(
                "--method", f"expected one of {', '.join(CAM_CLASSES)}, got {self.method!r}"
            )


DEFAULT_CAM = CamSettings()


def explain_tiling(
    model: nn.Module,
    tile: int = 512,
    overlap: int | str = "auto",
    batch: int = 1,
    *,
    shape: tuple[int, int] | None = None,
) -> TileSettings:
    """The tiling of an explanation from ``--tile``, ``--overlap`` and ``--batch``.

    Args:
        model: The network explained (its receptive field sets the margin).
        tile: Wanted tile side in pixels (rounded up to a multiple of 32).
        overlap: Context margin around tile cores: pixels, ``"rf"`` (the receptive-field
            radius) or ``"auto"`` (the radius, with tiles grown to at least four times it,
            see :func:`auto_tiling`, so that the map is exact).
        batch: Tiles per forward/backward pass.
        shape: ``(h, w)`` of the domain explained, when known: a grown tile is logged
            only when the domain does not fit in it anyway.

    Returns:
        Settings for :func:`explain_scene` (tiles are not balanced).

    Raises:
        ConfigError: A bad overlap or batch (naming the option).
    """
    if overlap == "auto":
        side, margin, _ = auto_tiling(model, tile)
        if side > tile and (shape is None or side < max(shape)):
            log.info(
                "tiles of %d px (asked %d) so that a %d px margin covers the receptive field",
                side,
                tile,
                margin,
            )
    else:
        side, margin = tile, model_overlap(model, overlap, tile)
    return TileSettings(tile=side, overlap=margin, batch=batch, balance=False)


def explain_scene(
    model: nn.Module,
    source: TileSource,
    features: Sequence[str],
    spec: TargetSpec,
    cam: CamSettings = DEFAULT_CAM,
    tiling: TileSettings | None = None,
    *,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> SceneCam:
    """Grad-CAM of one task target over a scene or a window, tile by tile.

    Args:
        model: Dict-output multi-task network (eval mode during the call, restored).
        source: The scene: a :class:`~icecontext.inference.tile_batches.TileSource` (any
            :class:`~icecontext.data.loader.sources.SceneSource`), read by the tile engine
            (:func:`~icecontext.inference.tile_batches.iter_tile_batches`, one batch
            ahead); it must also offer ``read_charts(window)`` when
            ``spec.mask == "reference"``.
        features: Input channel names in model order.
        spec: What to explain.
        cam: Layer, method, window, fixed classes and activation cache
            (:class:`CamSettings`).
        tiling: Tile side, margin and batch; ``None`` = :func:`explain_tiling` of the
            model with its defaults (512-pixel tiles grown until the margin covers the
            receptive field, one tile per pass).
        device: Torch device.
        progress: ``callback(done, total)`` over tile passes.

    Returns:
        The map and what it explains (see :class:`SceneCam`).

    Raises:
        ConfigError: For a bad window, tile, overlap or layer (naming the option).
        DataError: When no pixel matches the target (e.g. the class is absent).
    """
    t0 = time.perf_counter()
    plan = _plan(model, _Request(source, features, spec, cam), tiling)
    with _evaluating(model, plan.module) as hook:
        run = _TiledCam(TaskOutput(model, spec.task), hook, plan, torch.device(device), progress)
        run.gradient_pass()
        run.check_target()
        alpha = run.channel_weights()
        cam_f = np.maximum(run.layer_map(alpha), 0.0)
    return _scene_cam(plan, run, alpha, cam_f, time.perf_counter() - t0)


@dataclass(frozen=True)
class _Request:
    """The arguments of one :func:`explain_scene` call that say what to explain."""

    source: TileSource
    features: Sequence[str]
    spec: TargetSpec
    cam: CamSettings


@dataclass(frozen=True, eq=False)
class _Plan:
    """A checked request: its layer, domain, tiles and the maps fixed before any pass.

    Attributes:
        request: What was asked.
        layer: The layer's full name.
        module: The layer.
        domain: ``(row, col, h, w)`` explained, source pixels.
        layout: Tiles over the domain.
        batch: Tiles per pass.
        rf: The model's receptive field in pixels (``None``: unknown or global).
        exact: Whether the tiling reproduces a whole-domain pass.
        valid: bool ``(h, w)``: pixels with SAR data.
        reference: uint8 ``(h, w)`` reference chart of the task, or ``None``.
        fixed: uint8 padded class map deciding the target pixels, or ``None`` (the
            prediction decides).
    """

    request: _Request
    layer: str
    module: nn.Module
    domain: Window
    layout: TileLayout
    batch: int
    rf: int | None
    exact: bool
    valid: np.ndarray
    reference: np.ndarray | None
    fixed: np.ndarray | None

    @property
    def valid_padded(self) -> np.ndarray:
        """``valid`` padded to the layout's padded shape (``False`` outside)."""
        return _pad(self.valid, self.layout.padded_shape, False)


def _plan(model: nn.Module, request: _Request, tiling: TileSettings | None) -> _Plan:
    """Check the request, lay out the tiles and read the domain's masks and charts."""
    source, spec = request.source, request.spec
    name, module = find_layer(model, request.cam.layer, spec.task)
    domain = check_window(request.cam.window, _source_shape(source))
    _, _, h, w = domain
    tiling = tiling or explain_tiling(model, shape=(h, w))
    layout = tiling.plan((h, w))
    rf = receptive_field_of(model)
    rf = None if rf is None else int(rf)
    valid = np.asarray(source.valid_mask(domain), dtype=bool)
    reference = _read_reference(source, domain, spec.task)
    fixed = _fixed_classes(request, reference, (h, w))
    exact = len(layout.tiles) == 1 or (rf is not None and layout.margin >= -(-rf // 2))
    if not exact:
        log.warning(
            "tile margin %d px is below the receptive-field radius (%s px): the tiled map "
            "approximates a whole-scene pass; raise --tile/--overlap for an exact one",
            layout.margin,
            "unbounded" if rf is None else -(-rf // 2),
        )
    return _Plan(
        request=request,
        layer=name,
        module=module,
        domain=domain,
        layout=layout,
        batch=tiling.batch,
        rf=rf,
        exact=bool(exact),
        valid=valid,
        reference=reference,
        fixed=None if fixed is None else _pad(fixed, layout.padded_shape, np.uint8(CHART_FILL)),
    )


def _source_shape(source: TileSource) -> tuple[int, int]:
    h, w = source.shape
    return int(h), int(w)


def _read_reference(source: TileSource, domain: Window, task: str) -> np.ndarray | None:
    """The task's reference chart over the domain, when the source has charts."""
    read_charts = getattr(source, "read_charts", None)
    if read_charts is None:
        return None
    return np.asarray(read_charts(domain)[task], dtype=np.uint8)


def _fixed_classes(
    request: _Request, reference: np.ndarray | None, shape: tuple[int, int]
) -> np.ndarray | None:
    """The class map that decides the target pixels (``None``: the model's prediction).

    Raises:
        ConfigError: A reference mask asked of a source without charts (``--mask``).
        ValueError: A fixed class map of another shape than the domain.
    """
    classes, spec = request.cam.classes, request.spec
    if classes is not None:
        fixed = np.asarray(classes, dtype=np.uint8)
        if fixed.shape != shape:
            raise ValueError(f"class map {fixed.shape} differs from the domain {shape}")
        return fixed
    if spec.mask == "reference":
        if reference is None:
            raise ConfigError(
                "--mask", f"scene {request.source.name} has no reference charts to read"
            )
        return reference
    return None


@contextmanager
def _evaluating(model: nn.Module, module: nn.Module) -> Iterator[_LayerHook]:
    """``model`` in eval mode with a hook on ``module``; both undone on leaving."""
    was_training = model.training
    model.eval()
    hook = _LayerHook(module)
    try:
        yield hook
    finally:
        hook.close()
        model.train(was_training)


class _TiledCam:
    """The tile passes of one explanation and the maps they fill.

    Pass 1 (:meth:`gradient_pass`) runs every batch of tiles forward and backward and
    accumulates the channel gradient sums, the predicted classes and target pixels of
    the cores, and either the cores' activations (Grad-CAM, when they fit in the cache)
    or the gradient x activation products (HiResCAM). :meth:`layer_map` then makes the
    map on the layer grid, with a forward-only pass 2 when the activations were not kept.
    """

    def __init__(
        self,
        head: TaskOutput,
        hook: _LayerHook,
        plan: _Plan,
        device: torch.device,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.head, self.hook, self.plan = head, hook, plan
        self.device, self.progress = device, progress
        shape = plan.layout.padded_shape
        self.prediction = np.full(shape, CHART_FILL, dtype=np.uint8)
        self.target_mask = np.zeros(shape, dtype=bool)
        self.valid_padded = plan.valid_padded
        self.stride = 0
        self.grad_sum: Tensor | None = None
        self.acts: np.ndarray | None = None
        self.hires: np.ndarray | None = None
        self.done = 0

    @property
    def layer_grid(self) -> tuple[int, int]:
        """``(h, w)`` of the layer grid over the padded domain."""
        ph, pw = self.plan.layout.padded_shape
        return ph // self.stride, pw // self.stride

    @property
    def passes(self) -> int:
        """Batches of tiles in one pass over the domain."""
        return -(-len(self.plan.layout.tiles) // self.plan.batch)

    def _batches(self) -> Generator[TileBatch, None, None]:
        """Every batch of tiles with its inputs, read one batch ahead (close it when done).

        The domain's valid mask is read once beforehand (:func:`_plan`), so no per-core
        masks are read.
        """
        request = self.plan.request
        return iter_tile_batches(
            request.source,
            list(request.features),
            self.plan.layout,
            self.plan.batch,
            window=self.plan.domain,
            valid_masks=False,
        )

    def _advance(self, passes: int) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.passes * passes)

    def gradient_pass(self) -> None:
        """Pass 1: gradients, classes, target pixels, and activations or products."""
        with closing(self._batches()) as batches:
            for tb in batches:
                targets = _batch_targets(
                    self.plan, tb.tiles, self.valid_padded, tb.inputs.shape[-2:]
                )
                out, act, grad = self._backward(tb.inputs, targets)
                self._accumulate(tb.tiles, targets, out, (act, grad))
                del out, act, grad  # not alive while the next batch runs: one batch at a time
                self._advance(1 if self.acts is not None or self.hires is not None else 2)

    def _backward(
        self, x_np: np.ndarray, targets: Sequence[RegionTarget]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Outputs, layer activations and the gradient of the tiles' summed targets."""
        name = self.plan.layer
        x = torch.from_numpy(x_np).to(self.device).requires_grad_(True)
        with torch.enable_grad():
            out = self.head(x)
            act = self.hook.take(name)
            loss = torch.stack([tg(out[b]) for b, tg in enumerate(targets)]).sum()
            (grad,) = torch.autograd.grad(loss, act, allow_unused=True)
        if grad is None:
            task = self.plan.request.spec.task
            raise ConfigError(
                "--layer",
                f"layer '{name}' does not feed the {task} head (no gradient reaches "
                f"it); choose one of: {', '.join(suggested_layers(self.head.model, task))}",
            )
        if not self.stride:
            self._allocate(x.shape[-2:], act)
        return out.detach(), act.detach(), grad

    def _allocate(self, size: Any, act: Tensor) -> None:
        """The layer grid's maps, once the first batch has shown the layer's shape."""
        cam = self.plan.request.cam
        self.stride = _layer_stride(self.plan.layer, size, act.shape[-2:], self.plan.layout.align)
        fh, fw = self.layer_grid
        need_mb = act.shape[1] * fh * fw * 4 / 2**20
        if cam.method == "gradcam" and need_mb <= cam.cache_mb:
            self.acts = np.zeros((act.shape[1], fh, fw), dtype=np.float32)
        if cam.method == "hirescam":
            self.hires = np.zeros((fh, fw), dtype=np.float64)
        self.grad_sum = torch.zeros(act.shape[1], dtype=torch.float64, device=self.device)

    def _accumulate(
        self,
        group: Sequence[Tile],
        targets: Sequence[RegionTarget],
        out: Tensor,
        act_grad: tuple[Tensor, Tensor],
    ) -> None:
        """Add one batch's gradients and write its cores into the scene maps."""
        act, grad = act_grad
        assert self.grad_sum is not None
        self.grad_sum += grad.double().sum(dim=(0, 2, 3))
        cls = _tile_classes(out)
        act_np = act.float().cpu().numpy() if self.acts is not None else None
        prod = None
        if self.hires is not None:
            prod = (grad.double() * act.double()).sum(dim=1).cpu().numpy()
        for b, t in enumerate(group):
            rows, cols = _tile_slices(t)
            cr, cc = _core_slices(t)
            self.prediction[rows, cols][cr, cc] = cls[b][cr, cc]
            mask = targets[b].mask
            assert mask is not None
            self.target_mask[rows, cols][cr, cc] = mask[cr, cc]
            if self.acts is not None and act_np is not None:
                (fr, lr), (fc, lc) = _cell_slices(t, self.stride)
                self.acts[:, fr, fc] = act_np[b][:, lr, lc]
            if self.hires is not None and prod is not None:
                r, c = t.rows.start // self.stride, t.cols.start // self.stride
                self.hires[r : r + prod.shape[1], c : c + prod.shape[2]] += prod[b]

    def check_target(self) -> None:
        """Raise :class:`DataError` when no pixel matched the target.

        Raises:
            DataError: Naming the scene (or window) and the target.
        """
        if self.target_mask.any():
            return
        request, domain = self.plan.request, self.plan.domain
        where = "the scene" if request.cam.window is None else f"window {domain}"
        raise DataError(
            f"scene {request.source.name}: no pixel of {where} matches the target "
            f"{request.spec.describe()}; choose another --class, --mask or --window"
        )

    def channel_weights(self) -> Tensor:
        """``alpha``: the mean gradient per channel over the layer grid (float32)."""
        assert self.grad_sum is not None
        fh, fw = self.layer_grid
        return (self.grad_sum / float(fh * fw)).float()

    def layer_map(self, alpha: Tensor) -> np.ndarray:
        """The map on the layer grid: HiResCAM sums, cached activations, or pass 2."""
        if self.hires is not None:
            return self.hires.astype(np.float32)
        if self.acts is not None:
            return np.tensordot(alpha.cpu().numpy(), self.acts, axes=(0, 0)).astype(np.float32)
        cam_f = np.zeros(self.layer_grid, dtype=np.float32)
        with torch.no_grad(), closing(self._batches()) as batches:
            for tb in batches:
                self.head(torch.from_numpy(tb.inputs).to(self.device))
                act = self.hook.take(self.plan.layer)
                weighted = torch.einsum("k,bkhw->bhw", alpha, act.float()).cpu().numpy()
                for b, t in enumerate(tb.tiles):
                    (fr, lr), (fc, lc) = _cell_slices(t, self.stride)
                    cam_f[fr, fc] = weighted[b][lr, lc]
                self._advance(2)
        return cam_f


def _batch_targets(
    plan: _Plan, group: Sequence[Tile], valid_padded: np.ndarray, size: Any
) -> list[RegionTarget]:
    """One target per tile: its core's pixels with data, of the fixed classes if any."""
    regions = np.zeros((len(group), *size), dtype=bool)
    fixed = None if plan.fixed is None else np.full(regions.shape, CHART_FILL, np.uint8)
    for b, t in enumerate(group):
        rows, cols = _tile_slices(t)
        cr, cc = _core_slices(t)
        regions[b][cr, cc] = valid_padded[rows, cols][cr, cc]
        if fixed is not None and plan.fixed is not None:
            fixed[b] = plan.fixed[rows, cols]
    return make_targets(plan.request.spec, regions, classes=fixed)


def _scene_cam(
    plan: _Plan, run: _TiledCam, alpha: Tensor, cam_f: np.ndarray, seconds: float
) -> SceneCam:
    """The result: the map upsampled to pixels and cropped to the domain, with its context."""
    request = plan.request
    _, _, h, w = plan.domain
    cam = upsample_cam(cam_f, plan.layout.padded_shape)[:h, :w]
    run.prediction[~run.valid_padded] = CHART_FILL
    return SceneCam(
        name=request.source.name,
        spec=request.spec,
        layer=plan.layer,
        window=plan.domain,
        downsample=int(request.source.downsample),
        cam=np.ascontiguousarray(cam, dtype=np.float32),
        features=cam_f,
        weights=alpha.cpu().numpy().astype(np.float32),
        target_mask=np.ascontiguousarray(run.target_mask[:h, :w]),
        prediction=np.ascontiguousarray(run.prediction[:h, :w]),
        reference=plan.reference,
        valid=plan.valid,
        layer_stride=run.stride,
        tile=int(plan.layout.tile[0]),
        margin=int(plan.layout.margin),
        tiles=len(plan.layout.tiles),
        receptive_field_px=plan.rf,
        exact=plan.exact,
        method=request.cam.method,
        seconds=seconds,
    )


def _tile_slices(t: Tile) -> tuple[slice, slice]:
    """The tile's read window, in pixels of the padded domain."""
    return slice(t.rows.start, t.rows.stop), slice(t.cols.start, t.cols.stop)


def _core_slices(t: Tile) -> tuple[slice, slice]:
    """The tile's core, in the tile's own pixel coordinates."""
    return (
        slice(t.rows.core_start - t.rows.start, t.rows.core_stop - t.rows.start),
        slice(t.cols.core_start - t.cols.start, t.cols.core_stop - t.cols.start),
    )


def _cell_slices(t: Tile, stride: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Core layer cells of a tile: ``((domain rows, local rows), (domain cols, local cols))``."""
    out = []
    for span in (t.rows, t.cols):
        a, b = _core_cells(span.core_start, span.core_stop, stride)
        o = span.start // stride
        out.append((slice(a, b), slice(a - o, b - o)))
    return out[0], out[1]


def _layer_stride(name: str, size: Any, layer_size: Any, align: int) -> int:
    """Input pixels per layer cell; must be an integer dividing the tile alignment."""
    (th, tw), (lh, lw) = (int(v) for v in size), (int(v) for v in layer_size)
    if lh < 1 or lw < 1 or th % lh or tw % lw or th // lh != tw // lw or align % (th // lh):
        raise ConfigError(
            "--layer",
            f"layer '{name}' maps a {th} x {tw} tile to {lh} x {lw} cells; tiled Grad-CAM "
            f"needs an integer stride dividing {align}",
        )
    return th // lh


def _tile_classes(out: Tensor) -> np.ndarray:
    """uint8 class maps ``(B, H, W)`` of a batch of one head's outputs."""
    fn = classes_fn_for(out.shape[1])
    return np.stack([fn(o).to(torch.uint8).cpu().numpy() for o in out])


# ----------------------------------------------------------------------------- output


def cam_dataset(result: SceneCam, attrs: dict[str, Any] | None = None) -> Any:
    """The map as an :class:`xarray.Dataset` (what :func:`write_cam_netcdf` writes).

    Variables: ``cam`` (float32), ``target_mask``, ``valid`` (uint8 0/1), ``prediction``
    and ``reference`` (uint8, 255 = none), ``cam_layer_grid`` and ``channel_weights``;
    coordinates ``row``/``col`` are source-pixel indices of the scene.
    """
    import xarray as xr

    r0, c0, h, w = result.window
    fh, fw = result.features.shape
    data: dict[str, Any] = {
        "cam": (("row", "col"), result.cam, {"long_name": "Grad-CAM (raw units, >= 0)"}),
        "target_mask": (("row", "col"), result.target_mask.astype(np.uint8)),
        "valid": (("row", "col"), result.valid.astype(np.uint8)),
        "prediction": (("row", "col"), result.prediction),
        "cam_layer_grid": (("layer_row", "layer_col"), result.features),
        "channel_weights": (("channel",), result.weights),
    }
    if result.reference is not None:
        data["reference"] = (("row", "col"), result.reference)
    spec = result.spec
    rf_px = result.receptive_field_px
    meta = {
        "scene_name": result.name,
        "task": spec.task,
        "class_index": -1 if spec.class_index is None else int(spec.class_index),
        "mask_source": spec.mask,
        "target": spec.describe(),
        "layer": result.layer,
        "method": result.method,
        "layer_stride_px": result.layer_stride,
        "window": list(result.window),
        "downsample": result.downsample,
        "pixel_km": result.pixel_km,
        "tile": result.tile,
        "margin": result.margin,
        "tiles": result.tiles,
        "receptive_field_px": -1 if rf_px is None else rf_px,
        "exact_tiling": int(result.exact),
        **{k: v for k, v in (attrs or {}).items() if v is not None},
    }
    coords = {
        "row": np.arange(r0, r0 + h, dtype=np.int32),
        "col": np.arange(c0, c0 + w, dtype=np.int32),
        "layer_row": np.arange(fh, dtype=np.int32),
        "layer_col": np.arange(fw, dtype=np.int32),
    }
    return xr.Dataset(data, coords=coords, attrs=meta)


def write_cam_netcdf(
    result: SceneCam, path: str | os.PathLike[str], attrs: dict[str, Any] | None = None
) -> Path:
    """Write the map and its target to a compressed NetCDF-4 file, atomically."""
    ds = cam_dataset(result, attrs)
    encoding = {v: {"zlib": True, "complevel": 4} for v in ds.data_vars}
    with atomic_path(path, suffix=".nc") as tmp:
        ds.to_netcdf(tmp, format="NETCDF4", engine="netcdf4", encoding=encoding)
    return Path(path)
