"""What the command line prints when a command ends early, and how it logs.

Errors become one line ``mastpipe: error: ...`` (and one JSON event with ``--json``), never a
traceback; the library's parameter names are said as the command line's flags (:data:`FLAGS`).
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from mastpipe.errors import MastpipeError


#: The command line's name for each library parameter an error may speak of: the library says
#: ``until 'x' is not a stage``, the command line ``--until 'x' is not a stage``.
FLAGS = {"until": "--until", "from_stage": "--from", "executor": "--executor", "scheduler": "--scheduler",
         "mast_url": "--mast-url", "state_dir": "--state-dir", "collection": "--collection", "mission": "--mission",
         "programs": "--program", "instruments": "--instrument", "filters": "--filters", "products": "--product",
         "mode": "--mode", "name": "--name", "path": "--output", "force": "--force"}


__all__ = ["FLAGS", "FileCount", "fail", "interrupted", "json_text", "setup_logging"]


def fail(error: MastpipeError, json_events: bool = False) -> NoReturn:
    """Print ``error`` (and its hint) as ``mastpipe: error: ...`` on stderr and exit with its code.

    The parameters it names are said as flags (:data:`FLAGS`). With ``--json`` the error is also
    one JSON event on stdout, so that a script reading only stdout learns why the run stopped.
    """
    error.name_parameters(FLAGS)
    if json_events:
        import json

        click.echo(json.dumps({"event": "error", "exit_code": error.exit_code, "error": type(error).__name__,
                               "message": error.message, "hint": error.hint}))
    click.echo(f"mastpipe: error: {error}", err=True)
    sys.exit(error.exit_code)


class FileCount:
    """Counts, from transfer events, the files retrieve has done: what an interrupted run reports.

    Events come from the download threads, hence the lock.
    """

    def __init__(self) -> None:
        import threading

        self.total: int | None = None
        self.done = 0
        self._lock = threading.Lock()

    def __call__(self, event) -> None:  # type: ignore[no-untyped-def]
        if event.kind == "plan":
            self.total = event.total
        elif event.kind in ("fetched", "skipped"):
            with self._lock:
                self.done += 1


def interrupted(interrupt: KeyboardInterrupt, stage: str | None, files: FileCount | None,
                 json_events: bool) -> NoReturn:
    """Say how far an interrupted run got, and exit 130 (Ctrl-C) or 128 + the signal."""
    from mastpipe.errors import interrupt_exit_code

    code = interrupt_exit_code(interrupt)
    if stage == "retrieve" and files is not None and files.total is not None:
        what = f"{files.done} of {files.total} files done"
    elif stage is not None:
        what = f"stopped during the {stage} stage (the stages before it are checkpointed)"
    else:
        what = "stopped"
    message = f"interrupted: {what}; rerun to resume"
    if json_events:
        import json

        click.echo(json.dumps({"event": "interrupted", "exit_code": code, "stage": stage, "message": message}))
    click.echo(f"mastpipe: {message}", err=True)
    sys.exit(code)


def setup_logging(quiet: bool, verbose: bool, json_lines: bool = False) -> None:
    import json
    import logging

    from mastpipe.auth import RedactingFilter

    class JsonLines(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            event = getattr(record, "mastpipe_event", None) or {"event": "log"}
            return json.dumps({**event, "level": record.levelname.lower(), "message": record.getMessage()})

    handler = logging.StreamHandler(sys.stdout if json_lines else sys.stderr)
    handler.setFormatter(JsonLines() if json_lines else
                         logging.Formatter("%(levelname)s %(message)s" if verbose else "%(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger("mastpipe")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def json_text(data: object) -> str:
    import json

    return json.dumps(data, indent=2)
