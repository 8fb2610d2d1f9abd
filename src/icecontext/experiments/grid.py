"""Study configs and their expansion into run specs with stable, readable ids.

A study file is an ordinary run config (the sections of ``configs/train/*.yaml``:
``seed``, ``data``, ``model``, ``train``, ``trainer``; section files allowed) plus a
``study:`` section naming the axes::

    study:
      name: smoke
      runs_dir: runs/study-smoke          # default: runs/study-<name>
      synth: {train_scenes: 6, val_scenes: 2, height: 600, width: 600, scale: medium}
      axes:
        rates: [[1, 2, 3], [6, 12, 18], [24, 48, 72]]
        features:                         # label -> feature selectors (data.features)
          sar: [sar]
          sar_amsr2: [sar, amsr2]
        task_rates:                       # optional: label -> per-task overrides
          same: {}
          sod_fine: {SOD: [1, 2, 3]}
        seeds: [0, 1]

Every point of the product ``data x rates x task_rates x features x seeds`` is one
training run, named ``r6-12-18_f-sar_s0`` (``_t-<label>`` is added when per-task rates
are an axis with more than one value, ``d-<label>_`` in front when the study has a data
axis). The optional ``data`` axis names variants of ``study.synth`` (label -> keys that
replace the base's, e.g. other known-truth radii); each gets its own synthetic data.
Ids depend only on the axis values, never on the order of expansion, so a grid grown
later keeps the runs already done.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, PositiveInt, field_validator

from icecontext.config import Section, load_yaml, validate
from icecontext.errors import ConfigError

LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")
"""Allowed axis labels: they become part of folder names."""


class StudySynth(Section):
    """Synthetic data the sweep generates and prepares before the first run.

    Attributes:
        train_scenes: Training scenes.
        val_scenes: Validation scenes (the study's scores come from these).
        height: Lines of every scene at 80 m.
        width: Samples of every scene at 80 m.
        scale: Generator spatial-context scale (``fine``/``medium``/``coarse`` or a
            multiplier of ``medium``; see docs/data.md).
        polygon_size_km: Typical ice-chart polygon size.
        seed: Scene ``i`` uses seed ``seed + i``.
        known_truth: Write known-truth scenes instead
            (:class:`icecontext.synthetic.known_truth.KnownTruthParams`: the context
            radius of each task and how the pixels show it; ``scale`` is then unused).
    """

    train_scenes: PositiveInt = 6
    val_scenes: PositiveInt = 2
    height: int = Field(default=600, ge=100, le=5000)
    width: int = Field(default=600, ge=100, le=5200)
    scale: str = "medium"
    polygon_size_km: float = Field(default=25.0, gt=1.0)
    seed: int = Field(default=1000, ge=0)
    known_truth: dict[str, Any] | None = None

    def known_truth_params(self, option: str = "study.synth.known_truth") -> Any:
        """The validated known-truth parameters, or ``None`` for physical scenes.

        Raises:
            ConfigError: Naming ``option`` and the bad key.
        """
        if self.known_truth is None:
            return None
        from icecontext.synthetic.known_truth import KnownTruthParams

        return validate(KnownTruthParams, self.known_truth, prefix=option)


def _one_unnamed_data_variant() -> dict[str, dict[str, Any]]:
    """Default data axis: the base ``study.synth`` alone, under the empty label."""
    return {"": {}}


def _one_unnamed_task_rates() -> dict[str, dict[str, list[int]]]:
    """Default per-task rates axis: no overrides, under the empty label."""
    return {"": {}}


class StudyAxes(Section):
    """The grid.

    Attributes:
        data: Optional variants of ``study.synth`` by label (keys replacing the
            base's; ``known_truth`` is merged key by key).
        rates: Atrous-rate sets applied to every task (``model.aspp.rates``).
        features: Feature sets by label (``data.features``).
        task_rates: Optional per-task rate overrides by label (``model.task_rates``).
        seeds: Seeds (``seed``).
    """

    data: dict[str, dict[str, Any]] = Field(default_factory=_one_unnamed_data_variant, min_length=1)
    rates: list[list[PositiveInt]] = Field(min_length=1)
    features: dict[str, list[str]] = Field(min_length=1)
    task_rates: dict[str, dict[str, list[PositiveInt]]] = Field(
        default_factory=_one_unnamed_task_rates
    )
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("features", "task_rates", "data")
    @classmethod
    def _check_labels(cls, value: dict[str, Any]) -> dict[str, Any]:
        for label in value:
            if label and not LABEL_RE.match(label):
                raise ValueError(
                    f"label '{label}' must be letters, digits, '.', '+' or '-' "
                    "(it becomes part of run folder names)"
                )
        return value

    @field_validator("rates")
    @classmethod
    def _unique_rates(cls, value: list[list[int]]) -> list[list[int]]:
        if len({tuple(r) for r in value}) != len(value):
            raise ValueError(f"repeated rate set in {value}")
        return value

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"repeated seed in {value}")
        return value


class StudySection(Section):
    """The ``study:`` section.

    Attributes:
        name: Study name (default runs folder ``runs/study-<name>``).
        purpose: What the study is for, printed as the first line of its report (say
            "machinery check, not findings" for a study that tests only the machinery).
        runs_dir: Folder of the run directories (relative to the working directory).
        synth: Synthetic data to generate (``null``: use the base config's data).
        axes: The grid.
    """

    name: str
    purpose: str | None = None
    runs_dir: Path | None = None
    synth: StudySynth | None = None
    axes: StudyAxes

    def synth_for(self, label: str) -> StudySynth | None:
        """``synth`` with the data axis' variant ``label`` applied (``""``: the base).

        Raises:
            ConfigError: ``study.axes.data`` when variants are given without ``synth``,
                or naming the bad key of a variant.
        """
        overrides = self.axes.data.get(label, {})
        if self.synth is None:
            if overrides:
                raise ConfigError(
                    "study.axes.data", "data variants need a study.synth section to vary"
                )
            return None
        if not overrides:
            return self.synth
        merged = self.synth.model_dump()
        for key, value in overrides.items():
            if key == "known_truth" and isinstance(value, dict):
                merged["known_truth"] = {**(merged.get("known_truth") or {}), **value}
            else:
                merged[key] = value
        return validate(StudySynth, merged, prefix=f"study.axes.data.{label}")


@dataclass(frozen=True)
class RunSpec:
    """One point of the grid.

    Attributes:
        run_id: Folder name of the run (stable, readable).
        data_label: Label of the data variant (``""`` without a data axis).
        rates: ``model.aspp.rates``.
        features_label: Label of the feature set.
        features: ``data.features``.
        task_rates_label: Label of the per-task rates (``""`` when not an axis).
        task_rates: ``model.task_rates``.
        seed: ``seed``.
    """

    run_id: str
    data_label: str
    rates: tuple[int, ...]
    features_label: str
    features: tuple[str, ...]
    task_rates_label: str
    task_rates: dict[str, tuple[int, ...]] = field(default_factory=dict)
    seed: int = 0

    @property
    def config_id(self) -> str:
        """The run id without the seed: runs sharing it differ only by seed."""
        return self.run_id.rsplit("_s", 1)[0]

    def overrides(self) -> dict[str, Any]:
        """Values this spec sets in the base run config (dotted key -> value)."""
        return {
            "seed": self.seed,
            "data.features": list(self.features),
            # the channel count follows the feature set (a preset may state one)
            "model.in_channels": None,
            "model.aspp.rates": list(self.rates),
            "model.task_rates": {k: list(v) for k, v in self.task_rates.items()},
        }

    def as_record(self) -> dict[str, Any]:
        """Plain mapping (JSON/YAML friendly) of the spec."""
        return {
            "run_id": self.run_id,
            "config_id": self.config_id,
            "data": self.data_label,
            "rates": list(self.rates),
            "features_label": self.features_label,
            "features": list(self.features),
            "task_rates_label": self.task_rates_label,
            "task_rates": {k: list(v) for k, v in self.task_rates.items()},
            "seed": self.seed,
        }


@dataclass
class Study:
    """A loaded study: its section, the base run config mapping and the file it came from."""

    section: StudySection
    base: dict[str, Any]
    path: Path

    @property
    def runs_dir(self) -> Path:
        """Where the run directories go (relative to the working directory)."""
        return self.section.runs_dir or Path("runs") / f"study-{self.section.name}"


def rates_label(rates: tuple[int, ...] | list[int]) -> str:
    """``[6, 12, 18]`` -> ``r6-12-18``."""
    return "r" + "-".join(str(r) for r in rates)


def expand(axes: StudyAxes) -> list[RunSpec]:
    """Every run of the grid, ordered data > rates > per-task rates > features > seeds."""
    many_task = len(axes.task_rates) > 1
    specs: list[RunSpec] = []
    for d_label in axes.data:
        for rates in axes.rates:
            for t_label, t_rates in axes.task_rates.items():
                for f_label, feats in axes.features.items():
                    for seed in axes.seeds:
                        parts = [f"d-{d_label}"] if d_label else []
                        parts.append(rates_label(rates))
                        if many_task or t_label:
                            parts.append(f"t-{t_label or 'same'}")
                        parts += [f"f-{f_label}", f"s{seed}"]
                        specs.append(
                            RunSpec(
                                run_id="_".join(parts),
                                data_label=d_label,
                                rates=tuple(rates),
                                features_label=f_label,
                                features=tuple(feats),
                                task_rates_label=t_label,
                                task_rates={k: tuple(v) for k, v in t_rates.items()},
                                seed=seed,
                            )
                        )
    return specs


def shard(specs: list[RunSpec], index: int, count: int) -> list[RunSpec]:
    """The runs of shard ``index`` (1-based) of ``count``: every ``count``-th run."""
    if count < 1 or not 1 <= index <= count:
        raise ConfigError("--shard", f"expected i/n with 1 <= i <= n, got {index}/{count}")
    return specs[index - 1 :: count]


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``.

    Raises:
        ConfigError: Naming ``--shard`` for anything else.
    """
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise ConfigError("--shard", f"expected i/n such as 1/2, got '{text}'")
    index, count = int(m.group(1)), int(m.group(2))
    shard([], index, count)  # range check
    return index, count


def load_study(path: str | os.PathLike[str]) -> Study:
    """Read a study file: the ``study:`` section and the base run config.

    Section files of the base (``model: ../model/small_cpu.yaml``) are loaded and its
    relative data/model paths made absolute from the file's folder.

    Raises:
        ConfigError: Naming the key of the first problem (``study.axes.rates`` ...).
    """
    from icecontext.run.config import resolve_section_files

    path = Path(path)
    if not path.is_file():
        raise ConfigError("--config", f"study config '{path}' not found")
    raw = load_yaml(path)
    if "study" not in raw:
        raise ConfigError("study", f"{path} has no 'study:' section (see docs/study.md)")
    section = validate(StudySection, raw.pop("study") or {}, prefix="study")
    for label in section.axes.data:  # every data variant must make valid synth settings
        synth = section.synth_for(label)
        if synth is not None:
            option = f"study.axes.data.{label}.known_truth" if label else "study.synth.known_truth"
            synth.known_truth_params(option)
    base = resolve_section_files(raw, path.resolve().parent)
    return Study(section=section, base=base, path=path)
