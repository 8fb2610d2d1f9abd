"""A scene in the pipeline's layout: channel-stacked SAR-grid and 2 km arrays plus charts.

:func:`scene_layers` turns an opened scene (:func:`icecontext.data.io.scene.open_scene`)
into :class:`SceneLayers`, optionally downsampled by an integer ``K``. ``prepare``
writes exactly these arrays into the Zarr store, and the NetCDF-backed source keeps
them in memory, so both back-ends serve identical values.

Layout (``K`` = downsampling, ``H' x W' = ceil(H/K) x ceil(W/K)``):

* ``sar``     float32 ``(n_sar, H', W')``: the selected SAR-grid inputs
  (``nersc_sar_primary``, ``nersc_sar_secondary``, ``sar_incidenceangle``,
  ``distance_map``, in catalogue order); at ``K > 1`` the mean over the block's
  SAR-valid pixels (``distance_map``: over all pixels), 0 where none is valid.
* ``coarse``  float32 ``(n_2km, h2, w2)``: the selected AMSR2/ERA5 channels on their
  native 2 km grid (never downsampled).
* ``charts``  uint8 ``(3, H', W')``: SIC, SOD, FLOE; at ``K > 1`` 255 if any pixel of
  the block is 255, else the block's mode (ties to the higher class).
* ``valid``   bool ``(H', W')``: SAR data present (the format's ``HH != 0`` rule); at
  ``K > 1`` true if any pixel of the block is valid.
* ``charts_full`` uint8 ``(3, H, W)``: the original 80 m charts, kept only at ``K > 1``
  when asked for (``prepare`` stores them so validation and evaluation score at 80 m);
  at ``K = 1`` ``charts`` already is the 80 m grid.
* ``tiepoints`` float64 ``(2, 21, 21)``: latitude and longitude tie points as in the file.
* ``block_counts`` uint16 ``(1 + 24, nb_r, nb_c)``: per 32 x 32 block of the source
  grid, the number of labelled pixels (any chart not 255) followed by the pixel count of
  every class of SIC (11), SOD (6) and FLOE (7). The patch sampler uses it to find
  windows with enough labels and to weight rare classes without reading charts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import xarray as xr

from icecontext.data.io.format import (
    AMSR_DIMS,
    CHART_FILL,
    CHARTS,
    INPUT_VARIABLES,
    LATLON_VARIABLES,
    N_CLASSES,
    SAR_DIMS,
    SAR_VARIABLES,
    scene_name_from_file,
)
from icecontext.data.io.geometry import block_any, block_chart, block_mean, block_sum
from icecontext.data.io.variables import CATALOGUE, feature_grid

COUNT_BLOCK: Final = 32
"""Side, in source pixels, of the blocks of :attr:`SceneLayers.block_counts`."""

COUNT_ROWS: Final = ("labelled", *(f"{c}:{k}" for c in CHARTS for k in range(N_CLASSES[c])))
"""Meaning of the first axis of ``block_counts``."""

COUNT_OFFSETS: Final = {
    "SIC": 1,
    "SOD": 1 + N_CLASSES["SIC"],
    "FLOE": 1 + N_CLASSES["SIC"] + N_CLASSES["SOD"],
}
"""Index of class 0 of each chart in ``block_counts``."""

# SAR-grid inputs whose fill value 0 marks "no SAR data" (distance_map is never masked).
MASKED_SAR_INPUTS: Final = frozenset({*SAR_VARIABLES, "sar_incidenceangle"})


def file_inputs(features: list[str] | tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split channel names into the file's SAR-grid and 2 km variables, in file order.

    Derived channels (``latlon``, ``month``) are dropped: sources compute them.
    """
    chosen = set(features)
    sar = tuple(v for v in INPUT_VARIABLES if v in chosen and feature_grid(v) == "sar")
    coarse = tuple(v for v in INPUT_VARIABLES if v in chosen and feature_grid(v) == "2km")
    return sar, coarse


