"""Old option spellings kept for one release as deprecated aliases of the new ones.

:func:`add_renamed_option` adds an option under its new name and the old flags as a
hidden alias that stores into the same attribute and prints one warning line on stderr::

    icecontext evaluate: warning: --data is deprecated and will be removed in the next
    release; use --scenes

The two spellings are mutually exclusive, and either satisfies ``required``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

#: keyword arguments of the new option that the alias shares (how values are read)
_SHARED = ("type", "nargs", "metavar", "choices")


class DeprecatedAlias(argparse.Action):
    """Store the value like the option ``new`` and warn that the flag used is deprecated."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        """Warn on stderr, then store ``values`` under the new option's attribute."""
        print(
            f"{parser.prog}: warning: {option_string} is deprecated and will be removed in "
            f"the next release; use {self.new}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def add_renamed_option(
    parser: argparse.ArgumentParser,
    flags: Sequence[str],
    old: Sequence[str],
    *,
    required: bool = False,
    **kwargs: Any,
) -> argparse.Action:
    """Add option ``flags`` and the deprecated spellings ``old`` (hidden from ``--help``).

    Args:
        parser: The command's parser.
        flags: The option's flags, the long one first (``"--scenes", "-s"``).
        old: The former flags (``"--data", "-d"``), accepted with a warning.
        required: One of the spellings must be given (argparse then says "one of the
            arguments --scenes/-s is required": the hidden alias is not listed).
        **kwargs: ``add_argument`` keywords of the option (``dest``, ``type``, ``nargs``,
            ``help``...); ``type``, ``nargs``, ``metavar`` and ``choices`` apply to the
            alias too.

    Returns:
        The new option's action.
    """
    group = parser.add_mutually_exclusive_group(required=required)
    action = group.add_argument(*flags, **kwargs)
    shared = {k: kwargs[k] for k in _SHARED if k in kwargs}
    group.add_argument(
        *old,
        dest=action.dest,
        action=DeprecatedAlias,
        new=flags[0],
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
        **shared,
    )
    return action
