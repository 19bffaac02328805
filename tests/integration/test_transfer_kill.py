"""Scenario 11: ``kill -9`` during downloads, then a rerun.

A driver process runs the Transfer API with a ledger against a bandwidth-limited sandbox; the test
kills it once some files are complete and others half-written, then reruns in-process and checks
the sandbox's request log: nothing complete is fetched again, partial files resume with Range, and
no temporary is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from _transfer_support import FAST, JWST_1073_OBSID, assert_complete, downloads

from mastpipe.stages.retrieve.ledger import Ledger
from mastpipe.sandbox import Faults
from mastpipe.stages.retrieve.engine import FileTask, Transfer, part_path
from mastpipe.stages.retrieve.temporaries import size_of

DRIVER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from mastpipe.stages.retrieve.ledger import Ledger
    from mastpipe.retry import RetryPolicy
    from mastpipe.stages.retrieve.engine import FileTask, Transfer
    spec = json.loads(Path(sys.argv[1]).read_text())
    tasks = [FileTask(t["key"], t["url"], Path(t["dest"]), t["size"]) for t in spec["tasks"]]
    Transfer(workers=2, ledger=Ledger(spec["state"]), policy=RetryPolicy(base_delay=0.01)).run(tasks)
""")

SIZE = 300_000
RATE = 600_000  # bytes/s per connection: each file takes ~0.5 s


def test_kill_9_then_rerun(sandbox, tmp_path: Path) -> None:
    rows = [sandbox.catalog.add_product(JWST_1073_OBSID, productFilename=f"kill_{i}_cal.fits",
                                        size=SIZE) for i in range(8)]
    dest = tmp_path / "dest"
    tasks = [FileTask(r["dataURI"], sandbox.download_url(r["dataURI"]),
                      dest / r["obs_id"] / r["productFilename"], r["size"]) for r in rows]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"state": str(tmp_path / "state"), "tasks": [
        {"key": t.key, "url": t.url, "dest": str(t.dest), "size": t.size} for t in tasks]}))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    sandbox.faults = Faults.parse(f"download.bandwidth={RATE}")

    proc = subprocess.Popen([sys.executable, str(driver), str(spec)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            complete = [t for t in tasks if t.dest.exists()]
            # at most half done, so it cannot be renamed between this look and the kill
            partial = [t for t in tasks if SIZE // 10 < (size_of(part_path(t.dest)) or 0) < SIZE // 2]
            if len(complete) >= 2 and partial:
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the driver never reached a mid-run state")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    complete = {t.key for t in tasks if t.dest.exists()}
    partial = {t.key: n_bytes for t in tasks if (n_bytes := size_of(part_path(t.dest)))}
    assert complete and partial and len(complete) < len(tasks)
    # a stale temporary of a product no longer wanted, in the same directory
    orphan = tasks[0].dest.parent / ".orphan_cal.fits.part"
    orphan.write_bytes(b"left by some earlier run")

    sandbox.faults = Faults.parse("")
    # The killed driver's last requests are logged when the server notices the broken
    # connection, possibly later: only count requests that arrived after the rerun began.
    rerun_start = time.time()
    with Ledger(tmp_path / "state") as ledger:
        results = Transfer(policy=FAST, ledger=ledger).run(tasks)
    assert all(r.status in ("fetched", "skipped") for r in results), [r.error for r in results]

    gets = [g for g in downloads(sandbox) if g.time >= rerun_start]
    fetched = {g.uri for g in gets}
    assert not fetched & complete, "a complete file was fetched again"
    for key, have in partial.items():
        [get] = [g for g in gets if g.uri == key]
        assert get.range == f"bytes={have}-" and get.status == 206
    assert fetched == {t.key for t in tasks} - complete
    for task in tasks:
        assert_complete(sandbox, task)  # exact bytes, no temporaries (the orphan included)
    assert not orphan.exists()


def test_interrupt_stops_promptly_and_keeps_partials(sandbox, tmp_path: Path) -> None:
    rows = [sandbox.catalog.add_product(JWST_1073_OBSID, productFilename=f"intr_{i}_cal.fits",
                                        size=SIZE) for i in range(4)]
    tasks = [FileTask(r["dataURI"], sandbox.download_url(r["dataURI"]),
                      tmp_path / r["productFilename"], r["size"]) for r in rows]
    sandbox.faults = Faults.parse(f"download.bandwidth={SIZE // 2}")  # 2 s per file
    seen = {"bytes": 0}

    def ctrl_c(event) -> None:  # what a KeyboardInterrupt in the middle of a run looks like
        if event.kind == "bytes":
            seen["bytes"] += event.nbytes
            if seen["bytes"] > SIZE // 8:
                raise KeyboardInterrupt

    start = time.monotonic()
    with Ledger(tmp_path / "state") as ledger:
        try:
            Transfer(workers=2, ledger=ledger, on_event=ctrl_c).run(tasks)
        except KeyboardInterrupt:
            pass
        else:
            raise AssertionError("the interrupt was swallowed")
        assert time.monotonic() - start < 2.0  # not the 4 s the downloads would take
        assert not any(t.dest.exists() for t in tasks)
        partial = {t.key: part_path(t.dest).stat().st_size for t in tasks
                   if part_path(t.dest).exists() and part_path(t.dest).stat().st_size}
        assert partial

        sandbox.faults = Faults.parse("")
        rerun_start = time.time()
        results = Transfer(policy=FAST, ledger=ledger).run(tasks)
    assert all(r.status == "fetched" for r in results)
    gets = [g for g in downloads(sandbox) if g.time >= rerun_start]
    for key, have in partial.items():
        assert [g.range for g in gets if g.uri == key] == [f"bytes={have}-"]
    for task in tasks:
        assert_complete(sandbox, task)
