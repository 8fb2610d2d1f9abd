"""icecontext: multi-task sea ice charting with controllable spatial context.

One network predicts sea ice concentration (SIC), stage of development (SOD) and
floe size (FLOE) per pixel from Sentinel-1 SAR, AMSR2 and auxiliary inputs of the
AI4Arctic Sea Ice Challenge format; the receptive field of its ASPP decoders is a
configuration option, so spatial context can be studied as an experimental variable.

The names below are the public API (docs/api.md). They are imported on first use, so
``import icecontext`` stays light (the command line starts without torch).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("icecontext")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

# public name -> module that defines it
_API = {
    "open_scene": "icecontext.data.io.scene",
    "prepare_store": "icecontext.data.store.prepare",
    "SynthParams": "icecontext.synthetic.params",
    "generate_scene": "icecontext.synthetic.generator",
    "write_synthetic_scene": "icecontext.synthetic.files",
    "ModelConfig": "icecontext.models.config",
    "build_model": "icecontext.models.multitask",
    "score_charts": "icecontext.evaluation.metrics",
    "PredictSettings": "icecontext.inference.scenes",
    "predict_scenes": "icecontext.inference.scenes",
    "RunConfig": "icecontext.run.config",
    "load_run_config": "icecontext.run.config",
    "train": "icecontext.training.fit",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562)."""
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'icecontext' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
