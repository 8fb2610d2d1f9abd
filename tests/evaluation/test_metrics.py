"""score_charts equals the challenge's scikit-learn computation; degenerate inputs; SIC rule."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import f1_score, precision_recall_fscore_support, r2_score

from icecontext.data.io.format import CHARTS, CLASS_NAMES, N_CLASSES
from icecontext.errors import ConfigError, DataError
from icecontext.evaluation import per_class_table, score_charts, sic_to_classes
from icecontext.evaluation.confusion import confusion_matrix
from icecontext.evaluation.metrics import r2_from_confusion, weighted_f1_from_confusion


def sklearn_reference(ref: dict, pred: dict) -> dict:
    """The starter kit's computation: flatten, drop 255 reference pixels, sklearn, x100."""
    out = {}
    for chart in ref:
        r = np.asarray(ref[chart]).ravel()
        p = np.asarray(pred[chart]).ravel()
        keep = r != 255
        r, p = r[keep].astype(np.int64), p[keep].astype(np.int64)
        if chart == "SIC":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                out[chart] = 100 * r2_score(r, p)
        else:
            out[chart] = 100 * f1_score(r, p, average="weighted")
    return out


def random_charts(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    mask_fraction: float = 0.3,
    drop_classes: int = 0,
) -> tuple[dict, dict]:
    ref, pred = {}, {}
    for chart in CHARTS:
        n = N_CLASSES[chart]
        allowed = rng.permutation(n)[: max(1, n - drop_classes)]
        r = rng.choice(allowed, size=shape).astype(np.uint8)
        r[rng.random(shape) < mask_fraction] = 255
        # Predictions: mostly right, some noise, arbitrary junk (even 255) under the mask.
        p = np.where(rng.random(shape) < 0.6, r, rng.integers(0, n, size=shape)).astype(np.uint8)
        p[r == 255] = rng.integers(0, 256, size=int((r == 255).sum()))
        ref[chart], pred[chart] = r, p
    return ref, pred


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("drop", [0, 3])
def test_equals_sklearn_on_random_charts(seed: int, drop: int) -> None:
    rng = np.random.default_rng(seed)
    ref, pred = random_charts(rng, (37, 53), mask_fraction=0.25 + 0.1 * seed, drop_classes=drop)
    got = score_charts(ref, pred)
    want = sklearn_reference(ref, pred)
    for chart in CHARTS:
        assert got["unrounded"][chart] == pytest.approx(want[chart], abs=1e-9)
        assert got[chart] == round(want[chart], 3)
        assert got["n_pixels"][chart] == int((ref[chart] != 255).sum())
    expected_combined = np.round(
        (2 * np.round(want["SIC"], 3) + 2 * np.round(want["SOD"], 3) + np.round(want["FLOE"], 3))
        / 5,
        3,
    )
    assert got["combined"] == pytest.approx(expected_combined, abs=1e-12)
    assert got["unrounded"]["combined"] == pytest.approx(
        (2 * want["SIC"] + 2 * want["SOD"] + want["FLOE"]) / 5, abs=1e-9
    )


@st.composite
def chart_pairs(draw: st.DrawFn) -> tuple[dict, dict]:
    size = draw(st.integers(min_value=1, max_value=120))
    ref, pred = {}, {}
    for chart in CHARTS:
        n = N_CLASSES[chart]
        ref_classes = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
        pred_classes = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
        r = draw(st.lists(st.sampled_from([*ref_classes, 255]), min_size=size, max_size=size))
        p = draw(st.lists(st.sampled_from(pred_classes), min_size=size, max_size=size))
        ref[chart] = np.array(r, dtype=np.uint8)
        pred[chart] = np.array(p, dtype=np.int16)
    return ref, pred


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chart_pairs())
def test_property_equals_sklearn(pair: tuple[dict, dict]) -> None:
    ref, pred = pair
    got = score_charts(ref, pred)
    for chart in CHARTS:
        valid = ref[chart] != 255
        if not valid.any():
            assert math.isnan(got["unrounded"][chart])
            continue
        want = sklearn_reference({chart: ref[chart]}, {chart: pred[chart]})[chart]
        if math.isnan(want):  # R^2 of a single pixel: undefined in sklearn too
            assert valid.sum() == 1 and chart == "SIC"
            assert math.isnan(got["unrounded"][chart])
        else:
            assert got["unrounded"][chart] == pytest.approx(want, abs=1e-9)


