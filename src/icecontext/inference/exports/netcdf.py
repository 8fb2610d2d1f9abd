"""CF-1.11 NetCDF chart file per scene: classes, SIC percent, probabilities, lat/lon.

Layout of ``{scene}_charts.nc`` (dimensions ``sar_lines`` x ``sar_samples``, the
scene's 80 m SAR grid):

===================  =========  =====================================================
variable             dtype      content
===================  =========  =====================================================
``SIC``              uint8      concentration class 0..10 (tenths); ``flag_values``/
                                ``flag_meanings``; ``_FillValue`` 255
``SIC_percent``      uint8      class x 10, ``units = "%"``,
                                ``standard_name = "sea_ice_area_fraction"``
``SOD``, ``FLOE``    uint8      class index with ``flag_values``/``flag_meanings``
``{chart}_probability``  uint8  per-class probability ``(class, lines, samples)``,
                     or float32 uint8 packed with ``scale_factor = 1/250``
``{chart}_confidence``   same   max probability, or 1 - normalised entropy
``latitude``,        float32    auxiliary coordinates (``coordinates`` attribute of
``longitude``                   every data variable) interpolated from the tie points
===================  =========  =====================================================

Masked pixels (255 in the class arrays) are the ``_FillValue`` of every variable,
so CF readers (xarray, Panoply) show them as missing. Global attributes carry the
provenance: ``Conventions = "CF-1.11"``, the scene, checkpoint, config (YAML text),
icecontext version and git commit, creation time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from icecontext.data.io.format import (
    CHART_FILL,
    CHART_LONG_NAMES,
    CHARTS,
    CLASS_NAMES,
    N_CLASSES,
    PIXEL_SPACING_M,
    SAR_DIMS,
)
from icecontext.errors import DataError
from icecontext.inference.exports.geolocation import scene_latlon
from icecontext.inference.exports.output import export_target

ProbabilityEncoding = Literal["uint8", "float32"]
Confidence = Literal["max", "entropy", "none"]

PROBABILITY_SCALE = 250
"""uint8 packing of probabilities: stored = round(p * 250); 251..254 unused, 255 fill."""

CF_CONVENTIONS = "CF-1.11"
"""Declared CF version. The charts are ``uint8`` (as in the AI4Arctic files) and CF
admits unsigned integer types only from 1.9 on (CF-1.8 §2.2 lists none), and packed
``uint8`` data from 1.11; the IOOS compliance checker passes these files as CF-1.11."""


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True)
class ProbabilityLayers:
    """The optional probability and confidence layers of a chart file.

    Attributes:
        probabilities: Chart -> ``(classes, H, W)`` float probabilities (softmax
            outputs), or ``uint8`` already packed as ``round(p * 250)`` with 255 =
            masked (what the predictor returns with ``probability_dtype="uint8"``).
            A chart without probabilities (e.g. SIC regression) simply gets none.
        confidence: Per-chart confidence map from the probabilities: ``"max"``
            probability, ``"entropy"`` (1 - normalised entropy) or ``"none"``.
        confidences: Chart -> ``(H, W)`` confidence maps (0..1, NaN masked) computed
            elsewhere (the predictor computes them tile by tile, without the full
            probability stack); their kind is ``confidence``. When given, no
            confidence is computed from ``probabilities``.

    Raises:
        DataError: Unknown ``confidence``, or ``confidences`` given with ``"none"``.
    """

    probabilities: Mapping[str, Any] | None = None
    confidence: Confidence = "max"
    confidences: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.confidence not in ("max", "entropy", "none"):
            raise DataError(
                f"confidence must be 'max', 'entropy' or 'none', got {self.confidence!r}"
            )
        if self.confidences and self.confidence == "none":
            raise DataError("confidence maps were given but confidence='none'; name their kind")


@dataclass(frozen=True)
class NetCDFOptions:
    """How a chart file stores its variables.

    Attributes:
        probability_encoding: ``"uint8"`` (packed, ``scale_factor`` 1/250, 4x smaller)
            or ``"float32"``, for probabilities and confidence maps.
        complevel: zlib level of every variable (0 = none). 1 is several times faster
            than 4 on noisy probabilities and within ~15 % of its size on class maps.
        latlon: Add per-pixel latitude/longitude coordinates from the tie points.

    Raises:
        DataError: Unknown encoding or a level outside 0..9.
    """

    probability_encoding: ProbabilityEncoding = "uint8"
    complevel: int = 1
    latlon: bool = True

    def __post_init__(self) -> None:
        if self.probability_encoding not in ("uint8", "float32"):
            raise DataError(
                "probability_encoding must be 'uint8' or 'float32', got "
                f"{self.probability_encoding!r}"
            )
        if not 0 <= self.complevel <= 9:
            raise DataError(f"complevel must be 0..9 (zlib), got {self.complevel}")


@dataclass(frozen=True)
class ExportProvenance:
    """What produced a chart file, recorded in its global attributes.

    Attributes:
        checkpoint: Model checkpoint path.
        config: Resolved config (YAML text, mapping or pydantic model), recorded as text.
        attrs: Extra global attributes.
    """

    checkpoint: str | os.PathLike[str] | None = None
    config: Any = None
    attrs: Mapping[str, Any] | None = None


NO_LAYERS = ProbabilityLayers()
"""Classes only: no probabilities, no confidence maps given."""
DEFAULT_NETCDF = NetCDFOptions()
"""Packed uint8 probabilities, zlib level 1, lat/lon coordinates."""
NO_PROVENANCE = ExportProvenance()
"""No checkpoint, config or extra attributes recorded."""


# ----------------------------------------------------------------------------- inputs


def scene_shape(scene: xr.Dataset) -> tuple[int, int]:
    """Return ``(sar_lines, sar_samples)`` of a scene dataset."""
    return scene.sizes[SAR_DIMS[0]], scene.sizes[SAR_DIMS[1]]


def scene_label(scene: xr.Dataset) -> str:
    """Return the scene's 19-character name (``attrs['scene_name']`` or ``scene_id``)."""
    name = scene.attrs.get("scene_name") or str(scene.attrs.get("scene_id", ""))[:19]
    return name or "scene"


