"""Full-scene inference: peak memory and megapixels per second, tiled versus single pass.

Acceptance (issue 6): peak memory of tiled inference with the AutoICE reference preset
stays under 3 GB on CPU for a 5000 x 5200 scene and does not grow with scene size (two
sizes); tiled throughput is at least 70 % of single-pass throughput where a single pass
fits, with the overlap set from the receptive field.

What is timed: :func:`icecontext.inference.predictor.predict_scene` over a
:class:`~icecontext.inference.streaming.StreamingNetCDFSource` (tiles read from the
``_prep.nc`` file) for a model of a preset in ``configs/model/`` with seeded random
weights and BatchNorm statistics calibrated on eight 256-pixel patches of the scene
(the cost does not depend on the weights; see :func:`calibrate_batchnorm`), i.e.
everything ``icecontext predict`` does except writing the output files
(``benchmarks/exports.py`` times those).
A "single pass" is the same call with one tile covering the whole padded scene.

Each configuration runs in a fresh child process, so its peak resident set size
(``VmHWM`` of ``/proc/self/status``) is its own; the child also reports the RSS
after imports and model construction (``base``), so ``peak - base`` is what the
prediction added. The scenes (``icecontext.testing.make_scene_dataset``, exact format)
are written once into ``--workdir`` and reused. With ``--agreement`` the tiled and
single-pass class maps of the same scene are compared (fraction of equal pixels).

Usage::

    .venv/bin/python benchmarks/inference.py                      # the acceptance set
    .venv/bin/python benchmarks/inference.py --presets small_cpu --sizes 2500x2600
    .venv/bin/python benchmarks/inference.py --device cuda        # on a GPU machine
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRESETS = {
    "small_cpu": ROOT / "configs" / "model" / "small_cpu.yaml",
    "reference": ROOT / "configs" / "model" / "autoice_reference.yaml",
}


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _rss_mb() -> float:
    """Peak RSS of this process image.

    ``VmHWM`` rather than ``getrusage().ru_maxrss``: Linux carries ``ru_maxrss`` across
    ``execve``, so a child would report its parent's peak if that was higher.
    """
    peak = _status_mb("VmHWM")
    if peak != peak:  # no /proc (not Linux)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return peak


def _current_rss_mb() -> float:
    return _status_mb("VmRSS")


def scene_file(workdir: Path, height: int, width: int) -> Path:
    """Write (once) a synthetic exact-format scene of the given size; return its path."""
    from icecontext.data.io.format import prep_file_name
    from icecontext.data.io.scene import write_scene
    from icecontext.testing import make_scene_dataset

    folder = workdir / f"scene_{height}x{width}"
    found = sorted(folder.glob("*_prep.nc")) if folder.exists() else []
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    ds = make_scene_dataset(height, width, seed=1, polygon_size=400)
    path = folder / prep_file_name(ds.attrs["scene_id"].removesuffix("_prep.nc"))
    write_scene(ds, path)
    return path


def calibrate_batchnorm(model, source, features, device, patches: int = 8, size: int = 256) -> None:
    """Set BatchNorm statistics from a few scene patches (seeded), as training would.

    A randomly initialised network keeps BatchNorm's initial statistics (mean 0, var 1),
    under which activations grow through ResNet-152 to ~1e6 and every output depends
    strongly on far-away input: tiled-vs-single agreement would then measure the
    untrained network, not tiling. Recalibrated, the timing is the same and the
    agreement figures are closer to what a trained model shows.
    """
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    h, w = source.shape
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(patches // 4):
            x = np.stack(
                [
                    source.read_inputs(
                        (
                            int(rng.integers(0, max(1, h - size))),
                            int(rng.integers(0, max(1, w - size))),
                            size,
                            size,
                        ),
                        features,
                    )
                    for _ in range(4)
                ]
            )
            model(torch.from_numpy(x).to(device))
    model.eval()


def child(args: argparse.Namespace) -> None:
    """Run one configuration; print a JSON record on the last line."""
    import numpy as np
    import torch

    from icecontext.data.io.variables import resolve_features
    from icecontext.inference.predictor import predict_scene, resolve_overlap
    from icecontext.inference.scenes import default_tile
    from icecontext.inference.streaming import StreamingNetCDFSource
    from icecontext.inference.tiling import TileSettings, round_up
    from icecontext.models.config import load_model_spec
    from icecontext.models.multitask import build_model

    torch.set_num_threads(args.threads)
    spec = load_model_spec(PRESETS[args.preset])
    features = resolve_features(list(spec.features or []))
    model = build_model(spec.model, len(features), seed=0).eval()
    device = torch.device(args.device)
    model.to(device)
    source = StreamingNetCDFSource(args.scene, features, 1)
    h, w = source.shape
    if args.calibrate_bn:
        calibrate_batchnorm(model, source, features, device)
    rf = model.receptive_field()
    if args.mode == "single":
        tile, overlap = max(round_up(h, 32), round_up(w, 32)), 0
    else:
        tile = args.tile or default_tile(device)
        overlap = resolve_overlap(args.overlap or "auto", rf, tile)
    base = _current_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    done = {"tiles": 0, "of": 0}

    class Stop(Exception):
        pass

    def progress(n: int, total: int) -> None:
        done.update(tiles=n, of=total)
        if args.max_tiles and n >= args.max_tiles and n < total:
            raise Stop

    t0 = time.perf_counter()
    pred = None
    with contextlib.suppress(Stop):
        pred = predict_scene(
            model,
            source,
            features,
            tiling=TileSettings(tile=tile, overlap=overlap, batch=args.batch),
            device=device,
            precision=args.precision,
            progress=progress,
        )
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if pred is None:  # stopped early: memory figures only
        from icecontext.inference.tiling import plan_tiles

        layout = plan_tiles((h, w), tile, overlap, balance=True)
        extra = {"tile": layout.tile, "margin": layout.margin}
        mpix = float("nan")
    else:
        extra = pred.extra
        mpix = h * w / 1e6 / pred.seconds
    record = {
        "preset": args.preset,
        "mode": args.mode,
        "shape": [h, w],
        "tile": list(extra["tile"]),
        "margin": extra["margin"],
        "overlap_asked": overlap,
        "receptive_field_px": rf,
        "tiles": done["of"] or 1,
        "tiles_run": done["tiles"] or 1,
        "batch": args.batch,
        "precision": args.precision,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "mpix_per_s": mpix,
        "base_rss_mb": base,
        "peak_rss_mb": _rss_mb(),
        "gpu_peak_mb": (
            torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
        ),
    }
    if args.save_classes and pred is not None:
        np.savez_compressed(args.save_classes, **pred.classes)
    print(json.dumps(record))


def run_child(args: argparse.Namespace, **kw: object) -> dict:
    """Run ``child`` in a fresh interpreter and return its record."""
    cmd = [sys.executable, __file__, "--child"]
    for key, value in kw.items():
        if value is None or value is False:
            continue
        cmd.append(f"--{key.replace('_', '-')}")
        if value is not True:
            cmd.append(str(value))
    cmd += ["--threads", str(args.threads), "--device", args.device]
    cmd += ["--precision", args.precision]
    if not args.calibrate_bn:
        cmd.append("--no-calibrate-bn")
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child failed ({' '.join(cmd)}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _row(r: dict) -> str:
    shape = f"{r['shape'][0]}x{r['shape'][1]}"
    tile = f"{r['tile'][0]}x{r['tile'][1]}"
    return (
        f"{r['preset']:<10}{r['mode']:<8}{shape:>11}{tile:>11}{r['margin']:>7}"
        f"{str(r['tiles_run']) + '/' + str(r['tiles']):>7}"
        f"{r['seconds']:>9.1f}{r['mpix_per_s']:>9.3f}{r['base_rss_mb']:>9.0f}"
        f"{r['peak_rss_mb']:>9.0f}"
        + (f"{r['gpu_peak_mb']:>9.0f}" if r["gpu_peak_mb"] is not None else "")
    )


def main() -> None:
    """Parse arguments and run the benchmark set (or one child)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scene", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("tiled", "single"), default="tiled")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small_cpu")
    parser.add_argument("--save-classes", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--presets", nargs="+", default=["small_cpu", "reference"])
    parser.add_argument(
        "--sizes",
        nargs="*",
        default=["2500x2600", "5000x5200"],
        help="scene sizes HxW for the memory runs (tiled)",
    )
    parser.add_argument(
        "--throughput-size",
        default="2500x2600",
        help="scene size HxW of the tiled-vs-single-pass comparison",
    )
    parser.add_argument(
        "--single-presets",
        nargs="*",
        default=None,
        help="presets that get a single pass (default: all of --presets)",
    )
    parser.add_argument("--tile", type=int, default=None, help="tile side (default 2048)")
    parser.add_argument(
        "--overlap",
        default=None,
        help="margin: pixels, auto (default: the RF radius capped at tile/16) or rf (the radius)",
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument(
        "--max-tiles",
        type=int,
        default=0,
        help="memory runs stop after this many tiles (0 = whole scene); peak memory is "
        "reached with the first batch, the output maps are allocated up front",
    )
    parser.add_argument(
        "--max-tiles-presets",
        nargs="*",
        default=["reference"],
        help="presets whose memory runs obey --max-tiles",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("32", "bf16", "16"), default="32")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--agreement", action="store_true", help="compare tiled vs single maps")
    parser.add_argument(
        "--no-calibrate-bn",
        dest="calibrate_bn",
        action="store_false",
        help="keep the random model's initial BatchNorm statistics",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of each throughput mode, interleaved in alternating order; the best "
        "of each is compared",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "icecontext-bench-inference",
        help="where the synthetic scenes are written once and reused",
    )
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import numpy as np

    print(
        f"# {platform.node()} | python {platform.python_version()} | "
        f"{os.cpu_count()} CPUs | load {os.getloadavg()[0]:.2f} | device {args.device} | "
        f"threads {args.threads} | precision {args.precision} | batch {args.batch}"
    )
    t = time.perf_counter()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    tsize = tuple(int(v) for v in args.throughput_size.split("x"))
    files = {s: scene_file(args.workdir, *s) for s in dict.fromkeys([*sizes, tsize])}
    print(f"# scenes ready in {time.perf_counter() - t:.0f} s under {args.workdir}")
    head = (
        f"{'preset':<10}{'mode':<8}{'scene':>11}{'tile':>11}{'margin':>7}{'tiles':>7}"
        f"{'seconds':>9}{'MPix/s':>9}{'base MB':>9}{'peak MB':>9}"
        + ("  GPU MB" if args.device != "cpu" else "")
    )
    print(head)
    single_presets = args.presets if args.single_presets is None else args.single_presets
    records = []
    for preset in args.presets:
        common = {"preset": preset, "tile": args.tile, "overlap": args.overlap}
        common["batch"] = args.batch
        for size in sizes:
            limit = args.max_tiles if preset in args.max_tiles_presets else 0
            r = run_child(args, scene=files[size], mode="tiled", max_tiles=limit or None, **common)
            records.append(r)
            print(_row(r), flush=True)
        if preset in single_presets:
            best: dict[str, dict] = {}
            cls = {}
            for i in range(args.repeats):
                # alternate the order: the first run of a pair tends to be slower
                for mode in ("tiled", "single") if i % 2 == 0 else ("single", "tiled"):
                    save = None
                    if args.agreement and i == 0:
                        save = args.workdir / f"classes_{preset}_{mode}.npz"
                    r = run_child(args, scene=files[tsize], mode=mode, save_classes=save, **common)
                    records.append(r)
                    print(_row(r), flush=True)
                    if mode not in best or r["mpix_per_s"] > best[mode]["mpix_per_s"]:
                        best[mode] = r
                    if save is not None:
                        cls[mode] = np.load(save)
            ratio = best["tiled"]["mpix_per_s"] / best["single"]["mpix_per_s"]
            line = (
                f"  {preset}: tiled / single-pass throughput (best of {args.repeats}) = {ratio:.2f}"
            )
            if cls:
                agree = {
                    c: float(np.mean(cls["tiled"][c] == cls["single"][c])) for c in cls["tiled"]
                }
                line += "; equal pixels " + ", ".join(f"{c} {v:.4f}" for c, v in agree.items())
            print(line, flush=True)
        mem = [r for r in records if r["preset"] == preset and r["mode"] == "tiled"]
        by_size = {tuple(r["shape"]): r["peak_rss_mb"] for r in mem}
        if len(by_size) > 1:
            sizes_sorted = sorted(by_size, key=lambda s: s[0] * s[1])
            lo, hi = by_size[sizes_sorted[0]], by_size[sizes_sorted[-1]]
            (h0, w0), (h1, w1) = sizes_sorted[0], sizes_sorted[-1]
            print(
                f"  {preset}: tiled peak RSS {lo:.0f} MB -> {hi:.0f} MB ({hi / lo:.2f}x) "
                f"for {h1 * w1 / (h0 * w0):.1f}x the pixels"
            )
    print(f"# total {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
