"""ONNX export of the network, and the ONNX Runtime model that ``predict`` can run.

Optional: needs ``pip install 'icecontext[onnx]'`` (``onnx``, ``onnxscript`` for
:func:`torch.onnx.export`, ``onnxruntime`` to check and run the export). The graph
has one input ``x`` (``(B, C, H, W)`` float32, batch, height and width dynamic) and
three outputs ``SIC``, ``SOD``, ``FLOE`` at the input's size, as the network's
``forward`` returns them; class maps and probabilities follow the same rules as the
network (:func:`~icecontext.models.multitask.outputs_to_classes`), applied by
:class:`OnnxModel` or by the caller from ``model.onnx.json``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from icecontext.data.io.format import CHARTS
from icecontext.errors import ConfigError, DataError
from icecontext.models.multitask import outputs_to_classes, outputs_to_probabilities

ONNX_INPUT = "x"
ONNX_OUTPUTS: tuple[str, ...] = tuple(CHARTS)
ONNX_EXTRA = "pip install 'icecontext[onnx]'"

log = logging.getLogger(__name__)


def require_onnx(option: str = "--format", *, runtime_only: bool = False) -> Any:
    """Import ``onnxruntime`` (and for exporting ``onnx``/``onnxscript``); return it.

    Args:
        option: The option to name in the error.
        runtime_only: Running an export needs only ``onnxruntime``.

    Raises:
        ConfigError: Naming ``option`` when the optional packages are missing.
    """
    try:
        if not runtime_only:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(
            option,
            f"ONNX needs the optional packages onnx, onnxscript and onnxruntime "
            f"({exc.name} is missing): {ONNX_EXTRA}",
        ) from None
    return onnxruntime


class _TupleOutputs(nn.Module):
    """The network with its outputs as a tuple in :data:`ONNX_OUTPUTS` order."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[task] for task in ONNX_OUTPUTS)


def export_onnx(model: nn.Module, path: str | os.PathLike[str], in_channels: int) -> None:
    """Write ``model`` as a single ONNX file with dynamic batch, height and width.

    Uses the ``torch.export``-based exporter (``dynamo=True``); weights are stored inside
    the file (models here are far below protobuf's 2 GB limit).

    Raises:
        DataError: If the exporter fails on the model.
    """
    require_onnx()
    sample = torch.randn(1, in_channels, 96, 128, generator=torch.Generator().manual_seed(0))
    auto = torch.export.Dim.AUTO
    wrapped = _TupleOutputs(model).eval()
    try:
        # the exporter reports its steps on stdout and warns about internals: keep quiet
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapped,
                (sample,),
                dynamo=True,
                input_names=[ONNX_INPUT],
                output_names=list(ONNX_OUTPUTS),
                dynamic_shapes={"x": {0: auto, 2: auto, 3: auto}},
                verbose=False,
            )
            if program is None:  # only without dynamo=True
                raise DataError("the ONNX exporter returned no program")
            program.save(str(path), external_data=False)
    except Exception as exc:  # the exporter raises many error types
        raise DataError(f"the model cannot be exported to ONNX: {exc}") from exc


class OnnxModel(nn.Module):
    """An ONNX export run by ONNX Runtime, with the network's interface.

    ``forward(x)`` returns ``{"SIC", "SOD", "FLOE"}`` tensors on ``x``'s device;
    ``to_classes``, ``to_probabilities`` and ``receptive_field`` behave as the network's,
    so the tiled predictor runs it unchanged. It holds no parameters; the session runs
    on the CPU, or on the CUDA device ``device`` names when onnxruntime has its CUDA
    provider (``onnxruntime-gpu``); without it the CPU is used, with a warning.

    Args:
        path: The ``.onnx`` file.
        sic_regression: Whether the SIC output is a 1-channel regression.
        receptive_field: Theoretical receptive field in pixels (``None``: unbounded).
        device: ``cpu`` or a CUDA device.
        threads: Intra-op threads (default: torch's thread count).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        sic_regression: bool,
        receptive_field: int | None,
        device: str | torch.device = "cpu",
        threads: int | None = None,
    ) -> None:
        super().__init__()
        ort = require_onnx("--checkpoint", runtime_only=True)
        providers: list[Any] = ["CPUExecutionProvider"]
        dev = torch.device(device)
        if dev.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": dev.index or 0}))
            else:
                log.warning(
                    "onnxruntime has no CUDA provider (install onnxruntime-gpu for %s): "
                    "the ONNX model runs on the CPU",
                    dev,
                )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own error types
            raise DataError(f"{path}: cannot be loaded by onnxruntime: {exc}") from exc
        names = [o.name for o in self.session.get_outputs()]
        if tuple(names) != ONNX_OUTPUTS:
            raise DataError(f"{path}: outputs {names}, expected {list(ONNX_OUTPUTS)}")
        self.sic_regression = bool(sic_regression)
        self._receptive_field = receptive_field

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the session on ``x`` (float32; any batch, height and width)."""
        arrays = self.session.run(None, {ONNX_INPUT: x.detach().float().cpu().numpy()})
        pairs = zip(ONNX_OUTPUTS, arrays, strict=True)
        return {task: torch.from_numpy(a).to(x.device) for task, a in pairs}

    def to_classes(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Class maps, as the network's ``to_classes``."""
        return outputs_to_classes(outputs, self.sic_regression)

    def to_probabilities(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Probabilities, as the network's ``to_probabilities``."""
        return outputs_to_probabilities(outputs, self.sic_regression)

    def receptive_field(self) -> int | None:
        """The exported network's theoretical receptive field (from the metadata JSON)."""
        return self._receptive_field


def load_onnx_model(
    path: Path, meta: dict[str, Any], device: str | torch.device = "cpu"
) -> OnnxModel:
    """The :class:`OnnxModel` of an export and its metadata."""
    rf = meta.get("receptive_field_px")
    return OnnxModel(
        path,
        sic_regression=meta.get("sic_mode") == "regression",
        receptive_field=None if rf is None else int(rf),
        device=device,
    )
