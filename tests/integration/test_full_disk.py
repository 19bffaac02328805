"""A disk that fills up while mastpipe downloads, for real: a small tmpfs, filled at chosen moments.

Nothing here mocks ``os.write``: the filesystem itself refuses the bytes, with the short writes
and ENOSPC a nearly full disk really gives. Whatever the moment, no file under its final name
may differ from what the sandbox sent, the ledger may hold no ``done`` row for an incomplete
file, and once space is freed a rerun finishes every file exactly.

The filesystem is filled from the ``on_event`` callback, which the engine calls between blocks
of a download: the moments are exact, not a race with a timer.
"""

from __future__ import annotations

import errno
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _examples import example_recipe
from _transfer_support import FAST, downloads, task_for

import mastpipe
from mastpipe.sandbox import Sandbox
from mastpipe.stages.retrieve.engine import Event, FileTask, Transfer, part_path
from mastpipe.stages.retrieve.ledger import DONE, Ledger


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``small_fs("8m")`` mounts a tmpfs of that size and returns its path (unmounted after)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("filling a real filesystem needs root to mount a tmpfs (CI runs as root)")
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): the full-disk tests need one")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def fill(fs: Path, leave: int = 0) -> Path:
    """Fill ``fs`` completely with a file of its own, then free ``leave`` bytes of it."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for step in (1 << 20, 4096, 1):
            block = b"\xff" * step
            while True:
                try:
                    if os.write(fd, block) == 0:
                        break
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    if leave:
        os.truncate(filler, max(filler.stat().st_size - leave, 0))
    return filler


def products(sb: Sandbox, n: int, size: int) -> list[dict]:
    return [sb.catalog.add_product("87600001", productFilename=f"full_{i}_cal.fits", size=size)
            for i in range(n)]


def check_nothing_wrong_published(sb: Sandbox, tasks: list[FileTask], state: Path) -> None:
    """No final name holds other bytes than the sandbox's; no done row for a file not complete."""
    for task in tasks:
        if task.dest.exists():
            assert task.dest.read_bytes() == sb.catalog.body(task.key), f"{task.dest} differs from MAST's bytes"
    with Ledger(state) as ledger:
        for key, row in ledger.rows().items():
            if row.status == DONE:
                path = Path(row.dest)
                assert path.exists() and path.stat().st_size == row.size
                assert path.read_bytes() == sb.catalog.body(key), f"done row for {key}, whose file is wrong"


# (moment, bytes left free when the disk fills): before anything, in the first file, between
# files, in the last block of a file (a short write: the case that once published a cut file),
# with a page-unaligned remainder.
# The last two: four downloads in flight when the disk fills.
MOMENTS = [
    ("plan", 0, 100_000, 1),
    ("bytes", 300_000, 0, 1),
    ("fetched", 1, 50_000, 1),
    ("bytes", 2 * 600_000 - 100_000, 37_000, 1),
    ("bytes", 900_000, 12_345, 1),
    ("bytes", 700_000, 0, 4),
    ("bytes", 1_500_000, 150_001, 4),
]


@pytest.mark.parametrize(("kind", "after", "leave", "workers"), MOMENTS)
def test_a_disk_filling_during_a_download_never_publishes_a_wrong_file(
        sandbox: Sandbox, small_fs, tmp_path: Path, kind: str, after: int, leave: int, workers: int) -> None:
    fs = small_fs("4m")
    tasks = [task_for(sandbox, row, fs) for row in products(sandbox, 4, 600_000)]
    state = tmp_path / "state"
    seen = {"bytes": 0, "fetched": 0}
    filled: list[Path] = []

    lock = threading.Lock()  # events come from every worker thread

    def on_event(event: Event) -> None:
        with lock:
            if event.kind in seen:
                seen[event.kind] += event.nbytes if event.kind == "bytes" else 1
            if not filled and (event.kind == kind == "plan" or (kind != "plan" and seen[kind] >= after)):
                filled.append(fill(fs, leave))

    with Ledger(state) as ledger:
        first = Transfer(workers=workers, policy=FAST, ledger=ledger, on_event=on_event,
                         check_space=False, chunk_size=64 << 10).run(tasks)
    assert filled, "the disk was never filled: the test did not test anything"
    failed = [r for r in first if r.status == "failed"]
    assert failed, "a full disk failed no file"
    for result in failed:
        assert "on the filesystem" in result.error and os.fspath(fs) in result.error, result.error
        assert "(tmpfs)" in result.error and "free" in result.error
        assert ("no space left" in result.error) and ("rerun to resume" in result.error
                                                       or "removed" in result.error)
    check_nothing_wrong_published(sandbox, tasks, state)

    # Space freed: the rerun completes every file, resuming the temporaries that were kept.
    kept = {t.key: part_path(t.dest).stat().st_size for t in tasks
            if part_path(t.dest).exists() and part_path(t.dest).stat().st_size > 0}
    filled[0].unlink()
    sandbox.log.clear()
    with Ledger(state) as ledger:
        second = Transfer(workers=2, policy=FAST, ledger=ledger, check_space=False).run(tasks)
    assert [r.status for r in second if r.status == "failed"] == [], [r.error for r in second]
    for task in tasks:
        assert task.dest.read_bytes() == sandbox.catalog.body(task.key)
    for key, offset in kept.items():
        assert [r.range for r in downloads(sandbox, key)] == [f"bytes={offset}-"], "kept bytes not resumed"
    with Ledger(state) as ledger:
        assert {row.status for row in ledger.rows().values()} == {DONE}
    check_nothing_wrong_published(sandbox, tasks, state)


