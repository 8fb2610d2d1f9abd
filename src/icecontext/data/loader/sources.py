"""Scene sources: windows of inputs, charts and masks from a store or straight from NetCDF.

A :class:`SceneSource` serves any :data:`~icecontext.data.io.geometry.Window` of one scene:

* :meth:`SceneSource.read_inputs` -> float32 ``(C, h, w)`` in the order of the
  requested channels: SAR-grid channels as stored, AMSR2/ERA5 upsampled from their
  exact 2 km window by :func:`~icecontext.data.io.geometry.read_coarse_window`, derived
  channels (``month``, ``latlon``) computed for the window;
* :meth:`SceneSource.read_charts` -> ``{"SIC", "SOD", "FLOE"}`` uint8 ``(h, w)``;
* :meth:`SceneSource.valid_mask` -> bool ``(h, w)`` (SAR data present);
* :meth:`SceneSource.read_full_charts` -> the original **80 m** charts of a window of
  the 80 m grid, whatever the source's downsampling (what validation and evaluation
  score against; :func:`full_resolution_charts` accepts any source-like object).

Windows may reach past the scene: outside it inputs are 0 (the format's no-data value),
charts 255 and the valid mask false. That is the padding rule for patches larger than a
scene and for tiles at a scene's edge.

Three back-ends share this class and hence one geometry:

* :class:`ZarrSource`: a scene group of a prepared store (what training uses);
* :class:`NetCDFSource`: a ``_prep.nc`` (or raw) file, loaded into memory on first use
  and downsampled with the same code as ``prepare`` (small experiments, no store);
* :class:`ArraySource`: :class:`~icecontext.data.io.layers.SceneLayers` already in memory.
"""

from __future__ import annotations

import asyncio
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from icecontext.data.io.format import CHART_FILL, CHARTS, INPUT_VARIABLES, scene_time
from icecontext.data.io.geometry import (
    ClippedWindow,
    CoarseSampling,
    CoarseSlot,
    Transform,
    Upsampling,
    Window,
    check_window,
    clip_window,
    coarse_sampling,
    downsampled_shape,
    empty_coarse,
    pack_coarse,
    transform_coarse,
    upsample_coarse,
)
from icecontext.data.io.layers import SceneLayers, file_inputs, scene_layers
from icecontext.data.io.variables import (
    CATALOGUE,
    LATLON_FEATURES,
    MONTH_FEATURES,
    latlon_encoding,
    month_encoding,
    split_coarse,
)
from icecontext.data.store.chunks import DirectChunkReader
from icecontext.data.store.manifest import SceneRecord
from icecontext.data.store.prepared import PreparedStore
from icecontext.errors import DataError


def _month_of(name: str) -> int | None:
    try:
        return scene_time(name).month
    except ValueError:
        return None


