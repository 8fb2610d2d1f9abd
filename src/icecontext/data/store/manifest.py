"""The store manifest: per-scene shape, service, month, class histograms and valid fractions.

``STORE/manifest.json`` indexes a prepared store (see :mod:`icecontext.data.store.prepare`). It
holds nothing that depends on when or how fast the store was built (no timestamps, no
paths), so two stores built from the same files with the same settings have
byte-identical manifests; run details go to ``provenance.json``.

Histograms follow the official ``misc/scene_prep_bins`` files: 256 bins of the uint8
chart values over the whole array, 255 included. ``histograms_full`` is taken on the
80 m charts (comparable with the official files); ``histograms`` on the store's charts
(after downsampling), which is what the patch sampler draws from.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from icecontext.atomic import write_text_atomic
from icecontext.data.io.format import CHART_FILL, CHARTS, scene_service, scene_time
from icecontext.errors import DataError

STORE_FORMAT: Final = "icecontext-store"
STORE_VERSION: Final = 2
"""Format written. 2 added, per scene group, the source fingerprint and, at ``K > 1``,
the 80 m charts (``charts_full``); format 1 stores are still read (see ``docs/pipeline.md``)."""
READABLE_VERSIONS: Final = (1, 2)
MANIFEST_NAME: Final = "manifest.json"


def chart_histograms(charts: np.ndarray) -> dict[str, list[int]]:
    """Return the 256-bin histogram of each chart (``(3, H, W)`` uint8, SIC/SOD/FLOE)."""
    return {
        c: np.bincount(np.asarray(charts[i]).ravel(), minlength=256).astype(np.int64).tolist()
        for i, c in enumerate(CHARTS)
    }


def valid_fractions(charts: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """Fractions of the scene's pixels with SAR data, with any label, and per chart."""
    charts = np.asarray(charts)
    n = max(int(charts[0].size), 1)
    out = {
        "sar": float(np.count_nonzero(valid)) / n,
        "labelled": float(np.count_nonzero((charts != CHART_FILL).any(axis=0))) / n,
    }
    for i, c in enumerate(CHARTS):
        out[c] = float(np.count_nonzero(charts[i] != CHART_FILL)) / n
    return out


