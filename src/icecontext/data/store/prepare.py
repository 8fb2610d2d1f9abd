"""``prepare``: scenes -> a chunked, compressed Zarr 3 store that patches are read from.

Layout (details and the chunk-size measurement in ``docs/pipeline.md``)::

    STORE/
      zarr.json            root group; attributes = the store settings
      manifest.json        index: settings + one record per complete scene
      provenance.json      last run: versions, command line, failed scenes
      <scene>/             one group per scene (attribute complete = true)
        sar          float32 (n_sar, H', W')  chunks (n_sar, 256, 256)
        coarse       float32 (n_2km, h2, w2)  chunks (n_2km, 64, 64)
        charts       uint8   (3, H', W')      chunks (3, 256, 256)
        charts_full  uint8   (3, H, W)        chunks (3, 1024, 1024), only at K > 1
        valid        bool    (H', W')         chunks (256, 256)
        tiepoints    float64 (2, 21, 21)
        block_counts uint16  (25, nb_r, nb_c)
      .incomplete/         scenes being written (never read; cleared by each run)

A scene is written under ``.incomplete/`` (arrays, then the ``complete`` attribute,
then consolidated metadata) and moved to ``STORE/<scene>`` by one ``rename``: a
scene group either is complete or does not exist, so a killed run leaves no damage
and the next run redoes only the missing scenes. ``manifest.json`` is rebuilt from
the complete groups' attributes at the end of every run.

Each group records the fingerprint of the files it was made from (attribute
``source_fingerprint``: size, modification time and a SHA-256 of the first 1 MiB and
last 64 KiB of the scene file and of its ``_prep_reference.nc`` labels, plus the
parameters of a synthetic scene's ``*_synth.json``). A later run rebuilds a scene whose
fingerprint changed (other than in its modification time alone), and also a scene
prepared before fingerprints existed, since nothing shows it is still current.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from icecontext.data.io.format import (
    CHART_FILL,
    PREP_SUFFIX,
    scene_name_from_file,
    scene_name_from_raw,
)
from icecontext.data.io.layers import (
    COUNT_BLOCK,
    COUNT_ROWS,
    SceneLayers,
    file_inputs,
    scene_layers,
)
from icecontext.data.io.variables import resolve_features
from icecontext.data.store.fingerprint import (
    FINGERPRINT_KEY,
    MTIME_ONLY_CHANGES,
    fingerprint_changes,
    source_fingerprint,
)
from icecontext.data.store.manifest import STORE_VERSION, Manifest, SceneRecord, make_record
from icecontext.errors import ConfigError, DataError
from icecontext.signals import interrupt_on_signals

if TYPE_CHECKING:
    import zarr

log = logging.getLogger(__name__)

DEFAULT_CHUNK: Final = 256
"""Spatial chunk side of SAR-grid arrays (see docs/pipeline.md for the measurement)."""

COARSE_CHUNK: Final = 64
"""Spatial chunk side of the 2 km arrays (64 cells = 1600 px at 80 m)."""

FULL_CHART_CHUNK: Final = 1024
"""Spatial chunk side of the 80 m ``charts_full`` array (read whole, for scoring only)."""

INCOMPLETE_DIR: Final = ".incomplete"
LOCK_NAME: Final = ".lock"


def _codecs() -> tuple[Any, Any]:
    from zarr.codecs import BloscCodec, BloscShuffle

    # lz4 decompresses at several GB/s, so reads stay bound by chunk count, not codec;
    # charts and masks are highly redundant: zstd + bit-shuffle shrinks them ~50x.
    floats = BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle)
    labels = BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.bitshuffle)
    return floats, labels


@contextlib.contextmanager
def _quiet_consolidated() -> Iterator[None]:
    with warnings.catch_warnings():
        # consolidated metadata is a zarr-python feature, not (yet) part of the v3 spec
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        yield


# ----------------------------------------------------------------------------- writing


def write_scene_group(
    store: str | os.PathLike[str],
    layers: SceneLayers,
    record: SceneRecord,
    chunk: int = DEFAULT_CHUNK,
    fingerprint: dict[str, Any] | None = None,
) -> Path:
    """Write one scene atomically as ``STORE/<name>`` (via ``.incomplete/`` and a rename).

    An existing group of the same name is replaced: it is moved aside, the new group
    renamed into place, then the old one deleted, so readers see the old or the new
    group (or, if the process dies between the two renames, none: the next run redoes
    it).

    Args:
        store: Store folder (must exist).
        layers: The scene's arrays (numpy). ``layers.charts_full`` (the 80 m charts of a
            downsampled scene) is written as ``charts_full`` when present.
        record: Its manifest record (saved as the group's ``record`` attribute).
        chunk: Spatial chunk side of SAR-grid arrays.
        fingerprint: The source fingerprint (:func:`source_fingerprint`), saved as the
            group's ``source_fingerprint`` attribute.

    Returns:
        The scene group's path.
    """
    import zarr

    store = Path(store)
    tmp = store / INCOMPLETE_DIR / f"{layers.name}.{uuid.uuid4().hex}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        _write_inputs(group, layers, chunk)
        _write_labels(group, layers, chunk)
        _write_geometry(group, layers)
        # completion is marked last, then the metadata is consolidated for one-read opens
        attrs: dict[str, Any] = {"record": record.to_json()}
        if fingerprint is not None:
            attrs[FINGERPRINT_KEY] = fingerprint
        group.attrs.update({**attrs, "complete": True})
        with _quiet_consolidated():
            zarr.consolidate_metadata(tmp)
        final = store / layers.name
        _rename_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _rename_into_place(tmp: Path, final: Path) -> None:
    """Move a written group to its final name, replacing (then deleting) an old one."""
    old = None
    if final.exists():
        old = tmp.with_name(f"{tmp.name}.old")
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_inputs(group: zarr.Group, layers: SceneLayers, chunk: int) -> None:
    """Write the SAR-grid (``sar``) and 2 km (``coarse``) input stacks present."""
    floats, _ = _codecs()
    for name, stack, variables, side, dims in (
        ("sar", layers.sar, layers.sar_variables, chunk, ("channel", "y", "x")),
        (
            "coarse",
            layers.coarse,
            layers.coarse_variables,
            COARSE_CHUNK,
            ("channel", "y2km", "x2km"),
        ),
    ):
        if stack is None:
            continue
        group.create_array(
            name,
            data=np.ascontiguousarray(stack, dtype=np.float32),
            chunks=(stack.shape[0], side, side),
            compressors=floats,
            fill_value=0.0,
            dimension_names=dims,
            attributes={"variables": list(variables)},
        )


def _write_labels(group: zarr.Group, layers: SceneLayers, chunk: int) -> None:
    """Write ``charts``, ``charts_full`` (if present) and the ``valid`` mask."""
    _, labels = _codecs()
    group.create_array(
        "charts",
        data=np.ascontiguousarray(layers.charts, dtype=np.uint8),
        chunks=(layers.charts.shape[0], chunk, chunk),
        compressors=labels,
        fill_value=CHART_FILL,
        dimension_names=("chart", "y", "x"),
        attributes={"charts": ["SIC", "SOD", "FLOE"]},
    )
    if layers.charts_full is not None:
        full = np.ascontiguousarray(layers.charts_full, dtype=np.uint8)
        group.create_array(
            "charts_full",
            data=full,
            chunks=(full.shape[0], FULL_CHART_CHUNK, FULL_CHART_CHUNK),
            compressors=labels,
            fill_value=CHART_FILL,
            dimension_names=("chart", "y80m", "x80m"),
            attributes={"charts": ["SIC", "SOD", "FLOE"], "pixel_spacing_m": 80},
        )
    group.create_array(
        "valid",
        data=np.ascontiguousarray(layers.valid, dtype=bool),
        chunks=(chunk, chunk),
        compressors=labels,
        fill_value=False,
        dimension_names=("y", "x"),
    )


def _write_geometry(group: zarr.Group, layers: SceneLayers) -> None:
    """Write the tie-point latitudes/longitudes and the valid-pixel block counts."""
    _, labels = _codecs()
    group.create_array(
        "tiepoints",
        data=np.ascontiguousarray(layers.tiepoints, dtype=np.float64),
        chunks=tuple(layers.tiepoints.shape),
        dimension_names=("latlon", "line_points", "sample_points"),
        attributes={"variables": ["sar_grid2d_latitude", "sar_grid2d_longitude"]},
    )
    counts = np.asarray(layers.block_counts, dtype=np.uint16)
    group.create_array(
        "block_counts",
        data=counts,
        chunks=counts.shape,
        compressors=labels,
        dimension_names=("count", "block_y", "block_x"),
        attributes={"block": COUNT_BLOCK, "rows": list(COUNT_ROWS)},
    )


def _read_complete_attributes(group_path: Path) -> dict[str, Any] | None:
    """Attributes of a complete scene group, or ``None`` if incomplete/unreadable."""
    meta = group_path / "zarr.json"
    if not meta.is_file():
        return None
    try:
        attrs = json.loads(meta.read_text(encoding="utf-8")).get("attributes", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    if not isinstance(attrs, dict) or attrs.get("complete") is not True or "record" not in attrs:
        return None
    try:
        SceneRecord.from_json(attrs["record"])
    except (TypeError, KeyError, ValueError):
        return None
    return attrs


def _read_complete_record(group_path: Path) -> SceneRecord | None:
    """Return the record of a complete scene group, or ``None`` if incomplete/unreadable."""
    attrs = _read_complete_attributes(group_path)
    return None if attrs is None else SceneRecord.from_json(attrs["record"])


def _update_fingerprint(group_path: Path, fingerprint: dict[str, Any]) -> None:
    """Replace the stored fingerprint of a complete group (atomic rewrite of its zarr.json).

    Only the group's own metadata file changes; its arrays are not touched.
    """
    from icecontext.atomic import write_text_atomic

    meta = group_path / "zarr.json"
    data = json.loads(meta.read_text(encoding="utf-8"))
    data["attributes"][FINGERPRINT_KEY] = fingerprint
    # zarr-python's own layout of metadata files (indent 2), so the file stays familiar
    write_text_atomic(meta, json.dumps(data, indent=2, allow_nan=True))


def _scene_name_of(path: Path) -> str:
    for parse in (scene_name_from_file, scene_name_from_raw):
        try:
            return parse(path.name)
        except ValueError:
            continue
    return path.name.removesuffix(PREP_SUFFIX).removesuffix(".nc")


def _prepare_one(
    path: str, store: str, name: str, features: tuple[str, ...], downsample: int, chunk: int
) -> tuple[str, dict[str, Any] | None, str | None]:
    """Worker: convert one scene; return ``(name, record json, error message)``."""
    from icecontext.data.io.scene import open_scene

    try:
        # fingerprint first: a file changed while it is read is rebuilt by the next run
        fingerprint = source_fingerprint(path, name)
        ds = open_scene(path, validate=True)
        try:
            layers = scene_layers(ds, features, downsample, keep_full_charts=True)
        finally:
            ds.close()
        layers.name = name
        assert layers.histograms_full is not None
        record = make_record(
            name=name,
            source=Path(path).name,
            charts=layers.charts,
            valid=layers.valid,
            full_charts_hist=layers.histograms_full,
            full_shape=layers.full_shape,
            coarse_shape=layers.coarse_shape,
            downsample=downsample,
        )
        write_scene_group(store, layers, record, chunk, fingerprint)
        return name, record.to_json(), None
    except Exception as exc:  # a corrupt file may raise anything from netCDF4/HDF5
        return name, None, f"{type(exc).__name__}: {exc}"


# ----------------------------------------------------------------------------- prepare


@dataclass
class PrepareResult:
    """Outcome of :func:`prepare_store`.

    Attributes:
        store: The store folder.
        written: Scenes converted by this run (rebuilt ones included).
        skipped: Scenes already complete in the store, from unchanged sources.
        failed: Scene name -> error message, for scenes that could not be converted.
        rebuilt: Scene name -> why it was rebuilt (its source changed, or the group had
            no fingerprint), for complete groups this run replaced or tried to replace.
        refreshed: Skipped scenes whose source was only touched: their stored
            modification time was updated, their data kept.
        manifest: The manifest written at the end.
    """

    store: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    rebuilt: dict[str, str] = field(default_factory=dict)
    refreshed: list[str] = field(default_factory=list)
    manifest: Manifest | None = None


@contextlib.contextmanager
def _store_lock(store: Path) -> Iterator[None]:
    """Hold an exclusive lock on the store; the OS drops it if the process dies."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: single writer by convention
        yield
        return
    with open(store / LOCK_NAME, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise DataError(f"{store}: another 'prepare' is writing to this store") from exc
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _open_root(store: Path, settings: dict[str, Any]) -> None:
    """Create the store's root group, or check an existing store has the same settings."""
    import zarr

    meta = store / "zarr.json"
    if meta.is_file():
        existing: dict[str, Any] = dict(zarr.open_group(store, mode="r").attrs)
        if existing.get("format") != "icecontext-store":
            raise DataError(f"{store}: a Zarr group that is not an icecontext store")
        version = int(existing.get("version", 1))
        if version > STORE_VERSION:
            raise DataError(
                f"{store}: store format {version} was written by a newer icecontext "
                f"(this one writes format {STORE_VERSION}); upgrade icecontext or use "
                "another --out folder"
            )
        for key, option in (
            ("downsample", "--downsample"),
            ("sar_variables", "--features"),
            ("coarse_variables", "--features"),
            ("chunk", "--chunk"),
        ):
            if existing.get(key) != settings[key]:
                raise ConfigError(
                    option,
                    f"the store {store} was prepared with {key}={existing.get(key)!r}, "
                    f"this run asks for {settings[key]!r}; use another --out folder",
                )
        if version < STORE_VERSION:  # groups are upgraded by rebuilding (no fingerprint)
            zarr.open_group(store, mode="r+").attrs.update({"version": STORE_VERSION})
        return
    if store.exists() and any(p.name not in (LOCK_NAME, INCOMPLETE_DIR) for p in store.iterdir()):
        raise DataError(f"{store}: folder exists, is not empty and is not an icecontext store")
    zarr.open_group(
        store,
        mode="a",
        zarr_format=3,
        attributes={"format": "icecontext-store", "version": STORE_VERSION, **settings},
    )


def collect_scene_files(
    data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> dict[str, Path]:
    """Map scene names to files from folders (``*_prep.nc``, then raw ``*.nc``) and files.

    Raises:
        DataError: If a folder or file is missing, no scene is found, or two files give
            the same scene name.
    """
    from icecontext.data.io.format import REFERENCE_SUFFIX

    items = [data] if isinstance(data, str | os.PathLike) else list(data)
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.glob("*.nc") if not f.name.endswith(REFERENCE_SUFFIX))
            if not found:
                raise DataError(f"{p}: no scene files (*.nc) in this folder")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p}: no such scene file or folder")
    out: dict[str, Path] = {}
    for f in files:
        name = _scene_name_of(f)
        if name in out:
            raise DataError(f"scene '{name}' is given twice: {out[name]} and {f}")
        out[name] = f
    return out


def prepare_store(
    data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    features: str | Sequence[str] = ("challenge",),
    downsample: int = 1,
    jobs: int = 1,
    chunk: int = DEFAULT_CHUNK,
    progress: bool = True,
) -> PrepareResult:
    """Convert scenes into a prepared store (idempotent, resumable).

    A scene whose group is complete is skipped when its source fingerprint
    (:func:`source_fingerprint`) is unchanged, and rebuilt, with a printed line, when it
    changed or was never recorded; a source that was only touched (same size and hash,
    new modification time) keeps its data and gets its stored time updated. At
    ``downsample > 1`` the original 80 m charts are stored too (``charts_full``), so
    validation and evaluation score at 80 m without the NetCDF files.

    Args:
        data: Folder(s) of scenes and/or scene files.
        out: Store folder (created).
        features: Feature selectors; their file variables are stored (derived channels
            are computed at read time from the always-stored tie points and the name).
        downsample: Integer factor ``K`` (mean of valid pixels for inputs; 255 if any
            pixel is masked else the mode for charts).
        jobs: Parallel processes (1 = in this process).
        chunk: Spatial chunk side of SAR-grid arrays.
        progress: Show a tqdm progress bar.

    Returns:
        What was written, skipped and failed, and the final manifest.

    Raises:
        ConfigError: For a bad option, or settings that differ from the existing store's.
        DataError: For missing input or a non-store output folder.
    """
    from tqdm.auto import tqdm

    _check_options(downsample, jobs, chunk)
    channels = resolve_features(features, option="--features")
    sar_vars, coarse_vars = file_inputs(channels)
    settings: dict[str, Any] = {
        "downsample": downsample,
        "sar_variables": list(sar_vars),
        "coarse_variables": list(coarse_vars),
        "chunk": chunk,
    }
    scenes = collect_scene_files(data)
    store = Path(out)
    store.mkdir(parents=True, exist_ok=True)
    result = PrepareResult(store=store)
    with _store_lock(store):
        _open_root(store, settings)
        shutil.rmtree(store / INCOMPLETE_DIR, ignore_errors=True)  # leftovers of killed runs
        todo = _scenes_to_write(store, scenes, result, tqdm.write)
        if result.skipped:
            log.info("%d scene(s) already in %s: skipped", len(result.skipped), store)
        file_channels = (*sar_vars, *coarse_vars)
        args = [(str(scenes[n]), str(store), n, file_channels, downsample, chunk) for n in todo]
        bar = tqdm(total=len(todo), desc="prepare", unit="scene", disable=not progress)
        # the handlers stay until the clean-up is done: a second signal cannot cut it
        with interrupt_on_signals(f"the scenes finished so far stay in {store}"):
            try:
                for name, _record, error in _run(args, jobs):
                    if error is None:
                        result.written.append(name)
                    else:
                        result.failed[name] = _failure(error, name in result.rebuilt)
                        bar.write(f"scene {name} ({scenes[name]}): failed: {result.failed[name]}")
                    bar.update(1)
            finally:
                bar.close()
                result.manifest = rebuild_manifest(store)
                shutil.rmtree(store / INCOMPLETE_DIR, ignore_errors=True)
    return result


def _check_options(downsample: int, jobs: int, chunk: int) -> None:
    """Raise ConfigError for a bad ``--downsample``, ``--jobs`` or ``--chunk``."""
    if downsample < 1:
        raise ConfigError("--downsample", f"must be a positive integer, got {downsample}")
    if jobs < 1:
        raise ConfigError("--jobs", f"must be a positive integer, got {jobs}")
    if not 16 <= chunk <= 4096:
        raise ConfigError("--chunk", f"must be between 16 and 4096 pixels, got {chunk}")


def _scenes_to_write(
    store: Path, scenes: dict[str, Path], result: PrepareResult, say: Callable[[str], None]
) -> list[str]:
    """The scenes to (re)write, in name order; records skipped and rebuilt ones in ``result``.

    A group without the completion mark is removed and redone; a complete one is
    rebuilt when :func:`_rebuild_reason` gives a reason (told through ``say``).
    """
    todo: list[str] = []
    for name in sorted(scenes):
        group = store / name
        attrs = _read_complete_attributes(group)
        if attrs is None:
            if group.exists():  # a group without the completion mark: redo it
                shutil.rmtree(group)
            todo.append(name)
            continue
        reason = _rebuild_reason(group, attrs, scenes[name], name, result)
        if reason is None:
            result.skipped.append(name)
            continue
        result.rebuilt[name] = reason
        say(f"rebuilding {name}: {reason}")
        todo.append(name)
    return todo


def _failure(error: str, rebuilt: bool) -> str:
    """The message of a failed scene; a failed rebuild says the old group stays."""
    if rebuilt:  # the old group stays; say it is out of date
        error += (
            "; the store keeps this scene's data from the earlier version "
            "of its source (fix the file and run prepare again)"
        )
    return error


def _rebuild_reason(
    group: Path, attrs: dict[str, Any], path: Path, name: str, result: PrepareResult
) -> str | None:
    """Why a complete group must be rebuilt from ``path``, or ``None`` to keep it.

    Keeps the group (and refreshes its stored modification times) when the source
    changed in its modification time only.
    """
    stored = attrs.get(FINGERPRINT_KEY)
    if not isinstance(stored, dict):
        return "no source fingerprint (prepared before fingerprints were recorded)"
    try:
        current = source_fingerprint(path, name)
    except OSError as exc:
        return f"source fingerprint unreadable ({exc})"
    changes = fingerprint_changes(stored, current)
    if not changes:
        return None
    if set(changes) <= MTIME_ONLY_CHANGES:
        _update_fingerprint(group, current)
        result.refreshed.append(name)
        log.info("%s: source touched (same size and content hash): kept", name)
        return None
    return f"source changed ({', '.join(changes)})"


def _run(
    args: list[tuple[str, str, str, tuple[str, ...], int, int]], jobs: int
) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
    if jobs == 1 or len(args) <= 1:
        for a in args:
            yield _prepare_one(*a)
        return
    # forkserver/spawn: never fork a parent that holds threads (tqdm, zarr's event loop)
    method = "forkserver" if sys.platform.startswith("linux") else "spawn"
    ctx = multiprocessing.get_context(method)
    with ProcessPoolExecutor(max_workers=min(jobs, len(args)), mp_context=ctx) as pool:
        futures: list[Future[Any]] = [pool.submit(_prepare_one, *a) for a in args]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        except BaseException:  # an error, an interruption or the consumer giving up
            # ProcessPoolExecutor (3.11) has no public way to stop running workers, and a
            # scene can take minutes: end them, their staging folder is removed after
            workers = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in workers:
                proc.terminate()
            raise


def rebuild_manifest(store: str | os.PathLike[str]) -> Manifest:
    """Rebuild and write ``manifest.json`` from the complete scene groups of a store."""
    import zarr

    store = Path(store)
    attrs: dict[str, Any] = dict(zarr.open_group(store, mode="r").attrs)
    manifest = Manifest(
        downsample=int(attrs["downsample"]),
        sar_variables=tuple(attrs["sar_variables"]),
        coarse_variables=tuple(attrs["coarse_variables"]),
        chunk=int(attrs["chunk"]),
    )
    for child in sorted(store.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            record = _read_complete_record(child)
            if record is not None:
                manifest.scenes[record.name] = record
    manifest.write(store)
    return manifest
