"""The spatial-context scales: each one measurably controls the statistic it claims to.

* ``sod_texture_px``: a single pixel does not tell thick first-year from old ice, a
  window of about that size does; the backscatter autocorrelation follows it.
* ``floe_size_factor``: floes (connected ice components) grow with it.
* ``sic_cluster_px``: the local ice fraction varies at that scale, so small windows
  misjudge the polygon's concentration when it is large.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from icecontext.synthetic.fields import gaussian_field
from icecontext.synthetic.floes import render_floes
from icecontext.synthetic.generator import generate_scene
from icecontext.synthetic.icechart import OLD, THICK_FYI, ChartPolygon, IcePart
from icecontext.synthetic.params import SCALE_PRESETS, SynthParams, SynthScales
from icecontext.synthetic.sar import SurfaceCover, SurfaceTextures, SurfaceWind, synthesise_sar

N = 256


def _best_threshold_accuracy(a: np.ndarray, b: np.ndarray) -> float:
    """Balanced accuracy of the best single threshold separating samples a and b."""
    cuts = np.quantile(np.concatenate([a, b]), np.linspace(0.005, 0.995, 199))
    acc = [((a < t).mean() + (b >= t).mean()) / 2 for t in cuts]
    acc += [((a >= t).mean() + (b < t).mean()) / 2 for t in cuts]
    return float(max(acc))


def _fyi_vs_old(texture_px: float) -> tuple[np.ndarray, np.ndarray]:
    """HH, HV of a square half thick first-year, half old ice at 30 deg."""
    stage = np.full((N, N), THICK_FYI, dtype=np.uint8)
    stage[:, N // 2 :] = OLD
    rng = np.random.default_rng(1)
    return synthesise_sar(
        SurfaceCover(
            ice_fraction=np.ones((N, N), np.float32),
            stage=stage,
            rubble=np.zeros((N, N), np.uint8),
            land=np.zeros((N, N), bool),
        ),
        SurfaceTextures(
            ridge=gaussian_field((N, N), texture_px, rng),
            hummock=gaussian_field((N, N), 1.5 * texture_px, rng),
            raft=gaussian_field((N, N), texture_px / 3, rng),
            terrain=np.zeros((N, N), np.float32),
        ),
        SurfaceWind(speed=np.full((N, N), 7.0, np.float32), rel_dir=np.zeros((N, N), np.float32)),
        incidence=np.full(N, 30.0, np.float32),
        month=2,
        enl=20.0,
        rng=rng,
    )


def _window_accuracy(hv: np.ndarray, window: int) -> float:
    """Separate the halves by the local standard deviation of HV over a window."""
    mean = ndimage.uniform_filter(hv, window)
    std = np.sqrt(np.maximum(ndimage.uniform_filter(hv * hv, window) - mean**2, 0.0))
    m = window  # stay away from the border between the halves
    return _best_threshold_accuracy(std[:, m : N // 2 - m].ravel(), std[:, N // 2 + m : -m].ravel())


def test_stage_is_ambiguous_per_pixel_and_resolved_by_context_of_the_texture_scale() -> None:
    hh, hv = _fyi_vs_old(8.0)
    fyi, old = (slice(0, N // 2), slice(N // 2, N))
    single_hh = _best_threshold_accuracy(hh[:, fyi].ravel(), hh[:, old].ravel())
    single_hv = _best_threshold_accuracy(hv[:, fyi].ravel(), hv[:, old].ravel())
    assert single_hh < 0.8 and single_hv < 0.85  # one pixel: often wrong
    assert _window_accuracy(hv, 17) > 0.95  # a window of ~2 L: nearly always right


def test_needed_window_grows_with_the_texture_scale() -> None:
    fine = _window_accuracy(_fyi_vs_old(3.0)[1], 7)
    coarse = _window_accuracy(_fyi_vs_old(24.0)[1], 7)
    assert fine > 0.95
    assert coarse < fine - 0.08  # the same small window no longer suffices
    assert _window_accuracy(_fyi_vs_old(24.0)[1], 41) > coarse + 0.05


def _same_stage_lag_correlation(scene, lag: int) -> float:
    hh = scene.hh_db
    stage = scene.truth["stage"]
    pure = (scene.truth["ice_fraction"] >= 0.999) & np.isfinite(hh)
    a, b = hh[:, :-lag], hh[:, lag:]
    ok = pure[:, :-lag] & pure[:, lag:] & (stage[:, :-lag] == stage[:, lag:])
    x, y = a[ok], b[ok]
    # remove each stage's mean so only the within-stage texture correlates
    sx = stage[:, :-lag][ok]
    for st in np.unique(sx):
        sel = sx == st
        x[sel] -= x[sel].mean()
        y[sel] -= y[sel].mean()
    return float(np.corrcoef(x, y)[0, 1])


def test_texture_scale_sets_the_backscatter_autocorrelation_of_generated_ice() -> None:
    kwargs = {"height": 260, "width": 270, "water_fraction": 0.0, "land_fraction": 0.0}
    corr = {}
    for name in ("fine", "coarse"):
        s = generate_scene(SynthParams(scales=SCALE_PRESETS[name], **kwargs), 21)
        corr[name] = _same_stage_lag_correlation(s, 6)
    assert corr["coarse"] > corr["fine"] + 0.25


def _render_one(part: IcePart, ct: int, scales: SynthScales, seed: int = 0) -> np.ndarray:
    poly = ChartPolygon(1, ct, "I", (part,), "test")
    poly.render = [(part, ct / 100.0)]
    labels = np.zeros((N, N), dtype=np.int32)
    rng = np.random.default_rng(seed)
    cluster = gaussian_field((N, N), scales.sic_cluster_px, rng)
    split = gaussian_field((N, N), scales.sic_cluster_px, rng)
    field = render_floes(
        labels,
        np.zeros((N, N), bool),
        [poly],
        cluster,
        split,
        scales.floe_size_factor,
        np.random.default_rng(seed + 1),
    )
    return field.ice_fraction


@pytest.mark.parametrize("factor", [1.0, 3.0])
def test_rendered_concentration_matches_the_code(factor: float) -> None:
    ice = _render_one(IcePart(5, 93, 5), 50, SynthScales(floe_size_factor=factor))
    assert ice.mean() == pytest.approx(0.5, abs=0.03)


def test_floe_size_factor_grows_the_floes() -> None:
    counts = {}
    for factor in (1.0, 3.0):
        ice = _render_one(IcePart(5, 93, 5), 50, SynthScales(floe_size_factor=factor))
        _, counts[factor] = ndimage.label(ice > 0.5)
    # big floes are 500-2000 m: 6-25 px at factor 1; 3x larger floes -> ~9x fewer
    assert counts[1.0] > 4 * counts[3.0]


@pytest.mark.parametrize("form", [2, 4])  # cake ice (sub-pixel) and medium floes (1-6 px)
def test_cluster_scale_sets_how_much_local_concentration_varies(form: int) -> None:
    def block_std(cluster_px: float) -> float:
        ice = _render_one(IcePart(5, 93, form), 50, SynthScales(sic_cluster_px=cluster_px))
        blocks = ice.reshape(N // 16, 16, N // 16, 16).mean(axis=(1, 3))
        return float(blocks.std())

    assert block_std(64.0) > 1.5 * block_std(4.0)


def test_scales_are_recorded_and_floe_diameters_follow_the_factor() -> None:
    base = SynthParams(height=200, width=210, water_fraction=0.0)
    stretched = base.model_copy(update={"scales": SynthScales(floe_size_factor=2.0)})
    a, b = generate_scene(base, 6), generate_scene(stretched, 6)
    assert b.truth["scales"]["floe_size_factor"] == 2.0
    assert a.polygon_codes == b.polygon_codes  # the chart does not depend on the scales
    da = [p["diameter_px"] for q in a.truth["polygons"] for p in q["parts"] if p["diameter_px"]]
    db = [p["diameter_px"] for q in b.truth["polygons"] for p in q["parts"] if p["diameter_px"]]
    assert da and np.allclose(np.array(db), 2 * np.array(da), rtol=1e-3, atol=2e-3)
