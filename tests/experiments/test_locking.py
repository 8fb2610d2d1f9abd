"""Lock files: exclusivity, release, heartbeat and stale-lock recovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from icecontext.experiments.locking import is_stale, pid_alive, read_lock, try_lock


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_is_exclusive_and_released(tmp_path):
    path = tmp_path / "locks" / "a.lock"
    lock = try_lock(path, info={"shard": "1/2"})
    assert lock is not None and lock.held()
    owner = read_lock(path)
    assert owner["pid"] == os.getpid() and owner["shard"] == "1/2"
    assert try_lock(path) is None  # held by a live process (this one)
    lock.release()
    assert not path.exists()
    again = try_lock(path)
    assert again is not None and again.token != lock.token
    lock.release()  # no longer ours: must not remove the new owner's lock
    assert path.exists() and again.held()


def test_lock_of_a_dead_local_process_is_taken_over(tmp_path):
    path = tmp_path / "a.lock"
    dead = _dead_pid()
    assert not pid_alive(dead)
    import socket

    path.write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "token": "old"}))
    assert is_stale(path)
    lock = try_lock(path)
    assert lock is not None
    assert read_lock(path)["token"] == lock.token == lock.token
    assert not path.with_name("a.lock.break").exists()


def test_foreign_lock_is_stale_only_without_heartbeat(tmp_path):
    path = tmp_path / "a.lock"
    path.write_text(json.dumps({"pid": 1, "host": "another-machine", "token": "x"}))
    assert not is_stale(path, stale_after=60)
    assert try_lock(path, stale_after=60) is None
    old = time.time() - 120
    os.utime(path, (old, old))
    assert is_stale(path, stale_after=60)
    lock = try_lock(path, stale_after=60)
    assert lock is not None and read_lock(path)["host"] != "another-machine"


def test_heartbeat_keeps_a_lock_fresh(tmp_path):
    path = tmp_path / "a.lock"
    lock = try_lock(path)
    old = time.time() - 1000
    os.utime(path, (old, old))
    lock.heartbeat()
    assert time.time() - path.stat().st_mtime < 60


def test_only_one_of_many_contenders_takes_a_stale_lock(tmp_path):
    import socket

    path = tmp_path / "a.lock"
    path.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "token": "t"}))
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: try_lock(path), range(32)))
    winners = [g for g in got if g is not None]
    assert len(winners) == 1
    assert read_lock(path)["token"] == winners[0].token


def test_half_written_lock_is_respected_while_young(tmp_path):
    path = tmp_path / "a.lock"
    path.write_text("")  # a creator between open() and write()
    assert try_lock(path) is None
