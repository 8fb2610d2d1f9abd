"""A scene source that reads windows from a NetCDF file in row strips, for bounded memory.

:class:`~icecontext.data.loader.sources.NetCDFSource` loads (and downsamples) a whole scene on
first use: about 0.1 GB per SAR-grid channel of a 5000 x 5200 scene, which grows with
the scene. Full-scene prediction reads every pixel once, tile by tile, so
:class:`StreamingNetCDFSource` reads each tile's window from the lazily opened file
instead and applies the *same* per-window functions the loaded source applies to the
whole scene (:func:`~icecontext.data.io.geometry.block_mean` over SAR-valid pixels,
:func:`~icecontext.data.io.geometry.block_any`, :func:`~icecontext.data.io.geometry.block_chart`),
so both serve identical values (tested). The 2 km channels (a few hundred pixels a
side) and the tie points are loaded whole.

A window of the source grid at downsampling ``K`` covers 80 m rows
``[K r0, min(K r1, H))``; the block functions see whole ``K`` x ``K`` blocks exactly as
in the whole-scene computation, and a partial last block the same partial block.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from icecontext.data.io.format import (
    AMSR_DIMS,
    CHARTS,
    INPUT_VARIABLES,
    LATLON_VARIABLES,
    N_CLASSES,
    SAR_DIMS,
    SAR_VARIABLES,
)
from icecontext.data.io.geometry import Upsampling, block_any, block_chart, block_mean
from icecontext.data.io.layers import MASKED_SAR_INPUTS, SceneLayers, file_inputs
from icecontext.data.loader.sources import SceneSource
from icecontext.errors import SceneFormatError


def _full_slices(rows: slice, cols: slice, k: int, full: tuple[int, int]) -> tuple[slice, slice]:
    """80 m slices covered by source-grid slices at downsampling ``k``."""
    return (
        slice(rows.start * k, min(rows.stop * k, full[0])),
        slice(cols.start * k, min(cols.stop * k, full[1])),
    )


class _WindowReader:
    """Reads 80 m windows of a lazily opened dataset through a cache of row strips.

    NetCDF variables are compressed in chunks that may span the whole image (files
    written with default chunking), so every window read would decompress them again.
    Reads are therefore served from full-width strips of at least ``strip_rows`` rows
    (the last ``keep`` per variable are kept; the predictor reads tiles row by row from
    one thread, so one suffices): each chunk is decompressed once per tile row. Memory:
    ``keep`` strips per variable, bounded by the tile height and the scene width, not
    the scene height. One lock: netCDF4 is not thread-safe.
    """

    def __init__(
        self,
        ds: xr.Dataset,
        k: int,
        full_shape: tuple[int, int],
        strip_rows: int = 1024,
        keep: int = 1,
    ):
        self.ds = ds
        self.keep = max(1, keep)
        self.k = k
        self.full = full_shape
        self.strip_rows = strip_rows
        self.lock = threading.Lock()
        self._strips: dict[str, list[tuple[int, int, np.ndarray]]] = {}

    def read(self, variable: str, rows: slice, cols: slice) -> np.ndarray:
        r, c = _full_slices(rows, cols, self.k, self.full)
        with self.lock:
            if variable not in self._strips:
                _limit_chunk_cache(self.ds[variable])
            strips = self._strips.setdefault(variable, [])
            for r0, r1, data in strips:
                if r0 <= r.start and r.stop <= r1:
                    return data[r.start - r0 : r.stop - r0, c]
            stop = min(self.full[0], max(r.stop, r.start + self.strip_rows))
            data = np.asarray(self.ds[variable][r.start : stop, :].values)
            strips.append((r.start, stop, data))
            del strips[: -self.keep]
            return data[: r.stop - r.start, c]

    def valid80(self, rows: slice, cols: slice) -> np.ndarray:
        hh = self.read(SAR_VARIABLES[0], rows, cols)
        return (hh != 0) & np.isfinite(hh)

    def clear(self) -> None:
        """Drop the cached strips."""
        with self.lock:
            self._strips.clear()


def _limit_chunk_cache(array: xr.DataArray) -> None:
    """Let the HDF5 library cache no decompressed chunks of this variable.

    netCDF-C gives every variable a 64 MB chunk cache. A full-width strip read fills it
    with as many chunks as fit, and default chunks are about a third of the scene on
    a side (1667 x 1734 float32 = 11.6 MB at 5000 x 5200), so the cache grew with the
    scene: about 200 MB of the peak memory of a 5000 x 5200 prediction. The strips
    are cached here instead, and a chunk straddling two strips is decompressed twice.
    Reached through xarray's lazy-array wrappers; a back-end without them is left as is.
    """
    data: Any = array.variable._data
    for _ in range(8):
        if hasattr(data, "get_array"):
            # netCDF-C is not thread-safe: hold xarray's lock for the file, as its reads do
            lock = getattr(getattr(data, "datastore", None), "lock", None)
            quiet = contextlib.suppress(AttributeError, RuntimeError)
            with lock or contextlib.nullcontext(), quiet:
                data.get_array(needs_lock=False).set_var_chunk_cache(size=0, nelems=0)
            return
        data = getattr(data, "array", None)
        if data is None:
            return


def _as_slices(selection: tuple[Any, ...], n_lead: int) -> tuple[Any, ...]:
    for s in selection[n_lead:]:
        if not isinstance(s, slice) or s.step not in (None, 1) or s.start is None:
            raise TypeError(f"streaming reads take explicit unit-step slices, got {selection}")
    return selection


class _LazySar:
    """``(n_sar, H', W')`` channel stack read per window (``block_mean`` as ``scene_layers``)."""

    def __init__(self, reader: _WindowReader, variables: Sequence[str], shape: tuple[int, int]):
        self.reader = reader
        self.variables = tuple(variables)
        self.shape = (len(self.variables), *shape)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, selection: tuple[slice, slice, slice]) -> np.ndarray:
        channels, rows, cols = _as_slices(selection, 1)
        chosen = self.variables[channels]
        valid = None
        if any(v in MASKED_SAR_INPUTS for v in chosen):
            valid = self.reader.valid80(rows, cols)
        planes = []
        for v in chosen:
            values = np.nan_to_num(
                np.asarray(self.reader.read(v, rows, cols), dtype=np.float32), nan=0.0
            )
            mask = valid if v in MASKED_SAR_INPUTS else None
            planes.append(block_mean(values, self.reader.k, mask))
        return np.stack(planes)


class _LazyValid:
    """``(H', W')`` SAR-valid mask read per window (``block_any`` of the 80 m rule)."""

    def __init__(self, reader: _WindowReader, shape: tuple[int, int]):
        self.reader = reader
        self.shape = shape
        self.dtype = np.dtype(bool)

    def __getitem__(self, selection: tuple[slice, slice]) -> np.ndarray:
        rows, cols = _as_slices(selection, 0)
        return block_any(self.reader.valid80(rows, cols), self.reader.k)


class _LazyCharts:
    """``(3, H', W')`` uint8 charts read per window (``block_chart``)."""

    def __init__(self, reader: _WindowReader, shape: tuple[int, int]):
        self.reader = reader
        self.shape = (len(CHARTS), *shape)
        self.dtype = np.dtype(np.uint8)

    def __getitem__(self, selection: tuple[slice, slice, slice]) -> np.ndarray:
        channels, rows, cols = _as_slices(selection, 1)
        planes = [
            block_chart(
                np.asarray(self.reader.read(c, rows, cols), dtype=np.uint8),
                self.reader.k,
                N_CLASSES[c],
            )
            for c in CHARTS[channels]
        ]
        return np.stack(planes).astype(np.uint8)


class StreamingNetCDFSource(SceneSource):
    """A ready-to-train ``_prep.nc`` scene read window by window (memory: one window).

    Only the variables the features need must be present (plus HH for the valid mask);
    a missing one is reported with the file and variable named.

    Args:
        path: ``_prep.nc`` file (a test file is paired with ``_prep_reference.nc``
            beside it when present, as :func:`~icecontext.data.io.scene.open_scene` does).
        features: Channels to serve (file variables; derived channels are computed).
        downsample: ``K``.
        upsampling: 2 km upsampling mode.
        needed_by: Named in the missing-variable message (e.g. the checkpoint).
        strip_rows: Minimum rows (80 m) of the cached full-width strips.

    Raises:
        SceneFormatError: If the file cannot be opened or lacks a needed variable.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        features: Sequence[str] | None = None,
        downsample: int = 1,
        upsampling: Upsampling = "nearest",
        needed_by: str = "",
        strip_rows: int = 1024,
    ) -> None:
        from icecontext.data.io.scene import open_scene

        self.path = Path(path)
        ds = open_scene(self.path, validate=False)
        self._ds: xr.Dataset | None = ds
        load = tuple(INPUT_VARIABLES if features is None else features)
        sar_vars, coarse_vars = file_inputs(load)
        why = f"needed by {needed_by}" if needed_by else "needed by the requested features"
        for v in (SAR_VARIABLES[0], *sar_vars, *coarse_vars, *LATLON_VARIABLES):
            if v not in ds.variables:
                ds.close()
                raise SceneFormatError(self.path, v, f"missing from the scene ({why})")
        for v in (SAR_VARIABLES[0], *sar_vars):
            if ds[v].dims != SAR_DIMS:
                ds.close()
                raise SceneFormatError(
                    self.path, v, f"has dimensions {ds[v].dims}, expected {SAR_DIMS}"
                )
        full_shape = (int(ds.sizes[SAR_DIMS[0]]), int(ds.sizes[SAR_DIMS[1]]))
        coarse_shape = (
            (int(ds.sizes[AMSR_DIMS[0]]), int(ds.sizes[AMSR_DIMS[1]]))
            if all(d in ds.sizes for d in AMSR_DIMS)
            else (0, 0)
        )
        super().__init__(
            name=str(ds.attrs["scene_name"]),
            full_shape=full_shape,
            downsample=downsample,
            coarse_shape=coarse_shape,
            sar_variables=sar_vars,
            coarse_variables=coarse_vars,
            upsampling=upsampling,
            where=str(self.path),
        )
        reader = _WindowReader(ds, self.downsample, self.full_shape, strip_rows)
        self._reader = reader
        self._data = SceneLayers(
            name=self.name,
            full_shape=self.full_shape,
            downsample=self.downsample,
            sar_variables=sar_vars,
            coarse_variables=coarse_vars,
            sar=_LazySar(reader, sar_vars, self.shape) if sar_vars else None,
            coarse=(
                np.stack([np.asarray(ds[v].values, dtype=np.float32) for v in coarse_vars])
                if coarse_vars
                else None
            ),
            charts=_LazyCharts(reader, self.shape),
            valid=_LazyValid(reader, self.shape),
            tiepoints=np.stack(
                [np.asarray(ds[v].values, dtype=np.float64) for v in LATLON_VARIABLES]
            ),
            block_counts=None,
            coarse_shape=self.coarse_shape,
        )

    @property
    def dataset(self) -> xr.Dataset:
        """The lazily opened scene (for the exports: grid, tie points, HH)."""
        assert self._ds is not None, "source closed"
        return self._ds

    def _layers(self) -> SceneLayers:
        return self._data

    def close(self) -> None:
        """Close the file."""
        self._reader.clear()
        if self._ds is not None:
            self._ds.close()
            self._ds = None

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("StreamingNetCDFSource holds an open file; it is not picklable")
