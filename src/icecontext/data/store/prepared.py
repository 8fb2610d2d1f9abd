"""A prepared store opened for reading: its manifest, scene names and channels."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from icecontext.data.store.manifest import Manifest
from icecontext.errors import DataError

log = logging.getLogger(__name__)


class PreparedStore:
    """A prepared store opened for reading.

    Args:
        path: The store folder.

    Raises:
        DataError: If the folder is not a prepared store.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.manifest = Manifest.read(self.path)
        if self.manifest.version < 2 and self.manifest.downsample > 1:
            log.warning(
                "%s: prepared before store format 2, so it holds no 80 m charts; validation "
                "and evaluation need them at --downsample %d: run 'icecontext prepare' with "
                "the same --scenes and --out again to rebuild its scenes",
                self.path,
                self.manifest.downsample,
            )

    @property
    def names(self) -> list[str]:
        """Scene names in the store, sorted."""
        return sorted(self.manifest.scenes)

    @property
    def features(self) -> tuple[str, ...]:
        """Channels the store can serve (stored variables plus derived channels)."""
        from icecontext.data.io.variables import LATLON_FEATURES, MONTH_FEATURES

        m = self.manifest
        return (*m.sar_variables, *m.coarse_variables, *LATLON_FEATURES, *MONTH_FEATURES)

    def check_features(self, features: Sequence[str], option: str = "data.features") -> None:
        """Raise if a feature is not in the store.

        Raises:
            DataError: Naming the feature and the store.
        """
        missing = [f for f in features if f not in self.features]
        if missing:
            raise DataError(
                f"{self.path}: feature '{missing[0]}' (from {option}) is not in this store, "
                f"which holds {', '.join(self.features)}; re-run 'icecontext prepare' with it "
                "in --features"
            )
