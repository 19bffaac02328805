"""Locks that do not outlive their holder: with flock, and (run by test_locks_without_fcntl.py
with fcntl unimportable) with the pid-file fallback of mastpipe.locking."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mastpipe.errors import LockError
from mastpipe.locking import HAVE_FLOCK, PidLock
from mastpipe.stages.retrieve.temporaries import FetchLock
from mastpipe.state import RunLock

WITHOUT_FCNTL = os.environ.get("MASTPIPE_TEST_NO_FCNTL") == "1"


def test_the_lock_kind_is_the_one_this_run_expects() -> None:
    assert HAVE_FLOCK is not WITHOUT_FCNTL
    if WITHOUT_FCNTL:
        with pytest.raises(ImportError):
            import fcntl  # noqa: F401


def _holder(code: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def test_a_fetch_lock_of_a_killed_process_is_taken_again(tmp_path: Path) -> None:
    dest = tmp_path / "d" / "file.fits"
    holder = _holder("import time; from pathlib import Path; from mastpipe.stages.retrieve.temporaries import FetchLock\n"
                     f"lock = FetchLock(Path({str(dest)!r})); assert lock.acquire(); print('held', flush=True); "
                     "time.sleep(60)")
    try:
        assert FetchLock(dest).acquire() is False  # another process works on this file
        holder.kill()  # kill -9
        holder.wait(timeout=10)
        lock = FetchLock(dest)
        assert lock.acquire() is True and lock.held
        assert FetchLock(dest).acquire() is False  # and now this one holds it (even in one process)
        lock.release()
        assert not lock.held and not lock.path.exists()
        assert FetchLock(dest).acquire() is True
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_a_run_lock_of_a_killed_process_is_taken_over_and_named_while_held(tmp_path: Path) -> None:
    holder = _holder("import time; from pathlib import Path; from mastpipe.state import RunLock\n"
                     f"lock = RunLock(Path({str(tmp_path)!r})); lock.acquire(); print('held', flush=True); time.sleep(60)")
    try:
        with pytest.raises(LockError, match=f"pid {holder.pid} on"):
            RunLock(tmp_path).acquire()
        holder.kill()
        holder.wait(timeout=10)
        with RunLock(tmp_path):
            assert f"pid {os.getpid()} on" in (tmp_path / "lock").read_text()
        assert (tmp_path / "lock").read_text() == ""
        assert not (tmp_path / "lock.pid").exists()
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_a_pid_lock_from_another_host_is_judged_held(tmp_path: Path) -> None:
    path = tmp_path / "lock.pid"
    path.write_text(f"pid 1 on not-{socket.gethostname()}\n")
    assert PidLock(path).acquire() is False
    path.write_text("pid 999999999 on " + socket.gethostname() + "\n")  # no such process here: stale
    lock = PidLock(path)
    assert lock.acquire() is True and path.read_text().startswith(f"pid {os.getpid()} on")
    lock.release()
    assert not path.exists()
