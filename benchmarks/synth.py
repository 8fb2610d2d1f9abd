"""Wall time and peak memory of generating and writing one full-size synthetic scene.

Acceptance (issue 2): a 5000 x 5200 scene generated and written in < 60 s using
< 4 GB of RAM. Each repeat runs in a fresh child process so its peak resident set
size (``getrusage(RUSAGE_SELF).ru_maxrss`` read at its end) is the scene's alone; the
child reports it with the time of each step.

Usage::

    .venv/bin/python benchmarks/synth.py                    # 5000 x 5200, 2 repeats
    .venv/bin/python benchmarks/synth.py --height 1000 --width 1040 --repeats 3
    .venv/bin/python benchmarks/synth.py --raw              # raw 40 m file instead
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(args: argparse.Namespace) -> None:
    """Generate and write one scene; print the step times as JSON on the last line."""
    from icecontext.data.io.format import prep_file_name
    from icecontext.data.io.scene import write_scene
    from icecontext.synthetic.generator import generate_scene
    from icecontext.synthetic.params import SynthParams, resolve_scales
    from icecontext.synthetic.writers import (
        physical_to_r2t,
        physical_to_raw,
        raw_file_name,
        write_raw,
    )

    params = SynthParams(
        height=args.height,
        width=args.width,
        scales=resolve_scales(args.scale),
        keep_truth_arrays=False,
    )
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    scene = generate_scene(params, args.seed)
    times["generate"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        t = time.perf_counter()
        if args.raw:
            ds = physical_to_raw(scene, args.seed)
            path = Path(tmp) / raw_file_name(scene)
            del scene
            times["to_raw"] = time.perf_counter() - t
            t = time.perf_counter()
            write_raw(ds, path)
        else:
            ds = physical_to_r2t(scene)
            path = Path(tmp) / prep_file_name(scene.scene_name)
            del scene
            times["to_r2t"] = time.perf_counter() - t
            t = time.perf_counter()
            write_scene(ds, path)
        times["write"] = time.perf_counter() - t
        times["file_mb"] = path.stat().st_size / 1e6
    times["total"] = time.perf_counter() - t0
    times["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux
    print(json.dumps(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=5000)
    parser.add_argument("--width", type=int, default=5200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="scenes (seeds SEED, SEED+1..)")
    parser.add_argument("--scale", default="medium")
    parser.add_argument("--raw", action="store_true", help="write the raw 40 m file instead")
    parser.add_argument("--tmp", default=None, help="folder for the temporary output file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    print(
        f"command: {' '.join([Path(sys.executable).name, *sys.argv])}\n"
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}\n"
        f"scene: {args.height} x {args.width} px at 80 m, "
        f"{'raw 40 m' if args.raw else 'ready-to-train'} file, scale {args.scale}"
    )
    header = "seed  generate  convert  write   total(s)  peak RSS (GB)  file (MB)"
    print(header)
    rows = []
    for k in range(args.repeats):
        seed = args.seed + k
        cmd = [sys.executable, __file__, "--child", "--seed", str(seed)]
        cmd += ["--height", str(args.height), "--width", str(args.width), "--scale", args.scale]
        cmd += ["--raw"] if args.raw else []
        cmd += ["--tmp", args.tmp] if args.tmp else []
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        times = json.loads(done.stdout.strip().splitlines()[-1])
        convert = times.get("to_r2t", times.get("to_raw", 0.0))
        rows.append((times["total"], times["peak_rss_gb"]))
        print(
            f"{seed:4d}  {times['generate']:8.1f}  {convert:7.1f}  {times['write']:5.1f}"
            f"  {times['total']:8.1f}  {times['peak_rss_gb']:13.2f}  {times['file_mb']:9.0f}"
        )
    worst_t = max(r[0] for r in rows)
    worst_m = max(r[1] for r in rows)
    print(
        f"worst: {worst_t:.1f} s (limit 60 s, ratio {worst_t / 60:.2f}), "
        f"{worst_m:.2f} GB peak RSS (limit 4 GB, ratio {worst_m / 4:.2f})"
    )


if __name__ == "__main__":
    main()
