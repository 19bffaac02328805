"""Running a recipe from Python: :func:`run`, :func:`run_pipeline`, and the report and history they write.

The package docstring (:mod:`mastpipe.api`) shows a run from a notebook and how logging and
progress behave.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mastpipe.atomic import atomic_write_bytes
from mastpipe.errors import EXIT_OK, ExpectationError, LockError, MastpipeError, UsageError, interrupt_exit_code
from mastpipe.report import (Snapshot, append_history, build_report, history_entry, iso_time, read_history,
                             render_markdown, snapshot)
from mastpipe.runner import Pipeline, RunResult, new_run_id
from mastpipe.stages.retrieve.progress import python_progress
from mastpipe.stages.retrieve.settings import DownloadSettings
from mastpipe.state import StateDir, fingerprint

if TYPE_CHECKING:
    from astropy.table import Table

log = logging.getLogger("mastpipe")


__all__ = ["RunOutcome", "describe_os_error", "run", "run_pipeline"]


@dataclass
class RunOutcome:
    """What :func:`run` returns: the JSON report (as a dict), the stage tables and the exit code."""

    report: dict[str, Any]
    result: RunResult
    exit_code: int
    report_path: Path
    summary: str = ""
    tables: dict[str, Table] = field(default_factory=dict)

    def to_html(self) -> str:
        """The run as one self-contained HTML page (what ``mastpipe run --html`` writes): its
        stages and files, a sky map of the selected footprints, their time span and the files
        by product type. Needs matplotlib (``pip install 'mastpipe[html]'``)."""
        from mastpipe.picture import run_html

        return run_html(self, Path(self.report["recipe"]["path"]).stem)


def run(recipe: str | os.PathLike[str], *, mast_url: str | None = None, state_dir: str | os.PathLike[str] | None = None,
        until: str = "retrieve", from_stage: str | None = None, refresh: bool = False, verify: bool = False,
        token: str | None = None, on_event: Callable[[Any], None] | None = None, server_id: str | None = None,
        report: str | os.PathLike[str] | None = None, summary: str | os.PathLike[str] | None = None,
        environ: dict[str, str] | None = None, executor: str | None = None,
        scheduler: str | None = None, insecure: bool = False, source: str | None = None,
        revalidate: bool = False, progress: bool = True) -> RunOutcome:
    """Run a recipe: the stages up to ``until``, then write the run report and history.

    Parameters
    ----------
    recipe : path-like
        The recipe file.
    mast_url : str, optional
        Server to use instead of ``MASTPIPE_MAST_URL`` / the recipe's ``mast.url``.
    state_dir : path-like, optional
        Checkpoint directory (default ``.mastpipe/<name>`` beside the recipe).
    until, from_stage : str, optional
        Last stage to run; first stage to recompute whatever its checkpoint says.
    refresh : bool
        Ask MAST again for observations and product lists.
    verify : bool
        Re-hash files already downloaded and repair any that changed.
    token : str, optional
        MAST token for exclusive-access files (default: ``MAST_API_TOKEN`` or the keyring).
    on_event : callable, optional
        Receives transfer progress events (:class:`mastpipe.stages.retrieve.engine.Event`).
    executor : {"threads", "dask"}, optional
        Where downloads run, instead of the recipe's ``retrieve.executor``.
    scheduler : str, optional
        Dask scheduler address (``tcp://host:8786``) or ``local``; implies ``executor="dask"``.
    report, summary : path-like, optional
        Also write the JSON report / Markdown summary there. The JSON report is always written
        to ``<state dir>/reports/``; the summary is appended to ``$GITHUB_STEP_SUMMARY`` when set.
    insecure : bool
        Do not check TLS certificates (see below). Dangerous, so logged as a warning and recorded in the
        report; for a network with its own certificate authority set ``REQUESTS_CA_BUNDLE``
        instead (see :mod:`mastpipe.tls`).
    source : {"mast", "cloud", "auto"}, optional
        Where files come from, instead of the recipe's ``retrieve.source`` (``--source``).
    progress : bool
        Show download progress: a tqdm bar in Jupyter and on a terminal, a line every 30 s on
        stderr otherwise (a script's log). False shows nothing.

    revalidate : bool
        Ask the server (HEAD, ``retrieve.in_flight`` at a time) whether files already downloaded,
        whose product-list version did not change, changed anyway (ETag, Last-Modified): for
        archives that reprocess silently. Changed files are fetched again per ``overwrite``.

    Returns
    -------
    RunOutcome
        ``exit_code`` is 0, or 1 when some files failed.

    Raises
    ------
    MastpipeError
        Invalid recipe (RecipeError), MAST unreachable (ArchiveError), lock held (LockError),
        destination or state directory not writable (NotWritableError) ... Such runs are
        recorded in the history too, except when the lock is held by another run (or the state
        directory cannot be written).
    OSError
        A file could not be read or written; recorded in the history as well.
    KeyboardInterrupt
        Ctrl-C (or :class:`~mastpipe.errors.Interrupted`); recorded in the history with exit
        code 130 (128 + the signal), naming the stage that was interrupted, then re-raised.
    """
    env = dict(os.environ) if environ is None else environ
    pipeline = Pipeline(recipe, mast_url=mast_url, state_dir=state_dir, refresh=refresh, environ=env,
                        server_id=server_id, insecure=insecure, source=source)
    shown = python_progress(progress)
    try:
        return run_pipeline(pipeline, until=until, from_stage=from_stage, verify=verify, token=token,
                            on_event=_both(on_event, shown), report=report, summary=summary, environ=env,
                            executor=executor, scheduler=scheduler, revalidate=revalidate)
    finally:
        if shown is not None:
            shown.close()


def _both(first: Callable[[Any], None] | None, second: Callable[[Any], None] | None) -> Callable[[Any], None] | None:
    """One ``on_event`` callback calling ``first`` then ``second`` (either may be None)."""
    if first is None or second is None:
        return first or second

    def both(event: Any) -> None:
        first(event)
        second(event)

    return both


def run_pipeline(pipeline: Pipeline, *, until: str = "retrieve", from_stage: str | None = None,
                 verify: bool = False, token: str | None = None, on_event: Callable[[Any], None] | None = None,
                 report: str | os.PathLike[str] | None = None, summary: str | os.PathLike[str] | None = None,
                 environ: dict[str, str] | None = None, executor: str | None = None,
                 scheduler: str | None = None, revalidate: bool = False,
                 before_retrieve: Callable[[Table], None] | None = None) -> RunOutcome:
    """:func:`run` for a :class:`~mastpipe.runner.Pipeline` already built (recipe loaded, server
    and state directory chosen); the parameters are :func:`run`'s. ``before_retrieve`` is
    called with the filter stage's table just before the retrieve stage starts."""
    from mastpipe.auth import discover_token

    env = dict(os.environ) if environ is None else environ
    # Built once, here: a bad --scheduler fails before any stage, and retrieve gets one object.
    download = DownloadSettings.build(pipeline.recipe, pipeline.mast_url, verify=verify, executor=executor,
                                      scheduler=scheduler, insecure=pipeline.insecure, revalidate=revalidate)
    _require_dask(download.executor.kind if download.executor else "threads", until, pipeline.recipe.retrieve.mode)
    run_id = new_run_id()
    recipe_fp = fingerprint(pipeline.recipe.model_dump(mode="json"))
    started = time.time()
    # "Since the previous run" means since the last run that got through its stages; checkpoints
    # left by `plan`, `--until` or a failed run alone do not make this run a rerun.
    completed_before = any(entry.get("exit_code") in (0, 1) for entry in read_history(pipeline.state_dir))

    def retrieve(p: Pipeline, table: Table) -> Any:
        if before_retrieve:
            before_retrieve(table)
        # only the retrieve stage uses a token: a run to filter asks no keyring (~0.1 s of CPU,
        # and a locked one may prompt)
        return p.retrieve(table, download, token=token if token is not None else discover_token(env),
                          on_event=on_event, run_id=run_id)

    try:
        result = pipeline.run(until=until, from_stage=from_stage, retrieve=retrieve,
                              remember=("query", "filter") if completed_before else ())
    except LockError:
        raise
    except ExpectationError as error:
        # A broken expectation is an answer, not an accident: report it like a run.
        if isinstance(error.result, RunResult):
            before = snapshot(error.result.previous) if completed_before else Snapshot(None, None)
            outcome = _write_outcome(pipeline, error.result, before, error.exit_code, run_id, started, recipe_fp,
                                     report, summary, env, error=error)
            error.report_path = outcome.report_path  # type: ignore[attr-defined]
        else:
            _record_failure(pipeline, run_id, started, recipe_fp, error.exit_code, str(error))
        raise
    except MastpipeError as error:
        _record_failure(pipeline, run_id, started, recipe_fp, error.exit_code, str(error))
        raise
    except OSError as error:
        _record_failure(pipeline, run_id, started, recipe_fp, 1, describe_os_error(error))
        raise
    except KeyboardInterrupt as interrupt:
        _record_failure(pipeline, run_id, started, recipe_fp, interrupt_exit_code(interrupt),
                        f"interrupted during {pipeline.stage or 'the run'}")
        raise
    if result.retrieve is not None and result.retrieve.outlook is not None:  # manifest, curl: plan reads no table
        from mastpipe.api.plan_memo import remember_run

        remember_run(pipeline, result.tables)
    elif result.retrieve is None and "filter" in result.tables:  # --until filter: so do the next status and plan
        from mastpipe.api.plan_memo import remember_filtered

        remember_filtered(pipeline, result.tables)
    before = snapshot(result.previous) if completed_before else Snapshot(None, None)
    exit_code = 1 if result.retrieve is not None and result.retrieve.failed else EXIT_OK
    return _write_outcome(pipeline, result, before, exit_code, run_id, started, recipe_fp, report, summary, env)


def _write_outcome(pipeline: Pipeline, result: RunResult, before: Snapshot, exit_code: int, run_id: str,
                   started: float, recipe_fp: str, report: str | os.PathLike[str] | None,
                   summary: str | os.PathLike[str] | None, env: dict[str, str],
                   error: MastpipeError | None = None) -> RunOutcome:
    """Write the JSON report, the Markdown summary and the history entry of a run that got an
    answer (complete, or stopped by a broken expectation)."""
    document = build_report(result, before, run_id=run_id, started=started, finished=time.time(),
                            exit_code=exit_code, recipe_path=str(pipeline.recipe_path), recipe_fingerprint=recipe_fp)
    if error is not None:
        document["error"] = error.message
    text = json.dumps(document, indent=2) + "\n"
    state = StateDir(pipeline.state_dir)
    report_path = state.report(run_id)
    atomic_write_bytes(report_path, text.encode())
    atomic_write_bytes(state.last_report, text.encode())
    if report:
        atomic_write_bytes(Path(report), text.encode())
    markdown = render_markdown(document, pipeline.recipe.name)
    if summary:
        atomic_write_bytes(Path(summary), markdown.encode())
    step_summary = env.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(markdown)
    append_history(pipeline.state_dir, history_entry(document))
    return RunOutcome(document, result, exit_code, report_path, markdown, dict(result.tables))


def describe_os_error(error: OSError) -> str:
    """``PATH: reason`` for an operating-system error, as one line naming the file concerned."""
    reason = error.strerror or str(error)
    paths = [p for p in (error.filename, error.filename2) if p is not None]
    return f"{' -> '.join(map(str, paths))}: {reason}" if paths else reason


def _record_failure(pipeline: Pipeline, run_id: str, started: float, recipe_fp: str, exit_code: int,
                    error: str) -> None:
    """Append a run that ended early to the history, if the state directory can take it.

    The failure being reported may be that very directory (not writable, disk full): then the
    run goes unrecorded rather than hiding the error behind a second one.
    """
    try:
        append_history(pipeline.state_dir, {"run_id": run_id, "started": iso_time(started),
                                            "finished": iso_time(time.time()), "recipe_fingerprint": recipe_fp,
                                            "exit_code": exit_code, "error": error})
    except OSError as exc:
        log.debug("could not record the run in %s: %s", pipeline.state_dir, exc)


def _require_dask(kind: str, until: str, mode: str) -> None:
    """Fail before any stage runs when downloads go to Dask but Dask is not installed.

    The same message as :class:`mastpipe.stages.retrieve.dask.DaskTransfer` gives, which would only
    come after the query and products stages had asked MAST everything.
    """
    import importlib.util

    if kind != "dask" or until != "retrieve" or mode != "download":
        return
    try:
        missing = importlib.util.find_spec("distributed") is None
    except (ImportError, ValueError):  # a broken or half-installed package counts as missing
        missing = True
    if missing:
        raise UsageError("retrieve.executor kind dask needs Dask's distributed scheduler",
                         hint="pip install 'mastpipe[dask]'")
