"""Direct reads of a prepared store's Zarr chunks, for the training loader's hot path.

Why this exists: zarr-python 3 schedules every read on its asyncio event-loop thread and
runs its codec pipeline per chunk, which costs about 0.8 ms per chunk on this project's
CI machine, while reading the chunk file and decompressing it costs about 0.3 ms
(``benchmarks/loader.py`` measures the loader end to end). A 256-pixel training patch
touches about ten chunks, so the event loop alone held the loader under 100 patches/s.

The store that ``icecontext prepare`` writes uses the simplest Zarr 3 layout: a regular
chunk grid, the default ``c/i/j/k`` chunk keys, the ``bytes`` serializer and at most one
Blosc compressor, on a local file system. For exactly that layout,
:class:`DirectChunkReader` reads the chunk files itself and decompresses them with
numcodecs' Blosc (the codec zarr itself uses), as the Zarr 3 specification describes the
chunk encoding. Anything else (another codec, sharding, a remote store) returns ``None``
from :meth:`DirectChunkReader.for_array` and is read through zarr as before, so the fast
path never changes what is read: ``tests/data/test_chunks.py`` compares it with zarr on
every kind of window.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


class DirectChunkReader:
    """Read basic selections of one local, Blosc-compressed Zarr 3 array.

    Attributes:
        path: The array's folder (holding ``zarr.json`` and ``c/``).
        shape: Array shape.
        chunks: Chunk shape.
        dtype: Little-endian numpy dtype of the stored values.
        fill_value: Value of chunks that were never written.
    """

    def __init__(
        self,
        path: Path,
        shape: tuple[int, ...],
        chunks: tuple[int, ...],
        dtype: np.dtype[Any],
        fill_value: Any,
        compressed: bool,
    ) -> None:
        self.path = path
        self.shape = shape
        self.chunks = chunks
        self.dtype = dtype
        self.fill_value = fill_value
        self._compressed = compressed

    @classmethod
    def for_array(cls, array: Any) -> DirectChunkReader | None:
        """Return a reader for ``array`` if its layout is the simple one, else ``None``."""
        try:
            from zarr.codecs import BloscCodec, BytesCodec
            from zarr.core.chunk_grids import RegularChunkGrid
            from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
            from zarr.storage import LocalStore
        except ImportError:  # pragma: no cover - another zarr major version
            return None
        meta = getattr(array, "metadata", None)
        if meta is None or getattr(meta, "zarr_format", None) != 3:
            return None
        store = array.store_path.store
        codecs = tuple(meta.codecs)
        if not (
            isinstance(store, LocalStore)
            and isinstance(meta.chunk_grid, RegularChunkGrid)
            and isinstance(meta.chunk_key_encoding, DefaultChunkKeyEncoding)
            and meta.chunk_key_encoding.separator == "/"
            and codecs
            and isinstance(codecs[0], BytesCodec)
            and getattr(codecs[0].endian, "value", codecs[0].endian) in (None, "little")
            and len(codecs) <= 2
            and all(isinstance(c, BloscCodec) for c in codecs[1:])
            and getattr(array, "order", "C") == "C"
        ):
            return None
        dtype = np.dtype(array.dtype).newbyteorder("<")
        return cls(
            path=Path(store.root) / array.store_path.path,
            shape=tuple(int(n) for n in array.shape),
            chunks=tuple(int(n) for n in meta.chunk_grid.chunk_shape),
            dtype=dtype,
            fill_value=np.asarray(meta.fill_value, dtype=dtype),
            compressed=len(codecs) == 2,
        )

    def _chunk(self, index: tuple[int, ...]) -> np.ndarray | None:
        """Decoded chunk ``index`` (full chunk shape), or ``None`` if never written."""
        file = self.path.joinpath("c", *map(str, index))
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            return None
        if self._compressed:
            from numcodecs import blosc

            data = blosc.decompress(data)
        return np.frombuffer(data, dtype=self.dtype).reshape(self.chunks)

    def __getitem__(self, selection: tuple[slice | int, ...]) -> np.ndarray:
        """Read ``array[selection]`` for slices of step 1 and integers (one per axis or fewer).

        Raises:
            IndexError: For steps other than 1 or an out-of-range integer.
        """
        if not isinstance(selection, tuple):
            selection = (selection,)
        selection = selection + (slice(None),) * (len(self.shape) - len(selection))
        bounds: list[tuple[int, int]] = []
        keep: list[bool] = []
        for sel, n in zip(selection, self.shape, strict=True):
            if isinstance(sel, slice):
                start, stop, step = sel.indices(n)
                if step != 1:
                    raise IndexError("DirectChunkReader reads slices of step 1 only")
                bounds.append((start, max(start, stop)))
                keep.append(True)
            else:
                i = int(sel) + (n if int(sel) < 0 else 0)
                if not 0 <= i < n:
                    raise IndexError(f"index {sel} out of range for axis of size {n}")
                bounds.append((i, i + 1))
                keep.append(False)
        out = np.empty(tuple(b - a for a, b in bounds), dtype=self.dtype)
        if out.size:
            ranges = [
                range(a // c, math.ceil(b / c))
                for (a, b), c in zip(bounds, self.chunks, strict=True)
            ]
            for index in np.ndindex(*(len(r) for r in ranges)):
                chunk_index = tuple(r[k] for r, k in zip(ranges, index, strict=True))
                src, dst = [], []
                for ci, (a, b), c in zip(chunk_index, bounds, self.chunks, strict=True):
                    lo, hi = max(a, ci * c), min(b, (ci + 1) * c)
                    src.append(slice(lo - ci * c, hi - ci * c))
                    dst.append(slice(lo - a, hi - a))
                block = self._chunk(chunk_index)
                out[tuple(dst)] = self.fill_value if block is None else block[tuple(src)]
        squeeze = tuple(k for k, kept in enumerate(keep) if not kept)
        return out.squeeze(axis=squeeze) if squeeze else out