def check_charts(
    charts: Mapping[str, Any], shape: tuple[int, int], what: str = "prediction"
) -> dict[str, np.ndarray]:
    """Validate predicted class arrays and return them as ``uint8`` numpy arrays.

    Args:
        charts: Chart -> ``(H, W)`` integer class array (255 = masked); any subset of
            SIC/SOD/FLOE, at least one.
        shape: The scene's ``(H, W)``.
        what: Named in error messages.

    Raises:
        DataError: Unknown chart, wrong shape, non-integer values or values outside
            the chart's classes and 255.
    """
    if not charts or set(charts) - set(CHARTS):
        raise DataError(
            f"{what} charts must be a non-empty subset of {list(CHARTS)}, got {list(charts)}"
        )
    out = {}
    for chart in CHARTS:
        if chart not in charts:
            continue
        arr = np.asarray(charts[chart])
        if arr.shape != shape:
            raise DataError(f"{what} '{chart}' has shape {arr.shape}, expected the scene's {shape}")
        if arr.dtype.kind not in "ui":
            raise DataError(
                f"{what} '{chart}' has dtype {arr.dtype}; expected integer class indices"
            )
        bad = (arr >= N_CLASSES[chart]) & (arr != CHART_FILL)
        if arr.dtype.kind == "i":
            bad |= arr < 0
        if bad.any():
            values = np.unique(arr[bad])[:10].tolist()
            raise DataError(
                f"{what} '{chart}' holds values {values}; expected 0..{N_CLASSES[chart] - 1} "
                f"or {CHART_FILL} (masked)"
            )
        out[chart] = arr.astype(np.uint8, copy=False)
    return out


