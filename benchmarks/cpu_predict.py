"""``predict`` on this CPU against its own bf16 matmul peak, and bf16 against float32.

Issue 13's CPU acceptance: with ``predict``'s defaults, the reference preset charts a
2048 x 2048 scene at 35 % or more of the bf16 matrix-multiply peak that torch measures
in the same run (net of start-up), with outputs within the documented agreement.

In one run:

1. the peak: the best GFLOP/s of bf16 ``torch.mm`` over square sizes 1024-4096, measured
   before and after the predictions (the higher is used);
2. a reference-preset checkpoint with seeded weights and BatchNorm statistics
   calibrated on the scene (``benchmarks/inference.py``'s reason: an uncalibrated random
   ResNet-152 has logits of 1e6, and its agreement would measure that, not precision);
3. :func:`~icecontext.inference.scenes.predict_scenes` with ``PredictSettings()``'s
   defaults and then with ``--precision 32``: seconds of the prediction itself (without
   writing the files), FLOPs of the tiles it ran (``torch.utils.flop_counter`` on one
   tile, times the tiles), GFLOP/s and the share of the peak;
4. the agreement of the two: share of equal class pixels per chart, SIC mean absolute
   difference in classes;
5. start-up: a fresh process importing the package and loading the checkpoint;
6. with ``--trained CKPT --scenes DIR``, the same agreement for a trained checkpoint on
   its scenes (an untrained network has many near-ties between classes, so step 4 is a
   pessimistic bound).

    .venv/bin/python benchmarks/cpu_predict.py            # ~4 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from inference import calibrate_batchnorm, scene_file  # noqa: E402  (benchmarks/inference.py)


def matmul_peak_gflops(sizes: tuple[int, ...] = (1024, 2048, 4096), repeats: int = 5) -> float:
    """Best bf16 ``torch.mm`` GFLOP/s over square sizes (torch's own kernels)."""
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, dtype=torch.bfloat16)
        b = torch.randn(n, n, dtype=torch.bfloat16)
        a @ b  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def reference_checkpoint(work: Path, scene: Path) -> Path:
    """A reference-preset checkpoint (training's record format), BatchNorm calibrated."""
    from icecontext.data.loader.sources import NetCDFSource
    from icecontext.inference.checkpoint import save_checkpoint
    from icecontext.models.multitask import build_model
    from icecontext.run.config import RunConfig

    spec = yaml.safe_load((ROOT / "configs" / "model" / "autoice_reference.yaml").read_text())
    cfg = RunConfig.model_validate(
        {
            "seed": 0,
            "data": {"root": str(scene.parent), "features": spec["data"]["features"]},
            "model": spec["model"],
            "output": {"root": str(work), "name": "ref"},
        }
    )
    channels = cfg.data.channels
    model = build_model(cfg.model, len(channels), seed=0)
    source = NetCDFSource(scene, channels)
    calibrate_batchnorm(model, source, channels, "cpu")
    return save_checkpoint(work / "ref.ckpt", model, cfg, channels)


def tile_flops(ckpt: Path, shape: tuple[int, int]) -> float:
    """Forward FLOPs of one tile of ``shape`` of the checkpoint's model."""
    from torch.utils.flop_counter import FlopCounterMode

    from icecontext.inference.loading import load_inference_model

    loaded = load_inference_model(ckpt)
    x = torch.zeros(1, len(loaded.features), *shape)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        loaded.model(x)
    return float(counter.get_total_flops())


def predict(ckpt: Path, scene: Path, out: Path, precision: str | None) -> dict:
    """Run ``predict_scenes`` with its defaults (or one precision); return what it did."""
    from icecontext.inference.scenes import PredictSettings, predict_scenes
    from icecontext.inference.tiling import TileSettings

    settings = PredictSettings(progress=False)
    if precision is not None:
        settings.precision = precision  # type: ignore[assignment]
    run = predict_scenes(ckpt, scene.parent, out, settings)
    result = run.scenes[0]
    layout = TileSettings(tile=run.tile, overlap=run.overlap).plan(result.shape)  # as predict
    return {
        "precision": run.precision,
        "seconds": result.seconds,
        "tiles": result.tiles,
        "tile_shape": layout.tile,
        "netcdf": result.files["netcdf"][0],
    }


