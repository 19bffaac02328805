"""Orders the stages, and decides for each whether its checkpoint can be reused.

A stage's fingerprint hashes its normalised recipe section (key order and comments never
matter) with the digest of its input table. A checkpoint is reused when its fingerprint matches;
otherwise the stage runs and every reason is logged and recorded, dvc-style ("recipe section
`filter` changed", "input changed", "--refresh", ...).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection

from mastpipe.errors import ExpectationError, NotWritableError, UsageError, literal
from mastpipe.recipe.quantities import parse_duration
from mastpipe.recipe.models import Recipe, effective_mast_url, load_recipe, recipe_dir
from mastpipe.state import Checkpoints, RunLock, Sidecar, StateDir, fingerprint, writable_problem
from mastpipe.stages import STAGES
from mastpipe.stages.retrieve.outlook import RetrieveOutlook
from mastpipe.stages.retrieve.settings import DownloadSettings

if TYPE_CHECKING:
    import numpy as np
    from astropy.table import Table

    from mastpipe.archive import Archive

log = logging.getLogger(__name__)
TABLE_STAGES = STAGES[:-1]  # retrieve's state is the ledger, not a table


__all__ = ["TABLE_STAGES", "Pipeline", "RetrieveOutlook", "RunResult", "StageReport", "StageStatus", "default_state_dir"]


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


@dataclass
class StageStatus:
    stage: str
    state: str  # "done" | "stale" | "missing"
    reasons: list[str]
    rows: int | None
    finished: float | None


def _event(report: StageReport) -> dict[str, Any]:
    """``extra`` for a log record that also carries the stage report (``--json`` prints it)."""
    from dataclasses import asdict

    return {"mastpipe_event": {"event": "stage", **asdict(report)}}


#: Key of ``sections.json`` holding the URL each stage last ran against (not a stage name).
_URLS_KEY = "mast_urls"


def _server_label(server_id: Any, url: str | None) -> str:
    """A server as a stale reason names it: its URL, and its identity when that is not the URL.

    Parameters
    ----------
    server_id : str or None
        What fingerprints hold (:attr:`Pipeline.server_id`); None for state written before
        sections recorded a server.
    url : str or None
        The URL it was reached at, when known.

    Returns
    -------
    str
        ``https://mast.stsci.edu``, or ``mastpipe-sandbox:seed=0 at http://127.0.0.1:8080`` for
        the sandbox, whose URL changes every run while its identity does not.
    """
    if server_id is None:
        return url or "an unrecorded server"
    if url is None or url == server_id:
        return str(server_id)
    return f"{server_id} at {url}"


def new_run_id() -> str:
    """A run's id: its UTC start time and a random suffix, e.g. ``20260102T030405Z-1a2b3c``."""
    import uuid

    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def _query_section(recipe: Recipe) -> dict[str, Any]:
    """The recipe's queries as fingerprints see them. The keys of mission searches are left out
    of CAOM searches, which do not use them, so checkpoints made before mission searches existed
    stay current. A query's ``expect`` is left out too: it judges the result, it does not change
    it, so tightening a bound must not send the search to MAST again."""
    queries: dict[str, Any] = recipe.model_dump(mode="json")["query"]
    for query in queries.values():
        query.pop("expect", None)
        if query.get("mission") is None:
            for key in ("mission", "conditions", "select_cols"):
                query.pop(key, None)
        elif query.get("criteria") is None:
            query.pop("criteria", None)
    return queries


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

    # -- fingerprints ------------------------------------------------------------------------

    def section(self, stage: str) -> dict[str, Any]:
        """The recipe settings a stage's result depends on (execution knobs excluded)."""
        r = self.recipe
        sections: dict[str, dict[str, Any]] = {
            "query": {"query": _query_section(r), "mast": self.server_id},
            "products": {"mast": self.server_id},
            "unique": r.unique.model_dump(mode="json"),
            "filter": r.filter.model_dump(mode="json"),
            "retrieve": r.retrieve.model_dump(mode="json"),
        }
        return sections[stage]

    def _reasons(self, stage: str, sidecar: Sidecar | None, fp: str, forced: list[str]) -> list[str]:
        if sidecar is None:
            return ["no checkpoint"] + forced
        reasons = list(forced)
        if sidecar.fingerprint != fp:
            recorded = self._previous_sections()
            previous = recorded.get(stage)
            current = self.section(stage)
            if previous is None or previous == current:
                reasons.append("input changed")
                return reasons
            # The server is part of the query and products sections (see section()), but it is
            # not the recipe's doing: name it apart, or `status` blames a recipe nobody edited.
            if isinstance(previous, dict) and "mast" in current and previous.get("mast") != current["mast"]:
                before = _server_label(previous.get("mast"), recorded.get(_URLS_KEY, {}).get(stage))
                # This side by its identity alone: `status --sandbox` starts no server, so its
                # URL would only be the recipe's default.
                reasons.append(f"MAST server changed ({before} → {_server_label(current['mast'], None)})")
                previous = {key: value for key, value in previous.items() if key != "mast"}
                current = {key: value for key, value in current.items() if key != "mast"}
            if previous != current:
                reasons.append(f"recipe section `{stage}` changed")
        return reasons

    def _previous_sections(self) -> dict[str, Any]:
        import json

        path = self.state.sections
        try:
            sections: dict[str, Any] = json.loads(path.read_text())
            return sections
        except (OSError, ValueError):
            return {}

    def _save_sections(self, ran: list[str], computed: Collection[str]) -> None:
        """Remember the sections of the stages that ran, so a later run can tell a changed
        section from a changed input; stages not run keep the section they last ran with.

        The URL each stage in ``computed`` was run against is kept beside them (``mast_urls``):
        the sections name the server by :attr:`server_id`, which for the sandbox is no URL at
        all, and a reason saying the server changed should say from where. A reused checkpoint
        keeps the URL it was made with."""
        import json

        from mastpipe.atomic import atomic_write_bytes

        previous = self._previous_sections()
        urls = {**previous.get(_URLS_KEY, {}), **dict.fromkeys(computed, self.mast_url)}
        sections = {**previous, **{stage: self.section(stage) for stage in ran}, _URLS_KEY: urls}
        atomic_write_bytes(self.state.sections, json.dumps(sections, sort_keys=True, indent=1).encode())

    def _forced(self, stage: str, from_stage: str | None, sidecar: Sidecar | None) -> list[str]:
        forced = []
        if from_stage is not None and STAGES.index(stage) >= STAGES.index(from_stage):
            forced.append(f"--from {from_stage}")
        if self.refresh and stage in ("query", "products"):
            forced.append("--refresh")
        age = self.recipe.state.query_max_age
        if stage == "query" and age and sidecar is not None and time.time() - sidecar.finished > parse_duration(age):
            forced.append(f"query results older than state.query_max_age ({age})")
        return forced

    # -- running -------------------------------------------------------------------------------

    def output_dirs(self) -> list[tuple[str, Path]]:
        """The directories retrieve writes to in the recipe's mode, each with the recipe field
        that names it: the destination (download), the curl script's, the manifest's."""
        settings = self.recipe.retrieve
        base = self.recipe_path.resolve().parent  # as Pipeline.retrieve resolves them
        destination = (base / settings.destination).resolve()
        manifest = (base / settings.manifest) if settings.manifest else destination / "manifest.ecsv"
        dirs = [("retrieve.destination", destination)] if settings.mode == "download" else []
        if settings.mode == "curl":
            script = (base / settings.script) if settings.script else destination / "mastpipe-download.sh"
            dirs.append(("retrieve.script" if settings.script else "retrieve.destination", script.resolve().parent))
        dirs.append(("retrieve.manifest" if settings.manifest else "retrieve.destination", manifest.resolve().parent))
        return dirs

    def check_outputs(self) -> None:
        """Fail now, before MAST is asked anything, when retrieve could not write its outputs.

        Otherwise every download would fail one by one and the manifest could not be written.

        Raises
        ------
        NotWritableError
            A directory of :meth:`output_dirs` cannot be created or written.
        """
        for field_name, directory in self.output_dirs():
            problem = writable_problem(directory)
            if problem is not None:
                raise NotWritableError(
                    f"cannot write to {directory}: {problem}",
                    hint=f"{field_name} in {self.recipe_path} leads there (relative paths are relative to the "
                         "recipe's directory); choose a directory you can write to, or fix its permissions")

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

    def _compute(self, stage: str, table: Table | None, fp: str) -> tuple[Table, np.ndarray | None]:
        """The stage's table, and for unique and filter which rows of their input it keeps."""
        import numpy as np

        from mastpipe.stages import filter as filter_stage
        from mastpipe.stages import products, query, unique

        r = self.recipe
        if stage == "query":
            if r.mission is not None:
                self.check_columns()
            return query.run(r.query, self.archive, names=self.names, cap=r.mast.row_cap,
                             in_flight=r.mast.max_in_flight), None
        assert table is not None
        if stage == "products":
            from mastpipe.state import read_table, write_table

            store = products.BatchStore(self.state.keep_parts(fp), write_table, read_table)
            in_flight = r.products.in_flight or r.mast.max_in_flight
            return products.run(table, self.archive, r.products.batch_size, in_flight, store,
                                mission=r.mission), None
        if stage == "unique":
            if not len(table):
                return table, np.zeros(0, dtype=np.intp)
            result, _, rows = unique.unique_rows(table, r.unique.key)
            return result, rows
        if stage == "filter":
            mask = filter_stage.keep_mask(table, r.filter)
            return (table.copy(copy_data=False) if mask.all() else table[mask]), np.flatnonzero(mask)
        raise AssertionError(stage)

    def _base(self, tables: dict[str, Table]) -> tuple[Table, str] | None:
        """The products table of this run with its digest, for the rows checkpoints built on it."""
        sidecar = self.checkpoints.sidecar("products")
        return (tables["products"], sidecar.digest) if "products" in tables and sidecar is not None else None

    def _save(self, stage: str, table: Table, rows: np.ndarray | None, tables: dict[str, Table],
              fp: str, started: float, reasons: tuple[str, ...]) -> Table:
        """Checkpoint a stage's table: unique's and filter's as rows of the products table (when
        every row is known to be one), the others whole."""
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
                self.check_outputs()
            for stage in remember:  # rows of a products table this run may replace: read them now
                sidecar = self.checkpoints.sidecar(stage)
                if sidecar is not None and sidecar.base is not None:
                    previous[stage] = self.checkpoints.load(stage, sidecar)
            table: Table | None = None
            digest = ""
            for stage in TABLE_STAGES[: STAGES.index(until) + 1]:
                self.stage = stage
                started = time.time()
                sidecar = self.checkpoints.sidecar(stage)
                fp = fingerprint(stage, self.section(stage), digest)
                reasons = self._reasons(stage, sidecar, fp, self._forced(stage, from_stage, sidecar))
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
                    if stage == "products" and "--refresh" in reasons:
                        self.state.clear_parts()
                    computed, rows = self._compute(stage, table, fp)
                    reports.append(StageReport(stage, "computed", reasons, rows_in, len(computed), time.time() - started))
                    # Checked before the checkpoint is written: a result that breaks the recipe's
                    # expect (a typo matching nothing) does not replace the last good one.
                    tables[stage] = computed
                    self._expect(stage, computed, tables, reports, previous, checks, saved=False)
                    table = self._save(stage, computed, rows, tables, fp, started, tuple(reasons))
                    digest = self.checkpoints.sidecar(stage).digest  # type: ignore[union-attr]
                    if stage == "products":
                        self.state.clear_parts()
                    reports[-1].seconds = time.time() - started
                    log.info("%s: %d rows in %.1f s", stage, len(table), time.time() - started, extra=_event(reports[-1]))
                    tables[stage] = table
                    continue
                tables[stage] = table
                self._expect(stage, table, tables, reports, previous, checks)
            self._save_sections([report.stage for report in reports],
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

        found = check_stage(self.recipe, stage, table, tables.get("query"))
        checks.extend(found)
        self._explain(stage, table, tables)
        broken = failed(found)
        if not broken:
            return
        kept = reports if saved else reports[:-1]
        self._save_sections([report.stage for report in kept],
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

    def _explain(self, stage: str, table: Table, tables: dict[str, Table]) -> None:
        """Find out why a search or a filter rule kept nothing (:mod:`mastpipe.explain`); warn
        (``-q`` shows warnings) and keep the explanation for the report."""
        from mastpipe.errors import MastpipeError
        from mastpipe.expectations import query_obsids
        from mastpipe.explain import explain_filter, explain_query

        found = []
        if stage == "query":
            for name, query in self.recipe.query.items():
                if query_obsids(table, name):
                    continue
                if query.mission is not None or not query.criteria:  # a mission search: no CAOM counts to ask
                    found.append({"where": f"query {name!r}", "stage": "query",
                                  "message": f"query {name!r} matches no {query.mission or ''} dataset".replace("  ", " ")})
                    continue
                try:
                    found.append(explain_query(name, query, self.archive, self.recipe.mast.max_in_flight, self.names))
                except MastpipeError as error:  # the search itself worked: explaining must not fail the run
                    found.append({"where": f"query {name!r}", "stage": "query",
                                  "message": f"query {name!r} matches no observation (could not find out why: "
                                             f"{error.message})"})
        elif stage == "filter" and not len(table) and len(tables.get("unique", [])):
            entry = explain_filter(tables["unique"], self.recipe.filter)
            if entry is not None:
                found.append(entry)
        for entry in found:
            log.warning("%s", entry["message"])
        self.explanations.extend(found)

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
        return retrieve_stage.run(table, section, download, base=self.recipe_path.resolve().parent,
                                  state_dir=self.state_dir, mast_url=self.mast_url, token=token, on_event=on_event,
                                  archive=self.archive if section.source != "mast" else None,
                                  server_id=self.server_id,
                                  s3_endpoint=effective_endpoint(section.s3_endpoint, self.environ),
                                  meta=self.manifest_meta(run_id or new_run_id()),
                                  ledger_journal=self.recipe.state.ledger_journal)

    def manifest_meta(self, run_id: str) -> dict[str, str]:
        """The provenance a manifest's ECSV header carries, so a manifest found on its own
        (in a CI artifact, beside restored files) says where it came from.

        Keys: ``recipe`` (name), ``recipe_path``, ``recipe_fingerprint``, ``run_id``, ``server``
        (the MAST URL asked), ``source`` (``retrieve.source``: mast, cloud or auto),
        ``download_url`` (MAST's download endpoint) and ``mastpipe`` (version); :func:`~mastpipe.stages.retrieve.stage.write_manifest` adds ``paths``.
        """
        from mastpipe import __version__
        from mastpipe.stages.retrieve.stage import download_url

        return {"recipe": self.recipe.name, "recipe_path": str(self.recipe_path.resolve()),
                "recipe_fingerprint": fingerprint(self.recipe.model_dump(mode="json")), "run_id": run_id,
                "server": self.mast_url, "source": self.recipe.retrieve.source,
                "download_url": download_url(self.mast_url, ""),
                "mastpipe": __version__}

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

    def retrieve_status(self) -> RetrieveOutlook | None:
        """:meth:`retrieve_outlook` for the filter checkpoint as it stands, or None without one.

        What ``status`` shows for the retrieve stage, whose state is the ledger and the disk
        rather than a checkpoint. Reads only; contacts no server.
        """
        sidecar = self.checkpoints.sidecar("filter")
        table = self.checkpoints.load("filter", sidecar) if sidecar is not None else None
        return None if table is None else self.retrieve_outlook(table)

    def status(self) -> list[StageStatus]:
        """Each table stage's checkpoint: done, stale (and why) or missing. Contacts no server."""
        statuses = []
        digest = ""
        stale_upstream = False
        for stage in TABLE_STAGES:
            sidecar = self.checkpoints.sidecar(stage)
            fp = fingerprint(stage, self.section(stage), digest)
            if sidecar is None:
                statuses.append(StageStatus(stage, "missing", ["no checkpoint"], None, None))
                stale_upstream = True
                continue
            reasons = self._reasons(stage, sidecar, fp, self._forced(stage, None, sidecar))
            if stale_upstream and not reasons:
                reasons = ["an earlier stage will rerun"]
            statuses.append(StageStatus(stage, "stale" if reasons else "done", reasons, sidecar.rows, sidecar.finished))
            stale_upstream = stale_upstream or bool(reasons)
            digest = sidecar.digest
        return statuses
