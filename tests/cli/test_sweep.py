"""``icecontext sweep``: kill and restart, shards, locks against duplicates, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from icecontext.cli.main import main
from icecontext.errors import Interrupted
from icecontext.experiments.grid import load_study
from icecontext.experiments.sweep import DONE_MARKER, SweepOptions, SweepRunner
from icecontext.testing import tiny_run_config, write_tiny_store


@pytest.fixture(scope="session")
def study_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three labelled 160 x 170 scenes prepared with SAR and AMSR2 18.7 GHz (read-only)."""
    return write_tiny_store(tmp_path_factory.mktemp("study-store"))


def tiny_study(store: Path, *, rates=((1,), (2,)), seeds=(0,), epochs=2, **study) -> dict:
    """A study mapping whose runs train in seconds on CPU (4 steps per epoch)."""
    return {
        "study": {
            "name": "tiny",
            "axes": {
                "rates": [list(r) for r in rates],
                "features": {"sar": ["sar"]},
                "seeds": list(seeds),
            },
            **study,
        },
        **tiny_run_config(
            store,
            seed=0,
            train={"max_epochs": epochs},
            trainer={"accelerator": "cpu", "threads": 1},
        ),
    }


@pytest.fixture(scope="session")
def write_study():
    """``write_study(path, mapping)`` writes a study config and returns its path."""

    def write(path: Path, data: dict) -> Path:
        path.write_text(yaml.safe_dump(data))
        return path

    return write


@pytest.fixture(scope="session")
def make_study():
    """``make_study(store, **kwargs)`` -> tiny study mapping (see :func:`tiny_study`)."""
    return tiny_study


def _sweep(config: Path, runs: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "icecontext.cli.main",
        "sweep",
        "--config",
        str(config),
        "--runs-dir",
        str(runs),
        *extra,
    ]


def _attempts(runs: Path, run_id: str) -> int:
    """Training processes started for a run (one header line each in its log)."""
    log = runs / ".sweep" / "logs" / f"{run_id}.log"
    return log.read_text().count("\n=== ") if log.exists() else 0


