"""The temporary beside each download's target, on disk.

A file is fetched into ``.<name>.part`` beside its final path ``<name>``, with
``.<name>.part.json`` recording the expected size and the server's validator (ETag /
Last-Modified), so a run killed at any moment can resume the bytes it has, or start again when
the remote file changed. While a process works on a file it holds an exclusive lock on
``.<name>.part.lock`` (:class:`FetchLock`), so two runs sharing a destination (separate state
directories, or Dask workers on several machines) never write one temporary at once, nor sweep
away each other's. Here: their names, that metadata, the lock, hashing what is on disk, and
finding temporaries that no longer belong to any wanted file. The engine that writes them is
:mod:`mastpipe.stages.retrieve.engine`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mastpipe.locking import HAVE_FLOCK, PidLock, flock

from mastpipe.atomic import atomic_write_bytes, owner_of
from mastpipe.stages.retrieve.decide import LocalState, PartMeta, done_as_recorded
from mastpipe.stages.retrieve.segmented import SegmentMap

if TYPE_CHECKING:
    from mastpipe.stages.retrieve.ledger import LedgerRow

__all__ = [
    "FetchLock", "discard", "hash_file", "local_state", "lock_path", "make_parents", "meta_path",
    "part_path", "progress_of", "read_meta", "remove_empty", "remove_stale_temporaries", "size_of", "stale_temporaries",
    "write_meta"
]


#: errno values meaning the disk did not take the bytes: no space, quota exceeded, I/O error.
DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})


def write_all(fd: int, data: bytes | bytearray | memoryview) -> int:
    """Write every byte of ``data`` at ``fd``'s offset, or raise; return ``len(data)``.

    ``os.write`` may write fewer bytes than asked without raising (a nearly full filesystem
    takes what fits, then fails the *next* write with ENOSPC). Ignoring that count is how a
    short file with the hash of the complete body ends up under its final name, so every
    write of a download goes through here: it loops until the block is on disk and raises
    ``OSError(ENOSPC)`` when the kernel accepts nothing at all. On an error the file holds
    an exact prefix of what was asked (the bytes written went where they belong), which is
    what lets a download resume after it.

    ``data`` may be any contiguous buffer (a ``memoryview`` of a reused ``bytearray``
    included); it is not copied.
    """
    view = memoryview(data).cast("B")
    total = len(view)
    done = 0
    while done < total:
        written = os.write(fd, view[done:])
        if written <= 0:  # POSIX allows 0 for a full device instead of ENOSPC
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += written
    return total


def part_path(dest: Path) -> Path:
    """The temporary beside ``dest``: ``.<name>.part``."""
    return dest.with_name(f".{dest.name}.part")


def meta_path(dest: Path) -> Path:
    """The temporary's metadata beside ``dest``: ``.<name>.part.json``."""
    return dest.with_name(f".{dest.name}.part.json")


def lock_path(dest: Path) -> Path:
    """The lock beside ``dest`` held while a process works on it: ``.<name>.part.lock``."""
    return dest.with_name(f".{dest.name}.part.lock")


class FetchLock:
    """An exclusive, non-blocking lock on the temporaries of one destination file.

    ``flock`` on ``.<name>.part.lock``: the kernel drops it when the holder dies (``kill -9``
    included), so a lock is never stale; a lock file left behind is simply taken again.
    The file is removed while still locked on :meth:`release`, and :meth:`acquire` checks that
    the file it locked is still the one under that name, so a sweeper removing a lock file can
    never leave two holders.

    Parameters
    ----------
    dest : Path
        The final path of the file.
    """

    def __init__(self, dest: Path) -> None:
        self.path = lock_path(Path(dest))
        self._fd: int | None = None
        self._fallback = None if HAVE_FLOCK else PidLock(self.path)  # no flock (Windows): a pid file

    def acquire(self) -> bool:
        """Take the lock if no other holder has it; True when taken."""
        if self._fallback is not None:
            try:
                return self._fallback.acquire()
            except FileNotFoundError:  # the directory went (remove_empty) just before: make it again
                self.path.parent.mkdir(parents=True, exist_ok=True)
                return self._fallback.acquire()
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except FileNotFoundError:
                # A worker whose file failed removed the directory it had made (remove_empty)
                # just before this open: make it again.
                self.path.parent.mkdir(parents=True, exist_ok=True)
                continue
            try:
                taken = flock(fd)
            except OSError:
                taken = False
            if not taken:  # held elsewhere (EWOULDBLOCK)
                os.close(fd)
                return False
            try:
                current = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                self._fd = fd
                return True
            os.close(fd)  # removed (and perhaps re-created) by its previous holder: try again

    @property
    def held(self) -> bool:
        """Whether this instance holds the lock now."""
        return self._fd is not None or (self._fallback is not None and self._fallback.held)

    def release(self) -> None:
        """Remove the lock file and let go of the lock."""
        if self._fallback is not None:
            self._fallback.release()
            return
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def make_parents(dest: Path) -> list[Path]:
    """Create the missing directories above ``dest``; return them, deepest first."""
    missing = []
    parent = dest.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    dest.parent.mkdir(parents=True, exist_ok=True)
    return missing


