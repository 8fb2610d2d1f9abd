"""Validation of a downsampled model is scored at 80 m against the original 80 m charts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from icecontext.data.io.format import CHART_FILL, CHARTS
from icecontext.data.io.layers import scene_layers
from icecontext.data.io.scene import open_scene
from icecontext.data.loader.sources import ArraySource, store_source
from icecontext.data.store.prepare import collect_scene_files
from icecontext.data.store.prepared import PreparedStore
from icecontext.errors import DataError
from icecontext.evaluation import score_charts
from icecontext.inference.checkpoint import load_checkpoint, read_checkpoint
from icecontext.inference.predictor import predict_scene
from icecontext.inference.tiling import TileSettings
from icecontext.run.config import RunConfig
from icecontext.run.rundir import run_dir_for
from icecontext.testing import TINY_FEATURES, write_tiny_store
from icecontext.training.fit import train
from icecontext.training.module import IceChartModule
from icecontext.workflows.evaluate_checkpoint import ScoringSettings, evaluate_checkpoint

K = 2
HEIGHT, WIDTH = 160, 170


def replicate(
    classes: dict[str, np.ndarray], k: int, shape: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Each 80 m pixel takes the class of the k x k block it lies in (written out by hand)."""
    return {
        c: np.repeat(np.repeat(a, k, axis=0), k, axis=1)[: shape[0], : shape[1]]
        for c, a in classes.items()
    }


@pytest.fixture(scope="module")
def k2_run(tmp_path_factory, tiny_config):
    folder = tmp_path_factory.mktemp("k2")
    # 5-pixel chart polygons: most 2 x 2 blocks straddle a polygon edge, so the block
    # reduction (mode, 255 if any pixel is masked) changes labels the 80 m charts hold
    store = write_tiny_store(
        folder, count=2, height=HEIGHT, width=WIDTH, seed=11, downsample=K, polygon_size=5
    )
    cfg = RunConfig.model_validate(
        tiny_config(
            store,
            folder / "runs",
            name="k2",
            data={"downsample": K},
            train={"max_epochs": 1},
            trainer={"threads": 1, "precision": "32"},
        )
    )
    result = train(cfg)
    return folder, store, cfg, result


def test_validation_scores_at_80m_equal_a_hand_computation(k2_run):
    folder, store, cfg, result = k2_run
    summary = json.loads(run_dir_for(cfg).summary.read_text())
    last = summary["last_scores"]
    assert last["score_resolution_m"] == 80

    (name,) = read_checkpoint(result.last_checkpoint)["FullSceneDataModule"]["val"]
    loaded = load_checkpoint(result.last_checkpoint)  # the weights the last validation scored
    source = store_source(PreparedStore(store), name)
    assert source.shape == (HEIGHT // K, -(-WIDTH // K))
    val = cfg.train.validation
    pred = predict_scene(
        loaded.model,
        source,
        loaded.features,
        tiling=TileSettings(tile=val.tile, overlap=val.overlap),
        device="cpu",
    )
    # the reference straight from the NetCDF file, not from the store
    ds = open_scene(collect_scene_files(folder / "scenes")[name])
    reference80 = {c: np.asarray(ds[c].values) for c in CHARTS}
    ds.close()
    hand = score_charts(reference80, replicate(pred.source_classes, K, (HEIGHT, WIDTH)))

    for key in ("SIC", "SOD", "FLOE", "combined"):
        assert last[key] == hand[key], key
    (scene,) = summary["per_scene"]
    assert scene["combined"] == hand["combined"]
    for chart in CHARTS:
        labelled80 = int(np.count_nonzero(reference80[chart] != CHART_FILL))
        assert hand["n_pixels"][chart] == labelled80
        assert scene[f"n_{chart}"] == labelled80
    assert (
        read_checkpoint(result.best_checkpoint)["icecontext"]["scores"]["score_resolution_m"] == 80
    )

    # the old way: the 160 m prediction against the block-reduced 160 m charts
    reference160 = source.read_charts((0, 0, *source.shape))
    old = score_charts(reference160, pred.source_classes)
    # built to differ: the reduced charts lose 80 m labels and detail ...
    up160 = replicate(reference160, K, (HEIGHT, WIDTH))
    labelled = reference80["SOD"] != CHART_FILL
    assert (up160["SOD"][labelled] != reference80["SOD"][labelled]).mean() > 0.05
    assert old["n_pixels"]["SOD"] * K * K < hand["n_pixels"]["SOD"]
    # ... so the scores differ, and validation reports the 80 m one
    assert old["combined"] != hand["combined"]
    assert last["combined"] != old["combined"]


def test_evaluate_agrees_with_validation_on_the_store_and_the_files(k2_run, tmp_path):
    folder, store, cfg, result = k2_run
    last = json.loads(run_dir_for(cfg).summary.read_text())["last_scores"]
    (name,) = read_checkpoint(result.last_checkpoint)["FullSceneDataModule"]["val"]
    val = cfg.train.validation
    for data in (store, folder / "scenes"):
        out = evaluate_checkpoint(
            result.last_checkpoint,
            data,
            tmp_path / Path(data).name,
            scenes=[name],
            settings=ScoringSettings(overlap=val.overlap, device="cpu"),
            progress=False,
            plots=False,
        )
        assert out.resolution_m == 80
        assert out.scores["combined"] == last["combined"], data


def test_downsampled_source_without_80m_charts_is_refused(scene_dir):
    path = sorted(scene_dir.glob("*_prep.nc"))[0]
    ds = open_scene(path)
    layers = scene_layers(ds, ["nersc_sar_primary"], K)  # 80 m charts not kept
    ds.close()
    source = ArraySource(layers)
    assert not source.has_full_charts()
    cfg = RunConfig.model_validate(
        {
            "data": {"root": str(scene_dir), "features": list(TINY_FEATURES), "downsample": K},
            "model": {"encoder": {"name": "resnet18", "depth": "layer2", "output_stride": 8}},
            "train": {"max_epochs": 1},
        }
    )
    with pytest.raises(DataError, match=r"no 80 m charts.*icecontext prepare"):
        IceChartModule(cfg, ["nersc_sar_primary"], val_sources=[source])
