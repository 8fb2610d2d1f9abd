"""The AutoICE upload file ``upload_package.nc`` (format reference §4) and its checker.

Structure, as the organisers' ``test_upload.ipynb`` writes it: one ``uint8``
variable per scene and chart named ``f"{scene_name}_{chart}"``, with its own
dimensions ``"{name}_dim0"`` and ``"{name}_dim1"`` (80 m, the full shape of the
ready-to-train scene), class indices (SIC 0..10, SOD 0..5, FLOE 0..6), no attributes
or coordinates, NetCDF-4 written by the netCDF4 engine with ``zlib`` at
``complevel`` 1. For the 20 official test scenes that is 60 variables.

:class:`UploadPackageWriter` appends one scene at a time to a temporary file beside
the target (``to_netcdf(mode="a")``), so memory holds one scene's three charts
(about 3 x 26 MB for a 5000 x 5200 scene), never the whole package, and the target
appears only when :meth:`~UploadPackageWriter.close` succeeds.

Masked pixels: the organisers' notebook writes the argmax everywhere, so the file
has no 255. The scores ignore predictions where the reference is masked, so the
value written there never changes a score, but the server's handling of values
outside the class range is not public; the writer therefore replaces 255 by
``fill_masked`` (0, open water, by default) and the checker rejects 255 unless told
otherwise.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import netCDF4
import numpy as np
import xarray as xr

from icecontext.data.io.format import (
    CHART_FILL,
    CHARTS,
    N_CLASSES,
    OFFICIAL_TEST_SCENES,
    SCENE_NAME_RE,
)
from icecontext.errors import DataError
from icecontext.inference.exports.output import ExportError, export_target

UPLOAD_FILE_NAME = "upload_package.nc"
COMPLEVEL = 1

_VARIABLE_RE = re.compile(r"^(?P<scene>\d{8}T\d{6}_(?:dmi|cis))_(?P<chart>SIC|SOD|FLOE)$")


def variable_name(scene_name: str, chart: str) -> str:
    """Return the upload variable name of a scene's chart (``20180124T194759_dmi_SIC``)."""
    return f"{scene_name}_{chart}"


def upload_dims(name: str) -> tuple[str, str]:
    """Return the two dimension names of an upload variable."""
    return f"{name}_dim0", f"{name}_dim1"


def _prepare(
    scene_name: str, charts: Mapping[str, Any], fill_masked: int | None
) -> dict[str, np.ndarray]:
    if not SCENE_NAME_RE.match(scene_name):
        raise DataError(
            f"upload scene name '{scene_name}' must be the 19-character "
            "YYYYMMDDThhmmss_dmi|cis name (the first 19 characters of the _prep.nc file)"
        )
    missing = [c for c in CHARTS if c not in charts]
    if missing:
        raise DataError(f"scene {scene_name}: charts {missing} missing; the upload needs all three")
    out = {}
    shape = None
    for chart in CHARTS:
        arr = np.asarray(charts[chart])
        if arr.ndim != 2:
            raise DataError(f"scene {scene_name}: '{chart}' must be 2-D (H, W), got {arr.shape}")
        if shape is not None and arr.shape != shape:
            raise DataError(
                f"scene {scene_name}: '{chart}' has shape {arr.shape}, SIC has {shape}; "
                "all charts must have the scene's 80 m shape"
            )
        shape = arr.shape
        if arr.dtype.kind not in "ui":
            raise DataError(
                f"scene {scene_name}: '{chart}' has dtype {arr.dtype}; expected class indices"
            )
        n = N_CLASSES[chart]
        masked = arr == CHART_FILL
        bad = ~masked & ((arr < 0) | (arr >= n))
        if bad.any():
            raise DataError(
                f"scene {scene_name}: '{chart}' holds values {np.unique(arr[bad])[:10].tolist()}; "
                f"expected 0..{n - 1} (or {CHART_FILL} for masked)"
            )
        values = arr.astype(np.uint8)
        if fill_masked is not None:
            if not 0 <= fill_masked < n:
                raise DataError(f"fill_masked={fill_masked} is not a valid '{chart}' class")
            values[masked] = fill_masked
        out[chart] = values
    return out


class _Aborted(Exception):
    """Internal signal that discards a package being written."""


