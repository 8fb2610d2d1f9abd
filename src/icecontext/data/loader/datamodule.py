"""Torch and Lightning adapters over the numpy patch sampler (thin by design).

Batches are ``dict[str, Tensor]``:

* ``"x"``: float32 ``(B, C, P, P)`` inputs in the order of ``data.features``;
* ``"SIC"``, ``"SOD"``, ``"FLOE"``: uint8 ``(B, P, P)`` class indices, 255 = masked;
* ``"scene"``: int64 ``(B,)`` index into the split's source list;
* ``"window"``: int64 ``(B, 4)`` ``(row, col, height, width)`` before augmentation;
* ``"augment"``: int64 ``(B, 3)`` ``(horizontal flip, vertical flip, 90-degree turns)``.

With ``data.coarse_on_device`` (``auto``: on a GPU) a batch with 2 km channels (AMSR2, ERA5)
carries them at 2 km: ``"x"`` then holds only the other channels (in their order), and
``"coarse"`` float32 ``(B, C2, n, n)``, ``"coarse_index"`` int64 ``(B, 4, P)`` and
``"coarse_weight"`` float32 ``(B, 2, P)`` hold the 2 km channels and their per-pixel
sampling (:class:`~icecontext.data.io.geometry.CoarseSlot`);
:class:`~icecontext.models.coarse_inputs.CoarseInputs` rebuilds the full inputs on the
device, equal to the loader's upsampling.

Randomness: patch ``i`` of epoch ``e`` is drawn with
``numpy.random.default_rng(SeedSequence([seed, stream, e, i]))``. Its content therefore
depends on neither the number of DataLoader workers nor the number of DDP ranks:
:class:`EpochPatchSampler` hands each rank a disjoint, strided share of the patch
indices ``e * N + i`` (``N`` = patches per epoch), so ranks and workers draw different
patches, and the union of an epoch's patches is the same on 1 or 8 GPUs.
:class:`EpochPatchSampler` subclasses ``DistributedSampler``, so Lightning keeps it
(rather than wrapping it) under DDP and calls its ``set_epoch`` every epoch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from icecontext.data.config import DataConfig
from icecontext.data.io.format import CHARTS
from icecontext.data.io.geometry import COARSE_KEYS, CoarseSlot
from icecontext.data.io.variables import split_coarse
from icecontext.data.loader.batching import TICKET_KEY, BatchAssembler, PatchLoader
from icecontext.data.loader.sampling import Patch, PatchSampler, SamplingSettings
from icecontext.data.loader.sources import NetCDFSource, SceneSource, store_sources
from icecontext.data.loader.splits import Splits, resolve_splits
from icecontext.data.store.prepare import collect_scene_files
from icecontext.data.store.prepared import PreparedStore
from icecontext.errors import ConfigError

Split = Literal["train", "val", "test"]

TRAIN_STREAM = 0
VAL_STREAM = 1


def patch_rng(seed: int, stream: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one patch (independent of workers and ranks)."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, epoch, index]))


def patch_to_tensors(patch: Patch) -> dict[str, torch.Tensor]:
    """Convert a :class:`~icecontext.data.loader.sampling.Patch` to tensors (charts stay uint8)."""
    out = {"x": torch.from_numpy(patch.x)}
    if patch.coarse is not None:
        out["coarse"] = torch.from_numpy(patch.coarse.block)
        out["coarse_index"] = torch.from_numpy(patch.coarse.index)
        out["coarse_weight"] = torch.from_numpy(patch.coarse.weight)
    for i, c in enumerate(CHARTS):
        out[c] = torch.from_numpy(patch.charts[i])
    out["scene"] = torch.tensor(patch.scene, dtype=torch.int64)
    out["window"] = torch.tensor(patch.window, dtype=torch.int64)
    t = patch.transform
    out["augment"] = torch.tensor([t.hflip, t.vflip, t.k], dtype=torch.int64)
    return out


def collate_patches(
    items: Sequence[dict[str, torch.Tensor]] | dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Stack patches into a batch (a batch that :class:`PatchDataset` built is kept as is).

    :meth:`PatchDataset.__getitems__` already returns whole batches, assembled in place
    (:mod:`icecontext.data.loader.batching`). Lists of single patches go through
    :func:`torch.utils.data.default_collate`, which in a loader worker stacks straight
    into shared memory. Charts stay uint8 with 255 as the mask: the losses take any
    integer dtype, and uint8 is 8x less to move between processes and to a GPU than
    int64.
    """
    if isinstance(items, dict):
        return items
    return default_collate(list(items))


