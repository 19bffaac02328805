"""The resume logic of downloads, as pure decisions (no network, no disk access).

:func:`decide` looks at what is on disk and in the ledger for one file and says what to do
(skip it, adopt it, finish it, resume it, restart it, fetch it, or leave a foreign file alone);
:func:`judge` looks at a download response and says whether its body may be appended to the
temporary file, must replace it, or must be rejected. :mod:`mastpipe.stages.retrieve.engine` is the code that
acts on these decisions; keeping them apart is what lets every branch be unit-tested without a
server (pooch's ``download_action`` is the model).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mastpipe.stages.retrieve.ledger import DONE
from mastpipe.stages.retrieve.segmented import SegmentMap

if TYPE_CHECKING:
    import requests

__all__ = ["Action", "ActionKind", "LocalState", "PartMeta", "RemoteFacts", "ResponseFacts", "Verdict",
           "decide", "done_as_recorded", "judge", "parse_content_range"]

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


class ActionKind(enum.Enum):
    """What to do with one file before any request."""

    SKIP_DONE = "skip-done"  # ledger says done, size on disk matches: no request at all
    VERIFY_DONE = "verify-done"  # as SKIP_DONE, but re-hash and compare with the ledger first
    ADOPT = "adopt"  # complete file from an earlier manual download: hash and record
    FINISH_VERIFY = "finish-verify"  # the temporary already has every byte: verify and rename
    RESUME = "resume"  # GET with Range: bytes=offset- (and If-Range)
    RESTART = "restart"  # the temporary is unusable: delete it, then GET from zero
    FETCH = "fetch"  # nothing usable on disk: GET from zero
    KEEP_FOREIGN = "keep-foreign"  # overwrite="never" and another file is in the way: fail it


#: The old name, kept for callers (``Kind.FETCH``): "kind" alone names four things in mastpipe.
Kind = ActionKind


@dataclass(frozen=True)
class Action:
    """The outcome of :func:`decide`: a :class:`ActionKind`, the resume offset and why."""

    kind: ActionKind
    offset: int = 0
    reason: str = ""


@dataclass(frozen=True)
class PartMeta:
    """What ``.<name>.part.json`` remembers about the response that began a temporary file.

    Attributes
    ----------
    size : int or None
        Full size of the remote file as the server stated it, or as the product list expected.
    etag, last_modified : str or None
        The server's validators, sent back as ``If-Range`` on resume.
    segments : SegmentMap or None
        For a file fetched in ranged segments (:mod:`mastpipe.stages.retrieve.segments`): the segment size and
        which segments are complete. Such a temporary is preallocated to its full size, so
        its length says nothing; None for a temporary written from its start.
    """

    size: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    segments: SegmentMap | None = None

    @property
    def validator(self) -> str | None:
        """The ``If-Range`` value: a strong ETag, else Last-Modified (weak ETags are not allowed)."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


@dataclass(frozen=True)
class LocalState:
    """What is on disk and in the ledger for one file.

    Attributes
    ----------
    final_size : int or None
        Size of the file under its final name; None when absent (or known to be bad).
    final_changed : bool
        Its mtime or inode differ from those the ledger recorded with ``done``: it was
        rewritten or replaced since, so its size alone proves nothing.
    ledger_status : str or None
        ``"done"``, ``"failed"``, ``"running"`` or None (no row).
    ledger_size : int or None
        Size recorded with a ``done`` row.
    part_size : int or None
        Size of the temporary file; None when absent.
    part_meta : PartMeta or None
        Contents of the temporary's metadata file; None when absent or unreadable.
    verify : bool
        The user asked to re-hash completed files.
    overwrite : {"changed", "never", "always"}
        What to do with a file found under the final name that the ledger does not record as
        done: keep it when its size matches and replace it otherwise (``changed``), keep it
        when its size matches and fail otherwise (``never``), or replace it (``always``).
    """

    final_size: int | None = None
    final_changed: bool = False
    ledger_status: str | None = None
    ledger_size: int | None = None
    part_size: int | None = None
    part_meta: PartMeta | None = None
    verify: bool = False
    overwrite: str = "changed"
    #: Why the file recorded as done is no longer the product MAST lists (a new version, or a
    #: server validator that changed under ``--revalidate``), or None.
    reprocessed: str | None = None


@dataclass(frozen=True)
class RemoteFacts:
    """What is known about the remote file without asking the server: the product list's size."""

    size: int | None = None


