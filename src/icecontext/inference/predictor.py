"""Tiled full-scene prediction over a :class:`~icecontext.data.loader.sources.SceneSource`.

:func:`predict_scene` runs a multi-task model over a whole scene in tiles (see
:mod:`icecontext.inference.tiling` for the layout and why it is exact), in batches
of tiles, so memory is bounded by ``batch x channels x tile²`` plus the output maps.

Outputs:

* class maps (``uint8``) at the scene's **full 80 m shape**. A source read with
  downsampling ``K`` is predicted at its own resolution and then upsampled by
  nearest neighbour: full pixel ``(r, c)`` takes the value of source pixel
  ``(min(r // K, h - 1), min(c // K, w - 1))`` (source pixel ``(i, j)`` covers 80 m
  rows ``[K i, K i + K)``; the clamp covers the rows that a floor-sized grid leaves
  over). Nearest upsampling commutes with argmax, so upsampling class maps equals
  upsampling logits and then taking the argmax, as the AutoICE winners did;
* pixels without input data (the source's ``valid_mask`` is false) are 255 in every
  chart, like the reference charts;
* optionally the class probabilities of the classification heads, ``(K, h, w)`` at
  the source's resolution, as ``float32`` or packed ``uint8`` (``round(p * 250)``,
  4x smaller: 0.6 GB instead of 2.5 GB for the 24 classes of a 5000 x 5200 scene),
  and a per-pixel confidence map computed tile by tile (:meth:`ScenePrediction.upsample`
  brings any such array to the full shape).

Stitching: central crops, not blending. Each tile contributes only its *core*, which
lies at least ``overlap`` pixels inside the tile (see :mod:`icecontext.inference.tiling`);
when ``overlap`` covers the receptive-field radius the result is *exactly* the
whole-scene pass, and no float accumulator of the scene's size is needed (weighted
blending with a Hann or linear window needs one per class, 2.5 GB at 5000 x 5200, and is
only approximately equal to the whole-scene pass). Memory is therefore: one batch of
tiles and its activations, plus the ``uint8`` class maps (3 bytes per pixel).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from icecontext.data.io.format import CHART_FILL, CHARTS
from icecontext.errors import ConfigError
from icecontext.inference.exports.netcdf import PROBABILITY_SCALE
from icecontext.inference.tile_batches import TileBatch, TileSource, iter_tile_batches
from icecontext.inference.tiling import DEFAULT_ALIGN, TileLayout, TileSettings, round_up

InferencePrecision = Literal["auto", "32", "bf16", "16"]
"""``--precision``: ``auto`` is bf16 on CUDA and on CPUs with native bf16, else 32
(:func:`resolve_precision`)."""
ProbabilityDtype = Literal["float32", "uint8"]
ConfidenceKind = Literal["max", "entropy"]


@dataclass(frozen=True)
class ExtraOutputs:
    """What a prediction returns beyond the class maps.

    Attributes:
        probabilities: Also return the softmax probabilities of the classification
            heads at the source's resolution.
        probability_dtype: ``"float32"`` or ``"uint8"`` (packed ``round(p * 250)``).
        confidence: Also return a confidence map per classification head (``"max"``
            probability or ``"entropy"``), computed per tile in float32.

    Raises:
        ConfigError: For an unknown ``probability_dtype`` or ``confidence``.
    """

    probabilities: bool = False
    probability_dtype: ProbabilityDtype = "float32"
    confidence: ConfidenceKind | None = None

    def __post_init__(self) -> None:
        if self.probability_dtype not in ("float32", "uint8"):
            raise ConfigError(
                "probability_dtype",
                f"must be 'float32' or 'uint8', got {self.probability_dtype!r}",
            )
        if self.confidence not in (None, "max", "entropy"):
            raise ConfigError("confidence", f"must be 'max' or 'entropy', got {self.confidence!r}")


DEFAULT_TILING = TileSettings()
CLASSES_ONLY = ExtraOutputs()


@dataclass
class ScenePrediction:
    """A full-scene prediction.

    Attributes:
        name: Scene name.
        classes: ``{"SIC", "SOD", "FLOE"}`` -> ``uint8 (H, W)`` at the full 80 m shape,
            255 where the scene has no input data.
        shape: ``(h, w)`` at which the model ran (the source's resolution).
        full_shape: ``(H, W)`` at 80 m.
        downsample: The source's factor ``K``.
        probabilities: Optional ``{task: (K, h, w)}`` at the source's resolution for
            the classification heads (SIC only when it is classified): ``float32``, or
            ``uint8`` packed as ``round(p * 250)`` (``probability_dtype="uint8"``).
        confidence: Optional ``{task: float32 (h, w)}`` at the source's resolution:
            max probability or 1 - normalised entropy, NaN where masked.
        source_classes: The class maps at the source's resolution ``(h, w)`` (the same
            arrays as ``classes`` when ``downsample == 1``).
        seconds: Wall time of the prediction.
        tiles: Number of tiles run.
        valid_pixels: Pixels with input data (at the source's resolution).
        extra: Tiling settings actually used (``tile``, ``margin``, ``align``).
    """

    name: str
    classes: dict[str, np.ndarray]
    shape: tuple[int, int]
    full_shape: tuple[int, int]
    downsample: int
    probabilities: dict[str, np.ndarray] | None = None
    confidence: dict[str, np.ndarray] | None = None
    source_classes: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0
    tiles: int = 0
    valid_pixels: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def upsample(self, array: np.ndarray) -> np.ndarray:
        """Bring an array of the source's resolution (``(..., h, w)``) to the full shape."""
        return upsample_nearest(array, self.downsample, self.full_shape)


def upsample_nearest(array: np.ndarray, factor: int, full_shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upsampling by an integer factor to an exact shape.

    Pixel ``(r, c)`` of the output takes input pixel ``(min(r // factor, h - 1),
    min(c // factor, w - 1))``.

    Args:
        array: ``(..., h, w)``.
        factor: Integer factor ``K >= 1``.
        full_shape: ``(H, W)`` of the output.

    Returns:
        ``(..., H, W)`` (the input itself when ``K == 1`` and the shapes agree).
    """
    h, w = array.shape[-2:]
    if factor == 1 and (h, w) == tuple(full_shape):
        return array
    rows = np.minimum(np.arange(full_shape[0]) // factor, h - 1)
    cols = np.minimum(np.arange(full_shape[1]) // factor, w - 1)
    return array[..., rows[:, None], cols[None, :]]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), not emulated."""
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, name, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # private helpers: absence or failure means "no"
            continue
    return False


def resolve_precision(
    precision: InferencePrecision, device: str | torch.device
) -> Literal["32", "bf16", "16"]:
    """``auto`` -> ``bf16`` on CUDA and on CPUs with native bf16, else ``32``.

    Other values are returned unchanged. On CPUs without AVX512-BF16 or AMX, bfloat16 is
    emulated and slower than float32, so ``auto`` keeps float32 there.
    """
    if precision != "auto":
        return precision
    if torch.device(device).type == "cuda" or cpu_has_native_bf16():
        return "bf16"
    return "32"


def uses_channels_last(model: nn.Module) -> bool:
    """Whether the model's first convolution holds its weights channels-last.

    :func:`predict_scene` then passes its input tiles channels-last too, so the
    convolutions run without layout conversions.
    """
    modules = model.modules() if isinstance(model, nn.Module) else ()
    for module in modules:
        if isinstance(module, nn.Conv2d) and module.weight.dim() == 4:
            w = module.weight
            return w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    return False


def for_cpu_inference(model: nn.Module, device: torch.device) -> nn.Module:
    """A torch model in channels-last layout when it runs on a CPU (in place).

    oneDNN's convolutions are fastest on channels-last tensors: on this project's
    AVX512-BF16 EPYC the reference preset ran 1.6x faster in bf16 and 1.3x in float32
    than in the default layout (docs/benchmarks.md). GPUs keep their layout here.
    """
    if device.type == "cpu" and isinstance(model, nn.Module):
        model.to(memory_format=torch.channels_last)
    return model


def _autocast(
    device: torch.device, precision: InferencePrecision
) -> contextlib.AbstractContextManager:
    precision = resolve_precision(precision, device)
    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "16" and device.type != "cuda":
        raise ConfigError(
            "--precision", "16 (float16) inference needs a CUDA device; use bf16 or 32"
        )
    return torch.autocast(device_type=device.type, dtype=dtype)


def _to_classes(model: nn.Module, outputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    to_classes: Callable[[Mapping[str, Tensor]], dict[str, Tensor]] | None
    to_classes = getattr(model, "to_classes", None)
    return default_to_classes(outputs) if to_classes is None else to_classes(outputs)


def default_to_classes(outputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Class maps of a model without ``to_classes``.

    Argmax, or for a 1-channel SIC head the project's rounding rule
    (:func:`~icecontext.models.multitask.outputs_to_classes`).
    """
    from icecontext.models.multitask import outputs_to_classes

    sic = outputs.get("SIC")
    return outputs_to_classes(dict(outputs), sic is not None and sic.shape[1] == 1)


MAX_OVERLAP_FRACTION = 16
"""The automatic margin is at most ``tile / 16`` per side (see :func:`overlap_for_rf`)."""


def overlap_for_rf(receptive_field: int | None, tile: int) -> int:
    """Default context margin: ``min(ceil(RF / 2), tile / 16)`` pixels.

    Half the receptive field (its radius) makes tiled prediction exact for models
    without global pooling. The cap keeps ``(1 - 2/16)^2 = 77 %`` of every tile as core,
    so tiling costs at most ~1.3x the work of one whole-scene pass (the throughput
    acceptance is 70 %). Theoretical fields are far wider than what the models use
    (the effective receptive field): 835 px for the small preset and 2491 px for the
    reference preset, whose radii would leave no core in any tile that fits in memory;
    with the cap, pixels within ``RF / 2`` of a core edge may differ slightly from a
    whole-scene pass (``benchmarks/inference.py`` prints the agreement). A ``None``
    field (global pooling) gets the cap. :func:`~icecontext.inference.tiling.plan_tiles`
    then rounds the margin up so the step between tiles is a multiple of the stride.
    """
    cap = max(0, tile // MAX_OVERLAP_FRACTION)
    return cap if receptive_field is None else min(cap, -(-int(receptive_field) // 2))


def resolve_overlap(overlap: int | float | str, receptive_field: int | None, tile: int) -> int:
    """The margin in pixels for an ``--overlap`` of pixels, ``"auto"`` or ``"rf"``.

    ``"auto"`` is :func:`overlap_for_rf` (the radius capped at ``tile / 16``); ``"rf"``
    is the whole radius ``ceil(RF / 2)``, which makes the tiled result equal a
    single pass (up to floating-point rounding): with ``n`` tiles per axis the work is
    ``length + 2 * radius * (n - 1)`` pixels, so tiles of about 7 radii or more keep
    70 % of the single-pass speed (docs/inference.md).

    Raises:
        ConfigError: ``"rf"`` for a model without a finite receptive field (global
            pooling), an unknown word or a negative number (names ``--overlap``).
    """
    if overlap == "auto":
        return overlap_for_rf(receptive_field, tile)
    if overlap == "rf":
        if receptive_field is None:
            raise ConfigError(
                "--overlap",
                "'rf' needs a finite receptive field, and this model pools globally; "
                "give a number of pixels or 'auto'",
            )
        return -(-int(receptive_field) // 2)
    if (isinstance(overlap, str) and not overlap.lstrip("-").isdigit()) or (
        isinstance(overlap, float) and not overlap.is_integer()
    ):
        raise ConfigError("--overlap", f"expected pixels, 'auto' or 'rf', got {overlap!r}")
    if int(overlap) < 0:
        raise ConfigError("--overlap", f"must be >= 0 pixels, 'auto' or 'rf', got {overlap}")
    return int(overlap)


RF_TILE_MARGINS = 6
"""``--overlap rf`` grows a tile that leaves too little core to this many margins (core =
two thirds of the tile: a tile costs 1.5x its core per axis)."""


def tile_for_margin(tile: int, margin: int, align: int = DEFAULT_ALIGN) -> int:
    """``tile``, or a larger tile whose core is at least twice ``margin``.

    ``--overlap rf`` asks for the whole receptive-field radius, which can exceed half of
    any tile that is asked (1246 px for the reference preset): instead of failing, the
    tile grows to :data:`RF_TILE_MARGINS` margins; a scene not larger than that tile is
    then one single pass (:func:`~icecontext.inference.tiling.plan_tiles`).
    """
    if tile - 2 * margin >= 2 * margin:
        return tile
    return round_up(RF_TILE_MARGINS * margin, align)


def receptive_field_of(model: nn.Module) -> int | None:
    """The model's theoretical receptive field in pixels (``None``: global pooling or unknown)."""
    field_of: Callable[[], int | None] | None = getattr(model, "receptive_field", None)
    return None if field_of is None else field_of()


def auto_overlap(model: nn.Module, tile: int) -> int:
    """Context margin for a model: :func:`overlap_for_rf` of its theoretical receptive field."""
    return overlap_for_rf(receptive_field_of(model), tile)


def model_overlap(model: nn.Module, overlap: int | str, tile: int) -> int:
    """:func:`resolve_overlap` with the model's receptive field."""
    return resolve_overlap(overlap, receptive_field_of(model), tile)


def tile_confidence(probabilities: Tensor, kind: ConfidenceKind) -> Tensor:
    """Per-pixel confidence of ``(B, K, h, w)`` probabilities: ``(B, h, w)`` in 0..1.

    ``"max"`` is the top class probability; ``"entropy"`` is ``1 - H(p) / log(K)``
    (1 = certain, 0 = uniform), as :func:`icecontext.inference.exports.confidence_map`.
    """
    if kind == "max":
        return probabilities.amax(dim=1)
    if kind != "entropy":
        raise ConfigError("confidence", f"must be 'max' or 'entropy', got {kind!r}")
    p = probabilities.clamp_min(0)
    h = -torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum(dim=1)
    return 1.0 - h / float(np.log(p.shape[1]))


def has_input_data(source: TileSource, rows: int = 512) -> bool:
    """Whether any pixel of the scene has input data, read in strips of ``rows`` rows."""
    h, w = source.shape
    for r in range(0, h, rows):
        if np.asarray(source.valid_mask((r, 0, min(rows, h - r), w))).any():
            return True
    return False


@torch.no_grad()
def predict_scene(
    model: nn.Module,
    source: TileSource,
    features: Sequence[str],
    *,
    tiling: TileSettings = DEFAULT_TILING,
    device: str | torch.device = "cpu",
    precision: InferencePrecision = "32",
    outputs: ExtraOutputs = CLASSES_ONLY,
    progress: Callable[[int, int], None] | None = None,
) -> ScenePrediction:
    """Predict the three charts of a whole scene.

    Tiles are read from ``source`` one batch ahead (a background thread,
    :func:`~icecontext.inference.tile_batches.iter_tile_batches`), run through the
    model, and only their cores are written into ``uint8`` class maps; the valid mask
    is read per core. Peak memory is one batch of tiles and its activations plus 3 bytes
    per source pixel (plus the optional probabilities / confidence).

    Args:
        model: Multi-task network: ``model(x) -> {"SIC", "SOD", "FLOE"}`` outputs at
            the input size (optionally with ``to_classes``/``to_probabilities``). It is
            put in eval mode for the pass and restored afterwards.
        source: The scene.
        features: Input channel names, in the order the model expects.
        tiling: Tile size, overlap (see :func:`auto_overlap`), batch, alignment.
        device: Torch device.
        precision: ``"32"``, ``"bf16"`` (autocast bfloat16, CPU or CUDA), ``"16"``
            (autocast float16, CUDA only) or ``"auto"`` (bf16 on CUDA, else 32).
        outputs: Probabilities and confidence maps to return as well.
        progress: Optional ``callback(done_tiles, total_tiles)``.

    Returns:
        The prediction (see :class:`ScenePrediction`).

    Raises:
        ConfigError: If ``batch`` is not positive, or for impossible tile settings.
        DataError: If the source returns arrays of the wrong shape.
    """
    t0 = time.perf_counter()
    dev = torch.device(device)
    layout = tiling.plan(source.shape)
    maps = _SceneMaps.empty(source.shape, outputs)
    layout_of_inputs = torch.channels_last if uses_channels_last(model) else torch.contiguous_format
    was_training = model.training
    model.eval()
    try:
        tiles = iter_tile_batches(source, list(features), layout, tiling.batch)
        with contextlib.closing(tiles) as batches:
            for batch in batches:
                x = torch.from_numpy(batch.inputs).to(dev, non_blocking=True)
                x = x.contiguous(memory_format=layout_of_inputs)
                heads = _forward(model, x, dev, precision)
                del x  # freed before the outputs are post-processed
                maps.paste(batch, _tile_outputs(model, heads, outputs))
                del heads
                if progress is not None:
                    progress(batch.first + len(batch.tiles), len(layout.tiles))
    finally:
        model.train(was_training)
    return maps.prediction(source, layout, time.perf_counter() - t0)


@dataclass(frozen=True)
class _TileOutputs:
    """A batch's outputs on the CPU: ``{task: (B, ...)}`` arrays."""

    classes: dict[str, np.ndarray]
    probabilities: dict[str, np.ndarray]
    confidence: dict[str, np.ndarray]


def _forward(
    model: nn.Module, x: Tensor, device: torch.device, precision: InferencePrecision
) -> dict[str, Tensor]:
    """The model's float32 outputs for a batch of tiles."""
    with _autocast(device, precision):
        heads = model(x)
    return {k: v.float() for k, v in heads.items()}


def _tile_outputs(
    model: nn.Module, heads: Mapping[str, Tensor], outputs: ExtraOutputs
) -> _TileOutputs:
    """A batch's uint8 classes and the requested extras, on the CPU."""
    classes = {k: v.to(torch.uint8).cpu().numpy() for k, v in _to_classes(model, heads).items()}
    return _TileOutputs(classes, *_distributions(heads, outputs))


def _distributions(
    heads: Mapping[str, Tensor], outputs: ExtraOutputs
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(probabilities, confidence)`` of the classification heads, as requested."""
    probabilities: dict[str, np.ndarray] = {}
    confidence: dict[str, np.ndarray] = {}
    if not outputs.probabilities and outputs.confidence is None:
        return probabilities, confidence
    for k, v in heads.items():
        if v.shape[1] < 2:
            continue  # a regression head has no distribution
        p = torch.softmax(v, dim=1)
        if outputs.confidence is not None:
            confidence[k] = tile_confidence(p, outputs.confidence).cpu().numpy()
        if outputs.probabilities:
            if outputs.probability_dtype == "uint8":
                p = torch.round(p * PROBABILITY_SCALE).to(torch.uint8)
            probabilities[k] = p.cpu().numpy()
    return probabilities, confidence


@dataclass
class _SceneMaps:
    """The scene-sized outputs of a pass, filled core by core.

    Attributes:
        shape: ``(h, w)`` at the source's resolution.
        outputs: What is returned besides the classes.
        classes: ``{task: uint8 (h, w)}``, 255 until a core (with data) is pasted.
        probabilities: ``{task: (K, h, w)}`` made at the first tile of each head, or
            ``None`` when not asked for.
        confidence: ``{task: float32 (h, w)}`` likewise.
        valid_pixels: Pixels with input data pasted so far.
    """

    shape: tuple[int, int]
    outputs: ExtraOutputs
    classes: dict[str, np.ndarray]
    probabilities: dict[str, np.ndarray] | None
    confidence: dict[str, np.ndarray] | None
    valid_pixels: int = 0

    @classmethod
    def empty(cls, shape: tuple[int, int], outputs: ExtraOutputs) -> _SceneMaps:
        """Maps of a scene of ``shape`` before any tile."""
        h, w = shape
        return cls(
            shape=(h, w),
            outputs=outputs,
            classes={t: np.full((h, w), CHART_FILL, dtype=np.uint8) for t in CHARTS},
            probabilities={} if outputs.probabilities else None,
            confidence={} if outputs.confidence is not None else None,
        )

    def paste(self, batch: TileBatch, out: _TileOutputs) -> None:
        """Write the cores of a batch's tiles; pixels without data become masked."""
        for b, (crop, valid) in enumerate(zip(batch.crops, batch.valid, strict=True)):
            if crop is None or valid is None:
                continue  # core entirely in the alignment padding
            invalid = ~valid
            self.valid_pixels += int(invalid.size - np.count_nonzero(invalid))
            for task in CHARTS:
                core = out.classes[task][b][crop.local]
                core[invalid] = CHART_FILL
                self.classes[task][crop.region] = core
            if self.probabilities is not None:
                for task, p in out.probabilities.items():
                    self._paste_probabilities(task, p[b], crop.region, crop.local, invalid)
            if self.confidence is not None:
                for task, cmap in out.confidence.items():
                    if task not in self.confidence:
                        self.confidence[task] = np.full(self.shape, np.nan, dtype=np.float32)
                    core_c = cmap[b][crop.local]
                    core_c[invalid] = np.nan
                    self.confidence[task][crop.region] = core_c

    def _paste_probabilities(
        self,
        task: str,
        tile_p: np.ndarray,
        region: tuple[slice, slice],
        local: tuple[slice, slice],
        invalid: np.ndarray,
    ) -> None:
        assert self.probabilities is not None
        packed = self.outputs.probability_dtype == "uint8"
        fill = CHART_FILL if packed else np.nan
        if task not in self.probabilities:
            dtype = np.uint8 if packed else np.float32
            self.probabilities[task] = np.full((tile_p.shape[0], *self.shape), fill, dtype=dtype)
        core_p = tile_p[(slice(None), *local)]
        core_p[:, invalid] = fill
        self.probabilities[task][(slice(None), *region)] = core_p

    def prediction(self, source: TileSource, layout: TileLayout, seconds: float) -> ScenePrediction:
        """The finished prediction: class maps brought to the source's full 80 m shape."""
        k = int(source.downsample)
        fh, fw = (int(v) for v in source.full_shape)
        full = {t: upsample_nearest(self.classes[t], k, (fh, fw)) for t in CHARTS}
        return ScenePrediction(
            name=source.name,
            classes=full,
            shape=self.shape,
            full_shape=(fh, fw),
            downsample=k,
            probabilities=self.probabilities,
            confidence=self.confidence,
            source_classes=self.classes,
            seconds=seconds,
            tiles=len(layout.tiles),
            valid_pixels=self.valid_pixels,
            extra={"tile": layout.tile, "margin": layout.margin, "align": layout.align},
        )
