"""The SQLite ledger: rows, attempt totals, thread safety, persistence, speed, corruption."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from mastpipe.errors import StateError
from mastpipe.stages.retrieve.ledger import DONE, FAILED, RUNNING, Ledger, LedgerRow, signature, signed_key


def test_lifecycle_and_attempt_totals(tmp_path: Path) -> None:
    with Ledger(tmp_path / "state") as ledger:
        assert ledger.path == tmp_path / "state" / "ledger.sqlite"
        ledger.mark_running("mast:a", tmp_path / "a", 10)
        assert ledger.get("mast:a").status == RUNNING
        ledger.mark_failed("mast:a", tmp_path / "a", "HTTP 503", attempts=3)
        row = ledger.get("mast:a")
        assert (row.status, row.attempts, row.last_error) == (FAILED, 3, "HTTP 503")
        ledger.mark_running("mast:a", tmp_path / "a", 10)
        ledger.mark_done("mast:a", tmp_path / "a", 10, "ab" * 32, attempts=2, etag='"e1"')
        row = ledger.get("mast:a")
        assert (row.status, row.size, row.sha256, row.attempts) == (DONE, 10, "ab" * 32, 5)
        assert row.last_error is None and row.etag == '"e1"'
        assert row.finished >= row.started
        assert ledger.get("mast:missing") is None


def test_persists_across_reopen(tmp_path: Path) -> None:
    with Ledger(tmp_path) as ledger:
        ledger.mark_done("mast:a", tmp_path / "a", 1, "00" * 32, attempts=1)
    with Ledger(tmp_path) as ledger:
        assert ledger.rows()["mast:a"].status == DONE
        assert ledger.rows(["mast:a", "mast:b"]).keys() == {"mast:a"}


def test_concurrent_writers(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)

    def work(n: int) -> None:
        for i in range(100):
            ledger.mark_running(f"k{n}-{i}", tmp_path / f"{n}-{i}", i)
            ledger.mark_done(f"k{n}-{i}", tmp_path / f"{n}-{i}", i, "00" * 32, attempts=1)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = ledger.rows()
    assert len(rows) == 800 and all(r.status == DONE for r in rows.values())
    ledger.close()


def test_ten_thousand_rows_read_back_whole_and_by_key(tmp_path: Path) -> None:
    # How fast: benchmarks/bench_transfer.py's 10,000-file rerun, side by side, not a timing
    # assert here (one failed whenever other jobs shared the cores).
    ledger = Ledger(tmp_path)
    for i in range(10_000):
        ledger.mark_done(f"mast:{i}", f"/d/{i}", i, "00" * 32, attempts=1)
    rows = ledger.rows()
    assert len(rows) == 10_000
    assert all(rows[f"mast:{i}"].dest == f"/d/{i}" and rows[f"mast:{i}"].size == i for i in range(10_000))
    some = ledger.rows([f"mast:{i}" for i in range(0, 10_000, 1000)] + ["mast:absent"])
    assert sorted(some) == sorted(f"mast:{i}" for i in range(0, 10_000, 1000))
    ledger.close()


def test_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "ledger.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="ledger") as caught:
        Ledger(bad, recover=False)  # by default it is set aside: see tests/integration/test_error_attribution.py
    assert caught.value.exit_code == 2 and "move ledger.sqlite aside and rerun" in caught.value.hint


# -- the journal mode: WAL where it is safe, a rollback journal on network filesystems ----------


def _mode(path) -> str:
    import sqlite3

    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA journal_mode").fetchone()[0]


def test_journal_mode_delete_on_request_and_wal_by_default_on_a_local_disk(tmp_path) -> None:
    from mastpipe.stages.retrieve.ledger import Ledger, filesystem_type

    with Ledger(tmp_path / "a" / "ledger.sqlite", journal="delete") as ledger:
        ledger.mark_done("mast:X/a.fits", tmp_path / "a.fits", 3, "abc", 1)
        assert ledger.journal_mode == "delete"
        assert not (tmp_path / "a" / "ledger.sqlite-wal").exists()
    assert _mode(tmp_path / "a" / "ledger.sqlite") == "delete"
    with Ledger(tmp_path / "b" / "ledger.sqlite") as ledger:  # auto
        assert ledger.journal_mode == ("delete" if filesystem_type(tmp_path) in ("nfs", "nfs4") else "wal")
    # a ledger moved to delete mode keeps its rows; a reader (journal=None) changes nothing
    with Ledger(tmp_path / "a" / "ledger.sqlite", journal=None, recover=False) as reader:
        assert set(reader.rows()) == {"mast:X/a.fits"} and reader.journal_mode is None
    assert _mode(tmp_path / "a" / "ledger.sqlite") == "delete"


def test_auto_chooses_a_rollback_journal_on_network_filesystems(tmp_path) -> None:
    from mastpipe.stages.retrieve.ledger import filesystem_type, journal_for

    mounts = ("/dev/sda1 / ext4 rw 0 0\n"
              "server:/export/home /home nfs4 rw,relatime 0 0\n"
              "/dev/sdb1 /home/local ext4 rw 0 0\n"
              "//nas/share /mnt/my\\040share cifs rw 0 0\n")
    assert filesystem_type(Path("/home/alice/.mastpipe/x"), mounts) == "nfs4"
    assert filesystem_type(Path("/home/local/x"), mounts) == "ext4"  # the longest mount point wins
    assert filesystem_type(Path("/mnt/my share/x"), mounts) == "cifs"
    assert journal_for(Path("/home/alice/.mastpipe/x/ledger.sqlite"), mounts) == "delete"
    assert journal_for(Path("/mnt/my share/ledger.sqlite"), mounts) == "delete"
    assert journal_for(Path("/home/local/ledger.sqlite"), mounts) == "wal"
    assert journal_for(Path("/srv/ledger.sqlite"), mounts) == "wal"
    assert filesystem_type(tmp_path) is not None  # this machine's /proc/mounts names it


# rows() builds its LedgerRow objects without the dataclass's __init__ (for speed at a million
# rows): they must be the very objects the constructor makes.
def test_rows_read_back_equal_constructed_rows(tmp_path: Path) -> None:
    dest = tmp_path / "a.fits"
    dest.write_bytes(b"x" * 10)
    with Ledger(tmp_path / "state") as ledger:
        ledger.mark_done("mast:A/a.fits", dest, 10, "0" * 64, 1, stat=dest.stat(), source="mast", version="2")
        ledger.mark_failed("mast:A/b.fits", tmp_path / "b.fits", "HTTP 404", 3)
        rows = ledger.rows()
    assert set(rows) == {"mast:A/a.fits", "mast:A/b.fits"}
    for row in rows.values():
        values = {field.name: getattr(row, field.name) for field in dataclasses.fields(LedgerRow)}
        rebuilt = LedgerRow(**values)
        assert row == rebuilt and hash(row) == hash(rebuilt) and repr(row) == repr(rebuilt)
        assert dataclasses.replace(row, dest="elsewhere").dest == "elsewhere"
    done = rows["mast:A/a.fits"]
    assert (done.status, done.size, done.source, done.version) == ("done", 10, "mast", "2")
    assert done.mtime_ns == dest.stat().st_mtime_ns and done.inode == dest.stat().st_ino
    assert rows["mast:A/b.fits"].status == "failed" and "404" in (rows["mast:A/b.fits"].last_error or "")


def test_signatures_are_written_as_signature_writes_them(tmp_path: Path) -> None:
    """Ledger.signatures builds its text in SQL; status compares it with signature(): the two
    spell a done file alike, with or without a version, and only done rows are signed."""
    with Ledger(tmp_path / "state") as ledger:
        ledger.mark_running("mast:a", tmp_path / "a", 10)
        ledger.mark_done("mast:a", tmp_path / "a", 10, "ab" * 32, attempts=1, version="prvversion=1.2")
        ledger.mark_running("mast:b", tmp_path / "b", 7)
        ledger.mark_done("mast:b", tmp_path / "b", 7, "cd" * 32, attempts=1)
        ledger.mark_running("mast:c", tmp_path / "c", 5)
        signed, others = ledger.signatures()
    assert signed == {signature("mast:a", str(tmp_path / "a"), 10, "prvversion=1.2"),
                      signature("mast:b", str(tmp_path / "b"), 7, None)}
    assert others == ["mast:c"] and {signed_key(text) for text in signed} == {"mast:a", "mast:b"}
