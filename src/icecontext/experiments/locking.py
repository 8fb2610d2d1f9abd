"""Lock files that say which process is doing a run, safe on a folder shared by machines.

A lock is a small JSON file created with ``O_CREAT | O_EXCL`` (atomic on local file
systems and on NFSv3+), holding the owner's pid, host, start time and a random token.
The owner refreshes its modification time (:meth:`RunLock.heartbeat`) while it works.

A lock is *stale*, and may be taken over, when

* its owner is on this host and its pid no longer runs, or
* its modification time is older than ``stale_after`` seconds (an owner on another
  machine that stopped heart-beating: crashed, killed or cut off).

Taking over goes through a second, short-lived ``<lock>.break`` file (also
``O_EXCL``), and the stale lock is removed only if it still holds the token that was
judged stale; so two processes that see the same stale lock cannot both take it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_STALE_AFTER = 900.0
"""Seconds without a heartbeat after which a lock of another host counts as abandoned."""

BREAK_STALE_AFTER = 60.0
"""A ``.break`` file older than this was left by a process that died while breaking."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (zombies count as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) holds nothing
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_lock(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The owner record of a lock file (``None`` if absent; ``{}`` if unreadable)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {}  # being written right now, or truncated by a crash
    return data if isinstance(data, dict) else {}


def is_stale(
    path: str | os.PathLike[str],
    owner: dict[str, Any] | None = None,
    stale_after: float = DEFAULT_STALE_AFTER,
) -> bool:
    """Whether the lock at ``path`` may be taken over (see the module docstring)."""
    path = Path(path)
    owner = read_lock(path) if owner is None else owner
    if owner is None:
        return False  # no lock: nothing to take over
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        return not pid_alive(owner["pid"])
    return age > stale_after


def _create_exclusive(path: Path, record: dict[str, Any]) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    return True


@dataclass
class RunLock:
    """A held lock. Release it with :meth:`release` (or use it as a context manager)."""

    path: Path
    token: str

    def heartbeat(self) -> None:
        """Refresh the lock's modification time (call more often than ``stale_after``)."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.path)

    def held(self) -> bool:
        """Whether the file on disk is still this lock (not broken by another process)."""
        owner = read_lock(self.path)
        return owner is not None and owner.get("token") == self.token

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        if self.held():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _break_stale(path: Path, stale_after: float) -> None:
    breaker = path.with_name(path.name + ".break")
    with contextlib.suppress(FileNotFoundError):
        if time.time() - breaker.stat().st_mtime > BREAK_STALE_AFTER:
            breaker.unlink()
    if not _create_exclusive(breaker, {"pid": os.getpid(), "host": socket.gethostname()}):
        return  # someone else is breaking it right now
    try:
        owner = read_lock(path)
        if owner is not None and is_stale(path, owner, stale_after):
            # re-read under the break lock: remove only the lock we judged stale
            again = read_lock(path)
            if again == owner:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
    finally:
        with contextlib.suppress(FileNotFoundError):
            breaker.unlink()


def try_lock(
    path: str | os.PathLike[str],
    *,
    stale_after: float = DEFAULT_STALE_AFTER,
    info: dict[str, Any] | None = None,
) -> RunLock | None:
    """Take the lock at ``path`` if it is free or stale; ``None`` if someone holds it.

    Args:
        path: Lock file (its folder is created).
        stale_after: Heartbeat age after which another host's lock is abandoned.
        info: Extra fields stored in the owner record (e.g. the shard).

    Returns:
        The held lock, or ``None``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "time": time.time(),
        "token": token,
        **(info or {}),
    }
    for _ in range(2):
        if _create_exclusive(path, record):
            return RunLock(path, token)
        owner = read_lock(path)
        if owner == {}:  # half-written by a live creator, or truncated by a crash
            try:
                young = time.time() - path.stat().st_mtime < 5.0
            except FileNotFoundError:
                continue
            if young:
                return None
        if owner is None or is_stale(path, owner or {"host": None}, stale_after):
            _break_stale(path, stale_after)
            continue
        return None
    return None
