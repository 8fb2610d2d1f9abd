"""`icecontext quickstart` end to end on a tiny configuration, and its parts."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest

from icecontext.cli.main import main
from icecontext.errors import ConfigError
from icecontext.training.quickstart import load_quickstart_config, plan_epochs, thread_candidates

TINY = [
    "quickstart.synth.train_scenes=2",
    "quickstart.synth.val_scenes=1",
    "quickstart.synth.test_scenes=1",
    "quickstart.synth.height=160",
    "quickstart.synth.width=180",
    "quickstart.synth.polygon_size_km=4",
    "quickstart.calibration_steps=1",
    "quickstart.min_epochs=1",
    "quickstart.baseline_pixels_per_scene=500",
    "data.downsample=1",
    "data.patch_size=64",
    "data.batch_size=2",
    "data.workers=0",
    "data.patches_per_epoch=4",
    "data.splits.val_count=1",
    "train.validation.tile=96",
    "train.progress_bar=false",
    "model.aspp.rates=[1,2]",
]


@pytest.mark.xdist_group("quickstart")
def test_quickstart_writes_a_report_with_the_network_and_both_baselines(tmp_path, capsys):
    out = tmp_path / "qs"
    # 0.1 s of budget buys (at least) one epoch; the floor makes it two
    argv = ["quickstart", "--out", str(out), "--minutes", "0.002", "--no-progress", *TINY]
    assert main([*argv, "quickstart.min_epochs=2"]) == 0
    printed = capsys.readouterr().out
    report = out / "report.md"
    assert f"report: {report.resolve()}" in printed
    text = report.read_text()
    for row in ("majority", "AMSR2"):
        assert re.search(rf"\|[^\n]*{row}[^\n]*\|", text, re.IGNORECASE), row
    # every image the report links to exists
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert images and all((out / img).is_file() for img in images)
    assert (out / "run" / "checkpoints" / "best.ckpt").is_file()
    assert (out / "eval" / "metrics.json").is_file()
    assert (out / "run" / "provenance.json").is_file()
    # the table's network row is the evaluation's score
    scores = json.loads((out / "eval" / "metrics.json").read_text())["unrounded"]
    row = re.search(r"\| \*\*network[^|]*\*\* \|([^\n]*)\|\n", text)
    assert row, text
    cells = [float(v) for v in row.group(1).split("|")]
    expected = [scores[c] for c in ("SIC", "SOD", "FLOE", "combined")]
    np.testing.assert_allclose(cells, expected, atol=0.051)
    assert "calibration measured" in text
    assert "the budget alone bought 1 epoch(s); `quickstart.min_epochs` raised it to 2" in text
    # a second run reuses the synthetic scenes (same files, untouched); with
    # quickstart.epochs it trains exactly that many epochs without calibrating
    scene = next((out / "data" / "test").glob("*_prep.nc"))
    mtime = scene.stat().st_mtime_ns
    argv = ["quickstart", "--out", str(out), "--no-progress", *TINY, "quickstart.epochs=2"]
    assert main(argv) == 0
    assert scene.stat().st_mtime_ns == mtime
    text = report.read_text()
    assert "fixed at 2 epochs of 2 steps" in text and "(4 steps done" in text


def test_plan_epochs_fits_the_budget():
    timing = {"steps_per_epoch": 10, "step_s": 1.5, "val_scenes": 2, "val_scene_s": 15.0}
    assert plan_epochs(5.0, timing) == 7  # 300 s / (10 x 1.5 + 2 x 15) s = 6.7
    assert plan_epochs(4.5, timing) == 6  # 6.0
    assert plan_epochs(4.0, timing) == 5  # 5.3: rounded, not floored
    assert plan_epochs(0.1, timing) == 1  # never fewer than one epoch
    # a slow machine gets the floor, not the few epochs the budget would buy
    assert plan_epochs(5.0, timing, min_epochs=4) == 7
    assert plan_epochs(1.0, timing, min_epochs=4) == 4  # 1.3 epochs' worth of time


def test_calibration_tries_one_thread_unless_threads_are_set():
    assert thread_candidates(None, available=2) == [1, 2]
    assert thread_candidates(None, available=1) == [1]
    assert thread_candidates(3, available=2) == [3]  # trainer.threads wins


def test_overrides_reach_their_section_and_bad_keys_are_named(tmp_path, capsys):
    qs, raw, _ = load_quickstart_config(None, ["quickstart.minutes=2", "train.optimizer.lr=0.5"])
    assert qs.minutes == 2.0
    assert raw["train"]["optimizer"]["lr"] == 0.5
    with pytest.raises(ConfigError, match=r"quickstart\.synth\.nope"):
        load_quickstart_config(None, ["quickstart.synth.nope=1"])
    out = tmp_path / "never"
    assert main(["quickstart", "--out", str(out), "--minutes", "-1"]) == 2
    assert "'--minutes': must be positive" in capsys.readouterr().err
    assert not out.exists()  # checked before any work is done


def test_majority_baseline_predicts_the_most_frequent_class():
    from icecontext.training.baselines import MajorityBaseline

    hist = {c: np.zeros(256, np.int64) for c in ("SIC", "SOD", "FLOE")}
    hist["SIC"][[0, 10, 255]] = [5, 9, 100]  # 255 (masked) never wins
    hist["SOD"][[1, 3]] = [7, 2]
    hist["FLOE"][[0, 6]] = [1, 1]  # a tie goes to the lower class
    maj = MajorityBaseline.fit(hist)
    assert (maj.classes["SIC"], maj.classes["SOD"], maj.classes["FLOE"]) == (10, 1, 0)


class _Source:
    """A scene whose SOD class is set by one AMSR2 channel (the rest is noise)."""

    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        self.shape = (40, 50)
        self.sod = rng.integers(1, 4, self.shape).astype(np.uint8)
        self.x = rng.normal(0, 1, (14, *self.shape)).astype(np.float32)
        self.x[3] = self.sod * 2.0 + rng.normal(0, 0.2, self.shape)

    def read_inputs(self, window, features):
        return self.x[: len(features)]

    def read_charts(self, window):
        return {"SIC": np.full(self.shape, 10, np.uint8), "SOD": self.sod, "FLOE": self.sod}

    def valid_mask(self, window):
        return np.ones(self.shape, bool)


def test_amsr2_pixel_baseline_learns_what_amsr2_determines():
    from icecontext.evaluation import score_charts
    from icecontext.training.baselines import MajorityBaseline, PixelBaseline

    train = [_Source(0), _Source(1)]
    test = _Source(2)
    pixel = PixelBaseline.fit(train, pixels_per_scene=800, seed=0)
    hist = {
        c: sum(np.bincount(s.read_charts(None)[c].ravel(), minlength=256) for s in train)
        for c in ("SIC", "SOD", "FLOE")
    }
    majority = MajorityBaseline.fit(hist)
    ref = test.read_charts(None)
    pix = score_charts(ref, pixel.predict(test))
    maj = score_charts(ref, majority.predict(test))
    assert pix["SOD"] > 95.0 and maj["SOD"] < 40.0
    np.testing.assert_array_equal(pixel.predict(test)["SIC"], 10)  # one class seen: constant


def test_map_collector_keeps_the_scene_with_the_most_ice():
    from icecontext.training.report import MapCollector

    def charts(ice_pixels: int, sod_classes: int) -> dict[str, np.ndarray]:
        sic = np.zeros((10, 10), np.uint8)
        sic.flat[:ice_pixels] = 10
        sod = np.zeros((10, 10), np.uint8)
        sod.flat[:sod_classes] = np.arange(sod_classes)
        return {"SIC": sic, "SOD": sod, "FLOE": sod}

    maps = MapCollector()
    for name, ice, n_sod in (("water", 0, 1), ("icy", 40, 3), ("less", 50, 1)):
        scene = SimpleNamespace(source=SimpleNamespace(name=name, path=None))
        ref = charts(ice, n_sod)
        maps(scene, SimpleNamespace(classes=ref), ref)
    assert maps.name == "icy"  # 40 ice pixels x 3 stages beats 50 x 1
    baseline = {c: np.ones((5, 5), np.uint8) for c in ("SIC", "SOD", "FLOE")}
    source = SimpleNamespace(name="icy", downsample=2, full_shape=(10, 10))
    assert maps.capture_baseline(source, baseline) is baseline
    assert maps.baseline["SOD"].shape == (10, 10)
    first = MapCollector(choose="first")
    for name in ("a", "b"):
        ref = charts(30 if name == "b" else 0, 2)
        first(SimpleNamespace(source=SimpleNamespace(name=name)), SimpleNamespace(classes=ref), ref)
    assert first.name == "a"
