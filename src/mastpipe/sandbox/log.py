"""The sandbox's request log: what tests read to see exactly what a client sent."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["OpenRequest", "Record", "RequestLog"]


@dataclass(frozen=True)
class Record:
    """One HTTP request as the sandbox saw and answered it.

    Attributes
    ----------
    method, path : str
        Request method and the normalised path (``//`` collapsed, no query string).
    endpoint : str
        ``query``, ``products``, ``download``, ``bundle``, ``whoami``, ``columnsconfig``,
        ``path_lookup``, ``s3`` (a request to the sandbox's S3 bucket) or ``unknown``.
    service : str or None
        The invoke service name (``Mast.Caom.Filtered`` ...), else None.
    obsids : list of str
        Obsids of a products request, else empty.
    uri : str or None
        The ``uri`` of a download (for ``s3``: the product whose copy the key holds), else None.
    range, if_range : str or None
        The ``Range`` and ``If-Range`` request headers.
    has_token : bool
        Whether a token came with the request (cookie ``mast_token`` or ``Authorization:
        Bearer``), valid or not; validity shows in ``status`` (401 on protected files).
    status : int
        Status code sent (0 if the connection broke before a status line).
    bytes_sent : int
        Body bytes written.
    time : float
        Unix time the request arrived.
    uris : list of str
        The ``uri`` values of a ``path_lookup`` request, else empty.
    """

    method: str
    path: str
    endpoint: str
    service: str | None = None
    obsids: list[str] = field(default_factory=list)
    uri: str | None = None
    range: str | None = None
    if_range: str | None = None
    has_token: bool = False
    status: int = 0
    bytes_sent: int = 0
    time: float = 0.0
    uris: list[str] = field(default_factory=list)
    #: For ``invoke``: the ``columns`` asked for (``*``, ``COUNT_BIG(*)``, a list) and the data
    #: rows answered (what a client may throw away).
    columns: str | None = None
    rows: int = 0


class RequestLog:
    """Thread-safe in-memory list of :class:`Record`, optionally mirrored to a JSONL file.

    Parameters
    ----------
    path : str or Path, optional
        If given, every record is also appended to this file as one JSON line.
    """

    def __init__(self, path: "str | Path | None" = None) -> None:
        self._records: list[Record] = []
        self._lock = threading.Lock()
        self._quiet = threading.Condition(self._lock)
        self._open = 0
        self._answering = 0  # requests whose last byte has not yet been handed to the socket
        self._peak_open = 0
        self._path = Path(path) if path else None
        self._file = open(self._path, "a", encoding="utf-8") if self._path else None

    def add(self, record: Record, persist: bool = True) -> Record:
        """Append one record (and, if ``persist``, write it to the JSONL file); return it."""
        with self._lock:
            self._records.append(record)
            if persist:
                self._persist(record)
        return record

    def replace(self, old: Record, new: Record) -> None:
        """Swap ``old`` (by identity) for ``new``; append ``new`` if ``old`` was cleared away."""
        with self._lock:
            for i in range(len(self._records) - 1, -1, -1):
                if self._records[i] is old:
                    self._records[i] = new
                    return
            self._records.append(new)

    def persist(self, record: Record) -> None:
        """Write ``record`` to the JSONL file only (for records added with ``persist=False``)."""
        with self._lock:
            self._persist(record)

    def _persist(self, record: Record) -> None:
        if self._file is not None:
            self._file.write(json.dumps(asdict(record)) + "\n")
            self._file.flush()

    def open_request(self) -> OpenRequest:
        """Note that a request is being answered; its JSONL line is written when it closes."""
        with self._lock:
            self._open += 1
            self._answering += 1
            self._peak_open = max(self._peak_open, self._answering)
        return OpenRequest(self)

    def answered(self) -> None:
        """Note that a request's last byte is about to go out (called once, before that write).

        From then on its client may hold the whole answer and start another request while this
        handler still writes its log line; counting the two as overlapping would charge the
        client's in-flight bound with the server's bookkeeping."""
        with self._lock:
            self._answering -= 1

    def close_request(self, answered: bool = False) -> None:
        """Note that a request's answer and its JSONL line are complete (``answered``: whether
        :meth:`answered` was already called for it)."""
        with self._lock:
            self._open -= 1
            if not answered:
                self._answering -= 1
            self._quiet.notify_all()

    def wait_quiet(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being answered, so the JSONL file holds every line.

        A client holds the whole response slightly before the handler writes its line (the
        in-memory record is already there), so readers of the file call this first.
        Returns False if requests were still open after ``timeout`` seconds.
        """
        with self._lock:
            return self._quiet.wait_for(lambda: self._open == 0, timeout=timeout)

    @property
    def peak_open(self) -> int:
        """The most requests answered at one time since the start (or the last :meth:`clear`).

        What tests read to check a client's bound on parallel requests from the server's side.
        """
        with self._lock:
            return self._peak_open

    def records(self) -> list[Record]:
        """A snapshot copy of all records so far, oldest first."""
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        """Forget the in-memory records and the peak (the JSONL file is kept)."""
        with self._lock:
            self._records.clear()
            self._peak_open = self._answering

    def close(self) -> None:
        """Close the JSONL file, if any."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)


class OpenRequest:
    """One request being answered, as both of the sandbox's servers (MAST's and the S3 proxy)
    report it to their :class:`RequestLog`."""

    def __init__(self, log: RequestLog) -> None:
        self._log = log
        self._answered = False

    def last_byte_next(self) -> None:
        """The next write completes the answer: tell the log before it goes out (see
        :meth:`RequestLog.answered`). Only the first call counts."""
        if not self._answered:
            self._answered = True
            self._log.answered()

    def close(self) -> None:
        self._log.close_request(self._answered)
