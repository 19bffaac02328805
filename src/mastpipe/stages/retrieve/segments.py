"""Large files over several connections at once: ranged segments, resumable one by one.

A link that caps each connection (a congested path, a per-connection shaper, a far-away server
with a small TCP window) leaves one download at a fraction of what the machine can take. Like
aria2c ``-x``, rclone's multi-thread streams and s3transfer, a large file is then cut into
segments ``[start, end)`` fetched over several connections at once into one preallocated
temporary, each written at its own offset.

This module knows nothing of HTTP or S3: a *source* is any callable ``fetch(segment, sink)`` that
writes the bytes ``[sink.position, segment.end)`` of the remote file through ``sink.write``
(:class:`SegmentSink`) and raises when it cannot. MAST's HTTPS source is in
:mod:`mastpipe.stages.retrieve.attempt`, S3's ranged ``GetObject`` in
:mod:`mastpipe.stages.retrieve.parts`. The file's side (:func:`plan`, :class:`SegmentMap`, the
preallocated :class:`SegmentedTemporary` that hashes the whole file in order) is
:mod:`mastpipe.stages.retrieve.segmented`, re-exported here. Here:

* :class:`Segmenting` says when a MAST download is segmented (``retrieve.segments``); MAST's
  map is persisted in the temporary's ``.part.json`` (``"segments": {"size": ..., "done":
  [...]}``);
* :func:`fetch_segments` runs the connections: the caller's thread is the first; more join
  only while :class:`Slots` (the run's bound on requests in flight, ``retrieve.in_flight``) has
  one to spare and nobody waits for it, and are kept only when they measurably raise the
  throughput (:class:`Ramp`; a fixed number of connections, as S3's parts use, is
  :meth:`Ramp.fixed`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mastpipe.stages.retrieve.segmented import Segment, SegmentedTemporary, SegmentMap, plan, pwrite_all

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

    @classmethod
    def fixed(cls) -> Ramp:
        """A ramp that has decided already: every spare slot joins at once and stays (a fixed
        number of connections, set by the :class:`Slots` given to :func:`fetch_segments`)."""
        ramp = cls()
        ramp.verdict = True
        return ramp


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
        if ramp.verdict:  # decided already (Ramp.fixed): no probe alone first
            _join()
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