class PatchDataset(Dataset[dict[str, torch.Tensor]]):
    """Map-style dataset of random patches; ``len`` = patches per epoch.

    Index ``k`` is patch ``k mod N`` of epoch ``k // N`` (``N = length``), so a sampler
    can move to the next epoch by offsetting indices (see :class:`EpochPatchSampler`);
    plain indices ``0..N-1`` give epoch 0.

    A ``DataLoader`` with a batch size fetches whole batches through
    :meth:`__getitems__`, which reads every patch straight into its slot of the batch,
    with ``threads`` threads; the result equals stacking :meth:`__getitem__` items.

    Args:
        sampler: The numpy patch sampler.
        length: Patches per epoch.
        seed: Base seed.
        stream: Separates independent streams with the same seed (train 0, val 1).
        threads: Threads reading the patches of a batch.
        coarse_on_device: Carry 2 km channels at 2 km (see the module docstring).
    """

    def __init__(
        self,
        sampler: PatchSampler,
        length: int,
        seed: int = 0,
        stream: int = 0,
        threads: int = 1,
        coarse_on_device: bool = False,
    ):
        if length < 1:
            raise ConfigError("data.patches_per_epoch", f"must be positive, got {length}")
        if threads < 1:
            raise ConfigError("data.threads", f"must be >= 1, got {threads}")
        self.sampler = sampler
        self.length = int(length)
        self.seed = int(seed)
        self.stream = int(stream)
        self.assembler = BatchAssembler(threads)
        on_2km = split_coarse(sampler.features)[1] if coarse_on_device else []
        # channels of "x" and of "coarse"
        self.channels = (len(sampler.features) - len(on_2km), len(on_2km))
        downsample = max(src.downsample for src in sampler.sources)
        self.cells = CoarseSlot.cells(sampler.settings.patch_size, downsample)

    def __len__(self) -> int:
        return self.length

    def _rng(self, key: int) -> np.random.Generator:
        epoch, index = divmod(int(key), self.length)
        return patch_rng(self.seed, self.stream, epoch, index)

    def _coarse_layout(self, n: int) -> dict[str, tuple[tuple[int, ...], Any]]:
        """The batch entries of the 2 km channels (none when they are upsampled here)."""
        channels, p, m = self.channels[1], self.sampler.settings.patch_size, self.cells
        if not channels:
            return {}
        return {
            "coarse": ((n, channels, m, m), np.float32),
            "coarse_index": ((n, 4, p), np.int64),
            "coarse_weight": ((n, 2, p), np.float32),
        }

    def __getitem__(self, key: int) -> dict[str, torch.Tensor]:
        arrays = {k: np.empty(s, dtype=d) for k, (s, d) in self._coarse_layout(1).items()}
        slot = CoarseSlot(*(arrays[k][0] for k in COARSE_KEYS)) if arrays else None
        return patch_to_tensors(self.sampler.draw(self._rng(key), coarse_out=slot))

    def __getitems__(self, keys: Sequence[int]) -> dict[str, torch.Tensor]:
        """The batch of patches ``keys``, assembled in place (see :func:`collate_patches`)."""
        n, p = len(keys), self.sampler.settings.patch_size
        layout = {
            "x": ((n, self.channels[0], p, p), np.float32),
            "charts": ((len(CHARTS), n, p, p), np.uint8),
            "scene": ((n,), np.int64),
            "window": ((n, 4), np.int64),
            "augment": ((n, 3), np.int64),
            **self._coarse_layout(n),
        }
        arrays, tensors, ticket = self.assembler.allocate(layout)
        x, charts = arrays["x"], arrays["charts"]
        coarse = "coarse" in layout

        def fill(i: int) -> None:
            slot = CoarseSlot(*(arrays[k][i] for k in COARSE_KEYS)) if coarse else None
            patch = self.sampler.draw(self._rng(keys[i]), out=x[i], coarse_out=slot)
            charts[:, i] = patch.charts
            t = patch.transform
            arrays["scene"][i] = patch.scene
            arrays["window"][i] = patch.window
            arrays["augment"][i] = (t.hflip, t.vflip, t.k)

        self.assembler.fill(fill, n)
        out = {"x": tensors["x"]}
        for j, c in enumerate(CHARTS):
            out[c] = tensors["charts"][j]
        for key in ("scene", "window", "augment", *(COARSE_KEYS if coarse else ())):
            out[key] = tensors[key]
        if ticket is not None:  # a worker's pooled slot: PatchLoader returns it
            out[TICKET_KEY] = ticket  # type: ignore[assignment]
        return out


