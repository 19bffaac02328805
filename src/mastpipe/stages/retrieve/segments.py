"""Large files over several connections at once: ranged segments, resumable one by one.

A link that caps each connection (a congested path, a per-connection shaper, a far-away server
with a small TCP window) leaves one download at a fraction of what the machine can take. Like
aria2c ``-x``, rclone's multi-thread streams and s3transfer, a large file is then cut into
segments ``[start, end)`` fetched over several connections at once into one preallocated
temporary, each written at its own offset.

This module knows nothing of HTTP or S3: a *source* is any callable ``fetch(segment, sink)`` that
writes the bytes ``[sink.position, segment.end)`` of the remote file through ``sink.write``
(:class:`SegmentSink`) and raises when it cannot. The HTTP source is in
:mod:`mastpipe.stages.retrieve.engine`; an S3 ``GetObject`` with ``Range`` fits the same shape. Here:

* :func:`plan` cuts a size into segments; :class:`SegmentMap` is which are done, persisted in
  the temporary's ``.part.json`` (``"segments": {"size": ..., "done": [...]}``) after the data
  is fsynced, so a run killed at any moment refetches only the segments not recorded done;
* :class:`SegmentedTemporary` is the preallocated temporary: offset writes that never stop
  short (:func:`pwrite_all`), and the sha256 of the whole file computed in order, on a thread of
  its own, as the bytes before the cursor become complete, so verifying the whole costs no
  second pass;
* :func:`fetch_segments` runs the connections: the caller's thread is the first; more join
  only while :class:`Slots` (the run's bound on requests in flight, ``retrieve.in_flight``) has
  one to spare and nobody waits for it, and are kept only when they measurably raise the
  throughput (:class:`Ramp`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Ramp", "Segment", "SegmentMap", "SegmentSink", "SegmentedTemporary", "Segmenting", "Slots",
           "fetch_segments", "plan", "pwrite_all"]

#: What a recipe gets when it says nothing (see ``retrieve.segments``).
MIN_SIZE = 256 * 1000**2
SEGMENT_SIZE = 32 << 20
#: Segments per connection at least (see Segmenting.segment_size), and the smallest segment.
PER_CONNECTION = 8
SMALLEST = 1 << 16
#: The first connection runs alone this long, to measure what one connection gets.
PROBE_SECONDS = 0.3
#: More connections are kept when they raise throughput by at least this factor.
BENEFIT = 1.3


class _Check(Protocol):
    def update(self, block: memoryview, /) -> None: ...


@dataclass(frozen=True)
class Segmenting:
    """When one file is fetched over several connections (``retrieve.segments``).

    Attributes
    ----------
    min_size : int or None
        Files of at least this many bytes are fetched in ranged segments, when the server
        honours ``Range`` and the run may have more than one request in flight; None: never.
    size : int
        Bytes per segment at most: what a killed run may have to fetch again per connection.
        See :meth:`segment_size`.
    """

    min_size: int | None = MIN_SIZE
    size: int = SEGMENT_SIZE

    def segment_size(self, size: int, in_flight: int) -> int:
        """The segment size for a file of ``size`` bytes: ``self.size``, or less so that every
        connection gets at least PER_CONNECTION segments. Connections run out of segments at
        the end, and the last ones then finish alone: a short last round keeps that tail short
        (9 segments of 32 MiB over 4 connections would end with one connection for 1/3 of the
        time)."""
        return max(min(self.size, -(-size // (PER_CONNECTION * in_flight))), SMALLEST)

    def applies(self, size: int | None, in_flight: int) -> bool:
        """Whether a file of ``size`` bytes is worth asking in segments with ``in_flight`` slots."""
        return (self.min_size is not None and size is not None and in_flight > 1
                and size >= self.min_size and size > self.size)


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
    """Which segments of a temporary are complete: what its ``.part.json`` remembers."""

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


class Slots:
    """The run's bound on requests in flight, shared by whole files and extra segments.

    Each file being fetched holds one slot for its own connection (:meth:`acquire`, which
    waits); a segmented file's extra connections take spare slots only (:meth:`try_acquire`)
    and give them back after each segment when a file is waiting (:attr:`contended`), so
    splitting one file never delays the next or exceeds ``retrieve.in_flight``.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._waiting = 0
        self._cond = threading.Condition()

    def acquire(self) -> None:
        with self._cond:
            self._waiting += 1
            try:
                self._cond.wait_for(lambda: self._used < self.limit)
            finally:
                self._waiting -= 1
            self._used += 1

    def try_acquire(self) -> bool:
        with self._cond:
            if self._waiting or self._used >= self.limit:
                return False
            self._used += 1
            return True

    def release(self) -> None:
        with self._cond:
            self._used -= 1
            self._cond.notify()

    @property
    def contended(self) -> bool:
        """A whole file is waiting for a slot."""
        with self._cond:
            return self._waiting > 0


