"""What a training step costs beyond the network: batch bytes, compilation, host reads."""

from __future__ import annotations

import functools
import logging
import os
import sys

import lightning.pytorch as pl
import torch

from icecontext.inference.checkpoint import model_state_dict, read_checkpoint
from icecontext.run.config import RunConfig
from icecontext.training.fit import resolve_coarse_on_device, resolve_compile, train


def _config(tiny_store, tiny_config, root, **trainer) -> RunConfig:
    return RunConfig.model_validate(
        tiny_config(
            tiny_store,
            root,
            train={"max_epochs": 1},
            trainer={"precision": "32", **trainer},
        )
    )


def test_2km_batches_are_on_for_gpus_unless_set(tiny_store, tiny_config, tmp_path):
    def cfg(value):
        data = {"coarse_on_device": value}
        return RunConfig.model_validate(tiny_config(tiny_store, tmp_path, data=data))

    assert resolve_coarse_on_device(cfg("auto"), "gpu")
    assert not resolve_coarse_on_device(cfg("auto"), "cpu")
    assert resolve_coarse_on_device(cfg(True), "cpu")
    assert not resolve_coarse_on_device(cfg(False), "gpu")


def test_2km_batches_train_the_weights_of_upsampled_ones(tiny_store, tiny_config, tmp_path):
    """The tiny store's AMSR2 18.7 GHz channels travel at 2 km; the step rebuilds them
    exactly, so the run ends with the same weights, bit for bit."""
    runs = {}
    for on in (False, True):
        cfg = RunConfig.model_validate(
            tiny_config(
                tiny_store,
                tmp_path / str(on),
                data={"coarse_on_device": on},
                train={"max_epochs": 1},
                trainer={"precision": "32"},
            )
        )
        runs[on] = model_state_dict(read_checkpoint(train(cfg).last_checkpoint))
    assert all(torch.equal(runs[False][k], runs[True][k]) for k in runs[False])


def test_compile_is_on_for_gpus_unless_set(tiny_store, tiny_config, tmp_path):
    cfg = _config(tiny_store, tiny_config, tmp_path)
    assert resolve_compile(cfg, "gpu") and not resolve_compile(cfg, "cpu")
    assert resolve_compile(_config(tiny_store, tiny_config, tmp_path, compile=True), "cpu")
    assert not resolve_compile(_config(tiny_store, tiny_config, tmp_path, compile=False), "gpu")


def test_compiled_steps_train_the_same_weights(tiny_store, tiny_config, tmp_path, monkeypatch):
    """The compiled view shares the network's parameters: the run trains (and saves) the
    weights an eager run trains. Dynamo traces the network here; its ``eager`` backend
    stands in for Inductor, which would compile C++ for minutes on a CPU."""
    traced: list[torch.nn.Module] = []
    real_compile = torch.compile

    def compile_eagerly(model):
        traced.append(model)
        return real_compile(model, backend="eager")

    eager = train(_config(tiny_store, tiny_config, tmp_path / "eager"))
    monkeypatch.setattr("icecontext.training.module.torch.compile", compile_eagerly)
    compiled = train(_config(tiny_store, tiny_config, tmp_path / "compiled", compile=True))
    assert len(traced) == 1
    a, b = (read_checkpoint(r.last_checkpoint) for r in (eager, compiled))
    wa, wb = model_state_dict(a), model_state_dict(b)
    assert wa.keys() == wb.keys() and not any("_orig_mod" in k for k in wb)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_a_failed_compile_is_reported_and_training_goes_on_eagerly(
    tiny_store, tiny_config, tmp_path, monkeypatch, caplog
):
    def broken(model):
        def forward(x):
            raise RuntimeError("no C++ compiler found\nmore detail")

        return forward

    monkeypatch.setattr("icecontext.training.module.torch.compile", broken)
    with caplog.at_level(logging.WARNING, logger="icecontext"):
        result = train(_config(tiny_store, tiny_config, tmp_path, compile=True))
    assert result.steps == 4
    said = [r.getMessage() for r in caplog.records if "trainer.compile" in r.getMessage()]
    assert len(said) == 1  # once, not every step
    assert "torch.compile failed (RuntimeError: no C++ compiler found)" in said[0]


class _HostReads(pl.Callback):
    """Counts reads of tensor values back to the host during each training step.

    Reads by ``torch.optim`` and ``torch.utils.data`` are not counted: they read tensors
    that live on the host on a GPU too (Adam's step counters, the loader's seed).
    """

    NAMES = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")
    HOST_SIDE = (f"torch{os.sep}optim{os.sep}", f"torch{os.sep}utils{os.sep}data{os.sep}")

    def __init__(self) -> None:
        self.per_step: list[int] = []
        self.counting = False
        self._originals = {name: getattr(torch.Tensor, name) for name in self.NAMES}

    def _count(self, original):
        @functools.wraps(original)
        def counted(tensor, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if self.counting and not any(part in caller for part in self.HOST_SIDE):
                self.per_step[-1] += 1
            return original(tensor, *args, **kwargs)

        return counted

    def patch(self) -> None:
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, self._count(original))

    def restore(self) -> None:
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.per_step.append(0)
        self.counting = True

    def on_validation_start(self, trainer, pl_module):
        self.counting = False


def test_steps_between_logging_steps_read_nothing_back_to_the_host(
    tiny_store, tiny_config, tmp_path
):
    """With the progress bar on (the default), a step leaves the losses on the device;
    only every ``log_every_n_steps``-th step reads them back (a GPU would wait there)."""
    cfg = RunConfig.model_validate(
        tiny_config(
            tiny_store,
            tmp_path,
            data={"patches_per_epoch": 32},
            train={"max_epochs": 1, "progress_bar": True, "log_every_n_steps": 4},
            trainer={"precision": "32"},
        )
    )
    reads = _HostReads()
    reads.patch()
    try:
        train(cfg, callbacks=[reads])
    finally:
        reads.restore()
    assert len(reads.per_step) == 8
    # steps 4 and 8 log (and the bar shows the loss); the six others read nothing
    assert [n > 0 for n in reads.per_step] == [False, False, False, True] * 2, reads.per_step
