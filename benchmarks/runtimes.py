"""Forward-pass speed of one tile in each runtime ``predict`` can use, on this CPU.

For a model preset of ``configs/model/`` (seeded random weights): eager torch in float32,
eager torch under bf16 autocast (fast only on CPUs with native bf16, AVX512-BF16 or
AMX), both again in the channels-last layout ``predict`` uses on a CPU, the TorchScript
export and the ONNX export run by onnxruntime
(``icecontext export --format onnx``, needs ``icecontext[onnx]``). Each runtime does
``--repeats`` timed passes after one warm-up on the same seeded ``--tile`` x ``--tile``
input; the median is printed with megapixels per second and the largest difference
from eager float32 outputs relative to their largest magnitude (random deep presets,
whose batch-norm statistics are not calibrated, have logits of 1e5 and more).

Usage::

    .venv/bin/python benchmarks/runtimes.py                        # small_cpu, 1024 px
    .venv/bin/python benchmarks/runtimes.py --preset reference --tile 768 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {
    "small_cpu": ROOT / "configs" / "model" / "small_cpu.yaml",
    "reference": ROOT / "configs" / "model" / "autoice_reference.yaml",
}


def timed(run: Callable[[], dict[str, torch.Tensor]], repeats: int) -> tuple[float, dict]:
    """Median seconds of ``run`` over ``repeats`` calls after a warm-up, and its outputs."""
    with torch.no_grad():
        out = run()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = run()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small_cpu")
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    from icecontext.data.io.variables import resolve_features
    from icecontext.inference.model_export import script_model
    from icecontext.inference.onnx_model import OnnxModel, export_onnx
    from icecontext.inference.predictor import cpu_has_native_bf16
    from icecontext.models.config import load_model_spec
    from icecontext.models.multitask import build_model

    torch.set_num_threads(args.threads)
    spec = load_model_spec(PRESETS[args.preset])
    features = resolve_features(list(spec.features or []))
    model = build_model(spec.model, len(features), seed=0).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, len(features), args.tile, args.tile, generator=gen)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {args.threads} thread(s), native bf16: "
        f"{cpu_has_native_bf16()}"
    )
    print(f"preset {args.preset}, {len(features)} inputs, tile {args.tile} px, batch 1")

    def bf16() -> dict[str, torch.Tensor]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return {k: v.float() for k, v in model(x).items()}

    # predict's CPU layout: channels-last model and tiles (inference.predictor.for_cpu_inference)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def bf16_cl() -> dict[str, torch.Tensor]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return {k: v.float() for k, v in model_cl(x_cl).items()}

    runs: dict[str, Callable[[], dict[str, torch.Tensor]]] = {
        "torch fp32": lambda: model(x),
        "torch bf16 autocast": bf16,
        "torch fp32 chan-last": lambda: model_cl(x_cl),
        "torch bf16 chan-last": bf16_cl,
        "TorchScript fp32": (lambda scripted: lambda: scripted(x))(script_model(model)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        t0 = time.perf_counter()
        export_onnx(model, path, len(features))
        mib = path.stat().st_size / 2**20
        print(f"ONNX export: {time.perf_counter() - t0:.1f} s, {mib:.1f} MiB")
        session = OnnxModel(path, spec.model.sic_mode == "regression", None, threads=args.threads)
        runs["onnxruntime fp32"] = lambda: session(x)

        reference = None
        print(f"{'runtime':<22}{'s/tile':>9}{'MP/s':>8}{'vs torch fp32':>15}{'rel. diff':>12}")
        base = None
        for name, run in runs.items():
            seconds, out = timed(run, args.repeats)
            if reference is None:
                reference, base = out, seconds
            # relative to the output scale: random deep presets have huge logits
            diff = max(
                float((out[k] - reference[k]).abs().max() / reference[k].abs().max())
                for k in reference
            )
            mp = args.tile * args.tile / seconds / 1e6
            assert base is not None
            print(f"{name:<22}{seconds:>9.3f}{mp:>8.2f}{base / seconds:>14.2f}x{diff:>12.2e}")


if __name__ == "__main__":
    main()
