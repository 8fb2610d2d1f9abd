"""`icecontext evaluate`: the written metrics are the challenge metric of the predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from icecontext.cli.main import main
from icecontext.data.io.format import CHARTS
from icecontext.data.store.prepare import collect_scene_files
from icecontext.evaluation import score_charts
from icecontext.inference.checkpoint import load_checkpoint
from icecontext.inference.predictor import predict_scene, tile_for_margin
from icecontext.inference.tiling import TileSettings
from icecontext.run.config import RunConfig, ValidationConfig
from icecontext.testing import tiny_run_config, write_scene_files, write_tiny_store
from icecontext.training.fit import train
from icecontext.workflows.evaluate_checkpoint import ScoringSettings, open_eval_scenes, score_scenes

WARNING = (
    "icecontext evaluate: warning: {old} is deprecated and will be removed in the next "
    "release; use --scenes"
)


def pooled_scores(loaded, folder: Path, tile: int, overlap: int) -> dict:
    """``score_charts`` of the scenes of ``folder`` predicted with ``predict_scene``."""
    refs: dict[str, list[np.ndarray]] = {c: [] for c in CHARTS}
    preds: dict[str, list[np.ndarray]] = {c: [] for c in CHARTS}
    for scene in open_eval_scenes(folder, loaded.features, 1, "nearest"):
        pred = predict_scene(
            loaded.model,
            scene.source,
            loaded.features,
            tiling=TileSettings(tile=tile, overlap=overlap),
            device="cpu",
        )
        ref = scene.reference()
        for c in CHARTS:
            refs[c].append(ref[c].ravel())
            preds[c].append(pred.classes[c].ravel())
    return score_charts(
        {c: np.concatenate(v) for c, v in refs.items()},
        {c: np.concatenate(v) for c, v in preds.items()},
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    """A checkpoint trained for one tiny epoch and a test folder of two labelled scenes."""
    folder = tmp_path_factory.mktemp("cli_eval")
    write_tiny_store(folder, 2, height=140, width=150, seed=7)
    cfg = RunConfig.model_validate(
        tiny_run_config(
            folder / "store.zarr",
            folder / "runs",
            name="e",
            seed=2,
            data={"patches_per_epoch": 8},
            train={"max_epochs": 1, "validation": {"tile": 96, "overlap": 24}},
        )
    )
    result = train(cfg)
    test = folder / "test"
    # test layout: charts only in _prep_reference.nc; one dmi and one cis scene
    write_scene_files(test, 2, height=130, width=160, seed=40, test_set=True)
    return result.best_checkpoint, test


@pytest.mark.xdist_group("cli_evaluate")
def test_evaluate_writes_the_challenge_metric_of_the_tiled_predictions(setup, tmp_path, capsys):
    ckpt, test = setup
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(ckpt), "--scenes", str(test), "--out", str(out)]
    assert main([*argv, "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "scored 2 scene(s) at 80 m" in printed and f"results: {out}" in printed
    metrics = json.loads((out / "metrics.json").read_text())

    # the same predictions, pooled and scored by score_charts, give the same numbers
    expected = pooled_scores(load_checkpoint(ckpt), test, tile=96, overlap=24)
    for key in (*CHARTS, "combined"):
        assert metrics["unrounded"][key] == pytest.approx(expected["unrounded"][key], abs=1e-9)
        assert metrics["scores"][key] == expected[key], key

    table = pd.read_csv(out / "metrics.csv").set_index("chart")
    assert table.loc["combined", "score_unrounded"] == pytest.approx(
        expected["unrounded"]["combined"], abs=1e-3
    )
    scenes = pd.read_csv(out / "breakdown_scene.csv")
    assert len(scenes) == 2
    services = pd.read_csv(out / "breakdown_service.csv")
    assert set(services["service"]) == {"dmi", "cis"}
    per_class = pd.read_csv(out / "per_class.csv")
    assert set(per_class["chart"]) == set(CHARTS)
    for name in (
        "confusion_SIC.png",
        "confusion_SOD.png",
        "confusion_FLOE.png",
        "per_class_f1.png",
    ):
        assert (out / name).stat().st_size > 1000, name
    assert (out / "provenance.json").is_file()


def test_scoring_settings_fill_the_unset_tiling_from_validation():
    validation = ValidationConfig(tile=96, overlap="rf", batch=2)
    filled = ScoringSettings(batch=5, device="cpu", precision="bf16").filled(validation)
    assert filled == ScoringSettings(tile=96, overlap="rf", batch=5, device="cpu", precision="bf16")
    # an explicit 0 px margin is kept (only None means unset)
    assert ScoringSettings(overlap=0).filled(validation).overlap == 0
    # score_scenes' defaults are the section's: 512 px tiles, auto overlap, 4 tiles
    net = torch.nn.Conv2d(1, 1, 3, padding=1)  # no receptive_field(): auto = the tile / 16 cap
    assert ScoringSettings().tiling(net) == TileSettings(tile=512, overlap=32, batch=4)
    assert ScoringSettings(tile=96, overlap=24, batch=2).tiling(net) == TileSettings(96, 24, 2)


@pytest.mark.xdist_group("cli_evaluate")
def test_score_scenes_takes_settings_or_their_fields_as_keywords(setup):
    ckpt, test = setup
    loaded = load_checkpoint(ckpt)
    scenes = open_eval_scenes(test, loaded.features, 1, "nearest")
    expected = pooled_scores(loaded, test, tile=96, overlap=24)
    settings = ScoringSettings(tile=96, overlap=24, device="cpu")
    by_settings, scored, unlabelled = score_scenes(
        loaded.model, loaded.features, scenes, settings=settings
    )
    assert len(scored) == 2 and unlabelled == []
    by_keywords, _, _ = score_scenes(
        loaded.model, loaded.features, scenes, tile=96, overlap=24, device="cpu"
    )
    # keywords replace the fields of settings
    overridden, _, _ = score_scenes(
        loaded.model,
        loaded.features,
        scenes,
        settings=ScoringSettings(tile=32),
        tile=96,
        overlap=24,
        device="cpu",
    )
    for scorer in (by_settings, by_keywords, overridden):
        scores = scorer.compute()
        for key in (*CHARTS, "combined"):
            assert scores["unrounded"][key] == pytest.approx(expected["unrounded"][key], abs=1e-9)


@pytest.mark.xdist_group("cli_evaluate")
def test_overlap_rf_scores_what_a_single_pass_scores(setup, tmp_path):
    """With the whole receptive-field radius as margin, tiles change nothing."""
    ckpt, _ = setup
    test = tmp_path / "big"  # two 320 px tiles around a 78 px margin (no growth needed)
    write_scene_files(test, 1, height=300, width=340, seed=41, test_set=True)
    out = tmp_path / "eval_rf"
    argv = ["evaluate", "-k", str(ckpt), "-s", str(test), "-o", str(out), "--no-plots"]
    argv += ["--tile", "320", "--overlap", "rf", "--device", "cpu", "--precision", "32"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["overlap"] == "rf" and metrics["settings"]["tile"] == 320
    assert metrics["settings"]["precision"] == "32"

    loaded = load_checkpoint(ckpt)
    radius = -(-loaded.model.receptive_field() // 2)
    assert metrics["settings"]["margin_px"] == radius == 78
    expected = pooled_scores(loaded, test, tile=512, overlap=0)  # one tile: a single pass
    for key in (*CHARTS, "combined"):
        assert metrics["unrounded"][key] == pytest.approx(expected["unrounded"][key], abs=1e-9)


@pytest.mark.xdist_group("cli_evaluate")
def test_only_scores_the_named_scenes_and_old_spelling_d_still_reads_them(setup, tmp_path, capsys):
    ckpt, test = setup
    name = sorted(collect_scene_files(test))[1]
    out = tmp_path / "one"
    argv = ["evaluate", "-k", str(ckpt), "-d", str(test), "-o", str(out), "--only", name]
    assert main([*argv, "--no-plots", "--no-progress", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "scored 1 scene(s)" in captured.out
    assert captured.err.count(WARNING.format(old="-d")) == 1
    assert list(pd.read_csv(out / "breakdown_scene.csv")["scene"]) == [name]


def test_unlabelled_scenes_only_is_an_error_naming_the_folder(setup, tmp_path, capsys):
    ckpt, _ = setup
    bare = tmp_path / "bare"
    write_scene_files(bare, 1, height=100, width=100, seed=3, test_set=True)
    for ref in bare.glob("*_prep_reference.nc"):
        ref.unlink()
    # --data: the deprecated spelling of --scenes still reads the folder, with a warning
    argv = ["evaluate", "--checkpoint", str(ckpt), "--data", str(bare), "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(bare) in err and "_prep_reference.nc" in err
    assert WARNING.format(old="--data") in err


def test_missing_checkpoint_and_bad_overlap_are_named(setup, tmp_path, capsys):
    _, test = setup
    assert main(["evaluate", "--checkpoint", str(tmp_path / "x.ckpt"), "--scenes", str(test)]) == 2
    assert "'--checkpoint'" in capsys.readouterr().err
    ckpt, _ = setup
    argv = ["evaluate", "--checkpoint", str(ckpt), "--scenes", str(test), "--overlap", "wide"]
    assert main(argv) == 2
    assert "'--overlap': expected pixels, 'auto' or 'rf'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "one of the arguments --scenes/-s is required"),
        (["--scenes", "a", "--data", "b"], "not allowed with argument --scenes/-s"),
        (["-s", "a", "--precision", "fp8"], "invalid choice: 'fp8'"),
    ],
)
def test_scenes_is_required_once(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "-k", "x.ckpt", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_overlap_rf_grows_a_tile_too_small_for_the_radius_as_predict_does(setup):
    ckpt, _ = setup
    model = load_checkpoint(ckpt).model
    tiling = ScoringSettings(tile=128, overlap="rf", batch=1).tiling(model)
    assert tiling.overlap == 78 and tiling.tile == tile_for_margin(128, 78) == 480
    assert ScoringSettings(tile=128, overlap=16, batch=1).tiling(model).tile == 128
