"""Human-readable summaries of plans and runs (the JSON/Markdown run reports build on these)."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np

from .progress import format_bytes as human_bytes

if TYPE_CHECKING:
    from astropy.table import Table

    from .runner import RunResult, StageStatus


def _text(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values)]


def plan_breakdown(products: Table, observations: Table) -> list[tuple[str, str, str, int, int]]:
    """(collection, instrument, product type, files, bytes) rows, largest first.

    The instrument comes from the observation that lists the product (``parent_obsid``).
    """
    if len(products) == 0:
        return []
    instrument = dict(zip(_text(observations["obsid"]), _text(observations["instrument_name"]))) \
        if "instrument_name" in observations.colnames else {}
    owners = _text(products["parent_obsid"] if "parent_obsid" in products.colnames else products["obsID"])
    collections = _text(products["obs_collection"])
    kinds = _text(products["productSubGroupDescription"] if "productSubGroupDescription" in products.colnames
                  else products["productType"])
    sizes = np.asarray(products["size"]).astype(np.int64)
    totals: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for owner, collection, kind, size in zip(owners, collections, kinds, sizes):
        entry = totals[(collection, instrument.get(owner, "?"), kind or "?")]
        entry[0] += 1
        entry[1] += max(int(size), 0)
    return sorted(((c, i, k, n, b) for (c, i, k), (n, b) in totals.items()), key=lambda r: (-r[4], r[:3]))


def format_plan(products: Table, observations: Table) -> str:
    """What ``retrieve`` would fetch, as a small table of text."""
    rows = plan_breakdown(products, observations)
    total_files = sum(r[3] for r in rows)
    total_bytes = sum(r[4] for r in rows)
    lines = [f"{len(observations)} observations, {total_files} files to retrieve, {human_bytes(total_bytes)} in all"]
    if rows:
        header = ("collection", "instrument", "product", "files", "bytes")
        cells = [header] + [(c, i, k, str(n), human_bytes(b)) for c, i, k, n, b in rows]
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
            lines.append(f"  retrieve: {retrieved.count('fetched')} fetched ({human_bytes(retrieved.bytes_fetched)}), "
                         f"{retrieved.count('skipped')} already present, {retrieved.count('failed')} failed")
            for failure in retrieved.failed[:20]:
                lines.append(f"    failed: {failure.key}: {failure.error}")
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
        why = f"  ({'; '.join(status.reasons)})" if status.reasons and status.state != "done" else ""
        lines.append(f"  {status.stage:<9} {status.state:<8} {rows:<12} {when}{why}")
    return "\n".join(lines)
