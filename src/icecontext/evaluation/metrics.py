"""The AutoICE challenge metric, computed exactly from confusion matrices.

The challenge (starter kit ``functions.py``, format reference §3.2) scores

* SIC with ``sklearn.metrics.r2_score`` on class indices 0..10,
* SOD and FLOE with ``sklearn.metrics.f1_score(average="weighted")`` (labels = the
  union of reference and predicted labels, weights = reference support),

each times 100 and rounded to 3 decimals (``np.round``), and the combined score
``(2 SIC + 2 SOD + 1 FLOE) / 5`` of the *rounded* scores, rounded again to 3
decimals. Pixels are scored per chart wherever the reference is not 255, and the
pixels of everything passed are pooled (one score, not a mean over scenes).

Both formulas are exact functions of the chart's confusion matrix, so this module
computes them from :func:`~icecontext.evaluation.confusion.confusion_matrix`; the
streaming :class:`~icecontext.evaluation.scorer.ChartScorer` sums matrices and gives
the identical result (the tests check both against scikit-learn to 1e-9).

Degenerate inputs (documented choice, tested):

* no scored pixel in a chart: that chart's score is NaN (and so is ``combined``);
* R² with fewer than two scored pixels: NaN (as scikit-learn);
* constant reference (R² has a zero denominator): 100 when every prediction is
  right, else 0 -- scikit-learn's ``force_finite=True`` default, which is also what
  every version before that option returned;
* SOD/FLOE classes with no reference pixel weigh zero in the weighted F1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, Literal

import numpy as np

from icecontext.data.io.format import CHART_FILL, CHARTS, CLASS_NAMES, N_CLASSES
from icecontext.errors import ConfigError, DataError
from icecontext.evaluation.confusion import confusion_matrix

SCORE_WEIGHTS: Final = {"SIC": 2, "SOD": 2, "FLOE": 1}
"""Weights of the combined score (starter kit ``SCORE_WEIGHTS``)."""

CHART_METRIC: Final = {"SIC": "r2", "SOD": "weighted_f1", "FLOE": "weighted_f1"}
"""Which formula scores each chart."""

DECIMALS: Final = 3
"""The challenge rounds every score (x100) to this many decimals."""

SIC_MAX_CLASS: Final = N_CLASSES["SIC"] - 1

SicRule = Literal["round", "half_even"]
SicUnit = Literal["class", "percent", "fraction"]


# ----------------------------------------------------------------------------- formulas


def r2_from_confusion(cm: np.ndarray) -> float:
    """Return R² of predicted vs reference class indices from a confusion matrix.

    Uses exact integer sums (n, sum y, sum y², sum (y - y_hat)²), so the result does
    not depend on pixel order or on how the pixels were chunked.

    Args:
        cm: ``(n, n)`` counts, rows = reference class index, columns = predicted.

    Returns:
        ``1 - SS_res / SS_tot`` as a fraction (not x100); NaN with fewer than two
        pixels; 1.0 or 0.0 when the reference is constant (see module docstring).
    """
    cm = np.asarray(cm, dtype=np.int64)
    k = np.arange(cm.shape[0], dtype=np.int64)
    rows = cm.sum(axis=1)
    n = int(rows.sum())
    if n < 2:
        return math.nan
    sum_y = int((rows * k).sum())
    sum_y2 = int((rows * k * k).sum())
    diff2 = (k[:, None] - k[None, :]) ** 2
    ss_res = int((cm * diff2).sum())
    # n * SS_tot = n * sum y^2 - (sum y)^2, exact in Python integers (no overflow).
    n_ss_tot = n * sum_y2 - sum_y * sum_y
    if n_ss_tot == 0:
        return 1.0 if ss_res == 0 else 0.0
    return 1.0 - (n * ss_res) / n_ss_tot


def weighted_f1_from_confusion(cm: np.ndarray) -> float:
    """Return the support-weighted F1 score from a confusion matrix.

    Equal to ``f1_score(y_true, y_pred, average="weighted")``: classes that occur only
    among the predictions have zero weight; classes absent from both do not count.

    Args:
        cm: ``(n, n)`` counts, rows = reference class, columns = predicted class.

    Returns:
        The weighted F1 as a fraction (not x100), NaN when ``cm`` is all zero.
    """
    cm = np.asarray(cm, dtype=np.int64)
    support = cm.sum(axis=1)
    total = int(support.sum())
    if total == 0:
        return math.nan
    predicted = cm.sum(axis=0)
    tp = np.diag(cm)
    denom = support + predicted
    f1 = np.divide(2.0 * tp, denom, out=np.zeros(len(tp)), where=denom > 0)
    return float((support * f1).sum() / total)


def chart_score(chart: str, cm: np.ndarray) -> float:
    """Return the challenge score of one chart as a fraction (R² or weighted F1)."""
    if CHART_METRIC[chart] == "r2":
        return r2_from_confusion(cm)
    return weighted_f1_from_confusion(cm)


def challenge_round(value: float) -> float:
    """Round a x100 score to 3 decimals as the challenge did (``np.round``, half to even)."""
    return float(np.round(value, DECIMALS))


def combine(scores: Mapping[str, float]) -> float:
    """Return the weighted mean of chart scores with the challenge weights (2, 2, 1).

    As in the starter kit, the weights of the charts present are normalised, so with
    all three charts the result is ``(2 SIC + 2 SOD + FLOE) / 5``. NaN if any score is
    NaN.
    """
    total = sum(SCORE_WEIGHTS[c] for c in scores)
    return sum(SCORE_WEIGHTS[c] * float(v) for c, v in scores.items()) / total


def scores_from_confusions(confusions: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Turn per-chart confusion matrices into the challenge's score dictionary.

    Args:
        confusions: ``{chart: (n, n) int64}`` for some or all of SIC/SOD/FLOE.

    Returns:
        ``{"SIC": ..., "SOD": ..., "FLOE": ..., "combined": ...}`` rounded as the
        challenge (x100, 3 decimals; ``combined`` from the rounded scores), plus
        ``"unrounded"`` (the same keys without any rounding) and ``"n_pixels"`` (scored
        pixels per chart).
    """
    charts = [c for c in CHARTS if c in confusions]
    raw = {c: 100.0 * chart_score(c, confusions[c]) for c in charts}
    rounded = {c: challenge_round(v) for c, v in raw.items()}
    out: dict[str, Any] = dict(rounded)
    out["combined"] = challenge_round(combine(rounded))
    out["unrounded"] = {**raw, "combined": combine(raw)}
    out["n_pixels"] = {c: int(np.asarray(confusions[c]).sum()) for c in charts}
    return out


