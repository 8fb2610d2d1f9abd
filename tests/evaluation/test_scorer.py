"""ChartScorer: streaming equals pooling, merge, breakdowns, JSON round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icecontext.data.io.format import CHARTS, N_CLASSES
from icecontext.errors import DataError
from icecontext.evaluation import ChartScorer, scene_groups, score_charts

SCENES = [
    ("20180124T194759_dmi", (23, 31)),
    ("20180623T114935_cis", (17, 40)),
    ("20180707T113313_cis", (30, 12)),
    ("20190810T110422_dmi", (9, 9)),
]


def make_scene(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[dict, dict]:
    ref, pred = {}, {}
    for chart in CHARTS:
        n = N_CLASSES[chart]
        classes = rng.permutation(n)[: rng.integers(1, n + 1)]
        r = rng.choice(classes, size=shape).astype(np.uint8)
        r[rng.random(shape) < rng.uniform(0, 0.6)] = 255
        p = np.where(rng.random(shape) < 0.7, r, rng.integers(0, n, size=shape)).astype(np.uint8)
        p[r == 255] = 255
        ref[chart], pred[chart] = r, p
    return ref, pred


@pytest.fixture(scope="module")
def scenes() -> list[tuple[str, dict, dict]]:
    rng = np.random.default_rng(42)
    return [(name, *make_scene(rng, shape)) for name, shape in SCENES]


def concat(parts: list[dict]) -> dict:
    return {c: np.concatenate([p[c].ravel() for p in parts]) for c in CHARTS}


def assert_same_scores(a: dict, b: dict) -> None:
    for key in (*CHARTS, "combined"):
        assert a[key] == b[key] or (math.isnan(a[key]) and math.isnan(b[key]))
        ua, ub = a["unrounded"][key], b["unrounded"][key]
        assert ua == pytest.approx(ub, abs=1e-9, nan_ok=True)
    assert a["n_pixels"] == b["n_pixels"]


def filled(scenes: list) -> ChartScorer:
    scorer = ChartScorer()
    for name, ref, pred in scenes:
        scorer.update(ref, pred, groups=scene_groups(name))
    return scorer


def test_compute_equals_score_charts_on_the_concatenation(scenes: list) -> None:
    scorer = filled(scenes)
    pooled = score_charts(concat([s[1] for s in scenes]), concat([s[2] for s in scenes]))
    assert_same_scores(scorer.compute(), pooled)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_chunks=st.integers(1, 9))
def test_streaming_over_chunks_equals_pooling(seed: int, n_chunks: int) -> None:
    rng = np.random.default_rng(seed)
    ref, pred = make_scene(rng, (24, 25))
    flat_ref = {c: ref[c].ravel() for c in CHARTS}
    flat_pred = {c: pred[c].ravel() for c in CHARTS}
    cuts = np.sort(rng.integers(0, 600, size=n_chunks - 1))
    scorer = ChartScorer()
    for lo, hi in zip([0, *cuts], [*cuts, 600], strict=True):
        scorer.update(
            {c: flat_ref[c][lo:hi] for c in CHARTS}, {c: flat_pred[c][lo:hi] for c in CHARTS}
        )
    assert_same_scores(scorer.compute(), score_charts(ref, pred))


def test_merge_equals_single_scorer(scenes: list) -> None:
    single = filled(scenes)
    a, b = filled(scenes[:1]), filled(scenes[1:])
    # Same scene split across two processes pools into one group too.
    half = ChartScorer()
    name, ref, pred = scenes[0]
    half.update(
        {c: ref[c][:5] for c in CHARTS}, {c: pred[c][:5] for c in CHARTS}, scene_groups(name)
    )
    merged = ChartScorer().merge(a).merge(b)
    assert_same_scores(merged.compute(), single.compute())
    for c in CHARTS:
        np.testing.assert_array_equal(merged.confusion(c), single.confusion(c))
    pd.testing.assert_frame_equal(merged.breakdown("scene"), single.breakdown("scene"))
    a.merge(half)
    assert len(a.groups) == 1
    assert a.compute()["n_pixels"]["SIC"] == single.compute(scene=name)["n_pixels"]["SIC"] + int(
        (ref["SIC"][:5] != 255).sum()
    )
    with pytest.raises(DataError, match="cannot merge"):
        ChartScorer(["SIC"]).merge(single)


@pytest.mark.parametrize("by", ["scene", "service", "month"])
def test_breakdown_equals_scoring_each_subset(scenes: list, by: str) -> None:
    scorer = filled(scenes)
    table = scorer.breakdown(by)
    labels = {name: scene_groups(name)[by] for name, _, _ in scenes}
    assert list(table.index) == sorted(set(labels.values()))
    assert table.index.name == by
    for value in table.index:
        subset = [s for s in scenes if labels[s[0]] == value]
        direct = score_charts(concat([s[1] for s in subset]), concat([s[2] for s in subset]))
        for c in (*CHARTS, "combined"):
            assert table.loc[value, c] == pytest.approx(direct[c], nan_ok=True)
            assert scorer.compute(**{by: value})[c] == pytest.approx(direct[c], nan_ok=True)
        for c in CHARTS:
            assert table.loc[value, f"n_{c}"] == direct["n_pixels"][c]
    unrounded = scorer.breakdown(by, rounded=False)
    first = unrounded.index[0]
    subset = [s for s in scenes if labels[s[0]] == first]
    direct = score_charts(concat([s[1] for s in subset]), concat([s[2] for s in subset]))
    assert unrounded.loc[first, "SIC"] == pytest.approx(direct["unrounded"]["SIC"], nan_ok=True)


def test_breakdown_by_two_labels_and_missing_label(scenes: list) -> None:
    scorer = filled(scenes)
    scorer.update(scenes[0][1], scenes[0][2])  # no groups at all
    table = scorer.breakdown(["service", "month"])
    assert table.index.names == ["service", "month"]
    assert (None, None) in table.index  # the unlabelled update is reported, not dropped
    assert table["n_SIC"].sum() == scorer.compute()["n_pixels"]["SIC"]
    with pytest.raises(DataError, match=r"no update carried the group label\(s\) \['region'\]"):
        scorer.breakdown("region")


def test_per_class_and_confusion_filtering(scenes: list) -> None:
    scorer = filled(scenes)
    dmi = [s for s in scenes if s[0].endswith("dmi")]
    cm = scorer.confusion("SOD", service="dmi")
    direct = score_charts(concat([s[1] for s in dmi]), concat([s[2] for s in dmi]))
    assert cm.sum() == direct["n_pixels"]["SOD"]
    assert cm.dtype == np.int64 and cm.shape == (6, 6)
    table = scorer.per_class("FLOE")
    assert len(table) == 7
    assert table["support"].sum() == scorer.compute()["n_pixels"]["FLOE"]
    with pytest.raises(DataError, match="chart 'SIC' is not scored here"):
        ChartScorer(["SOD"]).confusion("SIC")


def test_json_round_trip(scenes: list) -> None:
    scorer = filled(scenes)
    text = json.dumps(scorer.to_dict())
    back = ChartScorer.from_dict(json.loads(text))
    assert back.groups == scorer.groups
    assert_same_scores(back.compute(), scorer.compute())
    pd.testing.assert_frame_equal(back.breakdown("month"), scorer.breakdown("month"))


def test_from_dict_rejects_bad_records() -> None:
    with pytest.raises(DataError, match="not a ChartScorer record"):
        ChartScorer.from_dict({"format": "other"})
    record = ChartScorer(["SOD"]).to_dict()
    record["entries"] = [{"groups": {}, "confusion": {"SOD": [[1, 2], [3, 4]]}}]
    with pytest.raises(DataError, match=r"confusion 'SOD' must be a 6x6 matrix"):
        ChartScorer.from_dict(record)


def test_bad_update_leaves_the_scorer_unchanged(scenes: list) -> None:
    scorer = filled(scenes)
    before = scorer.compute()
    name, ref, pred = scenes[1]
    bad = {**pred, "FLOE": np.full_like(pred["FLOE"], 9)}
    with pytest.raises(DataError, match="prediction 'FLOE'"):
        scorer.update(ref, bad, scene_groups(name))
    with pytest.raises(DataError, match="prediction lacks chart 'SOD'"):
        scorer.update(ref, {"SIC": pred["SIC"], "FLOE": pred["FLOE"]})
    with pytest.raises(DataError, match="group 'scene' has value"):
        scorer.update(ref, pred, groups={"scene": ["a", "list"]})
    assert_same_scores(scorer.compute(), before)


def test_group_labels_accept_numpy_scalars_and_subset_charts() -> None:
    scorer = ChartScorer(["SOD", "SIC"])
    assert scorer.charts == ("SIC", "SOD")  # canonical order
    ref = {"SIC": np.array([1, 2, 3]), "SOD": np.array([1, 2, 2]), "FLOE": np.array([9, 9, 9])}
    scorer.update(ref, ref, groups={"month": np.int64(3)})  # FLOE is not scored: not checked
    assert scorer.groups == [{"month": 3}]
    assert scorer.compute() == {
        "SIC": 100.0,
        "SOD": 100.0,
        "combined": 100.0,
        "unrounded": {"SIC": 100.0, "SOD": 100.0, "combined": 100.0},
        "n_pixels": {"SIC": 3, "SOD": 3},
    }
    with pytest.raises(DataError, match="non-empty subset"):
        ChartScorer(["SIC", "ICE"])


def test_scene_groups() -> None:
    assert scene_groups("20210328T202742_dmi") == {
        "scene": "20210328T202742_dmi",
        "service": "dmi",
        "month": 3,
    }