def _check_probabilities(
    probabilities: Mapping[str, Any], charts: Mapping[str, np.ndarray], shape: tuple[int, int]
) -> dict[str, np.ndarray]:
    out = {}
    for chart, p in probabilities.items():
        if chart not in charts:
            raise DataError(f"probabilities given for '{chart}', which has no class array")
        arr = np.asarray(p)
        expected = (N_CLASSES[chart], *shape)
        if arr.shape != expected:
            raise DataError(
                f"probabilities '{chart}' have shape {arr.shape}, expected (classes, H, W) = "
                f"{expected}"
            )
        if arr.dtype.kind != "f" and arr.dtype != np.uint8:
            raise DataError(
                f"probabilities '{chart}' have dtype {arr.dtype}; expected floats in 0..1 "
                f"or uint8 packed as round(p * {PROBABILITY_SCALE}) with {CHART_FILL} = masked"
            )
        out[chart] = arr
    return out


def _check_confidences(
    confidences: Mapping[str, Any], charts: Mapping[str, np.ndarray], shape: tuple[int, int]
) -> dict[str, np.ndarray]:
    out = {}
    for chart, c in confidences.items():
        if chart not in charts:
            raise DataError(f"confidence given for '{chart}', which has no class array")
        arr = np.asarray(c)
        if arr.shape != shape or arr.dtype.kind != "f":
            raise DataError(
                f"confidence '{chart}' has shape {arr.shape} and dtype {arr.dtype}; expected "
                f"floats in 0..1 of the scene's shape {shape}"
            )
        out[chart] = arr
    return out


def unpack_probabilities(values: np.ndarray) -> np.ndarray:
    """Return float32 probabilities of packed ``uint8`` (``/ 250``, 255 -> NaN) or floats."""
    arr = np.asarray(values)
    if arr.dtype != np.uint8:
        return arr.astype(np.float32, copy=False)
    out = arr.astype(np.float32) / PROBABILITY_SCALE
    out[arr == CHART_FILL] = np.nan
    return out


# ----------------------------------------------------------------------------- attributes


def flag_meaning(name: str) -> str:
    """Turn a class name into a CF ``flag_meanings`` word (``"10 %"`` -> ``"10_percent"``)."""
    word = name.replace("%", "percent").strip().lower()
    word = re.sub(r"[^0-9a-z_.+@-]+", "_", word)
    return word.strip("_")


def flag_attrs(chart: str) -> dict[str, Any]:
    """Return the CF flag attributes of a class variable."""
    n = N_CLASSES[chart]
    return {
        "flag_values": np.arange(n, dtype=np.uint8),
        "flag_meanings": " ".join(flag_meaning(c) for c in CLASS_NAMES[chart]),
    }


def _config_text(config: Any) -> str:
    if config is None:
        return ""
    if isinstance(config, str):
        return config
    if hasattr(config, "model_dump"):
        from icecontext.config import dump_config

        return dump_config(config)
    import yaml

    return yaml.safe_dump(dict(config), sort_keys=False)


def provenance_attrs(
    scene: xr.Dataset,
    *,
    checkpoint: str | os.PathLike[str] | None,
    config: Any,
    extra: Mapping[str, Any] | None,
    title: str,
) -> dict[str, Any]:
    """Return the global attributes every export carries (CF, scene, model, software)."""
    from icecontext import __version__
    from icecontext.provenance import git_commit

    now = datetime.now(UTC).isoformat(timespec="seconds")
    attrs: dict[str, Any] = {
        "Conventions": CF_CONVENTIONS,
        "title": title,
        "summary": (
            "Sea ice concentration (SIC), stage of development (SOD) and floe size (FLOE) "
            "predicted per pixel on the Sentinel-1 SAR grid of an AI4Arctic scene (80 m)."
        ),
        "source": f"icecontext {__version__}",
        "history": f"{now} created by icecontext {__version__}",
        "date_created": now,
        "references": (
            "Vahedi et al. (2025), Investigating the Effect of Spatial Context on Multi-Task "
            "Sea Ice Segmentation; AI4Arctic Sea Ice Challenge dataset, doi:10.11583/DTU.c.6244065"
        ),
        "scene_name": scene_label(scene),
        "scene_id": str(scene.attrs.get("scene_id", "")),
        "ice_service": str(scene.attrs.get("ice_service", scene_label(scene)[16:19])),
        "pixel_spacing": int(scene.attrs.get("pixel_spacing", PIXEL_SPACING_M)),
        "input_file": str(scene.encoding.get("source", "")),
        "checkpoint": str(checkpoint) if checkpoint is not None else "",
        "config": _config_text(config),
        "icecontext_version": __version__,
        "icecontext_git_commit": git_commit() or "",
        "class_masked_value": CHART_FILL,
    }
    for key, value in (extra or {}).items():
        attrs[key] = value if isinstance(value, int | float | np.number) else str(value)
    return attrs