def per_class_table(cm: np.ndarray, chart: str) -> Any:
    """Return per-class support, precision, recall and F1 of one chart.

    Undefined ratios are NaN (precision of a never-predicted class, recall of a class
    absent from the reference, F1 of a class absent from both), like scikit-learn's
    ``precision_recall_fscore_support(..., zero_division=np.nan)``.

    Args:
        cm: ``(n, n)`` confusion matrix.
        chart: Chart name (for the class names).

    Returns:
        A :class:`pandas.DataFrame` indexed by class index with columns ``name``,
        ``support``, ``predicted``, ``correct``, ``precision``, ``recall``, ``f1``.
    """
    import pandas as pd

    cm = np.asarray(cm, dtype=np.int64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), np.nan)
        recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
        denom = support + predicted
        f1 = np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), np.nan)
    return pd.DataFrame(
        {
            "name": list(CLASS_NAMES[chart]),
            "support": support,
            "predicted": predicted,
            "correct": tp,
            "precision": precision,
            "recall": recall,
            "f1": f1,
        },
        index=pd.RangeIndex(len(tp), name="class"),
    )


# ----------------------------------------------------------------------------- public API


def score_charts(reference: Mapping[str, Any], prediction: Mapping[str, Any]) -> dict[str, Any]:
    """Score predicted charts against reference charts exactly as the AutoICE challenge.

    Args:
        reference: ``{"SIC", "SOD", "FLOE"}`` (or a subset) -> integer arrays of any
            shape; 255 masks a pixel of that chart. Numpy arrays, torch tensors or
            lists.
        prediction: The same keys -> integer class arrays of the same shapes. Values at
            masked reference pixels are ignored.

    Returns:
        ``{"SIC", "SOD", "FLOE", "combined"}`` -> the challenge scores (x100, rounded
        to 3 decimals), ``"unrounded"`` -> the same without rounding, ``"n_pixels"`` ->
        scored pixels per chart. See :func:`scores_from_confusions`.

    Raises:
        DataError: If the keys differ or are not charts, shapes differ, values are not
            integer classes (see :func:`~icecontext.evaluation.confusion.confusion_matrix`).
    """
    charts = _chart_keys(reference, prediction)
    return scores_from_confusions(
        {c: confusion_matrix(reference[c], prediction[c], c) for c in charts}
    )


