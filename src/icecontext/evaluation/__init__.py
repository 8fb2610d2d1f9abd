"""The AutoICE challenge metric and its breakdowns.

* :func:`score_charts` -- score reference vs predicted charts exactly as the challenge.
* :class:`ChartScorer` -- the same, streamed over scenes/tiles, with breakdowns per
  scene, ice service and month, per-class tables, merging and JSON round trips.
* :func:`sic_to_classes` -- the one rule that turns SIC regression outputs into classes.

Plots live in :mod:`icecontext.evaluation.plots` (imported on demand: matplotlib).
"""

from icecontext.evaluation.confusion import confusion_matrix
from icecontext.evaluation.metrics import (
    SCORE_WEIGHTS,
    per_class_table,
    score_charts,
    scores_from_confusions,
    sic_to_classes,
)
from icecontext.evaluation.scorer import ChartScorer, scene_groups

__all__ = [
    "SCORE_WEIGHTS",
    "ChartScorer",
    "confusion_matrix",
    "per_class_table",
    "scene_groups",
    "score_charts",
    "scores_from_confusions",
    "sic_to_classes",
]
