"""How far a model looks: Grad-CAM mass as a function of distance from the target region.

Every pixel gets its Euclidean distance (km) to the nearest pixel of the target mask
(:func:`scipy.ndimage.distance_transform_edt` with the pixel size as sampling; 0
inside the target). The CAM, normalised to unit total mass, is then summed by distance:

* the **curve** ``F(d)``: the fraction of the CAM mass within ``d`` km of the target
  (cumulative, from the mass inside the target at ``d = 0`` up to 1), reported on bins
  of ``bin_km``;
* the **summary** ``d50`` / ``d90``: the smallest distance holding 50 % / 90 % of the
  mass (exact weighted quantiles over pixels, not bin edges).

A model that decides from the target pixels alone has ``d50 = d90 = 0``; a model that
draws on context 20 km away has its curve rise around 20 km. Only the domain that was
explained counts: mass beyond a window's edge cannot be seen, so use whole scenes to
compare models with large receptive fields.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt

from icecontext.atomic import atomic_path
from icecontext.errors import DataError


@dataclass(frozen=True)
class DistanceProfile:
    """CAM mass by distance from the target region.

    Attributes:
        edges_km: Bin edges ``(n + 1,)``, starting at 0.
        mass: Fraction of the CAM mass in each bin ``(n,)``; bin ``i`` holds distances
            ``(edges[i], edges[i + 1]]``, and bin 0 also the target itself (0 km).
        cumulative: Fraction within ``edges[i + 1]`` km ``(n,)``.
        inside: Fraction of the mass inside the target (distance 0).
        d50_km: Smallest distance holding half the mass.
        d90_km: Smallest distance holding 90 % of the mass.
        total: Total CAM mass (raw units), before normalisation.
    """

    edges_km: np.ndarray
    mass: np.ndarray
    cumulative: np.ndarray
    inside: float
    d50_km: float
    d90_km: float
    total: float

    def distance_at(self, fraction: float) -> float:
        """Smallest bin edge (km) holding at least ``fraction`` of the mass."""
        i = int(np.searchsorted(self.cumulative, fraction - 1e-9))
        return float(self.edges_km[min(i + 1, self.edges_km.size - 1)])


def distance_km(target_mask: np.ndarray, pixel_km: float) -> np.ndarray:
    """Distance of every pixel to the nearest target pixel, in km (0 inside the target).

    Raises:
        DataError: If the target mask is empty.
    """
    mask = np.asarray(target_mask, dtype=bool)
    if not mask.any():
        raise DataError("the target mask is empty: there is no region to measure distances from")
    return distance_transform_edt(~mask, sampling=pixel_km).astype(np.float64)


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """Smallest value ``v`` with ``sum(weights[values <= v]) >= q * sum(weights)``."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order], dtype=np.float64)
    i = int(np.searchsorted(cum, q * cum[-1] * (1 - 1e-12)))
    return float(values[order][min(i, cum.size - 1)])


def distance_profile(
    cam: np.ndarray,
    target_mask: np.ndarray,
    pixel_km: float,
    *,
    bin_km: float | None = None,
    max_km: float | None = None,
) -> DistanceProfile:
    """CAM mass as a function of distance from the target region.

    Args:
        cam: Non-negative map ``(H, W)``.
        target_mask: bool ``(H, W)``: the pixels the target summed.
        pixel_km: Pixel side in km.
        bin_km: Bin width of the curve (default: one pixel, at least 1/200 of the
            farthest distance).
        max_km: Last bin edge (default: the farthest pixel).

    Returns:
        The profile.

    Raises:
        DataError: If the mask is empty or the map has no positive mass.
    """
    cam = np.asarray(cam, dtype=np.float64)
    if cam.shape != np.shape(target_mask):
        raise ValueError(f"map {cam.shape} and mask {np.shape(target_mask)} differ in shape")
    if (cam < 0).any() or not np.isfinite(cam).all():
        raise ValueError("the map must be finite and non-negative")
    total = float(cam.sum())
    if total <= 0:
        raise DataError(
            "the Grad-CAM map is zero everywhere (no positive evidence for the target at this "
            "layer); try another --layer"
        )
    dist = distance_km(target_mask, pixel_km)
    far = float(dist.max())
    top = far if max_km is None else float(max_km)
    width = bin_km if bin_km is not None else max(pixel_km, top / 200.0)
    n = max(1, int(np.ceil(top / width - 1e-9)))
    edges = np.arange(n + 1, dtype=np.float64) * width
    # bin i holds (edges[i], edges[i + 1]]; distance 0 goes to bin 0
    idx = np.clip(np.ceil(dist / width - 1e-9).astype(np.int64) - 1, 0, n - 1)
    keep = dist <= edges[-1] + 1e-9
    w = cam / total
    mass = np.bincount(idx[keep], weights=w[keep], minlength=n)
    positive = w > 0
    d, ww = dist[positive], w[positive]
    return DistanceProfile(
        edges_km=edges,
        mass=mass,
        cumulative=np.cumsum(mass),
        inside=float(w[dist == 0].sum()),
        d50_km=weighted_quantile(d, ww, 0.5),
        d90_km=weighted_quantile(d, ww, 0.9),
        total=total,
    )


def write_profiles_csv(profiles: dict[str, DistanceProfile], path: str | os.PathLike[str]) -> Path:
    """Write the curves in long form: ``model, distance_km, mass, cumulative``.

    ``distance_km`` is the upper edge of each bin (the cumulative fraction is the mass
    within that distance).
    """
    rows: list[list[object]] = []
    for label, p in profiles.items():
        for d, m, c in zip(p.edges_km[1:], p.mass, p.cumulative, strict=True):
            rows.append([label, f"{d:.4f}", f"{m:.6g}", f"{c:.6g}"])
    return _write(path, ["model", "distance_km", "mass", "cumulative"], rows)


def write_summary_csv(rows: list[dict[str, object]], path: str | os.PathLike[str]) -> Path:
    """Write one row per model (columns from the first row's keys)."""
    if not rows:
        raise ValueError("no rows to write")
    keys = list(rows[0])
    return _write(path, keys, [[_fmt(row.get(k)) for k in keys] for row in rows])


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _write(path: str | os.PathLike[str], header: list[str], rows: list[list[object]]) -> Path:
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return Path(path)
