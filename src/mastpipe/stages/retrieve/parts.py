"""Large cloud copies as parallel ranged parts into one temporary, resumable part by part.

An S3 object larger than twice ``DownloadSettings.s3_part_size`` is fetched as parts of that
size, ``s3_parts`` at a time, each a ``GetObject`` with ``Range`` and ``IfMatch`` (the ETag the
first ``HeadObject`` gave). A part is a segment of the shared mechanism MAST's large downloads
use: :func:`~mastpipe.stages.retrieve.segments.fetch_segments` runs the connections (a fixed
number here, :meth:`~mastpipe.stages.retrieve.segments.Ramp.fixed`: S3 has no per-client limit
to be polite to), and a :class:`~mastpipe.stages.retrieve.segmented.SegmentedTemporary` holds
the bytes in ``.<name>.parts``, preallocated to the object's size, and hashes the whole file in
order as the parts arrive. A part counts as done only once its bytes are on disk (``fdatasync``)
and its number is in ``.<name>.parts.json`` (written atomically), so a run killed with
``kill -9`` resumes with the parts still missing and never fetches a complete part twice. When
every part is there the temporary is renamed to ``.<name>.part`` with its metadata, and finished
by the engine like any other download (size and sha256 verified, renamed, recorded).

An object that changed since the parts began answers 412 to IfMatch: the parts are thrown away
and the file starts again. A part cut short is asked again from its start (a part is small),
and only its bytes not yet written are written.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mastpipe.atomic import atomic_write_bytes
from mastpipe.retry import is_transient_status
from mastpipe.stages.retrieve.checksum import FitsChecksum, is_fits_name
from mastpipe.stages.retrieve.decide import PartMeta
from mastpipe.stages.retrieve.files import Event, FileTask
from mastpipe.stages.retrieve.segmented import Segment, SegmentedTemporary, SegmentMap
from mastpipe.stages.retrieve.segments import Ramp, SegmentSink, Slots, fetch_segments
from mastpipe.stages.retrieve.temporaries import part_path, write_meta

if TYPE_CHECKING:
    from mastpipe.stages.retrieve.fetch import FileFetcher

__all__ = ["data_path", "fetch_parts", "state_path", "wanted"]


def data_path(dest: Path) -> Path:
    """The parts' temporary beside ``dest``: ``.<name>.parts``."""
    return dest.with_name(f".{dest.name}.parts")


def state_path(dest: Path) -> Path:
    """Which parts are done: ``.<name>.parts.json``."""
    return dest.with_name(f".{dest.name}.parts.json")


def wanted(task: FileTask, part_size: int, parts: int) -> bool:
    """Whether ``task`` is fetched in parts: a cloud copy of known size over two parts."""
    return task.source == "s3" and parts > 1 and task.size is not None and task.size > 2 * part_size


def discard_parts(dest: Path) -> None:
    for path in (data_path(dest), state_path(dest)):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


class Changed(Exception):
    """The object's ETag is not the one the parts began with (412): start again."""


def fetch_parts(fetcher: FileFetcher, task: FileTask, counters: Any, retry: Any,
                fail: Any) -> tuple[PartMeta, str, int, FitsChecksum | None]:
    """Fetch ``task`` in parts (see the module's docstring); returns (the metadata of the
    complete ``.part`` temporary it leaves for the engine to verify and rename, its sha256, its
    size, its FITS checksum check), as :meth:`Attempt.run
    <mastpipe.stages.retrieve.attempt.Attempt.run>` does.

    ``retry`` and ``fail`` are the engine's exception classes (a transient failure the engine's
    loop waits on, and a final one); a part's transient failures are waited on here, with the
    engine's policy and the run's retry budget, and never throw away other parts.
    """
    settings = fetcher.settings
    if settings.s3 is None:
        raise fail("a cloud copy, but these download settings have no S3 client")
    dest = Path(task.dest)
    size = int(task.size or 0)
    part = settings.s3_part_size
    state = _read(state_path(dest))
    done = _done(state, size, part)
    if state is None or done is None or not data_path(dest).is_file() or data_path(dest).stat().st_size != size:
        discard_parts(dest)
        state = {"size": size, "part_size": part, "etag": _head(fetcher, task, counters, retry, fail), "done": []}
        done = SegmentMap(part)
        _write(state_path(dest), state)
    etag = state["etag"]

    def persist(segments: SegmentMap) -> None:
        _write(state_path(dest), {**state, "done": sorted(segments.done)})

    fits = FitsChecksum() if is_fits_name(dest.name) else None
    temporary = SegmentedTemporary(data_path(dest), size, done, persist, settings.chunk_size,
                                   also=[fits] if fits is not None else [])
    slots = Slots(settings.s3_parts)
    slots.acquire()  # the calling thread's own connection
    try:
        if done.done:
            fetcher._emit(Event("bytes", task.key, nbytes=done.done_bytes(size)))
        lock = threading.Lock()
        fetch_segments(temporary, lambda segment, sink: _fetch_part(fetcher, task, etag, segment, sink, counters,
                                                                    lock, retry, fail),
                       slots, ramp=Ramp.fixed(), cancelled=fetcher._cancel.is_set)
        sha = temporary.sha256()
        os.fsync(temporary.fd)
    except Changed:
        temporary.close()
        discard_parts(dest)
        fetcher._emit(Event("restart", task.key))
        raise retry("the object changed while its parts were fetched", discard=True) from None
    except InterruptedError:
        temporary.close()
        raise fail("interrupted") from None
    except BaseException:
        temporary.close()
        raise
    finally:
        slots.release()
    temporary.close()  # the last parts recorded: nothing writes the state after this
    meta = PartMeta(size=size, etag=etag, last_modified=None)
    os.replace(data_path(dest), part_path(dest))
    write_meta(dest, meta)
    state_path(dest).unlink()
    return meta, sha, size, fits


