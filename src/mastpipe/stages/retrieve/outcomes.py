"""How one try at a file ends, and how that is told: the exceptions an attempt raises, the
counters a file's tries share, and the messages for giving up and for a full disk.

:class:`~mastpipe.stages.retrieve.attempt.Attempt` raises :class:`_Retry` (worth another try,
maybe keeping the bytes), :class:`_Fail` (another try will not help) or :class:`_DiskFull`;
:class:`~mastpipe.stages.retrieve.fetch.FileFetcher` decides what comes next and words it.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

from mastpipe.stages.retrieve.files import FileTask
from mastpipe.stages.retrieve.paths import describe_filesystem, free_bytes

__all__ = ["PROGRESS_CEILING", "_Counters", "_DiskFull", "_Fail", "_Local", "_Retry", "disk_message", "gave_up"]

# Attempts that keep new bytes do not count against the policy's max_attempts, but a file
# gets at most this many times max_attempts in all (and the run's budget still applies).
# A policy of one attempt (retries: 0) stays one attempt.
PROGRESS_CEILING = 10


class _Retry(Exception):
    """A failed attempt worth repeating (transient status, network error, rejected body)."""

    def __init__(self, reason: str, retry_after: str | None = None, discard: bool = False):
        super().__init__(reason)
        self.reason, self.retry_after, self.discard = reason, retry_after, discard


class _Fail(Exception):
    """A failure that another attempt will not fix."""


class _Local(_Fail):
    """A failure of this machine, not of the source (a full disk, another process holding the
    file, a file changed on disk): fetching from another source would not fix it, so a cloud
    copy that fails so is not fetched from MAST instead."""


class _DiskFull(Exception):
    """The disk refused bytes of the temporary (ENOSPC, EDQUOT, EIO): fail the file, keeping
    its temporary (``keep``: an exact prefix, on disk) or not."""

    def __init__(self, error: OSError, keep: bool, have: int | None = None) -> None:
        super().__init__(error.strerror or str(error))
        self.error, self.keep, self.have = error, keep, have


@dataclass
class _Counters:
    attempts: int = 0
    requests: int = 0
    token_withheld: bool = False  # the last request went without the token (see Http.get)
    stalled: int = 0  # failed attempts in a row that kept no new byte (what the policy limits)


def gave_up(counters: _Counters, allowed: int, ceiling: int) -> str:
    """"gave up after N attempts", with why N differs from what ``retries`` allows, if it does."""
    n = counters.attempts
    text = f"gave up after {n} attempt{'s' if n != 1 else ''}"
    if n >= ceiling and n > allowed:
        return (f"{text}: the most one file gets, {PROGRESS_CEILING} x (retries + 1), since attempts "
                f"that keep new bytes do not count against retries: {allowed - 1}")
    if n > allowed:
        return (f"{text}: retries: {allowed - 1} allows {allowed} attempts in a row that keep no new "
                f"byte; the {n - counters.stalled} before them kept new bytes, so did not count")
    return text


def disk_message(task: FileTask, full: _DiskFull, to_fetch: int) -> str:
    """Why a file failed on a disk error: the filesystem, what is free, what the rest needs
    (``to_fetch``: bytes the run's files still to fetch need), and what became of its temporary."""
    from mastpipe.stages.retrieve.progress import format_bytes  # progress imports the engine

    dest = Path(task.dest)
    code = full.error.errno
    what = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded"}.get(
        code or 0, full.error.strerror or "I/O error")
    try:
        free = f"{format_bytes(free_bytes(dest.parent))} free"
    except OSError:
        free = "free space unknown"
    if code == errno.EDQUOT:  # the filesystem's free space is not what ran out
        free += (" on it, but the quota there is used up (free some of the files it counts, or "
                 "ask for a larger quota)")
    if code == errno.EIO:  # not a matter of space: the device failed to store the bytes
        return (f"{what} on the filesystem {describe_filesystem(dest.parent)} while writing {dest}: "
                "the disk did not store the data (the kernel log, dmesg, says why); "
                f"{_fate(full)}")
    needs = []
    if task.size is not None:
        needs.append(f"this file needs {format_bytes(task.size - (full.have or 0))} more")
    if to_fetch:
        needs.append(f"the files of this run still to fetch need about "
                     f"{format_bytes(to_fetch)} in all")
    return (f"{what} on the filesystem {describe_filesystem(dest.parent)} while writing "
            f"{dest}: {free}; {'; '.join(needs + [_fate(full)])}")


def _fate(full: _DiskFull) -> str:
    """What became of the temporary of a file failed on a disk error."""
    return ("its temporary is kept: free some space and rerun to resume" if full.keep else
            "its temporary was removed (after this error its bytes cannot be trusted)")
