"""Large cloud copies as parallel ranged parts into one temporary, resumable part by part.

An S3 object larger than twice ``DownloadSettings.s3_part_size`` is fetched as parts of that
size, ``s3_parts`` at a time, each a ``GetObject`` with ``Range`` and ``IfMatch`` (the ETag the
first ``HeadObject`` gave), written in place (``pwrite``) into ``.<name>.parts``, preallocated to
the object's size. A part counts as done only once its bytes are on disk (``fdatasync``) and its
number is in ``.<name>.parts.json`` (written atomically), so a run killed with ``kill -9``
resumes with the parts still missing and never fetches a complete part twice. When every part is
there the file is hashed whole, renamed to ``.<name>.part`` with its metadata, and finished by
the engine like any other download (size and sha256 verified, renamed, recorded).

An object that changed since the parts began answers 412 to IfMatch: the parts are thrown away
and the file starts again. A part cut short is asked again from its start (a part is small).
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mastpipe.atomic import atomic_write_bytes
from mastpipe.retry import is_transient_status
from mastpipe.stages.retrieve.decide import PartMeta
from mastpipe.stages.retrieve.files import Event, FileTask
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


def fetch_parts(fetcher: FileFetcher, task: FileTask, counters: Any, retry: Any, fail: Any) -> PartMeta:
    """Fetch ``task`` in parts (see the module's docstring); returns the metadata of the complete
    ``.part`` temporary it leaves for the engine to verify and rename.

    ``retry`` and ``fail`` are the engine's exception classes (a transient failure the engine's
    loop waits on, and a final one); a part's transient failures are waited on here, with the
    engine's policy and the run's retry budget, and never throw away other parts.
    """
    from mastpipe.stages.retrieve.s3 import key_of_s3_uri, network_errors

    settings = fetcher.settings
    s3 = settings.s3
    if s3 is None:
        raise fail("a cloud copy, but these download settings have no S3 client")
    dest = Path(task.dest)
    key = key_of_s3_uri(task.url)
    size = int(task.size or 0)
    part = settings.s3_part_size
    count = -(-size // part)
    state = _read(state_path(dest))
    if not state or state.get("size") != size or state.get("part_size") != part \
            or not data_path(dest).is_file() or data_path(dest).stat().st_size != size:
        discard_parts(dest)
        counters.requests += 1
        from botocore.exceptions import ClientError

        try:
            copy = s3.head(key)
        except network_errors() as exc:
            raise retry(f"S3: {type(exc).__name__}: {exc}") from None
        except ClientError as exc:  # 503 SlowDown and the like: the engine's loop waits
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if is_transient_status(int(status)):
                raise retry(f"S3 HeadObject: HTTP {status}") from None
            raise fail(f"S3 HeadObject: {exc}") from None
        if copy is None:
            raise fail(f"{task.url} is no longer in the bucket")
        if copy.size != size:
            raise fail(f"the bucket's copy has {copy.size} bytes, the product list says {size}")
        state = {"size": size, "part_size": part, "etag": copy.etag, "done": []}
        fd = os.open(data_path(dest), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        _write(state_path(dest), state)
    done = set(state["done"])
    lock = threading.Lock()
    fd = os.open(data_path(dest), os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))

    def one(number: int) -> None:
        start, end = number * part, min(size, (number + 1) * part)
        # Each part has its own count of failures in a row (what the policy limits); the run's
        # retry budget, shared, still bounds them all.
        mine = type(counters)(attempts=counters.attempts)
        while True:
            if fetcher._cancel.is_set():
                raise fail("interrupted")
            with lock:
                counters.requests += 1
            try:
                response = s3.get(key, {"Range": f"bytes={start}-{end - 1}", "If-Range": state["etag"]})
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
                if response.headers.get("Content-Range") != f"bytes {start}-{end - 1}/{size}":
                    mine.stalled += 1
                    fetcher._wait_before_retry(task, mine, retry(f"S3 part {number}: wrong Content-Range"))
                    continue
                position = start
                try:
                    while position < end:
                        block = response.raw.read1(settings.chunk_size, decode_content=False)
                        if not block:
                            break
                        os.pwrite(fd, block[:end - position], position)
                        position += len(block)
                except Exception:  # noqa: BLE001 - urllib3's or the socket's: the part is asked again
                    position = -1
            if position != end:
                mine.stalled += 1
                fetcher._wait_before_retry(task, mine, retry(f"S3 part {number} cut short"))
                continue
            os.fdatasync(fd)
            with lock:
                done.add(number)
                state["done"] = sorted(done)
                _write(state_path(dest), state)
            fetcher._emit(Event("bytes", task.key, nbytes=end - start))
            return

    try:
        todo = [n for n in range(count) if n not in done]
        if done:
            fetcher._emit(Event("bytes", task.key, nbytes=sum(min(size, (n + 1) * part) - n * part for n in done)))
        with ThreadPoolExecutor(min(settings.s3_parts, len(todo)) or 1, thread_name_prefix="mastpipe-part") as pool:
            for future in [pool.submit(one, n) for n in todo]:
                future.result()
        os.fsync(fd)
    except Changed:
        os.close(fd)
        discard_parts(dest)
        fetcher._emit(Event("restart", task.key))
        raise retry("the object changed while its parts were fetched", discard=True) from None
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    meta = PartMeta(size=size, etag=state["etag"], last_modified=None)
    os.replace(data_path(dest), part_path(dest))
    write_meta(dest, meta)
    state_path(dest).unlink()
    return meta


def _read(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write(path: Path, state: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(state).encode())
