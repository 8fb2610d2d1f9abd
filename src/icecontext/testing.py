"""Fixture builders: small, fast, structurally exact ready-to-train scenes.

Tests and users share these builders (as xbatcher and torchgeo do). The scenes follow
the file format exactly (29 variables, dims, dtypes, attributes, z-scoring, 0/255
masks, chart invariants) but their content is deliberately simple: rectangular chart
polygons, backscatter that depends on the stage of development, brightness
temperatures mixed by concentration. For physically based scenes use
:mod:`icecontext.synthetic`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from icecontext.data.io.format import (
    AMSR2_VARIABLES,
    AMSR_DIMS,
    CHART_FILL,
    CHART_LONG_NAMES,
    CHARTS,
    DISTANCE_VARIABLE,
    DISTANCE_ZONES_DESCRIPTION,
    ERA5_LONG_NAMES,
    ERA5_UNITS,
    ERA5_VARIABLES,
    INCIDENCE_VARIABLE,
    PIXEL_SPACING_M,
    R2T_VARIABLE_NAMES,
    SAR_DIMS,
    SAR_VARIABLES,
    TIEPOINT_DIMS,
    TIEPOINT_SHAPE,
    amsr_grid_shape,
    prep_file_name,
    reference_file_name,
)
from icecontext.data.io.scene import write_scene
from icecontext.data.io.variables import normalise
from icecontext.data.store.prepare import prepare_store

# (SIC, SOD, FLOE) triplets that satisfy the chart invariants of the real data.
_ICE_TYPES = (
    (0, 0, 0),
    (0, 0, 0),
    (10, 4, CHART_FILL),  # fast ice: FLOE masked
    (10, 5, 5),
    (9, 4, 4),
    (8, 3, 3),
    (6, 2, 2),
    (4, 1, 1),
    (2, 2, 6),
    (10, CHART_FILL, CHART_FILL),
)
# HH / HV in dB at 30 degrees per SOD class (0 water .. 5 old), planning values of docs/data.md.
_HH_DB = np.array([-18.0, -24.0, -12.0, -15.5, -14.0, -9.0], dtype=np.float32)
_HV_DB = np.array([-30.0, -33.0, -27.0, -30.5, -29.0, -20.0], dtype=np.float32)


def default_scene_name(seed: int, service: str = "dmi") -> str:
    """Return a reproducible scene name for a seed (a date in 2019-2020 and a time)."""
    t = datetime(2019, 1, 1, 6, 0, 0) + timedelta(
        days=(seed * 37) % 700, seconds=seed * 977 % 86400
    )
    return f"{t:%Y%m%dT%H%M%S}_{service}"


@dataclass(frozen=True)
class SceneMasks:
    """Which masked areas a fixture scene has.

    Attributes:
        land: Put a land area (masked, distance zone 0) in the top-left corner.
        footprint: Mask a slanted strip on the right, as the SAR swath edge does.
    """

    land: bool = True
    footprint: bool = True


def make_scene_dataset(
    height: int = 200,
    width: int = 225,
    *,
    seed: int = 0,
    scene_name: str | None = None,
    service: str = "dmi",
    masks: SceneMasks = SceneMasks(),
    polygon_size: int = 40,
    labelled: bool = True,
) -> xr.Dataset:
    """Build one ready-to-train scene in memory.

    Args:
        height: SAR lines (80 m pixels).
        width: SAR samples.
        seed: Random seed; the same seed gives the same dataset.
        scene_name: ``{time}_{svc}``; derived from the seed by default.
        service: Ice service when the name is derived.
        masks: The land area and the swath-edge strip (both by default).
        polygon_size: Side of the rectangular chart polygons in pixels.
        labelled: When false, every chart pixel is 255 (a test scene without labels).

    Returns:
        The dataset, with the 29 variables in file order and all attributes.
    """
    rng = np.random.default_rng(seed)
    name = scene_name or default_scene_name(seed, service)
    rows, cols = np.mgrid[0:height, 0:width]
    sic, sod, floe = _chart_polygons(rng, rows, cols, polygon_size)
    valid, is_land = _masked_areas(rows, cols, masks)
    # incidence angle: rises with the sample index, ~20 -> 46 degrees
    ia = 20.0 + 26.0 * cols / max(width - 1, 1) + 0.0 * rows
    sod_idx = np.where(sod == CHART_FILL, 4, sod)
    hh = _HH_DB[sod_idx] - 0.25 * (ia - 30.0) + rng.normal(0, 1.5, size=ia.shape)
    hv = _HV_DB[sod_idx] - 0.15 * (ia - 30.0) + rng.normal(0, 1.5, size=ia.shape)
    amsr = _brightness_temperatures(rng, sic)
    charts = {"SIC": sic, "SOD": sod, "FLOE": floe}
    for c in CHARTS:
        arr = charts[c].copy()
        arr[~valid] = CHART_FILL
        if not labelled:
            arr[:] = CHART_FILL
        charts[c] = arr
    ds = xr.Dataset(
        attrs={
            "scene_id": prep_file_name(name),
            "original_id": _original_id(name),
            "ice_service": name[16:19],
            "flip": 0,
            "pixel_spacing": PIXEL_SPACING_M,
        }
    )
    for c in CHARTS:
        ds[c] = xr.DataArray(
            charts[c],
            dims=SAR_DIMS,
            attrs={"polygon": CHART_LONG_NAMES[c], "chart_fill_value": CHART_FILL},
        )
    lat_tp = np.linspace(70.0, 73.5, TIEPOINT_SHAPE[0])[:, None] + np.zeros(TIEPOINT_SHAPE)
    lon_tp = np.linspace(-40.0, -30.0, TIEPOINT_SHAPE[1])[None, :] + np.zeros(TIEPOINT_SHAPE)
    ds["sar_grid2d_latitude"] = xr.DataArray(lat_tp, dims=TIEPOINT_DIMS)
    ds["sar_grid2d_longitude"] = xr.DataArray(lon_tp, dims=TIEPOINT_DIMS)
    _add_sar_grid_inputs(ds, name, valid, (hh, hv, ia), _distance_zones(is_land, masks.land))
    _add_coarse_inputs(ds, amsr, amsr_grid_shape((height, width)))
    return ds[list(R2T_VARIABLE_NAMES)]


def _chart_polygons(
    rng: np.random.Generator, rows: np.ndarray, cols: np.ndarray, polygon_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SIC, SOD and FLOE of rectangular polygons with random ice types."""
    height, width = rows.shape
    n_pr, n_pc = -(-height // polygon_size), -(-width // polygon_size)
    poly_types = rng.integers(0, len(_ICE_TYPES), size=(n_pr, n_pc))
    types = poly_types[rows // polygon_size, cols // polygon_size]
    table = np.array(_ICE_TYPES, dtype=np.uint8)
    sic, sod, floe = (table[types, k] for k in range(3))
    return sic, sod, floe


def _masked_areas(
    rows: np.ndarray, cols: np.ndarray, masks: SceneMasks
) -> tuple[np.ndarray, np.ndarray]:
    """The valid-pixel mask and the land mask."""
    height, width = rows.shape
    valid = np.ones((height, width), dtype=bool)
    is_land = np.zeros((height, width), dtype=bool)
    if masks.land:
        is_land = (rows / max(height, 1) + cols / max(width, 1)) < 0.35
        valid &= ~is_land
    if masks.footprint:
        valid &= cols < width - 1 - (0.15 * width) * (1 - rows / max(height - 1, 1))
    return valid, is_land


def _distance_zones(is_land: np.ndarray, land: bool) -> np.ndarray:
    """Distance-to-land zones: 0 on land, growing with distance, capped at 41."""
    if land and is_land.any():
        from scipy.ndimage import distance_transform_edt

        dist_km = distance_transform_edt(~is_land) * PIXEL_SPACING_M / 1000.0
        zones = np.clip(np.floor(dist_km) + 2, 1, 41)
        zones[is_land] = 0
        return np.asarray(zones)
    return np.full(is_land.shape, 41.0)


def _brightness_temperatures(rng: np.random.Generator, sic: np.ndarray) -> dict[str, np.ndarray]:
    """AMSR2 brightness temperatures mixed by the 2 km-block mean concentration."""
    h2, w2 = amsr_grid_shape(sic.shape)
    sic_frac = np.where(sic == CHART_FILL, 10, sic).astype(np.float64) / 10.0
    if h2 and w2:
        block = sic_frac[: h2 * 25, : w2 * 25].reshape(h2, 25, w2, 25).mean(axis=(1, 3))
    else:
        block = np.zeros((h2, w2))
    amsr: dict[str, np.ndarray] = {}
    for i, v in enumerate(AMSR2_VARIABLES):
        water, ice = (90.0 + 6 * i, 240.0 + i) if v.endswith("h") else (170.0 + 4 * i, 250.0)
        amsr[v] = (water + (ice - water) * block + rng.normal(0, 0.5, block.shape)).astype(
            np.float64
        )
    return amsr


def _add_sar_grid_inputs(
    ds: xr.Dataset,
    name: str,
    valid: np.ndarray,
    sar_ia: tuple[np.ndarray, np.ndarray, np.ndarray],
    zones: np.ndarray,
) -> None:
    """Add HH, HV and the incidence angle (z-scored, 0 where not valid) and the distance."""

    def sar_field(var: str, values: np.ndarray) -> np.ndarray:
        z = normalise(var, values)
        z[~valid] = 0.0
        return z

    hh, hv, ia = sar_ia
    for var, values, pol in ((SAR_VARIABLES[0], hh, "HH"), (SAR_VARIABLES[1], hv, "HV")):
        ds[var] = xr.DataArray(
            sar_field(var, values),
            dims=SAR_DIMS,
            attrs={
                "polarisation": pol,
                "upstream_id": _original_id(name)[:67],
                "description": "Sigma0 in dB",
                "min": float(values[valid].min(initial=0.0)),
                "max": float(values[valid].max(initial=0.0)),
                "variable_fill_value": 0.0,
            },
        )
    ds[INCIDENCE_VARIABLE] = xr.DataArray(
        sar_field(INCIDENCE_VARIABLE, ia), dims=SAR_DIMS, attrs={"variable_fill_value": 0.0}
    )
    ds[DISTANCE_VARIABLE] = xr.DataArray(
        normalise(DISTANCE_VARIABLE, zones),
        dims=SAR_DIMS,
        attrs={
            "long_name": "Distance to land zones numbered with ids ranging from 0 to 41",
            "zonal_range_description": DISTANCE_ZONES_DESCRIPTION,
        },
    )


def _add_coarse_inputs(
    ds: xr.Dataset, amsr: dict[str, np.ndarray], shape2: tuple[int, int]
) -> None:
    """Add the AMSR2 brightness temperatures and smooth ERA5 ramps (z-scored)."""
    for v in AMSR2_VARIABLES:
        freq = v[6:-1].replace("_", ".")
        pol = "horizontal" if v.endswith("h") else "vertical"
        ds[v] = xr.DataArray(
            normalise(v, amsr[v]),
            dims=AMSR_DIMS,
            attrs={
                "AMSR2_swaths": "GW1AM2_201901011200_000A_L1SGBTBR_2220220.h5",
                "AMSR2_S1_delays": 3600,
                "min": float(amsr[v].min(initial=0.0)),
                "max": float(amsr[v].max(initial=0.0)),
                "description": f"Brightness temperature in K at {freq}GHz. Polarization: {pol}.",
            },
        )
    r2, c2 = np.mgrid[0 : shape2[0], 0 : shape2[1]]
    era5_base = {
        "u10m_rotated": 3.0,
        "v10m_rotated": -2.0,
        "t2m": 262.0,
        "skt": 260.0,
        "tcwv": 5.0,
        "tclw": 0.03,
    }
    for v in ERA5_VARIABLES:
        ds[v] = xr.DataArray(
            normalise(v, era5_base[v] + 0.01 * (r2 + c2)),
            dims=AMSR_DIMS,
            attrs={"units": ERA5_UNITS[v], "long_name": ERA5_LONG_NAMES[v]},
        )


def _original_id(scene_name: str) -> str:
    t = scene_name[:15]
    svc = scene_name[16:19]
    prefix = f"S1B_EW_GRDM_1SDH_{t}_{t[:9]}{int(t[9:]) + 100:06d}_011271_014B00_0BEC"
    if svc == "dmi":
        return f"{prefix}_icechart_dmi_{t[:8]}{t[9:13]}_CentralEast_RIC.nc"
    return f"{prefix}_icechart_cis_SGRDIEA_{t[:8]}T{t[9:13]}Z_pl_a.nc"


def write_scene_files(
    folder: str | os.PathLike[str],
    n: int = 3,
    *,
    height: int = 200,
    width: int = 225,
    seed: int = 0,
    test_set: bool = False,
    **kwargs: object,
) -> list[Path]:
    """Write ``n`` scenes as ``{name}_prep.nc`` files into ``folder``.

    Args:
        folder: Output folder (created).
        n: Number of scenes; scene ``i`` uses seed ``seed + i``.
        height: SAR lines of each scene.
        width: SAR samples of each scene.
        seed: Base seed.
        test_set: Write the test-set layout: charts in ``_prep.nc`` all 255 and the
            labels in a separate ``_prep_reference.nc``.
        **kwargs: Passed to :func:`make_scene_dataset`.

    Returns:
        The ``_prep.nc`` paths, in order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        service = "cis" if i % 2 else "dmi"
        ds = make_scene_dataset(height, width, seed=seed + i, service=service, **kwargs)  # type: ignore[arg-type]
        name = ds.attrs["scene_id"].removesuffix("_prep.nc")
        path = folder / prep_file_name(name)
        if test_set:
            write_scene(ds, folder / reference_file_name(name), variables=CHARTS)
            unlabelled = ds.copy()
            for c in CHARTS:
                unlabelled[c] = unlabelled[c].copy(data=np.full_like(ds[c].values, CHART_FILL))
            write_scene(unlabelled, path)
        else:
            write_scene(ds, path)
        paths.append(path)
    return paths


TINY_FEATURES = ("sar", "amsr2:18.7")
"""Features of :func:`tiny_run_config` (a store for it needs only these)."""


def tiny_run_config(
    store: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    *,
    name: str | None = None,
    seed: int = 3,
    **sections: Any,
) -> dict[str, Any]:
    """A run-config mapping that trains in seconds on a CPU.

    A ResNet-18 cut after ``layer2`` (output stride 8) with 8-channel ASPP decoders at
    rates (1, 2), 64-pixel patches, 4 steps per epoch, 2 epochs, one validation scene
    scored in 128-pixel tiles; one thread and no loader workers.

    Args:
        store: Prepared store holding at least :data:`TINY_FEATURES`.
        root: ``output.root``; ``None`` leaves ``output`` out (a study sets it).
        name: ``output.name`` (with ``root``).
        seed: The run's seed.
        **sections: Merged into the top-level sections one level deep:
            ``train={"max_epochs": 1}`` changes one key of ``train``; a non-mapping
            value replaces the section.

    Returns:
        The mapping, for ``RunConfig.model_validate`` or a YAML file.
    """
    cfg: dict[str, Any] = {
        "seed": seed,
        "data": {
            "store": str(store),
            "features": list(TINY_FEATURES),
            "patch_size": 64,
            "batch_size": 4,
            "patches_per_epoch": 16,
            "workers": 0,
            "val_patches": 0,
            "splits": {"val_count": 1},
        },
        "model": {
            "encoder": {"name": "resnet18", "depth": "layer2", "output_stride": 8},
            "aspp": {"rates": [1, 2], "channels": 8, "dropout": 0.1},
        },
        "train": {
            "max_epochs": 2,
            "progress_bar": False,
            "log_every_n_steps": 1,
            "validation": {"tile": 128, "overlap": 32},
        },
        "trainer": {"threads": 1},
    }
    if root is not None:
        cfg["output"] = {"root": str(root), **({"name": name} if name else {})}
    for key, value in sections.items():
        base = cfg.get(key)
        cfg[key] = {**base, **value} if isinstance(value, dict) and base else value
    return cfg


def write_tiny_store(
    folder: str | os.PathLike[str],
    count: int = 3,
    height: int = 160,
    width: int = 170,
    seed: int = 0,
    *,
    downsample: int = 1,
    **scene_options: Any,
) -> Path:
    """``count`` labelled scenes in ``folder/scenes``, prepared into ``folder/store.zarr``.

    The store holds :data:`TINY_FEATURES`, which is what :func:`tiny_run_config` reads.

    Args:
        folder: Output folder (created).
        count: Number of scenes.
        height: SAR lines of each scene (80 m pixels).
        width: SAR samples of each scene.
        seed: Base seed of the scenes.
        downsample: ``prepare --downsample`` of the store (set ``data.downsample`` of the
            run config to match).
        **scene_options: Passed to :func:`make_scene_dataset` (e.g. ``polygon_size=5``
            for charts with detail finer than a downsampled pixel).

    Returns:
        The store's path.
    """
    folder = Path(folder)
    write_scene_files(
        folder / "scenes", count, height=height, width=width, seed=seed, **scene_options
    )
    store = folder / "store.zarr"
    prepare_store(
        folder / "scenes",
        store,
        features=list(TINY_FEATURES),
        downsample=downsample,
        progress=False,
    )
    return store