def test_pooling_means_one_score_not_a_mean_of_scene_scores() -> None:
    rng = np.random.default_rng(5)
    a_ref, a_pred = random_charts(rng, (20, 30))
    b_ref, b_pred = random_charts(rng, (11, 7))
    pooled = score_charts(
        {c: np.concatenate([a_ref[c].ravel(), b_ref[c].ravel()]) for c in CHARTS},
        {c: np.concatenate([a_pred[c].ravel(), b_pred[c].ravel()]) for c in CHARTS},
    )
    want = sklearn_reference(
        {c: np.concatenate([a_ref[c].ravel(), b_ref[c].ravel()]) for c in CHARTS},
        {c: np.concatenate([a_pred[c].ravel(), b_pred[c].ravel()]) for c in CHARTS},
    )
    mean_of_scenes = (score_charts(a_ref, a_pred)["SOD"] + score_charts(b_ref, b_pred)["SOD"]) / 2
    assert pooled["unrounded"]["SOD"] == pytest.approx(want["SOD"], abs=1e-9)
    assert pooled["SOD"] != pytest.approx(mean_of_scenes, abs=1e-6)


def test_perfect_prediction_scores_100() -> None:
    rng = np.random.default_rng(1)
    ref, _ = random_charts(rng, (15, 15))
    got = score_charts(ref, {c: np.where(ref[c] == 255, 0, ref[c]) for c in CHARTS})
    assert got["SIC"] == got["SOD"] == got["FLOE"] == got["combined"] == 100.0


def test_predictions_under_the_mask_are_ignored() -> None:
    rng = np.random.default_rng(2)
    ref, pred = random_charts(rng, (30, 30), mask_fraction=0.5)
    other = {c: pred[c].copy() for c in CHARTS}
    for c in CHARTS:
        other[c][ref[c] == 255] = 200  # out of range, but masked: must not matter
    assert score_charts(ref, pred) == score_charts(ref, other)


def test_mask_is_per_chart() -> None:
    ref = {
        "SIC": np.array([0, 5, 10, 255], dtype=np.uint8),
        "SOD": np.array([255, 255, 4, 4], dtype=np.uint8),
        "FLOE": np.array([0, 2, 255, 3], dtype=np.uint8),
    }
    pred = {
        "SIC": np.array([0, 5, 9, 7], dtype=np.uint8),
        "SOD": np.array([1, 2, 4, 3], dtype=np.uint8),
        "FLOE": np.array([0, 2, 6, 3], dtype=np.uint8),
    }
    got = score_charts(ref, pred)
    assert got["n_pixels"] == {"SIC": 3, "SOD": 2, "FLOE": 3}
    assert got["unrounded"]["SIC"] == pytest.approx(100 * r2_score([0, 5, 10], [0, 5, 9]))
    assert got["unrounded"]["SOD"] == pytest.approx(
        100 * f1_score([4, 4], [4, 3], average="weighted")
    )
    assert got["FLOE"] == 100.0


