"""Quicklook PNG: HH panel, class maps with legends, downsampling, masked grey."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from matplotlib.image import imread

from icecontext.data.io.format import CHARTS, CLASS_NAMES
from icecontext.errors import DataError
from icecontext.inference.exports import ExportError, render_quicklook, write_quicklook
from icecontext.inference.exports.colours import MASKED, chart_rgb, colour_table
from icecontext.inference.exports.quicklook import display_step, hh_db
from icecontext.testing import make_scene_dataset


@pytest.fixture(scope="module")
def scene() -> xr.Dataset:
    return make_scene_dataset(300, 280, seed=2)


def test_quicklook_panels_and_legends(scene: xr.Dataset, tmp_path: Path) -> None:
    charts = {c: scene[c].values for c in CHARTS}
    fig = render_quicklook(scene, charts, max_size=100, show_reference=True)
    axes = [ax for ax in fig.axes if ax.get_title()]
    titles = [ax.get_title() for ax in axes]
    assert titles[0] == "Sentinel-1 HH"
    assert sum("(prediction)" in t for t in titles) == 3
    assert sum("(reference)" in t for t in titles) == 3  # the fixture scene has labels
    sod_ax = next(ax for ax in axes if ax.get_title().startswith("Stage of Development (pred"))
    legend = [t.get_text() for t in sod_ax.get_legend().get_texts()]
    assert legend == list(CLASS_NAMES["SOD"])
    image = sod_ax.get_images()[0].get_array()
    assert image.shape[:2] == (100, 94)  # every 3rd pixel of 300 x 280
    np.testing.assert_array_equal(image, chart_rgb("SOD", charts["SOD"][::3, ::3]))
    path = write_quicklook(tmp_path / "q.png", scene, charts, max_size=100)
    png = imread(path)
    assert png.ndim == 3 and png.shape[1] > png.shape[0]
    assert [p.name for p in tmp_path.iterdir()] == ["q.png"]


def test_colours_and_masks(scene: xr.Dataset) -> None:
    rgb = chart_rgb("SIC", np.array([[0, 10, 255]], dtype=np.uint8))
    assert tuple(rgb[0, 2]) == MASKED
    assert tuple(rgb[0, 0]) != tuple(rgb[0, 1])
    for chart in CHARTS:
        colours = [v[:3] for k, v in colour_table(chart).items() if k != 255]
        assert len(set(colours)) == len(colours)  # classes distinguishable
    hh = hh_db(scene, step=2)
    z = scene["nersc_sar_primary"].values[::2, ::2]
    np.testing.assert_array_equal(hh.mask, z == 0)
    assert -40 < float(hh.mean()) < 0  # dB, not z-scores
    assert display_step((5000, 5200), 1000) == 6 and display_step((100, 90), 1000) == 1


def test_quicklook_errors(scene: xr.Dataset, tmp_path: Path) -> None:
    charts = {c: scene[c].values for c in CHARTS}
    with pytest.raises(DataError, match=r"'SIC' has shape \(2, 2\)"):
        write_quicklook(tmp_path / "q.png", scene, {**charts, "SIC": np.zeros((2, 2), np.uint8)})
    blocker = tmp_path / "f"
    blocker.write_text("")
    with pytest.raises(ExportError, match="quicklook PNG"):
        write_quicklook(blocker / "q.png", scene, charts)