def done_as_recorded(final_size: int | None, *, ledger_status: str | None, ledger_size: int | None,
                     expected: int | None, reprocessed: str | None) -> bool:
    """:func:`decide`'s first rule: a final file the ledger records as done, of the recorded
    (and ``expected``) size, not reprocessed since. Its temporary plays no part in the decision,
    so :func:`~mastpipe.stages.retrieve.temporaries.local_state` need not look for one."""
    return (final_size is not None and ledger_status == DONE and ledger_size == final_size
            and (expected is None or expected == final_size) and reprocessed is None)


def decide(local: LocalState, remote: RemoteFacts) -> Action:
    """Choose what to do with one file; the single home of the resume logic.

    Parameters
    ----------
    local : LocalState
        Disk and ledger state.
    remote : RemoteFacts
        Expected size from the product list.

    Returns
    -------
    Action
        See :class:`ActionKind`. The rules, in order:

        1. a final file that the ledger records as done, with the recorded (and expected) size:
           ``SKIP_DONE`` (``VERIFY_DONE`` when verifying, or when its mtime or inode changed
           since it was recorded);
        2. a final file with no done row whose size equals the expected size: ``ADOPT``
           (unless ``overwrite`` is ``always``); any other such file with ``overwrite`` ``never``:
           ``KEEP_FOREIGN``;
        3. otherwise the final file is not trusted (it will be replaced atomically) and the
           temporary decides: none -> ``FETCH``; no metadata, a different expected size (the
           remote changed), longer than the remote, or empty -> ``RESTART``; exactly as long as
           the remote -> ``FINISH_VERIFY``; shorter -> ``RESUME`` at its length, provided the
           remote size or a validator is known to guard the splice (else ``RESTART``);
        4. a temporary fetched in segments is judged by its map, not its length: every segment
           done -> ``FINISH_VERIFY``; some -> ``RESUME`` (offset: the bytes of the segments
           done); a map that does not fit the file -> ``RESTART``.
    """
    expected = remote.size
    if local.final_size is not None:
        if done_as_recorded(local.final_size, ledger_status=local.ledger_status, ledger_size=local.ledger_size,
                            expected=expected, reprocessed=local.reprocessed):
            if local.final_changed and not local.verify:
                return Action(ActionKind.VERIFY_DONE, reason="recorded as done, but modified or replaced "
                                                       "since (mtime or inode changed): re-hashing it")
            kind = ActionKind.VERIFY_DONE if local.verify else ActionKind.SKIP_DONE
            return Action(kind, reason="recorded as done and size on disk matches")
        # not written by mastpipe, or rewritten since: overwrite decides whether it may go
        foreign = local.ledger_status != DONE or local.final_changed
        if local.reprocessed is not None and local.overwrite == "never":
            return Action(ActionKind.KEEP_FOREIGN, reason=f"{local.reprocessed}, and overwrite is 'never': "
                                                          "the old version is kept")
        if (foreign and local.overwrite != "always" and expected is not None and local.final_size == expected
                and local.reprocessed is None):  # the same size is not the same version
            return Action(ActionKind.ADOPT, reason="complete file already present, not in the ledger")
        if foreign and local.overwrite == "never":
            return Action(ActionKind.KEEP_FOREIGN, reason=f"a different file ({local.final_size} bytes, expected "
                                                    f"{expected}) is already there and overwrite is 'never'")
    if local.part_size is None:
        if local.final_size is not None and local.reprocessed is not None:
            return Action(ActionKind.FETCH, reason=f"{local.reprocessed}: fetching the new version (the old file "
                                             "stays until the new one is verified)")
        if local.final_size is not None:
            return Action(ActionKind.FETCH, reason=f"file on disk has {local.final_size} bytes, "
                                             f"expected {expected}: replacing it")
        return Action(ActionKind.FETCH, reason="nothing on disk")
    meta = local.part_meta
    part = local.part_size
    if meta is None:
        return Action(ActionKind.RESTART, reason="temporary file without metadata")
    if expected is not None and meta.size is not None and meta.size != expected:
        return Action(ActionKind.RESTART, reason=f"remote size changed ({meta.size} -> {expected})")
    total = expected if expected is not None else meta.size
    if meta.segments is not None:
        segments = meta.segments
        if total is None or part > total or not segments.consistent(total) or (part < total and segments.done):
            return Action(ActionKind.RESTART, reason="segmented temporary does not match its segment map")
        if segments.complete(total):
            return Action(ActionKind.FINISH_VERIFY, reason="every segment of the temporary is complete")
        return Action(ActionKind.RESUME, offset=segments.done_bytes(total),
                      reason=f"resuming: {len(segments.done)} segment(s) of {segments.segment_size} bytes kept")
    if total is not None and part > total:
        return Action(ActionKind.RESTART, reason=f"temporary has {part} bytes, remote only {total}")
    if total is not None and part == total:
        return Action(ActionKind.FINISH_VERIFY, reason="temporary already complete")
    if part == 0:
        return Action(ActionKind.RESTART, reason="empty temporary")
    if total is None and meta.validator is None:
        return Action(ActionKind.RESTART, reason="neither size nor validator known: cannot splice")
    return Action(ActionKind.RESUME, offset=part, reason=f"resuming at byte {part}")


