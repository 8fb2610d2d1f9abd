"""Open, validate and write AI4Arctic scenes.

:func:`open_scene` returns an :class:`xarray.Dataset` laid out exactly like a
ready-to-train (``_prep.nc``) file, whatever was on disk:

* a ready-to-train file is opened as it is (values are never masked or rescaled on
  read: charts stay ``uint8`` with 255 = masked, inputs stay z-scored);
* a test file is paired with its ``_prep_reference.nc`` labels when one lies beside it;
* a raw 40 m file is converted on the fly (polygon chart -> SIC/SOD/FLOE, 40 m -> 80 m)
  by :mod:`icecontext.data.io.raw`.

:func:`validate_scene` checks the structure against :mod:`icecontext.data.io.format` and
raises :class:`~icecontext.errors.SceneFormatError` naming the file and the variable.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import xarray as xr

from icecontext.atomic import atomic_path
from icecontext.data.io.format import (
    AMSR_DIMS,
    AMSR_FACTOR,
    CHART_FILL,
    CHARTS,
    N_CLASSES,
    PREP_SUFFIX,
    R2T_VARIABLES,
    REFERENCE_SUFFIX,
    SAR_DIMS,
    SAR_VARIABLES,
    TIEPOINT_SHAPE,
    amsr_grid_shape,
    scene_name_from_file,
)
from icecontext.errors import DataError, SceneFormatError

Engine = Literal["netcdf4", "h5netcdf"]
DEFAULT_ENGINE: Engine = "netcdf4"


def is_raw_dataset(ds: xr.Dataset) -> bool:
    """Return whether an opened dataset is a raw 40 m AI4Arctic file."""
    return "sar_grid_points" in ds.dims or "polygon_icechart" in ds.variables


def reference_path_for(path: str | os.PathLike[str]) -> Path:
    """Return where the test labels of a ``_prep.nc`` file would be."""
    path = Path(path)
    name = path.name
    stem = name[: -len(PREP_SUFFIX)] if name.endswith(PREP_SUFFIX) else path.stem
    return path.with_name(stem + REFERENCE_SUFFIX)


def _open_raw_netcdf(path: Path, engine: Engine) -> xr.Dataset:
    if not path.exists():
        raise SceneFormatError(path, None, "file does not exist")
    if path.is_dir():
        raise SceneFormatError(path, None, "is a folder, expected a NetCDF file")
    try:
        return xr.open_dataset(
            path, engine=engine, mask_and_scale=False, decode_times=False, cache=False
        )
    except Exception as exc:  # netCDF4/HDF5 raise OSError, RuntimeError, ValueError...
        raise SceneFormatError(
            path, None, f"cannot be read as NetCDF-4/HDF5 (unreadable or truncated file): {exc}"
        ) from exc


def open_scene(
    path: str | os.PathLike[str],
    *,
    reference: str | os.PathLike[str] | Literal["auto"] | None = "auto",
    validate: bool = True,
    require_labels: bool = False,
    engine: Engine = DEFAULT_ENGINE,
) -> xr.Dataset:
    """Open one scene as a ready-to-train dataset.

    Args:
        path: A ``_prep.nc`` file, a test ``_prep.nc`` file, or a raw 40 m file.
        reference: Labels file to merge (``SIC``/``SOD``/``FLOE`` replace the scene's).
            ``"auto"`` uses ``<scene>_prep_reference.nc`` when it exists beside the
            scene; ``None`` never merges.
        validate: Check the structure (see :func:`validate_scene`).
        require_labels: With ``validate``, also fail when every chart pixel is masked.
        engine: xarray backend used to read the file.

    Returns:
        The scene, lazily loaded. ``ds.encoding["source"]`` is the file path and
        ``ds.attrs["scene_name"]`` the 19-character scene name.

    Raises:
        SceneFormatError: If the file is unreadable or malformed (the message names
            the file and the variable).
    """
    path = Path(path)
    ds = _open_raw_netcdf(path, engine)
    if is_raw_dataset(ds):
        from icecontext.data.io.raw import raw_dataset_to_r2t  # raw support is optional work

        ds = raw_dataset_to_r2t(ds, source=path)
    ref_path: Path | None
    if reference == "auto":
        candidate = reference_path_for(path)
        ref_path = candidate if candidate.exists() else None
    else:
        ref_path = None if reference is None else Path(reference)
    if ref_path is not None:
        ds = merge_reference(ds, ref_path, engine=engine)
    ds.encoding["source"] = str(path)
    ds.attrs.setdefault("scene_name", _scene_name(ds, path))
    if validate:
        validate_scene(ds, path, require_labels=require_labels)
    return ds


def _scene_name(ds: xr.Dataset, path: Path) -> str:
    # The file name wins (the upload format keys scenes by it); the scene_id attribute
    # names raw-converted datasets, whose file names follow the raw convention.
    for candidate in (path.name, str(ds.attrs.get("scene_id", ""))):
        try:
            return scene_name_from_file(candidate)
        except ValueError:
            continue
    return path.name.removesuffix(".nc")


def merge_reference(ds: xr.Dataset, ref_path: Path, engine: Engine = DEFAULT_ENGINE) -> xr.Dataset:
    """Replace the charts of a test scene by those of its ``_prep_reference.nc`` file.

    Raises:
        SceneFormatError: If the labels file lacks a chart or its shape differs.
    """
    ref = _open_raw_netcdf(ref_path, engine)
    out = ds.copy()
    for chart in CHARTS:
        if chart not in ref.variables:
            raise SceneFormatError(ref_path, chart, "missing from the reference labels file")
        var = ref[chart]
        if var.shape != tuple(ds.sizes[d] for d in SAR_DIMS):
            raise SceneFormatError(
                ref_path,
                chart,
                f"shape {var.shape} differs from the scene's SAR grid "
                f"{tuple(ds.sizes[d] for d in SAR_DIMS)}",
            )
        out[chart] = xr.DataArray(var.values, dims=SAR_DIMS, attrs=dict(var.attrs))
    out.encoding["reference"] = str(ref_path)
    return out


def validate_scene(
    ds: xr.Dataset,
    path: str | os.PathLike[str] | None = None,
    *,
    require_labels: bool = False,
    check_values: bool = True,
) -> None:
    """Check a dataset against the ready-to-train format.

    Checks, in order: every one of the 29 variables is present with the right
    dimensions and dtype; the SAR-grid variables share one shape; the 2 km grid is
    ``floor(H/25) x floor(W/25)``; the tie-point grid is 21 x 21; with
    ``check_values``, chart values are valid class indices or 255 and the scene has
    valid SAR pixels; with ``require_labels``, at least one chart pixel is unmasked.

    Args:
        ds: The dataset (as :func:`open_scene` returns it).
        path: File named in error messages (defaults to ``ds.encoding["source"]``).
        require_labels: Fail when every chart pixel is 255.
        check_values: Read the charts and HH to check values (reads data).

    Raises:
        SceneFormatError: On the first problem found.
    """
    where = Path(path) if path is not None else Path(ds.encoding.get("source", "<dataset>"))
    _check_variables(ds, where)
    _check_grids(ds, where)
    if not check_values:
        return
    any_label = False
    for chart in CHARTS:
        any_label |= _check_chart_values(ds, where, chart)
    hh = _read_values(ds, where, SAR_VARIABLES[0])
    if not np.any((hh != 0) & np.isfinite(hh)):
        raise SceneFormatError(
            where, SAR_VARIABLES[0], "all pixels are masked (no valid SAR data in the scene)"
        )
    if require_labels and not any_label:
        raise SceneFormatError(
            where, "SIC", "all chart pixels are masked (255): the scene has no labels to train on"
        )


def _check_variables(ds: xr.Dataset, where: Path) -> None:
    """Every format variable is present with its dimensions and dtype."""
    for spec in R2T_VARIABLES:
        if spec.name not in ds.variables:
            raise SceneFormatError(where, spec.name, "missing (required by the AI4Arctic format)")
        var = ds[spec.name]
        if var.dims != spec.dims:
            raise SceneFormatError(
                where, spec.name, f"has dimensions {var.dims}, expected {spec.dims}"
            )
        if var.dtype != spec.dtype:
            raise SceneFormatError(
                where, spec.name, f"has dtype {var.dtype}, expected {spec.dtype}"
            )


def _check_grids(ds: xr.Dataset, where: Path) -> None:
    """The SAR grid is not empty, the 2 km grid fits it and the tie points are 21 x 21."""
    height, width = (ds.sizes[d] for d in SAR_DIMS)
    if height < 1 or width < 1:
        raise SceneFormatError(where, SAR_VARIABLES[0], f"empty SAR grid {height} x {width}")
    expected_2km = amsr_grid_shape((height, width), AMSR_FACTOR)
    actual_2km = tuple(ds.sizes[d] for d in AMSR_DIMS)
    if actual_2km != expected_2km:
        raise SceneFormatError(
            where,
            "btemp_6_9h",
            f"2 km grid is {actual_2km[0]} x {actual_2km[1]}, expected floor(H/25) x floor(W/25) "
            f"= {expected_2km[0]} x {expected_2km[1]} for the {height} x {width} SAR grid",
        )
    lat = ds["sar_grid2d_latitude"]
    if lat.shape != TIEPOINT_SHAPE:
        raise SceneFormatError(
            where,
            "sar_grid2d_latitude",
            f"tie-point grid is {lat.shape}, expected {TIEPOINT_SHAPE}",
        )


def _read_values(ds: xr.Dataset, where: Path, name: str) -> np.ndarray:
    """The values of a variable; a read failure is a SceneFormatError naming it."""
    try:
        return np.asarray(ds[name].values)
    except Exception as exc:
        raise SceneFormatError(
            where, name, f"data cannot be read (truncated file?): {exc}"
        ) from exc


def _check_chart_values(ds: xr.Dataset, where: Path, chart: str) -> bool:
    """Check that a chart holds class indices or 255; return whether any pixel is labelled."""
    present = np.unique(_read_values(ds, where, chart))
    bad = present[(present >= N_CLASSES[chart]) & (present != CHART_FILL)]
    if bad.size:
        raise SceneFormatError(
            where,
            chart,
            f"holds values {bad.tolist()}; expected class indices 0..{N_CLASSES[chart] - 1} "
            f"or {CHART_FILL} (masked)",
        )
    return bool((present != CHART_FILL).any())


def valid_sar_mask(ds: xr.Dataset) -> np.ndarray:
    """Return the boolean mask of pixels with SAR data (the format's ``HH != 0`` rule)."""
    hh = np.asarray(ds[SAR_VARIABLES[0]].values)
    return (hh != 0) & np.isfinite(hh)


def find_scenes(folder: str | os.PathLike[str], pattern: str = "*_prep.nc") -> list[Path]:
    """List the scene files of a folder (labels files ``*_prep_reference.nc`` excluded).

    Raises:
        DataError: If the folder does not exist or holds no scene.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: scene folder does not exist")
    files = sorted(p for p in folder.glob(pattern) if not p.name.endswith(REFERENCE_SUFFIX))
    if not files:
        raise DataError(f"{folder}: no scene files matching '{pattern}'")
    return files


def scene_encoding(ds: xr.Dataset, complevel: int = 1) -> dict[str, dict[str, object]]:
    """Return the NetCDF encoding used to write ready-to-train files.

    Variables are zlib-compressed with shuffle; no ``_FillValue`` is written, so charts
    read back as plain ``uint8`` (as the published files do).
    """
    enc: dict[str, dict[str, object]] = {}
    for name in ds.data_vars:
        enc[str(name)] = {
            "zlib": complevel > 0,
            "complevel": complevel,
            "shuffle": True,
            "_FillValue": None,
        }
    return enc


def write_scene(
    ds: xr.Dataset,
    path: str | os.PathLike[str],
    *,
    variables: Iterable[str] | None = None,
    complevel: int = 1,
) -> Path:
    """Write a ready-to-train dataset to NetCDF-4 atomically.

    Args:
        ds: Dataset in the ready-to-train layout.
        path: Target file.
        variables: Subset to write (e.g. the charts for a ``_prep_reference.nc``).
        complevel: zlib level (0 = uncompressed).

    Returns:
        The written path.
    """
    if variables is not None:
        ds = ds[list(variables)]
    ds = ds.copy()
    ds.attrs.pop("scene_name", None)
    ds.encoding.pop("source", None)
    with atomic_path(path) as tmp:
        ds.to_netcdf(
            tmp, format="NETCDF4", engine="netcdf4", encoding=scene_encoding(ds, complevel)
        )
    return Path(path)