def test_files_done_before_the_disk_filled_stay_done(sandbox: Sandbox, small_fs, tmp_path: Path) -> None:
    fs = small_fs("4m")
    tasks = [task_for(sandbox, row, fs) for row in products(sandbox, 3, 900_000)]
    state = tmp_path / "state"
    filled: list[Path] = []

    def on_event(event: Event) -> None:
        if event.kind == "fetched" and not filled:
            filled.append(fill(fs, 10_000))

    with Ledger(state) as ledger:
        first = Transfer(workers=1, policy=FAST, ledger=ledger, on_event=on_event, check_space=False).run(tasks)
    statuses = [r.status for r in first]
    assert statuses[0] == "fetched" and "failed" in statuses
    check_nothing_wrong_published(sandbox, tasks, state)
    filled[0].unlink()
    sandbox.log.clear()
    with Ledger(state) as ledger:
        again = Transfer(policy=FAST, ledger=ledger, check_space=False).run(tasks)
    assert again[0].status == "skipped" and downloads(sandbox, tasks[0].key) == []
    assert all(r.status in ("fetched", "skipped") for r in again)
    check_nothing_wrong_published(sandbox, tasks, state)


def _recipe(tmp_path: Path, destination: Path) -> Path:
    """The tutorial's example (pipelines/): its UNCAL files, two downloads at a time, into ``destination``."""
    return example_recipe(tmp_path, name="full-disk", description=None, unique=None,
                          filter={"contains": ["_uncal.fits"], "guide_stars": None, "columns": None},
                          retrieve={"destination": str(destination), "in_flight": 2, "layout": None})


def test_a_run_on_a_disk_that_fills_then_a_rerun_after_freeing_space_exits_0(
        sandbox: Sandbox, small_fs, tmp_path: Path) -> None:
    fs = small_fs("160m")  # room for the 64 MiB safety margin of the free-space check
    recipe = _recipe(tmp_path, fs / "data")
    received = [0]
    filled: list[Path] = []

    def on_event(event: Event) -> None:
        if event.kind == "bytes":
            received[0] += event.nbytes
            if received[0] > 20_000 and not filled:
                filled.append(fill(fs, 5_000))

    first = mastpipe.run(recipe, mast_url=sandbox.url, state_dir=tmp_path / "state", environ={},
                         on_event=on_event)
    assert filled and first.exit_code == 1
    filled[0].unlink()
    second = mastpipe.run(recipe, mast_url=sandbox.url, state_dir=tmp_path / "state", environ={})
    assert second.exit_code == 0
    with Ledger(tmp_path / "state") as ledger:
        rows = ledger.rows()
    assert rows and {row.status for row in rows.values()} == {DONE}
    for key, row in rows.items():
        assert Path(row.dest).read_bytes() == sandbox.catalog.body(key)
    leftovers = [p for p in (fs / "data").rglob(".*") if p.is_file()]
    assert leftovers == []


@pytest.mark.parametrize("leave", [0, 20_000])
def test_a_full_state_directory_is_named(sandbox: Sandbox, small_fs, tmp_path: Path, leave: int) -> None:
    from mastpipe.errors import NotWritableError

    fs = small_fs("2m")
    state = fs / "state"
    recipe = _recipe(tmp_path, tmp_path / "data")
    fill(fs, leave)
    with pytest.raises((NotWritableError, OSError)) as caught:
        mastpipe.run(recipe, mast_url=sandbox.url, state_dir=state, environ={})
    error = caught.value
    if isinstance(error, OSError):  # the CLI shows it as "PATH: reason" (api.describe_os_error)
        assert error.errno == errno.ENOSPC and str(error.filename).startswith(str(state)), error
    else:
        assert f"state directory {state}" in error.message and "No space left" in error.message
