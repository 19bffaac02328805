"""Receiving one response body: into reused buffers, each checked on a thread of its own.

:func:`body_reader` receives a streamed body straight into a caller's buffer (one receive, no
allocation, no copy); :class:`BufferRing` holds the buffers a stream receives into and runs the
checks (sha256, FITS checksum) over each one a few blocks behind the write. Used by
:class:`~mastpipe.stages.retrieve.attempt.Attempt` for one stream and for each segment's
connection.
"""

from __future__ import annotations

import http.client
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # requests is imported by what downloads, not by status (~0.08 s)
    import requests

__all__ = ["HASH_QUEUE", "RING_BYTES", "BufferRing", "Check", "body_reader", "release"]

HASH_QUEUE = 4  # blocks a stream may read ahead of its checks, at least
RING_BYTES = 16 << 20  # bytes a stream may read ahead of its checks, at most (see BufferRing)


class Check(Protocol):
    """Anything fed a body block by block: ``hashlib`` objects, a FITS checksum check."""

    def update(self, block: bytes | memoryview, /) -> None: ...


class BufferRing:
    """Preallocated buffers that a body is received into, then checked on a thread of its own.

    The stream receives into a free buffer (no allocation, no copy), writes it whole, and hands
    it to the ring's thread, which runs every check over it in turn (the sha256, then the FITS
    checksum of a FITS file) while the buffer is still in the CPU's cache, and frees it. Each
    byte is checked from the very buffer it was written from. sha256, numpy's sum and write()
    all release the GIL, so on a large file checking overlaps receiving and writing instead of
    adding to them.

    Buffers are made as the stream needs them, up to RING_BYTES (at least HASH_QUEUE + 1): a
    small file uses one or two, a large one may run up to RING_BYTES ahead of its checks, so a
    check thread that the scheduler sets aside for a few milliseconds does not stop the stream.
    One thread for all checks, not one each: a block wakes one thread, not two, and both checks
    together still take less CPU than receiving and writing (measured in benchmarks/README.md).
    """

    def __init__(self, checks: list[Check], chunk: int) -> None:
        self._free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        self._chunk = chunk
        self._room = max(RING_BYTES // chunk, HASH_QUEUE + 1)  # buffers still to make
        self._error: BaseException | None = None
        self._work: queue.SimpleQueue[tuple[memoryview, int] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, args=(checks,), daemon=True, name="mastpipe-check")
        self._thread.start()

    def _run(self, checks: list[Check]) -> None:
        while (item := self._work.get()) is not None:
            buffer, count = item
            if self._error is None:
                try:
                    for check in checks:
                        check.update(buffer[:count])
                except BaseException as exc:  # noqa: BLE001 - raised by close(); buffers keep flowing
                    self._error = exc
            self._free.put(buffer)

    def take(self) -> memoryview:
        """A free buffer (a new one while there is room; else waits until one is checked)."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            if self._room:
                self._room -= 1
                return memoryview(bytearray(self._chunk))
            return self._free.get()

    def give_back(self, buffer: memoryview) -> None:
        """Return a buffer that was not written."""
        self._free.put(buffer)

    def check(self, buffer: memoryview, count: int) -> None:
        """Check the first ``count`` bytes of a taken ``buffer`` (those written), then free it."""
        self._work.put((buffer, count))

    def close(self) -> None:
        """Wait until every block has been checked."""
        self._work.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def body_reader(response: requests.Response) -> Callable[[memoryview], int]:
    """``readinto(buffer) -> bytes read`` for a streamed response body, exactly as sent.

    For a body with a Content-Length, each call is one receive straight into the caller's
    buffer (``readinto1`` on the ``http.client`` response's socket file, under urllib3): no
    allocation and no copy, where urllib3's own reads allocate and copy every block. One
    receive, not a full buffer: on a slow link the bytes that arrived are written (and kept
    if the connection is lost) without waiting for a whole block. Returns 0 at the end of
    the body, or early when the connection closes; callers compare what arrived with what was
    announced. Other bodies (chunked, or ending at the connection's close) are read through
    urllib3 with ``decode_content=False``: stored exactly as sent either way.
    """
    raw = response.raw
    inner = getattr(raw, "_fp", None)
    socket_file = getattr(inner, "fp", None)
    if (isinstance(inner, http.client.HTTPResponse) and not inner.chunked and inner.length is not None
            and socket_file is not None and hasattr(socket_file, "readinto1")):
        def receive(buffer: memoryview) -> int:
            left = inner.length or 0
            got = socket_file.readinto1(buffer[:left]) if left else 0
            inner.length = left - got
            if not inner.length:
                inner.read()  # the whole body has arrived: http.client releases the connection
            return got
        return receive

    def read(buffer: memoryview) -> int:
        block = raw.read1(len(buffer), decode_content=False)
        buffer[:len(block)] = block
        return len(block)
    return read


def release(response: requests.Response) -> None:
    """Give a fully read response's connection back to its pool, for the next segment."""
    inner = getattr(response.raw, "_fp", None)
    if isinstance(inner, http.client.HTTPResponse) and inner.isclosed():
        response.raw.release_conn()

