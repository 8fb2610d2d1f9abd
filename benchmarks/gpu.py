r"""GPU speed in one run: the bare model, ``icecontext train`` end to end, and charting.

Records, for the AutoICE reference preset (ResNet-152 to layer3 + three ASPP heads; the
small preset in ``--smoke``):

1. the bare model (random inputs, AdamW, bf16 autocast): images/s, achieved TFLOP/s and
   model FLOP utilisation (MFU) eager, in ``channels_last`` and compiled
   (``torch.compile``); FLOPs are counted by ``torch.utils.flop_counter``;
2. ``icecontext train`` on a prepared synthetic store: images/s, MFU (the bare model's
   FLOPs per image) and the share of step time spent waiting for data, with the
   defaults (2 km channels upsampled on the device, compiled steps on a GPU) and as
   before them (``data.coarse_on_device=false trainer.compile=false``);
3. ``icecontext predict`` and ``icecontext evaluate`` on full-size synthetic scenes:
   seconds per scene in a multi-scene run, steady state ``(T(n) - T(1)) / (n - 1)``, so
   start-up and model loading are not counted (the commands run in this process).

On a GPU (about 6 minutes on one H200)::

    python benchmarks/gpu.py --out gpu.json

``--smoke`` runs every part on the CPU at tiny sizes (compile skipped) in about a
minute: the test suite runs it so the script cannot rot between GPU sessions.

The GPU machine has torch but no package index: build wheels of the project and of the
dependencies it lacks there, without torch's own (``--no-deps``; ``/.whl/`` is
git-ignored), and install them there without an index::

    pip wheel --no-deps --wheel-dir .whl . pydantic pydantic-core annotated-types \
        typing-inspection zarr numcodecs donfig crc32c netCDF4 cftime h5netcdf rasterio \
        affine pyproj
    # there, before this script (pip names any dependency still missing):
    pip install --no-index --find-links .whl --no-deps .whl/*.whl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


@dataclass(frozen=True)
class Sizes:
    """The sizes of one benchmark run (full on a GPU, tiny for ``--smoke``)."""

    patch: int
    batch: int
    model_steps: int
    train_steps: int
    train_scenes: int
    train_scene_px: tuple[int, int]
    chart_scenes: int
    chart_scene_px: tuple[int, int]
    compile: bool
    preset: str


FULL = Sizes(768, 16, 20, 60, 4, (2000, 2100), 4, (5000, 5200), True, "autoice_reference")
SMOKE = Sizes(64, 2, 2, 6, 3, (200, 225), 2, (200, 225), False, "small_cpu")
"""The smoke run takes the small preset: the same code at a size CI can afford."""


def device_name(dev: torch.device) -> str:
    """The accelerator's name, or the CPU's architecture."""
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.machine()})"


def peak_tflops(dev: torch.device, given: float | None) -> float | None:
    """The device's dense bf16 peak: given, or known by name (None on a CPU)."""
    if given is not None or dev.type != "cuda":
        return given
    name = device_name(dev)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def sync(dev: torch.device) -> None:
    """Wait for the device (timings end when the work is done, not queued)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _model_step(variant: str, sizes: Sizes, dev: torch.device) -> tuple[Callable[[], None], int]:
    """One AdamW training step of the reference model as a closure, and its input channels."""
    from icecontext.models.config import load_model_spec
    from icecontext.models.multitask import build_model

    spec = load_model_spec(ROOT / "configs" / "model" / f"{sizes.preset}.yaml")
    model = build_model(spec.model, spec.in_channels).to(dev).train()
    fmt = torch.channels_last if variant != "eager" else torch.contiguous_format
    model = model.to(memory_format=fmt)
    fused = dev.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    forward: Callable[[torch.Tensor], Any] = model
    if variant == "compiled":
        forward = torch.compile(model)
    b, s = sizes.batch, sizes.patch
    x = torch.randn(b, spec.in_channels, s, s, device=dev).to(memory_format=fmt)
    sic = torch.randint(0, 11, (b, s, s), device=dev).float()
    sod = torch.randint(0, 6, (b, s, s), device=dev)
    floe = torch.randint(0, 7, (b, s, s), device=dev)
    ce = torch.nn.functional.cross_entropy

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            out = forward(x)
            loss = torch.nn.functional.mse_loss(out["SIC"][:, 0].float(), sic)
            loss = loss + ce(out["SOD"].float(), sod) + ce(out["FLOE"].float(), floe)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, spec.in_channels


def bare_model(variant: str, sizes: Sizes, dev: torch.device) -> dict[str, float]:
    """Images/s and FLOPs per image of the reference model in one variant."""
    from torch.utils.flop_counter import FlopCounterMode

    step, _ = _model_step(variant, sizes, dev)
    if variant != "compiled":  # the counter traces eager ops; compiled FLOPs are the same
        with FlopCounterMode(display=False) as counter:
            step()
        flops = float(counter.get_total_flops())
    else:
        flops = float("nan")
    for _ in range(3):  # warm-up (and compilation)
        step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(sizes.model_steps):
        step()
    sync(dev)
    dt = (time.perf_counter() - t0) / sizes.model_steps
    return {"images_per_s": sizes.batch / dt, "flops_per_image": flops / sizes.batch}


TRAIN_VARIANTS = {
    "train": [],
    "train_before": ["data.coarse_on_device=false", "trainer.compile=false"],
}
"""``icecontext train`` runs: the defaults, and without the 2 km batches and compiling."""


def _run_config(
    store: Path, work: Path, sizes: Sizes, dev: torch.device, overrides: list[str]
) -> Any:
    """The reference training config at this run's sizes, measuring only training steps."""
    from icecontext.run.config import load_run_config

    accelerator = "gpu" if dev.type == "cuda" else "cpu"
    return load_run_config(
        ROOT / "configs" / "train" / f"{sizes.preset}.yaml",
        [
            f"data.store={store}",
            f"data.patch_size={sizes.patch}",
            f"data.batch_size={sizes.batch}",
            f"data.patches_per_epoch={sizes.batch * (sizes.train_steps + 10)}",
            "data.splits.val_count=1",
            "data.splits.test=null",
            "train.max_epochs=1",
            "train.progress_bar=false",
            "train.validation.every_n_epochs=1000",
            f"trainer.accelerator={accelerator}",
            f"trainer.precision={'bf16' if dev.type == 'cuda' else '32'}",
            "trainer.channels_last=true",  # auto on a GPU; the smoke run takes the same path
            f"output.root={work / 'runs'}",
            # tiny smoke patches cannot train the reference rates; speed does not care
            f"model.allow_untrained_taps={str(sizes is SMOKE).lower()}",
            *overrides,
        ],
    )