class SceneSource:
    """Windows of one scene at its (possibly downsampled) resolution.

    Subclasses provide :meth:`_layers`; everything else (padding, channel selection,
    2 km upsampling, derived channels) is implemented once here.

    Attributes:
        name: 19-character scene name.
        shape: ``(H', W')`` at the source's resolution.
        full_shape: ``(H, W)`` at 80 m.
        downsample: ``K``: one source pixel is ``K`` x ``K`` 80 m pixels.
        coarse_shape: Shape of the 2 km grid.
        service: ``"dmi"`` or ``"cis"``.
        month: Acquisition month (``None`` if the name carries no date).
        upsampling: How 2 km channels are brought to the source grid.
        where: Human-readable location (file or store group) used in messages.
    """

    def __init__(
        self,
        *,
        name: str,
        full_shape: tuple[int, int],
        downsample: int,
        coarse_shape: tuple[int, int],
        sar_variables: Sequence[str],
        coarse_variables: Sequence[str],
        upsampling: Upsampling = "nearest",
        where: str = "",
    ) -> None:
        if upsampling not in ("nearest", "bilinear"):
            raise ValueError(f"upsampling must be 'nearest' or 'bilinear', got {upsampling!r}")
        self.name = name
        self.full_shape = (int(full_shape[0]), int(full_shape[1]))
        self.downsample = int(downsample)
        self.shape = downsampled_shape(self.full_shape, self.downsample)
        self.coarse_shape = (int(coarse_shape[0]), int(coarse_shape[1]))
        self.service = name[16:19] if len(name) >= 19 else ""
        self.month = _month_of(name)
        self.upsampling: Upsampling = upsampling
        self.where = where or name
        self._sar_index = {v: i for i, v in enumerate(sar_variables)}
        self._coarse_index = {v: i for i, v in enumerate(coarse_variables)}

    # ------------------------------------------------------------------ description

    @property
    def features(self) -> tuple[str, ...]:
        """Channels this source can serve: stored file variables, then derived channels."""
        derived: list[str] = list(LATLON_FEATURES)
        if self.month is not None:
            derived += list(MONTH_FEATURES)
        return (*self._sar_index, *self._coarse_index, *derived)

    def check_features(self, features: Sequence[str]) -> list[str]:
        """Return ``features`` as a list after checking this source can serve them.

        Raises:
            DataError: Naming the first missing feature and the store/file.
        """
        available = set(self.features)
        for f in features:
            if f not in available:
                if f not in CATALOGUE:
                    raise DataError(f"{self.where}: unknown feature '{f}'")
                hint = (
                    "re-run 'icecontext prepare' with it in --features"
                    if isinstance(self, ZarrSource)
                    else "open the source with it in its features"
                )
                raise DataError(
                    f"{self.where}: feature '{f}' is not available here "
                    f"(available: {', '.join(self.features)}); {hint}"
                )
        return list(features)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, shape={self.shape}, "
            f"downsample={self.downsample}, where={self.where!r})"
        )

    # ------------------------------------------------------------------ back-end

    def _layers(self) -> SceneLayers:
        """Return the scene's arrays (numpy or Zarr); opened lazily by subclasses."""
        raise NotImplementedError

    def release(self) -> None:
        """Drop cached arrays and handles (they are reopened on the next read)."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # ------------------------------------------------------------------ reads

    def read_inputs(self, window: Window, features: Sequence[str] | None = None) -> np.ndarray:
        """Read input channels for a window.

        Args:
            window: ``(row, col, height, width)``; may reach past the scene (zeros there).
            features: Channel names (resolved, e.g. by
                :func:`~icecontext.data.io.variables.resolve_features`); ``None`` = all of
                :attr:`features`.

        Returns:
            float32 ``(len(features), height, width)``.

        Raises:
            DataError: If a feature is not available.
        """
        x, _ = self.read_window(window, features, charts=False)
        assert x is not None
        return x

    def read_chart_stack(self, window: Window) -> np.ndarray:
        """Read SIC, SOD, FLOE as one uint8 ``(3, height, width)`` array (255 outside)."""
        _, charts = self.read_window(window, inputs=False, charts=True)
        assert charts is not None
        return charts

    def read_window(
        self,
        window: Window,
        features: Sequence[str] | None = None,
        *,
        inputs: bool = True,
        charts: bool = True,
        transform: Transform | None = None,
        out: np.ndarray | None = None,
        coarse_out: CoarseSlot | None = None,
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Read inputs and/or the chart stack of a window in one batch of array reads.

        Args:
            window: ``(row, col, height, width)``; may reach past the scene.
            features: Channel names (``None`` = all of :attr:`features`).
            inputs: Read the inputs.
            charts: Read the chart stack.
            transform: Return the window flipped/rotated by this transform (training
                augmentation). It is fused into the read: SAR-grid channels are written
                through a rotated view and 2 km channels are upsampled in the rotated
                frame, so no extra pass over the patch is made.
            out: Write the inputs into this float32 array of the returned shape (a slot
                of a batch) instead of a new one.
            coarse_out: Leave the 2 km channels at 2 km: the inputs then hold only the
                other channels (in the requested order), and the 2 km ones (in the
                requested order) go to this slot with their sampling, for upsampling
                on the training device (:func:`~icecontext.data.io.geometry.pack_coarse`).

        Returns:
            ``(inputs (C, h, w) float32 or None, charts (3, h, w) uint8 or None)``
            (``h`` and ``w`` swapped by a quarter turn).
        """
        t = transform or Transform()
        feats: list[str] = []
        if inputs:
            feats = list(self.features) if features is None else self.check_features(features)
        n_fine = len(feats)
        if coarse_out is not None:
            fine, coarse = split_coarse(feats)
            feats, n_fine = fine + coarse, len(fine)
        _, _, height, width = check_window(window)
        clip = clip_window(window, self.shape)
        x = None
        if inputs:
            x = _input_buffer((n_fine, *t.shape(height, width)), clip.full, out)
        if coarse_out is not None and (clip.empty or n_fine == len(feats)):
            empty_coarse(coarse_out)
        if clip.empty:
            c = None
            if charts:
                c = np.full((len(CHARTS), *t.shape(height, width)), CHART_FILL, dtype=np.uint8)
            return x, c
        plan = self._plan_reads(feats, clip, charts)
        blocks = read_blocks(plan.requests)
        c = None
        if charts:
            block = blocks.pop()
            if clip.full:
                c = t.apply(np.asarray(block, dtype=np.uint8))
            else:
                c = np.full((len(CHARTS), height, width), CHART_FILL, dtype=np.uint8)
                c[:, clip.out_rows, clip.out_cols] = block
                c = t.apply(c)
        if x is not None:
            self._fill_inputs(x, feats, plan, blocks, t, coarse_out)
        return x, c

    def _plan_reads(self, feats: Sequence[str], clip: ClippedWindow, charts: bool) -> _ReadPlan:
        """The array reads of a window's inputs (SAR grid, then 2 km) and charts."""
        layers = self._layers()
        rows, cols = clip.rows, clip.cols
        sub: Window = (rows.start, cols.start, rows.stop - rows.start, cols.stop - cols.start)
        requests: list[tuple[Any, tuple[slice, ...]]] = []
        sar = [(k, self._sar_index[f]) for k, f in enumerate(feats) if f in self._sar_index]
        coarse = [
            (k, self._coarse_index[f]) for k, f in enumerate(feats) if f in self._coarse_index
        ]
        sampling = None
        if sar:
            lo_s = min(i for _, i in sar)
            requests.append((layers.sar, (slice(lo_s, max(i for _, i in sar) + 1), rows, cols)))
            sar = [(k, i - lo_s) for k, i in sar]
        if coarse:
            if min(self.coarse_shape) < 1:
                raise DataError(f"{self.where}: the 2 km grid is empty (scene under 25 pixels)")
            sampling = coarse_sampling(sub, self.coarse_shape, self.downsample, self.upsampling)
            lo_c = min(i for _, i in coarse)
            channels = slice(lo_c, max(i for _, i in coarse) + 1)
            requests.append((layers.coarse, (channels, *sampling.block)))
            coarse = [(k, i - lo_c) for k, i in coarse]
        if charts:
            requests.append((layers.charts, (slice(None), rows, cols)))
        return _ReadPlan(clip, sub, requests, sar, coarse, sampling)

    def _fill_inputs(
        self,
        x: np.ndarray,
        feats: Sequence[str],
        plan: _ReadPlan,
        blocks: list[np.ndarray],
        t: Transform,
        coarse_out: CoarseSlot | None = None,
    ) -> None:
        """Write the read blocks and derived channels into ``x`` (transformed).

        The 2 km channels go to ``coarse_out`` instead, when it is given.
        """
        view = t.inverse_view(x)  # writing the window into it yields the transformed patch
        clip = plan.clip
        dst_r, dst_c = clip.out_rows, clip.out_cols
        if plan.sar:
            _copy_channels(view, dst_r, dst_c, blocks.pop(0), plan.sar)
        if plan.coarse:
            assert plan.sampling is not None
            if coarse_out is not None:  # channels in requested order, after the others
                block = blocks.pop(0)[[i for _, i in sorted(plan.coarse)]]
                size = (view.shape[-2], view.shape[-1])  # the window, untransformed
                pack_coarse(block, plan.sampling, (dst_r, dst_c), size, t, coarse_out)
            else:  # upsampled in the transformed frame: one rounding, contiguous writes
                up = upsample_coarse(*transform_coarse(blocks.pop(0), plan.sampling, t))
                if clip.full:
                    _copy_channels(x, slice(None), slice(None), up, plan.coarse)
                else:  # viewed back into the window's frame
                    _copy_channels(view, dst_r, dst_c, t.inverse_view(up), plan.coarse)
        for k, f in enumerate(feats):
            if f in MONTH_FEATURES:
                assert self.month is not None  # checked by check_features
                sin_m, cos_m = month_encoding(self.month)
                view[k, dst_r, dst_c] = sin_m if f == "month_sin" else cos_m
        geo = [(k, f) for k, f in enumerate(feats) if f in LATLON_FEATURES]
        if geo:
            enc = self._latlon(plan.sub)
            for k, f in geo:
                view[k, dst_r, dst_c] = enc[f]

    def read_charts(self, window: Window) -> dict[str, np.ndarray]:
        """Read the charts of a window: ``{"SIC", "SOD", "FLOE"}`` uint8 ``(h, w)``."""
        stack = self.read_chart_stack(window)
        return {c: stack[i] for i, c in enumerate(CHARTS)}

    def _full_charts_array(self) -> Any:
        """The ``(3, H, W)`` 80 m charts (numpy or Zarr), or ``None`` if not available."""
        return self._layers().charts_full

    def has_full_charts(self) -> bool:
        """Whether :meth:`read_full_charts` can serve the original 80 m charts."""
        return self.downsample == 1 or self._full_charts_array() is not None

    def read_full_charts(self, window: Window | None = None) -> dict[str, np.ndarray]:
        """Read the original 80 m charts of a window of the **80 m** grid.

        At ``K = 1`` this is :meth:`read_charts`. At ``K > 1`` the charts come from the
        80 m copy kept beside the block-reduced ones (a store's ``charts_full`` array, or
        the file for :class:`NetCDFSource`), never from upsampling the reduced charts.

        Args:
            window: ``(row, col, height, width)`` on the 80 m grid (may reach past the
                scene: 255 there); ``None`` = the whole scene.

        Returns:
            ``{"SIC", "SOD", "FLOE"}`` uint8 ``(height, width)``.

        Raises:
            DataError: If the source holds no 80 m charts (a store prepared before store
                format 2 with ``--downsample`` > 1), naming it and the fix.
        """
        if window is None:
            window = (0, 0, *self.full_shape)
        if self.downsample == 1:
            return self.read_charts(window)
        full = self._full_charts_array()
        if full is None:
            raise DataError(
                f"{self.where}: no 80 m charts for this scene downsampled {self.downsample}x "
                "(the store was prepared before store format 2); run the same "
                "'icecontext prepare --scenes ... --out ...' again: scenes prepared without a "
                "source fingerprint are rebuilt, with their 80 m charts"
            )
        _, _, height, width = check_window(window)
        out = np.full((len(CHARTS), height, width), CHART_FILL, dtype=np.uint8)
        clip = clip_window(window, self.full_shape)
        if not clip.empty:
            (block,) = read_blocks([(full, (slice(None), clip.rows, clip.cols))])
            out[:, clip.out_rows, clip.out_cols] = block
        return {c: out[i] for i, c in enumerate(CHARTS)}

    def valid_mask(self, window: Window) -> np.ndarray:
        """Where the SAR has data (bool ``(h, w)``; false outside the scene)."""
        _, _, height, width = check_window(window)
        out = np.zeros((height, width), dtype=bool)
        clip = clip_window(window, self.shape)
        if not clip.empty:
            out[clip.out_rows, clip.out_cols] = self._layers().valid[clip.rows, clip.cols]
        return out

    def block_counts(self) -> np.ndarray:
        """Per 32 x 32 block: labelled pixels and class counts (see ``layers.COUNT_ROWS``)."""
        return np.asarray(self._layers().block_counts)

    def histograms(self) -> dict[str, np.ndarray]:
        """256-bin chart histograms at the source's resolution."""
        charts = np.asarray(self._layers().charts)
        return {
            c: np.bincount(charts[i].ravel(), minlength=256).astype(np.int64)
            for i, c in enumerate(CHARTS)
        }

    def tiepoints(self) -> np.ndarray:
        """Latitude and longitude tie points, float64 ``(2, 21, 21)``."""
        return np.asarray(self._layers().tiepoints)

    def _latlon(self, window: Window) -> dict[str, np.ndarray]:
        lat, lon = latlon_window(self.tiepoints(), self.full_shape, window, self.downsample)
        return latlon_encoding(lat, lon)


