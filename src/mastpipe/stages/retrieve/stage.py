"""retrieve: turn the products kept into files on disk, a curl script, or a manifest.

The pure part, :func:`plan_files`, maps each product row to a URL and a checked destination path
(refusing unsafe names and collisions before anything is fetched). The I/O part hands the files
to :class:`mastpipe.stages.retrieve.engine.Transfer` (download mode) or writes a script (curl mode), and always
writes a manifest (:mod:`mastpipe.stages.retrieve.manifest`): one row per product with ``dataURI``, local path, size, sha256, status,
message, MAST's URL and, with ``retrieve.source`` cloud or auto, where the file came from
(``source``: mast or s3) and its cloud copy (``s3_uri``, ``s3_url``), as ECSV (astropy reads it)
and JSON.

With ``source: cloud`` or ``auto``, public products of the missions MAST mirrors on S3 are
located first (:func:`mastpipe.stages.retrieve.s3.locate`, checkpointed in ``cloud.jsonl``); only files still
to fetch are located in download mode, so a rerun over files present asks nothing. Exclusive-
access products are never looked up: they always come from MAST, with the token.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from mastpipe.errors import AuthError
from mastpipe.recipe.models import Retrieve
from mastpipe.stages.retrieve.files import Event, FileResult, FileTask
from mastpipe.stages.retrieve.outlook import RetrieveOutlook
from mastpipe.stages.retrieve.manifest import (MANIFEST_COLUMNS, NOT_IN_CLOUD, CloudChoice, json_twin, read_manifest,
                                               write_manifest)
from mastpipe.stages.retrieve.settings import DownloadSettings
from mastpipe.stages.retrieve.tableplan import EXCLUSIVE, Refused, download_url, plan_table
from mastpipe.state import StateDir
from mastpipe.typing import Engine

if TYPE_CHECKING:
    from astropy.table import Table

    from mastpipe.archive import Archive
    from mastpipe.stages.retrieve.ledger import Ledger
    from mastpipe.stages.retrieve.s3 import CloudCopy

__all__ = ["EXCLUSIVE", "MANIFEST_COLUMNS", "CloudChoice", "Engine", "Refused", "RetrieveResult", "download_url",
           "engine_for", "json_twin", "plan_files", "read_manifest", "run", "write_manifest"]

log = logging.getLogger(__name__)


def plan_files(table: Table, destination: Path, layout: str,
               mast_url: str) -> tuple[list[FileTask], list[Refused]]:
    """One :class:`FileTask` per product row, every path checked to stay inside ``destination``.

    A row whose name or ids would place a file outside the destination (or that has no
    ``dataURI``) is refused on its own: it becomes a :class:`Refused`, and the other rows go on.
    Rows plainly safe are judged a column at a time, the others one at a time
    (:mod:`mastpipe.stages.retrieve.tableplan`).

    Returns
    -------
    tasks : list of FileTask
    refused : list of Refused

    Raises
    ------
    TransferError
        Two products map to the same path.
    """
    plan = plan_table(table, destination, layout, mast_url)
    return plan.tasks(table, mast_url), plan.refused


@dataclass
class RetrieveResult:
    """What the retrieve stage did: per-file results and where the outputs are."""

    mode: str
    results: list[FileResult] = field(default_factory=list)
    manifest: Path | None = None
    script: Path | None = None
    auth_error: str | None = None
    #: Files MAST reprocessed since they were fetched (a new version, or with ``--revalidate`` a
    #: changed ETag/Last-Modified): key -> why; whether each was fetched again is in ``results``.
    reprocessed: dict[str, str] = field(default_factory=dict)
    #: In the modes without a ledger, what ``status`` would find for these files, and where their
    #: directories resolved (see :func:`mastpipe.stages.retrieve.outlook.remember_outlook`).
    outlook: RetrieveOutlook | None = None
    resolved: dict[str, str] = field(default_factory=dict, repr=False)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def bytes_fetched(self) -> int:
        return sum(r.size or 0 for r in self.results if r.status == "fetched")


def run(table: Table, section: Retrieve, download: DownloadSettings, *, base: Path, state_dir: Path,
        mast_url: str, token: str | None = None, on_event: Callable[[Event], None] | None = None,
        archive: Archive | None = None, server_id: str | None = None,
        s3_endpoint: str | None = None, meta: Mapping[str, Any] | None = None,
        ledger_journal: str = "auto") -> RetrieveResult:
    """Carry out the recipe's ``retrieve`` section for the products in ``table``.

    Parameters
    ----------
    section : Retrieve
        The recipe's ``retrieve`` section (mode, destination, layout, manifest, script).
    download : DownloadSettings
        How files are downloaded (:meth:`DownloadSettings.build`: the recipe with ``--verify``,
        ``--executor``, ``--scheduler`` and ``--insecure`` applied).
    base : Path
        Directory the recipe's relative paths are relative to.
    token : str, optional
        MAST token for exclusive-access products (never from the recipe).
    on_event : callable, optional
        Receives the engine's events.
    archive : Archive, optional
        MAST's search API, for ``path_lookup`` when ``section.source`` is cloud or auto.
    server_id : str, optional
        What identifies the MAST server in the cloud checkpoint (default: ``mast_url``).
    s3_endpoint : str, optional
        The S3 endpoint (default: AWS); see :func:`mastpipe.stages.retrieve.s3.effective_endpoint`.
    meta : mapping, optional
        Provenance written into the manifest's ECSV header (see :func:`write_manifest`).
    ledger_journal : {"auto", "wal", "delete"}
        The ledger's SQLite journal mode (``state.ledger_journal``; see :class:`Ledger`).
    """
    destination = (base / section.destination).resolve()
    plan = plan_table(table, destination, section.layout, mast_url)
    tasks, refused = plan.tasks(table, mast_url), plan.refused
    manifest_path = (base / section.manifest) if section.manifest else destination / "manifest.ecsv"
    result = RetrieveResult(section.mode, results=[r.result() for r in refused])
    if section.mode != "download":  # what status would find: it need not read the table again
        result.outlook = RetrieveOutlook(section.mode, len(set(plan.keys)) + len(refused), blocked=len(refused))
        result.resolved = plan.resolved
    manifest = functools.partial(write_manifest, manifest_path, meta=meta,
                                 absolute=section.manifest_paths == "absolute")
    cloud = CloudChoice(section.source, endpoint=s3_endpoint)
    locator = _Locator(section, state_dir, archive, server_id or mast_url, s3_endpoint, download.timeout,
                       download.insecure)
    if section.mode == "manifest":
        cloud.copies = locator.locate(tasks)
        result.manifest = manifest(tasks, None, refused, cloud)
        return result
    if section.mode == "curl":
        from mastpipe.stages.retrieve.curl import write_curl_script

        cloud.copies = locator.locate(tasks)
        script = (base / section.script) if section.script else destination / "mastpipe-download.sh"
        scripted = [dataclasses.replace(t, url=cloud.https(t.key)) if cloud.copy(t.key) and not t.protected else t
                    for t in tasks if not cloud.skips(t)]
        result.script = write_curl_script(scripted, script)
        result.manifest = manifest(tasks, None, refused, cloud)
        return result
    return _download(tasks, refused, download, state_dir, mast_url, token, on_event, manifest, result,
                     cloud, locator, ledger_journal)


@dataclass
class _Locator:
    """Finds the cloud copies of the products of a run whose ``retrieve.source`` is not mast."""

    settings: Retrieve
    state_dir: Path
    archive: Archive | None
    server: str
    endpoint: str | None
    timeout: float
    insecure: bool

    def client(self) -> Any:
        from mastpipe.stages.retrieve.s3 import S3Client

        return S3Client(self.endpoint, timeout=min(self.timeout, 300.0), pool=self.settings.s3_in_flight)

    def locate(self, tasks: list[FileTask]) -> dict[str, CloudCopy | None]:
        """Copies of the public tasks of mirrored missions (exclusive-access ones never asked)."""
        from mastpipe.archive import cloud_mission
        from mastpipe.stages.retrieve.s3 import Locations, locate

        if self.settings.source == "mast":
            return {}
        wanted = [t.key for t in tasks if not t.protected and cloud_mission(t.key)]
        if not wanted:
            return {}
        if self.archive is None:
            from mastpipe.archive import Archive

            self.archive = Archive(self.server, timeout=self.timeout, insecure=self.insecure)
        store = Locations(self.state_dir, self.server, self.endpoint)
        return locate(wanted, self.archive, self.client(), store, in_flight=self.settings.s3_in_flight)



def _locked_out(protected: list[FileTask], token: str | None, mast_url: str, timeout: float,
                insecure: bool, result: RetrieveResult) -> list[FileTask]:
    """The exclusive-access files to skip: all of them when the token is missing or invalid.

    (Not :class:`Refused`: those are rows no path could be made for; these lack a token.)
    """
    from mastpipe.auth import check_token

    if not protected:
        return []
    try:
        if not token:
            raise AuthError(f"{len(protected)} exclusive-access file(s) selected but no MAST token is set",
                            hint="set MAST_API_TOKEN or run `mastpipe login`")
        check_token(mast_url, token, timeout=min(timeout, 60.0), insecure=insecure)
    except AuthError as exc:
        result.auth_error = str(exc)
        names = ", ".join(Path(t.key).name for t in protected[:10])
        log.error("%s; these are skipped: %s%s (%s)", exc.message, names, " ..." if len(protected) > 10 else "",
                  exc.hint or "see `mastpipe login --help`")
        return protected
    return []


def engine_for(download: DownloadSettings, *, ledger: Ledger | None = None,
               on_event: Callable[[Event], None] | None = None, token: str | None = None) -> Engine:
    """The engine ``download.executor`` names: threads of this process, or a Dask cluster."""
    from mastpipe.stages.retrieve.engine import Transfer

    executor = download.executor
    if executor is not None and executor.kind == "dask":
        from mastpipe.stages.retrieve.dask import DaskTransfer  # the optional extra: imported only when chosen

        return DaskTransfer(executor.scheduler or "local", settings=download, workers=executor.workers,
                            ledger=ledger, on_event=on_event, token=token)
    return Transfer(download, ledger=ledger, on_event=on_event, token=token)


def _download(tasks: list[FileTask], refused_rows: list[Refused], download: DownloadSettings, state_dir: Path,
              mast_url: str, token: str | None, on_event: Callable[[Event], None] | None,
              manifest: Callable[..., Path], result: RetrieveResult, cloud: CloudChoice | None = None,
              locator: _Locator | None = None, ledger_journal: str = "auto") -> RetrieveResult:
    from mastpipe.stages.retrieve import recheck
    from mastpipe.stages.retrieve.engine import Transfer
    from mastpipe.stages.retrieve.ledger import Ledger

    recheck.forget(StateDir(state_dir))  # before the ledger changes: what is remembered at a run's end relies on it
    with Ledger(StateDir(state_dir).ledger, journal=ledger_journal) as ledger:
        # Only exclusive-access files still to fetch need the token: files already present are
        # neither refused for the lack of one nor the reason for a /whoami request.
        protected = [t for t in tasks if t.protected]
        if protected:
            protected = Transfer(download, ledger=ledger, on_event=on_event).unfinished(protected)
        locked_out = _locked_out(protected, token, mast_url, download.timeout, download.insecure, result)
        skipped = {t.key for t in locked_out}
        fetchable = [t for t in tasks if t.key not in skipped]
        cloud = cloud or CloudChoice()
        not_in_cloud: list[FileTask] = []
        if cloud.source != "mast" and locator is not None:
            # Only files still to fetch are located: a rerun over files present asks nothing.
            unfinished = Transfer(download, ledger=ledger).unfinished([t for t in fetchable if not t.protected])
            cloud.copies = locator.locate(unfinished)
            download = download.replace(s3=locator.client())
            not_in_cloud = [t for t in unfinished if cloud.skips(t)]
            # auto: a copy that fails for good comes from MAST instead; cloud: the user asked for S3 only
            fallback = cloud.source == "auto"
            fetchable = [dataclasses.replace(t, url=copy.s3_uri, fallback=t.url if fallback else None)
                         if (copy := cloud.copy(t.key)) is not None else t
                         for t in fetchable if t not in not_in_cloud]
        engine = engine_for(download, ledger=ledger, on_event=on_event,
                            token=token if protected and not locked_out else None)
        results = engine.run(fetchable)
        result.reprocessed = dict(getattr(engine, "reprocessed", {}) or {})
    by_key = {r.key: r for r in results}
    for task in locked_out:
        by_key[task.key] = FileResult(task.key, task.dest, "failed",
                                      error=f"exclusive-access product {task.key} needs a valid MAST token")
    for task in not_in_cloud:
        by_key[task.key] = FileResult(task.key, task.dest, "skipped", error=NOT_IN_CLOUD)
    result.results += [by_key[t.key] for t in tasks]
    result.manifest = manifest(tasks, by_key, refused_rows, cloud)
    return result