class SegmentedTemporary:
    """A temporary of ``size`` bytes written at offsets by several connections at once.

    The file is preallocated (``posix_fallocate``: a full disk fails now, not at 90%), the
    map persisted through ``persist`` whenever a segment completes (after ``fdatasync``, so a
    segment recorded done is on disk), and the sha256 of the whole file computed in order on a
    thread of its own from what is on disk: the hash covers exactly the bytes the file holds.

    Parameters
    ----------
    path : path-like
        The temporary (``.<name>.part``); created if absent, never followed if a symlink.
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
                 also: Sequence[_Check] = ()) -> None:
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
        buffer = bytearray(self._chunk)
        view = memoryview(buffer)
        try:
            while self._hashed < self.size:
                with self._lock:
                    self._lock.wait_for(lambda: self._closing or self._available() > 0)
                    if self._closing:
                        return
                    ready = min(self._available(), self._chunk)
                got = os.preadv(self.fd, [view[:ready]], self._hashed)
                if got <= 0:
                    raise OSError(errno.EIO, f"temporary shorter than {self._hashed + ready} bytes")
                self._digest.update(view[:got])
                for check in self._also:
                    check.update(view[:got])
                self._hashed += got
        except BaseException as exc:  # noqa: BLE001 - reported by sha256()
            self._hash_error = exc

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


class _Stopped(Exception):
    """Another connection failed: this one stops between two blocks (its bytes are kept)."""


class SegmentSink:
    """What a source writes one segment's bytes through."""

    def __init__(self, temporary: SegmentedTemporary, segment: Segment, on_bytes: Callable[[int], None],
                 stop: threading.Event | None = None):
        self.temporary, self.segment = temporary, segment
        self._on_bytes = on_bytes
        self._stop = stop

    @property
    def position(self) -> int:
        """The next byte of the file this segment needs."""
        return self.temporary.position(self.segment)

    @property
    def remaining(self) -> int:
        return self.segment.end - self.position

    def write(self, view: memoryview) -> None:
        self.temporary.write(self.segment, view)
        self._on_bytes(len(view))
        if self._stop is not None and self._stop.is_set():
            raise _Stopped


