"""``icecontext prepare --scenes DIR --out STORE``: scenes -> chunked Zarr patch store.

Idempotent and resumable: scenes already complete in the store are skipped, an
interrupted run is finished by running the same command again, and a scene that
cannot be read is reported by name and skipped (exit status 1) without touching the
rest of the store. ``--data`` is the deprecated spelling of ``--scenes``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from icecontext.atomic import check_writable
from icecontext.cli.deprecated import add_renamed_option
from icecontext.data.store.prepare import DEFAULT_CHUNK, prepare_store
from icecontext.errors import Interrupted
from icecontext.provenance import write_run_record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    add_renamed_option(
        parser,
        ("--scenes", "-s"),
        ("--data",),
        required=True,
        dest="data",
        type=Path,
        nargs="+",
        metavar="PATH",
        help="folder(s) of scenes (*_prep.nc, test files with *_prep_reference.nc, raw *.nc) "
        "or scene files",
    )
    parser.add_argument("--out", "-o", type=Path, required=True, help="store folder (created)")
    parser.add_argument(
        "--downsample",
        type=int,
        default=1,
        metavar="K",
        help="integer downsampling factor (inputs: mean of valid pixels; charts: 255 if any "
        "pixel of the K x K block is masked, else its most frequent class); default 1",
    )
    parser.add_argument(
        "--features",
        nargs="+",
        default=["challenge"],
        help="feature selectors whose file variables are stored (default: challenge = all 24 "
        "inputs); latlon/month are computed at read time",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="parallel processes (default 1)"
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=DEFAULT_CHUNK,
        help=f"spatial chunk side of SAR-grid arrays (default {DEFAULT_CHUNK})",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Prepare the store; print a summary; exit 1 if any scene failed."""
    check_writable(args.out, "--out", folder=True)
    created = not args.out.exists()
    try:
        result = prepare_store(
            args.data,
            args.out,
            features=args.features,
            downsample=args.downsample,
            jobs=args.jobs,
            chunk=args.chunk,
            progress=not args.no_progress,
        )
    except Interrupted:
        raise  # finished scenes stay: the same command continues
    except BaseException:
        if created:  # nothing half-made: a store this call began goes with its failure
            shutil.rmtree(args.out, ignore_errors=True)
        raise
    total = len(result.manifest.scenes) if result.manifest else 0
    if created and total == 0:
        shutil.rmtree(args.out, ignore_errors=True)
        for name, error in result.failed.items():
            print(f"FAILED  {name}: {error}", file=sys.stderr)
        print(f"{args.out}: no scene could be converted; nothing written", file=sys.stderr)
        return 1
    write_run_record(
        args.out,
        None,
        None,
        extra={
            "prepare": {
                "data": [str(p) for p in args.data],
                "downsample": args.downsample,
                "features": list(args.features),
                "chunk": args.chunk,
                "written": result.written,
                "skipped": result.skipped,
                "failed": result.failed,
            }
        },
    )
    print(
        f"{args.out}: {len(result.written)} scene(s) written, {len(result.skipped)} already "
        f"complete, {len(result.failed)} failed; {total} scene(s) in the store"
    )
    for name, error in result.failed.items():
        print(f"FAILED  {name}: {error}", file=sys.stderr)
    return 1 if result.failed else 0
