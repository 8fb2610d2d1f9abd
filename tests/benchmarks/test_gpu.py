"""benchmarks/gpu.py --smoke: every part of the GPU benchmark runs (on the CPU, tiny)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def test_the_gpu_benchmark_smoke_run_records_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--device", "cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["sizes"]["preset"] == "small_cpu"
    eager = figures["model_eager"]
    assert eager["images_per_s"] > 0 and eager["flops_per_image"] > 0
    assert figures["model_channels_last"]["images_per_s"] > 0
    assert "model_compiled" not in figures  # compile is skipped in the smoke run
    for name in ("train", "train_before"):  # defaults, and without 2 km batches/compile
        train = figures[name]
        assert train["steps"] >= 2 and train["images_per_s"] > 0
        assert 0 <= train["wait_fraction"] < 1
    assert figures["train_before"]["overrides"] == [
        "data.coarse_on_device=false",
        "trainer.compile=false",
    ]
    for command in ("predict", "evaluate"):
        assert math.isfinite(figures["charting"][f"{command}_s_per_scene"])
        assert figures["charting"][f"{command}_first_s"] > 0
    assert "icecontext train (defaults):" in done.stdout and "predict:" in done.stdout
