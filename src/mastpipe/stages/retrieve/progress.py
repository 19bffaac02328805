"""Download progress for people (a live line on a terminal, a bar in Jupyter) and for CI logs (a
line every N seconds).

:class:`Progress` is an ``on_event`` callback for :class:`mastpipe.stages.retrieve.engine.Transfer`; it is
thread-safe because events arrive from worker threads, and cheap: it only formats text when a
line is actually due. Library code: it writes to a stream and knows nothing about click.
:class:`ProgressBar` is the same callback drawn by tqdm (a widget in Jupyter, a bar on a terminal),
and :func:`python_progress` picks what the Python API shows.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from mastpipe.stages.retrieve.files import Event

__all__ = ["Progress", "ProgressBar", "format_bytes", "format_duration", "python_progress"]


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float | None) -> str:
    """``3725`` -> ``"1h02m"``; ``75`` -> ``"1m15s"``; None -> ``"?"``."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """Report transfer progress: files done/total, bytes, rate and ETA.

    Parameters
    ----------
    stream : text stream, optional
        Where to write (default ``sys.stderr``).
    mode : {"auto", "tty", "plain", "quiet"}
        ``tty``: one line rewritten in place (``\\r``), at most every ``tty_interval`` seconds;
        ``plain``: a full line every ``interval`` seconds, for CI logs; ``quiet``: nothing but
        the final summary is available through :meth:`summary`. ``auto`` picks ``tty`` when the
        stream is a terminal, else ``plain``.
    interval : float
        Seconds between plain lines (default 30).
    tty_interval : float
        Seconds between terminal refreshes (default 0.2).
    clock : callable
        Monotonic clock, injectable for tests.
    """

    def __init__(self, stream: TextIO | None = None, mode: str = "auto", interval: float = 30.0,
                 tty_interval: float = 0.2, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            isatty = getattr(self.stream, "isatty", None)
            mode = "tty" if isatty is not None and isatty() else "plain"
        if mode not in ("tty", "plain", "quiet"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.mode = mode
        self.interval = tty_interval if mode == "tty" else interval
        self._clock = clock
        self._lock = threading.Lock()
        self.files_total = 0
        self.files_done = 0  # fetched + skipped
        self.files_failed = 0
        self.bytes_total = 0  # bytes to fetch this run, when known
        self.bytes_done = 0
        self._by_file: dict[str, int] = {}  # bytes counted per file, taken back on a restart
        self._start = clock()
        self._last = self._start
        self._width = 0

    # -- the on_event callback ------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        with self._lock:
            kind = event.kind
            if kind == "plan":
                self.files_total = event.total or 0
                self.bytes_total = event.nbytes
                self._start = self._last = self._clock()
                return
            if kind == "bytes":
                self.bytes_done += event.nbytes
                self._by_file[event.key] = self._by_file.get(event.key, 0) + event.nbytes
            elif kind == "restart":  # those bytes no longer count towards the file
                self.bytes_done -= self._by_file.pop(event.key, 0)
                return
            elif kind in ("fetched", "skipped"):
                self._by_file.pop(event.key, None)
                self.files_done += 1
            elif kind == "failed":
                self.files_failed += 1
                self._by_file.pop(event.key, None)
            else:
                return
            now = self._clock()
            finished = self.files_done + self.files_failed >= self.files_total > 0
            if self.mode != "quiet" and (now - self._last >= self.interval or finished):
                self._last = now
                self._write(self.line(now))

    # -- text -----------------------------------------------------------------------------------

    def rate(self, now: float | None = None) -> float:
        """Average bytes per second since the plan event."""
        elapsed = (now if now is not None else self._clock()) - self._start
        return self.bytes_done / elapsed if elapsed > 0 else 0.0

    def line(self, now: float | None = None) -> str:
        """The status line: ``files 12/200 (1 failed)  34.0 MiB/200.0 MiB  8.1 MiB/s  ETA 20s``."""
        now = now if now is not None else self._clock()
        rate = self.rate(now)
        text = f"files {self.files_done}/{self.files_total}"
        if self.files_failed:
            text += f" ({self.files_failed} failed)"
        text += f"  {format_bytes(self.bytes_done)}"
        if self.bytes_total:
            text += f"/{format_bytes(self.bytes_total)}"
        text += f"  {format_bytes(rate)}/s"
        if self.bytes_total and rate > 0:
            left = max(self.bytes_total - self.bytes_done, 0)
            text += f"  ETA {format_duration(left / rate)}"
        return text

    def summary(self) -> str:
        """One closing line: files, failures, bytes and average rate."""
        with self._lock:
            elapsed = self._clock() - self._start
            return (f"{self.files_done} of {self.files_total} files done, {self.files_failed} "
                    f"failed, {format_bytes(self.bytes_done)} in {format_duration(elapsed)} "
                    f"({format_bytes(self.rate())}/s)")

    def close(self) -> None:
        """End the live line on a terminal (so the next output starts on a fresh line)."""
        with self._lock:
            if self.mode == "tty" and self._width:
                self.stream.write("\n")
                self.stream.flush()
                self._width = 0

    def _write(self, text: str) -> None:
        if self.mode == "tty":
            pad = max(self._width - len(text), 0)
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


class ProgressBar:
    """Transfer progress as a tqdm bar: bytes fetched (rate, ETA), files done in its postfix.

    ``tqdm.auto`` draws an HTML widget in Jupyter (with ipywidgets installed) and a text bar
    elsewhere; tqdm is the maintained choice that astropy-era notebooks already show. An
    ``on_event`` callback like :class:`Progress`, thread-safe; the bar appears with the ``plan``
    event, so a run with nothing to retrieve shows none.

    Parameters
    ----------
    file : text stream, optional
        Where a text bar goes (default ``sys.stderr``); unused by the notebook widget.
    tqdm_class : type, optional
        The tqdm class (default ``tqdm.auto.tqdm``).
    """

    def __init__(self, file: TextIO | None = None, tqdm_class: Any = None) -> None:
        if tqdm_class is None:
            from tqdm.auto import tqdm as auto_tqdm

            tqdm_class = auto_tqdm
        self._tqdm: Any = tqdm_class
        self._file = file
        self._lock = threading.Lock()
        self._bar: Any = None
        self._by_file: dict[str, int] = {}
        self.files_total = 0
        self.files_done = 0
        self.files_failed = 0

    def __call__(self, event: Event) -> None:
        with self._lock:
            kind = event.kind
            if kind == "plan":
                if self._bar is not None:
                    self._bar.close()
                self.files_total = event.total or 0
                self._bar = self._tqdm(total=event.nbytes or None, unit="B", unit_scale=True, unit_divisor=1024,
                                       desc="retrieve", file=self._file, leave=True, dynamic_ncols=True)
                self._postfix()
                return
            bar = self._bar
            if bar is None:
                return
            if kind == "bytes":
                self._by_file[event.key] = self._by_file.get(event.key, 0) + event.nbytes
                bar.update(event.nbytes)
            elif kind == "restart":  # those bytes no longer count towards the file
                taken = self._by_file.pop(event.key, 0)
                if taken:
                    bar.n = max(bar.n - taken, 0)
                    bar.refresh()
            elif kind in ("fetched", "skipped", "failed"):
                self._by_file.pop(event.key, None)
                if kind == "failed":
                    self.files_failed += 1
                else:
                    self.files_done += 1
                self._postfix()

    def _postfix(self) -> None:
        failed = f", {self.files_failed} failed" if self.files_failed else ""
        self._bar.set_postfix_str(f"files {self.files_done}/{self.files_total}{failed}")

    def close(self) -> None:
        """Close the bar (it stays on screen with its final counts)."""
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None


def in_notebook() -> bool:
    """Whether tqdm.auto would draw a Jupyter widget here (an IPython kernel with ipywidgets)."""
    from tqdm.auto import tqdm

    return any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)


def python_progress(progress: bool, stream: TextIO | None = None) -> Progress | ProgressBar | None:
    """What the Python API shows for ``progress=...``: nothing (False); else a tqdm bar in
    Jupyter and on a terminal, and the plain line every 30 s where output goes to a log (a
    script under cron or CI), whose stderr is not a terminal."""
    if not progress:
        return None
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    if in_notebook():
        return ProgressBar()
    if isatty is not None and isatty():
        return ProgressBar(file=stream)
    return Progress(stream=stream, mode="plain")
