"""Batches assembled in place: patches are written straight into their batch slots.

Why not ``default_collate`` over per-patch tensors: on the 2-core CI machine a fresh
50 MB batch (8 x 24 x 256 x 256 float32) cost ~34 ms of page faults to fill, as much as
reading five patches, and stacking copied every patch once more. So the loading
process keeps a few batch buffers and reuses one as soon as nothing refers to its last
batch any more, and patches are read into their slots by a small thread pool (the
chunk decompression, file reads and array copies release the GIL; two threads read
1.5x the patches of one).

Loader *worker processes* send their batches to the training process through shared
memory, and only the training process knows when a batch is dropped. Under a
:class:`PatchLoader` each worker keeps a few shared-memory batch slots
(:class:`SharedSlotPool`); a :class:`SlotTicket` travels with each batch, and the
loader's :class:`SlotReturner` marks the slot free in a shared lease array once nothing
in the training process refers to the batch any more (or at once, when the batch was
copied into pinned memory). The training process keeps the slots mapped, so torch's
shared-memory cache hands it the same mapping again: no new shared-memory block, no
page faults on either side. Under a plain ``DataLoader`` each batch is a fresh
shared-memory block, as ``default_collate`` makes it. Shared memory is allocated with
the public ``Tensor.share_memory_`` only (:func:`shared_empty`).

The slots stay because they pay end to end: timed with a training-like consumer at 768
px, 18 inputs and batches of 16 on the 2-core CI machine, the loader delivered 1.5x the
batches of fresh shared-memory batches with one worker and with two
(docs/benchmarks.md).

Nothing here is specific to sea ice; it is written by hand because torch's DataLoader
offers neither in-place batch assembly nor buffer reuse.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info

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
    """An uninitialised tensor in shared memory (what a loader worker must send).

    Made with the public ``Tensor.share_memory_``, which moves a fresh tensor into a
    new shared-memory block (one extra pass over the memory: a pooled slot pays it
    once, an unpooled batch each time).
    """
    return torch.empty(tuple(shape), dtype=dtype).share_memory_()


TICKET_KEY = "_slot"
"""Batch key of the :class:`SlotTicket` (removed by :class:`PatchLoader`)."""


class SlotTicket:
    """Which pooled shared-memory slot of a loader worker holds a batch.

    Pickled with the batch: ``leases`` and ``tensors`` are shared-memory tensors, so the
    training process receives the worker's memory, not a copy. Deliberately not a
    tensor, mapping or sequence, so ``pin_memory`` passes it through untouched.

    Args:
        owner: Process id of the worker.
        slot: Index of the slot in the worker's pool.
        leases: The worker's shared lease flags (0 = free, else the loader iteration
            that took the slot).
        tensors: The slot's shared tensors (to keep them mapped in the training process).
    """

    def __init__(
        self, owner: int, slot: int, leases: torch.Tensor, tensors: dict[str, torch.Tensor]
    ) -> None:
        self.owner = owner
        self.slot = slot
        self.leases = leases
        self.tensors = tensors

    def release(self) -> None:
        """Let the worker fill the slot again."""
        self.leases[self.slot] = 0


class SharedSlotPool:
    """Shared-memory batch slots of one loader worker, reused once the trainer frees them.

    A slot is taken only while its lease is 0; the worker then writes the current loader
    iteration (a number >= 1) into it, and only the training process sets it back to 0
    (:meth:`SlotTicket.release`, or :meth:`SlotReturner.reclaim` for batches of an
    abandoned iteration that were never delivered). A slot keeps the layout of the
    first batch it held; when no free slot has the layout and the pool is full (every
    slot busy, or an epoch's short last batch), a fresh unpooled shared batch is
    returned without a ticket: the pool never waits.

    Args:
        size: Slots kept (at most).
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.leases = torch.zeros(self.size, dtype=torch.int32).share_memory_()
        self._flags = self.leases.numpy()
        self._slots: list[tuple[Layout, dict[str, torch.Tensor]]] = []

    def take(
        self, layout: Layout, iteration: int = 1
    ) -> tuple[dict[str, torch.Tensor], SlotTicket | None]:
        """Shared tensors of the given layout, and the ticket of their slot (if pooled)."""
        for k, (known, tensors) in enumerate(self._slots):
            if known == layout and self._flags[k] == 0:
                return tensors, self._lease(k, tensors, iteration)
        tensors = _shared_batch(layout)
        if len(self._slots) < self.size:
            self._slots.append((dict(layout), tensors))
            return tensors, self._lease(len(self._slots) - 1, tensors, iteration)
        return tensors, None

    def _lease(self, k: int, tensors: dict[str, torch.Tensor], iteration: int) -> SlotTicket:
        self._flags[k] = max(1, int(iteration))
        return SlotTicket(os.getpid(), k, self.leases, tensors)


class SlotReturner:
    """The training process's side of :class:`SharedSlotPool`: frees slots when batches die.

    :meth:`receive` takes the ticket out of a batch. If the batch still lives in the
    slot's memory, its tensors are handed out as views guarded by weak references (the
    same rule as :class:`BatchBufferPool`) and the slot is released by a later
    :meth:`poll` once they are all gone; if the batch was copied (pinned memory), the
    slot is released at once. Tickets are kept per worker slot, which keeps the slot
    mapped here: torch's shared-memory cache then rebuilds the next batch on the same
    mapping instead of mapping (and faulting in) the memory again.
    """

    def __init__(self) -> None:
        self.tickets = 0  # batches received in pooled slots
        self._mapped: dict[tuple[int, int], SlotTicket] = {}
        self._pending: list[tuple[SlotTicket, list[weakref.ref[Any]]]] = []

    def poll(self) -> None:
        """Release the slots whose batches nobody holds any more."""
        busy = []
        for ticket, refs in self._pending:
            if all(ref() is None for ref in refs):
                ticket.release()
            else:
                busy.append((ticket, refs))
        self._pending = busy

    @property
    def worker_leases(self) -> dict[int, torch.Tensor]:
        """The lease array of every worker seen, by process id."""
        return {t.owner: t.leases for t in self._mapped.values()}

    def reclaim(self, iteration: int) -> int:
        """Free the slots that earlier iterations took but never delivered; return how many.

        Call once a new iteration of the same (persistent) workers has started: torch
        discards the batches an abandoned iteration left in flight before it resumes
        the workers, so a slot leased by an older iteration is either held here (a
        pending batch: kept) or was discarded (freed). Slots carrying the new number are
        left alone; among them may be one a worker took for a discarded batch just after
        the number changed, which the iteration after frees (never one in use).
        """
        self.poll()
        held = {(t.owner, t.slot) for t, _ in self._pending}
        freed = 0
        for owner, leases in self.worker_leases.items():
            flags = leases.numpy()
            for k in range(len(flags)):
                if int(flags[k]) not in (0, iteration) and (owner, k) not in held:
                    flags[k] = 0
                    freed += 1
        return freed

    def forget(self) -> None:
        """Drop every slot (their workers are gone): unmaps them here once unused."""
        self._mapped.clear()
        self._pending.clear()

    def receive(self, batch: Any) -> Any:
        """The batch without its ticket, with the slot's release arranged."""
        self.poll()
        if not isinstance(batch, dict) or TICKET_KEY not in batch:
            return batch
        batch = dict(batch)
        ticket: SlotTicket = batch.pop(TICKET_KEY)
        self.tickets += 1
        self._mapped[(ticket.owner, ticket.slot)] = ticket
        slot_memory = {t.untyped_storage().data_ptr() for t in ticket.tensors.values()}
        refs: list[weakref.ref[Any]] = []
        for key, value in batch.items():
            if not isinstance(value, torch.Tensor):
                continue
            if value.untyped_storage().data_ptr() in slot_memory:
                view = value.numpy()[...]
                refs.append(weakref.ref(view))
                batch[key] = torch.from_numpy(view)
        if refs:
            self._pending.append((ticket, refs))
        else:
            ticket.release()
        return batch


class PatchLoader(DataLoader):
    """A ``DataLoader`` whose workers reuse their shared-memory batch slots.

    Takes exactly the ``DataLoader`` arguments. Over a dataset with a
    :class:`BatchAssembler` (``dataset.assembler``) and with worker processes, each
    worker keeps up to ``prefetch_factor + 2`` batch slots (``+ 1`` with
    ``pin_memory``, where a slot is free again as soon as its batch is copied) in a
    :class:`SharedSlotPool`; the batches this loader yields carry no ticket. Anything
    else behaves as a plain ``DataLoader``.
    """

    _returner: SlotReturner | None = None
    _inner: weakref.ref[Any] | None = None
    _iteration: torch.Tensor | None = None

    def __iter__(self) -> Any:
        assembler = getattr(self.dataset, "assembler", None)
        if self.num_workers == 0 or not isinstance(assembler, BatchAssembler):
            return super().__iter__()
        if self._iteration is None:  # shared with the workers, which stamp their leases
            self._iteration = torch.zeros(1, dtype=torch.int32).share_memory_()
        self._iteration += 1
        # set before super().__iter__() starts (and copies the dataset to) the workers,
        # and unset after, so a plain DataLoader over the same dataset sends no tickets
        assembler.worker_slots = (self.prefetch_factor or 2) + (1 if self.pin_memory else 2)
        assembler.iteration = self._iteration
        try:
            inner = super().__iter__()
        finally:
            assembler.worker_slots, assembler.iteration = 0, None
        known = self._inner() if self._inner is not None else None
        if inner is not known or self._returner is None:  # new workers: new slots
            self._inner, self._returner = weakref.ref(inner), SlotReturner()
        else:  # the same persistent workers: free what an abandoned iteration left
            self._returner.reclaim(int(self._iteration))
        return _ReturningIterator(inner, self._returner, forget=not self.persistent_workers)


class _ReturningIterator:
    """Passes batches through :meth:`SlotReturner.receive`; the rest goes to the inner one.

    With non-persistent workers the slots are forgotten when the epoch ends (the
    workers exit), so the training process does not keep their memory mapped.
    """

    def __init__(self, inner: Any, returner: SlotReturner, forget: bool) -> None:
        self._inner = inner
        self._returner = returner
        self._forget = forget

    def __iter__(self) -> _ReturningIterator:
        return self

    def __next__(self) -> Any:
        try:
            batch = next(self._inner)
        except StopIteration:
            if self._forget:
                self._returner.forget()
            raise
        return self._returner.receive(batch)

    def __len__(self) -> int:
        return len(self._inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _shared_batch(layout: Layout) -> dict[str, torch.Tensor]:
    return {
        name: shared_empty(shape, _TORCH_DTYPES[np.dtype(dtype)])
        for name, (shape, dtype) in layout.items()
    }


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

    Attributes:
        worker_slots: Shared-memory slots per loader worker (0: a fresh shared batch
            each time). Set by :class:`PatchLoader`, whose iterator returns the slots.
        iteration: The loader's shared iteration counter (stamped into slot leases).
    """

    def __init__(self, threads: int = 1, pool_size: int = 4) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = int(threads)
        self.pool_size = int(pool_size)
        self.worker_slots = 0
        self.iteration: torch.Tensor | None = None
        self._pid: int | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._buffers: BatchBufferPool | None = None
        self._slots: SharedSlotPool | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_pid=None, _executor=None, _buffers=None, _slots=None)
        return state

    def _local(self) -> None:
        if self._pid != os.getpid():  # first use, or a forked worker: new pools
            self._executor = None
            self._buffers = BatchBufferPool(self.pool_size)
            self._slots = None
            self._pid = os.getpid()

    def allocate(
        self, layout: Layout
    ) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor], SlotTicket | None]:
        """Numpy views to fill, the tensors that share their memory, and a slot ticket.

        The ticket is not None only in a loader worker with :attr:`worker_slots`; it
        must travel with the batch under :data:`TICKET_KEY`.
        """
        self._local()
        ticket = None
        if get_worker_info() is not None:
            if self.worker_slots > 0:
                if self._slots is None:
                    self._slots = SharedSlotPool(self.worker_slots)
                iteration = 1 if self.iteration is None else int(self.iteration)
                tensors, ticket = self._slots.take(layout, iteration)
            else:
                tensors = _shared_batch(layout)
            return {name: t.numpy() for name, t in tensors.items()}, tensors, ticket
        assert self._buffers is not None
        arrays = self._buffers.take(layout)
        return arrays, {name: torch.from_numpy(a) for name, a in arrays.items()}, None

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
