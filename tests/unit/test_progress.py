"""Progress lines: terminal vs CI cadence, quiet mode, rate/ETA arithmetic."""

from __future__ import annotations

import io

import pytest

from mastpipe.stages.retrieve.progress import Progress, format_bytes, format_duration
from mastpipe.stages.retrieve.engine import Event


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def feed(progress: Progress, clock: Clock) -> None:
    progress(Event("plan", total=4, nbytes=4 * 1024 * 1024))
    for i in range(4):
        clock.t += 1.0
        progress(Event("bytes", f"k{i}", nbytes=1024 * 1024))
        if i == 2:
            progress(Event("failed", f"k{i}", message="HTTP 404"))
        else:
            progress(Event("fetched", f"k{i}"))


def test_plain_mode_prints_every_interval_and_at_the_end() -> None:
    clock, out = Clock(), io.StringIO()
    progress = Progress(out, mode="auto", interval=2.5, clock=clock)
    assert progress.mode == "plain"
    feed(progress, clock)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # one after 3 s, one for the last file
    assert lines[-1].startswith("files 3/4 (1 failed)  4.0 MiB/4.0 MiB  1.0 MiB/s")
    assert "\r" not in out.getvalue()


def test_tty_mode_rewrites_one_line() -> None:
    clock, out = Clock(), Tty()
    progress = Progress(out, mode="auto", clock=clock)
    assert progress.mode == "tty"
    feed(progress, clock)
    progress.close()
    text = out.getvalue()
    assert text.count("\r") >= 4 and text.endswith("\n") and text.count("\n") == 1


def test_quiet_mode_writes_nothing_but_keeps_a_summary() -> None:
    clock, out = Clock(), io.StringIO()
    progress = Progress(out, mode="quiet", clock=clock)
    feed(progress, clock)
    assert out.getvalue() == ""
    assert progress.summary() == "3 of 4 files done, 1 failed, 4.0 MiB in 4s (1.0 MiB/s)"


def test_eta() -> None:
    clock = Clock()
    progress = Progress(io.StringIO(), mode="quiet", clock=clock)
    progress(Event("plan", total=2, nbytes=10 * 1024 * 1024))
    clock.t += 2
    progress(Event("bytes", "a", nbytes=2 * 1024 * 1024))
    assert progress.line().endswith("1.0 MiB/s  ETA 8s")


def test_bad_mode() -> None:
    with pytest.raises(ValueError):
        Progress(io.StringIO(), mode="loud")


def test_formatting() -> None:
    assert format_bytes(0) == "0 B" and format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 1024**4) == "3.0 TiB"
    assert format_duration(None) == "?" and format_duration(75) == "1m15s"
    assert format_duration(3725) == "1h02m" and format_duration(9) == "9s"


# -- the tqdm bar of the Python API ----------------------------------------------------------


def test_progress_bar_counts_bytes_and_files_and_takes_back_a_restart() -> None:
    from tqdm.std import tqdm

    from mastpipe.stages.retrieve.progress import ProgressBar

    out = io.StringIO()
    bar = ProgressBar(file=out, tqdm_class=tqdm)
    bar(Event("plan", total=3, nbytes=3000, skipped=1))
    bar(Event("skipped", "a", total=1000))
    bar(Event("bytes", "b", nbytes=600))
    bar(Event("restart", "b"))  # those 600 bytes are thrown away
    assert bar._bar.n == 0
    bar(Event("bytes", "b", nbytes=1000))
    bar(Event("fetched", "b", total=1000))
    bar(Event("bytes", "c", nbytes=1000))
    bar(Event("failed", "c", message="boom"))
    assert (bar.files_done, bar.files_failed, bar._bar.n) == (2, 1, 2000)
    bar.close()
    text = out.getvalue()
    assert "retrieve" in text and "files 2/3, 1 failed" in text


def test_python_progress_bar_on_a_terminal_plain_lines_in_a_log_nothing_when_off() -> None:
    from mastpipe.stages.retrieve.progress import ProgressBar, python_progress

    assert python_progress(False) is None
    assert isinstance(python_progress(True, Tty()), ProgressBar)
    plain = python_progress(True, io.StringIO())
    assert isinstance(plain, Progress) and plain.mode == "plain" and plain.interval == 30.0