def test_published_rounding_of_the_combined_score() -> None:
    # Combined is computed from the rounded chart scores, then rounded again.
    ref = {"SIC": np.array([0, 1, 2, 3, 10]), "SOD": np.array([0, 1]), "FLOE": np.array([0, 1])}
    pred = {"SIC": np.array([0, 1, 2, 4, 10]), "SOD": np.array([0, 0]), "FLOE": np.array([0, 1])}
    got = score_charts(ref, pred)
    sic = np.round(100 * r2_score(ref["SIC"], pred["SIC"]), 3)
    sod = np.round(100 * f1_score(ref["SOD"], pred["SOD"], average="weighted"), 3)
    assert got["SIC"] == sic and got["SOD"] == sod and got["FLOE"] == 100.0
    assert got["combined"] == np.round((2 * sic + 2 * sod + 100.0) / 5, 3)


def test_subset_of_charts_uses_normalised_weights() -> None:
    ref = {"SOD": np.array([0, 1, 1, 2]), "FLOE": np.array([0, 1, 2, 2])}
    pred = {"SOD": np.array([0, 1, 2, 2]), "FLOE": np.array([0, 1, 2, 2])}
    got = score_charts(ref, pred)
    assert set(got) == {"SOD", "FLOE", "combined", "unrounded", "n_pixels"}
    assert got["combined"] == np.round((2 * got["SOD"] + 100.0) / 3, 3)


# ----------------------------------------------------------------------------- degenerate


def test_no_valid_pixel_gives_nan() -> None:
    ref = {c: np.full((4, 4), 255, dtype=np.uint8) for c in CHARTS}
    pred = {c: np.zeros((4, 4), dtype=np.uint8) for c in CHARTS}
    got = score_charts(ref, pred)
    for key in (*CHARTS, "combined"):
        assert math.isnan(got[key])
    assert got["n_pixels"] == {"SIC": 0, "SOD": 0, "FLOE": 0}


@pytest.mark.parametrize(
    ("ref", "pred", "expected"),
    [
        ([4, 4, 4], [4, 4, 4], 1.0),  # constant reference, perfect: 100
        ([4, 4, 4], [4, 4, 5], 0.0),  # constant reference, any error: 0
        ([7], [7], math.nan),  # one pixel: undefined, as sklearn
        ([], [], math.nan),
    ],
)
def test_r2_degenerate_cases_follow_documented_choice(
    ref: list[int], pred: list[int], expected: float
) -> None:
    cm = confusion_matrix(np.array(ref, dtype=np.uint8), np.array(pred, dtype=np.uint8), "SIC")
    got = r2_from_confusion(cm)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == expected
        assert got == r2_score(ref, pred)  # the installed sklearn agrees


def test_r2_is_exact_for_huge_counts() -> None:
    # 1e10 pixels (the whole training set) would overflow int64 in n * sum(y^2): Python ints.
    cm = np.zeros((11, 11), dtype=np.int64)
    cm[0, 0] = 5_000_000_000
    cm[10, 10] = 4_000_000_000
    cm[10, 9] = 1_000_000_000
    n, sy, sy2, ss_res = 10**10, 5 * 10**10, 5 * 10**11, 10**9
    assert r2_from_confusion(cm) == pytest.approx(1 - n * ss_res / (n * sy2 - sy * sy), rel=1e-15)


def test_weighted_f1_ignores_classes_only_predicted() -> None:
    cm = confusion_matrix(np.array([1, 1, 2]), np.array([1, 3, 3]), "SOD")
    assert weighted_f1_from_confusion(cm) == pytest.approx(
        f1_score([1, 1, 2], [1, 3, 3], average="weighted")
    )