class Verdict(enum.Enum):
    """What to do with a 200/206 response body (see :func:`judge`)."""

    APPEND = "append"  # 206 starting at the offset asked for: write after the kept bytes
    FROM_ZERO = "from-zero"  # 200 with the whole body: truncate the temporary, never append
    REJECT = "reject"  # unusable (wrong start, changed remote): discard temporary, retry
    MISMATCH = "mismatch"  # the server's size contradicts the product list: integrity error


@dataclass(frozen=True)
class ResponseFacts:
    """The parts of a response :func:`judge` needs (status and headers)."""

    status: int
    content_range: str | None = None
    content_length: int | None = None
    etag: str | None = None
    last_modified: str | None = None

    @classmethod
    def from_response(cls, response: requests.Response) -> ResponseFacts:
        """Extract the facts from a ``requests`` response."""
        headers = response.headers
        length = headers.get("Content-Length")
        return cls(
            status=response.status_code,
            content_range=headers.get("Content-Range"),
            content_length=int(length) if length and length.strip().isdigit() else None,
            etag=headers.get("ETag"),
            last_modified=headers.get("Last-Modified"),
        )


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``"bytes 10-99/100"`` -> ``(10, 99, 100)``; ``*`` total -> None; malformed -> None."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None
    start, end, total = match.groups()
    return int(start), int(end), None if total == "*" else int(total)


def judge(offset: int, meta: PartMeta | None, expected: int | None,
          response: ResponseFacts) -> tuple[Verdict, int | None, str]:
    """Decide whether a successful response may be used, and how.

    Parameters
    ----------
    offset : int
        Bytes already kept (the ``Range`` start asked for; 0 when no Range was sent).
    meta : PartMeta or None
        Metadata of the temporary being resumed.
    expected : int or None
        Size from the product list.
    response : ResponseFacts
        Status 200 or 206 and headers.

    Returns
    -------
    verdict : Verdict
    total : int or None
        The full size the file must reach, when known.
    reason : str
        Human-readable explanation (for retries and errors).
    """
    if response.status == 206:
        parsed = parse_content_range(response.content_range)
        if parsed is None:
            return Verdict.REJECT, None, f"206 with unusable Content-Range {response.content_range!r}"
        start, _end, total = parsed
        if start != offset:
            return Verdict.REJECT, None, f"206 starts at byte {start}, asked for {offset}"
        if meta is not None:
            if meta.etag and response.etag and meta.etag != response.etag:
                return Verdict.REJECT, None, "remote file changed (ETag differs)"
            if (not (meta.etag and response.etag) and meta.last_modified
                    and response.last_modified and meta.last_modified != response.last_modified):
                return Verdict.REJECT, None, "remote file changed (Last-Modified differs)"
            if meta.size is not None and total is not None and meta.size != total:
                return Verdict.REJECT, None, f"remote size changed ({meta.size} -> {total})"
        if expected is not None and total is not None and total != expected:
            return Verdict.MISMATCH, total, f"server size {total}, product list says {expected}"
        return Verdict.APPEND, expected if expected is not None else total, "resuming"
    total = response.content_length
    if expected is not None and total is not None and total != expected:
        return Verdict.MISMATCH, total, f"server size {total}, product list says {expected}"
    reason = "server ignored Range: restarting from zero" if offset else "full body"
    return Verdict.FROM_ZERO, expected if expected is not None else total, reason
