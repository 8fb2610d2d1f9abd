"""Land, coast and the distance-to-land zones (format reference §1.7).

Land is an excursion set of a multi-scale Gaussian field plus a large-scale gradient
(so a coast runs along one side of the scene, with islands and fjords). The field is
drawn on a 2 km grid that extends 300 km beyond the scene on every side, so scenes
without land of their own still measure their distance to a coast outside them;
inside the scene the coast is refined at 80 m. Distances are Euclidean
(``scipy.ndimage.distance_transform_edt``) and binned into the 42 zone ids of the
``distance_map`` variable, with zone 0 exactly on land.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy import ndimage

from icecontext.data.io.format import AMSR_FACTOR, PIXEL_SPACING_M
from icecontext.synthetic.fields import gaussian_field, upsample_linear

# Upper bounds (km) of zones 1..40; zone 41 is everything beyond 300 km.
ZONE_EDGES_KM: Final = np.array(
    [0.5, 1.0]
    + [float(k) for k in range(2, 21)]
    + [float(k) for k in range(25, 51, 5)]
    + [float(k) for k in range(60, 101, 10)]
    + [float(k) for k in range(125, 301, 25)]
)
# zone of every distance i * 10 m (i = 0..30001); the last entry stands for > 300 km
_LUT: Final = (
    np.searchsorted(ZONE_EDGES_KM, np.arange(30002) / 100.0, side="left").astype(np.float32) + 1
)
PAD_KM: Final = 300.0
CELL_KM: Final = AMSR_FACTOR * PIXEL_SPACING_M / 1000.0


def distance_to_zone(distance_km: np.ndarray, land: np.ndarray) -> np.ndarray:
    """Bin distances to land (km) into zone ids 1..41; land pixels get zone 0.

    Bins are closed on the right: zone 1 is (0, 0.5] km, zone 3 is (1, 2] km, ...,
    zone 40 is (275, 300] km and zone 41 is beyond 300 km.

    Returns:
        float32 zone ids.
    """
    # Every zone edge is a multiple of 10 m, so the zone of d is the zone of ceil(d / 10 m)
    # * 10 m: a lookup table over 10 m steps (5x faster than a binary search per pixel).
    idx = np.asarray(distance_km, dtype=np.float32) * np.float32(100.0)
    np.ceil(idx, out=idx)
    np.clip(idx, 0.0, float(_LUT.size - 1), out=idx)
    zones = _LUT[idx.astype(np.int32)]
    zones[land] = 0.0
    return zones


@dataclass
class LandModel:
    """Land mask and distances of one scene.

    Attributes:
        land: bool (H, W), True on land.
        distance_km: float32 (H, W), distance to the nearest land (0 on land).
        zones: float32 (H, W), ``distance_map`` zone ids 0..41.
        fraction: Land share of the scene.
        terrain: float32 (H, W) unit-variance texture of correlation length 6 px that
            shaped the coast; reused as the land's radar texture.
    """

    land: np.ndarray
    distance_km: np.ndarray
    zones: np.ndarray
    fraction: float
    terrain: np.ndarray


def draw_land_fraction(rng: np.random.Generator) -> float:
    """Land share of a scene: none in 25 % of scenes, else 5-45 % (planning values).

    With the chart-region cut and the swath edges this masks a median of about 40 %
    of a scene's pixels, as in the dataset (format reference §1.8).
    """
    return 0.0 if rng.random() < 0.25 else float(rng.uniform(0.05, 0.45))


def make_land(shape: tuple[int, int], fraction: float, rng: np.random.Generator) -> LandModel:
    """Draw the land mask and compute the distance zones.

    Args:
        shape: ``(H, W)`` of the 80 m grid.
        fraction: Target land share inside the scene (0 = land only outside it).
        rng: Random generator.
    """
    h, w = shape
    pad = round(PAD_KM / CELL_KM)
    ch, cw = -(-h // AMSR_FACTOR), -(-w // AMSR_FACTOR)
    dom = (ch + 2 * pad, cw + 2 * pad)
    # large-scale potential: a gradient towards a random side plus three octaves
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0 : dom[0], 0 : dom[1]].astype(np.float32)
    yy = (yy - dom[0] / 2) / max(ch, cw, 1)
    xx = (xx - dom[1] / 2) / max(ch, cw, 1)
    phi = np.float32(1.2) * (np.cos(angle) * xx + np.sin(angle) * yy)
    for corr, amp in ((60.0, 0.8), (20.0, 0.45), (6.0, 0.2)):
        phi += np.float32(amp) * gaussian_field(dom, corr, rng)
    del yy, xx

    # the scene's own cells, refined to 80 m with two finer octaves
    inner = phi[pad : pad + ch, pad : pad + cw]
    fine = upsample_linear(inner, shape, AMSR_FACTOR, (AMSR_FACTOR - 1) / 2)
    fine += np.float32(0.10) * gaussian_field(shape, 40.0, rng)
    terrain = gaussian_field(shape, 6.0, rng)
    fine += np.float32(0.04) * terrain
    if fraction > 0:
        k = round((1.0 - fraction) * (fine.size - 1))
        threshold = float(np.partition(fine.ravel(), k)[k])
    else:
        threshold = float(fine.max()) + 1e-3
    land = fine > threshold
    del fine

    # distance to land outside the scene, on the padded 2 km grid
    outside = phi > threshold
    outside[pad : pad + ch, pad : pad + cw] = False
    if outside.any():
        d_out = ndimage.distance_transform_edt(~outside).astype(np.float32) * np.float32(CELL_KM)
        d_out = d_out[pad - 1 : pad + ch + 1, pad - 1 : pad + cw + 1]
        dist = upsample_linear(d_out, shape, AMSR_FACTOR, (AMSR_FACTOR - 1) / 2 - AMSR_FACTOR)
    else:
        dist = np.full(shape, 1e4, dtype=np.float32)
    if land.any():
        d_in = ndimage.distance_transform_edt(~land).astype(np.float32)
        d_in *= np.float32(PIXEL_SPACING_M / 1000.0)
        np.minimum(dist, d_in, out=dist)
        del d_in
    dist[land] = 0.0
    return LandModel(
        land=land,
        distance_km=dist,
        zones=distance_to_zone(dist, land),
        fraction=float(land.mean()),
        terrain=terrain,
    )