def test_per_class_table_matches_sklearn() -> None:
    rng = np.random.default_rng(9)
    ref, pred = random_charts(rng, (40, 40), drop_classes=2)
    for chart in CHARTS:
        keep = ref[chart] != 255
        r, p = ref[chart][keep], pred[chart][keep]
        table = per_class_table(confusion_matrix(ref[chart], pred[chart], chart), chart)
        prec, rec, f1, support = precision_recall_fscore_support(
            r, p, labels=list(range(N_CLASSES[chart])), zero_division=np.nan
        )
        np.testing.assert_allclose(table["precision"], prec, equal_nan=True)
        np.testing.assert_allclose(table["recall"], rec, equal_nan=True)
        np.testing.assert_array_equal(table["support"], support)
        present = (table["support"] + table["predicted"]) > 0
        np.testing.assert_allclose(table["f1"][present], f1[present.to_numpy()])
        assert table["f1"][~present].isna().all()
        assert list(table["name"]) == list(CLASS_NAMES[chart])


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_naming_chart_and_values() -> None:
    ok = {c: np.zeros((3, 3), dtype=np.uint8) for c in CHARTS}
    with pytest.raises(DataError, match=r"reference 'SOD' holds values \[7\]"):
        score_charts({**ok, "SOD": np.full((3, 3), 7, dtype=np.uint8)}, ok)
    with pytest.raises(DataError, match=r"prediction 'FLOE' holds values \[9\].*0\.\.6"):
        score_charts(ok, {**ok, "FLOE": np.full((3, 3), 9, dtype=np.uint8)})
    with pytest.raises(DataError, match=r"prediction 'SIC' holds values \[-1\]"):
        score_charts(ok, {**ok, "SIC": np.full((3, 3), -1, dtype=np.int8)})
    with pytest.raises(DataError, match=r"chart 'SIC': reference shape \(3, 3\).*\(3, 4\)"):
        score_charts(ok, {**ok, "SIC": np.zeros((3, 4), dtype=np.uint8)})
    with pytest.raises(DataError, match="prediction 'SIC' has dtype float32.*sic_to_classes"):
        score_charts(ok, {**ok, "SIC": np.zeros((3, 3), dtype=np.float32)})
    with pytest.raises(DataError, match="differ from prediction charts"):
        score_charts(ok, {"SIC": ok["SIC"]})
    with pytest.raises(DataError, match="non-empty subset"):
        score_charts({"ICE": ok["SIC"]}, {"ICE": ok["SIC"]})


def test_accepts_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    ref, pred = random_charts(rng, (10, 12))
    got = score_charts(
        {c: torch.from_numpy(ref[c].astype(np.int64)) for c in CHARTS},
        {c: torch.from_numpy(pred[c].astype(np.int64)) for c in CHARTS},
    )
    assert got == score_charts(ref, pred)


# ----------------------------------------------------------------------------- SIC rule


def test_sic_to_classes_round_half_away_from_zero_and_clip() -> None:
    x = np.array([-3.0, -0.5, -0.49, 0.49999999999999994, 0.5, 2.5, 7.5, 9.6, 10.4, 12.0, np.nan])
    got = sic_to_classes(x)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, [0, 0, 0, 0, 1, 3, 8, 10, 10, 10, 255])
    np.testing.assert_array_equal(
        sic_to_classes(np.array([2.5, 3.5, 0.5]), rule="half_even"), [2, 4, 0]
    )


def test_sic_to_classes_units() -> None:
    np.testing.assert_array_equal(
        sic_to_classes(np.array([0.0, 44.9, 45.0, 100.0]), unit="percent"), [0, 4, 5, 10]
    )
    np.testing.assert_array_equal(
        sic_to_classes(np.array([0.04, 0.051, 0.96]), unit="fraction"), [0, 1, 10]
    )
    with pytest.raises(ConfigError, match="option 'unit'"):
        sic_to_classes(np.zeros(2), unit="tenths")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="option 'rule'"):
        sic_to_classes(np.zeros(2), rule="ceil")  # type: ignore[arg-type]


def test_sic_to_classes_torch_matches_numpy() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 12, size=500)
    x[::7] = np.round(x[::7] * 2) / 2  # many exact halves
    x[3] = np.nan
    for rule in ("round", "half_even"):
        t = sic_to_classes(torch.from_numpy(x).float(), rule=rule)
        assert t.dtype == torch.int64
        np.testing.assert_array_equal(
            t.numpy(), sic_to_classes(x.astype(np.float32), rule=rule).astype(np.int64)
        )