@dataclass
class SceneLayers:
    """One scene in the pipeline layout (numpy arrays, or Zarr arrays when opened lazily).

    Attributes:
        name: 19-character scene name.
        full_shape: ``(H, W)`` of the 80 m grid.
        downsample: ``K``.
        sar_variables: Channel names of ``sar`` (may be empty).
        coarse_variables: Channel names of ``coarse`` (may be empty).
        sar: ``(n_sar, H', W')`` float32, or ``None`` when no SAR-grid channel is kept.
        coarse: ``(n_2km, h2, w2)`` float32, or ``None``.
        charts: ``(3, H', W')`` uint8.
        valid: ``(H', W')`` bool.
        tiepoints: ``(2, 21, 21)`` float64 (latitude, longitude).
        block_counts: ``(25, nb_r, nb_c)`` uint16.
        coarse_shape: ``(h2, w2)``.
        histograms_full: 256-bin histograms of the 80 m charts (``None`` when unknown,
            e.g. for layers opened from a store, whose manifest holds them).
        charts_full: ``(3, H, W)`` uint8 charts at 80 m when ``downsample > 1`` and they
            were kept (``None`` otherwise; at ``K = 1`` ``charts`` is the 80 m grid).
    """

    name: str
    full_shape: tuple[int, int]
    downsample: int
    sar_variables: tuple[str, ...]
    coarse_variables: tuple[str, ...]
    sar: Any
    coarse: Any
    charts: Any
    valid: Any
    tiepoints: np.ndarray
    block_counts: Any
    coarse_shape: tuple[int, int]
    histograms_full: dict[str, list[int]] | None = None
    charts_full: Any = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(H', W')`` of the source grid."""
        return int(self.charts.shape[1]), int(self.charts.shape[2])


def compute_block_counts(charts: np.ndarray, block: int = COUNT_BLOCK) -> np.ndarray:
    """Count labelled pixels and every class of every chart per ``block`` x ``block`` block.

    Args:
        charts: ``(3, H, W)`` uint8 SIC, SOD, FLOE.
        block: Block side in pixels (at most 255, so counts fit ``uint16``).

    Returns:
        ``(25, ceil(H/block), ceil(W/block))`` uint16, rows as in :data:`COUNT_ROWS`.
    """
    labelled = (charts != CHART_FILL).any(axis=0)
    rows = [block_sum(labelled, block, dtype=np.int64)]
    for i, chart in enumerate(CHARTS):
        for k in range(N_CLASSES[chart]):
            rows.append(block_sum(charts[i] == k, block, dtype=np.int64))
    return np.stack(rows).astype(np.uint16)


def _scene_name(ds: xr.Dataset) -> str:
    """The dataset's scene name (``open_scene`` sets it; in-memory fixtures carry ``scene_id``)."""
    if ds.attrs.get("scene_name"):
        return str(ds.attrs["scene_name"])
    try:
        return scene_name_from_file(str(ds.attrs.get("scene_id", "")))
    except ValueError:
        return ""


def scene_layers(
    ds: xr.Dataset,
    features: list[str] | tuple[str, ...] = INPUT_VARIABLES,
    downsample: int = 1,
    *,
    keep_full_charts: bool = False,
) -> SceneLayers:
    """Load a scene's arrays in the pipeline layout, downsampled by ``downsample``.

    Args:
        ds: An opened scene (ready-to-train layout).
        features: Channel names; only file variables are loaded (derived channels are
            computed by the sources from ``tiepoints`` and the scene name).
        downsample: Integer factor ``K`` >= 1.
        keep_full_charts: At ``K > 1``, also keep the original 80 m charts
            (:attr:`SceneLayers.charts_full`, 3 bytes per 80 m pixel).

    Returns:
        The layers as numpy arrays.
    """
    if downsample < 1:
        raise ValueError(f"downsample must be a positive integer, got {downsample}")
    unknown = [f for f in features if f not in CATALOGUE]
    if unknown:
        raise ValueError(f"unknown channels {unknown}")
    sar_vars, coarse_vars = file_inputs(features)
    k = downsample
    hh = np.asarray(ds[SAR_VARIABLES[0]].values)
    valid80 = (hh != 0) & np.isfinite(hh)
    del hh
    sar = None
    if sar_vars:
        planes = []
        for v in sar_vars:
            values = np.nan_to_num(np.asarray(ds[v].values, dtype=np.float32), nan=0.0)
            mask = valid80 if v in MASKED_SAR_INPUTS else None
            planes.append(block_mean(values, k, mask))
        sar = np.stack(planes)
    coarse = None
    if coarse_vars:
        coarse = np.stack([np.asarray(ds[v].values, dtype=np.float32) for v in coarse_vars])
    charts_list, histograms_full, full_list = [], {}, []
    for c in CHARTS:
        chart80 = np.asarray(ds[c].values, dtype=np.uint8)
        histograms_full[c] = np.bincount(chart80.ravel(), minlength=256).tolist()
        charts_list.append(block_chart(chart80, k, N_CLASSES[c]))
        if keep_full_charts and k > 1:
            full_list.append(chart80)
    charts = np.stack(charts_list).astype(np.uint8)
    charts_full = np.stack(full_list) if full_list else None
    del full_list
    tiepoints = np.stack([np.asarray(ds[v].values, dtype=np.float64) for v in LATLON_VARIABLES])
    return SceneLayers(
        name=_scene_name(ds),
        full_shape=(int(ds.sizes[SAR_DIMS[0]]), int(ds.sizes[SAR_DIMS[1]])),
        downsample=k,
        sar_variables=sar_vars,
        coarse_variables=coarse_vars,
        sar=sar,
        coarse=coarse,
        charts=charts,
        valid=block_any(valid80, k),
        tiepoints=tiepoints,
        block_counts=compute_block_counts(charts),
        coarse_shape=(int(ds.sizes[AMSR_DIMS[0]]), int(ds.sizes[AMSR_DIMS[1]])),
        histograms_full=histograms_full,
        charts_full=charts_full,
    )
