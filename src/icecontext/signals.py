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
from collections.abc import Iterator
from typing import Any

from icecontext.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def interrupt_on_signals(saved: str) -> Iterator[None]:
    """Raise :class:`Interrupted` on SIGTERM or SIGINT inside the block.

    Args:
        saved: What is kept for the next run, for the message ("finished scenes are
            kept in the store").

    Outside the main thread (where handlers cannot be set) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        for s in SIGNALS:  # one interruption: a second signal must not cut the clean-up
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum, saved)

    previous = {s: signal.signal(s, handle) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