def full_resolution_charts(source: Any, window: Window | None = None) -> dict[str, np.ndarray]:
    """The original 80 m reference charts of a scene (or of a window of its 80 m grid).

    The one place validation (``training/module.py``) and ``icecontext evaluate`` get the
    charts they score against: :meth:`SceneSource.read_full_charts` for sources that have
    it; for other source-like objects (test doubles, external sources) ``read_charts``
    when they are not downsampled.

    Raises:
        DataError: If the 80 m charts are not available (see
            :meth:`SceneSource.read_full_charts`).
    """
    if hasattr(source, "read_full_charts"):
        return source.read_full_charts(window)
    if int(getattr(source, "downsample", 1)) == 1:
        return source.read_charts(window if window is not None else (0, 0, *source.shape))
    raise DataError(
        f"{getattr(source, 'name', source)!s}: the source is downsampled "
        f"{source.downsample}x and cannot serve its 80 m charts"
    )


def read_blocks(requests: Sequence[tuple[Any, tuple[slice, ...]]]) -> list[np.ndarray]:
    """Read ``array[selection]`` for each request; Zarr arrays in one concurrent batch.

    zarr-python 3 runs every read on its event-loop thread; gathering a window's reads
    into one coroutine costs one hand-over to that thread instead of one per array, and
    lets the chunk decodes of the arrays overlap.
    """
    import zarr

    readers = [_direct_reader(a) if isinstance(a, zarr.Array) else a for a, _ in requests]
    direct = [r for r in readers if r is not None]
    if len(direct) == len(readers):
        # a prepared store on local disk: read its chunk files directly (see data/store/chunks.py)
        return [np.asarray(r[sel]) for r, (_, sel) in zip(direct, requests, strict=True)]
    from zarr.core.sync import sync

    async def gather() -> list[Any]:
        return list(
            await asyncio.gather(
                *(
                    a.async_array.getitem(sel)
                    if isinstance(a, zarr.Array)
                    else _ready(np.asarray(a[sel]))
                    for a, sel in requests
                )
            )
        )

    return [np.asarray(b) for b in sync(gather())]