# ----------------------------------------------------------------------------- writer


def confidence_map(p: np.ndarray, kind: Literal["max", "entropy"]) -> np.ndarray:
    """Return a per-pixel confidence in 0..1 from class probabilities ``(C, H, W)``.

    ``"max"`` is the top class probability; ``"entropy"`` is ``1 - H(p) / log(C)``
    (1 = certain, 0 = uniform). Probabilities are renormalised to sum to 1 first;
    packed ``uint8`` probabilities are unpacked.
    """
    p = unpack_probabilities(p)
    total = p.sum(axis=0, keepdims=True)
    q = np.divide(p, total, out=np.full_like(p, np.nan), where=total > 0)
    if kind == "max":
        return q.max(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(q > 0, q * np.log(q), 0.0).sum(axis=0)
    return (1.0 - h / np.log(p.shape[0])).astype(np.float32)


def _pack(values: np.ndarray, masked: np.ndarray, encoding: ProbabilityEncoding) -> np.ndarray:
    """Store 0..1 values as float32 (NaN fill) or packed uint8 (255 fill); mask ``masked``.

    Values already packed (``uint8``) are copied as they are, or unpacked for float32.
    """
    if values.dtype == np.uint8:
        if encoding == "float32":
            return _pack(unpack_probabilities(values), masked, encoding)
        out = values.copy()
        out[..., masked] = CHART_FILL
        return out
    invalid = masked | (np.isnan(values).any(axis=0) if values.ndim == 3 else np.isnan(values))
    if encoding == "float32":
        out = values.astype(np.float32, copy=True)
        out[..., invalid] = np.nan
        return out
    out = np.rint(np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0) * PROBABILITY_SCALE)
    out = out.astype(np.uint8)
    out[..., invalid] = CHART_FILL
    return out


