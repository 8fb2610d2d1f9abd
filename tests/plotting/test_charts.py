"""Chart colours, lookup tables, legends and the scene figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from icecontext.data.io.format import CHART_FILL, CHARTS, CLASS_NAMES, N_CLASSES
from icecontext.plotting.charts import (
    CLASS_COLOURS,
    CLASS_RGB,
    MASK_LABEL,
    MASK_RGB,
    WATER_RGB,
    chart_cmap,
    chart_rgba,
    draw_chart,
    legend_handles,
)
from icecontext.plotting.scene import (
    block_centre,
    block_nanmean,
    display_factor,
    render_scene,
    save_scene_figure,
)
from icecontext.testing import make_scene_dataset


@pytest.mark.parametrize("chart", CHARTS)
def test_every_class_has_a_distinct_colour_and_water_is_shared(chart: str) -> None:
    colours = CLASS_RGB[chart]
    assert len(colours) == N_CLASSES[chart]
    assert len(set(colours)) == len(colours)
    assert colours[0] == WATER_RGB
    assert MASK_RGB not in colours
    assert all(c.startswith("#") and len(c) == 7 for c in CLASS_COLOURS[chart])


@pytest.mark.parametrize("chart", CHARTS)
def test_rgba_lookup_colours_classes_and_greys_the_mask(chart: str) -> None:
    values = np.array([[0, 1], [CHART_FILL, N_CLASSES[chart] - 1]], dtype=np.uint8)
    rgba = chart_rgba(chart, values)
    assert rgba.shape == (2, 2, 4) and rgba.dtype == np.uint8
    assert tuple(rgba[0, 0, :3]) == WATER_RGB
    assert tuple(rgba[1, 0, :3]) == MASK_RGB
    assert tuple(rgba[1, 1, :3]) == CLASS_RGB[chart][-1]
    assert (rgba[..., 3] == 255).all()


def test_colour_map_and_norm_map_class_indices_to_their_colours() -> None:
    cmap, norm = chart_cmap("SOD")
    for k in range(N_CLASSES["SOD"]):
        rgb = tuple(round(255 * v) for v in cmap(norm(k))[:3])
        assert rgb == CLASS_RGB["SOD"][k]


def test_legend_lists_class_names_and_the_mask() -> None:
    labels = [h.get_label() for h in legend_handles("FLOE")]
    assert labels == [*CLASS_NAMES["FLOE"], MASK_LABEL]
    some = [h.get_label() for h in legend_handles("SIC", present=[0, 10], include_mask=False)]
    assert some == ["0 %", "100 %"]


def test_draw_chart_masks_255_and_adds_a_legend() -> None:
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    values = np.array([[0, 4], [255, 5]], dtype=np.uint8)
    image = draw_chart(ax, "SOD", values, title="SOD test")
    data = image.get_array()
    assert bool(data.mask[1, 0]) and not data.mask[0, 0]
    assert ax.get_title() == "SOD test"
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Thick first-year ice" in texts and MASK_LABEL in texts


def test_display_reduction_helpers() -> None:
    assert display_factor((5000, 5200), 1000) == 6
    assert display_factor((300, 325), 1000) == 1
    x = np.arange(16, dtype=np.float32).reshape(4, 4)
    x[0, 0] = np.nan
    m = block_nanmean(x, 2)
    assert m.shape == (2, 2)
    assert m[0, 0] == pytest.approx((1 + 4 + 5) / 3)
    allnan = block_nanmean(np.full((2, 2), np.nan), 2)
    assert np.isnan(allnan).all()
    c = block_centre(np.arange(36).reshape(6, 6), 3)
    assert c.tolist() == [[7, 10], [25, 28]]


def test_scene_figure_has_six_titled_panels_and_writes_a_png(tmp_path: Path) -> None:
    ds = make_scene_dataset(120, 130, seed=1)
    fig = render_scene(ds, max_size=60)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [
        "HH backscatter (dB)",
        "HV backscatter (dB)",
        "AMSR2 36.5 GHz H (K)",
        "SIC",
        "SOD",
        "FLOE",
    ]
    assert fig.get_suptitle().startswith(ds.attrs["scene_id"][:19])
    path = save_scene_figure(ds, tmp_path / "scene.png", max_size=60, dpi=40)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, no leftovers
