"""In-place batch assembly: buffer reuse only when released, threads, shared memory."""

from __future__ import annotations

import gc
import pickle

import numpy as np
import pytest
import torch

from icecontext.data.loader.batching import (
    TICKET_KEY,
    BatchAssembler,
    BatchBufferPool,
    SharedSlotPool,
    SlotReturner,
    shared_empty,
)

LAYOUT = {"x": ((2, 3, 4, 4), np.float32), "c": ((3, 2, 4, 4), np.uint8)}


def test_a_buffer_is_reused_only_after_every_view_of_its_batch_is_gone():
    pool = BatchBufferPool(size=2)
    a = pool.take(LAYOUT)
    xa = torch.from_numpy(a["x"])
    view = xa[:, :2]  # a consumer's slice keeps the batch busy too
    xa.fill_(1.0)
    del a, xa
    gc.collect()
    b = pool.take(LAYOUT)  # the first buffer is busy: the second one
    torch.from_numpy(b["x"]).fill_(2.0)
    assert (view == 1.0).all()
    c = pool.take(LAYOUT)  # both busy: an unpooled batch, never a busy one
    c["x"][...] = 3.0
    assert (view == 1.0).all() and (b["x"] == 2.0).all()
    ptr = view.untyped_storage().data_ptr()
    del view, b, c
    gc.collect()
    d = pool.take(LAYOUT)
    assert d["x"].ctypes.data == ptr  # released: the first buffer again
    assert d["x"].shape == (2, 3, 4, 4) and d["c"].dtype == np.uint8


def test_a_batch_of_another_shape_does_not_evict_the_full_size_buffer():
    pool = BatchBufferPool(size=1)
    a = pool.take(LAYOUT)
    ptr = a["x"].ctypes.data
    del a
    small = {"x": ((1, 3, 4, 4), np.float32)}  # an epoch's short last batch
    b = pool.take(small)
    assert b["x"].shape == (1, 3, 4, 4) and set(b) == {"x"}
    assert pool.take(LAYOUT)["x"].ctypes.data == ptr  # the next epoch reuses it


def test_threads_fill_every_slot_and_errors_surface():
    asm = BatchAssembler(threads=3)
    arrays, tensors, ticket = asm.allocate(LAYOUT)
    assert ticket is None  # not in a loader worker

    def fill(i: int) -> None:
        arrays["x"][i] = i + 1

    asm.fill(fill, 2)
    assert torch.equal(tensors["x"][:, 0, 0, 0], torch.tensor([1.0, 2.0]))

    def broken(i: int) -> None:
        if i == 1:
            raise ValueError("slot 1 failed")

    with pytest.raises(ValueError, match="slot 1 failed"):
        asm.fill(broken, 4)
    with pytest.raises(ValueError, match="threads"):
        BatchAssembler(threads=0)


def test_assembler_pickles_without_its_pools():
    asm = BatchAssembler(threads=2)
    asm.allocate(LAYOUT)
    asm.fill(lambda i: None, 2)
    copy = pickle.loads(pickle.dumps(asm))
    assert copy.threads == 2 and copy._executor is None and copy._buffers is None
    _, tensors, _ = copy.allocate(LAYOUT)
    assert tensors["x"].shape == (2, 3, 4, 4)


def test_shared_empty_is_in_shared_memory():
    t = shared_empty((2, 5), torch.uint8)
    assert t.is_shared() and t.shape == (2, 5) and t.dtype == torch.uint8
    t.numpy()[...] = 7
    assert int(t.sum()) == 70


def test_a_worker_slot_is_taken_again_only_after_the_trainer_released_it():
    pool = SharedSlotPool(size=2)
    a, ticket_a = pool.take(LAYOUT)
    assert ticket_a is not None and ticket_a.slot == 0 and a["x"].is_shared()
    b, ticket_b = pool.take(LAYOUT)  # slot 0 is leased: slot 1
    assert ticket_b is not None and ticket_b.slot == 1
    c, ticket_c = pool.take(LAYOUT)  # both leased: a fresh batch, no ticket
    assert ticket_c is None and c["x"].data_ptr() not in (a["x"].data_ptr(), b["x"].data_ptr())
    assert ticket_a.leases.tolist() == [1, 1]
    ticket_b.release()
    again, ticket = pool.take(LAYOUT)
    assert ticket is not None and ticket.slot == 1 and again["x"].data_ptr() == b["x"].data_ptr()
    ticket_a.release()
    small, ticket = pool.take({"x": ((1, 3, 4, 4), np.float32)})  # a short last batch
    assert ticket is None and small["x"].shape == (1, 3, 4, 4)
    assert pool.take(LAYOUT)[0]["x"].data_ptr() == a["x"].data_ptr()  # not evicted


def test_the_returner_releases_a_slot_when_the_last_view_of_its_batch_dies():
    pool = SharedSlotPool(size=1)
    tensors, ticket = pool.take(LAYOUT)
    tensors["x"].fill_(5.0)
    returner = SlotReturner()
    batch = returner.receive({"x": tensors["x"], "c": tensors["c"][0], TICKET_KEY: ticket})
    assert set(batch) == {"x", "c"}
    assert batch["x"].data_ptr() == tensors["x"].data_ptr()  # no copy
    view = batch["x"][:, :1]  # a consumer's slice keeps the slot busy
    del batch
    gc.collect()
    returner.poll()
    assert ticket.leases.tolist() == [1]
    assert pool.take(LAYOUT)[1] is None  # the worker cannot reuse it yet
    assert (view == 5.0).all()
    del view
    gc.collect()
    returner.poll()
    assert ticket.leases.tolist() == [0]
    assert pool.take(LAYOUT)[1] is not None


def test_a_batch_copied_before_it_arrives_releases_its_slot_at_once():
    pool = SharedSlotPool(size=1)
    tensors, ticket = pool.take(LAYOUT)
    pinned_like = {k: v.clone() for k, v in tensors.items()}  # what pin_memory hands over
    batch = SlotReturner().receive({**pinned_like, TICKET_KEY: ticket})
    assert batch["x"] is pinned_like["x"] and TICKET_KEY not in batch
    assert ticket.leases.tolist() == [0]
    plain = {"x": torch.zeros(1)}
    assert SlotReturner().receive(plain) is plain  # no ticket: untouched


def test_reclaim_frees_slots_an_abandoned_iteration_never_delivered():
    pool = SharedSlotPool(size=3)
    a, ticket_a = pool.take(LAYOUT, iteration=1)
    pool.take(LAYOUT, iteration=1)  # slot 1: its batch is discarded with the iteration
    returner = SlotReturner()
    batch = returner.receive({"x": a["x"], TICKET_KEY: ticket_a})  # slot 0: still held
    pool.take(LAYOUT, iteration=2)  # slot 2: taken by the new iteration
    assert ticket_a.leases.tolist() == [1, 1, 2]
    assert returner.reclaim(2) == 1
    assert ticket_a.leases.tolist() == [1, 0, 2]  # held and current slots untouched
    del batch
    gc.collect()
    returner.poll()
    assert ticket_a.leases.tolist() == [0, 0, 2]