def _packed_attrs(encoding: ProbabilityEncoding) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (attributes, netCDF encoding) of a probability-like variable.

    The uint8 data are packed here, so ``scale_factor``/``add_offset`` go into the
    attributes (written as they are) rather than into xarray's encoding, which would
    rescale the already packed values.
    """
    attrs: dict[str, Any]
    if encoding == "float32":
        attrs = {"units": "1", "valid_range": np.array([0.0, 1.0], np.float32)}
        return attrs, {"_FillValue": np.float32(np.nan)}
    attrs = {
        "units": "1",
        "scale_factor": np.float32(1.0 / PROBABILITY_SCALE),
        "add_offset": np.float32(0.0),
        "valid_range": np.array([0, PROBABILITY_SCALE], np.uint8),
    }
    return attrs, {"_FillValue": np.uint8(CHART_FILL)}


Variable = tuple[xr.DataArray, dict[str, Any]]
"""A data variable and its NetCDF encoding."""


@dataclass(frozen=True)
class _Storage:
    """The per-variable NetCDF encoding shared by every variable of one file."""

    options: NetCDFOptions
    chunks: tuple[int, int]

    @classmethod
    def of(cls, options: NetCDFOptions, shape: tuple[int, int]) -> _Storage:
        return cls(options, (min(shape[0], 1024), min(shape[1], 1024)))

    def encoding(self, fill: Any, *, classes: bool = False) -> dict[str, Any]:
        """Return the zlib settings, ``_FillValue`` and chunks (a class per chunk: ``classes``)."""
        level = self.options.complevel
        return {
            "zlib": level > 0,
            "complevel": level,
            "shuffle": True,
            "_FillValue": fill,
            "chunksizes": (1, *self.chunks) if classes else self.chunks,
        }


def _class_variables(chart: str, values: np.ndarray, storage: _Storage) -> dict[str, Variable]:
    """The class variable of a chart, and ``SIC_percent`` beside ``SIC``."""
    attrs = {
        "long_name": f"{CHART_LONG_NAMES[chart].removesuffix(' [%]')} class",
        **flag_attrs(chart),
        "class_names": "; ".join(CLASS_NAMES[chart]),
    }
    if chart == "SIC":
        attrs["long_name"] = "sea ice concentration class (tenths: class k = k x 10 %)"
    fill = np.uint8(CHART_FILL)
    out = {chart: (xr.DataArray(values, dims=SAR_DIMS, attrs=attrs), storage.encoding(fill))}
    if chart == "SIC":
        pct = np.where(values == CHART_FILL, CHART_FILL, values * 10).astype(np.uint8)
        percent = xr.DataArray(
            pct,
            dims=SAR_DIMS,
            attrs={
                "long_name": "sea ice concentration",
                "standard_name": "sea_ice_area_fraction",
                "units": "%",
                "valid_range": np.array([0, 100], dtype=np.uint8),
                "comment": "class index x 10; classes are 10 % bins of the ice chart",
            },
        )
        out["SIC_percent"] = (percent, storage.encoding(fill))
    return out


def _class_coordinate(chart: str) -> dict[str, xr.DataArray]:
    """The ``{chart}_class`` coordinate of a probability variable's class axis."""
    class_dim = f"{chart}_class"
    return {
        class_dim: xr.DataArray(
            np.arange(N_CLASSES[chart], dtype=np.uint8),
            dims=class_dim,
            attrs={"long_name": f"{chart} class index", **flag_attrs(chart)},
        )
    }


def _probability_variable(
    chart: str, p: np.ndarray, masked: np.ndarray, storage: _Storage
) -> Variable:
    """``{chart}_probability``: ``(class, lines, samples)``, packed or float32."""
    encoding = storage.options.probability_encoding
    var_attrs, var_enc = _packed_attrs(encoding)
    data = xr.DataArray(
        _pack(p, masked, encoding),
        dims=(f"{chart}_class", *SAR_DIMS),
        coords=_class_coordinate(chart),
        attrs={"long_name": f"{CHART_LONG_NAMES[chart]} class probability", **var_attrs},
    )
    return data, storage.encoding(var_enc["_FillValue"], classes=True)


def _confidence_variable(
    chart: str, conf: np.ndarray, masked: np.ndarray, kind: Confidence, storage: _Storage
) -> Variable:
    """``{chart}_confidence``: ``(lines, samples)``, stored as the probabilities are."""
    encoding = storage.options.probability_encoding
    var_attrs, var_enc = _packed_attrs(encoding)
    definition = (
        "maximum class probability" if kind == "max" else "1 - entropy(p) / log(number of classes)"
    )
    data = xr.DataArray(
        _pack(np.asarray(conf), masked, encoding),
        dims=SAR_DIMS,
        attrs={"long_name": f"{chart} confidence: {definition}", **var_attrs},
    )
    return data, storage.encoding(var_enc["_FillValue"])


def _latlon_coordinates(scene: xr.Dataset, storage: _Storage) -> dict[str, Variable]:
    """Per-pixel ``latitude``/``longitude`` interpolated from the tie points."""
    lat, lon = scene_latlon(scene)
    out = {}
    for name, values, units in (
        ("latitude", lat, "degrees_north"),
        ("longitude", lon, "degrees_east"),
    ):
        attrs = {"standard_name": name, "long_name": name, "units": units}
        out[name] = (xr.DataArray(values, dims=SAR_DIMS, attrs=attrs), storage.encoding(None))
    return out


