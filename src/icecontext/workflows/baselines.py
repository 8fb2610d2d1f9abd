"""Baselines the trained network must beat: majority class, and per-pixel AMSR2.

* :class:`MajorityBaseline` predicts, for each chart, the most frequent class of the
  training pixels, everywhere;
* :class:`PixelBaseline` is a per-pixel multinomial logistic regression
  (scikit-learn) per chart on AMSR2 brightness temperatures alone, fitted on pixels
  drawn from the same training scenes the network learned from. It sees what a
  passive-microwave product sees: no SAR, and no spatial context.

Both predict at the data's resolution, and :func:`score_baseline` scores them exactly
like the network (upsampled to 80 m, pixels without SAR data masked).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from icecontext.data.io.format import CHART_FILL, CHARTS, N_CLASSES
from icecontext.data.io.variables import FEATURE_GROUPS
from icecontext.errors import DataError
from icecontext.evaluation import ChartScorer, scene_groups
from icecontext.inference.predictor import upsample_nearest

AMSR2_FEATURES: tuple[str, ...] = FEATURE_GROUPS["amsr2"]


def _full_window(source: Any) -> tuple[int, int, int, int]:
    h, w = source.shape
    return (0, 0, h, w)


@dataclass
class MajorityBaseline:
    """Constant prediction of each chart's most frequent training class.

    Attributes:
        classes: ``{"SIC": k, "SOD": k, "FLOE": k}``.
    """

    classes: dict[str, int]

    @classmethod
    def fit(cls, histograms: Mapping[str, np.ndarray]) -> MajorityBaseline:
        """Take the majority class of each chart from 256-bin histograms (255 ignored).

        Raises:
            DataError: If a chart has no labelled pixel.
        """
        classes = {}
        for task in CHARTS:
            counts = np.asarray(histograms[task])[: N_CLASSES[task]]
            if counts.sum() == 0:
                raise DataError(f"no labelled {task} pixel in the training scenes")
            classes[task] = int(np.argmax(counts))
        return cls(classes)

    def predict(self, source: Any) -> dict[str, np.ndarray]:
        """Class maps at the source's resolution (255 where there is no SAR data)."""
        valid = np.asarray(source.valid_mask(_full_window(source)), dtype=bool)
        return {t: np.where(valid, self.classes[t], CHART_FILL).astype(np.uint8) for t in CHARTS}


@dataclass
class PixelBaseline:
    """Per-pixel logistic regression per chart on AMSR2 channels only.

    Attributes:
        features: Input channels (the 14 AMSR2 brightness temperatures by default).
        models: Fitted scikit-learn pipelines (standardise + logistic regression) per chart.
        n_train: Training pixels per chart.
    """

    features: tuple[str, ...] = AMSR2_FEATURES
    models: dict[str, Any] = field(default_factory=dict)
    n_train: dict[str, int] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        sources: Sequence[Any],
        features: Sequence[str] = AMSR2_FEATURES,
        pixels_per_scene: int = 4000,
        seed: int = 0,
    ) -> PixelBaseline:
        """Fit on pixels drawn uniformly from the labelled pixels of each training scene.

        Args:
            sources: Training scenes (``SceneSource``, at the data's resolution).
            features: Channels to use (AMSR2 only, for the baseline's meaning).
            pixels_per_scene: Pixels drawn per scene and chart (fewer if not available).
            seed: Seed of the draw.

        Raises:
            DataError: If no labelled pixel is found for a chart.
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        rng = np.random.default_rng(seed)
        xs: dict[str, list[np.ndarray]] = {t: [] for t in CHARTS}
        ys: dict[str, list[np.ndarray]] = {t: [] for t in CHARTS}
        for src in sources:
            window = _full_window(src)
            x = src.read_inputs(window, list(features)).reshape(len(features), -1).T
            charts = src.read_charts(window)
            valid = np.asarray(src.valid_mask(window), dtype=bool).ravel()
            for task in CHARTS:
                y = charts[task].ravel()
                idx = np.flatnonzero(valid & (y != CHART_FILL))
                if idx.size == 0:
                    continue
                take = rng.choice(idx, size=min(pixels_per_scene, idx.size), replace=False)
                xs[task].append(x[take])
                ys[task].append(y[take])
        out = cls(tuple(features))
        for task in CHARTS:
            if not ys[task]:
                raise DataError(f"no labelled {task} pixel in the training scenes")
            x = np.concatenate(xs[task]).astype(np.float64)
            y = np.concatenate(ys[task]).astype(np.int64)
            if np.unique(y).size == 1:
                model: Any = _Constant(int(y[0]))
            else:
                model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
                model.fit(x, y)
            out.models[task] = model
            out.n_train[task] = int(y.size)
        return out

    def predict(self, source: Any) -> dict[str, np.ndarray]:
        """Class maps at the source's resolution (255 where there is no SAR data)."""
        window = _full_window(source)
        h, w = source.shape
        x = source.read_inputs(window, list(self.features)).reshape(len(self.features), -1).T
        valid = np.asarray(source.valid_mask(window), dtype=bool).ravel()
        out = {}
        for task in CHARTS:
            pred = np.full(h * w, CHART_FILL, dtype=np.uint8)
            if valid.any():
                pred[valid] = self.models[task].predict(x[valid].astype(np.float64))
            out[task] = pred.reshape(h, w)
        return out


@dataclass
class _Constant:
    value: int

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.value)


def score_baseline(
    predict: Callable[[Any], dict[str, np.ndarray]],
    scenes: Sequence[Any],
    scorer: ChartScorer | None = None,
) -> ChartScorer:
    """Score a per-source predictor like the network: upsample to 80 m, then score.

    Args:
        predict: ``predict(source) -> {chart: uint8 (h, w)}`` at the source's resolution.
        scenes: :class:`~icecontext.workflows.evaluate_checkpoint.EvalScene` items.
        scorer: Scorer to add to (default: a new one).

    Returns:
        The scorer.
    """
    scorer = scorer or ChartScorer()
    for scene in scenes:
        src = scene.source
        reference = scene.reference()
        if all((reference[c] == CHART_FILL).all() for c in CHARTS):
            continue
        pred = predict(src)
        if scene.full_resolution:
            pred = {t: upsample_nearest(v, src.downsample, src.full_shape) for t, v in pred.items()}
        scorer.update(reference, pred, groups=scene_groups(src.name))
    return scorer
