"""Random training patches: valid-pixel rule, class-balanced weights, augmentation.

Everything here is numpy; the torch adapter (:mod:`icecontext.data.loader.datamodule`) only
chooses the random generator of each patch. One patch is drawn as follows (details and
rationale in ``docs/pipeline.md``):

1. **Scene**, with probability proportional to its weight: ``uniform`` (1 per scene),
   ``labelled`` (its number of labelled pixels) or, with class balancing, its
   class-weighted pixel mass ``sum_t sum_c w_tc n_tc / T`` over the balanced charts ``t``.
   Class weights are ``w_c = f_c ** -power`` from the class frequencies ``f_c`` of the
   sampler's scenes (manifest histograms), scaled so that the average pixel weighs 1.
2. **Origin**, among the candidate windows whose labelled share (estimated from the
   32 x 32 block counts of the store) is at least ``min_valid_fraction`` and non-zero:
   uniformly, or, with class balancing, in proportion to the class-weighted mass of the
   window. The exact origin is jittered uniformly inside the 32-pixel block.
3. **Check**: the charts of the window are read and the exact labelled share tested;
   up to ``max_attempts`` origins are tried and the best one is kept if none passes.
4. **Read** the inputs and **augment** (flips, 90-degree rotations) inputs and charts
   with the same transform.

A patch larger than the scene along an axis is placed at a uniform offset in
``[L - P, 0]`` so that it contains the whole axis; the part outside the scene is
padded with 0 (inputs) and 255 (charts). Scenes without any acceptable window (e.g.
all masked) are skipped and listed in :attr:`PatchSampler.skipped`; if no scene is
left the sampler raises :class:`~icecontext.errors.DataError`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from icecontext.data.io.format import CHART_FILL, CHARTS, N_CLASSES, Chart
from icecontext.data.io.geometry import CoarseSlot, Transform, Window
from icecontext.data.io.layers import COUNT_BLOCK, COUNT_OFFSETS
from icecontext.data.loader.sources import SceneSource
from icecontext.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingSettings:
    """How patches are drawn.

    Attributes:
        patch_size: Square patch side in source pixels.
        min_valid_fraction: Minimum share of labelled pixels (any chart not 255).
        class_balance: Charts whose rare classes are oversampled (empty = none).
        balance_power: Class weight exponent: ``w_c = freq_c ** -power`` (1 = inverse
            frequency, 0.5 = inverse square root, 0 = no balancing).
        scene_weighting: Scene choice without class balancing.
        flip: Random horizontal and vertical flips.
        rotate: Random rotation by ``k`` x 90 degrees.
        max_attempts: Origins tried per patch to meet ``min_valid_fraction``.
    """

    patch_size: int
    min_valid_fraction: float = 0.1
    class_balance: tuple[Chart, ...] = ()
    balance_power: float = 0.5
    scene_weighting: Literal["uniform", "labelled"] = "labelled"
    flip: bool = True
    rotate: bool = True
    max_attempts: int = 10

    def __post_init__(self) -> None:
        if self.patch_size < 1:
            raise ConfigError("data.patch_size", f"must be positive, got {self.patch_size}")
        if not 0.0 <= self.min_valid_fraction <= 1.0:
            raise ConfigError(
                "data.min_valid_fraction", f"must be in [0, 1], got {self.min_valid_fraction}"
            )
        for chart in self.class_balance:
            if chart not in CHARTS:
                raise ConfigError("data.class_balance", f"unknown chart {chart!r}; use {CHARTS}")


@dataclass
class Patch:
    """One training patch (numpy).

    Attributes:
        x: float32 ``(C, P, P)`` inputs.
        charts: uint8 ``(3, P, P)`` SIC, SOD, FLOE (255 = masked).
        scene: Index of the scene in the sampler's source list.
        window: The window read, before augmentation.
        labelled_fraction: Share of labelled pixels.
        transform: The augmentation applied to ``x`` and ``charts``.
        coarse: The 2 km channels, when they stay at 2 km (``x`` then holds the others).
    """

    x: np.ndarray
    charts: np.ndarray
    scene: int
    window: Window
    labelled_fraction: float
    transform: Transform = field(default_factory=lambda: Transform())
    coarse: CoarseSlot | None = None


def class_weights(histograms: Sequence[np.ndarray], chart: Chart, power: float) -> np.ndarray:
    """Per-class weights ``f_c ** -power``, scaled so the average labelled pixel weighs 1.

    Args:
        histograms: 256-bin histograms of ``chart``, one per scene.
        chart: Which chart (sets the number of classes).
        power: Balancing exponent.

    Returns:
        float64 ``(n_classes,)``; 0 for classes absent from every scene.
    """
    n = N_CLASSES[chart]
    counts = np.zeros(n, dtype=np.float64)
    for h in histograms:
        counts += np.asarray(h, dtype=np.float64)[:n]
    total = counts.sum()
    if total == 0:
        return np.zeros(n)
    freq = counts / total
    weights = np.zeros(n)
    present = freq > 0
    weights[present] = freq[present] ** -power
    return weights / float((freq * weights).sum())


def augment(
    x: np.ndarray, charts: np.ndarray, rng: np.random.Generator, flip: bool, rotate: bool
) -> tuple[np.ndarray, np.ndarray, Transform]:
    """Apply the same random flips / 90-degree rotation to ``(..., P, P)`` inputs and charts.

    Returns:
        Contiguous transformed copies of both arrays and the transform used.
    """
    t = Transform.draw(rng, flip, rotate)
    return t.apply(x), t.apply(charts), t


def labelled_fraction(charts: np.ndarray) -> float:
    """Share of pixels with at least one chart not 255 (``charts`` is ``(3, h, w)``)."""
    return float(np.count_nonzero((charts != CHART_FILL).any(axis=0))) / charts[0].size


# ----------------------------------------------------------------------------- candidates


def _axis_candidates(length: int, patch: int, block: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Candidate block starts along an axis, the end block each covers, and the last origin.

    Returns:
        ``(starts, ends, max_origin)``: candidate ``a`` covers blocks ``[a, ends[a])``;
        ``max_origin`` is ``length - patch`` (negative when the patch is larger).
    """
    n_blocks = -(-length // block)
    max_origin = length - patch
    if max_origin < 0:
        return np.zeros(1, dtype=np.int64), np.full(1, n_blocks, dtype=np.int64), max_origin
    starts = np.arange(max_origin // block + 1, dtype=np.int64)
    ends = np.minimum(starts + -(-patch // block), n_blocks)
    return starts, ends, max_origin


def _window_sums(prefix: np.ndarray, rs: np.ndarray, re: np.ndarray, cs, ce) -> np.ndarray:
    """Sums over block rectangles from a 2-D prefix-sum table (broadcast over rows/cols)."""
    return (
        prefix[re[:, None], ce[None, :]]
        - prefix[rs[:, None], ce[None, :]]
        - prefix[re[:, None], cs[None, :]]
        + prefix[rs[:, None], cs[None, :]]
    )


def _prefix(counts: np.ndarray) -> np.ndarray:
    out = np.zeros((counts.shape[0] + 1, counts.shape[1] + 1), dtype=np.float64)
    out[1:, 1:] = counts.astype(np.float64).cumsum(0).cumsum(1)
    return out


@dataclass
class SceneCandidates:
    """Acceptable patch origins of one scene (block grid) and their cumulative weights."""

    starts_r: np.ndarray
    starts_c: np.ndarray
    flat: np.ndarray  # flat indices into (len(starts_r), len(starts_c)) of acceptable starts
    cdf: np.ndarray  # cumulative weights of the acceptable starts
    max_r: int
    max_c: int
    block: int

    @property
    def empty(self) -> bool:
        """Whether no window is acceptable."""
        return self.flat.size == 0

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        """Draw an origin ``(row, col)``."""
        pick = int(np.searchsorted(self.cdf, rng.random() * self.cdf[-1], side="right"))
        pick = min(pick, self.flat.size - 1)
        i, j = divmod(int(self.flat[pick]), self.starts_c.size)
        return (
            self._origin(int(self.starts_r[i]), self.max_r, rng),
            self._origin(int(self.starts_c[j]), self.max_c, rng),
        )

    def _origin(self, start: int, max_origin: int, rng: np.random.Generator) -> int:
        if max_origin < 0:  # patch larger than the scene: any placement that covers it
            return int(rng.integers(max_origin, 1))
        lo = start * self.block
        hi = min(lo + self.block - 1, max_origin)
        return int(rng.integers(lo, hi + 1))


def scene_candidates(
    counts: np.ndarray,
    shape: tuple[int, int],
    settings: SamplingSettings,
    weights: dict[str, np.ndarray] | None = None,
    block: int = COUNT_BLOCK,
) -> SceneCandidates:
    """Find the acceptable windows of a scene from its block counts.

    Args:
        counts: ``(25, nb_r, nb_c)`` block counts (see ``layers.COUNT_ROWS``).
        shape: Scene shape at the source's resolution.
        settings: Patch size, minimum labelled fraction, balanced charts.
        weights: Class weights per balanced chart (``None`` = uniform origins).
        block: Block side of ``counts``.

    Returns:
        The candidates (possibly empty).
    """
    p = settings.patch_size
    rs, re, max_r = _axis_candidates(shape[0], p, block)
    cs, ce, max_c = _axis_candidates(shape[1], p, block)
    labelled = _window_sums(_prefix(counts[0]), rs, re, cs, ce)
    ok = (labelled > 0) & (labelled >= settings.min_valid_fraction * p * p)
    if weights:
        mass = np.zeros(labelled.shape)
        for chart, w in weights.items():
            first = COUNT_OFFSETS[chart]
            for c, wc in enumerate(w):
                if wc > 0:
                    mass += wc * _window_sums(_prefix(counts[first + c]), rs, re, cs, ce)
        mass /= len(weights)
    else:
        mass = np.ones(labelled.shape)
    mass = np.where(ok, mass, 0.0)
    flat = np.flatnonzero(mass > 0)
    return SceneCandidates(
        starts_r=rs,
        starts_c=cs,
        flat=flat,
        cdf=np.cumsum(mass.ravel()[flat]),
        max_r=max_r,
        max_c=max_c,
        block=block,
    )


# ----------------------------------------------------------------------------- sampler


class PatchSampler:
    """Draws patches from a list of scene sources.

    All tables are built at construction (in the main process, before DataLoader
    workers start), so a draw depends only on the random generator it is given.

    Args:
        sources: Scene sources (Zarr- or NetCDF-backed).
        features: Input channel names, in order.
        settings: Sampling settings.

    Raises:
        DataError: If a feature is missing from a source, or no scene has an acceptable
            window (all masked, or the patch cannot reach ``min_valid_fraction``).
    """

    def __init__(
        self, sources: Sequence[SceneSource], features: Sequence[str], settings: SamplingSettings
    ) -> None:
        if not sources:
            raise DataError("no scenes to draw patches from (the split is empty)")
        self.sources = list(sources)
        self.features = list(features)
        self.settings = settings
        for src in self.sources:
            src.check_features(self.features)
        histograms = [src.histograms() for src in self.sources]
        self.class_weights: dict[str, np.ndarray] = {
            chart: class_weights([h[chart] for h in histograms], chart, settings.balance_power)
            for chart in settings.class_balance
        }
        self.candidates: list[SceneCandidates] = []
        scene_w = np.zeros(len(self.sources))
        for i, (src, hist) in enumerate(zip(self.sources, histograms, strict=True)):
            counts = src.block_counts()
            cand = scene_candidates(counts, src.shape, settings, self.class_weights or None)
            self.candidates.append(cand)
            if cand.empty:
                continue
            if self.class_weights:
                scene_w[i] = sum(
                    float((w * hist[c][: w.size]).sum()) for c, w in self.class_weights.items()
                ) / len(self.class_weights)
            elif settings.scene_weighting == "uniform":
                scene_w[i] = 1.0
            else:
                scene_w[i] = float(counts[0].sum(dtype=np.int64))
        self.skipped = [
            s.name for s, c in zip(self.sources, self.candidates, strict=True) if c.empty
        ]
        if self.skipped:
            log.warning(
                "%d scene(s) have no %d-pixel window with >= %.0f%% labelled pixels and are "
                "skipped: %s",
                len(self.skipped),
                settings.patch_size,
                100 * settings.min_valid_fraction,
                ", ".join(self.skipped),
            )
        if not (scene_w > 0).any():
            raise DataError(
                f"no scene has a {settings.patch_size} x {settings.patch_size} window with at "
                f"least {settings.min_valid_fraction:.0%} labelled pixels (scenes: "
                f"{', '.join(s.name for s in self.sources)}); all masked, or lower "
                "data.min_valid_fraction / data.patch_size"
            )
        self.scene_weights = scene_w / scene_w.sum()
        self._scene_cdf = np.cumsum(self.scene_weights)
        self._last = int(np.flatnonzero(scene_w > 0)[-1])

    def choose_window(self, rng: np.random.Generator) -> tuple[int, Window]:
        """Draw a scene and a window origin (steps 1-2, without the exact check)."""
        scene = int(np.searchsorted(self._scene_cdf, rng.random() * self._scene_cdf[-1], "right"))
        scene = min(scene, self._last)  # rounding at the top of the cdf
        row, col = self.candidates[scene].draw(rng)
        p = self.settings.patch_size
        return scene, (row, col, p, p)

    def draw(
        self,
        rng: np.random.Generator,
        out: np.ndarray | None = None,
        coarse_out: CoarseSlot | None = None,
    ) -> Patch:
        """Draw one patch (steps 1-4).

        Args:
            rng: The patch's random generator.
            out: Write the inputs into this float32 ``(C, P, P)`` array (a batch slot);
                the returned ``Patch.x`` is then ``out``.
            coarse_out: Keep the 2 km channels at 2 km, in this slot (see
                :meth:`~icecontext.data.loader.sources.SceneSource.read_window`).
        """
        s = self.settings
        p = s.patch_size
        scene, window = self.choose_window(rng)
        transform = Transform.draw(rng, s.flip, s.rotate)
        src = self.sources[scene]
        # first attempt: inputs and charts in one batch of reads, augmentation fused in;
        # the block counts make it pass in the vast majority of draws (the labelled
        # share does not change under the transform)
        x, charts = src.read_window(
            window, self.features, transform=transform, out=out, coarse_out=coarse_out
        )
        assert x is not None and charts is not None
        frac = labelled_fraction(charts)
        if not (frac > 0 and frac >= s.min_valid_fraction) and s.max_attempts > 1:
            best = (frac, window)
            for _ in range(s.max_attempts - 1):
                row, col = self.candidates[scene].draw(rng)
                window = (row, col, p, p)
                frac = labelled_fraction(src.read_chart_stack(window))
                if frac > best[0]:
                    best = (frac, window)
                if frac > 0 and frac >= s.min_valid_fraction:
                    break
            frac, window = best
            x, charts = src.read_window(
                window, self.features, transform=transform, out=out, coarse_out=coarse_out
            )
            assert x is not None and charts is not None
        return Patch(x, charts, scene, window, frac, transform, coarse_out)