def _confidence_maps(
    kind: Confidence, probs: Mapping[str, np.ndarray], given: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The confidence maps given, else those of the probabilities (none for ``"none"``)."""
    if given or kind == "none":
        return dict(given)
    return {chart: confidence_map(p, kind) for chart, p in probs.items()}


def build_chart_dataset(
    scene: xr.Dataset,
    charts: Mapping[str, Any],
    *,
    layers: ProbabilityLayers = NO_LAYERS,
    options: NetCDFOptions = DEFAULT_NETCDF,
    provenance: ExportProvenance = NO_PROVENANCE,
) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """Build the CF chart dataset and its NetCDF encoding (see the module docstring).

    Arguments as :func:`write_chart_netcdf`.

    Returns:
        ``(dataset, encoding)`` ready for ``to_netcdf``. Values are stored raw (uint8
        classes with 255, packed probabilities); CF decoding happens on read.
    """
    shape = scene_shape(scene)
    classes = check_charts(charts, shape)
    probs = _check_probabilities(layers.probabilities or {}, classes, shape)
    given_conf = _check_confidences(layers.confidences or {}, classes, shape)
    storage = _Storage.of(options, shape)
    variables: dict[str, Variable] = {}
    for chart, values in classes.items():
        variables.update(_class_variables(chart, values, storage))
    masked = {chart: values == CHART_FILL for chart, values in classes.items()}
    for chart, p in probs.items():
        variables[f"{chart}_probability"] = _probability_variable(chart, p, masked[chart], storage)
    for chart, conf in _confidence_maps(layers.confidence, probs, given_conf).items():
        variables[f"{chart}_confidence"] = _confidence_variable(
            chart, conf, masked[chart], layers.confidence, storage
        )

    ds = xr.Dataset()
    for name, (data, _) in variables.items():
        ds[name] = data
    coords = _latlon_coordinates(scene, storage) if options.latlon else {}
    ds = ds.assign_coords({name: data for name, (data, _) in coords.items()})
    ds.attrs = provenance_attrs(
        scene,
        checkpoint=provenance.checkpoint,
        config=provenance.config,
        extra=provenance.attrs,
        title=f"Predicted sea ice charts for AI4Arctic scene {scene_label(scene)}",
    )
    encoding = {name: enc for name, (_, enc) in (variables | coords).items()}
    return ds, encoding


def write_chart_netcdf(
    path: str | os.PathLike[str],
    scene: xr.Dataset,
    charts: Mapping[str, Any],
    *,
    layers: ProbabilityLayers = NO_LAYERS,
    options: NetCDFOptions = DEFAULT_NETCDF,
    provenance: ExportProvenance = NO_PROVENANCE,
) -> Path:
    """Write one scene's predicted charts as a CF-1.11 NetCDF-4 file (atomically).

    Args:
        path: Output file (``{scene}_charts.nc`` by convention).
        scene: The input scene as :func:`icecontext.data.io.scene.open_scene` returns it
            (used for the grid, tie points and names; its data are not copied).
        charts: Chart -> ``(H, W)`` integer classes, 255 where masked.
        layers: Optional probabilities and confidence maps (:class:`ProbabilityLayers`;
            by default none, and the ``"max"`` confidence of any probabilities given).
        options: Storage: probability encoding, zlib level, lat/lon coordinates
            (:class:`NetCDFOptions`).
        provenance: Checkpoint, config and extra global attributes
            (:class:`ExportProvenance`).

    Returns:
        The written path.

    Raises:
        DataError: If the arrays do not fit the scene or hold invalid values.
        ExportError: If the output folder is not writable (no partial file is left).
    """
    ds, encoding = build_chart_dataset(
        scene, charts, layers=layers, options=options, provenance=provenance
    )
    with export_target(path, "NetCDF chart file") as tmp:
        ds.to_netcdf(tmp, format="NETCDF4", engine="netcdf4", encoding=encoding)
    return Path(path)
