"""A disk that fails with EIO while mastpipe downloads, for real: the kernel's I/O error.

An ext4 filesystem on a loop device whose backing image is made immutable (``chattr +i``) in the
middle of a run: from then on the loop device cannot write a block, and the kernel reports EIO
to whoever waits for the data to reach the disk, here mastpipe's fsync, exactly as a failing
disk does (this kernel has no device-mapper for an ``error`` target). Nothing is mocked. The
file being fetched fails with a message naming the filesystem and saying its temporary was
removed (after EIO the page cache may not match the disk, so no byte of it is trusted); the file
done before stays done; nothing is published; with the disk healthy again a rerun finishes.

Needs root (a loop device, a mount, ``chattr``); skipped with the reason otherwise, or when the
image's filesystem does not refuse writes to an immutable file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _transfer_support import FAST, downloads, task_for

from mastpipe.sandbox import Sandbox
from mastpipe.stages.retrieve.engine import Event, Transfer, part_path
from mastpipe.stages.retrieve.ledger import DONE, Ledger


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, check=False)


class FailingDisk:
    """An ext4 on a loop device; :meth:`fail` makes every later write to it an I/O error."""

    def __init__(self, image: Path, point: Path, loop: str) -> None:
        self.image, self.point, self.loop = image, point, loop

    def fail(self) -> None:
        assert _run("chattr", "+i", os.fspath(self.image)).returncode == 0

    def heal(self) -> None:
        assert _run("chattr", "-i", os.fspath(self.image)).returncode == 0


def _probe(disk: FailingDisk) -> bool:
    """Whether writes after :meth:`FailingDisk.fail` really end in EIO here."""
    probe = disk.point / "probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        disk.fail()
        os.write(fd, b"\0" * 65536)
        try:
            os.fsync(fd)
        except OSError as exc:
            return exc.errno == 5
        return False
    finally:
        os.close(fd)
        disk.heal()


@pytest.fixture
def failing_disk(tmp_path: Path) -> Iterator[Callable[[], FailingDisk]]:
    made: list[FailingDisk] = []

    def make() -> FailingDisk:
        if os.geteuid() != 0:
            pytest.skip("a real I/O error needs root to attach a loop device and mount it (CI runs as root)")
        for tool in ("losetup", "mkfs.ext4", "chattr"):
            if shutil.which(tool) is None:
                pytest.skip(f"a real I/O error needs {tool} (util-linux, e2fsprogs)")
        image = tmp_path / "disk.img"
        with open(image, "wb") as handle:
            handle.truncate(160 << 20)  # sparse; room for the free-space check's 64 MiB margin
        attached = _run("losetup", "-f", "--show", os.fspath(image))
        if attached.returncode != 0:
            pytest.skip(f"cannot attach a loop device here ({attached.stderr.strip()})")
        point = tmp_path / "disk"
        point.mkdir()
        disk = FailingDisk(image, point, attached.stdout.strip())
        made.append(disk)
        for step in (("mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-O", "^has_journal", disk.loop),
                     ("mount", "-o", "nodiscard", disk.loop, os.fspath(point))):
            done = _run(*step)
            if done.returncode != 0:
                pytest.skip(f"cannot make the failing disk: {' '.join(step)}: {done.stderr.strip()}")
        if not _probe(disk):
            pytest.skip(f"writes to an immutable image on {tmp_path}'s filesystem do not fail here, "
                        "so the loop device would not give EIO")
        return disk

    yield make
    for disk in made:
        _run("chattr", "-i", os.fspath(disk.image))
        _run("umount", "-l", os.fspath(disk.point))
        _run("losetup", "-d", disk.loop)


def test_an_io_error_fails_that_file_removes_its_temporary_and_keeps_the_others(
        sandbox: Sandbox, failing_disk, tmp_path: Path) -> None:
    disk = failing_disk()
    rows = [sandbox.catalog.add_product("87600001", productFilename=f"eio_{i}_cal.fits", size=size)
            for i, size in enumerate((300_000, 3_000_000))]
    first_file, second = tasks = [task_for(sandbox, row, disk.point) for row in rows]
    state = tmp_path / "state"
    failed_at: list[str] = []

    def on_event(event: Event) -> None:  # the disk dies once the first file is done
        if event.kind == "fetched" and not failed_at:
            failed_at.append(event.key)
            disk.fail()

    with Ledger(state) as ledger:
        first = Transfer(workers=1, policy=FAST, ledger=ledger, on_event=on_event).run(tasks)
    assert failed_at == [first_file.key]
    assert [r.status for r in first] == ["fetched", "failed"], [r.error for r in first]
    error = first[1].error or ""
    assert f"on the filesystem {disk.point} (ext4)" in error, error
    assert "Input/output error" in error and "the disk did not store the data" in error, error
    assert "its temporary was removed" in error and "needs" not in error, error
    assert not second.dest.exists() and not part_path(second.dest).exists()
    assert first_file.dest.read_bytes() == sandbox.catalog.body(first_file.key)
    with Ledger(state) as ledger:
        rows_now = ledger.rows()
    assert rows_now[first_file.key].status == DONE and rows_now[second.key].status != DONE

    disk.heal()
    sandbox.log.clear()
    with Ledger(state) as ledger:
        again = Transfer(workers=1, policy=FAST, ledger=ledger).run(tasks)
    assert [r.status for r in again] == ["skipped", "fetched"], [r.error for r in again]
    assert downloads(sandbox, first_file.key) == []
    assert second.dest.read_bytes() == sandbox.catalog.body(second.key)