def test_killed_sweep_restarts_without_retraining_finished_runs(
    study_store, make_study, write_study, tmp_path
):
    cfg = write_study(tmp_path / "s.yaml", make_study(study_store, rates=((1,), (2,)), epochs=3))
    runs = tmp_path / "runs"
    first, second = runs / "r1_f-sar_s0", runs / "r2_f-sar_s0"
    proc = subprocess.Popen(_sweep(cfg, runs), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    # kill the sweep once the first run is finished and the second has a checkpoint
    while not (second / "checkpoints" / "last.ckpt").exists():
        assert proc.poll() is None, "the sweep ended before the second run's first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint of the second run after 300 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert (first / DONE_MARKER).is_file() and not (second / DONE_MARKER).exists()
    done_at = (first / DONE_MARKER).stat().st_mtime_ns
    ckpt_at = (first / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    lock = json.loads((runs / ".sweep" / "locks" / "r2_f-sar_s0.lock").read_text())
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):  # the training child died with the sweep
        os.kill(lock["pid"], 0)

    again = subprocess.run(_sweep(cfg, runs), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "skipped-done   r1_f-sar_s0" in again.stdout
    assert "resume r2_f-sar_s0" in again.stdout
    assert "1 trained, 1 already done" in again.stdout
    # the finished run was not touched, the killed one completed
    assert (first / DONE_MARKER).stat().st_mtime_ns == done_at
    assert (first / "checkpoints" / "last.ckpt").stat().st_mtime_ns == ckpt_at
    assert _attempts(runs, "r1_f-sar_s0") == 1 and _attempts(runs, "r2_f-sar_s0") == 2
    for run in ("r1_f-sar_s0", "r2_f-sar_s0"):
        assert (runs / run / DONE_MARKER).is_file()
        ckpt = torch.load(runs / run / "checkpoints" / "last.ckpt", weights_only=False)
        assert ckpt["global_step"] == 12  # 3 epochs x 4 steps, also for the resumed run
    resumed = json.loads((second / "metrics.json").read_text())
    assert resumed["resumed_from"]
    assert not list((runs / ".sweep" / "locks").glob("r*.lock"))  # all released


def test_two_shards_complete_every_run_exactly_once(study_store, make_study, write_study, tmp_path):
    """Two sweep processes, one shard each, with the real trainer (one run each: how a
    grid is dealt to shards is tested in tests/experiments/test_grid.py, and locks
    against duplicates with a fake trainer below)."""
    cfg = write_study(
        tmp_path / "s.yaml", make_study(study_store, rates=((1,),), seeds=(0, 1), epochs=1)
    )
    runs = tmp_path / "runs"
    procs = [
        subprocess.Popen(
            _sweep(cfg, runs, "--shard", f"{i}/2"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in (1, 2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for run in ("r1_f-sar_s0", "r1_f-sar_s1"):
        assert (runs / run / DONE_MARKER).is_file()
        assert _attempts(runs, run) == 1
    assert "trained        r1_f-sar_s0" in outs[0] and "r1_f-sar_s1" not in outs[0]
    assert "trained        r1_f-sar_s1" in outs[1] and "r1_f-sar_s0" not in outs[1]


FAKE_TRAIN = textwrap.dedent(
    """
    import json, os, sys, time, yaml
    from pathlib import Path
    cfg = yaml.safe_load(Path(sys.argv[sys.argv.index("--config") + 1]).read_text())
    run_id = cfg["output"]["name"]
    with open(os.environ["FAKE_COUNTS"], "a") as f:
        f.write(run_id + "\\n")
    if os.environ.get("FAKE_WAIT"):  # a long run that saves and exits 143 on SIGTERM
        import signal
        def stop(signum, frame):
            with open(os.environ["FAKE_WAIT"], "a") as f:
                f.write(run_id + "\\n")
            sys.exit(143)
        signal.signal(signal.SIGTERM, stop)
        time.sleep(60)
        sys.exit(5)
    time.sleep(0.3)
    if run_id == os.environ.get("FAKE_FAIL"):
        sys.exit(3)
    run = Path(cfg["output"]["root"]) / run_id
    scores = {"SIC": 1.0, "SOD": 2.0, "FLOE": 3.0, "combined": 2.0}
    (run / "metrics.json").write_text(json.dumps({"last_scores": scores, "steps": 1}))
    """
)


def _fake_runner(cfg: Path, runs: Path, tmp_path: Path, **kw) -> SweepRunner:
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    lines: list[str] = []
    options = SweepOptions(train_command=(sys.executable, str(script)), **kw)
    runner = SweepRunner(load_study(cfg), runs, options, log=lines.append)
    runner.lines = lines  # type: ignore[attr-defined]
    return runner


def test_processes_given_the_same_shard_do_not_duplicate_runs(
    study_store, make_study, write_study, tmp_path, monkeypatch
):
    cfg = write_study(
        tmp_path / "s.yaml",
        make_study(study_store, rates=((1,), (2,), (3,)), seeds=(0, 1, 2)),
    )
    runs = tmp_path / "runs"
    counts = tmp_path / "counts.txt"
    monkeypatch.setenv("FAKE_COUNTS", str(counts))
    runners = [_fake_runner(cfg, runs, tmp_path, jobs=2) for _ in range(2)]
    summaries = [None, None]

    def go(i: int) -> None:
        summaries[i] = runners[i].run()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    started = counts.read_text().split()
    assert sorted(started) == sorted(set(started)) and len(started) == 9
    assert sum(s.count("trained") for s in summaries) == 9
    # a third pass finds everything done and trains nothing
    third = _fake_runner(cfg, runs, tmp_path).run()
    assert third.count("skipped-done") == 9 and len(counts.read_text().split()) == 9


def test_a_failed_run_is_recorded_and_the_sweep_goes_on(
    study_store, make_study, write_study, tmp_path, monkeypatch
):
    cfg = write_study(tmp_path / "s.yaml", make_study(study_store, rates=((1,), (2,), (3,))))
    runs = tmp_path / "runs"
    monkeypatch.setenv("FAKE_COUNTS", str(tmp_path / "counts.txt"))
    monkeypatch.setenv("FAKE_FAIL", "r2_f-sar_s0")
    runner = _fake_runner(cfg, runs, tmp_path)
    summary = runner.run()
    assert summary.failed == ["r2_f-sar_s0"]
    assert summary.count("trained") == 2
    failed = json.loads((runs / ".sweep" / "failed" / "r2_f-sar_s0.json").read_text())
    assert failed["rc"] == 3
    assert any("failed" in line and "r2_f-sar_s0" in line for line in runner.lines)
    # the next sweep retries only the failed run; success clears the failure record
    monkeypatch.delenv("FAKE_FAIL")
    again = _fake_runner(cfg, runs, tmp_path).run()
    assert again.count("trained") == 1 and again.count("skipped-done") == 2
    assert not (runs / ".sweep" / "failed" / "r2_f-sar_s0.json").exists()


def test_cli_exit_status_and_dry_run(study_store, make_study, write_study, tmp_path, capsys):
    study = make_study(study_store, rates=((1,),), epochs=1)
    # amsr2:36.5 is not in the store: that run fails inside training, the other succeeds
    study["study"]["axes"]["features"] = {"sar": ["sar"], "bad": ["sar", "amsr2:36.5"]}
    cfg = write_study(tmp_path / "s.yaml", study)
    runs = tmp_path / "runs"
    assert main(["sweep", "--config", str(cfg), "--runs-dir", str(runs), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 runs in shard 1/1" in out and "pending  r1_f-sar_s0" in out
    assert not runs.exists() or not list(runs.glob("r*"))  # a dry run trains nothing
    assert main(["sweep", "--config", str(cfg), "--runs-dir", str(runs)]) == 1
    out = capsys.readouterr().out
    assert "failed runs: r1_f-bad_s0" in out
    assert (runs / "r1_f-sar_s0" / DONE_MARKER).is_file()
    main(["sweep", "--config", str(cfg), "--runs-dir", str(runs), "--dry-run"])
    out = capsys.readouterr().out
    assert "done     r1_f-sar_s0" in out and "failed   r1_f-bad_s0" in out


def test_bad_jobs_and_shard_name_the_flag(study_store, make_study, write_study, tmp_path, capsys):
    cfg = write_study(tmp_path / "s.yaml", make_study(study_store))
    assert main(["sweep", "--config", str(cfg), "--shard", "3/2", "--dry-run"]) != 0
    assert "--shard" in capsys.readouterr().err
    assert main(["sweep", "--config", str(cfg), "--jobs", "0", "--dry-run"]) != 0
    assert "--jobs" in capsys.readouterr().err


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_sweep_and_its_runs_and_the_same_command_continues(
    signum, status, study_store, make_study, write_study, tmp_path, monkeypatch
):
    cfg = write_study(tmp_path / "s.yaml", make_study(study_store, rates=((1,), (2,), (3,))))
    runs = tmp_path / "runs"
    stopped = tmp_path / "stopped.txt"
    monkeypatch.setenv("FAKE_COUNTS", str(tmp_path / "counts.txt"))
    monkeypatch.setenv("FAKE_WAIT", str(stopped))
    runner = _fake_runner(cfg, runs, tmp_path, jobs=2)
    before = signal.getsignal(signum)
    timer = threading.Timer(3.0, os.kill, (os.getpid(), signum))
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(Interrupted) as caught:
        runner.run()
    timer.join()
    assert time.monotonic() - t0 < 30  # the runs did not sleep their 60 s
    assert caught.value.exit_status == status
    assert "run the same command again to resume" in str(caught.value)
    # the two running runs got SIGTERM (whatever the sweep received); the third never started
    assert sorted(stopped.read_text().split()) == ["r1_f-sar_s0", "r2_f-sar_s0"]
    assert sorted((tmp_path / "counts.txt").read_text().split()) == sorted(
        stopped.read_text().split()
    )
    assert not (runs / ".sweep" / "failed").exists() or not list(
        (runs / ".sweep" / "failed").iterdir()
    )
    assert any("stopping the running runs" in line for line in runner.lines)
    assert signal.getsignal(signum) is before  # the sweep's handler is gone again
    # the same sweep again trains all three
    monkeypatch.delenv("FAKE_WAIT")
    again = _fake_runner(cfg, runs, tmp_path).run()
    assert again.count("trained") == 3


def test_slurm_launcher_runs_a_grid_as_an_array_with_submitits_local_executor(
    study_store, make_study, write_study, tmp_path
):
    """Two array tasks (shards), each training its run with the real trainer; submitit's
    local executor stands in for SLURM (same submission path, subprocesses here)."""
    pytest.importorskip("submitit")
    from icecontext.experiments.slurm import ShardJob, SlurmOptions, submit_sweep

    cfg = write_study(tmp_path / "s.yaml", make_study(study_store, rates=((1,), (2,)), epochs=1))
    runs = tmp_path / "runs"
    jobs = submit_sweep(cfg, runs, SlurmOptions(tasks=2, cpus_per_task=1), cluster="local")
    results = [job.result() for job in jobs]  # waits; raises the task's error if it failed
    assert results == [{"trained": ["r1_f-sar_s0"]}, {"trained": ["r2_f-sar_s0"]}]
    for run in ("r1_f-sar_s0", "r2_f-sar_s0"):
        assert (runs / run / DONE_MARKER).is_file()
        assert (runs / run / "checkpoints" / "last.ckpt").is_file()
    assert list((runs / ".sweep" / "slurm").glob("*/*_log.out"))
    # a task hitting its time limit is requeued with the same shard (submitit's protocol)
    job = ShardJob(cfg, runs, shard_count=2)
    again = job.checkpoint(2)
    assert again.args == (2,) and again.function.shard_count == 2
    assert again.function is not job and again.function._runner is None


def test_slurm_launcher_needs_sbatch_and_names_it(
    study_store, make_study, write_study, tmp_path, capsys
):
    pytest.importorskip("submitit")
    import shutil

    if shutil.which("sbatch"):
        pytest.skip("this machine has SLURM")
    cfg = write_study(tmp_path / "s.yaml", make_study(study_store))
    runs = tmp_path / "runs"
    argv = ["sweep", "--config", str(cfg), "--runs-dir", str(runs), "--launcher", "slurm"]
    assert main(argv) == 2
    assert "option '--launcher': slurm: 'sbatch' is not on the PATH" in capsys.readouterr().err
    assert not runs.exists() or not list(runs.glob("r*"))
    assert main([*argv, "--shard", "1/2"]) == 2
    assert "option '--shard': is chosen per array task" in capsys.readouterr().err