class EpochPatchSampler(DistributedSampler):
    """Yields this rank's share of the patch indices of the current epoch.

    Rank ``r`` of ``R`` gets indices ``e * N + i`` for ``i = r, r + R, ...`` (padded by
    wrapping so every rank has ``ceil(N / R)``), in order. Call :meth:`set_epoch`
    (Lightning does) to move to the next epoch's patches.

    Args:
        length: Patches per epoch ``N``.
        num_replicas: Number of ranks.
        rank: This rank.
        fixed: Ignore the epoch (validation: the same patches every epoch).
    """

    def __init__(self, length: int, num_replicas: int = 1, rank: int = 0, fixed: bool = False):
        indices = cast("Dataset[int]", range(length))  # the sampler needs only its len()
        super().__init__(
            indices, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False
        )
        self.length = int(length)
        self.fixed = fixed
        self.start = 0  # this rank's samples to skip in the next iteration (resume)

    def __iter__(self) -> Iterator[int]:
        # read when iteration starts: after a resume set the epoch and the start
        offset = 0 if self.fixed else self.epoch * self.length
        start, self.start = self.start, 0
        for i in itertools.islice(super().__iter__(), start, None):
            yield offset + int(i)


class ResumableLoader(PatchLoader):
    """The training loader, with its place in the epoch saved in every checkpoint.

    Two things make a resumed run train on exactly the patches of an uninterrupted one,
    with or without worker processes:

    * Lightning stores :meth:`state_dict` in checkpoints and, for a run stopped
      mid-epoch, calls :meth:`load_state_dict` before training resumes: the batches
      already trained in the epoch being resumed are skipped.
    * The iterator starts on its first ``next()``, not when ``iter()`` is called:
      Lightning creates it before it sets the epoch of a resumed run, and worker
      processes draw their first patch indices as soon as it exists.

    Takes the arguments of :class:`~icecontext.data.loader.batching.PatchLoader`, with an
    :class:`EpochPatchSampler` as ``sampler``.
    """

    _epoch = 0  # the epoch being trained and the batches of it handed out (state_dict)
    _batches = 0
    _resume: tuple[int, int] | None = None  # (epoch, batches) to continue after

    def __iter__(self) -> Any:
        return _DeferredIterator(self)

    def _start(self) -> Any:
        """Create the real iterator at the sampler's current epoch and start."""
        sampler = self.sampler
        assert isinstance(sampler, EpochPatchSampler)
        if self._resume is not None:
            # skip only inside the epoch that was stopped: an epoch that ended early
            # (max_steps, max_minutes) is over, and Lightning has moved to the next
            epoch, batches = self._resume
            self._resume = None
            if sampler.epoch == epoch and batches < len(self):
                sampler.start = batches * (self.batch_size or 1)
        self._epoch = sampler.epoch
        self._batches = sampler.start // (self.batch_size or 1)
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        """The epoch being trained and the batches of it handed out so far."""
        return {"epoch": int(self._epoch), "batches": int(self._batches)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the batches a checkpoint recorded, if the run resumes that epoch.

        Lightning sets the epoch it resumes (before the first batch is drawn); the
        recorded batches are skipped only when it is the recorded epoch.
        """
        self._resume = (int(state["epoch"]), int(state["batches"]))


class _DeferredIterator:
    """Starts :class:`ResumableLoader`'s iterator on first use and counts its batches."""

    def __init__(self, owner: ResumableLoader) -> None:
        self._owner = owner
        self._inner: Any = None

    def __iter__(self) -> _DeferredIterator:
        return self

    def __next__(self) -> Any:
        if self._inner is None:
            self._inner = self._owner._start()
        batch = next(self._inner)
        self._owner._batches += 1
        return batch

    def __len__(self) -> int:
        return len(self._owner)

    def __getattr__(self, name: str) -> Any:  # only for names not set in __init__
        if self._inner is None:
            self._inner = self._owner._start()
        return getattr(self._inner, name)


# ----------------------------------------------------------------------------- scenes


class SceneCatalog:
    """Where scenes come from: a prepared store or a folder of NetCDF files.

    Args:
        cfg: The data section.
        root: Folder of NetCDF scenes (used when ``store`` is ``None``).
        store: Prepared store folder.
    """

    def __init__(self, cfg: DataConfig, root: Path | None = None, store: Path | None = None):
        self.cfg = cfg
        self.features = cfg.channels
        self.store: PreparedStore | None = None
        self.files: dict[str, Path] = {}
        if store is not None:
            self.store = PreparedStore(store)
            if self.store.manifest.downsample != cfg.downsample:
                raise ConfigError(
                    "data.downsample",
                    f"is {cfg.downsample} but the store {store} was prepared with "
                    f"--downsample {self.store.manifest.downsample}",
                )
            self.store.check_features(self.features)
            self.where = f"the store {store}"
        elif root is not None:
            self.files = collect_scene_files(root)
            self.where = f"the folder {root}"
        else:  # pragma: no cover - DataConfig requires one of them
            raise ConfigError("data.store", "set data.store or data.root")

    @property
    def names(self) -> list[str]:
        """Available scene names."""
        return self.store.names if self.store is not None else sorted(self.files)

    def open(self, names: Sequence[str]) -> list[SceneSource]:
        """Open sources for the given scenes (names must be available)."""
        up = self.cfg.upsampling
        if self.store is not None:
            return list(store_sources(self.store, names, up))
        return [NetCDFSource(self.files[n], self.features, self.cfg.downsample, up) for n in names]


class IceDataModule(pl.LightningDataModule):
    """Lightning DataModule: random training patches, fixed validation patches, scene lists.

    Full-scene validation and testing (tiled passes over whole scenes) use
    :meth:`sources`: the training code tiles each :class:`SceneSource` with
    ``read_inputs``/``read_charts``, the same geometry as the patches.

    Args:
        cfg: The data section.
        seed: Base seed of patch sampling.
    """

    def __init__(self, cfg: DataConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.seed = int(seed)
        self.features = cfg.channels
        self.splits: Splits | None = None
        self._sources: dict[str, list[SceneSource]] = {}
        self.train_sampler: PatchSampler | None = None
        self.val_sampler: PatchSampler | None = None

    @property
    def in_channels(self) -> int:
        """Number of input channels."""
        return len(self.features)

    def settings(self) -> SamplingSettings:
        """Sampling settings of training patches."""
        c = self.cfg
        return SamplingSettings(
            patch_size=c.patch_size,
            min_valid_fraction=c.min_valid_fraction,
            class_balance=tuple(c.class_balance),
            balance_power=c.balance_power,
            scene_weighting=c.scene_weighting,
            flip=c.augment.flip,
            rotate=c.augment.rotate,
            max_attempts=c.max_attempts,
        )

    def setup(self, stage: str | None = None) -> None:
        """Resolve the splits, open the sources and build the samplers (idempotent)."""
        if self.splits is None:
            c = self.cfg
            catalog = SceneCatalog(c, root=c.root, store=c.store)
            test_catalog = (
                SceneCatalog(c.model_copy(update={"store": None}), root=c.test_root)
                if c.test_root is not None
                else catalog
            )
            self.splits = resolve_splits(
                c.splits,
                catalog.names,
                catalog.where,
                test_available=test_catalog.names,
                test_where=test_catalog.where,
            )
            self._sources = {
                "train": catalog.open(self.splits.train),
                "val": catalog.open(self.splits.val),
                "test": test_catalog.open(self.splits.test),
            }
        if stage in (None, "fit") and self.train_sampler is None:
            self.train_sampler = PatchSampler(
                self._sources["train"], self.features, self.settings()
            )
        want_val = stage in (None, "fit", "validate") and self.val_sampler is None
        if want_val and self._sources["val"] and self.cfg.val_patches:
            plain = SamplingSettings(
                patch_size=self.cfg.patch_size,
                min_valid_fraction=self.cfg.min_valid_fraction,
                scene_weighting="uniform",
                flip=False,
                rotate=False,
                max_attempts=self.cfg.max_attempts,
            )
            self.val_sampler = PatchSampler(self._sources["val"], self.features, plain)

    def sources(self, split: Split) -> list[SceneSource]:
        """Full-scene sources of a split (after :meth:`setup`)."""
        if self.splits is None:
            self.setup(None)
        return self._sources[split]

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _dataset(self, sampler: PatchSampler, length: int, stream: int) -> PatchDataset:
        return PatchDataset(
            sampler,
            length,
            self.seed,
            stream,
            threads=self.cfg.num_threads,
            coarse_on_device=self.cfg.coarse_batches,
        )

    def _loader(
        self, dataset: Dataset[Any], sampler: Any, loader: type[PatchLoader] = PatchLoader
    ) -> DataLoader[Any]:
        workers = self.cfg.num_workers
        return loader(
            dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate_patches,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader[Any]:
        """Random, augmented patches; a new set every epoch (resumable mid-epoch)."""
        if self.train_sampler is None:
            self.setup("fit")
        assert self.train_sampler is not None
        dataset = self._dataset(self.train_sampler, self.cfg.patches_per_epoch, TRAIN_STREAM)
        rank, world = self._rank()
        sampler = EpochPatchSampler(len(dataset), world, rank)
        return self._loader(dataset, sampler, ResumableLoader)

    def val_dataloader(self) -> DataLoader[Any] | list[Any]:
        """The same ``val_patches`` patches every epoch (no augmentation); ``[]`` if none."""
        if self.val_sampler is None:
            self.setup("validate")
        if self.val_sampler is None:
            return []
        dataset = self._dataset(self.val_sampler, self.cfg.val_patches, VAL_STREAM)
        rank, world = self._rank()
        sampler = EpochPatchSampler(len(dataset), world, rank, fixed=True)
        return self._loader(dataset, sampler)

    def state_dict(self) -> dict[str, Any]:
        """Record the resolved splits in checkpoints."""
        if self.splits is None:
            return {}
        return {k: list(getattr(self.splits, k)) for k in ("train", "val", "test")}


def steps_per_epoch(cfg: DataConfig, world_size: int = 1) -> int:
    """Optimizer steps per epoch on each rank."""
    return math.ceil(math.ceil(cfg.patches_per_epoch / world_size) / cfg.batch_size)
