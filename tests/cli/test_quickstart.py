"""`icecontext quickstart` end to end on a tiny configuration, and its parts."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from icecontext.cli.main import main
from icecontext.config import validate
from icecontext.errors import ConfigError
from icecontext.run.config import RunConfig, check_run_context
from icecontext.workflows import quickstart as qs_module
from icecontext.workflows.quickstart import (
    QuickstartResult,
    load_quickstart_config,
    plan_epochs,
    plan_work,
    self_check,
    thread_candidates,
)
from icecontext.workflows.report import self_check_text

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
    "quickstart.epochs=2",
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


def _exit_matches_report(status: int, text: str) -> None:
    """The exit status follows the report's self-check: 0 passed, 1 failed."""
    assert status in (0, 1)
    assert ("**Self-check: passed.**" in text) == (status == 0), text
    assert ("**Self-check: FAILED.**" in text) == (status == 1), text


@pytest.mark.xdist_group("quickstart")
def test_quickstart_writes_a_report_with_the_network_and_both_baselines(tmp_path, capsys):
    out = tmp_path / "qs"
    # the default: fixed work (quickstart.epochs), no calibration, the final weights scored
    argv = ["quickstart", "--out", str(out), "--no-progress", *TINY]
    status = main(argv)
    printed = capsys.readouterr()
    report = out / "report.md"
    assert f"report: {report.resolve()}" in printed.out
    text = report.read_text()
    _exit_matches_report(status, text)
    assert "at least 5 points (`quickstart.margin`) above each baseline's" in text
    assert ("self-check failed" in printed.err) == (status == 1)
    for row in ("majority", "AMSR2"):
        assert re.search(rf"\|[^\n]*{row}[^\n]*\|", text, re.IGNORECASE), row
    # every image the report links to exists
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert images and all((out / img).is_file() for img in images)
    assert (out / "run" / "checkpoints" / "last.ckpt").is_file()
    assert (out / "eval" / "metrics.json").is_file()
    assert (out / "run" / "provenance.json").is_file()
    # the table's network row is the evaluation's score, of the final weights
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert Path(metrics["checkpoint"]).name == "last.ckpt"
    scores = metrics["unrounded"]
    row = re.search(r"\| \*\*network \(last\.ckpt\)\*\* \|([^\n]*)\|\n", text)
    assert row, text
    cells = [float(v) for v in row.group(1).split("|")]
    expected = [scores[c] for c in ("SIC", "SOD", "FLOE", "combined")]
    np.testing.assert_allclose(cells, expected, atol=0.051)
    assert "fixed at 2 epochs of 2 steps = 4 steps (`quickstart.epochs`), nothing timed" in text
    assert "4 steps done" in text
    assert "1 torch thread(s) (`trainer.threads`) in 32-true (`trainer.precision`)" in text
    assert "calibration" not in text and "calibrate" not in text
    run_cfg = (out / "run" / "config.yaml").read_text()
    assert re.search(r"threads: 1\b", run_cfg), run_cfg
    # a second run reuses the synthetic scenes (same files, untouched); the opt-in time
    # budget calibrates: 0.1 s of budget buys (at least) one epoch, the floor makes it two
    scene = next((out / "data" / "test").glob("*_prep.nc"))
    mtime = scene.stat().st_mtime_ns
    argv = ["quickstart", "--out", str(out), "--minutes", "0.002", "--no-progress", *TINY]
    status = main([*argv, "quickstart.min_epochs=2", "quickstart.checkpoint=best"])
    assert scene.stat().st_mtime_ns == mtime
    text = report.read_text()
    _exit_matches_report(status, text)
    assert "time budget of 0.002 min (`quickstart.minutes`); calibration measured" in text
    assert "the budget alone bought 1 epoch(s); `quickstart.min_epochs` raised it to 2" in text
    assert "| **network (best.ckpt)** |" in text


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
    with pytest.raises(ConfigError, match=r"quickstart\.checkpoint"):
        load_quickstart_config(None, ["quickstart.checkpoint=middle"])
    out = tmp_path / "never"
    assert main(["quickstart", "--out", str(out), "--minutes", "-1"]) == 2
    assert "'--minutes': must be positive" in capsys.readouterr().err
    assert not out.exists()  # checked before any work is done


def _run_config(overrides: list[str] = ()) -> tuple[qs_module.QuickstartSection, RunConfig]:
    qs, raw, _ = load_quickstart_config(None, list(overrides))
    raw["data"]["store"] = "/nonexistent/store.zarr"  # planning reads no data
    return qs, validate(RunConfig, raw)


