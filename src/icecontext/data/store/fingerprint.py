"""Fingerprints of the files a prepared scene group was made from.

Each group records the fingerprint of its source files (attribute ``source_fingerprint``:
size, modification time and a SHA-256 of the first 1 MiB and last 64 KiB of the scene
file and of its ``_prep_reference.nc`` labels, plus the parameters of a synthetic scene's
``*_synth.json``). ``prepare`` rebuilds a scene whose fingerprint changed other than in
its modification time alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Final

FINGERPRINT_KEY: Final = "source_fingerprint"
"""Scene-group attribute holding the fingerprint of the files the group was made from."""

HASH_HEAD: Final = 1 << 20
"""Bytes hashed at the start of a file (the NetCDF/HDF5 header block and more)."""

HASH_TAIL: Final = 64 << 10
"""Bytes hashed at the end of a file."""

SYNTH_SIDECAR_SUFFIX: Final = "_synth.json"
"""``{scene}_synth.json``: the generator truth ``icecontext synth`` writes beside a scene."""

SYNTH_PARAMETER_KEYS: Final = (
    "generator_version",
    "seed",
    "params",
    "scales",
    "known_truth",
)
"""What a synthetic scene's fingerprint takes from its sidecar (the generator's inputs)."""

MTIME_ONLY_CHANGES: Final = frozenset({"mtime", "labels mtime"})
"""Fingerprint differences that do not rebuild a scene (a ``touch``, a copy)."""


def file_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Size, modification time and a hash of the header block and tail of one file.

    The hash is the SHA-256 of the first :data:`HASH_HEAD` bytes followed by the last
    :data:`HASH_TAIL` bytes (the whole file when it is shorter than both): 1.1 MiB read
    per file, whatever its size.

    Returns:
        ``{"name", "size", "mtime_ns", "sha256_head_tail"}``.
    """
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        digest.update(fh.read(HASH_HEAD))
        if st.st_size > HASH_HEAD:
            fh.seek(max(HASH_HEAD, st.st_size - HASH_TAIL))
            digest.update(fh.read(HASH_TAIL))
    return {
        "name": path.name,
        "size": int(st.st_size),
        "mtime_ns": int(st.st_mtime_ns),
        "sha256_head_tail": digest.hexdigest(),
    }


def synthetic_parameters(sidecar: str | os.PathLike[str]) -> dict[str, Any]:
    """The generator parameters recorded in a synthetic scene's ``*_synth.json``.

    Returns:
        The sidecar's :data:`SYNTH_PARAMETER_KEYS` entries, or ``{"sha256": ...}`` of
        the file's bytes when it is not a JSON object.
    """
    raw = Path(sidecar).read_bytes()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if not isinstance(data, dict):
        return {"sha256": hashlib.sha256(raw).hexdigest()}
    return {k: data[k] for k in SYNTH_PARAMETER_KEYS if k in data}


def source_fingerprint(path: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """Fingerprint of everything a scene group is made from.

    Args:
        path: The scene file.
        name: The scene name (names the synthetic sidecar ``{name}_synth.json``).

    Returns:
        ``{"scene": file fingerprint, "reference": the labels file's fingerprint or
        None, "synthetic": generator parameters or None}`` (see :func:`file_fingerprint`).

    Raises:
        OSError: If a file cannot be read.
    """
    from icecontext.data.io.scene import reference_path_for

    path = Path(path)
    reference = reference_path_for(path)
    sidecar = path.with_name(f"{name}{SYNTH_SIDECAR_SUFFIX}")
    return {
        "scene": file_fingerprint(path),
        "reference": file_fingerprint(reference) if reference.is_file() else None,
        "synthetic": synthetic_parameters(sidecar) if sidecar.is_file() else None,
    }


def fingerprint_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between a stored and a current source fingerprint.

    Returns:
        Reasons, in a fixed order: ``"file name"``, ``"size"``, ``"mtime"``,
        ``"content"`` (the scene file), ``"labels file"``, ``"labels mtime"`` (its
        ``_prep_reference.nc``), ``"generator parameters"``. Only
        :data:`MTIME_ONLY_CHANGES` mean the scene's data are still current.
    """
    reasons: list[str] = []
    before, now = old.get("scene") or {}, new.get("scene") or {}
    for key, reason in (
        ("name", "file name"),
        ("size", "size"),
        ("mtime_ns", "mtime"),
        ("sha256_head_tail", "content"),
    ):
        if before.get(key) != now.get(key):
            reasons.append(reason)
    ref_before, ref_now = old.get("reference"), new.get("reference")
    if ref_before is None or ref_now is None:
        if (ref_before is None) != (ref_now is None):  # a labels file appeared or went
            reasons.append("labels file")
    elif any(ref_before.get(k) != ref_now.get(k) for k in ("name", "size", "sha256_head_tail")):
        reasons.append("labels file")
    elif ref_before.get("mtime_ns") != ref_now.get("mtime_ns"):
        reasons.append("labels mtime")
    if old.get("synthetic") != new.get("synthetic"):
        reasons.append("generator parameters")
    return reasons
