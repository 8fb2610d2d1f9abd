"""Entry point of the ``icecontext`` command.

Subcommands live in their own modules under :mod:`icecontext.cli`, each exposing
``add_arguments(parser)`` and ``run(args) -> int | None``. Only the chosen
subcommand's module is imported, so ``icecontext --help`` and light commands start
without loading torch.

Errors caused by user input (:class:`~icecontext.errors.IceContextError`) are printed
as one line on stderr with exit status 2, and so are refusals of the file system
(``OSError``: permission denied, no space left on device, ...), naming the path;
``--debug`` shows their traceback instead. Long jobs stopped by SIGTERM or SIGINT
(:class:`~icecontext.errors.Interrupted`) save their state, say how to resume and exit
with 128 + the signal number (143, 130).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from icecontext import __version__
from icecontext.errors import IceContextError, Interrupted

# name -> (module under icecontext.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("quickstart", "synthesise data, train the small preset, evaluate and report"),
    "synth": ("synth", "write synthetic scenes in the AI4Arctic file format"),
    "show": ("show", "render a scene's SAR, AMSR2 and charts to a PNG"),
    "validate": ("validate", "check scene files against the AI4Arctic format"),
    "convert-raw": ("convert_raw", "convert raw 40 m files to ready-to-train 80 m files"),
    "prepare": ("prepare", "convert scenes into a chunked Zarr patch store"),
    "rf": ("rf", "receptive field per task and ASPP branch, in pixels and km"),
    "model-summary": ("model_summary", "parameters and FLOPs per task head"),
    "train": ("train", "train a multi-task model from a YAML config"),
    "evaluate": ("evaluate", "score a checkpoint with the AutoICE challenge metric"),
    "predict": ("predict", "chart full scenes: NetCDF, GeoTIFF and quicklook outputs"),
    "submission": ("submission", "write the AutoICE upload_package.nc for the test scenes"),
    "export": ("export", "export a checkpoint's inference path (TorchScript)"),
    "sweep": ("sweep", "run the spatial-context study grid (resumable, shardable)"),
    "study-report": ("study_report", "tables and plots of a finished sweep"),
    "explain": ("explain", "Grad-CAM maps for each task head"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = [f"  {name:<14} {help_}" for name, (_, help_) in COMMANDS.items()]
    parser = argparse.ArgumentParser(
        prog="icecontext",
        description="Multi-task sea ice charting with controllable spatial context.",
        epilog="commands:\n"
        + "\n".join(lines)
        + "\n\nRun 'icecontext COMMAND --help' for details.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"icecontext {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages, show tracebacks"
    )
    parser.add_argument("--debug", action="store_true", help="the same as --verbose")
    parser.add_argument("command", nargs="?", help="the subcommand to run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    # Global flags come before the command; everything after it belongs to the command.
    split = next((i for i, a in enumerate(argv) if not a.startswith("-")), len(argv))
    top_args = top.parse_args(argv[: split + 1])
    debug = top_args.verbose or top_args.debug
    # the project's messages at INFO; other libraries' chatter only from WARNING up
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("icecontext").setLevel(logging.DEBUG if debug else logging.INFO)
    if top_args.command is None:
        top.print_help()
        return 2
    if top_args.command not in COMMANDS:
        top.error(f"unknown command '{top_args.command}'; choose from: {', '.join(COMMANDS)}")
    module_name, help_ = COMMANDS[top_args.command]
    try:
        module = importlib.import_module(f"icecontext.cli.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"icecontext.cli.{module_name}":
            print(
                f"icecontext: command '{top_args.command}' is not available in this version",
                file=sys.stderr,
            )
            return 2
        raise
    parser = argparse.ArgumentParser(prog=f"icecontext {top_args.command}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(argv[split + 1 :])
    try:
        status = module.run(args)
    except OSError as exc:  # a file system refusal is the user's to fix, not a bug
        if debug:
            raise
        print(f"icecontext {top_args.command}: error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"icecontext {top_args.command}: {exc}", file=sys.stderr)
        return exc.exit_status
    except IceContextError as exc:
        print(f"icecontext {top_args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print(
            f"icecontext {top_args.command}: interrupted (forced: nothing saved since the last "
            "checkpoint); run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    return int(status or 0)


def os_error_message(exc: OSError) -> str:
    """One line naming what the operating system refused and the path concerned.

    ``PermissionError`` reads "permission denied: <path>", a full disk "no space left on
    device: <path>"; other errors give the system's reason and the path. Run with
    ``--debug`` for the traceback.
    """
    import errno

    path = exc.filename if exc.filename is not None else "(path unknown)"
    if exc.filename2 is not None:
        path = f"{path} -> {exc.filename2}"
    if isinstance(exc, PermissionError):
        reason = "permission denied"
    elif exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    elif exc.errno == errno.EROFS:
        reason = "read-only file system"
    elif exc.strerror:
        reason = exc.strerror[:1].lower() + exc.strerror[1:]
    else:  # no errno: the message may hold paths, keep it as it is
        return f"{exc or type(exc).__name__} (run with --debug for the traceback)"
    return f"{reason}: {path} (run with --debug for the traceback)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
