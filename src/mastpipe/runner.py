"""Orders the stages, and decides for each whether its checkpoint can be reused.

A stage's fingerprint hashes its normalised recipe section (key order and comments never
matter) with the digest of its input table. A checkpoint is reused when its fingerprint matches;
otherwise the stage runs and every reason is logged and recorded, dvc-style ("recipe section
`filter` changed", "input changed", "--refresh", ...): :mod:`mastpipe.staleness` judges,
:mod:`mastpipe.stages.steps` runs a stage, :mod:`mastpipe.explain` says why a result is empty.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection

from mastpipe.errors import ExpectationError, UsageError, literal
from mastpipe.memory import give_back_freed_memory
from mastpipe.recipe.models import Recipe, effective_mast_url, load_recipe, recipe_dir
from mastpipe.staleness import TABLE_STAGES, StageStatus, Staleness
from mastpipe.state import Checkpoints, RunLock, StateDir, fingerprint
from mastpipe.stages import STAGES
from mastpipe.stages.retrieve.outlook import RetrieveOutlook
from mastpipe.stages.retrieve.settings import DownloadSettings

if TYPE_CHECKING:
    from astropy.table import Table

    from mastpipe.archive import Archive
    from mastpipe.stages.steps import Computed

log = logging.getLogger(__name__)


__all__ = ["TABLE_STAGES", "Pipeline", "RetrieveOutlook", "RunResult", "StageReport", "StageStatus", "default_state_dir",
           "new_run_id"]


@dataclass
class StageReport:
    """What happened to one stage in a run."""

    stage: str
    action: str  # "reused" | "computed" | "not run"
    reasons: list[str] = field(default_factory=list)
    rows_in: int | None = None
    rows_out: int | None = None
    seconds: float = 0.0


@dataclass
class RunResult:
    """Outcome of :meth:`Pipeline.run`: per-stage reports and the tables produced."""

    stages: list[StageReport]
    tables: dict[str, Table]
    state_dir: Path
    mast_url: str
    retrieve: Any = None
    insecure: bool = False  # TLS certificates went unchecked (--insecure)
    #: The checkpoint each stage named in ``Pipeline.run(remember=...)`` held before this run
    #: (None when it had none, or it could not be read).
    previous: dict[str, Table | None] = field(default_factory=dict)
    #: Every ``expect`` check made (see :func:`mastpipe.expectations.check_stage`).
    expectations: list[dict[str, Any]] = field(default_factory=list)
    #: Why a search or a filter rule came out empty (see :mod:`mastpipe.explain`).
    explanations: list[dict[str, Any]] = field(default_factory=list)


def _event(report: StageReport) -> dict[str, Any]:
    """``extra`` for a log record that also carries the stage report (``--json`` prints it)."""
    from dataclasses import asdict

    return {"mastpipe_event": {"event": "stage", **asdict(report)}}


def new_run_id() -> str:
    """A run's id: its UTC start time and a random suffix, e.g. ``20260102T030405Z-1a2b3c``."""
    import uuid

    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def default_state_dir(recipe: Recipe, recipe_path: Path) -> Path:
    base = recipe_dir(recipe_path)
    if recipe.state.directory:
        return (base / recipe.state.directory).resolve()
    return base / ".mastpipe" / recipe.name