_DIRECT: dict[tuple[int, str], tuple[Any, DirectChunkReader | None]] = {}


def _direct_reader(array: Any) -> DirectChunkReader | None:
    """The direct chunk reader of a zarr array, or ``None`` if zarr must read it (cached).

    Keyed by the identity of the array's store object, which the entry keeps alive: an
    ``id`` alone is reused once its object is freed, and a reader of another store's
    files was then returned for a new store (wrong data, seen with threads opening
    stores concurrently).
    """
    store = array.store_path.store
    key = (id(store), array.store_path.path)
    entry = _DIRECT.get(key)
    if entry is None or entry[0] is not store:
        if len(_DIRECT) > 4096:  # bounded: one entry per opened array
            _DIRECT.clear()
        entry = (store, DirectChunkReader.for_array(array))
        _DIRECT[key] = entry
    return entry[1]


async def _ready(value: np.ndarray) -> np.ndarray:
    return value


def _copy_channels(
    out: np.ndarray, rows: slice, cols: slice, block: np.ndarray, pairs: list[tuple[int, int]]
) -> None:
    """``out[k, rows, cols] = block[i]`` for each ``(k, i)``, as runs of slice copies."""
    start = 0
    for n in range(1, len(pairs) + 1):
        if n == len(pairs) or pairs[n] != (pairs[n - 1][0] + 1, pairs[n - 1][1] + 1):
            k0, i0 = pairs[start]
            length = n - start
            out[k0 : k0 + length, rows, cols] = block[i0 : i0 + length]
            start = n


