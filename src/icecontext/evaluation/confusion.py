"""Confusion matrices of chart predictions: the sufficient statistics of every score.

A chart's confusion matrix ``C`` (``C[t, p]`` = number of scored pixels whose
reference class is ``t`` and predicted class is ``p``) holds everything the AutoICE
metric needs: the weighted F1 of SOD/FLOE and the R² of SIC on class indices are both
exact functions of it (see :mod:`icecontext.evaluation.metrics`). Matrices are
``int64`` and add up, so scenes, chunks and processes can be scored separately and
pooled exactly.

Scored pixels are those whose *reference* value is not 255 (per chart); predictions
at masked reference pixels are ignored, whatever their value. A reference value that
is neither a class index nor 255, or a prediction outside the chart's classes at a
scored pixel, raises :class:`~icecontext.errors.DataError`: the challenge metric is
defined on class indices only (use :func:`~icecontext.evaluation.sic_to_classes` for
regression outputs).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from icecontext.data.io.format import CHART_FILL, N_CLASSES
from icecontext.errors import DataError

Role = Literal["reference", "prediction"]

# Pixels processed per bincount call: bounds the temporary int64 index array to
# 32 MiB however large the scene is.
_CHUNK = 1 << 22


def as_class_array(values: Any, chart: str, role: Role) -> np.ndarray:
    """Return ``values`` as a flat integer numpy array (torch tensors are moved to CPU).

    Args:
        values: Array-like of class indices (numpy array, torch tensor, list).
        chart: Chart name, used in error messages.
        role: ``"reference"`` or ``"prediction"``, used in error messages.

    Returns:
        A 1-D view or copy with an integer dtype.

    Raises:
        DataError: If the values are not integers.
    """
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # torch.Tensor, without importing it
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.dtype.kind not in "ui":
        hint = (
            " (turn SIC regression outputs into classes with icecontext.evaluation.sic_to_classes)"
            if chart == "SIC" and arr.dtype.kind == "f"
            else ""
        )
        raise DataError(
            f"{role} '{chart}' has dtype {arr.dtype}; expected integer class indices{hint}"
        )
    return arr.reshape(-1)


def confusion_matrix(reference: Any, prediction: Any, chart: str) -> np.ndarray:
    """Count (reference class, predicted class) pairs over the scored pixels of one chart.

    Args:
        reference: Reference classes of any shape; 255 masks a pixel.
        prediction: Predicted classes, same shape.
        chart: ``"SIC"``, ``"SOD"`` or ``"FLOE"`` (sets the number of classes).

    Returns:
        ``int64`` array of shape ``(n, n)`` with ``n`` the chart's number of classes;
        rows are reference classes, columns predicted classes.

    Raises:
        DataError: On a shape mismatch, non-integer values, a reference value outside
            ``0..n-1`` and 255, or a prediction outside ``0..n-1`` at a scored pixel.
    """
    if chart not in N_CLASSES:
        raise DataError(f"unknown chart '{chart}'; expected one of {list(N_CLASSES)}")
    n = N_CLASSES[chart]
    ref_shape = np.shape(reference)
    pred_shape = np.shape(prediction)
    if ref_shape != pred_shape:
        raise DataError(
            f"chart '{chart}': reference shape {ref_shape} differs from prediction shape "
            f"{pred_shape}"
        )
    ref = as_class_array(reference, chart, "reference")
    pred = as_class_array(prediction, chart, "prediction")
    counts = np.zeros(n * n, dtype=np.int64)
    for start in range(0, ref.size, _CHUNK):
        r = ref[start : start + _CHUNK]
        p = pred[start : start + _CHUNK]
        valid = r != CHART_FILL
        if not valid.any():
            continue
        rv = r[valid].astype(np.intp)
        pv = p[valid].astype(np.intp)
        _check_range(rv, chart, "reference", n, allow=f" or {CHART_FILL} (masked)")
        _check_range(pv, chart, "prediction", n, allow=" at pixels the reference scores")
        counts += np.bincount(rv * n + pv, minlength=n * n)
    return counts.reshape(n, n)


def _check_range(values: np.ndarray, chart: str, role: Role, n: int, allow: str) -> None:
    if values.size and (values.min() < 0 or values.max() >= n):
        bad = np.unique(values[(values < 0) | (values >= n)])
        shown = bad[:10].tolist()
        raise DataError(
            f"{role} '{chart}' holds values {shown}{' ...' if bad.size > 10 else ''}; "
            f"expected class indices 0..{n - 1}{allow}"
        )


def empty_confusion(chart: str) -> np.ndarray:
    """Return an all-zero confusion matrix of the chart's size."""
    n = N_CLASSES[chart]
    return np.zeros((n, n), dtype=np.int64)
