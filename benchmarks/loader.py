"""Patch loading speed: per-patch NetCDF reads (as the published loaders do) vs the store.

Writes synthetic scenes, prepares a store from them, then measures patches per second
for each patch size and worker count with

(a) ``netcdf``: for every patch, open the scene's NetCDF file, read the full arrays of
    the 24 inputs and 3 charts, crop the patch, crop the 2 km window with the starter
    kit's integer offsets and resize it (what the AutoICE starter kit and the
    published paper code do);
(b) ``store``: :class:`~icecontext.data.loader.datamodule.PatchDataset` over the prepared store
    (valid-pixel check, exact 2 km geometry, augmentation included), whose batches are
    assembled in place by ``--threads`` threads per loading process.

Both go through :class:`~icecontext.data.loader.batching.PatchLoader` (the training loader: a
torch DataLoader whose workers reuse their shared-memory batch slots for the store's
in-place batches) with the same batch size. Example::

    .venv/bin/python benchmarks/loader.py --scenes 4 --height 2000 --width 2100

With ``--end-to-end`` it times the training loader as training sees it instead: batches
per second delivered to a consumer that copies each batch and then waits a GPU step
(``--step-ms``), and the consumer's data wait, for 768 px patches of the 18 reference
inputs, with (``slots``: ``PatchLoader``) and without (``fresh``: a plain ``DataLoader``)
the reuse of worker batch slots, and with the 14 AMSR2/ERA5 channels carried at 2 km
(``coarse``: ``data.coarse_on_device``, PatchLoader; rebuilding the inputs is device
work, timed apart on this CPU), the variants interleaved over ``--repeats`` trials::

    .venv/bin/python benchmarks/loader.py --end-to-end --scenes 2 --height 2000 \
        --width 2100 --workers 1 2 --repeats 4 --batches 8 --batch 16 --step-ms 300 \
        --variants slots coarse
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset

from icecontext.data.io.format import CHARTS, INPUT_VARIABLES
from icecontext.data.io.variables import feature_grid, resolve_features
from icecontext.data.loader.batching import PatchLoader
from icecontext.data.loader.datamodule import PatchDataset, collate_patches
from icecontext.data.loader.sampling import PatchSampler, SamplingSettings
from icecontext.data.loader.sources import store_sources
from icecontext.data.store.prepare import prepare_store
from icecontext.data.store.prepared import PreparedStore
from icecontext.models.coarse_inputs import CoarseInputs
from icecontext.testing import write_scene_files


class PerPatchNetCDF(Dataset[dict[str, torch.Tensor]]):
    """The published loaders' pattern: open the file and read full arrays for every patch."""

    def __init__(self, files: list[Path], patch: int, length: int, seed: int = 0):
        self.files, self.patch, self.length, self.seed = files, patch, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, i])
        path = self.files[int(rng.integers(len(self.files)))]
        p = self.patch
        with xr.open_dataset(path, engine="netcdf4", mask_and_scale=False) as ds:
            full = {v: ds[v].values for v in (*INPUT_VARIABLES, *CHARTS)}
        h, w = full[CHARTS[0]].shape
        r, c = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        sar = [full[v][r : r + p, c : c + p] for v in INPUT_VARIABLES if feature_grid(v) == "sar"]
        # starter-kit 2 km crop: integer cell offset, ceil(P/25) cells, resized to P x P
        r2, c2, n2 = int(r / 25), int(c / 25), math.ceil(p / 25)
        amsr = np.stack(
            [
                full[v][r2 : r2 + n2, c2 : c2 + n2]
                for v in INPUT_VARIABLES
                if feature_grid(v) != "sar"
            ]
        )
        amsr_up = torch.nn.functional.interpolate(
            torch.from_numpy(amsr)[None], size=(p, p), mode="nearest"
        )[0]
        x = torch.cat([torch.from_numpy(np.stack(sar)), amsr_up])
        out = {"x": x}
        for chart in CHARTS:
            out[chart] = torch.from_numpy(full[chart][r : r + p, c : c + p].copy())
        return out


