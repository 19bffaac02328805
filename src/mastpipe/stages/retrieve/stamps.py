"""What says the disk is as it was when the files were judged, for
:mod:`mastpipe.stages.retrieve.recheck`: each directory's change time and resolution (and, when it
changed just before, its names), each present file's size, checked with one stat per file (by
the compiled :mod:`mastpipe._sizes` on every core where it was built, else in Python).
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
import unicodedata
from collections.abc import Callable
from typing import Any

import numpy as np

from mastpipe.cores import cores

try:
    from mastpipe import _sizes
except ImportError:  # not built (no C compiler at install, Windows): the same check in Python
    _sizes = None  # type: ignore[assignment]

#: Whether :func:`sizes_hold` has the compiled :mod:`mastpipe._sizes` (built at install).
COMPILED = _sizes is not None

__all__ = ["COMPILED", "OPEN_AT_ONCE", "RACY_NS", "by_directory", "folded", "directories_hold", "directory_stamp", "directory_stamps", "sizes_hold",
           "sizes_match"]

#: Changes this close (ns) before the outlook was judged may share a clock tick with it.
RACY_NS = 2_000_000_000
#: Present files from which :func:`sizes_hold` and :func:`sizes_match` stat on both cores.
THREADS_FROM = 100_000
#: Directories :func:`sizes_hold` holds open at once (10M files are in ~2,000; a process may
#: have only 1,024 descriptors).
OPEN_AT_ONCE = 256


def folded(name: str) -> str:
    """A file name as a case-insensitive, normalising filesystem (macOS, Windows) may match it:
    a file listed under another case or form is still judged by its exact path."""
    return name.lower() if name.isascii() else unicodedata.normalize("NFC", name).casefold()


def directory_stamp(path: str) -> list[Any]:
    """What says a directory's entries are as they were: its change time (None: missing) and
    where it resolves."""
    try:
        mtime: int | None = os.stat(path).st_mtime_ns
    except OSError:
        mtime = None
    return [mtime, os.path.realpath(path)]


def _listed(directory: str) -> list[bytes] | None:
    """The names in ``directory`` (None: it cannot be listed)."""
    try:
        return os.listdir(os.fsencode(directory))
    except OSError:
        return None


def _digest(names: list[bytes]) -> str:
    return hashlib.blake2b(b"\0".join(sorted(names)), digest_size=16).hexdigest()


def directory_stamps(parents: list[str], listings: dict[str, set[str] | None],
                     recent: int) -> dict[str, list[Any]] | None:
    """Each directory's :func:`directory_stamp`; one changed since ``recent`` (its change time
    may share a clock tick with a later change) also with a digest of its names, which
    :func:`directories_hold` compares again until it has settled. None: a directory in
    ``listings`` (the names, folded, seen in it while judging) holds other names now."""
    directories = {}
    for directory in parents:
        stamp = directory_stamp(directory)
        if stamp[0] is not None and stamp[0] >= recent:
            names = _listed(directory)
            if names is None:
                return None
            if directory in listings and listings[directory] != {folded(os.fsdecode(name)) for name in names}:
                return None
            stamp.append(_digest(names))
        directories[directory] = stamp
    return directories


def directories_hold(directories: dict[str, list[Any]]) -> bool | None:
    """Whether every directory is as :func:`directory_stamps` saw it (None: one is not); True
    when some were kept with their names and all of those have now settled (no change from now
    on can share a clock tick with their change time, which alone tells from then on)."""
    now = time.time_ns()
    digests, settled = False, True
    for directory, (mtime, real, *digest) in directories.items():
        if directory_stamp(directory) != [mtime, real]:
            return None
        if digest:
            names = _listed(directory)
            if names is None or _digest(names) != digest[0]:
                return None
            digests = True
            settled = settled and mtime < now - RACY_NS
    return digests and settled


def by_directory(split: list[tuple[str, str, str]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Files (their paths ``rpartition``-ed at the separator) as their directories, each file's
    directory (an index into them) and its name (bytes), in the order given: :func:`sizes_hold`
    stats each name relative to its directory, which spares the kernel a walk of the whole
    path for every file."""
    directories: dict[str, int] = {}
    at = np.fromiter((directories.setdefault(parent, len(directories)) for parent, _, _ in split), dtype=np.int32,
                     count=len(split))
    names = np.array([os.fsencode(name) for _, _, name in split], dtype=bytes) if split else np.array([], dtype="S1")
    return list(directories), at, names


def sizes_hold(directories: list[str], at: np.ndarray, names: np.ndarray, sizes: np.ndarray, *,
               threads_from: int = THREADS_FROM, compiled: bool = True, open_at_once: int = OPEN_AT_ONCE) -> bool:
    """Whether each file (its directory ``directories[at[i]]``, its name ``names[i]``) has size
    ``sizes[i]`` on disk: one stat per file, the truthful minimum (a file cut short in place
    changes no directory), each relative to its directory opened once per run of its files; on
    every core from ``threads_from`` files. ``compiled``: by :mod:`mastpipe._sizes` where it was
    built, ``open_at_once`` directories open at a time (False: in Python, as where it was not;
    ~1.4 s against ~1.0 s for a million files on two cores)."""
    if not len(names):
        return True
    runs = _runs(at)
    if compiled and COMPILED:
        threads = cores() if len(names) >= threads_from else 1
        wanted = np.ascontiguousarray(sizes, dtype=np.int64)
        return all(_compiled_span_holds(directories, at[start:end], names[start:end], wanted[start:end], threads)
                   for start, end in _spans(runs, open_at_once))
    expected: list[int] = sizes.tolist()
    stat = os.stat
    if stat not in os.supports_dir_fd:  # Windows: whole paths
        found: list[int] = [stat(os.path.join(os.fsencode(directories[where]), name)).st_size
                            for start, end, where in runs for name in names[start:end].tolist()]
        return found == expected
    halves = _in_turns(lambda first, step: _runs_hold(directories, runs[first::step], names, expected),
                       two=len(names) >= threads_from and len(runs) >= 2)
    return all(half == b"\1" for half in halves)


