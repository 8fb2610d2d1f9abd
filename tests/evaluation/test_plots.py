"""Evaluation figures: written atomically, normalised by true class, class names shown."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from icecontext.data.io.format import CHARTS, CLASS_NAMES, N_CLASSES
from icecontext.evaluation import ChartScorer
from icecontext.evaluation.plots import (
    normalise_by_true_class,
    plot_confusion_matrix,
    plot_per_class_f1,
    write_evaluation_plots,
)


@pytest.fixture(scope="module")
def scorer() -> ChartScorer:
    rng = np.random.default_rng(0)
    s = ChartScorer()
    ref = {c: rng.integers(0, N_CLASSES[c], size=(30, 30)).astype(np.uint8) for c in CHARTS}
    ref["FLOE"][ref["FLOE"] == 6] = 255  # one class with no reference pixel
    pred = {c: np.where(rng.random((30, 30)) < 0.8, ref[c], 0).astype(np.uint8) for c in CHARTS}
    pred["FLOE"][ref["FLOE"] == 255] = 0
    s.update(ref, pred)
    return s


def test_normalise_by_true_class() -> None:
    cm = np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4]])
    got = normalise_by_true_class(cm)
    np.testing.assert_allclose(got[0], [0.75, 0.25, 0.0])
    assert np.isnan(got[1]).all()
    np.testing.assert_allclose(got[2], [0.25, 0.25, 0.5])


def test_confusion_figure_has_class_names_and_writes_png(
    scorer: ChartScorer, tmp_path: Path
) -> None:
    path = tmp_path / "cm_SOD.png"
    fig = plot_confusion_matrix(scorer.confusion("SOD"), "SOD", path)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == list(CLASS_NAMES["SOD"])
    assert ax.get_yticklabels()[0].get_text().startswith("Open water (")
    image = ax.get_images()[0].get_array()
    np.testing.assert_allclose(image.sum(axis=1), 1.0)  # rows normalised by true class
    assert imread(path).shape[2] in (3, 4)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp file left


def test_per_class_f1_and_all_plots(scorer: ChartScorer, tmp_path: Path) -> None:
    fig = plot_per_class_f1(scorer.confusions())
    assert len(fig.axes) == 3
    floe_heights = [b.get_height() for b in fig.axes[2].patches]
    expected = scorer.per_class("FLOE")["f1"].fillna(0).to_numpy()
    np.testing.assert_allclose(floe_heights, expected)
    paths = write_evaluation_plots(scorer.confusions(), tmp_path / "plots", prefix="val_")
    assert sorted(p.name for p in paths) == [
        "val_confusion_FLOE.png",
        "val_confusion_SIC.png",
        "val_confusion_SOD.png",
        "val_per_class_f1.png",
    ]
    assert all(p.stat().st_size > 1000 for p in paths)