def write_scenes(folder: Path, count: int, shape: tuple[int, int], seed: int) -> list[Path]:
    """Exact-format scenes (the package's fast builders), labelled."""
    from icecontext.testing import write_scene_files

    return write_scene_files(folder, count, height=shape[0], width=shape[1], seed=seed)


def train_end_to_end(
    work: Path, sizes: Sizes, dev: torch.device, overrides: list[str]
) -> dict[str, Any]:
    """``icecontext train`` (the library call) on a prepared store: step time and data wait."""
    from icecontext.data.store.prepare import prepare_store
    from icecontext.training.callbacks import StepTimer
    from icecontext.training.fit import train

    store = work / "store.zarr"
    cfg = _run_config(store, work, sizes, dev, [*overrides, f"output.name=bench-{len(overrides)}"])
    if not store.exists():
        write_scenes(work / "train", sizes.train_scenes, sizes.train_scene_px, seed=0)
        prepare_store(work / "train", store, features=list(cfg.data.features), progress=False)
    timer = StepTimer(skip=min(5, sizes.train_steps // 2))
    result = train(cfg, callbacks=[timer])
    out: dict[str, Any] = dict(timer.summary())
    out["images_per_s"] = sizes.batch / out["step_s"]
    out["workers"] = cfg.data.num_workers
    out["checkpoint"] = str(result.last_checkpoint)
    return out


def _timed(argv: list[str]) -> float:
    """Wall seconds of one ``icecontext`` command, run in this process (imports done)."""
    from icecontext.cli.main import main

    t0 = time.perf_counter()
    if main(argv) != 0:
        raise SystemExit(f"icecontext {' '.join(argv)} failed (its message is above)")
    return time.perf_counter() - t0


def charting(work: Path, checkpoint: str, sizes: Sizes, dev: torch.device) -> dict[str, float]:
    """Seconds per scene of ``predict`` and ``evaluate``, steady state over several scenes."""
    scenes = write_scenes(work / "chart", sizes.chart_scenes, sizes.chart_scene_px, seed=100)
    one = work / "chart-one"
    one.mkdir(exist_ok=True)
    (one / scenes[0].name).symlink_to(scenes[0])
    common = ["--checkpoint", checkpoint, "--device", str(dev), "--no-progress"]
    precision = ["--precision", "bf16" if dev.type == "cuda" else "32"]
    out: dict[str, float] = {}
    for command, extra in (
        ("predict", ["--formats", "netcdf"]),
        ("evaluate", ["--no-plots"]),
    ):
        times = []
        for folder in (one, work / "chart"):
            target = work / f"{command}-{folder.name}"
            outs = ["--out", str(target)]
            times.append(
                _timed([command, *common, *precision, "--scenes", str(folder), *outs, *extra])
            )
        out[f"{command}_first_s"] = times[0]
        out[f"{command}_s_per_scene"] = (times[1] - times[0]) / (len(scenes) - 1)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the figures and return them."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (tests)")
    ap.add_argument("--device", default=None, help="default: cuda if visible, else cpu")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device bf16 peak")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    ap.add_argument("--workdir", type=Path, default=None, help="keep data here (default: tmp)")
    args = ap.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    peak = peak_tflops(dev, args.peak_tflops)
    print("command: python " + " ".join(["benchmarks/gpu.py", *(argv or sys.argv[1:])]))
    print(f"device: {device_name(dev)}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    figures: dict[str, Any] = {"device": device_name(dev), "sizes": sizes.__dict__}

    started = time.perf_counter()
    variants = ["eager", "channels_last", *(["compiled"] if sizes.compile else [])]
    flops = float("nan")
    for variant in variants:
        try:
            r = bare_model(variant, sizes, dev)
        except Exception as exc:  # a compiler problem must not cost the rest of the run
            figures[f"model_{variant}"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            print(f"bare model, {variant:>13}: failed ({type(exc).__name__}: {exc})"[:300])
            continue
        flops = r["flops_per_image"] if variant == "eager" else flops
        tflops = r["images_per_s"] * flops / 1e12
        r["mfu"] = tflops / peak if peak else float("nan")
        figures[f"model_{variant}"] = r
        print(
            f"bare model, {variant:>13}: {r['images_per_s']:8.1f} images/s, "
            f"{tflops:7.2f} TFLOP/s, MFU {100 * r['mfu']:.1f} %"
        )
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name, overrides in TRAIN_VARIANTS.items():
            t = train_end_to_end(work, sizes, dev, overrides)
            t["mfu"] = t["images_per_s"] * flops / 1e12 / peak if peak else float("nan")
            t["overrides"] = overrides
            figures[name] = t
            print(
                f"icecontext train {' '.join(overrides) or '(defaults)'}: "
                f"{t['images_per_s']:.1f} images/s, MFU {100 * t['mfu']:.1f} %, "
                f"data wait {100 * t['wait_fraction']:.1f} % ({t['workers']} workers)"
            )
        c = charting(work, figures["train"]["checkpoint"], sizes, dev)
        figures["charting"] = c
        print(
            f"predict: {c['predict_s_per_scene']:.2f} s/scene (first {c['predict_first_s']:.1f} "
            f"s); evaluate: {c['evaluate_s_per_scene']:.2f} s/scene "
            f"({sizes.chart_scene_px[0]} x {sizes.chart_scene_px[1]} px)"
        )
    figures["total_s"] = time.perf_counter() - started
    print(f"total: {figures['total_s']:.0f} s")
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=2, default=str))
    return figures


if __name__ == "__main__":
    main()
