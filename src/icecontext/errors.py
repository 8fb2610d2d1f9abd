"""Exception types with messages that name what was wrong and where.

Every error a user can cause (a bad file, a bad option) is raised as a subclass of
:class:`IceContextError`; the command-line interface prints its message and exits
with a non-zero status instead of a traceback.
"""

from __future__ import annotations

import signal
from os import PathLike


class IceContextError(Exception):
    """Base class of every error caused by user input.

    Attributes:
        exit_status: The command line's exit status for this error.
    """

    exit_status: int = 2


class SceneFormatError(IceContextError):
    """A scene file is unreadable or does not follow the AI4Arctic format.

    Attributes:
        path: The file concerned.
        variable: The variable concerned, or ``None`` for file-level problems.
        problem: What is wrong and what was expected.
    """

    def __init__(self, path: str | PathLike[str], variable: str | None, problem: str):
        self.path = str(path)
        self.variable = variable
        self.problem = problem
        where = f"{self.path}: variable '{variable}'" if variable else self.path
        super().__init__(f"{where}: {problem}")


class ConfigError(IceContextError):
    """A configuration option has a bad value.

    Attributes:
        option: The dotted name of the option (``"model.aspp.rates"``), or a command-line flag.
        problem: What is wrong and what was expected.
    """

    def __init__(self, option: str, problem: str):
        self.option = option
        self.problem = problem
        super().__init__(f"option '{option}': {problem}")


class DataError(IceContextError):
    """Data exist and are readable but cannot be used as asked (e.g. all masked)."""


class Interrupted(IceContextError):
    """A long job stopped on a signal after saving what it needs to resume.

    The exit status is the shell's convention for a signal, 128 + its number (130 for
    SIGINT, 143 for SIGTERM), so a scheduler never records the job as finished.

    Attributes:
        signum: The signal received.
    """

    def __init__(self, signum: int, saved: str):
        self.signum = int(signum)
        self.exit_status = 128 + self.signum
        name = signal.Signals(self.signum).name
        super().__init__(f"interrupted by {name}; {saved}; run the same command again to resume")
