"""One file's segments on disk: how a file is cut, which parts are done, the shared temporary.

A large file fetched over several connections at once (MAST's HTTPS in ranged *segments*,
:mod:`mastpipe.stages.retrieve.segments`; an S3 object in ranged *parts*,
:mod:`mastpipe.stages.retrieve.parts`) is cut by :func:`plan` into :class:`Segment` ranges
``[start, end)``, written at their offsets into one preallocated :class:`SegmentedTemporary`, and
remembered segment by segment in a :class:`SegmentMap` persisted after the data is fsynced, so a
run killed at any moment refetches only the segments not recorded done. The temporary computes
the sha256 (and a FITS file's checksums) of the whole file in order, on a thread of its own, as
the bytes before its cursor become complete: verifying the whole costs no second pass.

Nothing here knows HTTP, S3 or threads of connections: who fetches what is
:func:`mastpipe.stages.retrieve.segments.fetch_segments`'s business, and where a map is persisted
(``.part.json`` for MAST's segments, ``.parts.json`` for S3's parts) is the caller's.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mastpipe.stages.retrieve.body import BufferRing, Check

__all__ = ["Segment", "SegmentMap", "SegmentedTemporary", "plan", "pwrite_all"]


def pwrite_all(fd: int, view: memoryview, offset: int) -> int:
    """Write all of ``view`` at ``offset`` (``pwrite`` again after a short write); return the
    bytes written. A write that makes no progress raises ``OSError(ENOSPC)``: the positional
    twin of :func:`mastpipe.stages.retrieve.temporaries.write_all`, for writers that share a
    file."""
    total = len(view)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]
        offset += written
    return total


@dataclass(frozen=True)
class Segment:
    """Bytes ``[start, end)`` of a file, the ``index``-th of its :func:`plan`."""

    index: int
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def plan(size: int, segment_size: int) -> list[Segment]:
    """Cut ``size`` bytes into segments of ``segment_size`` (the last one shorter)."""
    if segment_size < 1:
        raise ValueError("segment_size must be positive")
    return [Segment(i, start, min(start + segment_size, size))
            for i, start in enumerate(range(0, size, segment_size))]


@dataclass(frozen=True)
class SegmentMap:
    """Which segments of a temporary are complete: what its ``.part.json`` (S3's parts:
    ``.parts.json``) remembers."""

    segment_size: int
    done: frozenset[int] = frozenset()

    def to_json(self) -> dict[str, object]:
        return {"size": self.segment_size, "done": sorted(self.done)}

    @classmethod
    def from_json(cls, data: object) -> SegmentMap | None:
        """The map, or None when ``data`` is not one (torn, hand-edited: restart the file)."""
        if not isinstance(data, dict):
            return None
        size, done = data.get("size"), data.get("done")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1 or not isinstance(done, list):
            return None
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in done):
            return None
        return cls(size, frozenset(done))

    def done_bytes(self, total: int) -> int:
        """Bytes in complete segments of a ``total``-byte file."""
        return sum(s.length for s in plan(total, self.segment_size) if s.index in self.done)

    def complete(self, total: int) -> bool:
        return all(s.index in self.done for s in plan(total, self.segment_size))

    def consistent(self, total: int) -> bool:
        """Whether every recorded index is one of a ``total``-byte file's segments."""
        count = len(plan(total, self.segment_size))
        return all(i < count for i in self.done)


