"""``ModelConfig``: the ``model:`` section of a run configuration.

The receptive field is the experimental variable of the study, so every part of the
network that sets it is an option here: the encoder's output stride and truncation
depth, the ASPP atrous rates (one list for all tasks plus per-task overrides) and the
ASPP pooling branch.

Example (``configs/model/small_cpu.yaml``)::

    model:
      encoder: {name: resnet18, backend: timm, depth: layer3, output_stride: 16}
      aspp: {rates: [6, 12, 18], channels: 32, dropout: 0.1, pooling: "avg:3"}
      task_rates: {SOD: [2, 4, 6]}
      sic_mode: regression

Cross-field problems raise :class:`~icecontext.errors.ConfigError` naming the dotted
option under ``model.`` (the section's name in every run configuration).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import (
    Field,
    PositiveInt,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from icecontext.config import Section, apply_overrides, load_yaml, validate
from icecontext.data.io.format import CHARTS, N_CLASSES
from icecontext.errors import ConfigError

EncoderName = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
Backend = Literal["timm", "torchvision"]
Depth = Literal["layer1", "layer2", "layer3", "layer4"]
OutputStride = Literal[4, 8, 16, 32]
SicMode = Literal["regression", "classification"]
Task = Literal["SIC", "SOD", "FLOE"]

SECTION: Final = "model"
"""Name of the section in run configurations; used as the prefix of option names."""

NATURAL_STRIDE: Final[dict[str, int]] = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
"""Output stride of a ResNet truncated after each stage, without dilation."""

BASIC_BLOCK_ENCODERS: Final = ("resnet18", "resnet34")
"""Encoders built from BasicBlocks (torchvision cannot dilate these)."""

_POOLING_RE: Final = re.compile(r"^(global|none|avg:(?P<k>\d+))$")


@dataclass(frozen=True)
class Pooling:
    """A parsed ASPP pooling choice.

    Attributes:
        kind: ``"global"`` (image-level average, DeepLabv3), ``"avg"`` (stride-1 local
            average of ``kernel`` x ``kernel`` feature cells) or ``"none"``.
        kernel: Window size for ``"avg"``; 0 otherwise.
    """

    kind: Literal["global", "avg", "none"]
    kernel: int = 0

    def __str__(self) -> str:
        return f"avg:{self.kernel}" if self.kind == "avg" else self.kind


def parse_pooling(text: str, option: str = f"{SECTION}.aspp.pooling") -> Pooling:
    """Parse ``"global"``, ``"none"`` or ``"avg:K"`` (K odd, so the window is centred).

    Raises:
        ConfigError: Naming ``option`` if the text is not one of the forms.
    """
    m = _POOLING_RE.match(str(text).strip())
    if m is None:
        raise ConfigError(option, f"expected 'global', 'none' or 'avg:K' (K odd), got {text!r}")
    if m.group("k") is None:
        return Pooling(m.group(1))  # type: ignore[arg-type]
    k = int(m.group("k"))
    if k < 1 or k % 2 == 0:
        raise ConfigError(
            option, f"'avg:K' needs an odd K >= 1 so the window is centred on its cell, got {k}"
        )
    return Pooling("avg", k)


class EncoderConfig(Section):
    """ResNet encoder.

    Attributes:
        name: ResNet depth variant.
        backend: ``timm`` (any output stride for every depth) or ``torchvision``
            (the reference lab's implementation; cannot dilate ResNet-18/34).
        depth: Last stage kept (``layer3`` as in the reference AutoICE model;
            ``layer1`` gives the smallest encoder field, 43 px, for context studies).
        output_stride: Input pixels per feature cell; strides below the natural stride
            of ``depth`` (4/8/16/32 for layer1/2/3/4) are replaced by dilation (down to 8;
            ``layer1`` is always 4).
        width: Multiplier of the channel count of every stage ``layer1..4`` (timm only;
            the 7x7 stem keeps 64; 1 = the standard ResNet). Narrow encoders (0.5)
            train faster on CPUs; ImageNet weights exist only for width 1.
        pretrained: Local ImageNet weights file (``.pth``/``.pt``/``.bin`` or
            ``.safetensors``) in torchvision/timm ResNet key layout; ``null`` = random
            initialisation. Nothing is ever downloaded.
    """

    name: EncoderName = "resnet18"
    backend: Backend = "timm"
    depth: Depth = "layer3"
    output_stride: OutputStride = 16
    width: float = Field(default=1.0, gt=0.0, le=1.0)
    pretrained: Path | None = None


class ASPPConfig(Section):
    """Atrous spatial pyramid pooling.

    Attributes:
        rates: Atrous rates of the 3x3 branches (any number, each >= 1); a 1x1 branch
            is always present.
        channels: Width of every branch and of the fused output.
        dropout: Dropout after the 1x1 fusion (0 disables it).
        pooling: ``global`` | ``avg:K`` | ``none``; see docs/models.md for what each
            does to full-scene inference.
    """

    rates: list[PositiveInt] = Field(default_factory=lambda: [6, 12, 18], min_length=1)
    channels: PositiveInt = 32
    dropout: float = Field(default=0.5, ge=0.0, lt=1.0)
    pooling: str = "avg:3"

    @field_validator("pooling")
    @classmethod
    def _check_pooling(cls, value: str) -> str:
        try:
            return str(parse_pooling(value))
        except ConfigError as exc:
            raise ValueError(exc.problem) from None

    @property
    def pooling_choice(self) -> Pooling:
        """The parsed pooling choice."""
        return parse_pooling(self.pooling)


class ModelConfig(Section):
    """The multi-task network.

    Attributes:
        encoder: ResNet encoder options.
        aspp: ASPP options shared by the task decoders.
        task_rates: Per-task atrous-rate overrides, e.g. ``{SOD: [2, 4, 6]}``; tasks
            not named use ``aspp.rates``. Not allowed with ``shared_decoder``.
        shared_decoder: One ASPP decoder for all tasks, with a 1x1 head per task,
            instead of one decoder per task.
        project_channels: Width of the 3x3 convolution after the ASPP (default:
            ``aspp.channels``).
        sic_mode: ``regression`` (one output, class index as a number) or
            ``classification`` (11 classes).
        in_channels: Number of input channels, when the config states it; it must
            agree with ``data.features`` when both are given.
        allow_untrained_taps: Train even when an atrous rate's taps read only zero
            padding in the training patches (they keep their random weights and run at
            inference; see :mod:`icecontext.models.trained_context`). Off by default:
            training refuses such a configuration. Saved in the resolved config only
            when true, so configs written before the option existed still match.
    """

    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    aspp: ASPPConfig = Field(default_factory=ASPPConfig)
    task_rates: dict[Task, list[PositiveInt]] = Field(default_factory=dict)
    shared_decoder: bool = False
    project_channels: PositiveInt | None = None
    sic_mode: SicMode = "regression"
    in_channels: PositiveInt | None = None
    allow_untrained_taps: bool = False

    @model_serializer(mode="wrap")
    def _omit_default_allow(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Resuming compares the saved config key by key, and the sweep identifies runs by
        # their config: the default must serialise as before the option existed.
        data = handler(self)
        if not self.allow_untrained_taps:
            data.pop("allow_untrained_taps", None)
        return data

    @field_validator("task_rates")
    @classmethod
    def _check_task_rates(cls, value: dict[str, list[int]]) -> dict[str, list[int]]:
        for task, rates in value.items():
            if not rates:
                raise ValueError(f"the rate list of {task} is empty; give at least one rate")
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> ModelConfig:
        enc = self.encoder
        natural = NATURAL_STRIDE[enc.depth]
        if enc.output_stride > natural:
            raise ConfigError(
                f"{SECTION}.encoder.output_stride",
                f"{enc.output_stride} is impossible for an encoder truncated after {enc.depth} "
                f"(its stride without dilation is {natural}); choose "
                f"{' or '.join(str(s) for s in (4, 8, 16, 32) if s <= natural)}",
            )
        if enc.output_stride < min(natural, 8):
            raise ConfigError(
                f"{SECTION}.encoder.output_stride",
                f"{enc.output_stride} needs dilation in the stem, which ResNets do not have; "
                "the smallest output stride is 8 (or 4 with encoder.depth=layer1)",
            )
        if enc.width != 1.0:
            if enc.backend != "timm":
                raise ConfigError(
                    f"{SECTION}.encoder.width",
                    f"{enc.width} needs encoder.backend=timm (torchvision ResNets have fixed "
                    "widths)",
                )
            if round(64 * enc.width) != 64 * enc.width or 64 * enc.width < 8:
                raise ConfigError(
                    f"{SECTION}.encoder.width",
                    f"{enc.width} must make layer1's 64 channels a whole number of at least 8 "
                    "(e.g. 0.125, 0.25, 0.5, 0.75)",
                )
            if enc.pretrained is not None:
                raise ConfigError(
                    f"{SECTION}.encoder.pretrained",
                    f"ImageNet weights fit only the standard width; encoder.width is {enc.width}",
                )
        if (
            enc.backend == "torchvision"
            and enc.name in BASIC_BLOCK_ENCODERS
            and enc.output_stride < natural
        ):
            raise ConfigError(
                f"{SECTION}.encoder.output_stride",
                f"torchvision's {enc.name} cannot replace strides by dilation (BasicBlock); "
                f"use encoder.backend=timm or output_stride={natural}",
            )
        if self.shared_decoder and self.task_rates:
            raise ConfigError(
                f"{SECTION}.task_rates",
                "per-task rates need one decoder per task; remove them or set shared_decoder=false",
            )
        return self

    def rates_for(self, task: str) -> list[int]:
        """Atrous rates used by ``task``'s decoder."""
        return list(self.task_rates.get(task, self.aspp.rates))  # type: ignore[call-overload]

    @property
    def out_channels(self) -> dict[str, int]:
        """Output channels per task (SIC 1 or 11, SOD 6, FLOE 7)."""
        return {
            t: (1 if t == "SIC" and self.sic_mode == "regression" else N_CLASSES[t]) for t in CHARTS
        }

    def resolve_paths(self, base_dir: str | os.PathLike[str]) -> ModelConfig:
        """Return a copy whose relative ``encoder.pretrained`` path is taken from ``base_dir``.

        Config files hold paths relative to their own folder; the loader calls this
        with the file's folder.
        """
        path = self.encoder.pretrained
        if path is None or path.is_absolute():
            return self
        encoder = self.encoder.model_copy(update={"pretrained": Path(base_dir) / path})
        return self.model_copy(update={"encoder": encoder})


def resolve_in_channels(cfg: ModelConfig, features: Iterable[str] | str | None) -> int:
    """Return the number of input channels from ``model.in_channels`` and/or ``data.features``.

    Args:
        cfg: The model section.
        features: The ``data.features`` selectors, or ``None`` when the config has none.

    Raises:
        ConfigError: ``model.in_channels`` when it disagrees with the channels the
            feature selection gives, or when neither is given; ``data.features`` when a
            selector is unknown.
    """
    from icecontext.data.io.variables import resolve_features

    if features is None:
        if cfg.in_channels is None:
            raise ConfigError(
                f"{SECTION}.in_channels",
                "the number of input channels is unknown; set model.in_channels or data.features",
            )
        return cfg.in_channels
    names = resolve_features(features, option="data.features")
    if cfg.in_channels is not None and cfg.in_channels != len(names):
        raise ConfigError(
            f"{SECTION}.in_channels",
            f"is {cfg.in_channels} but data.features selects {len(names)} channels "
            f"({', '.join(names)}); make them agree or drop model.in_channels",
        )
    return len(names)


@dataclass(frozen=True)
class ModelSpec:
    """What the model commands read from a run configuration.

    Attributes:
        model: The validated ``model`` section (paths resolved against the file's folder).
        in_channels: Number of input channels.
        downsample: Data downsampling factor (``data.downsample``, default 1).
        features: Channel names from ``data.features``, or ``None``.
        patch_size: Training patch side ``data.patch_size``, or ``None`` when the config
            has none.
        tile: Inference tile side ``train.validation.tile``, or ``None``.
    """

    model: ModelConfig
    in_channels: int
    downsample: int
    features: tuple[str, ...] | None
    patch_size: int | None = None
    tile: int | None = None


def _optional_size(data: Mapping[str, Any], option: str) -> int | None:
    """The positive integer at dotted ``option`` of ``data``, ``None`` where absent."""
    node: Any = data
    for key in option.split("."):
        if not isinstance(node, Mapping) or node.get(key) is None:
            return None
        node = node[key]
    if isinstance(node, bool) or not isinstance(node, int) or node < 1:
        raise ConfigError(option, f"expected an integer >= 1, got {node!r}")
    return node


def _preset_section(path: Path) -> Any:
    """The ``model`` section of a preset file a run config names by path.

    A relative ``encoder.pretrained`` inside it is made absolute against the preset's
    folder.
    """
    if not path.is_file():
        raise ConfigError(SECTION, f"model preset file '{path}' not found")
    preset = load_yaml(path)
    section = preset.get(SECTION, preset)
    if isinstance(section, Mapping):
        section = dict(section)
        encoder = section.get("encoder")
        if isinstance(encoder, Mapping) and isinstance(encoder.get("pretrained"), str):
            weights = Path(encoder["pretrained"])
            if not weights.is_absolute():
                weights = path.resolve().parent / weights
            section["encoder"] = {**encoder, "pretrained": str(weights)}
    return section


def model_spec_from_mapping(
    data: Mapping[str, Any], base_dir: str | os.PathLike[str] | None = None
) -> ModelSpec:
    """Validate the ``model`` section of a full config mapping and read the data facts.

    Only ``data.features``, ``data.downsample``, ``data.patch_size`` and
    ``train.validation.tile`` are read besides ``model``; every other key of
    ``data``/``train``/... is ignored, so full run configs work.

    Raises:
        ConfigError: Naming the dotted option of the first problem.
    """
    section = data.get(SECTION)
    if section is None:
        section = {}
    if isinstance(section, str) and base_dir is not None:
        section = _preset_section(Path(base_dir) / section)
    if not isinstance(section, Mapping):
        raise ConfigError(SECTION, "must be a mapping of model options")
    cfg = validate(ModelConfig, section, prefix=SECTION)
    if base_dir is not None:
        cfg = cfg.resolve_paths(base_dir)
    data_section = data.get("data") or {}
    if not isinstance(data_section, Mapping):
        raise ConfigError("data", "must be a mapping")
    features = data_section.get("features")
    downsample = data_section.get("downsample", 1)
    if isinstance(downsample, bool) or not isinstance(downsample, int) or downsample < 1:
        raise ConfigError("data.downsample", f"expected an integer >= 1, got {downsample!r}")
    in_channels = resolve_in_channels(cfg, features)
    names: tuple[str, ...] | None = None
    if features is not None:
        from icecontext.data.io.variables import resolve_features

        names = tuple(resolve_features(features, option="data.features"))
    patch = _optional_size(data, "data.patch_size")
    tile = _optional_size(data, "train.validation.tile")
    return ModelSpec(cfg, in_channels, downsample, names, patch, tile)


def load_model_spec(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> ModelSpec:
    """Load a YAML file with a ``model:`` section (and optional ``data:``), apply overrides.

    Raises:
        ConfigError: If the file is missing or invalid, naming the dotted option.
    """
    raw = load_yaml(path)
    base_dir = Path(path).resolve().parent
    if isinstance(raw.get(SECTION), str):
        # a run config naming its model preset by path: inline it, so that model.*
        # overrides apply to it
        raw[SECTION] = _preset_section(base_dir / raw[SECTION])
    raw = apply_overrides(raw, overrides)
    return model_spec_from_mapping(raw, base_dir=base_dir)