def remove_empty(directory: Path, made: set[Path]) -> set[Path]:
    """Remove ``directory`` and its parents while they are empty and in ``made`` (created by
    this run); return those removed."""
    removed = set()
    while directory in made:
        try:
            directory.rmdir()
        except OSError:  # not empty: another file landed there
            break
        removed.add(directory)
        directory = directory.parent
    return removed


def size_of(path: Path | str) -> int | None:
    """Size of ``path`` in bytes, or None when it does not exist."""
    try:
        return os.stat(path).st_size
    except (FileNotFoundError, NotADirectoryError):  # a file where a directory should be
        return None


def local_state(dest: Path | str, row: LedgerRow | None, *, verify: bool, overwrite: str,
                ignore_final: bool = False, version: str | None = None, expected: int | None = None,
                done_decides: bool = False) -> LocalState:
    """What the disk and the ledger ``row`` say about the file ``dest``: the input of
    :func:`~mastpipe.stages.retrieve.decide.decide`.

    ``ignore_final`` treats the file under its final name as absent (it failed verification and
    is to be replaced). ``done_decides``: a file recorded as done, of that size on disk and the
    size ``expected`` (the product list's), and not reprocessed, is decided by that alone
    (:func:`~mastpipe.stages.retrieve.decide.decide`'s first rule), so its temporary is not
    looked for: on a rerun over a million files present that was a failing stat each. Not for
    a caller that may mark the file reprocessed afterwards (``--revalidate``): then the
    temporary decides.
    """
    dest = os.fspath(dest)  # strings: pathlib costs more than the stat on a rerun
    if row is not None and row.dest != dest:
        row = None  # it speaks of a file at another path: judge this one afresh
    final = None if ignore_final else stat_of(dest)
    why = reprocessed(row, version)
    if done_decides and row is not None and done_as_recorded(
            final.st_size if final is not None else None, ledger_status=row.status, ledger_size=row.size,
            expected=expected, reprocessed=why):
        part = None
    else:
        head, name = os.path.split(dest)
        part = size_of(os.path.join(head, f".{name}.part"))
    # A done file replaced or rewritten behind the ledger's back (same size or not) shows in
    # its mtime or inode: it is re-hashed (no request) instead of trusted by its size.
    changed = (final is not None and row is not None and row.mtime_ns is not None
               and (final.st_mtime_ns, final.st_ino) != (row.mtime_ns, row.inode))
    return LocalState(
        final_size=final.st_size if final is not None else None,
        final_changed=changed,
        ledger_status=row.status if row else None,
        ledger_size=row.size if row else None,
        part_size=part,
        part_meta=read_meta(Path(dest)) if part is not None else None,
        verify=verify,
        overwrite=overwrite,
        reprocessed=why,
    )


def reprocessed(row: LedgerRow | None, version: str | None) -> str | None:
    """Why the file ``row`` records (done, or failed or interrupted while being replaced) is an
    older version than the product list's ``version``, or None (no row, no version on either
    side, or the same one). Failed and running rows keep the version of the last file done, so
    a new version whose fetch failed is not mistaken for the old file on disk next time."""
    if row is None or version is None or row.version is None or row.version == version:
        return None
    return f"MAST reprocessed it ({row.version} -> {version})"


