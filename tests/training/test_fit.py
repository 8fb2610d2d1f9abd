"""Training end to end on a tiny store: run directory, checkpoints, best-model reload."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from icecontext.data.loader.sources import store_source, store_sources
from icecontext.errors import ConfigError
from icecontext.evaluation import scene_groups
from icecontext.inference.checkpoint import load_checkpoint, model_state_dict, read_checkpoint
from icecontext.inference.predictor import uses_channels_last
from icecontext.run.config import RunConfig
from icecontext.run.rundir import run_dir_for
from icecontext.training import fit as fit_module
from icecontext.training.fit import (
    resolve_channels_last,
    resolve_precision,
    step_autocast,
    train,
    validation_precision,
)
from icecontext.training.module import IceChartModule
from icecontext.workflows.evaluate_checkpoint import EvalScene, _source_reference, score_scenes


class WorseLastEpoch(IceChartModule):
    """Test double: the last validation scores maximally wrong charts.

    The weights are untouched; only what the last validation scores is corrupted (SIC
    0 where the reference is >= 5 and 10 elsewhere, SOD/FLOE shifted by one class), so
    the last epoch is certainly not the best and ``best.ckpt`` must hold epoch 0.
    """

    def validation_step(self, batch, batch_idx):
        if self.current_epoch < self.trainer.max_epochs - 1:
            return super().validation_step(batch, batch_idx)
        src = self.val_sources[int(batch)]
        ref = src.read_charts((0, 0, *src.shape))
        pred = {
            "SIC": np.where(ref["SIC"] >= 5, 0, 10).astype(np.uint8),
            "SOD": ((ref["SOD"].astype(int) + 1) % 6).astype(np.uint8),
            "FLOE": ((ref["FLOE"].astype(int) + 1) % 7).astype(np.uint8),
        }
        self.scorer.update(ref, pred, groups=scene_groups(src.name))
        return None


@pytest.fixture(scope="module")
def trained(tiny_store, tiny_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cfg = RunConfig.model_validate(tiny_config(tiny_store, root, train={"max_epochs": 2}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fit_module, "IceChartModule", WorseLastEpoch)
        result = train(cfg)
    return cfg, result


def test_run_directory_layout(trained):
    cfg, result = trained
    run = run_dir_for(cfg)
    for path in (run.config, run.path / "provenance.json", run.best, run.last, run.curves):
        assert path.is_file(), path
    assert (run.logs / "csv" / "metrics.csv").is_file()
    assert list((run.logs / "tensorboard").glob("events.out.tfevents.*"))
    prov = json.loads((run.path / "provenance.json").read_text())
    assert prov["seed"] == 3 and "torch" in prov["versions"] and "git_commit" in prov
    saved = yaml.safe_load(run.config.read_text())
    assert saved["model"]["aspp"]["rates"] == [1, 2]
    summary = json.loads(run.summary.read_text())
    assert summary["epochs"] == 2 and summary["steps"] == 8
    # pooled per-service and per-month scores of the final validation (one scene here)
    (scene,) = summary["per_scene"]
    groups = scene_groups(scene["scene"])
    for by in ("service", "month"):
        (row,) = summary[f"per_{by}"]
        assert row[by] == groups[by]
        assert {k: row[k] for k in ("combined", "n_SIC")} == {
            k: scene[k] for k in ("combined", "n_SIC")
        }
    assert summary["best_score"] == pytest.approx(result.best_score)


def test_checkpoints_hold_the_config_and_best_is_the_best(trained):
    cfg, result = trained
    metrics = pd.read_csv(run_dir_for(cfg).logs / "csv" / "metrics.csv")
    val = metrics[["epoch", "val/combined"]].dropna()
    assert len(val) == 2
    best_row = val.loc[val["val/combined"].idxmax()]
    best = read_checkpoint(result.best_checkpoint)
    assert best["icecontext"]["config"] == cfg.model_dump(mode="json")
    assert best["icecontext"]["features"] == [
        "nersc_sar_primary",
        "nersc_sar_secondary",
        "btemp_18_7h",
        "btemp_18_7v",
    ]
    assert best["epoch"] == int(best_row["epoch"])
    assert best["icecontext"]["scores"]["combined"] == pytest.approx(best_row["val/combined"])
    assert result.best_score == pytest.approx(best_row["val/combined"])


def test_reloaded_best_weights_equal_the_saved_best_and_reproduce_its_score(trained, tiny_store):
    cfg, result = trained
    saved = model_state_dict(read_checkpoint(result.best_checkpoint))
    loaded = load_checkpoint(result.best_checkpoint)
    state = loaded.model.state_dict()
    assert saved.keys() == state.keys()
    assert all(torch.equal(saved[k], state[k]) for k in saved)
    assert result.best_epoch == 0  # the last epoch scored worse by construction
    last = model_state_dict(read_checkpoint(result.last_checkpoint))
    assert any(not torch.equal(last[k], saved[k]) for k in saved)
    # predicting the validation scene again with the reloaded weights gives the stored score,
    # at the precision validation ran in (bf16 autocast on CPUs with native bf16)
    bf16 = resolve_precision(cfg, "cpu") == "bf16-mixed"
    from icecontext.data.store.prepared import PreparedStore

    val_names = read_checkpoint(result.best_checkpoint)["FullSceneDataModule"]["val"]
    assert len(val_names) == 1
    src = store_source(PreparedStore(tiny_store), val_names[0])
    scorer, _, _ = score_scenes(
        loaded.model,
        loaded.features,
        [EvalScene(src, _source_reference(src), True)],
        tile=128,
        overlap=32,
        device="cpu",
        precision="bf16" if bf16 else "32",
    )
    assert scorer.compute()["combined"] == result.best_score


def test_feature_absent_from_the_store_names_the_key(tiny_store, tiny_config, tmp_path):
    cfg = RunConfig.model_validate(
        tiny_config(tiny_store, tmp_path, data={"features": ["sar", "amsr2:36.5"]})
    )
    with pytest.raises(ConfigError) as exc:
        train(cfg)
    assert exc.value.option == "data.features" and "btemp_36_5h" in str(exc.value)


def test_resume_refusals_name_the_key(trained, tiny_store):
    cfg, _ = trained
    never = cfg.model_copy(update={"train": cfg.train.model_copy(update={"resume": "never"})})
    with pytest.raises(ConfigError) as exc:
        train(never)
    assert exc.value.option == "train.resume"
    other = RunConfig.model_validate(
        {
            **cfg.model_dump(mode="json"),
            "model": {**cfg.model.model_dump(mode="json"), "aspp": {"rates": [3], "channels": 8}},
        }
    )
    with pytest.raises(ConfigError) as exc:
        train(other)
    assert exc.value.option == "output.name" and "model.aspp.rates" in str(exc.value)


def test_precision_is_validated_against_the_hardware(
    monkeypatch, tiny_store, tiny_config, tmp_path
):
    def cfg_with(p):
        return RunConfig.model_validate(tiny_config(tiny_store, tmp_path, trainer={"precision": p}))

    monkeypatch.setattr(fit_module, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision(cfg_with("auto"), "cpu") == "32-true"
    with pytest.raises(ConfigError) as exc:
        resolve_precision(cfg_with("bf16-mixed"), "cpu")
    assert exc.value.option == "trainer.precision"
    with pytest.raises(ConfigError):
        resolve_precision(cfg_with("16-mixed"), "cpu")
    with step_autocast(cfg_with("auto"), "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    assert validation_precision(cfg_with("auto"), "cpu") == "32"
    monkeypatch.setattr(fit_module, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision(cfg_with("auto"), "cpu") == "bf16-mixed"
    assert resolve_precision(cfg_with("bf16-mixed"), "cpu") == "bf16-mixed"
    # what the quickstart's calibration times: the training step's autocast
    with step_autocast(cfg_with("auto"), "cpu"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    with step_autocast(cfg_with("32"), "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    assert validation_precision(cfg_with("auto"), "cpu") == "bf16"
    assert validation_precision(cfg_with("32"), "cpu") == "32"


def test_class_weights_from_the_store_histograms(tiny_store, tiny_config, tmp_path):
    from icecontext.data.store.prepared import PreparedStore

    cfg = RunConfig.model_validate(
        tiny_config(tiny_store, tmp_path, train={"loss": {"class_weights": "inverse"}})
    )
    sources = store_sources(PreparedStore(tiny_store), PreparedStore(tiny_store).names)
    weights = fit_module.class_weights_for(cfg, sources)
    assert set(weights) == {"SIC", "SOD", "FLOE"}
    hist = sum(s.histograms()["SOD"] for s in sources)[:6].astype(float)
    w = weights["SOD"].numpy()
    present = hist > 0
    # rarer classes weigh more, in inverse proportion to their frequency
    ratio = w[present] * hist[present]
    assert ratio == pytest.approx(ratio[0], rel=1e-5)


def test_channels_last_is_on_for_gpus_and_cpu_bf16_unless_set(
    monkeypatch, tiny_store, tiny_config, tmp_path
):
    def cfg_with(**trainer):
        return RunConfig.model_validate(tiny_config(tiny_store, tmp_path, trainer=trainer))

    monkeypatch.setattr(fit_module, "cpu_has_native_bf16", lambda: True)
    assert resolve_channels_last(cfg_with(precision="auto"), "cpu")  # bf16 on this CPU
    assert resolve_channels_last(cfg_with(precision="auto"), "gpu")
    assert not resolve_channels_last(cfg_with(precision="32"), "cpu")
    assert not resolve_channels_last(cfg_with(precision="auto", channels_last=False), "gpu")
    monkeypatch.setattr(fit_module, "cpu_has_native_bf16", lambda: False)
    assert not resolve_channels_last(cfg_with(precision="auto"), "cpu")
    assert resolve_channels_last(cfg_with(precision="32", channels_last=True), "cpu")


def test_a_channels_last_run_trains_and_saves_channels_last_weights(
    tiny_store, tiny_config, tmp_path
):
    cfg = RunConfig.model_validate(
        tiny_config(
            tiny_store,
            tmp_path,
            train={"max_epochs": 1},
            trainer={"precision": "32", "channels_last": True},
        )
    )
    result = train(cfg)
    assert result.steps == 4 and result.best_checkpoint is not None
    loaded = load_checkpoint(result.best_checkpoint)
    assert uses_channels_last(loaded.model)  # predict and evaluate follow the weights' layout
