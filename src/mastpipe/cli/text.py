"""The terminal's text for ``plan``, ``run`` and ``status``: the library's data, formatted.

Nothing here decides anything; :mod:`mastpipe.api` returns the data and :mod:`mastpipe.report`
writes the run reports.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from mastpipe.report import failure_reason
from mastpipe.state import decoded_column
from mastpipe.stages.retrieve.progress import format_bytes as human_bytes

if TYPE_CHECKING:
    from astropy.table import Table

    from mastpipe.api import PlanReport
    from mastpipe.runner import RunResult, StageStatus
    from mastpipe.stages.retrieve.outlook import RetrieveOutlook
    from mastpipe.state import LockHolder

__all__ = ["format_cloud_plan", "format_lock", "format_plan", "format_retrieve_status", "format_run", "format_status"]


def format_plan(plan: PlanReport) -> str:
    """What ``retrieve`` would fetch (a :class:`mastpipe.api.PlanReport`), as a small table of text.

    In download mode the files already present are counted apart and the breakdown lists only
    what a run would download, with the bytes it still lacks; in the other modes every file counts.
    """
    if plan.mode != "download":
        lines = [f"{plan.observations} observations, {plan.files} files to retrieve, {human_bytes(plan.bytes)} in all"]
    else:
        head = (f"{plan.observations} observations, {plan.files} files ({human_bytes(plan.bytes)}): "
                f"{plan.to_fetch} to fetch ({human_bytes(plan.bytes_to_fetch)}), "
                f"{plan.present} already present")
        notes = _outlook_notes(plan.outlook, "resumed where an earlier run stopped")
        lines = [head + "".join(f"; {note}" for note in notes)]
    if plan.breakdown:
        header = ("collection", "instrument", "product", "files", "bytes")
        cells = [header] + [(g.collection, g.instrument, g.product, str(g.files), human_bytes(g.bytes))
                            for g in plan.breakdown]
        widths = [max(len(row[col]) for row in cells) for col in range(5)]
        for index, row in enumerate(cells):
            lines.append("  " + "  ".join(cell.rjust(w) if col >= 3 else cell.ljust(w)
                                          for col, (cell, w) in enumerate(zip(row, widths))))
            if index == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_run(result: RunResult) -> str:
    """One line per stage, then what retrieve did."""
    lines = []
    for stage in result.stages:
        rows = "" if stage.rows_out is None else f"{stage.rows_out} rows"
        why = f" ({'; '.join(stage.reasons)})" if stage.reasons and stage.action == "computed" else ""
        lines.append(f"  {stage.stage:<9} {stage.action:<9} {rows:<12} {stage.seconds:6.1f} s{why}")
    retrieved = result.retrieve
    if retrieved is not None:
        if retrieved.mode == "download":
            from_s3 = sum(1 for r in retrieved.results if r.status == "fetched" and r.source == "s3")
            where = f", {from_s3} from S3" if from_s3 else ""
            absent = sum(1 for r in retrieved.results if r.status == "skipped" and r.error)  # source: cloud
            lines.append(f"  retrieve: {retrieved.count('fetched')} fetched ({human_bytes(retrieved.bytes_fetched)}{where}), "
                         f"{retrieved.count('skipped') - absent} already present, "
                         + (f"{absent} without a cloud copy (skipped), " if absent else "")
                         + f"{retrieved.count('failed')} failed")
        for failure in retrieved.failed[:20]:  # in every mode: refused products fail in all
            lines.append(f"    failed: {failure.key}: {failure_reason(failure.key, failure.error)}")
        if len(retrieved.failed) > 20:
            lines.append(f"    ... and {len(retrieved.failed) - 20} more (see the manifest)")
        if retrieved.script is not None:
            lines.append(f"  curl script: {retrieved.script}")
        if retrieved.manifest is not None:
            lines.append(f"  manifest: {retrieved.manifest}")
    return "\n".join(lines)


def format_status(statuses: list[StageStatus]) -> str:
    lines = []
    for status in statuses:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status.finished)) if status.finished else ""
        rows = "" if status.rows is None else f"{status.rows} rows"
        why = f"  ({'; '.join(status.reasons)})" if status.reasons and status.state != "current" else ""
        lines.append(f"  {status.stage:<9} {status.state:<8} {rows:<12} {when}{why}")
    return "\n".join(lines)


def format_retrieve_status(outlook: RetrieveOutlook | None, filter_stale: bool, state: str) -> str:
    """The retrieve line of ``status``: files present and still to fetch, from the ledger and
    the disk (``outlook``, ``filter_stale`` and ``state`` from :func:`mastpipe.api.status`).

    ``filter_stale`` notes that the filter checkpoint the files come from will be recomputed,
    so the files to retrieve may change.
    """
    if outlook is None:
        return f"  {'retrieve':<9} {'missing':<8} {'':<12} (no filter checkpoint to retrieve)"
    stale = "; the filter checkpoint is stale, the files may change" if filter_stale else ""
    if outlook.mode != "download":
        return (f"  {'retrieve':<9} {outlook.mode:<8} {f'{outlook.files} files':<12} "
                f"(mode {outlook.mode}: mastpipe fetches nothing itself, keeps no ledger{stale})")
    counts = [f"{outlook.present} of {outlook.files} files present",
              f"{outlook.to_fetch} to fetch ({human_bytes(outlook.bytes_to_fetch)})",
              *_outlook_notes(outlook, "partly downloaded, to resume")]
    return f"  {'retrieve':<9} {state:<8} {f'{outlook.files} files':<12} ({', '.join(counts)}{stale})"


def _outlook_notes(outlook: RetrieveOutlook, partial: str) -> list[str]:
    """The counts of a retrieve outlook worth a mention, for ``plan`` and ``status`` alike."""
    notes = []
    if outlook.partial:
        notes.append(f"{outlook.partial} {partial}")
    if outlook.failed:
        notes.append(f"{outlook.failed} failed before")
    if outlook.blocked:
        notes.append(f"{outlook.blocked} would fail without a request (another file in the way with "
                     "overwrite: never, or an unsafe product name)")
    return notes


def format_lock(holder: LockHolder | None) -> str | None:
    """The lock note of ``status``, or None when no run holds the lock or left it behind."""
    if holder is None:
        return None
    if holder.state == "held":
        return f"lock: held by a run in progress ({holder.text}); `run` would fail until it ends"
    if holder.state == "stale":
        return (f"lock: stale, left by a run that no longer runs ({holder.text}); "
                "the next run takes it over and resumes")
    return f"lock: names {holder.text}, on another host or unreadable: cannot tell from here whether it still runs"


def format_cloud_plan(pipeline: Any, products: Table, outlook: Any) -> str:
    """One line for ``plan`` with ``retrieve.source`` cloud or auto: of the files to fetch, how
    many have a cloud copy, how many none, and how many are still to be located, from the
    checkpoint of earlier lookups (``cloud.jsonl``) alone: no request."""
    from mastpipe.archive import cloud_mission
    from mastpipe.stages.retrieve.s3 import Locations, effective_endpoint

    section = pipeline.recipe.retrieve
    rights = dict(zip(decoded_column(products["dataURI"]), decoded_column(products["dataRights"]))) if len(products) else {}
    wanted = list(outlook.remaining) if outlook is not None and outlook.mode == "download" else list(rights)
    known = Locations(pipeline.state_dir, pipeline.server_id,
                      effective_endpoint(section.s3_endpoint, pipeline.environ)).load()
    mast = [u for u in wanted if rights.get(u) == "EXCLUSIVE_ACCESS" or not cloud_mission(u)]
    cloud = [u for u in wanted if u not in mast]
    copies = sum(1 for u in cloud if known.get(u) is not None)
    without = sum(1 for u in cloud if u in known and known[u] is None)
    unknown = len(cloud) - copies - without
    fallback = "from MAST" if section.source == "auto" else "skipped"
    return (f"source {section.source}: of {len(wanted)} file(s), {copies} have a cloud copy, "
            f"{without + len(mast)} have none ({fallback}; exclusive-access ones always from MAST)"
            + (f", {unknown} still to be located when the run starts (path_lookup, HeadObject)" if unknown else ""))
