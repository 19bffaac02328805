"""A disk quota that runs out while mastpipe downloads, for real: EDQUOT from the kernel.

A small btrfs filesystem on a loop device, with a qgroup limit on it: btrfs refuses the bytes
past the limit with EDQUOT (root included, unlike classic user quotas), after a short write, as
a quota'd home or project directory does. Nothing is mocked. The file being fetched fails with
a message naming the quota and the filesystem; the files already done stay done; nothing wrong
is published; once the limit is lifted a rerun resumes the kept bytes and finishes exactly.

Needs root (a loop device, a mount) and btrfs-progs (``.ci/run`` installs it); skipped with the
reason otherwise. (tmpfs quotas would need a kernel built with CONFIG_TMPFS_QUOTA; the CI
machine's is not.)
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
from mastpipe.stages.retrieve.engine import Transfer, part_path
from mastpipe.stages.retrieve.ledger import DONE, Ledger


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, check=False)


@pytest.fixture
def quota_fs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``quota_fs("3M")`` mounts a 256 MiB btrfs with a qgroup limit of 3 MiB; returns its path."""
    made: list[tuple[Path, str]] = []

    def make(limit: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("a real disk quota needs root to attach a loop device and mount it (CI runs as root)")
        if shutil.which("mkfs.btrfs") is None or shutil.which("btrfs") is None:
            pytest.skip("a real disk quota needs btrfs-progs (mkfs.btrfs, btrfs); .ci/run installs it")
        image = tmp_path / "quota.img"
        with open(image, "wb") as handle:
            handle.truncate(256 << 20)  # sparse: costs no disk
        attached = _run("losetup", "-f", "--show", os.fspath(image))
        if attached.returncode != 0:
            pytest.skip(f"cannot attach a loop device here ({attached.stderr.strip()})")
        loop = attached.stdout.strip()
        point = tmp_path / "quota"
        point.mkdir()
        made.append((point, loop))
        for step in (("mkfs.btrfs", "-q", "-f", loop), ("mount", loop, os.fspath(point)),
                     ("btrfs", "quota", "enable", os.fspath(point)),
                     ("btrfs", "qgroup", "limit", limit, os.fspath(point))):
            done = _run(*step)
            if done.returncode != 0:
                pytest.skip(f"cannot set up a btrfs quota here: {' '.join(step)}: {done.stderr.strip()}")
        return point

    yield make
    for point, loop in made:
        _run("umount", "-l", os.fspath(point))
        _run("losetup", "-d", loop)


def test_a_quota_running_out_fails_that_file_keeps_the_others_and_a_rerun_finishes(
        sandbox: Sandbox, quota_fs, tmp_path: Path) -> None:
    fs = quota_fs("3M")
    rows = [sandbox.catalog.add_product("87600001", productFilename=f"quota_{i}_cal.fits", size=size)
            for i, size in enumerate((400_000, 8_000_000))]
    small, big = tasks = [task_for(sandbox, row, fs) for row in rows]
    state = tmp_path / "state"
    with Ledger(state) as ledger:
        first = Transfer(workers=1, policy=FAST, ledger=ledger).run(tasks)

    assert [r.status for r in first] == ["fetched", "failed"], [r.error for r in first]
    error = first[1].error or ""
    assert "disk quota exceeded" in error and "free on it, but the quota there is used up" in error, error
    assert f"on the filesystem {fs} (btrfs)" in error and "this file needs" in error, error
    assert "rerun to resume" in error or "removed" in error, error
    assert small.dest.read_bytes() == sandbox.catalog.body(small.key)
    assert not big.dest.exists(), "a file cut by the quota was published"
    body = sandbox.catalog.body(big.key)
    kept = part_path(big.dest).stat().st_size if part_path(big.dest).exists() else 0
    assert 0 < kept < len(body) if "rerun to resume" in error else kept == 0
    assert part_path(big.dest).read_bytes() == body[:kept] if kept else True, "the kept bytes are not a prefix"
    with Ledger(state) as ledger:
        rows_now = ledger.rows()
    assert rows_now[small.key].status == DONE and rows_now[big.key].status != DONE

    # The quota lifted: the rerun asks only for what is missing and ends with every file exact.
    assert _run("btrfs", "qgroup", "limit", "none", os.fspath(fs)).returncode == 0
    sandbox.log.clear()
    with Ledger(state) as ledger:
        second = Transfer(workers=1, policy=FAST, ledger=ledger).run(tasks)
    assert [r.status for r in second] == ["skipped", "fetched"], [r.error for r in second]
    assert downloads(sandbox, small.key) == []
    assert [r.range for r in downloads(sandbox, big.key)] == ([f"bytes={kept}-"] if kept else [None])
    assert big.dest.read_bytes() == body