class Ramp:
    """Whether more connections help, from measured throughput.

    The first connection runs alone for ``probe`` seconds; then the spare slots join. Once
    they have had ``probe`` seconds to connect and get going, the whole is measured for
    ``probe`` seconds more: the joined connections stay only if it went at least ``benefit``
    times as fast as the first alone (a link capped per connection); otherwise (a CPU-bound
    client, a link that one connection fills) they leave after their segment.
    """

    def __init__(self, probe: float = PROBE_SECONDS, benefit: float = BENEFIT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.probe, self.benefit, self._clock = probe, benefit, clock
        self._lock = threading.Lock()
        self._bytes = 0
        self._start = clock()
        self._alone_rate: float | None = None
        self._joined: float | None = None
        self._window: tuple[float, int] | None = None
        self.verdict: bool | None = None  # None: still measuring

    def add(self, nbytes: int) -> str | None:
        """Count bytes; return ``"join"`` when extra connections should start, ``"leave"`` when
        they should go, else None."""
        with self._lock:
            self._bytes += nbytes
            if self.verdict is not None:
                return None
            now = self._clock()
            if self._joined is None:
                if now - self._start < self.probe:
                    return None
                self._alone_rate = self._bytes / max(now - self._start, 1e-9)
                self._joined = now
                return "join"
            if self._window is None:
                if now - self._joined >= self.probe:  # the new connections are under way
                    self._window = (now, self._bytes)
                return None
            since, base = self._window
            if now - since < self.probe:
                return None
            rate = (self._bytes - base) / max(now - since, 1e-9)
            self.verdict = rate >= self.benefit * (self._alone_rate or 0.0)
            return None if self.verdict else "leave"


def fetch_segments(temporary: SegmentedTemporary, fetch: Callable[[Segment, SegmentSink], None],
                   slots: Slots | None, *, on_bytes: Callable[[int], None] = lambda n: None,
                   cancelled: Callable[[], bool] = lambda: False, ramp: Ramp | None = None,
                   connection: Callable[[], object] | None = None,
                   first: Iterable[tuple[Segment, Callable[[SegmentSink], None]]] = ()) -> None:
    """Fetch every incomplete segment of ``temporary``; return when all are complete.

    The calling thread is the first connection (it holds its own slot already). Extra
    connections run on threads of their own, each holding a slot taken from ``slots`` while
    spare (none when ``slots`` is None), and leave after a segment when a file waits for a
    slot or the ramp finds they do not help.

    Parameters
    ----------
    fetch : callable
        ``fetch(segment, sink)`` writes bytes ``[sink.position, segment.end)`` through
        ``sink.write``; it may stop early (the segment is asked for again from where it
        stopped) and raises on errors. Called from several threads at once.
    first : iterable
        ``(segment, writer)`` pairs to run first on the calling thread, e.g. the body of the
        probing request that found the server honours ``Range``.
    connection : callable, optional
        Called when a helper thread ends, to close that thread's connection.

    Raises
    ------
    Exception
        The first error a connection raised, once the others have stopped (what they wrote
        is kept: their segments resume from there).
    """
    ramp = ramp or Ramp()
    queue_lock = threading.Lock()
    claimed: set[int] = set()
    errors: list[BaseException] = []
    helpers: list[threading.Thread] = []
    stop = threading.Event()
    state = {"leave": False}

    def counted(nbytes: int) -> None:
        on_bytes(nbytes)
        if ramp.add(nbytes) == "join":
            _join()
        elif ramp.verdict is False:
            state["leave"] = True

    def claim() -> Segment | None:
        with queue_lock:
            for segment in temporary.todo():
                if segment.index not in claimed:
                    claimed.add(segment.index)
                    return segment
        return None

    def run_one(segment: Segment, writer: Callable[[SegmentSink], None] | None = None) -> None:
        """Fetch ``segment`` to its end: ``writer`` first if given, then fresh requests."""
        sink = SegmentSink(temporary, segment, counted, stop)
        try:
            while sink.remaining > 0 and not stop.is_set():
                if cancelled():
                    raise InterruptedError("interrupted")
                before = sink.position
                try:
                    if writer is not None:
                        writer(sink)
                    else:
                        fetch(segment, sink)
                except _Stopped:
                    return
                writer = None  # a body that stopped early: ask for the rest
                if sink.position == before and sink.remaining > 0:
                    raise ConnectionError(f"no bytes for segment {segment.index} at {before}")
            if sink.remaining == 0:
                temporary.finish_segment(segment)
        finally:
            with queue_lock:
                claimed.discard(segment.index)

    def loop(helper: bool) -> None:
        try:
            while not stop.is_set():
                if helper and (state["leave"] or (slots is not None and slots.contended)):
                    return
                segment = claim()
                if segment is None:
                    return
                run_one(segment)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller's thread
            errors.append(exc)
            stop.set()

    def helper_main() -> None:
        try:
            loop(helper=True)
        finally:
            if slots is not None:
                slots.release()
            if connection is not None:
                connection()

    def _join() -> None:
        if slots is None or stop.is_set():
            return
        with queue_lock:
            pending = len([s for s in temporary.todo() if s.index not in claimed])
        for _ in range(pending):
            if not slots.try_acquire():
                break
            thread = threading.Thread(target=helper_main, daemon=True, name="mastpipe-segment")
            helpers.append(thread)
            thread.start()

    try:
        for segment, writer in first:
            with queue_lock:
                claimed.add(segment.index)
            run_one(segment, writer)
        loop(helper=False)
    except BaseException as exc:  # noqa: BLE001
        errors.append(exc)
        stop.set()
    finally:
        # helpers may still be starting: keep joining until none is left
        while helpers:
            helpers.pop().join()
    if errors:
        raise errors[0]
    if temporary.todo():  # a helper left with its segment unfinished and nobody took it over
        fetch_segments(temporary, fetch, None, on_bytes=on_bytes, cancelled=cancelled, ramp=ramp)
