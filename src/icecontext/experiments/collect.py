"""Read a sweep's run directories into tidy tables.

A run counts when its directory holds ``study.json`` (the grid point, written by the
sweep) and ``metrics.json`` (written by training). Scores are those of the run's final
validation (``last_scores``; the per-scene breakdown belongs to the same validation).
The theoretical receptive field of each task comes from the run's ``config.yaml``
(``icecontext.models.receptive_field``), in pixels of the model input and in km, and so
does the trained receptive field (``icecontext.models.trained_context``): the field
through the atrous rates that the run's training patches (``data.patch_size``) can
train, capped at ``2 x patch - 1``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from icecontext.errors import DataError

TASKS: tuple[str, ...] = ("SIC", "SOD", "FLOE")
SCORES: tuple[str, ...] = (*TASKS, "combined")


def _load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


@lru_cache(maxsize=256)
def _task_rfs_cached(model_json: str, in_channels: int) -> dict[str, Any]:
    """Theoretical receptive fields (``TaskRF`` per task) of a model config, built once."""
    from icecontext.models.config import ModelConfig
    from icecontext.models.multitask import build_model
    from icecontext.models.receptive_field import theoretical_receptive_fields

    cfg = ModelConfig.model_validate(json.loads(model_json))
    return theoretical_receptive_fields(build_model(cfg, in_channels, seed=0))


def _rf_cached(model_json: str, in_channels: int) -> dict[str, float]:
    return {
        t: float(rf.total_px) if rf.total_px is not None else math.inf
        for t, rf in _task_rfs_cached(model_json, in_channels).items()
    }


def _model_of(config: dict[str, Any]) -> tuple[Any, int]:
    """The validated model section of a run config mapping and its input channels."""
    from icecontext.models.config import ModelConfig, resolve_in_channels

    model = dict(config.get("model") or {})
    model["encoder"] = dict(model.get("encoder") or {})
    model["encoder"].pop("pretrained", None)  # no weights needed for geometry
    cfg = ModelConfig.model_validate(model)
    return cfg, resolve_in_channels(cfg, (config.get("data") or {}).get("features"))


def receptive_fields_px(config: dict[str, Any]) -> dict[str, float]:
    """Theoretical receptive field per task (model-input pixels) of a run config mapping."""
    cfg, channels = _model_of(config)
    return _rf_cached(cfg.model_dump_json(), channels)


def trained_receptive_fields_px(config: dict[str, Any]) -> tuple[dict[str, float], bool]:
    """Trained receptive field per task (model-input pixels) of a run config mapping.

    The theoretical field through the atrous rates whose taps read data in the run's
    training patches (``data.patch_size``, its default when absent), capped at
    ``2 x patch - 1`` (:func:`icecontext.models.trained_context.trained_fields`).

    Returns:
        The field per task, and whether any rate of the run read only zero padding in
        training (it trained with ``model.allow_untrained_taps``, or before the check).
    """
    from icecontext.models.trained_context import trained_context, trained_fields

    cfg, channels = _model_of(config)
    patch = (config.get("data") or {}).get("patch_size")
    if patch is None:
        from icecontext.data.config import DataConfig

        patch = DataConfig.model_fields["patch_size"].default
    context = trained_context(cfg, int(patch))
    fields = trained_fields(_task_rfs_cached(cfg.model_dump_json(), channels), context)
    return {t: float(f.trained_px) for t, f in fields.items()}, bool(context.untrained)


def read_run(run_dir: Path) -> dict[str, Any] | None:
    """One run's record (grid point, scores, receptive fields), ``None`` if unfinished."""
    spec_path, metrics_path = run_dir / "study.json", run_dir / "metrics.json"
    if not spec_path.is_file() or not metrics_path.is_file():
        return None
    spec = _load_json(spec_path)
    metrics = _load_json(metrics_path)
    scores = metrics.get("last_scores") or {}
    if not all(k in scores for k in SCORES):
        return None
    row: dict[str, Any] = {
        "run_id": spec["run_id"],
        "config_id": spec["config_id"],
        "rates": "-".join(str(r) for r in spec["rates"]),
        "max_rate": max(spec["rates"]),
        "features": spec["features_label"],
        "feature_selectors": " ".join(spec.get("features") or []),
        "task_rates": spec.get("task_rates_label", ""),
        "data": spec.get("data", ""),
        "seed": int(spec["seed"]),
        "steps": metrics.get("steps"),
        **{k: float(scores[k]) for k in SCORES},
    }
    row["purpose"] = spec.get("purpose") or ""
    truth = ((spec.get("synth") or {}).get("known_truth")) or {}
    if truth.get("radius_km"):
        from icecontext.synthetic.known_truth import KnownTruthParams

        params = KnownTruthParams.model_validate(truth)
        for task, km in params.radius_km.items():
            row[f"known_radius_km_{task}"] = km
        row["truth_informative"] = json.dumps(params.informative_channels(), sort_keys=True)
    row.update(final_slopes(run_dir))
    cfg_path = run_dir / "config.yaml"
    downsample = 1
    if cfg_path.is_file():
        config = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
        downsample = int((config.get("data") or {}).get("downsample", 1))
        from icecontext.models.receptive_field import pixels_to_km

        trained, untrained = trained_receptive_fields_px(config)
        for task, px in receptive_fields_px(config).items():
            row[f"rf_px_{task}"] = px
            row[f"rf_km_{task}"] = pixels_to_km(px, downsample)
            row[f"trained_rf_px_{task}"] = trained[task]
            row[f"trained_rf_km_{task}"] = pixels_to_km(trained[task], downsample)
            # half-width: the distance from a pixel that its output can depend on
            row[f"trained_radius_km_{task}"] = pixels_to_km((trained[task] - 1) / 2, downsample)
        row["untrained_taps"] = untrained
    row["downsample"] = downsample
    row["run_dir"] = str(run_dir)
    return row


