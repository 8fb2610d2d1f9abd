"""Wall time of the challenge metric and of every chart writer on one full-size scene.

What ``icecontext predict`` / ``evaluate`` / ``submission`` spend besides the network:
:func:`~icecontext.evaluation.score_charts` and :class:`~icecontext.evaluation.ChartScorer`
on three 80 m charts, and each writer of :mod:`icecontext.inference.exports` (CF NetCDF
with lat/lon, with probabilities as ``predict --probabilities`` writes them, GeoTIFFs on
the SAR grid with GCPs and reprojected to EPSG:3413, the quicklook PNG, one scene of the
upload package). The scene is an exact-format fixture
(``icecontext.testing.make_scene_dataset``) and the prediction is its reference with 20 %
of the pixels replaced by random classes (seeded), so the metric has work to do.

Each step is repeated ``--repeats`` times (the best time is printed with the mean);
the peak resident set size after each step is the process's high-water mark so far
(``getrusage``), so it grows monotonically: read it as "no step needed more than".

Usage::

    .venv/bin/python benchmarks/exports.py                       # 5000 x 5200
    .venv/bin/python benchmarks/exports.py --height 2500 --width 2600 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    """Build the scene, time each step, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=5000)
    parser.add_argument("--width", type=int, default=5200)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the written files")
    parser.add_argument("--keep", action="store_true", help="keep the written files")
    args = parser.parse_args()

    import numpy as np

    from icecontext.data.io.format import CHART_FILL, CHARTS, N_CLASSES
    from icecontext.evaluation import ChartScorer, score_charts
    from icecontext.inference.exports import (
        ProbabilityLayers,
        UploadPackageWriter,
        write_chart_geotiffs,
        write_chart_netcdf,
        write_quicklook,
    )
    from icecontext.inference.predictor import tile_confidence
    from icecontext.testing import make_scene_dataset

    h, w = args.height, args.width
    print(
        f"# {platform.node()} | python {platform.python_version()} | {os.cpu_count()} CPUs | "
        f"load {os.getloadavg()[0]:.2f} | scene {h} x {w} | repeats {args.repeats}"
    )
    t = time.perf_counter()
    ds = make_scene_dataset(h, w, seed=args.seed, polygon_size=400)
    rng = np.random.default_rng(args.seed)
    ref = {c: np.asarray(ds[c].values) for c in CHARTS}
    pred = {}
    for c in CHARTS:
        noise = rng.integers(0, N_CLASSES[c], (h, w), dtype=np.uint8)
        p = np.where(rng.random((h, w), dtype=np.float32) < 0.8, ref[c], noise).astype(np.uint8)
        p[ref[c] == CHART_FILL] = CHART_FILL
        pred[c] = p
    # packed uint8 probabilities and a confidence map, as predict --probabilities makes them
    import torch

    probs, conf = {}, {}
    for c in ("SOD", "FLOE"):
        logits = torch.from_numpy(rng.normal(size=(1, N_CLASSES[c], h, w)).astype(np.float32))
        p = torch.softmax(logits, dim=1)
        conf[c] = tile_confidence(p, "max")[0].numpy()
        probs[c] = torch.round(p[0] * 250).to(torch.uint8).numpy()
        del logits, p
    print(f"# inputs ready in {time.perf_counter() - t:.1f} s, peak RSS {_peak_mb():.0f} MB")

    out = Path(tempfile.mkdtemp(dir=args.tmp, prefix="icecontext-bench-exports-"))
    scorer = ChartScorer()
    counter = iter(range(10**6))

    def upload() -> None:
        with UploadPackageWriter(out / "upload_package.nc") as writer:
            writer.add("20180124T194759_dmi", pred)

    steps: list[tuple[str, Callable[[], object], list[str]]] = [
        ("score_charts (3 charts)", lambda: score_charts(ref, pred), []),
        (
            "ChartScorer.update (1 scene)",
            lambda: scorer.update(ref, pred, {"scene": str(next(counter))}),
            [],
        ),
        ("NetCDF: classes + lat/lon", lambda: write_chart_netcdf(out / "a.nc", ds, pred), ["a.nc"]),
        (
            "NetCDF: + uint8 probabilities + confidence",
            lambda: write_chart_netcdf(
                out / "b.nc",
                ds,
                pred,
                layers=ProbabilityLayers(probabilities=probs, confidences=conf, confidence="max"),
            ),
            ["b.nc"],
        ),
        ("GeoTIFF x3: SAR grid + GCPs", lambda: write_chart_geotiffs(out, ds, pred), ["*_SIC.tif"]),
        (
            "GeoTIFF x3: EPSG:3413 at 80 m",
            lambda: write_chart_geotiffs(out, ds, pred, crs="EPSG:3413"),
            ["*_SIC_epsg3413.tif"],
        ),
        ("quicklook PNG", lambda: write_quicklook(out / "q.png", ds, pred), ["q.png"]),
        ("upload package (1 scene)", upload, ["upload_package.nc"]),
    ]
    print(f"{'step':<46}{'best s':>9}{'mean s':>9}{'peak MB':>9}{'file MB':>9}")
    for label, fn, files in steps:
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        size = sum(p.stat().st_size for pattern in files for p in out.glob(pattern)) / 1e6
        print(
            f"{label:<46}{min(times):>9.2f}{statistics.mean(times):>9.2f}{_peak_mb():>9.0f}"
            + (f"{size:>9.1f}" if files else "")
        )
    if args.keep:
        print(f"# files under {out}")
    else:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
