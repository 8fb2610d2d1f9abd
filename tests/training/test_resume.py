"""Kill or stop a training run, resume it, and compare with an uninterrupted one.

The resumed run must end with exactly the weights, optimiser step and validation scores
of an uninterrupted run with the same seed (CPU, deterministic algorithms, one thread),
with or without loader workers. SIGTERM and SIGINT stop a run at the next step with a
resumable checkpoint, and the run resumed mid-epoch is exact too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from icecontext.inference.checkpoint import model_state_dict, read_checkpoint


def _cmd(config):
    return [sys.executable, "-m", "icecontext.cli.main", "train", "--config", str(config)]


def _env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    return env


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_sigkill_matches_uninterrupted_run(
    workers, tiny_store, tiny_config, write_config, tmp_path
):
    """With loader workers too: they draw their first patch indices when the resumed
    run creates its iterator, so the loader's restored epoch must be set before."""
    epochs = {"max_epochs": 4}
    full_cfg, kill_cfg = (
        write_config(
            tmp_path / f"{name}.yaml",
            tiny_config(tiny_store, tmp_path, name, train=epochs, data={"workers": workers}),
        )
        for name in ("full", "kill")
    )
    # both runs start together (two cores): the reference run and the one to kill
    full = subprocess.Popen(
        _cmd(full_cfg), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    victim = subprocess.Popen(
        _cmd(kill_cfg), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = tmp_path / "kill" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists():
        assert victim.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    killed_at = read_checkpoint(last)
    assert killed_at["epoch"] < epochs["max_epochs"] - 1  # really interrupted

    resumed = subprocess.run(
        _cmd(kill_cfg), env=_env(), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from:" in resumed.stdout
    out, _ = full.communicate(timeout=600)
    assert full.returncode == 0, out[-3000:]

    a = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")
    b = read_checkpoint(tmp_path / "kill" / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 16
    wa, wb = model_state_dict(a), model_state_dict(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ after resume"
    assert a["icecontext"]["scores"] == b["icecontext"]["scores"]
    sa = json.loads((tmp_path / "full" / "metrics.json").read_text())
    sb = json.loads((tmp_path / "kill" / "metrics.json").read_text())
    assert sa["best_score"] == sb["best_score"] and sa["best_epoch"] == sb["best_epoch"]
    assert sb["resumed_from"] and not sa["resumed_from"]
    # the resumed run kept the log of its first segment and drew complete curves
    assert list((tmp_path / "kill" / "logs" / "csv_previous").glob("part-*.csv"))
    assert (tmp_path / "kill" / "curves.png").is_file()


@pytest.mark.parametrize("tmp", [None])
def test_read_metrics_joins_segments(tmp, tmp_path):
    import pandas as pd

    from icecontext.run.rundir import RunDir
    from icecontext.training.plots import read_metrics

    run = RunDir(tmp_path)
    (tmp_path / "logs" / "csv_previous").mkdir(parents=True)
    (tmp_path / "logs" / "csv").mkdir(parents=True)
    pd.DataFrame({"step": [0, 1, 2, 3], "x": [0, 1, 2, 3]}).to_csv(
        tmp_path / "logs" / "csv_previous" / "part-000.csv", index=False
    )
    pd.DataFrame({"step": [2, 3, 4], "x": [20, 30, 40]}).to_csv(
        tmp_path / "logs" / "csv" / "metrics.csv", index=False
    )
    df = read_metrics(run)
    assert df["step"].tolist() == [0, 1, 2, 3, 4]
    assert df["x"].tolist() == [0, 1, 20, 30, 40]


def test_read_metrics_skips_a_log_cut_by_a_kill(tmp_path):
    """SIGKILL during the logger's rewrite left an empty or truncated metrics.csv, and the
    resumed run then drew no curves (seen in the kill-and-resume test)."""
    import pandas as pd

    from icecontext.run.rundir import RunDir
    from icecontext.training.plots import plot_training_curves, read_metrics

    run = RunDir(tmp_path)
    previous = tmp_path / "logs" / "csv_previous"
    previous.mkdir(parents=True)
    (tmp_path / "logs" / "csv").mkdir(parents=True)
    (previous / "part-000.csv").write_text("")  # killed before the header was written
    (previous / "part-001.csv").write_text("step,x\n0,1\n1,2\n2,3,9,9\n")  # cut mid-row
    pd.DataFrame({"step": [2, 3], "x": [20, 30]}).to_csv(
        tmp_path / "logs" / "csv" / "metrics.csv", index=False
    )
    df = read_metrics(run)
    assert df["step"].tolist() == [0, 1, 2, 3] and df["x"].tolist() == [1, 2, 20, 30]
    assert plot_training_curves(run, tmp_path / "curves.png").is_file()


@pytest.mark.parametrize(
    ("signum", "status", "workers"), [(signal.SIGTERM, 143, 2), (signal.SIGINT, 130, 0)]
)
def test_a_signal_stops_at_the_next_step_and_the_run_resumes_exactly(
    signum, status, workers, tiny_store, tiny_config, write_config, tmp_path
):
    """SIGTERM (schedulers) and SIGINT (Ctrl+C): a checkpoint at the next step, the exit
    status of a signal, a message saying how to resume; the run resumed mid-epoch equals
    an uninterrupted one, with and without loader workers."""
    full_cfg, stop_cfg = (
        write_config(
            tmp_path / f"{name}.yaml",
            tiny_config(
                tiny_store, tmp_path, name, train={"max_epochs": 4}, data={"workers": workers}
            ),
        )
        for name in ("full", "stop")
    )
    full = subprocess.Popen(
        _cmd(full_cfg), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    victim = subprocess.Popen(
        _cmd(stop_cfg), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    last = tmp_path / "stop" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists():  # end of epoch 0: the signal lands in epoch 1 or later
        assert victim.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.02)
    victim.send_signal(signum)
    out, err = victim.communicate(timeout=120)
    assert victim.returncode == status, out[-2000:] + err[-2000:]
    name = signal.Signals(signum).name
    assert f"interrupted by {name}; saved {last}" in err
    assert "run the same command again to resume" in err and "Traceback" not in err
    stopped = read_checkpoint(last)
    assert stopped["global_step"] > 4  # written after the signal, not the epoch-0 checkpoint
    if stopped["global_step"] % 4:  # mid-epoch: the loader recorded its place
        assert stopped["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
            {"epoch": stopped["epoch"], "batches": stopped["global_step"] % 4}
        ]

    resumed = subprocess.run(
        _cmd(stop_cfg), env=_env(), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    step = stopped["global_step"]
    assert f"resuming from {last} at epoch {stopped['epoch']}, step {step}" in resumed.stderr
    assert full.wait(timeout=600) == 0
    a = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")
    b = read_checkpoint(last)
    assert a["global_step"] == b["global_step"] == 16
    wa, wb = model_state_dict(a), model_state_dict(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ after resume"


def test_a_corrupted_resume_checkpoint_is_named_without_a_traceback(
    tiny_store, tiny_config, write_config, tmp_path
):
    cfg = write_config(tmp_path / "c.yaml", tiny_config(tiny_store, tmp_path, "c"))
    last = tmp_path / "c" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 not a checkpoint")
    done = subprocess.run(_cmd(cfg), env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert f"{last}: the run's resume checkpoint cannot be read" in done.stderr
    assert "delete it to train the run from its start" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_signal_stops_only_after_an_optimizer_step_and_not_before_validation(tmp_path):
    """Accumulated gradients of a partial window are in no checkpoint, and the epoch's
    last batch is followed by its validation: neither is a place to stop."""
    from types import SimpleNamespace

    from icecontext.errors import Interrupted
    from icecontext.training.callbacks import StopOnSignal

    saved = []
    trainer = SimpleNamespace(
        num_training_batches=8, accumulate_grad_batches=2, world_size=1, loggers=[],
        current_epoch=0, global_step=0, save_checkpoint=saved.append,
    )  # fmt: skip
    stopper = StopOnSignal(tmp_path / "last.ckpt")
    stopper.on_train_batch_end(trainer, None, None, None, 2)  # no signal: nothing
    stopper.received = signal.SIGTERM
    stopper.on_train_batch_end(trainer, None, None, None, 2)  # mid-window: go on
    stopper.on_train_batch_end(trainer, None, None, None, 7)  # last batch: validate first
    assert saved == []
    with pytest.raises(Interrupted) as caught:
        stopper.on_train_epoch_end(trainer, None)
    assert saved == [tmp_path / "last.ckpt"] and caught.value.exit_status == 143
    with pytest.raises(Interrupted):
        stopper.on_train_batch_end(trainer, None, None, None, 3)  # after a step: stop
