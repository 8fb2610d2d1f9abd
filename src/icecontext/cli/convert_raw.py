"""``icecontext convert-raw RAW... --out DIR``: raw 40 m files -> ready-to-train files.

Each raw file is converted as the organisers produced the ready-to-train files
(:func:`icecontext.data.io.raw.open_raw`) and written atomically as
``{YYYYMMDDThhmmss}_{svc}_prep.nc``. Existing outputs are skipped unless
``--overwrite``. A file that fails is reported with its name and the reason; the
others still convert, and the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tqdm import tqdm

from icecontext.atomic import check_writable
from icecontext.data.io.format import prep_file_name, scene_name_from_raw
from icecontext.data.io.raw import open_raw
from icecontext.data.io.scene import write_scene
from icecontext.errors import IceContextError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument(
        "raw",
        nargs="+",
        type=Path,
        metavar="RAW",
        help="raw 40 m AI4Arctic files, or folders of them (*.nc)",
    )
    parser.add_argument("--out", "-o", type=Path, required=True, help="output folder (created)")
    parser.add_argument(
        "--clean-charts",
        action="store_true",
        help="convert the ice charts with the clean mode that fixes the official quirks "
        "(docs/charts.md); default: reproduce the published labels",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing _prep.nc files")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _raw_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(f for f in p.glob("*.nc") if not f.name.endswith("_prep.nc")))
        else:
            files.append(p)
    return files


def _expected_output(raw: Path, out: Path) -> Path | None:
    try:
        return out / prep_file_name(scene_name_from_raw(raw.name))
    except ValueError:
        return None  # renamed file: the name comes from its attributes after reading


def run(args: argparse.Namespace) -> int:
    """Convert every file; print one line per file and a summary; 1 if any failed."""
    out: Path = check_writable(args.out, "--out", folder=True)
    files = _raw_files(args.raw)
    out.mkdir(parents=True, exist_ok=True)
    converted = skipped = 0
    failures: list[str] = []
    hide = True if args.no_progress else None  # None: hidden when not on a terminal
    for raw in tqdm(files, desc="convert-raw", unit="file", disable=hide):
        target = _expected_output(raw, out)
        if target is not None and target.exists() and not args.overwrite:
            skipped += 1
            tqdm.write(f"skip  {raw.name}: {target.name} exists (use --overwrite)")
            continue
        try:
            ds = open_raw(raw, clean=args.clean_charts)
            target = out / prep_file_name(ds.attrs["scene_name"])
            if target.exists() and not args.overwrite:
                skipped += 1
                tqdm.write(f"skip  {raw.name}: {target.name} exists (use --overwrite)")
                continue
            write_scene(ds, target)
        except IceContextError as exc:
            failures.append(raw.name)
            tqdm.write(f"FAIL  {raw.name}: {exc}")
            continue
        except Exception as exc:  # keep converting the other files; say what broke
            failures.append(raw.name)
            log.debug("conversion of %s failed", raw, exc_info=True)
            tqdm.write(f"FAIL  {raw.name}: {type(exc).__name__}: {exc}")
            continue
        converted += 1
        tqdm.write(f"ok    {raw.name} -> {target}")
    print(
        f"{converted} converted, {skipped} skipped, {len(failures)} failed "
        f"(of {len(files)} file(s)) -> {out}"
    )
    return 1 if failures else 0
