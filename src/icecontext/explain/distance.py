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

The yardstick of a curve is :func:`explained_field`: the receptive field of the task's
output *relative to the explained layer* (the layers after it), not the whole model's.
A map at a layer places its mass on that layer's cells, so only the layers between the
cells and the output decide how far from the target the mass can lie; the encoder's
own field (what each cell summarises of the input) does not move it. At the ASPP input
this is the field of the ASPP and decoder, ``output stride x`` their field in feature
cells.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.ndimage import distance_transform_edt

from icecontext.atomic import atomic_path
from icecontext.errors import DataError

if TYPE_CHECKING:
    from torch import nn


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


@dataclass(frozen=True)
class ExplainedField:
    """Receptive field of one task's output relative to an explained layer.

    Per axis, an output pixel depends on ``cells`` consecutive cells of the layer's grid
    (through the widest path of the layers after it, the bilinear output upsampling
    included); each cell is ``stride_px`` input pixels wide. A CAM at the layer is
    therefore zero (HiResCAM) beyond those cells, whatever the encoder before the layer
    sees.

    Attributes:
        layer: The explained layer.
        task: The task whose output is explained.
        stride_px: Input pixels per cell of the layer's grid.
        cells: The field in layer cells per axis; ``None`` when a global pooling branch
            follows the layer (the output depends on every cell).
    """

    layer: str
    task: str
    stride_px: int
    cells: int | None

    @property
    def px(self) -> int | None:
        """The field in input pixels, ``stride_px * cells`` (``None`` = unbounded)."""
        return None if self.cells is None else self.stride_px * self.cells

    @property
    def radius_px(self) -> float | None:
        """Half the field: the dotted line of the distance figure, in input pixels."""
        return None if self.px is None else self.px / 2

    def km(self, downsample: int = 1) -> float | None:
        """The field in km at ``downsample`` x 80 m pixels (``None`` = unbounded)."""
        from icecontext.models.receptive_field import pixels_to_km

        return None if self.px is None else pixels_to_km(self.px, downsample)


def _under(name: str, root: str) -> bool:
    return name == root or name.startswith(root + ".")


def _part(parent: object, attr: str, key: str | None = None) -> nn.Module:
    """``parent.attr`` (``[key]`` of it when given), which must be a module.

    Raises:
        AttributeError: ``parent`` has no ``attr``.
        KeyError: No ``key`` in it.
        TypeError: What was found is no module.
    """
    from torch import nn

    part = getattr(parent, attr)
    if key is not None:
        part = part[key]
    if not isinstance(part, nn.Module):
        raise TypeError(f"{attr} is a {type(part).__name__}, not a module")
    return part


def _branches(aspp: nn.Module) -> list[nn.Module]:
    """The ASPP's branches, in order.

    Raises:
        AttributeError: The module has no ``branches``.
        TypeError: They are not a module list.
    """
    from torch import nn

    branches = _part(aspp, "branches")
    if not isinstance(branches, nn.ModuleList):
        raise TypeError(f"branches is a {type(branches).__name__}, not a module list")
    return list(branches)


def explained_field(model: nn.Module, task: str, layer: str) -> ExplainedField | None:
    """The receptive field of ``task``'s output relative to ``layer`` (see :class:`ExplainedField`).

    The layers after ``layer`` are those of the task's paths (encoder main path, one
    ASPP branch, the ASPP fusion, the 3x3 projection, the head, the bilinear
    upsampling: :func:`~icecontext.models.receptive_field.main_path` order, as in
    :func:`~icecontext.models.receptive_field.theoretical_receptive_fields`) that come
    after the module in ``model.named_modules()``; their field follows from
    :func:`~icecontext.models.receptive_field.chain_receptive_field` on the layer's
    grid, and the widest path through the ASPP branches counts. For the encoder output
    (the ASPP input) this is ``1 + sum over the widest branch and the tail of (k - 1) d
    + 1`` feature cells, i.e. the whole model's field minus the encoder's, divided by
    the output stride, plus one cell.

    Args:
        model: A multi-task network (encoder, ``decoders``, ``heads``).
        task: The task explained.
        layer: A module name of ``model``.

    Returns:
        The field, or ``None`` when the model has no such structure or ``layer`` is not
        on ``task``'s path.
    """
    from icecontext.models.aspp import GlobalPoolBranch
    from icecontext.models.receptive_field import LayerGeometry, chain_receptive_field, main_path

    try:
        dname = model.decoder_name(task)  # type: ignore[operator]
        decoder = _part(model, "decoders", dname)
        head = _part(model, "heads", task)
        aspp = _part(decoder, "aspp")
        encoder = _part(model, "encoder")
        branches = _branches(aspp)
        aspp_project, decoder_project = _part(aspp, "project"), _part(decoder, "project")
    except (AttributeError, KeyError, TypeError):
        return None
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    inside = [i for name, i in order.items() if layer and _under(name, layer)]
    if not inside:
        return None
    end = max(inside)  # the layer's output: everything registered after its subtree follows
    prefix = f"decoders.{dname}"
    tail_roots = (f"{prefix}.aspp.project", f"{prefix}.project", f"heads.{task}")
    encoder_path = main_path(encoder, "encoder")
    tail = [
        *main_path(aspp_project, tail_roots[0]),
        *main_path(decoder_project, tail_roots[1]),
        *main_path(head, tail_roots[2]),
    ]
    # every layer after the encoder keeps its grid (stride 1)
    stride = math.prod(g.stride for g in encoder_path if order.get(g.name, -1) <= end)
    widest: int | None = 0
    found = False
    for i, branch in enumerate(branches):
        root = f"{prefix}.aspp.branches.{i}"
        on_path = layer in (prefix, f"{prefix}.aspp") or any(
            _under(layer, r) for r in ("encoder", root, *tail_roots)
        )
        if not on_path:
            continue
        found = True
        branch_end = max(j for name, j in order.items() if _under(name, root))
        if isinstance(branch, GlobalPoolBranch) and end < branch_end:
            widest = None  # the pooling after the layer reads every cell
            continue
        chain = [*encoder_path, *main_path(branch, root), *tail]
        after = [g for g in chain if order.get(g.name, -1) > end]
        # + the bilinear upsampling to the input: 2 taps on the encoder output's grid
        cells, _ = chain_receptive_field([*after, LayerGeometry("upsample", 2)])
        if widest is not None:
            widest = max(widest, cells)
    if not found:
        return None  # another task's decoder or head
    return ExplainedField(layer, task, stride, widest)


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
