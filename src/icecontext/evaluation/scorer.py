"""Streaming challenge scores with breakdowns per scene, ice service and month.

:class:`ChartScorer` keeps one ``int64`` confusion matrix per chart for every
distinct combination of group labels passed to :meth:`ChartScorer.update` (for
example ``{"scene": "20180124T194759_dmi", "service": "dmi", "month": 1}``). Memory is
a few hundred integers per group, whatever the number of pixels, and because
confusion matrices add exactly:

* :meth:`~ChartScorer.compute` equals :func:`~icecontext.evaluation.score_charts` on
  the concatenation of everything passed;
* :meth:`~ChartScorer.breakdown` equals scoring each subset directly;
* :meth:`~ChartScorer.merge` of scorers filled on different processes or chunks
  equals one scorer fed everything (for DDP: ``all_gather_object(scorer.to_dict())``
  then ``merge``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from icecontext.data.io.format import CHARTS, N_CLASSES, scene_service, scene_time
from icecontext.errors import DataError
from icecontext.evaluation.confusion import confusion_matrix, empty_confusion
from icecontext.evaluation.metrics import per_class_table, scores_from_confusions

GroupValue = str | int | float | bool | None
GroupKey = tuple[tuple[str, GroupValue], ...]
BreakdownBy = Literal["scene", "service", "month"]

_FORMAT_VERSION = 1


def scene_groups(scene_name: str) -> dict[str, GroupValue]:
    """Return the standard group labels of a scene: its name, ice service and month.

    Args:
        scene_name: ``{YYYYMMDDThhmmss}_{dmi|cis}``.

    Returns:
        ``{"scene": scene_name, "service": "dmi" | "cis", "month": 1..12}``.
    """
    return {
        "scene": scene_name,
        "service": scene_service(scene_name),
        "month": scene_time(scene_name).month,
    }


def _group_key(groups: Mapping[str, Any] | None) -> GroupKey:
    if not groups:
        return ()
    items = []
    for key, value in groups.items():
        if not isinstance(key, str):
            raise DataError(f"group label names must be strings, got {key!r}")
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, str | int | float | bool) and value is not None:
            raise DataError(
                f"group '{key}' has value {value!r} of type {type(value).__name__}; "
                "expected a string, number, boolean or None (JSON scalars)"
            )
        items.append((key, value))
    return tuple(sorted(items))


class ChartScorer:
    """Accumulate confusion matrices and give challenge scores and breakdowns.

    Args:
        charts: Charts to score (default all three). Every update must provide them.

    Example:
        >>> scorer = ChartScorer()
        >>> for name, ref, pred in scenes:  # doctest: +SKIP
        ...     scorer.update(ref, pred, groups=scene_groups(name))
        >>> scorer.compute()["combined"]  # doctest: +SKIP
        >>> scorer.breakdown("service")  # doctest: +SKIP
    """

    def __init__(self, charts: Sequence[str] = CHARTS):
        unknown = [c for c in charts if c not in CHARTS]
        if unknown or not charts:
            raise DataError(
                f"charts must be a non-empty subset of {list(CHARTS)}, got {list(charts)}"
            )
        self.charts: tuple[str, ...] = tuple(c for c in CHARTS if c in charts)
        self._entries: dict[GroupKey, dict[str, np.ndarray]] = {}

    # ------------------------------------------------------------------ accumulation

    def update(
        self,
        reference: Mapping[str, Any],
        prediction: Mapping[str, Any],
        groups: Mapping[str, Any] | None = None,
    ) -> None:
        """Add the scored pixels of one batch, tile or scene.

        Args:
            reference: Chart -> integer array (255 = masked), at least this scorer's
                charts.
            prediction: Chart -> predicted classes, same shapes.
            groups: Labels of these pixels, e.g. :func:`scene_groups`; values must be
                JSON scalars. Pixels with the same labels are pooled.

        Raises:
            DataError: If a chart is missing or the arrays are invalid (nothing is
                added then).
        """
        for c in self.charts:
            for role, data in (("reference", reference), ("prediction", prediction)):
                if c not in data:
                    raise DataError(f"{role} lacks chart '{c}' (scorer charts: {self.charts})")
        key = _group_key(groups)
        # Compute every matrix before adding any, so a bad chart leaves the scorer as it was.
        new = {c: confusion_matrix(reference[c], prediction[c], c) for c in self.charts}
        entry = self._entries.setdefault(key, {c: empty_confusion(c) for c in self.charts})
        for c in self.charts:
            entry[c] += new[c]

    def merge(self, other: ChartScorer) -> ChartScorer:
        """Add another scorer's counts into this one (in place) and return ``self``.

        Raises:
            DataError: If the two scorers track different charts.
        """
        if other.charts != self.charts:
            raise DataError(f"cannot merge a scorer of {other.charts} into one of {self.charts}")
        for key, confusions in other._entries.items():
            entry = self._entries.setdefault(key, {c: empty_confusion(c) for c in self.charts})
            for c in self.charts:
                entry[c] += confusions[c]
        return self

    def reset(self) -> None:
        """Forget everything accumulated."""
        self._entries.clear()

    # ------------------------------------------------------------------ queries

    @property
    def groups(self) -> list[dict[str, GroupValue]]:
        """The distinct group labels seen so far, in first-seen order."""
        return [dict(k) for k in self._entries]

    def _select(self, where: Mapping[str, Any]) -> Iterable[dict[str, np.ndarray]]:
        wanted = dict(_group_key(where))
        for key, confusions in self._entries.items():
            labels = dict(key)
            if all(k in labels and labels[k] == v for k, v in wanted.items()):
                yield confusions

    def confusion(self, chart: str, **where: Any) -> np.ndarray:
        """Return the pooled confusion matrix of one chart (rows = reference class).

        Args:
            chart: One of this scorer's charts.
            **where: Restrict to updates whose groups have these labels, e.g.
                ``service="dmi"``.
        """
        if chart not in self.charts:
            raise DataError(f"chart '{chart}' is not scored here (charts: {self.charts})")
        total = empty_confusion(chart)
        for confusions in self._select(where):
            total += confusions[chart]
        return total

    def confusions(self, **where: Any) -> dict[str, np.ndarray]:
        """Return ``{chart: pooled confusion matrix}`` (see :meth:`confusion`)."""
        return {c: self.confusion(c, **where) for c in self.charts}

    def compute(self, **where: Any) -> dict[str, Any]:
        """Return the pooled challenge scores (same dictionary as ``score_charts``).

        Args:
            **where: Restrict to updates with these group labels (``service="cis"``).
        """
        return scores_from_confusions(self.confusions(**where))

    def per_class(self, chart: str, **where: Any) -> Any:
        """Return per-class support/precision/recall/F1 of one chart (a DataFrame)."""
        return per_class_table(self.confusion(chart, **where), chart)

    def breakdown(
        self, by: BreakdownBy | str | Sequence[str] = "scene", *, rounded: bool = True
    ) -> Any:
        """Return the scores of every subset sharing a group label, as a table.

        Args:
            by: A group label name (``"scene"``, ``"service"``, ``"month"`` or any name
                passed in ``groups``) or several (a MultiIndex). Updates without the
                label are reported under ``None``.
            rounded: Challenge rounding (x100, 3 decimals) or unrounded scores.

        Returns:
            A :class:`pandas.DataFrame` indexed by the label value(s) (sorted), with a
            column per chart, ``combined``, and ``n_<chart>`` (scored pixels).

        Raises:
            DataError: If no update carried the label.
        """
        import pandas as pd

        names = [by] if isinstance(by, str) else list(by)
        seen = {k for key in self._entries for k, _ in key}
        missing = [n for n in names if n not in seen]
        if missing:
            raise DataError(
                f"no update carried the group label(s) {missing}; labels seen: {sorted(seen)}"
            )
        pooled: dict[tuple[GroupValue, ...], dict[str, np.ndarray]] = {}
        for key, confusions in self._entries.items():
            labels = dict(key)
            value = tuple(labels.get(n) for n in names)
            acc = pooled.setdefault(value, {c: empty_confusion(c) for c in self.charts})
            for c in self.charts:
                acc[c] += confusions[c]
        rows = []
        for value, confusions in pooled.items():
            scores = scores_from_confusions(confusions)
            src = scores if rounded else scores["unrounded"]
            row: dict[str, Any] = dict(zip(names, value, strict=True))
            row.update({c: src[c] for c in self.charts})
            row["combined"] = src["combined"]
            row.update({f"n_{c}": scores["n_pixels"][c] for c in self.charts})
            rows.append(row)
        table = pd.DataFrame(rows)
        table = table.sort_values(names, key=_sort_key, ignore_index=True)
        return table.set_index(names if len(names) > 1 else names[0])

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable copy of the accumulated counts."""
        return {
            "format": "icecontext.ChartScorer",
            "version": _FORMAT_VERSION,
            "charts": list(self.charts),
            "entries": [
                {
                    "groups": dict(key),
                    "confusion": {c: m.tolist() for c, m in confusions.items()},
                }
                for key, confusions in self._entries.items()
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChartScorer:
        """Rebuild a scorer from :meth:`to_dict` output (e.g. read back from JSON).

        Raises:
            DataError: If the dictionary is not a scorer record or a matrix is malformed.
        """
        if data.get("format") != "icecontext.ChartScorer" or data.get("version") != 1:
            raise DataError(
                "not a ChartScorer record: expected format 'icecontext.ChartScorer' version 1, "
                f"got {data.get('format')!r} version {data.get('version')!r}"
            )
        scorer = cls(data["charts"])
        for i, entry in enumerate(data.get("entries", [])):
            key = _group_key(entry.get("groups"))
            confusions = {}
            for c in scorer.charts:
                m = np.asarray(entry["confusion"][c], dtype=np.int64)
                n = N_CLASSES[c]
                if m.shape != (n, n) or (m < 0).any():
                    raise DataError(
                        f"ChartScorer record entry {i}: confusion '{c}' must be a {n}x{n} "
                        f"matrix of non-negative counts, got shape {m.shape}"
                    )
                confusions[c] = m
            acc = scorer._entries.setdefault(key, {c: empty_confusion(c) for c in scorer.charts})
            for c in scorer.charts:
                acc[c] += confusions[c]
        return scorer

    def __repr__(self) -> str:
        n = {c: int(self.confusion(c).sum()) for c in self.charts}
        return f"ChartScorer(charts={self.charts}, groups={len(self._entries)}, pixels={n})"


def _sort_key(column: Any) -> Any:
    # Mixed None/str/int labels: sort by (type rank, value) so the order is stable.
    return column.map(lambda v: (v is None, str(type(v).__name__), v if v is not None else 0))
