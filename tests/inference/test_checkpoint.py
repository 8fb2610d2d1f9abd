"""Checkpoints rebuild their model on the meta device, in float32, in the saved layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from icecontext.errors import DataError
from icecontext.inference.checkpoint import load_checkpoint
from icecontext.inference.predictor import uses_channels_last
from tiny_checkpoint import save_tiny_checkpoint


def _rewrite(path: Path, change) -> None:
    ckpt = torch.load(path, weights_only=False)
    ckpt["state_dict"] = {k: change(v) for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, path)


def test_weights_saved_in_bf16_load_as_float32(tmp_path):
    path = save_tiny_checkpoint(tmp_path / "best.ckpt")
    reference = load_checkpoint(path).model
    _rewrite(path, lambda v: v.to(torch.bfloat16) if v.is_floating_point() else v)
    model = load_checkpoint(path).model
    assert all(p.dtype == torch.float32 for p in model.parameters())
    saved = model.state_dict()
    for name, a in reference.state_dict().items():
        if a.is_floating_point():
            torch.testing.assert_close(saved[name], a.bfloat16().float(), msg=name)


def test_a_channels_last_checkpoint_loads_channels_last(tmp_path):
    path = save_tiny_checkpoint(tmp_path / "best.ckpt")
    assert not uses_channels_last(load_checkpoint(path).model)
    _rewrite(path, lambda v: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v)
    assert uses_channels_last(load_checkpoint(path).model)


def test_a_missing_weight_is_named(tmp_path):
    path = save_tiny_checkpoint(tmp_path / "best.ckpt")
    ckpt = torch.load(path, weights_only=False)
    name = next(iter(ckpt["state_dict"]))
    del ckpt["state_dict"][name]
    torch.save(ckpt, path)
    with pytest.raises(DataError, match=name.removeprefix("model.")):
        load_checkpoint(path)
