"""``icecontext model-summary --config C``: parameters and FLOPs per task head and in total.

Then the receptive fields: per task the theoretical field, the trained field at the
training patch size and the field applied at the inference tile, and per rate the share
of feature positions at which its taps read data in a training patch (as ``icecontext rf``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from icecontext.cli.rf import add_context_arguments, check_context_arguments
from icecontext.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments."""
    parser.add_argument(
        "--config", "-c", type=Path, required=True, help="YAML file with a model section"
    )
    parser.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        default=[768, 768],
        metavar=("H", "W"),
        help="input height and width in pixels (default 768 768)",
    )
    parser.add_argument("--batch", type=int, default=1, help="batch size counted (default 1)")
    add_context_arguments(parser)
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. model.aspp.rates=[1]",
    )


def run(args: argparse.Namespace) -> int:
    """Build the model and print its parameter and FLOP table."""
    from icecontext.cli.rf import trained_context_report
    from icecontext.models.config import load_model_spec
    from icecontext.models.multitask import build_model
    from icecontext.models.receptive_field import theoretical_receptive_fields
    from icecontext.models.summary import format_summary, summarise

    h, w = args.input_size
    if h < 1 or w < 1:
        raise ConfigError("--input-size", f"height and width must be >= 1, got {h} x {w}")
    if args.batch < 1:
        raise ConfigError("--batch", f"must be >= 1, got {args.batch}")
    check_context_arguments(args)
    spec = load_model_spec(args.config, args.overrides)
    model = build_model(spec.model, spec.in_channels, seed=0)
    enc = spec.model.encoder
    print(
        f"{args.config}: {enc.name} ({enc.backend}) to {enc.depth}, output stride "
        f"{enc.output_stride}, SIC {spec.model.sic_mode}"
    )
    print(format_summary(summarise(model, h, w, batch=args.batch)))
    print()
    theory = theoretical_receptive_fields(model)
    print(trained_context_report(spec, theory, args.patch_size, args.tile))
    return 0
