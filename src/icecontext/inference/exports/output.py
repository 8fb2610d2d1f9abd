"""Atomic export targets with errors that name the output folder.

Every writer of this package goes through :func:`export_target`: the file is written
under a hidden temporary name beside the target and renamed only when complete
(:func:`icecontext.atomic.atomic_path`), and an operating-system failure (folder not
writable, read-only file system, disk full, a folder where the file should be) becomes
an :class:`ExportError` that names the folder or file, with nothing left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from icecontext.atomic import atomic_path
from icecontext.errors import IceContextError


class ExportError(IceContextError):
    """An export file could not be written (unwritable folder, disk full, ...)."""


@contextlib.contextmanager
def export_target(path: str | os.PathLike[str], what: str = "output") -> Iterator[Path]:
    """Yield a temporary path that becomes ``path`` when the block succeeds.

    Args:
        path: Final file.
        what: Kind of output, for error messages (``"NetCDF chart file"``).

    Yields:
        The temporary path to write.

    Raises:
        ExportError: If the folder cannot be created or written, or ``path`` is a folder;
            a full disk is named as such, also when a library reports it as a
            ``RuntimeError`` (netCDF4: "NetCDF: HDF error").
    """
    target = Path(path)
    if target.is_dir():
        raise ExportError(f"{target}: cannot write the {what}: the path is a folder")
    folder = target.parent
    try:
        with atomic_path(target) as tmp:
            try:
                yield tmp
            except RuntimeError as exc:  # netCDF4/HDF5 report a full disk as "HDF error"
                if _disk_full(folder):
                    raise OSError(errno.ENOSPC, "No space left on device", str(target)) from exc
                raise
            # mkstemp creates 0600 files; give the result the usual umask-based mode.
            if tmp.exists():
                tmp.chmod(0o666 & ~_current_umask())
    except OSError as exc:
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            problem = f"output folder {folder} cannot be created: {existing} is a file"
        elif isinstance(exc, PermissionError) or not os.access(existing or folder, os.W_OK):
            problem = f"output folder {folder} is not writable"
        elif exc.errno == errno.ENOSPC:
            problem = f"no space left on device in {folder}"
        else:
            problem = f"writing into output folder {folder} failed"
        reason = exc.strerror or str(exc)
        raise ExportError(f"{target}: cannot write the {what}: {problem} ({reason})") from exc


def _disk_full(folder: Path, margin: int = 1 << 20) -> bool:
    """Whether the file system of ``folder`` has less than ``margin`` bytes free."""
    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
