"""Atomic output: write to a temporary file beside the target, then rename.

A reader never sees a half-written file, and an interrupted job leaves either the
old file or nothing, never a truncated one. ``os.replace`` is atomic on POSIX and
on Windows when source and target are on the same file system, which a sibling
temporary file guarantees.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path that is renamed to ``target`` when the block succeeds.

    The temporary file lives in the target's folder (hidden name ending in the
    target's suffix, so libraries that choose a format by extension still work). On
    an exception it is removed and ``target`` is left untouched.

    Args:
        target: Final path of the file.
        suffix: Suffix of the temporary file; defaults to the target's suffix.

    Yields:
        The temporary path to write to.

    Raises:
        PermissionError: If the target folder is not writable (raised before yielding).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.",
        suffix=".tmp" + (target.suffix if suffix is None else suffix),
        dir=target.parent,
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the mode a plain open() would.
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(target: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``target`` atomically (UTF-8) and return the path."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def check_writable(target: str | os.PathLike[str], option: str, *, folder: bool) -> Path:
    """Refuse, before any work and without creating anything, an output that cannot be written.

    The nearest existing folder on the way to ``target`` must be a writable folder (a
    path below a regular file, or in a read-only place, is refused), and a ``folder``
    target must not be an existing file.

    Args:
        target: The output folder, or file when ``folder`` is false.
        option: The option that named it (``"--out"``), for the message.
        folder: Whether ``target`` is a folder.

    Returns:
        ``target`` as a path.

    Raises:
        ConfigError: Naming the option, the path and why it cannot be written.
    """
    from icecontext.errors import ConfigError

    target = Path(target)
    if folder and target.exists() and not target.is_dir():
        raise ConfigError(option, f"{target} is a file; expected a folder")
    start = target if folder else target.parent
    existing = next((p for p in (start, *start.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise ConfigError(option, f"cannot write to {target}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(option, f"cannot write to {target}: {existing} is not writable")
    return target
