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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

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
from icecontext.explain.targets import TargetSpec, classes_fn_for, make_targets
from icecontext.inference.predictor import model_overlap, receptive_field_of
from icecontext.inference.tiling import DEFAULT_ALIGN, Tile, plan_tiles, round_up

log = logging.getLogger(__name__)

Window = tuple[int, int, int, int]


class CamSource(Protocol):
    """What scene explanations read (a :class:`~icecontext.data.loader.sources.SceneSource`)."""

    name: str

    @property
    def shape(self) -> tuple[int, int]:
        """``(h, w)`` at the source's resolution."""
        ...

    @property
    def downsample(self) -> int:
        """Integer downsampling factor of the source."""
        ...

    def read_inputs(self, window: Window, features: Sequence[str]) -> np.ndarray:
        """``float32 (C, h, w)`` inputs of a window inside the scene."""
        ...

    def valid_mask(self, window: Window) -> np.ndarray:
        """``bool (h, w)``: pixels with input data."""
        ...


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


def _check_domain(window: Window | None, shape: tuple[int, int]) -> Window:
    h, w = shape
    if window is None:
        return (0, 0, h, w)
    if len(window) != 4:
        raise ConfigError("--window", f"expected four integers r c h w, got {window}")
    r, c, wh, ww = (int(v) for v in window)
    if wh < 1 or ww < 1 or r < 0 or c < 0 or r + wh > h or c + ww > w:
        raise ConfigError(
            "--window",
            f"({r}, {c}, {wh}, {ww}) must have a positive size and lie inside the scene "
            f"({h} x {w} pixels at the model's resolution)",
        )
    return (r, c, wh, ww)


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


def _read_domain(
    source: CamSource, domain: Window, tile: Window, features: Sequence[str]
) -> np.ndarray:
    """Inputs of a tile (domain coordinates); 0 past the domain, like a scene edge."""
    r0, c0, h, w = domain
    tr, tc, th, tw = tile
    out = np.zeros((len(features), th, tw), dtype=np.float32)
    rh, rw = min(th, h - tr), min(tw, w - tc)
    if rh > 0 and rw > 0:
        data = np.asarray(source.read_inputs((r0 + tr, c0 + tc, rh, rw), list(features)))
        if data.shape != (len(features), rh, rw):
            raise DataError(
                f"scene {source.name}: read_inputs returned {data.shape} for window "
                f"{(r0 + tr, c0 + tc, rh, rw)}, expected {(len(features), rh, rw)}"
            )
        out[:, :rh, :rw] = data
    return out


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