class UploadPackageWriter:
    """Write ``upload_package.nc`` one scene at a time (atomically).

    Args:
        path: Target file (conventionally ``upload_package.nc``).
        fill_masked: Class written where a prediction is 255 (masked); ``None`` keeps
            255 (not recommended, see module docstring).
        overwrite: Replace an existing target; otherwise an existing file is an error.

    Example:
        >>> with UploadPackageWriter(out / "upload_package.nc") as upload:  # doctest: +SKIP
        ...     for name, charts in predictions:
        ...         upload.add(name, charts)
    """

    def __init__(
        self, path: str | os.PathLike[str], *, fill_masked: int | None = 0, overwrite: bool = True
    ):
        self.path = Path(path)
        self.fill_masked = fill_masked
        if self.path.exists() and not overwrite:
            raise ExportError(f"{self.path}: exists (pass overwrite=True to replace it)")
        self._stack = contextlib.ExitStack()
        self._tmp: Path = self._stack.enter_context(export_target(self.path, "upload package"))
        self._scenes: dict[str, tuple[int, int]] = {}
        self._closed = False

    @property
    def pending_path(self) -> Path:
        """The temporary file being written (becomes :attr:`path` on :meth:`close`).

        Check it with :func:`check_upload_package` before closing, so a package that
        fails the check never replaces the target.
        """
        return self._tmp

    @property
    def scenes(self) -> dict[str, tuple[int, int]]:
        """Scenes added so far -> their ``(H, W)``."""
        return dict(self._scenes)

    def add(self, scene_name: str, charts: Mapping[str, Any]) -> None:
        """Append one scene's SIC/SOD/FLOE class arrays to the package.

        Args:
            scene_name: 19-character scene name (``20180124T194759_dmi``).
            charts: ``{"SIC", "SOD", "FLOE"}`` -> ``(H, W)`` integer classes at 80 m.

        Raises:
            DataError: Bad name, missing chart, shape or values; a scene added twice.
        """
        if self._closed:
            raise DataError(f"{self.path}: the upload package is already closed")
        if scene_name in self._scenes:
            raise DataError(f"scene {scene_name} was already added to {self.path}")
        values = _prepare(scene_name, charts, self.fill_masked)
        ds = xr.Dataset()
        for chart, arr in values.items():
            name = variable_name(scene_name, chart)
            ds[name] = xr.DataArray(arr, dims=upload_dims(name))
        encoding = {
            name: {"zlib": True, "complevel": COMPLEVEL, "_FillValue": None}
            for name in ds.data_vars
        }
        mode: Literal["w", "a"] = "a" if self._scenes else "w"
        try:
            ds.to_netcdf(
                self._tmp, mode=mode, format="NETCDF4", engine="netcdf4", encoding=encoding
            )
        except OSError as exc:
            raise ExportError(
                f"{self.path}: cannot write the upload package in {self.path.parent} "
                f"({exc.strerror or exc})"
            ) from exc
        self._scenes[scene_name] = values["SIC"].shape

    def close(self) -> Path:
        """Finish the package: the target file appears now.

        Raises:
            DataError: If no scene was added (nothing is written, the target is untouched).
        """
        if self._closed:
            return self.path
        if not self._scenes:
            self.abort()
            raise DataError(f"{self.path}: no scene was added; no upload package written")
        self._closed = True
        self._stack.close()
        return self.path

    def abort(self) -> None:
        """Discard everything written so far (the target is left untouched)."""
        if self._closed:
            return
        self._closed = True
        # Closing the stack as if an exception occurred removes the temporary file.
        with contextlib.suppress(_Aborted):
            self._stack.__exit__(_Aborted, _Aborted(), None)

    def __enter__(self) -> UploadPackageWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_upload_package(
    path: str | os.PathLike[str],
    predictions: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    expected_scenes: Iterable[str] | Literal["official"] | None = None,
    fill_masked: int | None = 0,
) -> Path:
    """Write ``upload_package.nc`` from ``(scene_name, charts)`` pairs, one at a time.

    ``predictions`` may be a generator that predicts each scene on demand, so only
    one scene is in memory. With ``expected_scenes`` (names, or ``"official"`` for the
    20 final test scenes) the written file is checked with :func:`check_upload_package`
    before it replaces the target.

    Returns:
        The written path.

    Raises:
        DataError: Bad predictions, or the package fails the structure check (then no
            file is written).
    """
    if expected_scenes == "official":
        expected_scenes = OFFICIAL_TEST_SCENES
    expected = list(expected_scenes) if expected_scenes is not None else None
    with UploadPackageWriter(path, fill_masked=fill_masked) as writer:
        for scene_name, charts in predictions:
            writer.add(scene_name, charts)
        if expected is not None:
            check_upload_package(writer.pending_path, expected_scenes=expected, label=str(path))
    return Path(path)