def agreement(a: Path, b: Path) -> dict[str, float]:
    """Share of equal class pixels per chart and SIC mean |difference| in classes."""
    out = {}
    with (
        xr.open_dataset(a, mask_and_scale=False) as x,
        xr.open_dataset(b, mask_and_scale=False) as y,
    ):
        for chart in ("SIC", "SOD", "FLOE"):
            p, q = x[chart].values, y[chart].values
            valid = (p != 255) & (q != 255)
            out[f"{chart}_equal"] = float((p[valid] == q[valid]).mean())
        p, q = x["SIC"].values.astype(int), y["SIC"].values.astype(int)
        valid = (p != 255) & (q != 255)
        out["SIC_mean_abs_diff"] = float(np.abs(p[valid] - q[valid]).mean())
    return out


def startup_seconds(ckpt: Path) -> float:
    """Wall time of a fresh process that imports the package and loads the checkpoint."""
    code = (
        "from icecontext.inference.loading import load_inference_model; "
        f"load_inference_model({str(ckpt)!r})"
    )
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=2048, help="scene side in pixels")
    ap.add_argument("--workdir", type=Path, default=None, help="keep data here (default: tmp)")
    ap.add_argument("--trained", type=Path, default=None, help="a trained checkpoint")
    ap.add_argument("--scenes", type=Path, default=None, help="scenes for --trained")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    print(f"command: python benchmarks/cpu_predict.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.2f}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        peak = matmul_peak_gflops()
        scene = scene_file(work, args.size, args.size)
        ckpt = reference_checkpoint(work, scene)
        runs = {
            label: predict(ckpt, scene, work / label, p)
            for label, p in (("default", None), ("fp32", "32"))
        }
        peak = max(peak, matmul_peak_gflops())
        th, tw = runs["default"]["tile_shape"]
        flops = tile_flops(ckpt, (th, tw))
        print(f"bf16 matmul peak (torch.mm, best of 1024-4096): {peak:.0f} GFLOP/s")
        for label, r in runs.items():
            rate = flops * r["tiles"] / r["seconds"] / 1e9
            print(
                f"predict, {label:>7} (precision {r['precision']:>4}): {r['seconds']:6.1f} s, "
                f"{r['tiles']} tiles of {th} x {tw} px, {rate:6.1f} GFLOP/s = "
                f"{100 * rate / peak:.0f} % of the bf16 peak"
            )
        agree = agreement(runs["default"]["netcdf"], runs["fp32"]["netcdf"])
        print(
            "default vs float32: equal class pixels "
            + ", ".join(f"{c} {100 * agree[f'{c}_equal']:.2f} %" for c in ("SIC", "SOD", "FLOE"))
            + f"; SIC mean |difference| {agree['SIC_mean_abs_diff']:.4f} classes"
        )
        print(f"start-up (import + load checkpoint, fresh process): {startup_seconds(ckpt):.1f} s")
        if args.trained is not None and args.scenes is not None:
            trained_agreement(args.trained, args.scenes, work / "trained")


def trained_agreement(ckpt: Path, scenes: Path, work: Path) -> None:
    """Print the default-vs-float32 agreement of a trained checkpoint on every scene."""
    from icecontext.inference.scenes import PredictSettings, predict_scenes

    runs = {}
    for label, precision in (("default", "auto"), ("fp32", "32")):
        settings = PredictSettings(formats=("netcdf",), progress=False, precision=precision)
        runs[label] = predict_scenes(ckpt, scenes, work / label, settings)
    for a, b in zip(runs["default"].scenes, runs["fp32"].scenes, strict=True):
        agree = agreement(a.files["netcdf"][0], b.files["netcdf"][0])
        print(
            f"trained {ckpt.name}, {a.name} ({runs['default'].precision} vs 32): equal "
            + ", ".join(f"{c} {100 * agree[f'{c}_equal']:.2f} %" for c in ("SIC", "SOD", "FLOE"))
            + f"; SIC mean |difference| {agree['SIC_mean_abs_diff']:.4f} classes"
        )


if __name__ == "__main__":
    main()