def _head(fetcher: FileFetcher, task: FileTask, counters: Any, retry: Any, fail: Any) -> str | None:
    """HeadObject: the ETag every part must match, once the bucket's size is the listed one."""
    from botocore.exceptions import ClientError

    from mastpipe.stages.retrieve.s3 import key_of_s3_uri, network_errors

    assert fetcher.settings.s3 is not None
    counters.requests += 1
    try:
        copy = fetcher.settings.s3.head(key_of_s3_uri(task.url))
    except network_errors() as exc:
        raise retry(f"S3: {type(exc).__name__}: {exc}") from None
    except ClientError as exc:  # 503 SlowDown and the like: the engine's loop waits
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if is_transient_status(int(status)):
            raise retry(f"S3 HeadObject: HTTP {status}") from None
        raise fail(f"S3 HeadObject: {exc}") from None
    if copy is None:
        raise fail(f"{task.url} is no longer in the bucket")
    if copy.size != task.size:
        raise fail(f"the bucket's copy has {copy.size} bytes, the product list says {task.size}")
    etag: str | None = copy.etag
    return etag


def _fetch_part(fetcher: FileFetcher, task: FileTask, etag: str | None, segment: Segment, sink: SegmentSink,
                counters: Any, lock: threading.Lock, retry: Any, fail: Any) -> None:
    """The S3 source of :func:`fetch_segments`: GetObject of one whole part until it is complete.

    Each part has its own count of failures in a row (what the policy limits); the run's retry
    budget, shared, still bounds them all.
    """
    from mastpipe.stages.retrieve.s3 import key_of_s3_uri, network_errors

    assert fetcher.settings.s3 is not None
    start, end, number = segment.start, segment.end, segment.index
    mine = type(counters)(attempts=counters.attempts)
    while True:
        if fetcher._cancel.is_set():
            raise fail("interrupted")
        with lock:
            counters.requests += 1
        try:
            response = fetcher.settings.s3.get(key_of_s3_uri(task.url),
                                               {"Range": f"bytes={start}-{end - 1}", "If-Range": etag or ""})
        except network_errors() as exc:
            mine.stalled += 1
            fetcher._wait_before_retry(task, mine, retry(f"S3 part {number}: {type(exc).__name__}"))
            continue
        with response:
            status = response.status_code
            if status == 412:
                raise Changed()
            if status != 206:
                reason = f"S3 part {number}: HTTP {status} {response.reason or ''}".strip()
                if is_transient_status(status):
                    mine.stalled += 1
                    fetcher._wait_before_retry(task, mine, retry(reason, response.headers.get("Retry-After")))
                    continue
                raise fail(reason)
            if response.headers.get("Content-Range") != f"bytes {start}-{end - 1}/{task.size}":
                mine.stalled += 1
                fetcher._wait_before_retry(task, mine, retry(f"S3 part {number}: wrong Content-Range"))
                continue
            if _read_part(fetcher, response, sink):
                fetcher._emit(Event("bytes", task.key, nbytes=segment.length))
                return
        mine.stalled += 1
        fetcher._wait_before_retry(task, mine, retry(f"S3 part {number} cut short"))


def _read_part(fetcher: FileFetcher, response: Any, sink: SegmentSink) -> bool:
    """Write the body of a whole part through ``sink``, skipping the bytes an earlier try wrote
    already; whether the part is complete. A disk that refuses the bytes raises."""
    position = sink.segment.start
    while sink.remaining > 0:
        try:
            block = response.raw.read1(fetcher.settings.chunk_size, decode_content=False)
        except Exception:  # noqa: BLE001 - urllib3's or the socket's: the part is asked again
            return False
        if not block:
            break
        skip = min(max(sink.position - position, 0), len(block))
        position += len(block)
        if skip < len(block):
            sink.write(memoryview(block)[skip:skip + sink.remaining])
    return sink.remaining == 0


def _done(state: dict[str, Any] | None, size: int, part: int) -> SegmentMap | None:
    """The parts a ``.parts.json`` records done, or None when it is not this object's."""
    if state is None or state.get("size") != size or state.get("part_size") != part:
        return None
    done = SegmentMap.from_json({"size": part, "done": state.get("done")})
    return done if done is not None and done.consistent(size) else None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write(path: Path, state: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(state).encode())
