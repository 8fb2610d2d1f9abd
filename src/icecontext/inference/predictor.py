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
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from icecontext.data.io.format import CHART_FILL, CHARTS
from icecontext.errors import ConfigError, DataError
from icecontext.inference.exports.netcdf import PROBABILITY_SCALE
from icecontext.inference.tiling import Tile, TileLayout, TileSettings, plan_tiles

InferencePrecision = Literal["auto", "32", "bf16", "16"]
"""``--precision``: ``auto`` is bf16 on a CUDA device, else 32 (:func:`resolve_precision`)."""
ProbabilityDtype = Literal["float32", "uint8"]
ConfidenceKind = Literal["max", "entropy"]

Window = tuple[int, int, int, int]


class SceneSourceLike(Protocol):
    """What the predictor needs from a scene source (see ``data/loader/sources.py``)."""

    name: str

    @property
    def shape(self) -> tuple[int, int]:
        """``(h, w)`` at the source's resolution."""
        ...

    @property
    def full_shape(self) -> tuple[int, int]:
        """``(H, W)`` at 80 m."""
        ...

    @property
    def downsample(self) -> int:
        """Integer downsampling factor ``K`` of the source."""
        ...

    def read_inputs(self, window: Window, features: Sequence[str]) -> np.ndarray:
        """``float32 (C, h, w)`` inputs of a window."""
        ...

    def valid_mask(self, window: Window) -> np.ndarray:
        """``bool (h, w)``: pixels with input data."""
        ...


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


def _read_padded(
    source: SceneSourceLike, window: Window, features: Sequence[str], n_channels: int
) -> np.ndarray:
    """Read a window that may extend past the scene; the outside is 0 (no data)."""
    r, c, h, w = window
    sh, sw = source.shape
    out = np.zeros((n_channels, h, w), dtype=np.float32)
    rr, cc = min(h, sh - r), min(w, sw - c)
    if rr > 0 and cc > 0:
        data = source.read_inputs((r, c, rr, cc), features)
        if data.shape != (n_channels, rr, cc):
            raise DataError(
                f"scene {source.name}: read_inputs returned shape {data.shape} for window "
                f"{(r, c, rr, cc)}, expected {(n_channels, rr, cc)}"
            )
        out[:, :rr, :cc] = data
    return out


def resolve_precision(
    precision: InferencePrecision, device: str | torch.device
) -> Literal["32", "bf16", "16"]:
    """``auto`` -> ``bf16`` on a CUDA device, else ``32``; the other values unchanged."""
    if precision != "auto":
        return precision
    return "bf16" if torch.device(device).type == "cuda" else "32"


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
    if hasattr(model, "to_classes"):
        return model.to_classes(outputs)  # type: ignore[operator,no-any-return]
    return default_to_classes(outputs)


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


def resolve_overlap(overlap: int | str, receptive_field: int | None, tile: int) -> int:
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


def receptive_field_of(model: nn.Module) -> int | None:
    """The model's theoretical receptive field in pixels (``None``: global pooling or unknown)."""
    return model.receptive_field() if hasattr(model, "receptive_field") else None


def auto_overlap(model: nn.Module, tile: int) -> int:
    """Context margin for a model: :func:`overlap_for_rf` of its theoretical receptive field."""
    return overlap_for_rf(receptive_field_of(model), tile)


def model_overlap(model: nn.Module, overlap: int | str, tile: int) -> int:
    """:func:`resolve_overlap` with the model's receptive field."""
    return resolve_overlap(overlap, receptive_field_of(model), tile)


def _batches(tiles: Sequence[Tile], size: int) -> Iterator[list[Tile]]:
    for i in range(0, len(tiles), size):
        yield list(tiles[i : i + size])


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


def has_input_data(source: SceneSourceLike, rows: int = 512) -> bool:
    """Whether any pixel of the scene has input data, read in strips of ``rows`` rows."""
    h, w = source.shape
    for r in range(0, h, rows):
        if np.asarray(source.valid_mask((r, 0, min(rows, h - r), w))).any():
            return True
    return False