@dataclass(frozen=True)
class SceneRecord:
    """What the manifest says about one scene.

    Attributes:
        name: 19-character scene name.
        source: File name the scene was prepared from (no folder).
        shape: ``(H', W')`` at the store's resolution.
        full_shape: ``(H, W)`` at 80 m.
        coarse_shape: 2 km grid shape.
        downsample: ``K``.
        service: ``"dmi"`` or ``"cis"``.
        month: Acquisition month, 1..12.
        histograms: 256-bin chart histograms at the store's resolution.
        histograms_full: 256-bin chart histograms at 80 m (like ``scene_prep_bins``).
        valid_fraction: ``sar``, ``labelled``, ``SIC``, ``SOD``, ``FLOE`` fractions of
            the store-resolution pixels.
    """

    name: str
    source: str
    shape: tuple[int, int]
    full_shape: tuple[int, int]
    coarse_shape: tuple[int, int]
    downsample: int
    service: str
    month: int
    histograms: dict[str, list[int]] = field(repr=False)
    histograms_full: dict[str, list[int]] = field(repr=False)
    valid_fraction: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-compatible dict."""
        d = asdict(self)
        for key in ("shape", "full_shape", "coarse_shape"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SceneRecord:
        """Build a record from :meth:`to_json` output."""
        d = dict(data)
        for key in ("shape", "full_shape", "coarse_shape"):
            d[key] = tuple(int(v) for v in d[key])
        return cls(**d)

    def histogram(self, chart: str) -> np.ndarray:
        """Store-resolution histogram of ``chart`` as an int64 array of 256 bins."""
        return np.asarray(self.histograms[chart], dtype=np.int64)


def make_record(
    name: str,
    source: str,
    charts: np.ndarray,
    valid: np.ndarray,
    full_charts_hist: dict[str, list[int]],
    full_shape: tuple[int, int],
    coarse_shape: tuple[int, int],
    downsample: int,
) -> SceneRecord:
    """Build the record of a scene from its store-resolution charts and valid mask."""
    return SceneRecord(
        name=name,
        source=source,
        shape=(int(charts.shape[1]), int(charts.shape[2])),
        full_shape=(int(full_shape[0]), int(full_shape[1])),
        coarse_shape=(int(coarse_shape[0]), int(coarse_shape[1])),
        downsample=int(downsample),
        service=scene_service(name),
        month=scene_time(name).month,
        histograms=chart_histograms(charts),
        histograms_full=full_charts_hist,
        valid_fraction=valid_fractions(charts, valid),
    )


@dataclass
class Manifest:
    """The index of a prepared store.

    Attributes:
        downsample: ``K`` of every scene in the store.
        sar_variables: SAR-grid channels stored (in order of the ``sar`` array).
        coarse_variables: 2 km channels stored (in order of the ``coarse`` array).
        chunk: Spatial chunk side of the SAR-grid arrays.
        scenes: Records by scene name.
        version: Store format the manifest was read with (written: always
            :data:`STORE_VERSION`).
    """

    downsample: int
    sar_variables: tuple[str, ...]
    coarse_variables: tuple[str, ...]
    chunk: int
    scenes: dict[str, SceneRecord] = field(default_factory=dict)
    version: int = STORE_VERSION

    def settings(self) -> dict[str, Any]:
        """The store-wide settings (what must match for a later run to add scenes)."""
        return {
            "downsample": self.downsample,
            "sar_variables": list(self.sar_variables),
            "coarse_variables": list(self.coarse_variables),
            "chunk": self.chunk,
        }

    def to_json(self) -> str:
        """Serialise deterministically (scenes sorted by name)."""
        head = {"format": STORE_FORMAT, "version": STORE_VERSION, **self.settings()}
        lines = [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
        # one scene per line: readable with grep, and 256-bin histograms stay compact
        scenes = [
            f"  {json.dumps(n)}: {json.dumps(self.scenes[n].to_json(), separators=(',', ':'))}"
            for n in sorted(self.scenes)
        ]
        body = ",\n".join(scenes)
        return "{\n" + "\n".join(lines) + '\n "scenes": {\n' + body + "\n }\n}\n"

    def write(self, store: str | os.PathLike[str]) -> Path:
        """Write ``STORE/manifest.json`` atomically."""
        return write_text_atomic(Path(store) / MANIFEST_NAME, self.to_json())

    @classmethod
    def read(cls, store: str | os.PathLike[str]) -> Manifest:
        """Read ``STORE/manifest.json``.

        Raises:
            DataError: If the store or its manifest is missing or not a store manifest.
        """
        path = Path(store) / MANIFEST_NAME
        if not Path(store).is_dir():
            raise DataError(f"{store}: store folder does not exist (run 'icecontext prepare')")
        if not path.is_file():
            raise DataError(f"{store}: no {MANIFEST_NAME}; not a prepared store")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: unreadable manifest: {exc}") from exc
        if data.get("format") != STORE_FORMAT or data.get("version") not in READABLE_VERSIONS:
            newer = (
                "; it was written by a newer icecontext"
                if data.get("format") == STORE_FORMAT
                and isinstance(data.get("version"), int)
                and data["version"] > STORE_VERSION
                else ""
            )
            raise DataError(
                f"{path}: not an {STORE_FORMAT} manifest of format "
                f"{' or '.join(map(str, READABLE_VERSIONS))} "
                f"(format={data.get('format')!r}, version={data.get('version')!r}){newer}"
            )
        return cls(
            downsample=int(data["downsample"]),
            sar_variables=tuple(data["sar_variables"]),
            coarse_variables=tuple(data["coarse_variables"]),
            chunk=int(data["chunk"]),
            scenes={n: SceneRecord.from_json(r) for n, r in data["scenes"].items()},
            version=int(data["version"]),
        )
