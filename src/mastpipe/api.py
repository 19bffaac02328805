"""The Python API: run a recipe from a notebook or another pipeline, as the CLI does.

>>> import mastpipe
>>> outcome = mastpipe.run("pipelines/jwst-1073-nircam-uncal.yaml")   # doctest: +SKIP
>>> outcome.exit_code, outcome.report["retrieve"]["fetched"]           # doctest: +SKIP
(0, {'files': 4, 'bytes': 339840})
>>> outcome.tables["filter"]["productFilename", "size"]                # doctest: +SKIP

Logging goes through the standard :mod:`logging` module (logger ``"mastpipe"``), so an
embedding application routes it as it likes; the only output of its own is download progress
(``progress=False`` turns it off).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from mastpipe.atomic import atomic_write_bytes
from mastpipe.errors import EXIT_OK, ExpectationError, LockError, MastpipeError, UsageError, interrupt_exit_code
from mastpipe.report import (Snapshot, append_history, build_report, history_entry, iso_time, read_history,
                             render_markdown, snapshot)
from mastpipe.runner import Pipeline, RunResult, new_run_id
from mastpipe.stages.retrieve.progress import python_progress
from mastpipe.stages.retrieve.settings import DownloadSettings
from mastpipe.state import StateDir, decoded, fingerprint

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
    if token is None:
        token = discover_token(env)
    try:
        result = pipeline.run(until=until, from_stage=from_stage,
                              retrieve=lambda p, table: (before_retrieve and before_retrieve(table),
                                                         p.retrieve(table, download, token=token, on_event=on_event,
                                                                    run_id=run_id))[1],
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


# --------------------------------------------------------------------------------------------
# plan and status: what a run would do, and where a recipe's state stands, as data


@dataclass(frozen=True)
class PlanGroup:
    """Files and bytes of one (collection, instrument, product type) group of a :class:`PlanReport`."""

    collection: str
    instrument: str
    product: str
    files: int
    bytes: int


@dataclass
class PlanReport:
    """What :func:`plan` found: what ``run`` would retrieve, with nothing downloaded.

    Attributes
    ----------
    recipe, recipe_path, state_dir, mast_url : str
        The recipe's name and file, its state directory, the server asked.
    mode : str
        The recipe's ``retrieve.mode``.
    observations : int
        Rows of the query stage.
    files, bytes : int
        Files the filter stage keeps, and their size as MAST lists it.
    to_fetch, bytes_to_fetch : int
        What a run would request (download mode; 0 in the other modes, where mastpipe fetches
        nothing itself): a file partly downloaded counts only the bytes it lacks.
    present, partial, failed, blocked : int
        Files already on disk; files to resume; files that failed before; files a run would fail
        without a request (see :class:`~mastpipe.runner.RetrieveOutlook`).
    breakdown : list of PlanGroup
        In download mode what a run would fetch, else every file, grouped by collection,
        instrument and product type, most bytes first.
    stages : list of StageReport
        What ``plan`` did to each stage up to filter (reused its checkpoint, or computed it).
    tables : dict of astropy.table.Table
        Each stage's table (``query`` ... ``filter``); not in :meth:`to_dict`.
    outlook : RetrieveOutlook
        The retrieve stage's outlook these counts come from; not in :meth:`to_dict`.
    """

    recipe: str
    recipe_path: str
    state_dir: str
    mast_url: str
    mode: str
    observations: int
    files: int
    bytes: int
    to_fetch: int
    bytes_to_fetch: int
    present: int
    partial: int
    failed: int
    blocked: int
    breakdown: list[PlanGroup]
    stages: list[Any] = field(default_factory=list)
    tables: dict[str, Table] = field(default_factory=dict, repr=False)
    outlook: Any = field(default=None, repr=False)

    def to_html(self) -> str:
        """The plan as one self-contained HTML page (what ``mastpipe plan --html`` writes): a sky
        map of the selected observations' footprints coloured by instrument (or query), their
        time span, files and bytes by product type, beside the plan's table. No network is
        needed to view it. Needs matplotlib (``pip install 'mastpipe[html]'``)."""
        from mastpipe.picture import plan_html

        return plan_html(self)

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-able data: what ``mastpipe plan --json`` prints.

        Keys (stable; new ones may be added): ``kind`` (``"plan"``), ``mastpipe`` (version),
        ``recipe``, ``recipe_path``, ``state_dir``, ``mast_url``, ``mode``, ``observations``,
        ``files``, ``bytes``, ``to_fetch``, ``bytes_to_fetch``, ``present``, ``partial``,
        ``failed``, ``blocked``, ``breakdown`` (objects with ``collection``, ``instrument``,
        ``product``, ``files``, ``bytes``) and ``stages`` (objects with ``stage``, ``action``,
        ``reasons``, ``rows_in``, ``rows_out``, ``seconds``).
        """
        from dataclasses import asdict

        from mastpipe import __version__

        data = {name: getattr(self, name) for name in (
            "recipe", "recipe_path", "state_dir", "mast_url", "mode", "observations", "files", "bytes",
            "to_fetch", "bytes_to_fetch", "present", "partial", "failed", "blocked")}
        return {"kind": "plan", "mastpipe": __version__, **data,
                "breakdown": [asdict(group) for group in self.breakdown],
                "stages": [{**asdict(stage), "seconds": round(stage.seconds, 3)} for stage in self.stages]}


