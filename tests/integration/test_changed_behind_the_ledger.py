"""A done file modified or replaced behind the ledger's back is caught without --verify.

The ledger records each done file's size, mtime_ns and inode; a rerun finding any of them
changed re-hashes that file (no request) and repairs it per ``overwrite``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from _transfer_support import FAST, downloads, public_rows, task_for

from mastpipe.stages.retrieve.engine import Transfer
from mastpipe.stages.retrieve.ledger import Ledger


def _fetch(sandbox, tmp_path: Path, n: int = 3, **options):
    tasks = [task_for(sandbox, row, tmp_path) for row in public_rows(sandbox, n)]
    with Ledger(tmp_path / "state") as ledger:
        assert {r.status for r in Transfer(policy=FAST, ledger=ledger, **options).run(tasks)} == {"fetched"}
    sandbox.log.clear()
    return tasks


def test_same_size_garbage_is_repaired_with_only_the_refetch(sandbox, tmp_path: Path) -> None:
    tasks = _fetch(sandbox, tmp_path)
    victim = tasks[1]
    size = victim.dest.stat().st_size
    replacement = victim.dest.with_name("garbage")
    replacement.write_bytes(os.urandom(size))
    os.replace(replacement, victim.dest)  # same size, new inode, new mtime
    with Ledger(tmp_path / "state") as ledger:
        results = Transfer(policy=FAST, ledger=ledger).run(tasks)
    assert [r.status for r in results] == ["skipped", "fetched", "skipped"]
    assert [r.uri for r in sandbox.log.records()] == [victim.key], "a request other than the re-fetch"
    for task in tasks:
        assert task.dest.read_bytes() == sandbox.catalog.body(task.key)
    sandbox.log.clear()
    with Ledger(tmp_path / "state") as ledger:  # repaired and recorded: nothing to do now
        assert {r.status for r in Transfer(policy=FAST, ledger=ledger).run(tasks)} == {"skipped"}
    assert sandbox.log.records() == []


def test_garbage_written_in_place_is_caught_by_its_mtime(sandbox, tmp_path: Path) -> None:
    tasks = _fetch(sandbox, tmp_path, 2)
    victim = tasks[0]
    with open(victim.dest, "r+b") as handle:  # same inode, same size
        handle.seek(5000)
        handle.write(b"\0" * 100)
    with Ledger(tmp_path / "state") as ledger:
        results = Transfer(policy=FAST, ledger=ledger).run(tasks)
    assert [r.status for r in results] == ["fetched", "skipped"]
    assert len(downloads(sandbox)) == 1
    assert victim.dest.read_bytes() == sandbox.catalog.body(victim.key)


def test_a_file_only_touched_is_rehashed_once_and_not_fetched(sandbox, tmp_path: Path) -> None:
    tasks = _fetch(sandbox, tmp_path, 1)
    os.utime(tasks[0].dest, ns=(1, 1))
    with Ledger(tmp_path / "state") as ledger:
        [result] = Transfer(policy=FAST, ledger=ledger).run(tasks)
        assert ledger.rows()[tasks[0].key].mtime_ns == 1  # the new stat is recorded
    assert result.status == "skipped" and sandbox.log.records() == []


def test_with_overwrite_never_a_changed_file_is_left_and_the_file_fails(sandbox, tmp_path: Path) -> None:
    tasks = _fetch(sandbox, tmp_path, 1, overwrite="never")
    garbage = os.urandom(tasks[0].dest.stat().st_size)
    tasks[0].dest.write_bytes(garbage)
    with Ledger(tmp_path / "state") as ledger:
        [result] = Transfer(policy=FAST, ledger=ledger, overwrite="never").run(tasks)
    assert result.status == "failed" and "overwrite is 'never'" in result.error
    assert "changed after it was downloaded" in result.error
    assert tasks[0].dest.read_bytes() == garbage and sandbox.log.records() == []


def test_verify_still_rehashes_every_file(sandbox, tmp_path: Path) -> None:
    tasks = _fetch(sandbox, tmp_path, 2)
    with Ledger(tmp_path / "state") as ledger:
        results = Transfer(policy=FAST, ledger=ledger, verify=True).run(tasks)
    assert {r.status for r in results} == {"skipped"}
    assert all(r.sha256 for r in results) and sandbox.log.records() == []


def test_a_ledger_written_before_these_columns_is_migrated(sandbox, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    old = sqlite3.connect(state / "ledger.sqlite")
    old.execute("CREATE TABLE files (key TEXT PRIMARY KEY, dest TEXT NOT NULL, status TEXT NOT NULL, "
                "size INTEGER, sha256 TEXT, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, "
                "etag TEXT, last_modified TEXT, started REAL, finished REAL)")
    old.execute("INSERT INTO files (key, dest, status) VALUES ('k', '/x', 'failed')")
    old.commit()
    old.close()
    with Ledger(state) as ledger:
        row = ledger.rows()["k"]
        assert (row.status, row.checksum, row.mtime_ns, row.inode) == ("failed", None, None, None)
    tasks = [task_for(sandbox, r, tmp_path) for r in public_rows(sandbox, 1)]
    with Ledger(state) as ledger:
        assert Transfer(policy=FAST, ledger=ledger).run(tasks)[0].status == "fetched"
        done = ledger.rows()[tasks[0].key]
    assert done.inode == tasks[0].dest.stat().st_ino and done.mtime_ns == tasks[0].dest.stat().st_mtime_ns
