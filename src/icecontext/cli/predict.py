"""``icecontext predict --checkpoint K --scenes FILES|DIR --out DIR``: chart whole scenes.

Tiled inference (central-crop stitching, margins from the receptive field, batches of
tiles, memory bounded by the tile and not the scene) writes per scene a CF NetCDF file
with lat/lon and provenance, a GeoTIFF per chart with ground control points (or
reprojected with ``--crs``), and a quicklook PNG. See docs/inference.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from icecontext.atomic import check_writable
from icecontext.cli.tiling_options import (
    add_tiling_options,
    check_inputs_early,
    predict_settings,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument(
        "--checkpoint",
        "-k",
        type=Path,
        required=True,
        help="best.ckpt of a run, or model.pt / model.onnx of 'icecontext export'",
    )
    parser.add_argument(
        "--scenes", "-s", type=Path, nargs="+", required=True, help="_prep.nc files or folders"
    )
    parser.add_argument("--out", "-o", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--formats",
        default="netcdf,geotiff,quicklook",
        help="comma-separated: netcdf, geotiff, geotiff_3413, quicklook",
    )
    parser.add_argument(
        "--crs",
        default=None,
        help="also write map-projected GeoTIFFs in this CRS (e.g. EPSG:3413) instead of "
        "SAR-grid ones with GCPs",
    )
    parser.add_argument(
        "--probabilities", action="store_true", help="write per-class probabilities (NetCDF)"
    )
    parser.add_argument(
        "--confidence",
        choices=("max", "entropy"),
        default=None,
        help="write a confidence map per classification head (NetCDF)",
    )
    add_tiling_options(parser)


def _formats(args: argparse.Namespace) -> list[str]:
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if args.crs is not None:
        # --crs turns the SAR-grid GeoTIFFs into map-projected ones
        formats = ["geotiff_3413" if f == "geotiff" else f for f in formats]
        if "geotiff_3413" not in formats:
            formats.append("geotiff_3413")
    return list(dict.fromkeys(formats))


def run(args: argparse.Namespace) -> int:
    """Predict the scenes and list the files written."""
    check_writable(args.out, "--out", folder=True)
    check_inputs_early(args.checkpoint, args.scenes)
    from icecontext.inference.scenes import predict_scenes, write_predict_record

    settings = predict_settings(
        args,
        formats=_formats(args),
        crs=args.crs or "EPSG:3413",
        probabilities=args.probabilities,
        confidence=args.confidence,
    )
    result = predict_scenes(args.checkpoint, args.scenes, args.out, settings)
    write_predict_record(args.out, args.checkpoint, result, settings.formats)
    print(
        f"predicted {len(result.scenes)} scene(s) on {result.device} "
        f"(tile {result.tile}, overlap {result.overlap}, batch {result.batch})"
    )
    for scene in result.scenes:
        n = sum(len(v) for v in scene.files.values())
        print(f"  {scene.name}: {scene.tiles} tiles, {scene.seconds:.1f} s, {n} files")
    print(f"outputs: {args.out}")
    return 0