def test_default_config_is_fixed_work_on_one_thread_with_trainable_rates():
    qs, cfg = _run_config()
    assert qs.minutes is None and qs.epochs == 7 and qs.checkpoint == "last"
    assert qs.margin == 5.0
    assert cfg.trainer.threads == 1
    assert cfg.trainer.precision == "32"  # the same arithmetic on every CPU
    assert cfg.train.scheduler.name == "cosine"
    # every ASPP rate reads data in the training patches on at least half the positions
    # per axis (6/12/18 in 192 px patches were refused: 12 and 18 read only padding)
    context = check_run_context(cfg).record()
    assert not context["untrained_taps"]
    shares = [r["axis_share"] for t in context["tasks"].values() for r in t["rates"]]
    assert len(shares) == 9 and min(shares) >= 0.5


def test_fixed_work_does_not_depend_on_timing(monkeypatch):
    calls = []

    def slow_machine(cfg, steps, threads=None):  # 100 s per step, 1000 s per scene
        calls.append(steps)
        return {
            "step_s": 100.0,
            "val_scene_s": 1000.0,
            "steps_per_epoch": 40.0,
            "val_scenes": 2.0,
            "threads": 2.0,
        }

    monkeypatch.setattr(qs_module, "calibrate", slow_machine)
    monkeypatch.setattr(qs_module, "torch_threads", lambda: 7)  # torch's default is ignored
    qs, cfg = _run_config()
    plan = plan_work(qs, cfg)
    assert calls == []  # nothing timed
    assert plan["mode"] == "fixed"
    assert (plan["epochs"], plan["steps"], plan["threads"]) == (7, 7 * 40, 1)
    assert plan["guard_minutes"] is None  # no wall clock stops it either
    assert plan["precision"] == "32-true"  # also on CPUs with native bf16
    qs6, cfg6 = _run_config(["quickstart.epochs=6", "trainer.threads=2"])
    assert (plan_work(qs6, cfg6)["epochs"], plan_work(qs6, cfg6)["threads"]) == (6, 2)
    # the opt-in time budget does time steps: the slow machine gets the epoch floor
    qs_b, cfg_b = _run_config(["quickstart.minutes=5"])
    budget = plan_work(qs_b, cfg_b)
    assert calls == [qs_b.calibration_steps]
    assert budget["mode"] == "budget" and budget["epochs"] == qs_b.min_epochs == 4
    assert budget["budget_epochs"] == 1
    assert budget["guard_minutes"] == pytest.approx(1.5 * 4 * (40 * 100 + 2 * 1000) / 60)


def _scores(network: float, amsr2: float, majority: float) -> dict[str, dict[str, float]]:
    return {
        "network": {"combined": network},
        "amsr2_pixel": {"combined": amsr2},
        "majority": {"combined": majority},
    }


def test_self_check_needs_5_points_over_each_baseline():
    passed, gaps = self_check(_scores(85.6, 80.5, 32.5), margin=5.0)
    assert passed and gaps["amsr2_pixel"] == pytest.approx(5.1)
    assert gaps["majority"] == pytest.approx(53.1)
    assert not self_check(_scores(85.4, 80.5, 32.5), margin=5.0)[0]  # 4.9 over AMSR2
    assert not self_check(_scores(85.4, 70.0, 80.5), margin=5.0)[0]  # 4.9 over majority
    assert self_check(_scores(85.5, 80.5, 32.5), margin=5.0)[0]  # exactly 5 passes
    assert not self_check(_scores(math.nan, 80.5, 32.5), margin=5.0)[0]
    text = self_check_text(_scores(85.4, 80.5, 32.5), 5.0)
    assert text.startswith("**Self-check: FAILED.**") and "exits with status 1" in text
    assert "at least 5 points" in text and "per-pixel AMSR2: -0.00" not in text
    assert "per-pixel AMSR2: +4.90" in text
    text = self_check_text(_scores(85.6, 80.5, 32.5), 5.0)
    assert text.startswith("**Self-check: passed.**") and "per-pixel AMSR2: +5.10" in text


@pytest.mark.parametrize(("network", "status"), [(85.4, 1), (85.6, 0)])
def test_exit_status_follows_the_self_check(monkeypatch, tmp_path, capsys, network, status):
    scores = {
        k: {"SIC": 1.0, "SOD": 1.0, "FLOE": 1.0, "combined": v}
        for k, v in (("network", network), ("amsr2_pixel", 80.5), ("majority", 32.5))
    }

    def fake_run(out, **kwargs):
        return QuickstartResult(
            out=tmp_path,
            report=tmp_path / "report.md",
            scores=scores,
            beats_baselines=network - 80.5 >= 5.0,
            margin=5.0,
        )

    monkeypatch.setattr(qs_module, "run_quickstart", fake_run)
    assert main(["quickstart", "--out", str(tmp_path), "--no-progress"]) == status
    captured = capsys.readouterr()
    assert ("self-check FAILED" in captured.out) == (status == 1)
    assert ("self-check passed" in captured.out) == (status == 0)
    assert ("self-check failed" in captured.err) == (status == 1)


def test_majority_baseline_predicts_the_most_frequent_class():
    from icecontext.workflows.baselines import MajorityBaseline

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
    from icecontext.workflows.baselines import MajorityBaseline, PixelBaseline

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
    from icecontext.workflows.report import MapCollector

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