class Pipeline:
    """A recipe bound to a MAST server and a state directory.

    Parameters
    ----------
    recipe_path : path-like
        The recipe file (relative paths in it are resolved against its directory).
    mast_url : str, optional
        Overrides the recipe's server (``--mast-url``); see :func:`effective_mast_url`.
    state_dir : path-like, optional
        Overrides where checkpoints live (``--state-dir``).
    refresh : bool
        Ask MAST again for observations and product lists even when checkpoints are current.
    environ : dict, optional
        Environment for ``${VAR}`` and ``MASTPIPE_MAST_URL`` (default ``os.environ``).
    server_id : str, optional
        What identifies the server in fingerprints, when its URL does not (the built-in
        sandbox: a new port every time, the same catalogue).
    insecure : bool
        Do not check MAST's TLS certificate (``--insecure``): logged as a warning here, once, and
        recorded in the run report. Never a recipe setting: see :mod:`mastpipe.tls`.
    source : {"mast", "cloud", "auto"}, optional
        Overrides the recipe's ``retrieve.source`` (``--source``).
    """

    def __init__(self, recipe_path: str | os.PathLike[str], *, mast_url: str | None = None,
                 state_dir: str | os.PathLike[str] | None = None, refresh: bool = False,
                 environ: dict[str, str] | None = None, recipe: Recipe | None = None,
                 server_id: str | None = None, insecure: bool = False, source: str | None = None) -> None:
        self.recipe_path = Path(recipe_path)
        self.recipe = recipe or load_recipe(self.recipe_path, environ)
        if source is not None and source != self.recipe.retrieve.source:
            retrieve = self.recipe.retrieve.model_copy(update={"source": source})
            self.recipe = self.recipe.model_copy(update={"retrieve": retrieve})
        #: Environment for the S3 endpoint (``MASTPIPE_S3_ENDPOINT``); None: ``os.environ``.
        self.environ = environ
        self.mast_url = effective_mast_url(self.recipe, mast_url, environ)
        self.state_dir = Path(state_dir).resolve() if state_dir else default_state_dir(self.recipe, self.recipe_path)
        self.refresh = refresh
        self.environ = environ
        # What identifies the server in fingerprints: its URL, unless the caller knows better
        # (the built-in sandbox gets a new port every time but always serves the same catalogue).
        self.server_id = server_id or self.mast_url
        #: The files of the state directory, each named once.
        self.state = StateDir(self.state_dir)
        self.checkpoints = Checkpoints(self.state)
        self.insecure = insecure
        if insecure:
            from mastpipe.tls import warn_insecure

            warn_insecure(self.mast_url)
        self._archive: Archive | None = None
        #: Why results of the current run came out empty (see :meth:`_explain`).
        self.explanations: list[dict[str, Any]] = []
        #: The stage running now (None between runs): what a message about an interrupted run names.
        self.stage: str | None = None

    @property
    def staleness(self) -> Staleness:
        """The judge of this pipeline's checkpoints (:class:`mastpipe.staleness.Staleness`)."""
        return Staleness(self.recipe, self.state, self.server_id, self.mast_url, self.refresh)

    def section(self, stage: str) -> dict[str, Any]:
        """The recipe settings a stage's result depends on (execution knobs excluded)."""
        return self.staleness.section(stage)

    # -- running -------------------------------------------------------------------------------

    @property
    def archive(self) -> Archive:
        if self._archive is None:
            from mastpipe.archive import Archive
            from mastpipe.retry import RetryPolicy

            m = self.recipe.mast
            self._archive = Archive(self.mast_url, timeout=m.timeout, max_in_flight=m.max_in_flight,
                                    page_size=m.page_size, insecure=self.insecure,
                                    policy=RetryPolicy(max_attempts=m.retries + 1, retry_after_cap=m.retry_after_cap))
        return self._archive

    def check_columns(self, *, refresh: bool = False) -> None:
        """Check the mission searches' column names against MAST's column lists (cached in the
        user's cache, fetched when missing or lacking a name; see :mod:`mastpipe.recipe.columns`).

        Raises
        ------
        RecipeError
            A condition or ``select_cols`` entry names no column of its mission.
        """
        from mastpipe.errors import RecipeError
        from mastpipe.recipe.columns import checked_columns
        from mastpipe.recipe.yamlload import load_yaml

        problems = checked_columns(self.recipe, load_yaml(self.recipe_path), self.server_id,
                                   self.archive.mission_columns, refresh=refresh, environ=self.environ)
        if problems:
            raise RecipeError(problems)

    def _compute(self, stage: str, table: Table | None, fp: str) -> Computed:
        """The stage's table; for unique and filter which rows of their input it keeps; for
        products the batch files it is."""
        from mastpipe.stages.steps import compute

        return compute(stage, table, self.recipe, archive=lambda: self.archive, names=lambda: self.names,
                       parts=lambda: self.state.keep_parts(fp), check_columns=self.check_columns)

    def _base(self, tables: dict[str, Table]) -> tuple[Table, str] | None:
        """The products table of this run with its digest, for the rows checkpoints built on it."""
        sidecar = self.checkpoints.sidecar("products")
        return (tables["products"], sidecar.digest) if "products" in tables and sidecar is not None else None

    def _save(self, stage: str, computed: Computed, tables: dict[str, Table],
              fp: str, started: float, reasons: tuple[str, ...]) -> Table:
        """Checkpoint a stage's table: products' as the batch files its stage wrote, unique's
        and filter's as rows of the products table (when every row is known to be one), the
        others whole."""
        table, rows = computed.table, computed.rows
        if computed.parts is not None:
            return self.checkpoints.save_parts(stage, table, computed.parts, fp, started, reasons)
        base = tables.get("products")
        if rows is not None and base is not None and stage in ("unique", "filter"):
            upstream = "unique" if stage == "filter" else None
            if upstream is None or upstream in self.checkpoints.rows:
                base_rows = rows if upstream is None else self.checkpoints.rows[upstream][rows]
                base_sidecar = self.checkpoints.sidecar("products")
                if base_sidecar is not None:
                    return self.checkpoints.save_rows(stage, table, "products", base, base_sidecar.digest, base_rows,
                                                      fp, started, reasons)
        return self.checkpoints.save(stage, table, fp, started, reasons)

    def run(self, *, until: str = "retrieve", from_stage: str | None = None,
            retrieve: Callable[[Pipeline, Table], Any] | None = None,
            remember: Collection[str] = ()) -> RunResult:
        """Run the stages up to ``until``, reusing every checkpoint whose fingerprint matches.

        Parameters
        ----------
        until : str
            Last stage to run.
        from_stage : str, optional
            Recompute this stage and every later one, whatever the checkpoints say.
        retrieve : callable, optional
            ``retrieve(pipeline, filtered_table)`` for the last stage; its result is returned as
            :attr:`RunResult.retrieve`.
        remember : collection of str
            Stages whose previous checkpoint to hand back as :attr:`RunResult.previous` (what a
            report compares with). A reused checkpoint is the previous one, so it is read once.
        """
        for name, value in (("until", until), ("from_stage", from_stage)):
            if value is not None and value not in STAGES:
                raise UsageError(f"{{{name}}} {literal(repr(value))} is not a stage; stages are {', '.join(STAGES)}",
                                 parameters=[name])
        if from_stage and STAGES.index(from_stage) > STAGES.index(until):
            raise UsageError(f"{{from_stage}} {from_stage} comes after {{until}} {until}",
                             parameters=["from_stage", "until"])
        reports: list[StageReport] = []
        tables: dict[str, Table] = {}
        previous: dict[str, Table | None] = {}
        checks: list[dict[str, Any]] = []
        self.explanations = []
        with RunLock(self.state):
            self.state.sweep()  # writes a killed run left half done
            if until == "retrieve" and retrieve is not None:
                from mastpipe.stages.retrieve.paths import check_outputs

                check_outputs(self.recipe.retrieve, self.recipe_path)
            for stage in remember:  # rows of a products table this run may replace: read them now
                sidecar = self.checkpoints.sidecar(stage)
                if sidecar is not None and sidecar.base is not None:
                    previous[stage] = self.checkpoints.load(stage, sidecar)
            table: Table | None = None
            digest = ""
            staleness = self.staleness
            for stage in TABLE_STAGES[: STAGES.index(until) + 1]:
                self.stage = stage
                started = time.time()
                sidecar = self.checkpoints.sidecar(stage)
                fp = fingerprint(stage, staleness.section(stage), digest)
                forced = staleness.forced(stage, from_stage, sidecar)
                reasons = staleness.reasons(stage, sidecar, fp, forced)
                loaded = self.checkpoints.load(stage, sidecar, self._base(tables)) \
                    if sidecar is not None and not reasons else None
                if sidecar is not None and not reasons and loaded is None:
                    reasons = ["checkpoint unreadable"]
                rows_in = None if table is None else len(table)
                if loaded is not None:
                    assert sidecar is not None
                    table, digest = loaded, sidecar.digest
                    if stage in remember:
                        previous[stage] = loaded
                    reports.append(StageReport(stage, "reused", [], rows_in, len(table), time.time() - started))
                    log.info("%s: reused checkpoint (%d rows)", stage, len(table), extra=_event(reports[-1]))
                else:
                    log.info("%s: running (%s)", stage, "; ".join(reasons))
                    if stage in remember and sidecar is not None and stage not in previous:  # before it is replaced
                        previous[stage] = self.checkpoints.load(stage, sidecar, self._base(tables))
                    if stage == "products" and forced:
                        # asked for afresh (--refresh, --from), not taken from the batches the
                        # checkpoint is; a stage cut short, or a damaged batch, resumes from them
                        self.checkpoints.invalidate(stage)
                        self.state.clear_parts()
                    computed = self._compute(stage, table, fp)
                    reports.append(StageReport(stage, "computed", reasons, rows_in, len(computed.table),
                                               time.time() - started))
                    # Checked before the checkpoint is written: a result that breaks the recipe's
                    # expect (a typo matching nothing) does not replace the last good one.
                    tables[stage] = computed.table
                    self._expect(stage, computed.table, tables, reports, previous, checks, saved=False)
                    table = self._save(stage, computed, tables, fp, started, tuple(reasons))
                    digest = self.checkpoints.sidecar(stage).digest  # type: ignore[union-attr]
                    reports[-1].seconds = time.time() - started
                    log.info("%s: %d rows in %.1f s", stage, len(table), time.time() - started, extra=_event(reports[-1]))
                    tables[stage] = table
                    give_back_freed_memory()  # what computing it freed, before the next stage allocates
                    continue
                tables[stage] = table
                self._expect(stage, table, tables, reports, previous, checks)
            staleness.save_sections([report.stage for report in reports],
                                    [report.stage for report in reports if report.action == "computed"])
            result = RunResult(reports, tables, self.state_dir, self.mast_url, previous=previous,
                               insecure=self.insecure, expectations=checks, explanations=self.explanations)
            if until == "retrieve" and retrieve is not None:
                self.stage = "retrieve"
                started = time.time()
                result.retrieve = retrieve(self, tables["filter"])
                reports.append(StageReport("retrieve", "computed", [], len(tables["filter"]), None, time.time() - started))
        self.stage = None
        return result

    def _expect(self, stage: str, table: Table, tables: dict[str, Table], reports: list[StageReport],
                previous: dict[str, Table | None], checks: list[dict[str, Any]], saved: bool = True) -> None:
        """Check the recipe's ``expect`` after ``stage``; explain an empty result; stop the run
        (before retrieve) when an expectation fails, with what was done so far attached.

        ``saved`` says whether ``stage``'s result is already a checkpoint; one that is not stays
        unsaved when the run stops, and so does its recipe section."""
        from mastpipe.expectations import check_stage, describe, failed, hint_for
        from mastpipe.explain import explain_stage

        found = check_stage(self.recipe, stage, table, tables.get("query"))
        checks.extend(found)
        self.explanations.extend(explain_stage(self.recipe, stage, table, tables, archive=lambda: self.archive,
                                               names=lambda: self.names))
        broken = failed(found)
        if not broken:
            return
        kept = reports if saved else reports[:-1]
        self.staleness.save_sections([report.stage for report in kept],
                                     [report.stage for report in kept if report.action == "computed"])
        error = ExpectationError("expectation failed: " + "; ".join(describe(check) for check in broken),
                                 broken, hint=hint_for(broken))
        error.result = RunResult(reports, dict(tables), self.state_dir, self.mast_url, previous=previous,
                                 insecure=self.insecure, expectations=checks, explanations=self.explanations)
        error.explanations = self.explanations
        raise error

    @property
    def names(self) -> Any:
        """Object names resolved so far, cached in the state directory (``names.json``)."""
        from mastpipe.stages.query import NameCache

        return NameCache(self.state.names)

    def retrieve(self, table: Table, download: DownloadSettings | None = None, *, token: str | None = None,
                 on_event: Callable[[Any], None] | None = None, run_id: str | None = None) -> Any:
        """The retrieve stage for ``table`` (normally the filter stage's result).

        ``download`` is how files are downloaded (default: the recipe's settings alone, see
        :meth:`DownloadSettings.build`); ``run_id`` is the run the manifest names (a new one
        when not given).
        """
        from mastpipe.stages.retrieve import stage as retrieve_stage
        from mastpipe.stages.retrieve.s3 import effective_endpoint

        if download is None:
            download = DownloadSettings.build(self.recipe, self.mast_url, insecure=self.insecure)
        section = self.recipe.retrieve
        result = retrieve_stage.run(table, section, download, base=self.recipe_path.resolve().parent,
                                  state_dir=self.state_dir, mast_url=self.mast_url, token=token, on_event=on_event,
                                  archive=self.archive if section.source != "mast" else None, server_id=self.server_id,
                                  s3_endpoint=effective_endpoint(section.s3_endpoint, self.environ),
                                  meta=self.manifest_meta(run_id or new_run_id()), ledger_journal=self.recipe.state.ledger_journal)
        checkpoint = _filter_checkpoint(self.checkpoints)
        if result.outlook is not None and checkpoint is not None:  # the first status after this run reads no table
            from mastpipe.stages.retrieve.outlook import remember_outlook

            remember_outlook(result.outlook, result.resolved, section, base=self.recipe_path.resolve().parent,
                             state_dir=self.state_dir, mast_url=self.mast_url, checkpoint=checkpoint)
        elif section.mode == "download":  # judged once more while the run lock keeps others away
            self.retrieve_status(table, locked=True)
        return result

    def manifest_meta(self, run_id: str) -> dict[str, str]:
        """The provenance a manifest's ECSV header carries
        (:func:`mastpipe.stages.retrieve.manifest.manifest_meta`)."""
        from mastpipe.stages.retrieve.manifest import manifest_meta

        return manifest_meta(self.recipe, self.recipe_path, self.mast_url, run_id)

    def batch_dir(self) -> Path:
        """Where the products stage keeps finished batches for the current query checkpoint."""
        sidecar = self.checkpoints.sidecar("query")
        fp = fingerprint("products", self.section("products"), sidecar.digest if sidecar else "")
        return self.state.parts_for(fp)

    def retrieve_outlook(self, table: Table) -> RetrieveOutlook:
        """What the retrieve stage would do with ``table`` (a filter result), without doing it:
        :func:`mastpipe.stages.retrieve.outlook.retrieve_outlook` for this recipe and state
        directory. Contacts no server."""
        from mastpipe.stages.retrieve.outlook import retrieve_outlook

        return retrieve_outlook(table, self.recipe.retrieve, base=self.recipe_path.resolve().parent,
                                state_dir=self.state_dir, mast_url=self.mast_url)

    def retrieve_status(self, table: Table | None = None, *, judge: bool = True,
                        locked: bool = False) -> RetrieveOutlook | None:
        """:meth:`retrieve_outlook` for the filter checkpoint as it stands (``table``: its table,
        already read), or None without one.

        What ``status`` and ``plan`` show for the retrieve stage, whose state is the ledger and the
        disk rather than a checkpoint; remembered (:func:`mastpipe.stages.retrieve.outlook.status_outlook`).
        Contacts no server. Not ``judge``: in download mode, None unless nothing is on disk yet (what
        is cheap). ``locked``: a download run's end, the lock held: judged afresh and remembered.
        """
        from mastpipe.stages.retrieve.outlook import status_outlook

        sidecar, checkpoint = self.checkpoints.sidecar("filter"), _filter_checkpoint(self.checkpoints)
        if sidecar is None or checkpoint is None:
            return None
        query = self.checkpoints.sidecar("query")
        return status_outlook((lambda: table) if table is not None else (lambda: self.checkpoints.load("filter", sidecar)),
                              self.recipe.retrieve, base=self.recipe_path.resolve().parent, state_dir=self.state_dir,
                              mast_url=self.mast_url, checkpoint=checkpoint,
                              observations=lambda: self.checkpoints.load("query", query) if query is not None else None,
                              judge=judge, locked=locked)

    def status(self) -> list[StageStatus]:
        """Each table stage's checkpoint: current, stale (and why) or missing. Contacts no server."""
        return self.staleness.status(self.checkpoints)


def _filter_checkpoint(checkpoints: Checkpoints) -> tuple[str, list[Path]] | None:
    """The filter checkpoint's digest and the files it is read from (None: there is none)."""
    sidecar = checkpoints.sidecar("filter")
    if sidecar is None:
        return None
    files = checkpoints.files("filter", sidecar)
    if sidecar.base:
        base = checkpoints.sidecar(sidecar.base)
        files += checkpoints.files(sidecar.base, base) if base is not None else [checkpoints.table_path(sidecar.base)]
    return sidecar.digest, files
