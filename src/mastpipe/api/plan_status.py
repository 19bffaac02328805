"""Plan and status as data: what a run would do, and where a recipe's state stands.

The CLI's ``plan`` and ``status`` commands only format what these functions return.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mastpipe.report import iso_time
from mastpipe.runner import Pipeline

if TYPE_CHECKING:
    from astropy.table import Table


__all__ = ["PlanGroup", "PlanReport", "StatusReport", "plan", "plan_pipeline", "status", "status_pipeline"]


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
    tables : mapping of astropy.table.Table
        Each stage's table (``query`` ... ``filter``), read when first asked for if the plan was
        remembered; not in :meth:`to_dict`.
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
    tables: Mapping[str, Table] = field(default_factory=dict, repr=False)
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
        ``query`` ... ``filter``: ``current``, ``stale`` (with reasons) or ``missing``
        (:data:`mastpipe.typing.StageState`).
    retrieve : RetrieveOutlook or None
        The files of the filter checkpoint, present and still to fetch; None without one.
    retrieve_state : str
        ``done`` (every file done), ``partial`` or ``missing`` in download mode, else the
        mode (``curl``, ``manifest``); ``missing`` as well when there is no filter checkpoint.
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
    """:func:`plan` for a :class:`~mastpipe.runner.Pipeline` already built.

    In the modes without a ledger the answer is remembered (``plan.json``) and, while every
    checkpoint and the recipe are as they were, given again without reading any table
    (:mod:`mastpipe.api.plan_memo`); :attr:`PlanReport.tables` then reads them when first asked.
    """
    from mastpipe.api.plan_memo import LazyTables, plan_key, plan_totals, remember_plan, remembered_plan
    from mastpipe.report import plan_breakdown

    key = plan_key(pipeline)
    known = remembered_plan(pipeline, key) if key is not None else None
    outlook = pipeline.retrieve_status() if known is not None else None
    if known is not None and outlook is not None:
        stages = _reused(pipeline)
        return _report(pipeline, outlook, known["observations"], known["bytes"], known["breakdown"], stages,
                       LazyTables(lambda: pipeline.run(until="filter").tables))
    if pipeline.recipe.retrieve.mode == "download":  # each file re-checked on disk, no table read
        quick = _download_plan(pipeline)
        if quick is not None:
            return quick
    result = pipeline.run(until="filter")
    products, observations = result.tables["filter"], result.tables["query"]
    outlook = pipeline.retrieve_status(products) or pipeline.retrieve_outlook(products)
    total, groups = plan_totals(products, observations, breakdown=outlook.mode != "download")
    if outlook.mode == "download" and len(products):
        from mastpipe.state import decoded

        pending = products[[decoded(uri) in outlook.remaining for uri in products["dataURI"]]]
        if len(pending):
            pending = pending.copy()
            pending["size"] = [outlook.remaining[decoded(uri)] for uri in pending["dataURI"]]
        groups = plan_breakdown(pending, observations)
    if key is not None and len(products) and outlook.mode != "download":
        remember_plan(pipeline, key, len(observations), total, groups)
    return _report(pipeline, outlook, len(observations), total, groups, list(result.stages), dict(result.tables))


def _download_plan(pipeline: Pipeline) -> PlanReport | None:
    """A download-mode plan from what ``status`` remembered of each file, re-checked against the
    disk (:mod:`mastpipe.stages.retrieve.recheck`), while every stage is current; None else."""
    from mastpipe.api.plan_memo import LazyTables
    from mastpipe.stages.retrieve.recheck import pending_breakdown

    statuses = pipeline.status()
    if pipeline.refresh or any(status.state != "current" for status in statuses):
        return None
    outlook = pipeline.retrieve_status()
    answer = pending_breakdown(outlook) if outlook is not None else None
    if outlook is None or answer is None:
        return None
    total, groups = answer
    return _report(pipeline, outlook, int(statuses[0].rows or 0), total, groups, _reused(pipeline),
                   LazyTables(lambda: pipeline.run(until="filter").tables))


def _report(pipeline: Pipeline, outlook: Any, observations: int, total: int,
            groups: list[tuple[str, str, str, int, int]], stages: list[Any], tables: Mapping[str, Table]) -> PlanReport:
    return PlanReport(
        recipe=pipeline.recipe.name, recipe_path=str(pipeline.recipe_path), state_dir=str(pipeline.state_dir),
        mast_url=pipeline.mast_url, mode=outlook.mode, observations=observations, files=outlook.files,
        bytes=total, to_fetch=outlook.to_fetch, bytes_to_fetch=outlook.bytes_to_fetch,
        present=outlook.present, partial=outlook.partial, failed=outlook.failed, blocked=outlook.blocked,
        breakdown=[PlanGroup(*group) for group in groups], stages=stages, tables=tables, outlook=outlook)


def _reused(pipeline: Pipeline) -> list[Any]:
    """What ``run(until="filter")`` would report of stages all current, said as it says it."""
    from mastpipe.runner import StageReport, _event, log as runner_log
    from mastpipe.state import RunLock

    with RunLock(pipeline.state):  # as a run: none may be under way, and its leftovers are swept
        pipeline.state.sweep()
    stages, rows_in = [], None
    for status in pipeline.status():
        stages.append(StageReport(status.stage, "reused", [], rows_in, status.rows))
        runner_log.info("%s: reused checkpoint (%d rows)", status.stage, status.rows, extra=_event(stages[-1]))
        rows_in = status.rows
    return stages


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
    [('query', 'current'), ('products', 'current'), ('unique', 'current'), ('filter', 'current')]
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
        filter_stale=any(s.stage == "filter" and s.state != "current" for s in stages),
        lock=lock_holder(pipeline.state_dir))