def explain_scene(
    model: nn.Module,
    source: CamSource,
    features: Sequence[str],
    spec: TargetSpec,
    *,
    layer: str | None = None,
    window: Window | None = None,
    tile: int = 512,
    overlap: int | Literal["auto", "rf"] = "auto",
    batch: int = 1,
    device: str | torch.device = "cpu",
    classes: np.ndarray | None = None,
    cache_mb: float = 512.0,
    method: CamMethod = DEFAULT_METHOD,
    progress: Callable[[int, int], None] | None = None,
) -> SceneCam:
    """Grad-CAM of one task target over a scene or a window, tile by tile.

    Args:
        model: Dict-output multi-task network (eval mode during the call, restored).
        source: The scene (a :class:`~icecontext.data.loader.sources.SceneSource`); it must
            offer ``read_charts(window)`` when ``spec.mask == "reference"``.
        features: Input channel names in model order.
        spec: What to explain.
        layer: Layer name (``None`` = the ASPP input: :func:`.gradcam.default_layer`).
        window: ``(row, col, height, width)`` to explain alone; ``None`` = whole scene.
        tile: Tile side in pixels (rounded up to a multiple of 32).
        overlap: Context margin around tile cores; ``"auto"`` = the model's
            receptive-field radius, with tiles grown to at least four times it (see
            :func:`auto_tiling`), so that the map is exact.
        batch: Tiles per forward/backward pass.
        device: Torch device.
        classes: Fixed class map ``(h, w)`` of the domain that decides the target pixels
            (overrides ``spec.mask``; ``--compare`` passes the first model's mask).
        cache_mb: Keep the layer activations of the whole domain in memory up to this
            size; beyond it they are recomputed in a forward-only second pass
            (Grad-CAM only).
        method: ``"hirescam"`` (default; gradient x activation per position: each tile
            adds its products over its whole window, halo included, since a position's
            gradient gathers the targets of every tile it influences) or ``"gradcam"``.
        progress: ``callback(done, total)`` over tile passes.

    Returns:
        The map and what it explains (see :class:`SceneCam`).

    Raises:
        ConfigError: For a bad window, tile, overlap or layer (naming the option).
        DataError: When no pixel matches the target (e.g. the class is absent).
    """
    t0 = time.perf_counter()
    if method not in CAM_CLASSES:
        raise ConfigError("--method", f"expected one of {', '.join(CAM_CLASSES)}, got {method!r}")
    if batch < 1:
        raise ConfigError("--batch", f"must be >= 1 tile, got {batch}")
    name, module = find_layer(model, layer, spec.task)
    domain = _check_domain(window, tuple(source.shape))  # type: ignore[arg-type]
    _, _, h, w = domain
    rf: int | None
    if overlap == "auto":
        wanted = tile
        tile, margin_px, rf = auto_tiling(model, tile)
        if tile > wanted and tile < max(h, w):
            log.info(
                "tiles of %d px (asked %d) so that a %d px margin covers the receptive field",
                tile,
                wanted,
                margin_px,
            )
    else:
        margin_px = model_overlap(model, overlap, tile)
        rf = receptive_field_of(model)
    layout = plan_tiles((h, w), tile, margin_px, DEFAULT_ALIGN)
    ph, pw = layout.padded_shape
    dev = torch.device(device)

    valid = np.asarray(source.valid_mask(domain), dtype=bool)
    reference = None
    if hasattr(source, "read_charts"):
        reference = np.asarray(source.read_charts(domain)[spec.task], dtype=np.uint8)
    if classes is not None:
        fixed: np.ndarray | None = np.asarray(classes, dtype=np.uint8)
        if fixed.shape != (h, w):
            raise ValueError(f"class map {fixed.shape} differs from the domain {(h, w)}")
    elif spec.mask == "reference":
        if reference is None:
            raise ConfigError("--mask", f"scene {source.name} has no reference charts to read")
        fixed = reference
    else:
        fixed = None
    valid_p = _pad(valid, (ph, pw), False)
    fixed_p = None if fixed is None else _pad(fixed, (ph, pw), np.uint8(CHART_FILL))

    prediction = np.full((ph, pw), CHART_FILL, dtype=np.uint8)
    target_mask = np.zeros((ph, pw), dtype=bool)
    tiles = list(layout.tiles)
    batches = [tiles[i : i + batch] for i in range(0, len(tiles), batch)]
    single = len(tiles) == 1
    exact = single or (rf is not None and layout.margin >= -(-int(rf) // 2))
    if not exact:
        log.warning(
            "tile margin %d px is below the receptive-field radius (%s px): the tiled map "
            "approximates a whole-scene pass; raise --tile/--overlap for an exact one",
            layout.margin,
            "unbounded" if rf is None else -(-int(rf) // 2),
        )

    head = TaskOutput(model, spec.task)
    was_training = model.training
    model.eval()
    hook = _LayerHook(module)
    grad_sum: Tensor | None = None
    acts: np.ndarray | None = None
    hires: np.ndarray | None = None
    stride = 0
    cache = True
    total_passes = len(batches)
    done = 0
    try:
        # ---- pass 1: gradients (and activations of the cores when they fit in memory)
        for group in batches:
            x_np = np.stack([_read_domain(source, domain, t.window, features) for t in group])
            regions = np.zeros((len(group), *x_np.shape[-2:]), dtype=bool)
            tile_fixed = None if fixed_p is None else np.full(regions.shape, CHART_FILL, np.uint8)
            for b, t in enumerate(group):
                rows, cols = slice(t.rows.start, t.rows.stop), slice(t.cols.start, t.cols.stop)
                cr, cc = _core_slices(t)
                regions[b][cr, cc] = valid_p[rows, cols][cr, cc]
                if tile_fixed is not None and fixed_p is not None:
                    tile_fixed[b] = fixed_p[rows, cols]
            targets = make_targets(spec, regions, classes=tile_fixed)
            x = torch.from_numpy(x_np).to(dev).requires_grad_(True)
            with torch.enable_grad():
                out = head(x)
                act = hook.take(name)
                loss = sum(tg(out[b]) for b, tg in enumerate(targets))
                (grad,) = torch.autograd.grad(loss, act, allow_unused=True)  # type: ignore[arg-type]
            if grad is None:
                raise ConfigError(
                    "--layer",
                    f"layer '{name}' does not feed the {spec.task} head (no gradient reaches "
                    f"it); choose one of: {', '.join(suggested_layers(model, spec.task))}",
                )
            if not stride:
                stride = _layer_stride(name, x.shape[-2:], act.shape[-2:], layout.align)
                fh, fw = ph // stride, pw // stride
                need_mb = act.shape[1] * fh * fw * 4 / 2**20
                cache = method == "gradcam" and need_mb <= cache_mb
                if cache:
                    acts = np.zeros((act.shape[1], fh, fw), dtype=np.float32)
                if method == "hirescam":
                    hires = np.zeros((fh, fw), dtype=np.float64)
                grad_sum = torch.zeros(act.shape[1], dtype=torch.float64, device=dev)
            assert grad_sum is not None
            grad_sum += grad.double().sum(dim=(0, 2, 3))
            cls = _tile_classes(out.detach())
            act_np = act.detach().float().cpu().numpy() if cache else None
            prod = None
            if hires is not None:
                prod = (grad.double() * act.detach().double()).sum(dim=1).cpu().numpy()
            for b, t in enumerate(group):
                rows, cols = slice(t.rows.start, t.rows.stop), slice(t.cols.start, t.cols.stop)
                cr, cc = _core_slices(t)
                prediction[rows, cols][cr, cc] = cls[b][cr, cc]
                mask = targets[b].mask
                assert mask is not None
                target_mask[rows, cols][cr, cc] = mask[cr, cc]
                if acts is not None and act_np is not None:
                    (fr, lr), (fc, lc) = _cell_slices(t, stride)
                    acts[:, fr, fc] = act_np[b][:, lr, lc]
                if hires is not None and prod is not None:
                    r, c = t.rows.start // stride, t.cols.start // stride
                    hires[r : r + prod.shape[1], c : c + prod.shape[2]] += prod[b]
            del out, act, loss, grad
            done += 1
            if progress is not None:
                progress(done, total_passes * (1 if cache or hires is not None else 2))
        if not target_mask.any():
            where = "the scene" if window is None else f"window {domain}"
            raise DataError(
                f"scene {source.name}: no pixel of {where} matches the target "
                f"{spec.describe()}; choose another --class, --mask or --window"
            )
        assert grad_sum is not None
        fh, fw = ph // stride, pw // stride
        alpha = (grad_sum / float(fh * fw)).float()
        # ---- the map on the layer grid: HiResCAM sums, cached activations, or pass 2
        if hires is not None:
            cam_f = hires.astype(np.float32)
        elif acts is not None:
            cam_f = np.tensordot(alpha.cpu().numpy(), acts, axes=(0, 0)).astype(np.float32)
        else:
            cam_f = np.zeros((fh, fw), dtype=np.float32)
            with torch.no_grad():
                for group in batches:
                    x = torch.from_numpy(
                        np.stack([_read_domain(source, domain, t.window, features) for t in group])
                    ).to(dev)
                    head(x)
                    act = hook.take(name)
                    weighted = torch.einsum("k,bkhw->bhw", alpha, act.float()).cpu().numpy()
                    for b, t in enumerate(group):
                        (fr, lr), (fc, lc) = _cell_slices(t, stride)
                        cam_f[fr, fc] = weighted[b][lr, lc]
                    done += 1
                    if progress is not None:
                        progress(done, 2 * total_passes)
    finally:
        hook.close()
        model.train(was_training)

    cam_f = np.maximum(cam_f, 0.0)
    cam = upsample_cam(cam_f, (ph, pw))[:h, :w]
    prediction[~valid_p] = CHART_FILL
    return SceneCam(
        name=source.name,
        spec=spec,
        layer=name,
        window=domain,
        downsample=int(source.downsample),
        cam=np.ascontiguousarray(cam, dtype=np.float32),
        features=cam_f,
        weights=alpha.cpu().numpy().astype(np.float32),
        target_mask=np.ascontiguousarray(target_mask[:h, :w]),
        prediction=np.ascontiguousarray(prediction[:h, :w]),
        reference=reference,
        valid=valid,
        layer_stride=stride,
        tile=int(layout.tile[0]),
        margin=int(layout.margin),
        tiles=len(tiles),
        receptive_field_px=None if rf is None else int(rf),
        exact=bool(exact),
        method=method,
        seconds=time.perf_counter() - t0,
    )


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
