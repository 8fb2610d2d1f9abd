"""Two-process DDP on CPU (gloo): ranks train on different samples, end with equal weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from icecontext.inference.checkpoint import load_checkpoint, model_state_dict, read_checkpoint
from icecontext.training.module import weights_digest


def test_two_process_ddp_on_cpu(tiny_store, tiny_config, write_config, tmp_path):
    cfg = tiny_config(
        tiny_store,
        tmp_path,
        "ddp",
        train={"max_epochs": 2, "record_samples": True},
        trainer={"accelerator": "cpu", "devices": 2, "strategy": "ddp", "threads": 1},
    )
    path = write_config(tmp_path / "ddp.yaml", cfg)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for key in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, "-m", "icecontext.cli.main", "train", "--config", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / "ddp" / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # 16 patches per epoch split over 2 ranks: 8 each per epoch, 2 steps of 4
    assert [len(r["samples"]) for r in ranks] == [16, 16]
    assert [r["global_step"] for r in ranks] == [4, 4]
    assert not set(ranks[0]["samples"]) & set(ranks[1]["samples"]), "ranks saw the same patches"
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    # the saved model is the synchronised one
    ckpt = read_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.ckpt")
    model = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.ckpt").model
    assert ckpt["global_step"] == 4
    assert weights_digest(model) == ranks[0]["weights_sha256"]
    state = model_state_dict(ckpt)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
