"""Exclusive, non-blocking file locks that do not outlive their holder, wherever Python runs.

Where ``fcntl`` exists (Linux, macOS, every Unix) a lock is ``flock`` on an open file: the kernel
releases it when the holder dies, ``kill -9`` included. Where it does not (Windows, or a Python
built without it), :class:`PidLock` is the guarded fallback: the lock file is created
exclusively (``O_CREAT | O_EXCL``) and names its holder's pid and host; a lock whose process is
gone from this host is stale and is taken over, so a killed run does not block the next one.
What it cannot do is judge a holder on another host: such a lock is treated as held, and the
message names the host and the file to remove once that run is known to be over.

The run lock (:class:`mastpipe.state.RunLock`) and the per-file locks of downloads
(:class:`mastpipe.stages.retrieve.temporaries.FetchLock`) both build on this module. The
fallback is tested on Linux by running the lock tests with ``fcntl`` made unimportable
(``tests/unit/test_locks_without_fcntl.py``); its Windows process check (``OpenProcess``) is not
exercised on this project's machines.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from mastpipe.atomic import open_new

try:
    import fcntl
except ImportError:  # Windows, or a Python without it: PidLock instead
    fcntl = None  # type: ignore[assignment]

__all__ = ["HAVE_FLOCK", "PidLock", "flock", "unflock"]

HAVE_FLOCK = fcntl is not None


def flock(fd: int) -> bool:
    """Take an exclusive ``flock`` on ``fd`` without waiting; False when another holds it.

    Raises
    ------
    OSError
        For any failure other than "held elsewhere" (say, a filesystem without locks).
    """
    assert fcntl is not None, "flock needs fcntl; use PidLock where HAVE_FLOCK is False"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    return True


def unflock(fd: int) -> None:
    """Release a lock taken with :func:`flock`."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (for the Windows branch: never ``os.kill``,
    which terminates the process there)."""
    if os.name == "nt":  # pragma: no cover - not exercised on this project's Linux machines
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x100000, False, pid)  # SYNCHRONIZE
        if not handle:
            return False
        try:
            return bool(kernel32.WaitForSingleObject(handle, 0) == 0x102)  # WAIT_TIMEOUT: still running
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class PidLock:
    """A lock file created exclusively and naming its holder: the fallback where there is no
    ``flock`` (see the module docstring).

    Parameters
    ----------
    path : Path
        The lock file; it exists exactly while the lock is held (or left by a dead holder).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.held = False

    def holder(self) -> str:
        """The lock file's line (``pid N on HOST``), or ``""`` when it is missing or unreadable."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def _stale(self, text: str) -> bool:
        words = text.split()
        if len(words) < 4 or words[0] != "pid" or not words[1].isdigit() or words[2] != "on":
            return not text  # empty: a holder killed between creating and writing it
        return words[3] == socket.gethostname() and int(words[1]) != os.getpid() and not _alive(int(words[1]))

    def acquire(self) -> bool:
        """Take the lock if nobody holds it (taking over one whose holder is gone); True when taken."""
        for _ in range(5):
            try:
                handle = open_new(self.path, "w")
            except FileExistsError:
                text = self.holder()
                if not self._stale(text):
                    return False
                # Take a stale lock over by moving it aside under a name of our own: of two
                # processes doing so at once, one rename wins, the other finds nothing to move.
                aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
                try:
                    os.rename(self.path, aside)
                except FileNotFoundError:
                    continue
                moved = aside.read_text().strip() if aside.exists() else ""
                if moved != text and moved:  # a live holder's file took its place meanwhile: give it back
                    try:
                        os.link(aside, self.path)
                    except FileExistsError:
                        pass
                aside.unlink(missing_ok=True)
                continue
            with handle:
                handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            self.held = True
            return True
        return False

    def release(self) -> None:
        """Remove the lock file (idempotent)."""
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
