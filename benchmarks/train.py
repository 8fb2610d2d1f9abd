"""Training speed: steps/s and the share of step time spent waiting for data.

CPU part (always): the quickstart configuration (configs/quickstart.yaml: small preset,
its patch size, batch, workers and downsampling) on synthetic scenes prepared into a
store, trained for ``--steps`` steps with :class:`~icecontext.training.callbacks.StepTimer`
(the wait is measured between the end of one step and the start of the next; the first
steps are skipped). No validation runs during the measurement.

CUDA part (when a GPU is visible, or ``--device cuda``): the AutoICE reference preset at
768 x 768 on random inputs in bf16 autocast: images/s and achieved TFLOP/s, with FLOPs
counted by ``torch.utils.flop_counter`` (forward + backward); model FLOP utilisation is
printed when the device's peak is known or given (``--peak-tflops``).

    .venv/bin/python benchmarks/train.py --steps 60
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # benchmarks/gpu.py


def cpu_benchmark(steps: int, workdir: Path, threads: int | None = None) -> dict[str, float]:
    """Train the quickstart config for ``steps`` steps; return StepTimer's summary."""
    from icecontext.config import validate
    from icecontext.run.config import RunConfig, resolve_section_files
    from icecontext.training.callbacks import StepTimer
    from icecontext.training.fit import train
    from icecontext.workflows.quickstart import load_quickstart_config, prepare, synthesise

    qs, raw, cfg_path = load_quickstart_config(ROOT / "configs" / "quickstart.yaml")
    folders = synthesise(qs, workdir / "data", progress=False)
    store = workdir / "data" / "store.zarr"
    raw["data"]["store"] = str(store)
    raw["output"] = {"root": str(workdir), "name": f"bench-{time.time_ns()}"}
    raw["train"].update(max_epochs=None, max_steps=steps, progress_bar=False, resume="never")
    raw["train"]["validation"]["every_n_epochs"] = 10**6
    if threads:
        raw.setdefault("trainer", {})["threads"] = threads
    cfg = validate(RunConfig, resolve_section_files(raw, cfg_path.parent))
    prepare(folders["train"], store, cfg.data.features, cfg.data.downsample)
    timer = StepTimer(skip=5)
    t0 = time.perf_counter()
    train(cfg, callbacks=[timer])
    out = timer.summary()
    out["wall_s"] = time.perf_counter() - t0
    out["batch"] = cfg.data.batch_size
    out["patch"] = cfg.data.patch_size
    out["workers"] = cfg.data.num_workers
    out["threads"] = torch.get_num_threads()
    return out


def reference_benchmark(
    steps: int, size: int, batch: int, peak: float | None, device: str = "cuda"
) -> dict[str, float | str]:
    """Reference preset on random ``size`` x ``size`` inputs, bf16 autocast, AdamW steps.

    The eager variant of ``benchmarks/gpu.py``'s bare model (that script also times
    channels_last, torch.compile and the whole training and charting path). Made for
    CUDA; ``device="cpu"`` runs the same code (a smoke test, with a small ``size``).
    """
    import dataclasses

    from gpu import FULL, bare_model, device_name, peak_tflops

    dev = torch.device(device)
    sizes = dataclasses.replace(FULL, patch=size, batch=batch, model_steps=steps)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    r = bare_model("eager", sizes, dev)
    peak = peak_tflops(dev, peak)
    achieved = r["images_per_s"] * r["flops_per_image"] / 1e12
    return {
        "device": device_name(dev),
        "images_per_s": r["images_per_s"],
        "tflop_per_step": r["flops_per_image"] * batch / 1e12,
        "achieved_tflops": achieved,
        "mfu": achieved / peak if peak else float("nan"),
        "peak_tflops": peak or float("nan"),
        "max_memory_gb": torch.cuda.max_memory_allocated(dev) / 2**30
        if dev.type == "cuda"
        else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60, help="measured CPU training steps")
    ap.add_argument("--workdir", type=Path, default=None, help="keep data here (default: tmp)")
    ap.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda", "reference-on-cpu"),
        default="auto",
        help="auto: the CPU part, and the reference part when a GPU is visible; "
        "reference-on-cpu: only the reference part, on the CPU (smoke test, use a small "
        "--gpu-size)",
    )
    ap.add_argument("--gpu-steps", type=int, default=20)
    ap.add_argument("--gpu-batch", type=int, default=8)
    ap.add_argument("--gpu-size", type=int, default=768)
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    ap.add_argument("--peak-tflops", type=float, default=None, help="device bf16 peak")
    args = ap.parse_args()
    print("command: python " + " ".join(sys.argv))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.2f}, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    if args.device in ("auto", "cpu"):
        tmp = tempfile.TemporaryDirectory() if args.workdir is None else None
        work = Path(tmp.name) if tmp else args.workdir
        r = cpu_benchmark(args.steps, work, args.threads)
        print(
            f"CPU, quickstart config (patch {r['patch']}, batch {r['batch']}, "
            f"{r['workers']} loader worker(s), {r['threads']} torch thread(s)), "
            f"{r['steps']} measured steps:"
        )
        print(
            f"  {r['steps_per_s']:.3f} steps/s ({r['step_s']:.3f} s/step, "
            f"{r['steps_per_s'] * r['batch']:.1f} patches/s); data wait "
            f"{r['wait_s'] * 1000:.1f} ms = {100 * r['wait_fraction']:.1f} % of step time "
            f"(limit 10 %)"
        )
        if tmp:
            tmp.cleanup()
    on_gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if on_gpu or args.device == "reference-on-cpu":
        g = reference_benchmark(
            args.gpu_steps,
            args.gpu_size,
            args.gpu_batch,
            args.peak_tflops,
            device="cuda" if on_gpu else "cpu",
        )
        print(
            f"{g['device']}, reference preset, {args.gpu_size} x {args.gpu_size}, "
            f"batch {args.gpu_batch}, bf16 autocast:"
        )
        print(
            f"  {g['images_per_s']:.1f} images/s, {g['tflop_per_step']:.2f} TFLOP/step, "
            f"{g['achieved_tflops']:.1f} TFLOP/s achieved, MFU {100 * g['mfu']:.1f} % "
            f"(peak {g['peak_tflops']} TFLOP/s), peak memory {g['max_memory_gb']:.1f} GB"
        )
    elif args.device == "auto":
        print("GPU: none visible; the CUDA part was not run")


if __name__ == "__main__":
    main()