def stat_of(path: Path | str) -> os.stat_result | None:
    """``path``'s stat, or None when absent; recorded with a done file so a rerun notices a
    change."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # a file where a directory should be
        return None


def read_meta(dest: Path) -> PartMeta | None:
    """The metadata of the temporary of ``dest``, or None when absent or unreadable."""
    try:
        data = json.loads(meta_path(dest).read_text())
        segments = data.get("segments")
        parsed = SegmentMap.from_json(segments) if segments is not None else None
        if segments is not None and parsed is None:
            return None  # a map that cannot be read: nothing in the temporary can be trusted
        return PartMeta(size=data.get("size"), etag=data.get("etag"),
                        last_modified=data.get("last_modified"), segments=parsed)
    except (OSError, ValueError, AttributeError):
        return None  # absent or torn by a kill: the temporary is then restarted


def write_meta(dest: Path, meta: PartMeta) -> None:
    """Record what the temporary of ``dest`` is a prefix of (size, ETag, Last-Modified)."""
    # Written (atomically) before the first body byte, so a kill never leaves bytes without it.
    # Not durable (no fsync): it is written on every attempt of every file, and losing it in a
    # power cut only costs a restart of the temporary; the final rename is what is made durable.
    fields: dict[str, object] = {"size": meta.size, "etag": meta.etag, "last_modified": meta.last_modified}
    if meta.segments is not None:
        fields["segments"] = meta.segments.to_json()
    data = json.dumps(fields)
    atomic_write_bytes(meta_path(dest), data.encode(), durable=False)


def discard(dest: Path) -> None:
    """Remove the temporary of ``dest`` and its metadata, if any."""
    for path in (part_path(dest), meta_path(dest)):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def hash_file(path: Path, chunk: int, limit: int | None = None,
              also: Any = None) -> tuple[hashlib._Hash, int]:
    """sha256 of the first ``limit`` bytes (all when None), read ``chunk`` bytes at a time, and
    how many were read. ``also`` (anything with ``update``, such as a FITS checksum check) is
    fed the same bytes."""
    digest, count = hashlib.sha256(), 0
    with open(path, "rb", buffering=0) as handle:
        while limit is None or count < limit:
            want = chunk if limit is None else min(chunk, limit - count)
            block = handle.read(want)
            if not block:
                break
            digest.update(block)
            if also is not None:
                also.update(block)
            count += len(block)
    return digest, count


def remove_stale_temporaries(directories: Iterable[Path | str], keep: Iterable[Path | str]) -> list[Path]:
    """Remove the temporaries :func:`stale_temporaries` finds, except those another process
    holds the :class:`FetchLock` of (it is writing them now); return what was removed."""
    by_owner: dict[str, list[Path]] = {}
    for path in stale_temporaries(directories, keep):
        by_owner.setdefault(os.path.join(path.parent, _owner_name(path.name) or ""), []).append(path)
    removed = []
    for owner, paths in by_owner.items():
        lock = FetchLock(Path(owner))
        if not lock.acquire():
            continue
        try:
            for path in paths:
                if path != lock.path:
                    try:
                        path.unlink()
                        removed.append(path)
                    except FileNotFoundError:
                        pass
        finally:
            lock.release()
    return removed


# ".part.json.tmp": how releases before the atomic-write helper named the metadata's temporary.
_SUFFIXES = (".part", ".part.json", ".part.json.tmp", ".part.lock", ".parts", ".parts.json")  # .parts: see parts.py


def _owner_name(name: str) -> str | None:
    """The name of the file a temporary named ``name`` belongs to, or None if it is none of ours."""
    being_written = owner_of(name)  # the atomic write of a .part.json
    if being_written is not None and being_written.startswith(".") and being_written.endswith(".part.json"):
        return being_written[1:-len(".part.json")] or None
    if name.startswith("."):
        for suffix in _SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix) + 1:
                return name[1:-len(suffix)]
    return None


def stale_temporaries(directories: Iterable[Path | str], keep: Iterable[Path | str]) -> list[Path]:
    """mastpipe temporaries in ``directories`` that belong to no file in ``keep``.

    Parameters
    ----------
    directories : iterable of path-like
        Directories to scan (not recursively).
    keep : iterable of path-like
        Final paths whose temporaries are still wanted.

    Returns
    -------
    list of Path
        ``.<name>.part``, ``.<name>.part.json``, ``.<name>.part.lock`` files, and the
        temporaries of ``.<name>.part.json`` being written (``..<name>.part.json.<pid>.<random>.tmp``,
        or ``.<name>.part.json.tmp`` from older releases), to remove.
    """
    # Plain strings, not pathlib: this runs over every destination on every rerun.
    wanted = {os.fspath(dest) for dest in keep}
    found = []
    for directory in directories:
        directory = os.fspath(directory)
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            owner = _owner_name(entry.name)
            if owner is not None and os.path.join(directory, owner) not in wanted:
                found.append(Path(directory, entry.name))
    return found


def progress_of(dest: Path) -> tuple[int | None, int | None]:
    """What shows another process's progress on ``dest``: its temporary's size, the file's."""
    return size_of(part_path(dest)), size_of(dest)
