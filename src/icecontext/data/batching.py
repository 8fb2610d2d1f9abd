"""Batches assembled in place: patches are written straight into their batch slots.

Why not ``default_collate`` over per-patch tensors: on the 2-core CI machine a fresh
50 MB batch (8 x 24 x 256 x 256 float32) cost ~34 ms of page faults to fill, as much as
reading five patches, and stacking copied every patch once more. So the loading
process keeps a few batch buffers and reuses one as soon as nothing refers to its last
batch any more, and patches are read into their slots by a small thread pool (the
chunk decompression, file reads and array copies release the GIL; two threads read
1.5x the patches of one). Loader *worker processes* cannot reuse buffers (the training
process maps their shared memory and only it knows when a batch is dropped), so there
each batch is a fresh shared-memory block, as ``default_collate`` makes it.

Nothing here is specific to sea ice; it is written by hand because torch's DataLoader
offers neither in-place batch assembly nor buffer reuse.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

Layout = dict[str, tuple[tuple[int, ...], Any]]
"""Name -> (shape, numpy dtype) of the arrays of one batch."""


class BatchBufferPool:
    """Reusable batch arrays for the process that consumes the batches.

    :meth:`take` hands out *views* of pooled arrays; the caller wraps them with
    ``torch.from_numpy``, whose tensors (and their views, and their views' views) keep
    the view alive. A buffer is free again once every view it handed out has been
    garbage-collected, which a weak reference tells without guessing at reference
    counts. When all buffers are busy a fresh, unpooled batch is returned: the pool
    never blocks and never hands out memory that is still visible to anyone.

    Args:
        size: Buffers kept (at most).
    """

    def __init__(self, size: int = 4) -> None:
        self.size = int(size)
        self._buffers: list[tuple[Layout, dict[str, np.ndarray], list[weakref.ref[Any]]]] = []

    def take(self, layout: Layout) -> dict[str, np.ndarray]:
        """Arrays of the given shapes and dtypes (contents undefined)."""
        for i, (known, arrays, leases) in enumerate(self._buffers):
            if known == layout and all(ref() is None for ref in leases):
                return self._lease(i, arrays)
        arrays = {name: np.empty(shape, dtype=dtype) for name, (shape, dtype) in layout.items()}
        if len(self._buffers) < self.size:
            self._buffers.append((dict(layout), arrays, []))
            return self._lease(len(self._buffers) - 1, arrays)
        # all busy, or of another shape (an epoch's short last batch): unpooled, so the
        # full-size buffers stay for the batches that follow
        return arrays

    def _lease(self, i: int, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        views = {name: a[...] for name, a in arrays.items()}
        self._buffers[i][2][:] = [weakref.ref(v) for v in views.values()]
        return views


def shared_empty(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor in shared memory (what a loader worker must send)."""
    numel = math.prod(shape)
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel)
    return torch.empty(0, dtype=dtype).set_(storage).view(*shape)


_TORCH_DTYPES = {
    np.dtype(np.float32): torch.float32,
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.int64): torch.int64,
}


class BatchAssembler:
    """Allocates a batch's arrays and fills its slots, in parallel threads.

    Picklable (DataLoader workers get a copy): the thread pool and the buffer pool are
    created lazily in each process.

    Args:
        threads: Threads filling slots (1 = in the calling thread).
        pool_size: Batch buffers reused by the consuming process.
    """

    def __init__(self, threads: int = 1, pool_size: int = 4) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = int(threads)
        self.pool_size = int(pool_size)
        self._pid: int | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._buffers: BatchBufferPool | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_pid=None, _executor=None, _buffers=None)
        return state

    def _local(self) -> None:
        if self._pid != os.getpid():  # first use, or a forked worker: new pools
            self._executor = None
            self._buffers = BatchBufferPool(self.pool_size)
            self._pid = os.getpid()

    def allocate(self, layout: Layout) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
        """Numpy views to fill and the tensors that share their memory."""
        self._local()
        if get_worker_info() is not None:
            tensors = {
                name: shared_empty(shape, _TORCH_DTYPES[np.dtype(dtype)])
                for name, (shape, dtype) in layout.items()
            }
            return {name: t.numpy() for name, t in tensors.items()}, tensors
        assert self._buffers is not None
        arrays = self._buffers.take(layout)
        return arrays, {name: torch.from_numpy(a) for name, a in arrays.items()}

    def fill(self, fill_slot: Callable[[int], None], n: int) -> None:
        """Call ``fill_slot(i)`` for ``i < n`` (in threads when ``threads > 1``)."""
        self._local()
        if self.threads == 1 or n == 1:
            for i in range(n):
                fill_slot(i)
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="icecontext-load")
        for _ in self._executor.map(fill_slot, range(n)):  # re-raises a slot's error
            pass
