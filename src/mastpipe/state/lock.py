"""The run lock of a state directory (:class:`RunLock`), who holds it (:func:`lock_holder`), and
whether a directory can be written (:func:`writable_problem`)."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mastpipe.errors import LockError, NotWritableError, StateError, literal
from mastpipe.locking import HAVE_FLOCK, PidLock, flock, unflock
from mastpipe.state.layout import StateDir

__all__ = ["LockHolder", "RunLock", "lock_holder", "writable_problem"]

log = logging.getLogger("mastpipe.state")


def _reason(exc: OSError, target: Path) -> str:
    """``exc``'s reason, naming the path it concerns when that is not ``target`` itself
    (``mkdir -p`` fails on the first component that is a file, not on the directory asked for)."""
    reason = exc.strerror or str(exc)
    if exc.filename is not None and Path(exc.filename) != target:
        reason += f" ({exc.filename})"
    return reason


def writable_problem(directory: Path) -> str | None:
    """Why ``directory`` could not be created or written to, or None when it could.

    Creates nothing: the nearest existing ancestor must be a directory this process may write
    to (and enter), or ``directory`` itself when it exists. Checked before a run asks MAST
    anything, so that an unwritable destination fails at once rather than after every download.

    Parameters
    ----------
    directory : Path
        An absolute path.

    Returns
    -------
    str or None
        A reason such as ``"/data is not a directory"`` or ``"permission denied on /data"``.
    """
    existing = directory
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        if existing == directory:
            return "it exists and is not a directory"
        return f"{existing} is a file, not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return "permission denied" if existing == directory else f"permission denied on {existing}"
    return None


class RunLock:
    """An exclusive lock on a state directory, released by the kernel if the holder dies.

    ``flock`` is tied to the open file, so a lock left by a killed run (``kill -9``) is released
    with it: the next run sees a stale lock file, not a held lock, and proceeds. Where there is
    no ``flock`` (Windows), ``lock.pid`` beside it is a :class:`~mastpipe.locking.PidLock`,
    taken over when the process it names is gone.
    """

    def __init__(self, directory: Path | StateDir) -> None:
        self.path = (directory if isinstance(directory, StateDir) else StateDir(directory)).lock
        self._handle: IO[str] | None = None
        self._fallback = PidLock(self.path.with_name(self.path.name + ".pid"))

    def acquire(self) -> None:
        """Take the lock, creating the state directory if needed.

        Raises
        ------
        NotWritableError
            The state directory cannot be created, or the lock file in it cannot be written.
        LockError
            Another run holds the lock.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")
        except OSError as exc:
            # writable_problem names the component at fault (a file where a directory should be)
            reason = writable_problem(self.path.parent) or _reason(exc, self.path.parent)
            raise NotWritableError(
                f"cannot write to the state directory {literal(self.path.parent)}: {literal(reason)}",
                hint="choose a directory you can write to with {state_dir} (or state.directory in the recipe)",
                parameters=["state_dir"],
            ) from None
        try:
            taken = flock(handle.fileno()) if HAVE_FLOCK else self._fallback.acquire()
        except OSError as exc:
            handle.close()
            raise StateError(f"cannot lock {literal(self.path)}: {literal(exc.strerror)}") from None
        if not taken:
            handle.seek(0)
            holder = handle.read().strip() or (self._fallback.holder() if not HAVE_FLOCK else "") \
                or "another process"
            handle.close()
            hint = "wait for it to finish, or use another {state_dir}"
            if not HAVE_FLOCK:
                hint += (" (without flock, a run on another host is judged alive: once it is over, remove "
                         f"{literal(self._fallback.path)})")
            raise LockError(f"another run holds the lock on {literal(self.path.parent)} ({literal(holder)})",
                            hint=hint, parameters=["state_dir"]) from None
        handle.seek(0)
        previous = handle.read().strip()
        if previous:
            log.info("previous run did not release its lock cleanly (%s); it is no longer running", previous)
        handle.seek(0)
        handle.truncate()
        try:
            handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            handle.flush()
        except OSError as exc:  # a full disk: say which directory, not just "No space left"
            try:
                handle.close()  # flushes again, and fails again (the descriptor is closed all the same)
            except OSError:
                pass
            raise NotWritableError(
                f"cannot write to the state directory {self.path.parent}: {_reason(exc, self.path.parent)}",
                hint="free some space on its filesystem, or choose another directory with --state-dir "
                     "(or state.directory in the recipe)") from None
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()
            if HAVE_FLOCK:
                unflock(self._handle.fileno())
            else:
                self._fallback.release()
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True)
class LockHolder:
    """Who a state directory's lock file names, as :func:`lock_holder` finds it.

    Attributes
    ----------
    text : str
        The lock file's line (``pid N on HOST since TIME``).
    state : {"held", "stale", "unknown"}
        ``held``: that process still runs on this host; ``stale``: it does not (killed, say with
        ``kill -9``: the kernel released its lock, the next run proceeds); ``unknown``: another
        host, or a line that names no pid.
    """

    text: str
    state: str


def lock_holder(directory: Path | StateDir) -> LockHolder | None:
    """Who holds, or last failed to release, the run lock of ``directory``; None when nobody.

    A run writes its pid into the lock file and empties it when it releases the lock, so a
    non-empty file is a run in progress or one that died. Which of the two is told by whether
    the pid still lives, not by trying the lock: even a shared ``flock`` held for an instant
    would make a run starting at that instant fail as locked. Creates nothing.
    """
    try:
        text = StateDir(directory).lock.read_text().strip()
    except OSError:  # no lock file: no run ever took the lock here
        return None
    if not text:
        return None
    words = text.split()
    if len(words) < 4 or words[0] != "pid" or not words[1].isdigit() or words[2] != "on":
        return LockHolder(text, "unknown")
    if words[3] != socket.gethostname():
        return LockHolder(text, "unknown")
    try:
        os.kill(int(words[1]), 0)
    except ProcessLookupError:
        return LockHolder(text, "stale")
    except PermissionError:  # alive, but another user's
        return LockHolder(text, "held")
    return LockHolder(text, "held")