@dataclass
class StatusReport:
    """What :func:`status` found: each stage's checkpoint, the retrieve stage's files, the lock.

    Attributes
    ----------
    recipe, recipe_path, state_dir, mast_url : str
        The recipe's name and file, its state directory, the server the checkpoints should match.
    stages : list of StageStatus
        ``query`` ... ``filter``: ``done``, ``stale`` (with reasons) or ``missing``.
    retrieve : RetrieveOutlook or None
        The files of the filter checkpoint, present and still to fetch; None without one.
    retrieve_state : str
        ``done``, ``partial`` or ``missing`` in download mode, else the mode (``curl``,
        ``manifest``); ``missing`` as well when there is no filter checkpoint.
    filter_stale : bool
        The filter checkpoint will be recomputed, so the files to retrieve may change.
    lock : LockHolder or None
        The run holding the lock (``held``), or the killed run that left it (``stale``), or a
        lock file that cannot be judged from here (``unknown``); None when nobody.
    """

    recipe: str
    recipe_path: str
    state_dir: str
    mast_url: str
    stages: list[Any]
    retrieve: Any
    retrieve_state: str
    filter_stale: bool
    lock: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The status as JSON-able data: what ``mastpipe status --json`` prints.

        Keys (stable; new ones may be added): ``kind`` (``"status"``), ``mastpipe``,
        ``recipe``, ``recipe_path``, ``state_dir``, ``mast_url``; ``stages`` (objects with
        ``stage``, ``state``, ``reasons``, ``rows``, ``finished`` as UTC ISO 8601 or null);
        ``retrieve`` (``state``, ``mode``, ``files``, ``present``, ``to_fetch``,
        ``bytes_to_fetch``, ``partial``, ``failed``, ``blocked``, ``filter_stale``; the counts
        are null without a filter checkpoint); ``lock`` (``state``, ``holder``) or null.
        """
        from mastpipe import __version__

        outlook = self.retrieve
        counts = ("files", "present", "to_fetch", "bytes_to_fetch", "partial", "failed", "blocked")
        retrieve = {"state": self.retrieve_state, "mode": outlook.mode if outlook is not None else None,
                    **{name: getattr(outlook, name) if outlook is not None else None for name in counts},
                    "filter_stale": self.filter_stale}
        return {"kind": "status", "mastpipe": __version__, "recipe": self.recipe, "recipe_path": self.recipe_path,
                "state_dir": self.state_dir, "mast_url": self.mast_url,
                "stages": [{"stage": s.stage, "state": s.state, "reasons": list(s.reasons), "rows": s.rows,
                            "finished": iso_time(s.finished) if s.finished else None} for s in self.stages],
                "retrieve": retrieve,
                "lock": {"state": self.lock.state, "holder": self.lock.text} if self.lock is not None else None}


def plan(recipe: str | os.PathLike[str], *, mast_url: str | None = None,
         state_dir: str | os.PathLike[str] | None = None, refresh: bool = False,
         environ: dict[str, str] | None = None, server_id: str | None = None,
         insecure: bool = False) -> PlanReport:
    """What :func:`run` would retrieve, without downloading anything.

    Runs the stages up to filter (reusing checkpoints, as ``run`` would) and judges every file
    from the ledger and the disk. Nothing is downloaded, no ledger written, no temporary swept.

    Parameters
    ----------
    recipe, mast_url, state_dir, refresh, insecure
        As for :func:`run` (``refresh`` asks MAST again for observations and product lists).

    Returns
    -------
    PlanReport

    Examples
    --------
    >>> p = mastpipe.plan("pipelines/jwst-1073-nircam-uncal.yaml")   # doctest: +SKIP
    >>> p.to_fetch, p.bytes_to_fetch                                    # doctest: +SKIP
    (14, 478080)
    """
    pipeline = Pipeline(recipe, mast_url=mast_url, state_dir=state_dir, refresh=refresh, environ=environ,
                        server_id=server_id, insecure=insecure)
    return plan_pipeline(pipeline)


def plan_pipeline(pipeline: Pipeline) -> PlanReport:
    """:func:`plan` for a :class:`~mastpipe.runner.Pipeline` already built."""
    from mastpipe.report import plan_breakdown

    result = pipeline.run(until="filter")
    products, observations = result.tables["filter"], result.tables["query"]
    outlook = pipeline.retrieve_outlook(products)
    sizes = [max(int(s), 0) for s in products["size"]] if len(products) else []
    if outlook.mode == "download" and len(products):
        from mastpipe.state import decoded

        pending = products[[decoded(uri) in outlook.remaining for uri in products["dataURI"]]]
        if len(pending):
            pending = pending.copy()
            pending["size"] = [outlook.remaining[decoded(uri)] for uri in pending["dataURI"]]
        groups = plan_breakdown(pending, observations)
    else:
        groups = plan_breakdown(products, observations)
    return PlanReport(
        recipe=pipeline.recipe.name, recipe_path=str(pipeline.recipe_path), state_dir=str(pipeline.state_dir),
        mast_url=pipeline.mast_url, mode=outlook.mode, observations=len(observations), files=outlook.files,
        bytes=sum(sizes), to_fetch=outlook.to_fetch, bytes_to_fetch=outlook.bytes_to_fetch,
        present=outlook.present, partial=outlook.partial, failed=outlook.failed, blocked=outlook.blocked,
        breakdown=[PlanGroup(*group) for group in groups], stages=list(result.stages),
        tables=dict(result.tables), outlook=outlook)


def status(recipe: str | os.PathLike[str], *, mast_url: str | None = None,
           state_dir: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None,
           server_id: str | None = None) -> StatusReport:
    """Where a recipe's state stands: each checkpoint, the files present, the lock.

    Reads only: contacts no server, takes no lock (a run in progress is reported, not
    disturbed), and writes nothing but ``outlook.json`` in the state directory, the files'
    outlook remembered in the modes that keep no ledger (see
    :func:`mastpipe.stages.retrieve.outlook.status_outlook`).

    Parameters
    ----------
    recipe, state_dir
        As for :func:`run`.
    mast_url : str, optional
        The server the checkpoints should match (default as :func:`run` chooses it).

    Returns
    -------
    StatusReport

    Examples
    --------
    >>> s = mastpipe.status("pipelines/jwst-1073-nircam-uncal.yaml")   # doctest: +SKIP
    >>> [(stage.stage, stage.state) for stage in s.stages]              # doctest: +SKIP
    [('query', 'done'), ('products', 'done'), ('unique', 'done'), ('filter', 'done')]
    """
    pipeline = Pipeline(recipe, mast_url=mast_url, state_dir=state_dir, environ=environ, server_id=server_id)
    return status_pipeline(pipeline)


def status_pipeline(pipeline: Pipeline) -> StatusReport:
    """:func:`status` for a :class:`~mastpipe.runner.Pipeline` already built."""
    from mastpipe.state import lock_holder

    stages = pipeline.status()
    outlook = pipeline.retrieve_status()
    if outlook is None:
        state = "missing"
    elif outlook.mode != "download":
        state = outlook.mode
    elif outlook.to_fetch == 0 and outlook.blocked == 0:
        state = "done"
    else:
        state = "partial" if outlook.present or outlook.partial else "missing"
    return StatusReport(
        recipe=pipeline.recipe.name, recipe_path=str(pipeline.recipe_path), state_dir=str(pipeline.state_dir),
        mast_url=pipeline.mast_url, stages=stages, retrieve=outlook, retrieve_state=state,
        filter_stale=any(s.stage == "filter" and s.state != "done" for s in stages),
        lock=lock_holder(pipeline.state_dir))


# --------------------------------------------------------------------------------------------
# iter_files: each file as it lands


class RetrievedFile(NamedTuple):
    """One verified file of :func:`iter_files`: its path and its product row.

    ``product`` is the filter stage's row for the file (text as ``str``): ``dataURI``,
    ``productFilename``, ``obs_id``, ``productSubGroupDescription``, ``size`` ...
    """

    path: Path
    product: Any


class ConsumerStopped(KeyboardInterrupt):
    """Raised in the download threads when the consumer of :func:`iter_files` stops early.

    A :class:`KeyboardInterrupt`, so the run ends exactly as after Ctrl-C: downloads stop
    between blocks and keep their temporaries, the per-file and run locks are released, and the
    run is recorded in the history as interrupted; the next run resumes.
    """


def iter_files(recipe: str | os.PathLike[str], *, mast_url: str | None = None,
               state_dir: str | os.PathLike[str] | None = None, refresh: bool = False, verify: bool = False,
               token: str | None = None, environ: dict[str, str] | None = None, server_id: str | None = None,
               insecure: bool = False, progress: bool = True) -> Iterator[RetrievedFile]:
    """Run a recipe and yield each file as soon as it is downloaded and verified.

    The stages run as in :func:`run` (same checkpoints, ledger, lock, report and history), in a
    background thread; files already present are yielded first, then each new one as it lands,
    so analysis starts before the last download ends. Stopping early (``break``, an exception
    in the loop, Ctrl-C, or closing the generator) stops the downloads the way Ctrl-C stops a
    run: files done stay done, partial ones keep their temporaries and resume on the next run,
    and the locks are released when the generator is closed (at once with ``break`` in
    CPython; use :func:`contextlib.closing` to be sure elsewhere).

    Parameters
    ----------
    recipe, mast_url, state_dir, refresh, verify, token, insecure, progress
        As for :func:`run`. The recipe's ``retrieve.mode`` must be ``download``.

    Yields
    ------
    RetrievedFile
        ``(path, product)``: an absolute :class:`~pathlib.Path` and the product's table row.
        Files that fail are not yielded; they are logged, and listed in the manifest and report
        as for :func:`run`.

    Raises
    ------
    UsageError
        The recipe's mode is not ``download``.
    MastpipeError
        As :func:`run`, raised from the loop.

    Examples
    --------
    >>> for path, product in mastpipe.iter_files("pipelines/jwst-1073-nircam-uncal.yaml"):   # doctest: +SKIP
    ...     with fits.open(path) as hdul:
    ...         print(product["obs_id"], hdul[1].data.shape)
    """
    import queue
    import threading

    env = dict(os.environ) if environ is None else environ
    pipeline = Pipeline(recipe, mast_url=mast_url, state_dir=state_dir, refresh=refresh, environ=env,
                        server_id=server_id, insecure=insecure)
    if pipeline.recipe.retrieve.mode != "download":
        raise UsageError(f"iter_files needs retrieve.mode download; {pipeline.recipe_path} has "
                         f"{pipeline.recipe.retrieve.mode}",
                         hint="use mastpipe.run() for curl scripts and manifests")
    landed: queue.Queue[tuple[str, str]] = queue.Queue()
    stop = threading.Event()
    index: dict[str, tuple[Path, Any]] = {}
    shown = python_progress(progress)
    outcome: dict[str, Any] = {}

    def before_retrieve(table: Table) -> None:
        from mastpipe.stages.retrieve.stage import plan_files

        settings = pipeline.recipe.retrieve
        destination = (pipeline.recipe_path.resolve().parent / settings.destination).resolve()
        tasks, _ = plan_files(table, destination, settings.layout, pipeline.mast_url)
        products = table.copy(copy_data=False)
        products.convert_bytestring_to_unicode()
        rows = {decoded(uri): i for i, uri in enumerate(table["dataURI"])} if len(table) else {}
        index.update({task.key: (Path(task.dest), products[rows[task.key]]) for task in tasks})

    def on_event(event: Any) -> None:
        if stop.is_set():
            raise ConsumerStopped()
        if shown is not None:
            shown(event)
        if event.kind in ("done", "skipped") and event.key:
            landed.put(("file", event.key))

    def work() -> None:
        try:
            outcome["outcome"] = run_pipeline(pipeline, verify=verify, token=token, on_event=on_event, environ=env,
                                              before_retrieve=before_retrieve)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer's thread, re-raised there
            outcome["error"] = exc
        finally:
            landed.put(("end", ""))

    thread = threading.Thread(target=work, name="mastpipe-iter-files", daemon=True)
    thread.start()
    seen: set[str] = set()
    try:
        while True:
            try:
                kind, key = landed.get(timeout=0.5)  # a timeout, so Ctrl-C is seen while waiting
            except queue.Empty:
                continue
            if kind == "end":
                break
            if key in seen or key not in index:
                continue
            seen.add(key)
            path, product = index[key]
            yield RetrievedFile(path, product)
    finally:
        stop.set()
        thread.join()
        if shown is not None:
            shown.close()
    error = outcome.get("error")
    if error is not None:
        raise error
    result = outcome["outcome"]
    failed = result.result.retrieve.failed if result.result.retrieve is not None else []
    if failed:
        log.warning("%d file(s) failed and were not yielded (listed in %s); rerun to retry them",
                    len(failed), result.result.retrieve.manifest)