def _runs(at: np.ndarray) -> list[tuple[int, int, int]]:
    """The runs of files in one directory: (start, end, directory) each."""
    starts = np.flatnonzero(np.append(True, at[1:] != at[:-1]))
    return list(zip(starts.tolist(), np.append(starts[1:], len(at)).tolist(), at[starts].tolist()))


def _spans(runs: list[tuple[int, int, int]], most: int) -> list[tuple[int, int]]:
    """The files cut into spans (start, end) of whole runs, each in at most ``most`` directories."""
    spans: list[tuple[int, int]] = []
    start, seen = 0, set[int]()
    for run_start, _, where in runs:
        if where not in seen and len(seen) == most:
            spans.append((start, run_start))
            start, seen = run_start, set()
        seen.add(where)
    return [*spans, (start, runs[-1][1])]


def _compiled_span_holds(directories: list[str], at: np.ndarray, names: np.ndarray, sizes: np.ndarray,
                         threads: int) -> bool:
    """:func:`sizes_hold` of a span of the files by :mod:`mastpipe._sizes`, each of its
    directories opened here once."""
    used = np.unique(at)
    fds: list[int] = []
    try:
        for where in used.tolist():
            fds.append(os.open(directories[where], os.O_RDONLY | os.O_DIRECTORY))
        fd_of = np.zeros(len(directories), dtype=np.int32)
        fd_of[used] = fds
        return bool(_sizes.sizes_hold(fd_of[at], np.ascontiguousarray(names), names.dtype.itemsize, sizes, threads))
    except OSError:  # a directory gone, or no longer one
        return False
    finally:
        for fd in fds:
            os.close(fd)


def _in_turns(work: Callable[[int, int], bytes], two: bool) -> list[bytes]:
    """``work(first, step)`` over every item: ``[work(0, 1)]``, or with ``two``
    ``[work(0, 2), work(1, 2)]``, the second on the other core. Where forking is safe (Linux, no
    other thread) that is a forked process, which shares no GIL: on two cores 1M stats took
    ~1.4 s that way, 1.9-2.0 s on two threads and 2.7 s on one (os.stat lets go of the GIL, but
    building each answer holds it). Elsewhere a second thread."""
    if not two:
        return [work(0, 1)]
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return _forked(work)
    halves = [b"", b""]

    def second() -> None:
        halves[1] = work(1, 2)

    other = threading.Thread(target=second)
    other.start()
    try:
        halves[0] = work(0, 2)
    finally:
        other.join()
    return halves


def _forked(work: Callable[[int, int], bytes]) -> list[bytes]:
    """``[work(0, 2), work(1, 2)]``, the second in a forked child that writes its answer (length
    first) to a pipe and leaves without any clean-up of the parent's state; a child that fails
    or answers short leaves its half to be done here."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read)
            answer = work(1, 2)
            view = memoryview(len(answer).to_bytes(8, "little") + answer)
            while view:
                view = view[os.write(write, view):]
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    try:
        mine = work(0, 2)
        chunks = []
        while chunk := os.read(read, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(read)
        _, status = os.waitpid(pid, 0)
    theirs = b"".join(chunks)
    if os.waitstatus_to_exitcode(status) or len(theirs) < 8 or int.from_bytes(theirs[:8], "little") != len(theirs) - 8:
        return [mine, work(1, 2)]
    return [mine, theirs[8:]]


def _runs_hold(directories: list[str], runs: list[tuple[int, int, int]], names: np.ndarray,
               expected: list[int]) -> bytes:
    """:func:`sizes_hold` for ``runs`` (start, end, directory): ``b"\1"`` when every file has
    its size, else ``b"\0"``."""
    stat = os.stat
    for start, end, where in runs:
        try:
            fd = os.open(directories[where], os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            return b"\0"
        try:
            if [stat(name, dir_fd=fd).st_size for name in names[start:end].tolist()] != expected[start:end]:
                return b"\0"
        except OSError:  # a file gone, or its name no longer a file
            return b"\0"
        finally:
            os.close(fd)
    return b"\1"


def sizes_match(paths: list[str], sizes: list[int], *, threads_from: int = THREADS_FROM) -> list[bool]:
    """For each of ``paths``, whether a file of that size is there: one stat each, on both cores
    from ``threads_from`` files (as :func:`sizes_hold`, every one answered)."""
    def part(first: int, step: int) -> bytes:
        stat = os.stat
        found = bytearray(len(range(first, len(paths), step)))
        for k, i in enumerate(range(first, len(paths), step)):
            try:
                found[k] = stat(paths[i]).st_size == sizes[i]
            except OSError:  # gone, or not reachable: not there
                pass
        return bytes(found)

    halves = _in_turns(part, two=len(paths) >= threads_from)
    found = [False] * len(paths)
    for first, half in enumerate(halves):
        found[first::len(halves)] = [bool(flag) for flag in half]
    return found
