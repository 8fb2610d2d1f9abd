"""Turn SIGTERM and SIGINT into :class:`~icecontext.errors.Interrupted` for long jobs.

Schedulers (SLURM, Kubernetes) send SIGTERM before they kill a job; Ctrl+C sends
SIGINT. Python's default ends the process at once on SIGTERM, without ``finally``
blocks, which leaves worker processes and staging files behind. Inside
:func:`interrupt_on_signals` either signal raises ``Interrupted`` in the main thread,
so the job's clean-up code runs and the command exits with 143 or 130.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from icecontext.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install(handler: Callable[[int, Any], None]) -> dict[int, Any]:
    """Set ``handler`` for SIGTERM and SIGINT; return the previous handlers.

    Outside the main thread (where handlers cannot be set) nothing changes and ``{}``
    is returned.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, handler) for s in SIGNALS}


@contextlib.contextmanager
def handling_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for SIGTERM and SIGINT inside the block, the previous ones after it."""
    previous = install(handler)
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def interrupt_on_signals(saved: str) -> contextlib.AbstractContextManager[None]:
    """Raise :class:`Interrupted` on SIGTERM or SIGINT inside the block.

    Args:
        saved: What is kept for the next run, for the message ("finished scenes are
            kept in the store").

    Outside the main thread (where handlers cannot be set) the block runs unchanged.
    """

    def handle(signum: int, frame: Any) -> None:
        for s in SIGNALS:  # one interruption: a second signal must not cut the clean-up
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum, saved)

    return handling_signals(handle)
