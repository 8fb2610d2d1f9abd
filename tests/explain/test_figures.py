"""Figures: CAM over HH with the charts beside it, model comparison, distance curves."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from icecontext.explain.distance import distance_profile
from icecontext.explain.figures import (
    compare_figure,
    distance_figure,
    explain_figure,
    save_figure,
)
from icecontext.explain.scene import CamSettings, explain_scene
from icecontext.explain.targets import TargetSpec


@pytest.fixture(scope="module")
def result(model, scene):
    return explain_scene(
        model,
        scene,
        scene.features,
        TargetSpec("SOD", 3, "reference"),
        CamSettings(window=(0, 0, 128, 160)),
    )


def _titles(fig):
    return [ax.get_title() for ax in fig.axes]


def test_explain_figure_shows_cam_reference_and_prediction(result, tmp_path):
    hh = np.where(result.valid, -15.0, np.nan)
    fig = explain_figure(result, hh)
    titles = _titles(fig)
    assert "HiResCAM at encoder.layer2" in titles  # the defaults: HiResCAM at the ASPP input
    assert "SOD reference" in titles and "SOD prediction" in titles
    assert "SOD class 3 (reference mask)" in fig._suptitle.get_text()
    path = save_figure(fig, tmp_path / "explain.png")
    image = imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 1000


def test_figures_without_hh_or_reference(result, tmp_path):
    from dataclasses import replace

    bare = replace(result, reference=None)
    fig = explain_figure(bare, None)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "no reference chart" in texts
    save_figure(fig, tmp_path / "bare.png")


def test_compare_figure_titles_carry_the_receptive_field(result, tmp_path):
    panels = [(f"model {i}\nRF {km:.1f} km", result) for i, km in enumerate((4.2, 9.6, 20.0))]
    fig = compare_figure(panels, None, columns=2)
    titles = _titles(fig)
    assert "model 0\nRF 4.2 km" in titles and "model 2\nRF 20.0 km" in titles
    assert "SOD reference" in titles
    save_figure(fig, tmp_path / "compare.png")


def test_distance_figure_marks_d50_d90_and_receptive_field(result, tmp_path):
    """The dotted line is at half the field passed in (the CLI passes the explained part's)."""
    p = distance_profile(result.cam, result.target_mask, result.pixel_km)
    fig = distance_figure({"a": p, "b": p}, {"a": 3.0, "b": None}, title="t")
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert any(f"d50 {p.d50_km:.1f}" in label for label in labels)
    # one dotted receptive-field line (radius 1.5 km) on each axis, only for model a
    dotted = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(dotted) == 1 and dotted[0].get_xdata()[0] == pytest.approx(1.5)
    save_figure(fig, tmp_path / "distance.png")