@torch.no_grad()
def predict_scene(
    model: nn.Module,
    source: SceneSourceLike,
    features: Sequence[str],
    *,
    tiling: TileSettings = DEFAULT_TILING,
    device: str | torch.device = "cpu",
    precision: InferencePrecision = "32",
    outputs: ExtraOutputs = CLASSES_ONLY,
    progress: Callable[[int, int], None] | None = None,
) -> ScenePrediction:
    """Predict the three charts of a whole scene.

    Tiles are read from ``source`` one batch ahead (a background thread), run through
    the model, and only their cores are written into ``uint8`` class maps; the valid
    mask is read per core. Peak memory is one batch of tiles and its activations plus
    3 bytes per source pixel (plus the optional probabilities / confidence).

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
    batch = tiling.batch
    probability_dtype, confidence = outputs.probability_dtype, outputs.confidence
    dev = torch.device(device)
    layout: TileLayout = plan_tiles(
        source.shape, tiling.tile, tiling.overlap, tiling.align, balance=tiling.balance
    )
    h, w = source.shape
    features = list(features)
    n_ch = len(features)
    classes = {t: np.full((h, w), CHART_FILL, dtype=np.uint8) for t in CHARTS}
    probs: dict[str, np.ndarray] | None = {} if outputs.probabilities else None
    conf: dict[str, np.ndarray] | None = {} if confidence is not None else None
    p_dtype = np.uint8 if probability_dtype == "uint8" else np.float32
    p_fill = CHART_FILL if probability_dtype == "uint8" else np.nan
    n_valid = 0

    was_training = model.training
    model.eval()
    done = 0
    # One background thread reads the next batch of tiles while the model runs.
    with ThreadPoolExecutor(max_workers=1) as pool:

        def load(tiles: list[Tile]) -> tuple[np.ndarray, list[np.ndarray | None]]:
            # All source reads happen here, in tile order (the valid mask of each core
            # too), so a source that caches row strips sees one sequential reader.
            x = np.stack([_read_padded(source, t.window, features, n_ch) for t in tiles])
            invalid: list[np.ndarray | None] = []
            for t in tiles:
                r0, c0, ch, cw = t.core
                r1, c1 = min(r0 + ch, h), min(c0 + cw, w)
                if r1 <= r0 or c1 <= c0:
                    invalid.append(None)  # core entirely in the alignment padding
                else:
                    core = (r0, c0, r1 - r0, c1 - c0)
                    invalid.append(~np.asarray(source.valid_mask(core), dtype=bool))
            return x, invalid

        batches = list(_batches(layout.tiles, batch))
        pending: Future[tuple[np.ndarray, list[np.ndarray | None]]] | None = (
            pool.submit(load, batches[0]) if batches else None
        )
        try:
            for i, tiles in enumerate(batches):
                assert pending is not None
                x_np, invalid_cores = pending.result()
                pending = pool.submit(load, batches[i + 1]) if i + 1 < len(batches) else None
                x = torch.from_numpy(x_np).to(dev, non_blocking=True)
                with _autocast(dev, precision):
                    heads = model(x)
                del x
                heads = {k: v.float() for k, v in heads.items()}
                cls = {
                    k: v.to(torch.uint8).cpu().numpy() for k, v in _to_classes(model, heads).items()
                }
                p_np: dict[str, np.ndarray] = {}
                c_np: dict[str, np.ndarray] = {}
                if probs is not None or conf is not None:
                    for k, v in heads.items():
                        if v.shape[1] < 2:
                            continue  # a regression head has no distribution
                        p_t = torch.softmax(v, dim=1)
                        if conf is not None:
                            c_np[k] = tile_confidence(p_t, confidence).cpu().numpy()  # type: ignore[arg-type]
                        if probs is not None:
                            if p_dtype is np.uint8:
                                p_t = torch.round(p_t * PROBABILITY_SCALE).to(torch.uint8)
                            p_np[k] = p_t.cpu().numpy()
                del heads
                for b, t in enumerate(tiles):
                    invalid = invalid_cores[b]
                    if invalid is None:
                        continue
                    r0, c0, ch, cw = t.core
                    r1, c1 = min(r0 + ch, h), min(c0 + cw, w)
                    lr, lc = r0 - t.rows.start, c0 - t.cols.start
                    sl = (slice(lr, lr + r1 - r0), slice(lc, lc + c1 - c0))
                    n_valid += int(invalid.size - np.count_nonzero(invalid))
                    for task in CHARTS:
                        core = cls[task][b][sl]
                        core[invalid] = CHART_FILL
                        classes[task][r0:r1, c0:c1] = core
                    for task, p in p_np.items():
                        if task not in probs:  # type: ignore[operator]
                            probs[task] = np.full((p.shape[1], h, w), p_fill, dtype=p_dtype)  # type: ignore[index]
                        core_p = p[b][(slice(None), *sl)]
                        core_p[:, invalid] = p_fill
                        probs[task][:, r0:r1, c0:c1] = core_p  # type: ignore[index]
                    for task, cmap in c_np.items():
                        if task not in conf:  # type: ignore[operator]
                            conf[task] = np.full((h, w), np.nan, dtype=np.float32)  # type: ignore[index]
                        core_c = cmap[b][sl]
                        core_c[invalid] = np.nan
                        conf[task][r0:r1, c0:c1] = core_c  # type: ignore[index]
                done += len(tiles)
                if progress is not None:
                    progress(done, len(layout.tiles))
        finally:
            if pending is not None:
                pending.cancel()
            model.train(was_training)

    k = int(source.downsample)
    full = tuple(int(v) for v in source.full_shape)
    full_classes = {t: upsample_nearest(classes[t], k, full) for t in CHARTS}  # type: ignore[arg-type]
    return ScenePrediction(
        name=source.name,
        classes=full_classes,
        shape=(h, w),
        full_shape=full,  # type: ignore[arg-type]
        downsample=k,
        probabilities=probs,
        confidence=conf,
        source_classes=classes,
        seconds=time.perf_counter() - t0,
        tiles=len(layout.tiles),
        valid_pixels=n_valid,
        extra={"tile": layout.tile, "margin": layout.margin, "align": layout.align},
    )