def final_slopes(run_dir: Path, last: int = 3) -> dict[str, float]:
    """Slope of each validation score over the run's last ``last`` validations (per epoch).

    A least-squares line through the final validations of the CSV log: near 0 when
    the run had converged, clearly positive when it was still learning. ``slope_<score>``
    keys, and ``last_change_<score>``: the change over the final epoch; empty when the
    run logged fewer than two validations.
    """
    import numpy as np

    from icecontext.run.rundir import RunDir
    from icecontext.training.plots import read_metrics

    try:
        df = read_metrics(RunDir(run_dir))
    except FileNotFoundError:
        return {}
    out: dict[str, float] = {}
    for score in SCORES:
        col = f"val/{score}"
        if col not in df or "epoch" not in df:
            continue
        val = df[["epoch", col]].dropna().groupby("epoch")[col].last().tail(last)
        if len(val) >= 2:
            fit = np.polyfit(val.index.to_numpy(float), val.to_numpy(float), 1)
            out[f"slope_{score}"] = float(fit[0])
            out[f"last_change_{score}"] = float(val.iloc[-1] - val.iloc[-2])
    return out


def read_breakdown(run_dir: Path) -> list[dict[str, Any]]:
    """Per-scene scores of a run's final validation, with service and month of each scene."""
    return _scene_rows(_load_json(run_dir / "metrics.json"))


def _scene_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    from icecontext.data.io.format import scene_service, scene_time

    rows = []
    for rec in metrics.get("per_scene") or []:
        scene = str(rec.get("scene"))
        try:
            service, month = scene_service(scene), scene_time(scene).month
        except ValueError:
            service, month = None, None
        row = {"scene": scene, "service": service, "month": month}
        for k in SCORES:
            row[k] = rec.get(k)
        for t in TASKS:
            row[f"n_{t}"] = rec.get(f"n_{t}")
        rows.append(row)
    return rows


def read_group_scores(run_dir: Path, by: str) -> list[dict[str, Any]] | None:
    """Pooled scores per ``by`` (``service`` or ``month``) of a run's final validation.

    ``None`` when the run's ``metrics.json`` predates them, or has none although it
    has per-scene scores (the breakdown failed): then only the per-scene scores of
    :func:`read_breakdown` can be used.
    """
    metrics = _load_json(run_dir / "metrics.json")
    rows = metrics.get(f"per_{by}")
    if rows is None or (not rows and metrics.get("per_scene")):
        return None
    n_scenes: dict[Any, int] = {}
    for rec in _scene_rows(metrics):  # the same file, parsed once
        n_scenes[rec[by]] = n_scenes.get(rec[by], 0) + 1
    return [
        {by: rec.get(by), "n_scenes": n_scenes.get(rec.get(by), 0)}
        | {k: rec.get(k) for k in SCORES}
        | {f"n_{t}": rec.get(f"n_{t}") for t in TASKS}
        for rec in rows
    ]


