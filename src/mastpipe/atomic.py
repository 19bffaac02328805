"""Write a file so that readers see the old one or the new one, never a mix: the one way mastpipe does it.

Every writer of a file someone else reads (checkpoints, sidecars, ``sections.json``, reports,
manifests, the curl script, a download's ``.part.json``) goes through :func:`atomic_path` or
:func:`atomic_write_bytes`:

1. the data goes to a temporary **beside** the target (same directory, so the rename never
   crosses filesystems), named ``.<target name>.<pid>.<random>.tmp``: the pid says which process
   left it, the random part keeps two writers of one target in one process (threads) apart, and
   the leading dot keeps it out of ``ls`` and of glob patterns;
2. the temporary is fsynced, renamed over the target (atomic on POSIX), and the directory is
   fsynced so the rename itself survives a power cut.

A process killed between 1 and 2 leaves a temporary. :func:`owner_of` recognises the naming
scheme and :func:`sweep` removes those whose process is gone (the state directory sweeps itself
at the start of every run, see :meth:`mastpipe.state.StateDir.sweep`).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["NAME_OVERHEAD", "atomic_path", "atomic_write_bytes", "fsync_dir", "open_new", "owner_of", "sweep",
           "temporary_for"]

_TEMPORARY = re.compile(r"^\.(?P<owner>.+)\.(?P<pid>\d+)\.(?P<random>[0-9a-f]{6})\.tmp$")
#: How many bytes a temporary's name adds to its target's: the leading dot and
#: ``.<pid>.<random>.tmp`` with the largest pid Linux hands out (4194304).
NAME_OVERHEAD = len("..4194304.ffffff.tmp")
#: A temporary this old is stale even if a process with its pid runs now (pids are reused, and
#: a temporary from another host names a pid of that host).
STALE_AFTER = 24 * 3600.0


def temporary_for(target: Path) -> Path:
    """A fresh temporary name beside ``target``: ``.<name>.<pid>.<6 hex digits>.tmp``."""
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")


def owner_of(name: str) -> str | None:
    """The name of the file an atomic-write temporary named ``name`` was to become, or None when
    ``name`` is not such a temporary."""
    match = _TEMPORARY.match(name)
    return match.group("owner") if match else None


def fsync_dir(directory: Path | str) -> None:
    """Make a rename in ``directory`` durable (fsync the directory itself).

    Some filesystems refuse fsync on a directory; the rename is atomic all the same, so that is
    not an error.
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: Path | str, *, mode: int | None = None, durable: bool = True) -> Iterator[Path]:
    """A temporary path to write ``target``'s new content to; on leaving the block it replaces
    ``target``.

    Parameters
    ----------
    target : path-like
        The file to replace; its directory is created if missing.
    mode : int, optional
        Permission bits for the new file (e.g. ``0o755`` for a script).
    durable : bool
        fsync the data and the directory (default). Only for a file whose loss is harmless,
        written on every download (a ``.part.json``): atomic, not durable.

    Raises
    ------
    OSError
        The write, fsync or rename failed; the temporary is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_for(target)
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if exc.filename is None:  # a failed write() or fsync() names no file: name the target,
            # so "No space left on device" says which directory (the state directory's, ...)
            raise OSError(exc.errno, exc.strerror or str(exc), os.fspath(target)) from exc
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(target.parent)


def atomic_write_bytes(path: Path | str, data: bytes, *, mode: int | None = None, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`).

    The temporary is created with ``O_EXCL | O_NOFOLLOW``: whatever sits under its name (a
    planted symlink) is never written through.
    """
    with atomic_path(path, mode=mode, durable=durable) as tmp, open_new(tmp, "wb") as handle:
        handle.write(data)


def open_new(path: Path, mode: str, encoding: str | None = None) -> IO[Any]:
    """``path`` opened for writing (``mode``: ``"wb"`` or ``"w"``) only if nothing is there:
    created with ``O_EXCL | O_NOFOLLOW``, so whatever sits under its name (a planted symlink)
    is never written through."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    return os.fdopen(fd, mode, encoding=encoding)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def sweep(directory: Path | str, *, now: float | None = None) -> list[Path]:
    """Remove the atomic-write temporaries in ``directory`` (not recursively) left by a process
    that is gone, or older than a day; return what was removed.

    A temporary of a live process (another thread or run writing now) is left alone.
    """
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None:
            continue
        pid = int(match.group("pid"))
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER
        except OSError:
            continue
        if pid == os.getpid() and not old:
            continue
        if old or not _alive(pid):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed
