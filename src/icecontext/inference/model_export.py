"""Export the deployable inference path of a checkpoint: TorchScript or ONNX, plus JSON.

``model.pt`` is the network scripted with :func:`torch.jit.script` (``forward(x) ->
{"SIC", "SOD", "FLOE"}`` at the input size, and the exported ``to_classes`` /
``to_probabilities`` methods with the project's SIC rounding rule); it runs with
``torch`` alone, without icecontext, Lightning or timm. ``model.json`` beside it holds
what a caller needs to feed it: the input channels in order with their z-scoring
constants, the data downsampling ``K``, the 2 km upsampling mode, class names, the
receptive field (for tile margins) and the tiling defaults. ``icecontext predict``
and ``submission`` accept ``model.pt`` in place of a checkpoint.

``--format onnx`` writes ``model.onnx`` instead (:mod:`icecontext.inference.onnx_model`:
input ``x``, outputs ``SIC``/``SOD``/``FLOE``, dynamic batch, height and width), for
ONNX Runtime in any language; it needs the optional extra ``icecontext[onnx]``.
``predict`` and ``submission`` run it through onnxruntime.

The export is verified before it is written: eager and exported outputs of a seeded
random input must agree within ``atol`` times the outputs' scale (their largest
magnitude, at least 1: untrained deep models have logits of 1e5 and more), recorded in
the JSON as ``verified_max_abs_diff`` and ``verified_output_scale``. TorchScript
remains the default: it loads in every torch 2.x runtime and in C++ (libtorch) with no
other package.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch

from icecontext.atomic import atomic_path, write_text_atomic
from icecontext.data.io.format import CHARTS, CLASS_NAMES, N_CLASSES
from icecontext.errors import ConfigError, DataError
from icecontext.inference.exports.output import ExportError
from icecontext.inference.loading import InferenceModel, load_inference_model, metadata_path
from icecontext.inference.tiling import DEFAULT_ALIGN

ExportFormat = Literal["torchscript", "onnx"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("torchscript", "onnx")
DEFAULT_NAMES: dict[str, str] = {"torchscript": "model.pt", "onnx": "model.onnx"}


@dataclass
class ExportResult:
    """What :func:`export_model` wrote.

    Attributes:
        model_path: The TorchScript or ONNX file.
        metadata_path: The metadata JSON.
        max_abs_diff: Largest difference between eager and exported outputs on the check.
        metadata: The JSON content.
    """

    model_path: Path
    metadata_path: Path
    max_abs_diff: float
    metadata: dict[str, Any]


def script_model(model: torch.nn.Module) -> torch.jit.ScriptModule:
    """Script a multi-task model (``torch.jit.script``; its deprecation warning silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return torch.jit.script(model.eval())
        except Exception as exc:  # torch.jit raises several frontend error types
            raise DataError(f"the model cannot be scripted with TorchScript: {exc}") from exc


def compare_outputs(
    eager: torch.nn.Module,
    exported: torch.nn.Module,
    in_channels: int,
    sizes: tuple[tuple[int, int], ...] = ((96, 128), (160, 224)),
    seed: int = 0,
) -> tuple[float, float]:
    """How far two models' outputs are apart on seeded random batches of several sizes.

    Each output is compared at its own scale (its largest eager magnitude, at least 1),
    so a head with huge logits cannot hide an error in a small one (the SIC regression
    value); two sizes check that the export is not tied to one input size.

    Returns:
        ``(largest absolute difference, its output's scale)`` for the output with the
        largest difference relative to its scale.
    """
    gen = torch.Generator().manual_seed(seed)
    worst = (0.0, 1.0)
    for i, (h, w) in enumerate(sizes):
        x = torch.randn(2 - i % 2, in_channels, h, w, generator=gen)
        with torch.no_grad():
            a = eager.eval()(x)
            b = exported.eval()(x)
        if set(a) != set(b):
            raise DataError(f"exported outputs {sorted(b)} differ from the eager ones {sorted(a)}")
        for k in a:
            diff = float((a[k] - b[k].to(a[k].dtype)).abs().max())
            scale = max(1.0, float(a[k].abs().max()))
            if diff / scale > worst[0] / worst[1]:
                worst = (diff, scale)
    return worst


def export_metadata(model: InferenceModel, fmt: ExportFormat) -> dict[str, Any]:
    """The ``model.json`` content of an export (see the module docstring)."""
    from icecontext import __version__
    from icecontext.data.io.variables import CATALOGUE

    cfg = model.config
    sic_mode = getattr(getattr(cfg, "model", None), "sic_mode", None)
    return {
        "format": fmt,
        "icecontext_version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "checkpoint": str(model.path.resolve()),
        "features": list(model.features),
        "in_channels": len(model.features),
        "normalisation": {
            f: {
                "mean": CATALOGUE[f].mean,
                "std": CATALOGUE[f].std,
                "units": CATALOGUE[f].units,
                "grid": CATALOGUE[f].grid,
            }
            for f in model.features
        },
        "input": (
            "float32 (B, C, H, W), channels in 'features' order, z-scored as "
            "(value - mean) / std (the AI4Arctic files already are), 0 = no data; "
            f"H and W multiples of {DEFAULT_ALIGN} for tiles that stitch exactly"
        ),
        "outputs": {
            "SIC": "(B, 1, H, W) regression in tenths (round, clip 0..10)"
            if sic_mode == "regression"
            else "(B, 11, H, W) logits",
            "SOD": "(B, 6, H, W) logits",
            "FLOE": "(B, 7, H, W) logits",
        },
        "sic_mode": sic_mode,
        "class_names": {c: list(CLASS_NAMES[c]) for c in CHARTS},
        "n_classes": {c: N_CLASSES[c] for c in CHARTS},
        "downsample": model.downsample,
        "pixel_spacing_m": 80 * model.downsample,
        "upsampling": model.upsampling,
        "receptive_field_px": model.receptive_field,
        "align": DEFAULT_ALIGN,
        "tile": model.tile,
        "batch": model.batch,
        "config": cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else cfg,
    }


def export_model(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fmt: ExportFormat = "torchscript",
    atol: float = 1e-4,
) -> ExportResult:
    """Export a checkpoint's network as TorchScript or ONNX with its metadata JSON.

    Args:
        checkpoint: ``best.ckpt`` / ``last.ckpt`` of a run.
        out: The model file (``model.pt`` / ``model.onnx``); the JSON goes to the same
            name with ``.json``.
        fmt: ``"torchscript"`` or ``"onnx"`` (needs ``icecontext[onnx]``).
        atol: Largest eager-vs-exported output difference accepted, per unit of the
            outputs' scale (their largest magnitude, at least 1).

    Returns:
        The written files and the check's difference.

    Raises:
        ConfigError: ``--format`` unknown or its packages missing, ``--out`` ending in
            ``.json``, missing checkpoint.
        DataError: Not a checkpoint, not exportable, or the exported outputs differ.
        ExportError: The output folder is not writable (nothing is left behind).
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError("--format", f"must be one of {list(EXPORT_FORMATS)}, got {fmt!r}")
    out = Path(out)
    if out.suffix == ".json":
        raise ConfigError("--out", f"{out}: the model file cannot be the metadata .json")
    if fmt == "onnx":
        from icecontext.inference.onnx_model import require_onnx

        require_onnx()  # before any work
    loaded = load_inference_model(checkpoint, "cpu")
    if loaded.kind != "checkpoint":
        raise DataError(f"{checkpoint}: already an exported model; export a training checkpoint")
    meta = export_metadata(loaded, fmt)
    meta_file = metadata_path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            diff, scale = _write_verified(loaded, fmt, tmp, meta, atol)
        meta["verified_max_abs_diff"] = diff
        meta["verified_output_scale"] = scale
        write_text_atomic(meta_file, json.dumps(meta, indent=2, default=str) + "\n")
    except OSError as exc:
        if out.exists() and not meta_file.exists():
            out.unlink()
        raise ExportError(
            f"{out}: cannot write the exported model: output folder {out.parent} is not "
            f"writable ({exc.strerror or exc})"
        ) from exc
    return ExportResult(out, meta_file, diff, meta)


def _write_verified(
    loaded: InferenceModel, fmt: ExportFormat, path: Path, meta: dict[str, Any], atol: float
) -> tuple[float, float]:
    """Write the export to ``path``; return its eager-vs-export difference and output scale.

    ``meta`` is the export's metadata (what loads the ONNX file back for the check).

    Raises:
        DataError: The export fails or differs from the eager model by more than ``atol``.
    """
    n = len(loaded.features)
    if fmt == "onnx":
        from icecontext.inference.onnx_model import export_onnx, load_onnx_model

        export_onnx(loaded.model, path, n)
        exported: torch.nn.Module = load_onnx_model(path, meta)
    else:
        exported = script_model(loaded.model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # jit.save is deprecated in 2.14
            torch.jit.save(exported, str(path))
    diff, scale = compare_outputs(loaded.model, exported, n)
    if not diff <= atol * scale:
        label = "ONNX" if fmt == "onnx" else "TorchScript"
        raise DataError(
            f"{loaded.path}: the {label} outputs differ from the eager ones by {diff:.3g} "
            f"(> {atol} x output scale {scale:.3g}); not exported"
        )
    return diff, scale