def latlon_window(
    tiepoints: np.ndarray, full_shape: tuple[int, int], window: Window, downsample: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude (degrees) at the pixel centres of a window.

    Evaluates the ready-to-train 21 x 21 tie-point grid with
    :func:`icecontext.data.io.tiepoints.r2t_latlon` (the grid spans the whole image,
    axis 0 = lines; interpolated through unit vectors, so the dateline is safe).
    """
    from icecontext.data.io.tiepoints import r2t_latlon

    lat, lon = r2t_latlon(tiepoints[0], tiepoints[1], full_shape, window, downsample)
    return np.asarray(lat), np.asarray(lon)


# ----------------------------------------------------------------------------- back-ends


@dataclass(frozen=True)
class _ReadPlan:
    """The array reads of one window and where their channels go.

    Attributes:
        clip: The window clipped to the scene.
        sub: The clipped window as ``(row, col, height, width)``.
        requests: ``(array, index)`` reads: SAR grid, 2 km, charts (those asked for).
        sar: ``(output channel, channel in the SAR-grid block)`` pairs.
        coarse: ``(output channel, channel in the 2 km block)`` pairs.
        sampling: How the 2 km block maps onto the window (when ``coarse``).
    """

    clip: ClippedWindow
    sub: Window
    requests: list[tuple[Any, tuple[slice, ...]]]
    sar: list[tuple[int, int]]
    coarse: list[tuple[int, int]]
    sampling: CoarseSampling | None


def _input_buffer(shape: tuple[int, ...], full: bool, out: np.ndarray | None) -> np.ndarray:
    """The float32 array a window's inputs are written into (zeroed unless ``full``).

    Raises:
        ValueError: If ``out`` is given with another shape or dtype.
    """
    if out is None:
        return (np.empty if full else np.zeros)(shape, dtype=np.float32)
    if out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 {shape}, got {out.dtype} {tuple(out.shape)}")
    if not full:
        out.fill(0.0)
    return out


class ArraySource(SceneSource):
    """A source over :class:`~icecontext.data.io.layers.SceneLayers` held in memory."""

    def __init__(self, layers: SceneLayers, upsampling: Upsampling = "nearest", where: str = ""):
        super().__init__(
            name=layers.name,
            full_shape=layers.full_shape,
            downsample=layers.downsample,
            coarse_shape=layers.coarse_shape,
            sar_variables=layers.sar_variables,
            coarse_variables=layers.coarse_variables,
            upsampling=upsampling,
            where=where or layers.name,
        )
        self._data: SceneLayers | None = layers

    def _layers(self) -> SceneLayers:
        assert self._data is not None
        return self._data


class NetCDFSource(SceneSource):
    """A scene read straight from its NetCDF file (no store), for small experiments.

    The file's metadata is read at construction; the arrays are loaded (and
    downsampled with the same code as ``prepare``) on the first read and kept in memory
    until :meth:`release`. A whole 5000 x 5200 scene with all inputs takes about
    0.6 GB, so use a prepared store for training on many scenes.

    Args:
        path: ``_prep.nc`` (test files are paired with ``_prep_reference.nc``) or raw file.
        features: Channels to load (file variables; derived ones are computed);
            ``None`` = all 24 file inputs.
        downsample: ``K``.
        upsampling: 2 km upsampling mode.
        reference: Passed to :func:`~icecontext.data.io.scene.open_scene`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        features: Sequence[str] | None = None,
        downsample: int = 1,
        upsampling: Upsampling = "nearest",
        reference: str | os.PathLike[str] | Literal["auto"] | None = "auto",
    ) -> None:
        from icecontext.data.io.scene import open_scene

        self.path = Path(path)
        self._reference = reference
        ds = open_scene(self.path, reference=reference, validate=False)
        try:
            full_shape = (int(ds.sizes["sar_lines"]), int(ds.sizes["sar_samples"]))
            coarse_shape = (int(ds.sizes["2km_grid_lines"]), int(ds.sizes["2km_grid_samples"]))
            name = str(ds.attrs["scene_name"])
        finally:
            ds.close()
        self._load_features = tuple(INPUT_VARIABLES if features is None else features)
        sar_vars, coarse_vars = file_inputs(self._load_features)
        super().__init__(
            name=name,
            full_shape=full_shape,
            downsample=downsample,
            coarse_shape=coarse_shape,
            sar_variables=sar_vars,
            coarse_variables=coarse_vars,
            upsampling=upsampling,
            where=str(self.path),
        )
        self._data: SceneLayers | None = None
        self._lock = threading.Lock()

    def _layers(self) -> SceneLayers:
        if self._data is None:
            from icecontext.data.io.scene import open_scene

            with self._lock:
                if self._data is None:
                    ds = open_scene(self.path, reference=self._reference, validate=True)
                    try:
                        self._data = scene_layers(ds, self._load_features, self.downsample)
                    finally:
                        ds.close()
        return self._data

    def has_full_charts(self) -> bool:
        """Always: the file itself holds the 80 m charts (no need to read them to say so)."""
        return True

    def _full_charts_array(self) -> Any:
        """The 80 m charts, read from the file (with its labels file) on each call."""
        if self._data is not None and self._data.charts_full is not None:
            return self._data.charts_full
        from icecontext.data.io.scene import open_scene

        ds = open_scene(self.path, reference=self._reference, validate=False)
        try:
            return np.stack([np.asarray(ds[c].values, dtype=np.uint8) for c in CHARTS])
        finally:
            ds.close()

    def release(self) -> None:
        """Free the loaded arrays."""
        self._data = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._lock = threading.Lock()


