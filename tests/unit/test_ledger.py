"""The SQLite ledger: rows, attempt totals, thread safety, persistence, speed, corruption."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from mastpipe.errors import StateError
from mastpipe.stages.retrieve.ledger import DONE, FAILED, RUNNING, Ledger


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


def test_reading_ten_thousand_rows_is_fast(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    for i in range(10_000):
        ledger.mark_done(f"mast:{i}", f"/d/{i}", i, "00" * 32, attempts=1)
    start = time.perf_counter()
    rows = ledger.rows()
    assert len(rows) == 10_000
    assert time.perf_counter() - start < 0.5
    ledger.close()


def test_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "ledger.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="ledger") as caught:
        Ledger(bad, recover=False)  # by default it is set aside: see tests/integration/test_error_attribution.py
    assert caught.value.exit_code == 2 and "move ledger.sqlite aside and rerun" in caught.value.hint
