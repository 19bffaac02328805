"""The state directory's files and folders, each named once (:class:`StateDir`; the layout is
drawn in the :mod:`mastpipe.state` docstring)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mastpipe.atomic import sweep

__all__ = ["StateDir"]

log = logging.getLogger("mastpipe.state")


class StateDir:
    """The files and folders of one state directory, named once (the layout is in the
    :mod:`mastpipe.state` docstring).

    Parameters
    ----------
    path : path-like
        The state directory; nothing is created until something is written.
    """

    LOCK = "lock"
    SECTIONS = "sections.json"
    PARTS = "products.parts"
    LEDGER = "ledger.sqlite"
    OUTLOOK = "outlook.json"
    FILES = "files.npz"
    FILES_BEFORE_RUN = "files-before-run.npz"
    PLAN = "plan.json"
    REPORTS = "reports"
    LAST_REPORT = "last-report.json"
    HISTORY = "history.jsonl"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"StateDir({os.fspath(self.path)!r})"

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    @property
    def lock(self) -> Path:
        return self.path / self.LOCK

    @property
    def sections(self) -> Path:
        return self.path / self.SECTIONS

    def table(self, stage: str) -> Path:
        """A table stage's checkpoint (FITS)."""
        return self.path / f"{stage}.fits"

    def sidecar(self, stage: str) -> Path:
        """What a checkpoint's table is (JSON): written after the table, so it always describes a
        complete one."""
        return self.path / f"{stage}.json"

    @property
    def parts(self) -> Path:
        return self.path / self.PARTS

    def parts_for(self, fingerprint: str) -> Path:
        """The finished product-list batches of the products stage with this fingerprint."""
        return self.parts / fingerprint[:16]

    def keep_parts(self, fingerprint: str) -> Path:
        """:meth:`parts_for` ``fingerprint``, discarding batches left under any other.

        Batches are only reusable by a run asking the same server for the same observations, so
        they live under the stage's fingerprint.
        """
        import shutil

        here = self.parts_for(fingerprint)
        if self.parts.is_dir():
            for child in self.parts.iterdir():
                if child != here:
                    shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        return here

    def clear_parts(self) -> None:
        """Drop every finished batch (the products stage completed, or starts afresh)."""
        import shutil

        shutil.rmtree(self.parts, ignore_errors=True)

    @property
    def ledger(self) -> Path:
        return self.path / self.LEDGER

    @property
    def outlook(self) -> Path:
        """What ``status`` remembers of the files' outlook (modes without a ledger)."""
        return self.path / self.OUTLOOK

    @property
    def files(self) -> Path:
        """What ``status`` remembers of each file in download mode, re-checked on every call."""
        return self.path / self.FILES

    @property
    def files_before_run(self) -> Path:
        """``files.npz`` as a download run found it, out of ``status``'s sight while the run may
        write the ledger; put back at the run's end when nothing it relies on changed."""
        return self.path / self.FILES_BEFORE_RUN

    @property
    def plan(self) -> Path:
        """What ``plan`` remembers of its answer (modes without a ledger)."""
        return self.path / self.PLAN

    @property
    def reports(self) -> Path:
        return self.path / self.REPORTS

    def report(self, run_id: str) -> Path:
        return self.reports / f"{run_id}.json"

    @property
    def last_report(self) -> Path:
        return self.path / self.LAST_REPORT

    @property
    def history(self) -> Path:
        return self.path / self.HISTORY

    @property
    def names(self) -> Path:
        return self.path / "names.json"

    def sweep(self) -> list[Path]:
        """Remove the temporaries of writes whose process died (in the directory and
        ``reports/``); what a run does once it holds the lock."""
        removed = sweep(self.path) + sweep(self.reports)
        for path in removed:
            log.info("removed stale temporary %s", path)
        return removed
