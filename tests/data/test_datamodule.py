"""Torch/Lightning adapters: batch contract, worker/rank determinism, splits, backends."""

from __future__ import annotations

import gc
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from icecontext.data.config import DataConfig, default_threads, default_workers
from icecontext.data.io.geometry import CoarseSlot
from icecontext.data.loader.batching import TICKET_KEY, PatchLoader
from icecontext.data.loader.datamodule import (
    EpochPatchSampler,
    IceDataModule,
    PatchDataset,
    collate_patches,
    steps_per_epoch,
)
from icecontext.data.loader.sources import NetCDFSource, ZarrSource
from icecontext.data.store.prepare import prepare_store
from icecontext.errors import ConfigError, DataError
from icecontext.models.coarse_inputs import CoarseInputs

FEATURES = ["sar", "incidence", "amsr2:18.7", "era5", "month"]


@pytest.fixture(scope="module")
def store(scene_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dm") / "store"
    prepare_store(scene_dir, out, progress=False)
    return out


def make_dm(store: Path | None = None, root: Path | None = None, **kw) -> IceDataModule:
    cfg = {
        "store": store,
        "root": root,
        "features": FEATURES,
        "patch_size": 64,
        "batch_size": 4,
        "workers": 0,
        "patches_per_epoch": 12,
        "val_patches": 4,
        "splits": {"val_count": 1},
    }
    cfg.update(kw)
    return IceDataModule(DataConfig(**cfg), seed=3)


def batches(loader) -> list[dict[str, torch.Tensor]]:
    return list(loader)


def assert_same(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_batch_contract(store: Path) -> None:
    dm = make_dm(store)
    dm.setup("fit")
    assert dm.in_channels == 2 + 1 + 2 + 6 + 2
    batch = next(iter(dm.train_dataloader()))  # auto: no GPU, every channel upsampled
    assert batch["x"].shape == (4, 13, 64, 64) and batch["x"].dtype == torch.float32
    assert "coarse" not in batch and dm.cfg.coarse_batches is torch.cuda.is_available()
    # with coarse_on_device the 8 AMSR2/ERA5 channels travel at 2 km
    coarse = next(iter(make_dm(store, coarse_on_device=True).train_dataloader()))
    assert coarse["x"].shape == (4, 5, 64, 64)
    cells = CoarseSlot.cells(64)
    assert coarse["coarse"].shape == (4, 8, cells, cells)
    assert coarse["coarse_index"].shape == (4, 4, 64)
    assert coarse["coarse_weight"].shape == (4, 2, 64)
    assert torch.equal(CoarseInputs(dm.features)(coarse), batch["x"])
    for chart, n in (("SIC", 11), ("SOD", 6), ("FLOE", 7)):
        assert batch[chart].shape == (4, 64, 64) and batch[chart].dtype == torch.uint8
        values = set(batch[chart].unique().tolist())
        assert values <= set(range(n)) | {255}
    assert batch["scene"].dtype == torch.int64 and batch["scene"].shape == (4,)
    assert batch["window"].shape == (4, 4) and (batch["window"][:, 2:] == 64).all()
    assert batch["augment"].shape == (4, 3)
    assert len(dm.train_dataloader()) == steps_per_epoch(dm.cfg) == 3


def test_batches_do_not_depend_on_the_worker_count(store: Path) -> None:
    serial = batches(make_dm(store, threads=1).train_dataloader())
    parallel = batches(make_dm(store, workers=2).train_dataloader())
    assert_same(serial, parallel)
    # threads in the training process, and threads inside each worker
    assert_same(serial, batches(make_dm(store, threads=3).train_dataloader()))
    assert_same(serial, batches(make_dm(store, workers=2, threads=2).train_dataloader()))


def test_workers_reuse_their_batch_slots_without_changing_a_batch(store: Path) -> None:
    """Held batches are never overwritten; dropped ones free their worker slot for reuse."""

    def cloned(loader) -> list[dict[str, torch.Tensor]]:
        out = []
        for batch in loader:
            assert set(batch) == {"x", "SIC", "SOD", "FLOE", "scene", "window", "augment"}
            out.append({k: v.clone() for k, v in batch.items()})
            del batch  # the slot is free from here on
        return out

    kw = {"patches_per_epoch": 42, "batch_size": 4}  # 11 batches, the last one short
    serial = make_dm(store, **kw).train_dataloader()
    loader = make_dm(store, workers=2, **kw).train_dataloader()
    per_worker = loader.prefetch_factor + 2
    assert 2 * per_worker < 11
    # epoch 0: every batch held, more batches than slots (the surplus comes unpooled)
    assert_same(batches(serial), batches(loader))
    for epoch in (1, 2):  # persistent workers keep their slots across epochs
        serial.sampler.set_epoch(epoch)
        loader.sampler.set_epoch(epoch)
        assert_same(cloned(serial), cloned(loader))
    returner = loader._returner
    assert len({owner for owner, _ in returner._mapped}) == 2  # both workers pool
    assert all(k < per_worker for _, k in returner._mapped)
    # more batches came in pooled slots than there are slots: reuse
    assert len(returner._mapped) < returner.tickets <= 33


def test_abandoned_iterations_do_not_strand_worker_slots(store: Path) -> None:
    """Batches torch discards with an abandoned iteration free their slots on the next one."""
    loader = make_dm(store, workers=2, patches_per_epoch=40, batch_size=4).train_dataloader()
    for _ in range(4):  # e.g. a `break`, or Lightning's limit_*_batches
        it = iter(loader)
        next(it)
        next(it)
        del it
    # Two full epochs, each batch dropped before the next. A batch the abandoned
    # iteration's workers were still filling when the next one started carries the new
    # number, so its slot is freed one iteration later: after the second epoch none is left.
    for _ in range(2):
        for batch in loader:
            del batch
    gc.collect()
    returner = loader._returner
    returner.poll()
    leases = torch.cat(list(returner.worker_leases.values()))
    assert len(returner.worker_leases) == 2 and leases.eq(0).all(), leases.tolist()
    # a plain DataLoader over the same dataset gets plain batches (no ticket)
    plain = DataLoader(loader.dataset, batch_size=4, num_workers=1, collate_fn=collate_patches)
    assert TICKET_KEY not in next(iter(plain))


def test_slot_reuse_works_with_spawned_workers(store: Path) -> None:
    """macOS and Windows start workers with spawn: the slots and leases are pickled."""
    serial = make_dm(store, patches_per_epoch=40).train_dataloader()
    base = make_dm(store, patches_per_epoch=40).train_dataloader()
    loader = PatchLoader(
        base.dataset,
        batch_size=4,
        sampler=base.sampler,
        num_workers=2,
        collate_fn=collate_patches,
        persistent_workers=True,
        multiprocessing_context="spawn",
    )
    got = []
    for batch in loader:
        got.append({k: v.clone() for k, v in batch.items()})
        del batch
    assert_same(batches(serial), got)
    returner = loader._returner
    assert 0 < len(returner._mapped) < returner.tickets <= 10  # slots were reused


def test_assembled_batches_equal_stacked_patches(store: Path) -> None:
    dm = make_dm(store)
    dm.setup("fit")
    dataset = PatchDataset(dm.train_sampler, 12, seed=3, threads=2)
    keys = [5, 0, 11, 7]
    assert_same([dataset.__getitems__(keys)], [collate_patches([dataset[k] for k in keys])])


def test_ranks_draw_disjoint_shares_of_the_same_epoch(store: Path) -> None:
    dm = make_dm(store)
    dm.setup("fit")
    dataset = PatchDataset(dm.train_sampler, 12, seed=3)
    single = EpochPatchSampler(12)
    ranks = [EpochPatchSampler(12, num_replicas=2, rank=r) for r in (0, 1)]
    for s in (single, *ranks):
        s.set_epoch(2)
    assert sorted(list(ranks[0]) + list(ranks[1])) == list(single) == list(range(24, 36))
    assert not set(ranks[0]) & set(ranks[1])
    # the patch behind an index is the same whichever rank draws it
    one = {i: dataset[i] for i in single}
    for i in ranks[1]:
        assert torch.equal(dataset[i]["x"], one[i]["x"])


def test_each_epoch_draws_new_patches_and_validation_stays_fixed(store: Path) -> None:
    dm = make_dm(store)
    train = dm.train_dataloader()
    first = batches(train)
    train.sampler.set_epoch(1)
    second = batches(train)
    assert not torch.equal(first[0]["window"], second[0]["window"])
    val = dm.val_dataloader()
    v0 = batches(val)
    val.sampler.set_epoch(5)
    assert_same(v0, batches(val))
    assert (torch.stack([b["augment"] for b in v0]) == 0).all()  # no augmentation


def test_netcdf_backend_gives_the_same_batches_as_the_store(scene_dir: Path, store: Path) -> None:
    from_store = make_dm(store)
    from_files = make_dm(root=scene_dir)
    from_store.setup()
    from_files.setup()
    assert isinstance(from_store.sources("train")[0], ZarrSource)
    assert isinstance(from_files.sources("train")[0], NetCDFSource)
    assert from_store.splits == from_files.splits
    assert_same(batches(from_store.train_dataloader()), batches(from_files.train_dataloader()))


def test_full_scene_sources_for_validation_and_test(
    scene_dir: Path, store: Path, test_set_dir: Path
) -> None:
    dm = make_dm(
        store,
        test_root=test_set_dir,
        splits={"val_count": 1, "test": [p.name for p in test_set_dir.glob("*_prep.nc")]},
    )
    dm.setup()
    val = dm.sources("val")
    assert len(val) == 1 and val[0].shape == (200, 225)
    test = dm.sources("test")
    assert len(test) == 2 and all(isinstance(s, NetCDFSource) for s in test)
    # test scenes are read with their _prep_reference.nc labels
    assert (test[0].read_chart_stack((0, 0, *test[0].shape)) != 255).any()
    assert dm.state_dict()["val"] == [s.name for s in val]


def test_bad_configuration_is_reported(store: Path) -> None:
    with pytest.raises(DataError, match=r"20180124T194759_dmi.*data.splits.test.*store"):
        make_dm(store, splits={"test": "official"}).setup()
    with pytest.raises(ConfigError, match="data.downsample"):
        make_dm(store, downsample=2).setup()
    with pytest.raises(DataError, match="patch_size|min_valid_fraction"):
        make_dm(store, patch_size=200, min_valid_fraction=1.0).setup("fit")


def test_feature_missing_from_store_is_an_error(scene_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sar_only"
    prepare_store(scene_dir, out, features=["sar"], progress=False)
    with pytest.raises(DataError, match=r"sar_only.*sar_incidenceangle.*data.features"):
        make_dm(out).setup()


def test_default_threads() -> None:
    assert default_threads(0, cpu_count=2) == 2
    assert default_threads(0, cpu_count=16) == 4
    assert default_threads(0, cpu_count=1) == 1
    assert default_threads(3, cpu_count=16) == 1  # worker processes load in parallel
    cfg = DataConfig(store=Path("s"), workers=0, threads=None)
    assert cfg.num_threads == default_threads(0)
    with pytest.raises(ValueError, match="threads"):
        DataConfig(store=Path("s"), threads=0)


def test_default_workers() -> None:
    assert default_workers(2, cuda=False) == 1
    assert default_workers(16, cuda=False) == 4
    assert default_workers(1, cuda=False) == 0
    assert default_workers(16, cuda=True) == 8
    assert default_workers(2, cuda=True) == 1


def test_loader_settings(store: Path) -> None:
    loader = make_dm(store, workers=2).train_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers
    assert loader.pin_memory == torch.cuda.is_available()
    assert loader.collate_fn is collate_patches


class _Recorder(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Conv2d(13, 11, 1)
        self.windows: dict[int, list[torch.Tensor]] = {}
        self.sums: dict[int, list[torch.Tensor]] = {}

    def training_step(self, batch, batch_idx):
        self.windows.setdefault(self.current_epoch, []).append(batch["window"].clone())
        self.sums.setdefault(self.current_epoch, []).append(batch["x"].double().sum())
        logits = self.layer(batch["x"])
        return torch.nn.functional.cross_entropy(logits, batch["SIC"].long(), ignore_index=255)

    def validation_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit_recorder(store: Path, root: Path, workers: int) -> tuple[pl.Trainer, _Recorder]:
    model = _Recorder()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=root,
    )
    trainer.fit(model, datamodule=make_dm(store, workers=workers))
    return trainer, model


def test_lightning_keeps_the_sampler_and_advances_epochs(store: Path, tmp_path: Path) -> None:
    trainer, model = _fit_recorder(store, tmp_path / "serial", workers=0)
    assert isinstance(trainer.train_dataloader.sampler, EpochPatchSampler)
    assert len(model.windows[0]) == len(model.windows[1]) == 3
    assert not torch.equal(torch.cat(model.windows[0]), torch.cat(model.windows[1]))
    np.testing.assert_array_equal(torch.cat(model.windows[0])[:, 2:].numpy(), 64)
    # with loader workers Lightning keeps the slot-returning loader and sees the same data
    trainer, parallel = _fit_recorder(store, tmp_path / "workers", workers=2)
    assert isinstance(trainer.train_dataloader, PatchLoader)
    assert trainer.train_dataloader._returner.tickets > 0
    for epoch in (0, 1):
        assert torch.equal(torch.cat(model.windows[epoch]), torch.cat(parallel.windows[epoch]))
        assert torch.equal(torch.stack(model.sums[epoch]), torch.stack(parallel.sums[epoch]))


def test_the_training_loader_skips_only_inside_the_epoch_it_was_stopped_in() -> None:
    """A checkpoint of an epoch that ended early (max_steps) records batches < len; the
    resumed run starts the next epoch, which must not lose its first batches."""
    from icecontext.data.loader.datamodule import EpochPatchSampler, ResumableLoader

    def loader() -> ResumableLoader:
        return ResumableLoader(list(range(1000)), batch_size=4, sampler=EpochPatchSampler(16))

    stopped = loader()
    stopped.sampler.set_epoch(1)
    batches = iter(stopped)
    next(batches), next(batches)
    assert stopped.state_dict() == {"epoch": 1, "batches": 2}

    same = loader()  # resumed inside epoch 1: batches 2 and 3 remain
    same.load_state_dict(stopped.state_dict())
    same.sampler.set_epoch(1)  # Lightning sets the epoch before the first batch
    assert [b.tolist() for b in same] == [[24, 25, 26, 27], [28, 29, 30, 31]]

    moved_on = loader()  # the epoch ended early: Lightning resumes with epoch 2
    moved_on.load_state_dict(stopped.state_dict())
    moved_on.sampler.set_epoch(2)
    first_pass = [b.tolist() for b in moved_on]
    assert first_pass[0] == [32, 33, 34, 35] and len(first_pass) == 4  # a whole epoch