def check_upload_package(
    path: str | os.PathLike[str],
    expected_scenes: Iterable[str] | Literal["official"] | None = None,
    shapes: Mapping[str, tuple[int, int]] | None = None,
    *,
    allow_masked: bool = False,
    label: str | None = None,
) -> dict[str, tuple[int, int]]:
    """Check that a file has the structure of the AutoICE upload file (§4).

    Checks: NetCDF-4 readable; every variable is named ``{scene}_{chart}`` with a
    valid scene name; each scene has exactly SIC, SOD and FLOE; dimensions are the
    variable's own ``_dim0``/``_dim1``; dtype ``uint8``; values within the chart's
    classes (255 only with ``allow_masked``); the three charts of a scene share one
    shape; no coordinates; the scenes are exactly ``expected_scenes`` and the shapes
    equal ``shapes`` when given. All problems are reported together.

    Args:
        path: The file.
        expected_scenes: Scene names, or ``"official"`` for the 20 final test scenes.
        shapes: Scene name -> expected ``(sar_lines, sar_samples)``.
        allow_masked: Accept 255 in the charts.
        label: Name used in messages instead of ``path``.

    Returns:
        Scene name -> ``(H, W)``.

    Raises:
        DataError: Listing every problem found (variable names included).
    """
    where = label or str(path)
    if expected_scenes == "official":
        expected_scenes = OFFICIAL_TEST_SCENES
    problems: list[str] = []
    found: dict[str, dict[str, tuple[int, int]]] = {}
    with _open_upload(path, where, problems) as ds:
        if ds.coords:
            problems.append(f"has coordinates {sorted(map(str, ds.coords))}; expected none")
        for name in sorted(map(str, ds.data_vars)):
            problems += _variable_problems(name, ds[name], allow_masked, found)
    problems += _scene_problems(found, shapes)
    if expected_scenes is not None:
        problems += _scene_list_problems(found, set(expected_scenes))
    if not found and not problems:
        problems.append("holds no scene variables")
    if problems:
        listing = "\n  - ".join(problems)
        raise DataError(
            f"{where}: not a valid AutoICE upload package ({len(problems)} problem(s)):"
            f"\n  - {listing}"
        )
    return {scene: next(iter(charts.values())) for scene, charts in found.items()}


def _open_upload(path: str | os.PathLike[str], where: str, problems: list[str]) -> xr.Dataset:
    """Open an upload file raw (no decoding); a format other than NetCDF-4 is a problem.

    Raises:
        DataError: The file cannot be read as NetCDF-4 at all.
    """
    try:
        with netCDF4.Dataset(path) as nc:
            if nc.data_model != "NETCDF4":
                problems.append(f"file format is {nc.data_model}, expected NETCDF4")
        return xr.open_dataset(path, engine="netcdf4", mask_and_scale=False, cache=False)
    except Exception as exc:  # netCDF4 raises OSError, RuntimeError, FileNotFoundError...
        raise DataError(f"{where}: cannot be read as NetCDF-4 ({exc})") from exc


def _variable_problems(
    name: str,
    var: xr.DataArray,
    allow_masked: bool,
    found: dict[str, dict[str, tuple[int, int]]],
) -> list[str]:
    """Return the problems of one variable: name, dimensions, dtype, values.

    A 2-D ``{scene}_{chart}`` variable is recorded in ``found`` with its shape.
    """
    m = _VARIABLE_RE.match(name)
    if not m:
        return [
            f"variable '{name}': name is not '{{YYYYMMDDThhmmss}}_{{dmi|cis}}_{{SIC|SOD|FLOE}}'"
        ]
    scene, chart = m["scene"], m["chart"]
    problems = []
    if var.dims != upload_dims(name):
        problems.append(f"variable '{name}': dimensions {var.dims}, expected {upload_dims(name)}")
    if var.dtype != np.uint8:
        problems.append(f"variable '{name}': dtype {var.dtype}, expected uint8")
    if var.ndim != 2:
        problems.append(f"variable '{name}': {var.ndim} dimensions, expected 2")
        return problems
    values = np.asarray(var.values)
    n = N_CLASSES[chart]
    bad = values >= n
    if allow_masked:
        bad &= values != CHART_FILL
    if values.dtype.kind == "i":
        bad |= values < 0
    if bad.any():
        shown = np.unique(values[bad])[:10].tolist()
        problems.append(f"variable '{name}': values {shown} outside the {chart} classes 0..{n - 1}")
    height, width = var.shape
    found.setdefault(scene, {})[chart] = (height, width)
    return problems


def _scene_problems(
    found: Mapping[str, Mapping[str, tuple[int, int]]],
    shapes: Mapping[str, tuple[int, int]] | None,
) -> list[str]:
    """Missing charts, charts of different shapes, shapes other than ``shapes``."""
    problems = []
    for scene, charts in sorted(found.items()):
        missing = [c for c in CHARTS if c not in charts]
        if missing:
            problems.append(f"scene {scene}: charts {missing} missing")
        if len(set(charts.values())) > 1:
            problems.append(f"scene {scene}: charts have different shapes {dict(charts)}")
        if shapes is not None and scene in shapes:
            want = tuple(shapes[scene])
            for chart, got in charts.items():
                if got != want:
                    problems.append(
                        f"variable '{scene}_{chart}': shape {got}, expected the scene's {want}"
                    )
    return problems


def _scene_list_problems(found: Mapping[str, object], expected: set[str]) -> list[str]:
    """Expected scenes that are missing, scenes that were not expected."""
    problems = []
    missing = sorted(expected - set(found))
    extra = sorted(set(found) - expected)
    if missing:
        problems.append(f"scenes missing: {missing}")
    if extra:
        problems.append(f"unexpected scenes: {extra}")
    return problems