def _collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def measure(dataset: Dataset, workers: int, batch: int, n_batches: int, collate) -> float:
    """Patches per second over ``n_batches`` batches, after one warm-up batch.

    With 0 workers the CPU time per patch of this process is kept in ``LAST_CPU_S``:
    unlike the wall-clock rate it does not depend on other jobs sharing the cores.
    """
    global LAST_CPU_S
    loader = PatchLoader(  # a plain DataLoader unless the dataset assembles batches in place
        dataset,
        batch_size=batch,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
    it = iter(loader)
    next(it)  # worker start-up and first-touch costs are not counted
    t0, c0 = time.perf_counter(), time.process_time()
    done = 0
    for _ in range(n_batches):
        b = next(it)
        done += b["x"].shape[0]
    dt = time.perf_counter() - t0
    LAST_CPU_S = (time.process_time() - c0) / done
    del it
    return done / dt


LAST_CPU_S = float("nan")


# ------------------------------------------------------------------- end-to-end A/B


E2E_FEATURES = ["sar", "incidence", "distance", "amsr2:18.7", "amsr2:36.5", "era5", "latlon"]
"""The 18 inputs of configs/train/autoice_reference.yaml."""


def end_to_end(
    dataset: Dataset,
    variant: str,
    workers: int,
    batch: int,
    n_batches: int,
    step_s: float,
    rebuild: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None,
) -> tuple[float, float, int, float]:
    """Time the loader as a training process consumes it.

    Returns batches per second, the consumer's data wait share, the bytes of one batch
    and the seconds ``rebuild`` takes per batch on this CPU. The consumer copies each
    batch into buffers allocated once (the host side of a host-to-device copy), then
    sleeps ``step_s`` (the accelerator's step, during which the training process leaves
    the CPU to the loader). ``rebuild`` (the inputs from 2 km channels: device work) is
    timed after the loop, not in it. ``variant``: ``slots`` or ``coarse`` (PatchLoader,
    worker slots reused) or ``fresh`` (plain DataLoader, a fresh shared-memory batch
    per batch).
    """
    loader_type = torch.utils.data.DataLoader if variant == "fresh" else PatchLoader
    loader = loader_type(
        dataset,
        batch_size=batch,
        num_workers=workers,
        collate_fn=collate_patches,
        persistent_workers=False,
        prefetch_factor=2,
    )
    it = iter(loader)
    first = next(it)  # worker start-up is not counted
    sinks = {k: torch.empty_like(v) for k, v in first.items() if isinstance(v, torch.Tensor)}
    del first
    wait = rebuilding = 0.0
    t0 = time.perf_counter()
    for _ in range(n_batches):
        t1 = time.perf_counter()
        b = next(it)
        wait += time.perf_counter() - t1
        for k, sink in sinks.items():
            sink.copy_(b[k])
        del b
        time.sleep(step_s)
    dt = time.perf_counter() - t0
    del it
    if rebuild is not None:  # device work: timed apart, on this CPU, on the last batch
        t1 = time.perf_counter()
        for _ in range(3):
            rebuild(sinks)
        rebuilding = (time.perf_counter() - t1) / 3
    size = sum(v.nbytes for v in sinks.values())
    return n_batches / dt, wait / dt, size, rebuilding


def run_end_to_end(args: argparse.Namespace, scenes_dir: Path, work: Path) -> None:
    """Interleaved A/B(/C) of the worker batch variants; prints medians and ratios."""
    store_dir = work / "store_e2e"
    prepare_store(scenes_dir, store_dir, features=E2E_FEATURES, jobs=1, progress=False)
    store = PreparedStore(store_dir)
    features = resolve_features(E2E_FEATURES)
    assert len(features) == 18, features
    sampler = PatchSampler(
        store_sources(store, store.names), features, SamplingSettings(patch_size=768)
    )
    datasets = {
        v: PatchDataset(sampler, 10**6, seed=0, threads=1, coarse_on_device=v == "coarse")
        for v in args.variants
    }
    rebuild = CoarseInputs(features, "nearest")
    variants = args.variants
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    sizes: dict[str, tuple[int, float]] = {}
    for rep in range(args.repeats):
        for workers in args.workers:
            order = variants if rep % 2 == 0 else variants[::-1]
            for v in order:
                rate, wait, size, rebuilt = end_to_end(
                    datasets[v],
                    v,
                    workers,
                    args.batch,
                    args.batches,
                    args.step_ms / 1000,
                    rebuild if v == "coarse" else None,
                )
                results.setdefault((v, workers), []).append((rate, wait))
                sizes[v] = (size, rebuilt)
                print(
                    f"  rep {rep} workers={workers} {v:7s}: {rate:6.3f} batches/s, "
                    f"data wait {100 * wait:5.1f} %  (load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
    print(
        f"\n768 x 768 x 18, batch {args.batch}, consumer step {args.step_ms:.0f} ms + copy, "
        f"{args.batches} batches per trial, {args.repeats} interleaved trials"
    )
    for v, (size, rebuilt) in sizes.items():
        extra = (
            f", inputs rebuilt in {1000 * rebuilt:.0f} ms on this CPU (1 thread)" if rebuilt else ""
        )
        print(f"{v}: {size / 2**20:.1f} MiB per batch{extra}")
    print(
        "| workers | variant | batches/s (median) | min-max | data wait (median) "
        "| / first (medians) | / first (median of same-trial ratios) |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    for workers in args.workers:
        first = [r for r, _ in results[(variants[0], workers)]]
        for v in variants:
            rates = [r for r, _ in results[(v, workers)]]
            waits = [w for _, w in results[(v, workers)]]
            med = statistics.median(rates)
            paired = statistics.median(r / b for r, b in zip(rates, first, strict=True))
            print(
                f"| {workers} | {v} | {med:.3f} | {min(rates):.3f}-{max(rates):.3f} "
                f"| {100 * statistics.median(waits):.1f} % | {med / statistics.median(first):.2f} "
                f"| {paired:.2f} |"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--height", type=int, default=2000)
    ap.add_argument("--width", type=int, default=2100)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 768])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="store: threads per process"
    )
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=8.0, help="target time per measurement")
    ap.add_argument("--workdir", type=Path, default=None, help="keep files here (default: tmp)")
    ap.add_argument(
        "--chunk-sweep",
        type=int,
        nargs="*",
        default=None,
        metavar="CHUNK",
        help="also time store patches (0 workers) for stores with these chunk sides",
    )
    ap.add_argument(
        "--end-to-end",
        action="store_true",
        help="time the training loader end to end (768 px, 18 inputs) per worker variant",
    )
    ap.add_argument(
        "--variants", nargs="+", default=["slots", "coarse"], choices=["slots", "fresh", "coarse"]
    )
    ap.add_argument("--repeats", type=int, default=4, help="end to end: interleaved trials")
    ap.add_argument("--batches", type=int, default=12, help="end to end: batches per trial")
    ap.add_argument("--step-ms", type=float, default=300.0, help="end to end: consumer step")
    args = ap.parse_args()
    # The loader's own work is single-threaded: DataLoader workers run torch on one thread,
    # and with 0 workers a multi-threaded collate only adds OpenMP spin-waits (measured
    # 6x more CPU per patch on a loaded machine).
    torch.set_num_threads(1)

    tmp = tempfile.TemporaryDirectory() if args.workdir is None else None
    work = Path(tmp.name) if tmp else args.workdir
    scenes_dir, store_dir = work / "scenes", work / "store"
    t0 = time.perf_counter()
    files = sorted(scenes_dir.glob("*_prep.nc")) if scenes_dir.is_dir() else []
    if len(files) != args.scenes:
        files = write_scene_files(
            scenes_dir, args.scenes, height=args.height, width=args.width, seed=0
        )
    t_write = time.perf_counter() - t0
    if args.end_to_end:
        print(f"machine: {os.cpu_count()} cores; {' '.join(sys.argv)}")
        run_end_to_end(args, scenes_dir, work)
        return
    t0 = time.perf_counter()
    prepare_store(scenes_dir, store_dir, features=["challenge"], jobs=1, progress=False)
    t_prep = time.perf_counter() - t0
    nc_mb = sum(f.stat().st_size for f in files) / 2**20
    store_mb = sum(p.stat().st_size for p in store_dir.rglob("*") if p.is_file()) / 2**20
    print(
        f"{args.scenes} scenes of {args.height} x {args.width}, 24 inputs; "
        f"write {t_write:.1f} s, prepare {t_prep:.1f} s; NetCDF {nc_mb:.0f} MiB, "
        f"store {store_mb:.0f} MiB"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {torch.get_num_threads()}"
    )

    store = PreparedStore(store_dir)
    sources = store_sources(store, store.names)
    features = list(INPUT_VARIABLES)
    rows = []
    for p in args.sizes:
        batch = max(1, args.batch if p <= 256 else args.batch // 4)
        sampler = PatchSampler(sources, features, SamplingSettings(patch_size=p))
        for workers in args.workers:
            probe = measure(PerPatchNetCDF(files, p, 10**6), workers, batch, 2, _collate)
            n = max(3, int(args.seconds * probe / batch))
            netcdf = measure(PerPatchNetCDF(files, p, 10**6), workers, batch, n, _collate)
            for threads in args.threads:
                ds = PatchDataset(sampler, 10**6, seed=0, threads=threads)
                # a short probe sizes the run to about --seconds
                probe = measure(ds, workers, batch, 2, collate_patches)
                n = max(3, int(args.seconds * probe / batch))
                store_rate = measure(ds, workers, batch, n, collate_patches)
                cpu = LAST_CPU_S if workers == 0 else float("nan")
                rows.append((p, workers, threads, netcdf, store_rate, cpu))
                print(
                    f"  P={p:4d} workers={workers} threads={threads}: netcdf {netcdf:8.1f} /s   "
                    f"store {store_rate:8.1f} /s   ratio {store_rate / netcdf:6.1f}x",
                    flush=True,
                )
    if args.chunk_sweep:
        print("\nchunk side sweep (store, 0 workers):")
        for chunk in args.chunk_sweep:
            path = work / f"store_chunk{chunk}"
            prepare_store(scenes_dir, path, chunk=chunk, progress=False)
            size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20
            files_n = sum(1 for p in path.rglob("*") if p.is_file())
            swept = PreparedStore(path)
            cells = []
            for p in args.sizes:
                batch = max(1, args.batch if p <= 256 else args.batch // 4)
                sampler = PatchSampler(
                    store_sources(swept, swept.names), features, SamplingSettings(patch_size=p)
                )
                ds = PatchDataset(sampler, 10**6, seed=0)
                probe = measure(ds, 0, batch, 2, collate_patches)
                n = max(3, int(args.seconds * probe / batch))
                cells.append(f"P={p}: {measure(ds, 0, batch, n, collate_patches):7.1f} /s")
            print(f"  chunk {chunk:4d}: {size:6.0f} MiB, {files_n:5d} files;  " + "  ".join(cells))
    print()
    load = os.getloadavg()[0]
    print(f"load average at the end: {load:.2f} (other jobs on the cores lower the rates)")
    print(
        "| patch | workers | store threads | per-patch NetCDF (patches/s) | store (patches/s) "
        "| store / NetCDF | store CPU ms/patch |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for p, w, t, a, b, cpu in rows:
        cpu_txt = "" if math.isnan(cpu) else f"{cpu * 1000:.1f}"
        print(f"| {p} x {p} x 24 | {w} | {t} | {a:.1f} | {b:.1f} | {b / a:.1f}x | {cpu_txt} |")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