class ZarrSource(SceneSource):
    """A scene group of a prepared store (see :mod:`icecontext.data.store.prepare`).

    The group is opened lazily in each process (DataLoader workers reopen it after
    pickling or forking), with its consolidated metadata, so a read costs only the
    chunk reads of the window.

    Args:
        store: The store folder.
        record: The scene's manifest record.
        sar_variables: The store's SAR-grid channels.
        coarse_variables: The store's 2 km channels.
        upsampling: 2 km upsampling mode.
    """

    def __init__(
        self,
        store: str | os.PathLike[str],
        record: SceneRecord,
        sar_variables: Sequence[str],
        coarse_variables: Sequence[str],
        upsampling: Upsampling = "nearest",
    ) -> None:
        self.store = Path(store)
        self.record = record
        super().__init__(
            name=record.name,
            full_shape=record.full_shape,
            downsample=record.downsample,
            coarse_shape=record.coarse_shape,
            sar_variables=sar_variables,
            coarse_variables=coarse_variables,
            upsampling=upsampling,
            where=f"{self.store}/{record.name}",
        )
        self._sar_vars = tuple(sar_variables)
        self._coarse_vars = tuple(coarse_variables)
        self._data: SceneLayers | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._lock_pid = os.getpid()

    def _layers(self) -> SceneLayers:
        if self._data is None or self._pid != os.getpid():
            if self._lock_pid != os.getpid():  # a forked worker must not inherit a held lock
                self._lock, self._lock_pid = threading.Lock(), os.getpid()
            with self._lock:  # loading threads open the group once, not once each
                if self._data is None or self._pid != os.getpid():
                    self._open()
        assert self._data is not None
        return self._data

    def _open(self) -> None:
        """Open the scene group and its arrays (in this process)."""
        import zarr

        path = self.store / self.record.name
        try:
            with warnings.catch_warnings():
                # consolidated metadata is a zarr-python feature, not (yet) in the spec
                warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
                group = zarr.open_group(path, mode="r", use_consolidated=True)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
            raise DataError(f"{path}: scene group missing from the store") from exc
        members = dict(group.members())
        tiepoints = members["tiepoints"]
        assert isinstance(tiepoints, zarr.Array)
        self._data = SceneLayers(
            name=self.record.name,
            full_shape=self.record.full_shape,
            downsample=self.record.downsample,
            sar_variables=self._sar_vars,
            coarse_variables=self._coarse_vars,
            sar=members.get("sar"),
            coarse=members.get("coarse"),
            charts=members["charts"],
            valid=members["valid"],
            tiepoints=np.asarray(tiepoints[...]),
            block_counts=members["block_counts"],
            coarse_shape=self.record.coarse_shape,
            histograms_full=self.record.histograms_full,
            charts_full=members.get("charts_full"),
        )
        self._pid = os.getpid()

    def histograms(self) -> dict[str, np.ndarray]:
        """Chart histograms at the store's resolution, from the manifest (no read)."""
        return {c: self.record.histogram(c) for c in CHARTS}

    def release(self) -> None:
        """Drop the open group (reopened on the next read)."""
        self._data = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_data"] = None  # Zarr handles are reopened in the receiving process
        state["_pid"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._lock, self._lock_pid = threading.Lock(), os.getpid()


def store_source(store: PreparedStore, name: str, upsampling: Upsampling = "nearest") -> ZarrSource:
    """Open one scene of a prepared store.

    Raises:
        DataError: If the scene is not in the store (naming the scene and the store).
    """
    record = store.manifest.scenes.get(name)
    if record is None:
        raise DataError(f"scene '{name}' is not in the store {store.path}")
    m = store.manifest
    return ZarrSource(store.path, record, m.sar_variables, m.coarse_variables, upsampling)


def store_sources(
    store: PreparedStore, names: Sequence[str], upsampling: Upsampling = "nearest"
) -> list[ZarrSource]:
    """Open several scenes of a prepared store (see :func:`store_source`)."""
    return [store_source(store, n, upsampling) for n in names]