class SegmentedTemporary:
    """A temporary of ``size`` bytes written at offsets by several connections at once.

    The file is preallocated (``posix_fallocate``: a full disk fails now, not at 90%), the
    map persisted through ``persist`` whenever a segment completes (after ``fdatasync``, so a
    segment recorded done is on disk), and the sha256 of the whole file computed in order on a
    thread of its own from what is on disk: the hash covers exactly the bytes the file holds.

    Parameters
    ----------
    path : path-like
        The temporary (``.<name>.part``; ``.<name>.parts`` for S3); created if absent, never
        followed if a symlink.
    size : int
        The file's size.
    segments : SegmentMap
        The segment size and the segments already complete on disk.
    persist : callable
        Called with the new :class:`SegmentMap` after each segment is complete and synced.
    chunk : int
        Size of the buffers the hash reads the file back with.
    also : sequence
        More checks fed the whole file in order, as the sha256 is (``update(block)``; a FITS
        file's CHECKSUM/DATASUM): each must copy what it keeps of a block.
    """

    def __init__(self, path: os.PathLike[str] | str, size: int, segments: SegmentMap,
                 persist: Callable[[SegmentMap], None], chunk: int = 1 << 20,
                 also: Sequence[Check] = ()) -> None:
        self._also = list(also)
        self.size = size
        self.segments = plan(size, segments.segment_size)
        self._map = segments
        self._persist = persist
        self._chunk = chunk
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        self.fd = os.open(path, flags, 0o644)
        try:
            if os.fstat(self.fd).st_size != size:
                os.ftruncate(self.fd, size)
            if hasattr(os, "posix_fallocate"):
                try:
                    os.posix_fallocate(self.fd, 0, size)
                except OSError as exc:
                    if exc.errno == errno.ENOSPC:
                        raise
                    # EOPNOTSUPP (some network filesystems): the ftruncate above is enough
        except BaseException:
            os.close(self.fd)
            raise
        self._lock = threading.Condition()
        # bytes written from each segment's start (a segment is refetched from there on error)
        self._written = [s.length if s.index in segments.done else 0 for s in self.segments]
        self._digest = hashlib.sha256()
        self._hashed = 0
        self._hash_error: BaseException | None = None
        self._closing = False
        self._finished: set[int] = set()  # complete, not yet recorded in the map
        self._record_error: BaseException | None = None
        self._hasher = threading.Thread(target=self._hash_in_order, daemon=True, name="mastpipe-sha256")
        self._hasher.start()
        self._recorder = threading.Thread(target=self._record, daemon=True, name="mastpipe-segments")
        self._recorder.start()

    # -- writing ----------------------------------------------------------------------------------

    def todo(self) -> list[Segment]:
        """The segments not yet complete, in order."""
        with self._lock:
            return [s for s in self.segments if self._written[s.index] < s.length]

    def position(self, segment: Segment) -> int:
        """The next byte of ``segment`` to fetch (its start, or where an earlier try stopped)."""
        with self._lock:
            return segment.start + self._written[segment.index]

    def write(self, segment: Segment, view: memoryview) -> int:
        """Write ``view`` at the segment's position; refuse bytes past its end."""
        with self._lock:
            done = self._written[segment.index]
        if len(view) > segment.length - done:
            raise ValueError(f"{len(view)} bytes past the end of segment {segment.index}")
        pwrite_all(self.fd, view, segment.start + done)
        with self._lock:
            self._written[segment.index] = done + len(view)
            self._lock.notify_all()
        return len(view)

    def bytes_written(self) -> int:
        with self._lock:
            return sum(self._written)

    def finish_segment(self, segment: Segment) -> None:
        """Mark ``segment`` complete; the recorder thread syncs the data, then persists the map."""
        with self._lock:
            if self._written[segment.index] != segment.length:
                raise ValueError(f"segment {segment.index} is not complete")
            self._finished.add(segment.index)
            self._lock.notify_all()

    def _record(self) -> None:
        """Persist complete segments, in batches, each after an ``fdatasync`` of the data: a
        connection goes on to its next segment at once instead of waiting for the disk."""
        try:
            while True:
                with self._lock:
                    self._lock.wait_for(lambda: self._closing or self._finished)
                    if not self._finished:
                        return
                    batch, self._finished = self._finished, set()
                os.fdatasync(self.fd)
                with self._lock:
                    self._map = SegmentMap(self._map.segment_size, self._map.done | batch)
                    recorded = self._map
                self._persist(recorded)  # only this thread persists: maps reach disk in order
        except BaseException as exc:  # noqa: BLE001 - reported by sha256()
            self._record_error = exc

    @property
    def map(self) -> SegmentMap:
        """The map as last recorded."""
        with self._lock:
            return self._map

    # -- hashing ----------------------------------------------------------------------------------

    def _available(self) -> int:
        """Bytes complete from the hash cursor on (caller holds the lock)."""
        segment_size = self._map.segment_size
        position, available = self._hashed, 0
        while position < self.size:
            index = position // segment_size
            segment = self.segments[index]
            end = segment.start + self._written[index]
            if end <= position:
                break
            available += end - position
            if end < segment.end:
                break
            position = end
        return available

    def _hash_in_order(self) -> None:
        # sha256 here; the other checks (the FITS sum) on a thread of their own, from the same
        # buffers: on a fast link this thread is what a large file waits for, and the two
        # checks together were a quarter more than sha256 alone (benchmarks/README.md).
        others = BufferRing(list(self._also), self._chunk) if self._also else None
        own = memoryview(bytearray(self._chunk)) if others is None else None
        try:
            while self._hashed < self.size:
                with self._lock:
                    self._lock.wait_for(lambda: self._closing or self._available() > 0)
                    if self._closing:
                        return
                    ready = min(self._available(), self._chunk)
                view = own if others is None else others.take()
                assert view is not None
                got = os.preadv(self.fd, [view[:ready]], self._hashed)
                if got <= 0:
                    if others is not None:
                        others.give_back(view)
                    raise OSError(errno.EIO, f"temporary shorter than {self._hashed + ready} bytes")
                self._digest.update(view[:got])
                if others is not None:
                    others.check(view, got)
                self._hashed += got
        except BaseException as exc:  # noqa: BLE001 - reported by sha256()
            self._hash_error = exc
        finally:
            if others is not None:
                try:
                    others.close()  # every block checked before sha256() answers
                except BaseException as exc:  # noqa: BLE001 - reported by sha256()
                    self._hash_error = self._hash_error or exc

    def sha256(self) -> str:
        """The hex sha256 of the whole file once every segment is complete."""
        self._hasher.join()
        if self._hash_error is not None:
            raise self._hash_error
        if self._record_error is not None:
            raise self._record_error
        if self._hashed != self.size:
            raise ValueError(f"only {self._hashed} of {self.size} bytes hashed")
        return self._digest.hexdigest()

    def close(self) -> None:
        """Record the segments complete, stop the hash (if unfinished) and close the file;
        keeps what is on disk."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._recorder.join()
        self._hasher.join()
        os.close(self.fd)
