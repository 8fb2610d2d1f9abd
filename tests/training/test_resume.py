"""Kill or stop a training run, resume it, and compare with an uninterrupted one.

The resumed run must end with exactly the weights, optimiser step and validation scores
of an uninterrupted run with the same seed (CPU, deterministic algorithms, one thread),
with or without loader workers. SIGTERM and SIGINT stop a run at the next step with a
resumable checkpoint, and the run resumed mid-epoch is exact too. One reference run
serves a killed and a signalled run: each training process costs about 6 s of imports.
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


def _start(config, **streams) -> subprocess.Popen:
    return subprocess.Popen(_cmd(config), env=_env(), text=True, **streams)


def _interrupt_after_first_checkpoint(victims: dict) -> None:
    """Send each victim its signal as soon as its first ``last.ckpt`` exists.

    ``victims`` maps ``(process, last_checkpoint)`` to a signal; both are watched in one
    loop so neither runs far past its first epoch before it is hit.
    """
    pending = dict(victims)
    deadline = time.monotonic() + 300
    while pending:
        for (proc, last), signum in list(pending.items()):
            assert proc.poll() is None, f"{last.parent.parent.name} ended before a checkpoint"
            if last.exists():
                proc.send_signal(signum)
                del pending[(proc, last)]
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.02)


def _same_weights(a, b) -> bool:
    wa, wb = model_state_dict(a), model_state_dict(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize(
    ("workers", "signum", "status"), [(0, signal.SIGINT, 130), (2, signal.SIGTERM, 143)]
)
def test_killed_and_signalled_runs_resume_to_the_uninterrupted_run(
    workers, signum, status, tiny_store, tiny_config, write_config, tmp_path
):
    """Three runs of one config start together: the reference, one killed with SIGKILL
    after its first checkpoint (it resumes from the end of an epoch) and one stopped by a
    signal (SIGINT, Ctrl+C, or SIGTERM from a scheduler: it saves a checkpoint at the next
    step and resumes mid-epoch). Both resumed runs must end with the reference's weights,
    with and without loader workers: workers draw their first patch indices when the
    resumed run creates its iterator, so the loader's restored place must be set before."""
    configs = {
        name: write_config(
            tmp_path / f"{name}.yaml",
            tiny_config(
                tiny_store, tmp_path, name, train={"max_epochs": 4}, data={"workers": workers}
            ),
        )
        for name in ("full", "kill", "stop")
    }
    kill_last, stop_last = (
        tmp_path / name / "checkpoints" / "last.ckpt" for name in ("kill", "stop")
    )
    full = _start(configs["full"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    killed = _start(configs["kill"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stopped = _start(configs["stop"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _interrupt_after_first_checkpoint(
        {(killed, kill_last): signal.SIGKILL, (stopped, stop_last): signum}
    )
    assert killed.wait(timeout=60) == -signal.SIGKILL
    assert read_checkpoint(kill_last)["epoch"] < 3  # really interrupted
    out, err = stopped.communicate(timeout=120)
    assert stopped.returncode == status, out[-2000:] + err[-2000:]
    assert f"interrupted by {signal.Signals(signum).name}; saved {stop_last}" in err
    assert "run the same command again to resume" in err and "Traceback" not in err
    at_stop = read_checkpoint(stop_last)
    step = at_stop["global_step"]
    assert step > 4  # written after the signal, not the epoch-0 checkpoint
    if step % 4:  # mid-epoch: the loader recorded its place
        assert at_stop["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
            {"epoch": at_stop["epoch"], "batches": step % 4}
        ]

    resumed = {
        name: _start(configs[name], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name in ("kill", "stop")
    }
    outputs = {name: proc.communicate(timeout=600) for name, proc in resumed.items()}
    for name, proc in resumed.items():
        assert proc.returncode == 0, outputs[name][0][-3000:] + outputs[name][1][-3000:]
    assert "resumed from:" in outputs["kill"][0]
    resuming = f"resuming from {stop_last} at epoch {at_stop['epoch']}, step {step}"
    assert resuming in outputs["stop"][1]
    out, _ = full.communicate(timeout=600)
    assert full.returncode == 0, out[-3000:]

    reference = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")
    metrics = {
        name: json.loads((tmp_path / name / "metrics.json").read_text())
        for name in ("full", "kill", "stop")
    }
    for last in (kill_last, stop_last):
        end = read_checkpoint(last)
        assert reference["global_step"] == end["global_step"] == 16
        assert _same_weights(reference, end), f"weights differ after resume ({last})"
        assert reference["icecontext"]["scores"] == end["icecontext"]["scores"]
    for name in ("kill", "stop"):
        assert metrics[name]["best_score"] == metrics["full"]["best_score"]
        assert metrics[name]["best_epoch"] == metrics["full"]["best_epoch"]
        assert metrics[name]["resumed_from"]
    assert not metrics["full"]["resumed_from"]
    # the killed run kept the log of its first segment and drew complete curves
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


def test_a_corrupted_resume_checkpoint_is_named_without_a_traceback(
    tiny_store, tiny_config, write_config, tmp_path, capsys
):
    from icecontext.cli.main import main

    cfg = write_config(tmp_path / "c.yaml", tiny_config(tiny_store, tmp_path, "c"))
    last = tmp_path / "c" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 not a checkpoint")
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{last}: the run's resume checkpoint cannot be read" in err
    assert "delete it to train the run from its start" in err
    assert "Traceback" not in err


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