def collect_runs(runs_dir: str | Path, features: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per finished run of the sweep in ``runs_dir``.

    Args:
        runs_dir: The sweep's runs folder.
        features: Keep only runs of these feature-set labels (default: all).

    Columns: ``run_id``, ``config_id``, ``rates``, ``max_rate``, ``features``,
    ``feature_selectors``, ``task_rates``, ``data`` (the data variant, ``""`` without a
    data axis), ``seed``, ``steps``, the four scores, ``rf_px_<task>``,
    ``rf_km_<task>``, ``trained_rf_px_<task>``, ``trained_rf_km_<task>`` (the field the
    training patches could train), ``trained_radius_km_<task>`` (its half-width),
    ``untrained_taps`` (whether a rate read only zero padding in training),
    ``known_radius_km_<task>`` and ``truth_informative`` (known-truth data only: the
    radii and, as JSON, the inputs that carry each task), ``purpose`` (the study's
    stated purpose), ``slope_<score>`` (:func:`final_slopes`), ``downsample``.

    Raises:
        DataError: If the folder holds no finished run.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise DataError(f"{runs_dir}: no such folder of sweep runs")
    rows = [r for d in sorted(runs_dir.iterdir()) if d.is_dir() and (r := read_run(d))]
    if features is not None:
        rows = [r for r in rows if r["features"] in set(features)]
    if not rows:
        raise DataError(
            f"{runs_dir}: no finished run"
            + (f" with feature set {', '.join(features)}" if features is not None else "")
            + " (a run needs study.json and metrics.json); run 'icecontext sweep' first"
        )
    return pd.DataFrame(rows)


def collect_studies(
    runs_dirs: Sequence[str | Path], features: Sequence[str] | None = None
) -> pd.DataFrame:
    """The runs of one or several sweeps, with a ``study`` column (the folder's name).

    With several folders, ``run_id`` and ``config_id`` are prefixed ``<study>:`` so that
    the same grid point of two sweeps (e.g. on data at two generator scales) stays two
    configurations.

    Raises:
        DataError: If a folder holds no finished run, or two folders share a name.
    """
    names = [Path(d).resolve().name for d in runs_dirs]
    if len(set(names)) != len(names):
        raise DataError(f"runs folders must have distinct names to be told apart: {names}")
    frames = []
    for d, name in zip(runs_dirs, names, strict=True):
        runs = collect_runs(d, features)
        runs.insert(0, "study", name)
        if len(runs_dirs) > 1:
            runs["run_id"] = name + ":" + runs["run_id"]
            runs["config_id"] = name + ":" + runs["config_id"]
        frames.append(runs)
    return pd.concat(frames, ignore_index=True)


def collect_breakdowns(runs: pd.DataFrame) -> pd.DataFrame:
    """Per-scene rows of every run in ``runs`` (columns of ``runs`` identifying the run)."""
    frames = []
    for _, run in runs.iterrows():
        rows = read_breakdown(Path(run["run_dir"]))
        for r in rows:
            r.update(run_id=run["run_id"], config_id=run["config_id"], seed=run["seed"])
        frames.extend(rows)
    return pd.DataFrame(frames)


def collect_group_scores(runs: pd.DataFrame, by: str) -> pd.DataFrame | None:
    """Pooled per-``by`` rows of every run in ``runs``; ``None`` if any run lacks them."""
    frames = []
    for _, run in runs.iterrows():
        rows = read_group_scores(Path(run["run_dir"]), by)
        if rows is None:
            return None
        for r in rows:
            r.update(run_id=run["run_id"], config_id=run["config_id"], seed=run["seed"])
        frames.extend(rows)
    return pd.DataFrame(frames)