def _chart_keys(reference: Mapping[str, Any], prediction: Mapping[str, Any]) -> list[str]:
    ref_keys, pred_keys = set(reference), set(prediction)
    if ref_keys != pred_keys:
        raise DataError(
            f"reference charts {sorted(ref_keys)} differ from prediction charts {sorted(pred_keys)}"
        )
    unknown = ref_keys - set(CHARTS)
    if unknown or not ref_keys:
        raise DataError(
            f"charts must be a non-empty subset of {list(CHARTS)}, got {sorted(ref_keys)}"
        )
    return [c for c in CHARTS if c in ref_keys]


def sic_to_classes(values: Any, rule: SicRule = "round", unit: SicUnit = "class") -> Any:
    """Turn SIC regression outputs into class indices 0..10 (the one documented rule).

    ``rule="round"`` rounds half away from zero (2.5 -> 3, 7.5 -> 8), the everyday
    rounding of a concentration; ``rule="half_even"`` rounds half to even like
    ``numpy.round``/``torch.round`` (2.5 -> 2), for reproducing code that used those.
    The result is then clipped to 0..10. NaN becomes 255 (masked).

    Args:
        values: Numpy array or torch tensor of SIC values.
        unit: What the values measure: ``"class"`` (class index = tenths, 0..10),
            ``"percent"`` (0..100) or ``"fraction"`` (0..1).
        rule: ``"round"`` or ``"half_even"``.

    Returns:
        ``uint8`` numpy array for numpy input; ``int64`` tensor on the same device for
        torch input (what ``MultiTaskModel.to_classes`` returns).

    Raises:
        ConfigError: On an unknown ``rule`` or ``unit``.
    """
    scale = {"class": 1.0, "percent": 0.1, "fraction": 10.0}
    if unit not in scale:
        raise ConfigError("unit", f"'{unit}' is not one of {list(scale)}")
    if rule not in ("round", "half_even"):
        raise ConfigError("rule", f"'{rule}' is not one of ['round', 'half_even']")
    if hasattr(values, "detach") and hasattr(values, "clamp"):
        return _sic_to_classes_torch(values, rule, scale[unit])
    x = np.asarray(values, dtype=np.float64) * scale[unit]
    if rule == "round":
        # floor(|x|) + (frac >= 0.5) is exact; floor(x + 0.5) is not (0.49999999999999994).
        a = np.abs(x)
        fl = np.floor(a)
        r = np.copysign(fl + (a - fl >= 0.5), x)
    else:
        r = np.rint(x)
    out = np.clip(np.nan_to_num(r, nan=0.0), 0, SIC_MAX_CLASS).astype(np.uint8)
    out[np.isnan(x)] = CHART_FILL
    return out


def _sic_to_classes_torch(values: Any, rule: SicRule, scale: float) -> Any:
    import torch

    x = values.detach().to(torch.float64) * scale
    if rule == "round":
        a = x.abs()
        fl = a.floor()
        r = torch.copysign(fl + (a - fl >= 0.5).to(x.dtype), x)
    else:
        r = torch.round(x)
    out = torch.nan_to_num(r, nan=0.0).clamp(0, SIC_MAX_CLASS).to(torch.int64)
    return torch.where(torch.isnan(x), torch.full_like(out, CHART_FILL), out)
