"""Run reports: the JSON document of a run, its Markdown summary, what changed since the last run,
the history; and the plan's breakdown by collection, instrument and product.

The terminal's text for ``plan``, ``run`` and ``status`` is :mod:`mastpipe.cli.text`."""

from __future__ import annotations

import heapq
import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from mastpipe.stages.retrieve.progress import format_bytes as human_bytes
from mastpipe.stages.retrieve.tablecheck import unique_by_runs
from mastpipe.state import StateDir, decoded_column, encoded_column

if TYPE_CHECKING:
    from astropy.table import Table

    from mastpipe.runner import RunResult


__all__ = [
    "MAX_LISTED", "Snapshot", "append_history", "build_report", "changes", "failure_reason", "history_entry",
    "grouped_totals", "iso_time", "nothing_new", "plan_breakdown", "plan_groups", "read_history", "render_markdown", "snapshot"
]


def plan_breakdown(products: Table, observations: Table) -> list[tuple[str, str, str, int, int]]:
    """(collection, instrument, product type, files, bytes) rows, largest first.

    The instrument comes from the observation that lists the product (``parent_obsid``).
    """
    if len(products) == 0:
        return []
    names, codes = plan_groups(products, observations)
    return grouped_totals(names, codes, np.maximum(np.asarray(products["size"]).astype(np.int64), 0))


def _ranked(values: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """``numpy.unique(values, return_inverse=True)`` for integers in ``[0, bound)``: counted
    with ``bincount`` when the range is small (no sort, no sorted copy of ``values``)."""
    if bound > 1 << 24:
        keys, inverse = np.unique(values, return_inverse=True)
        return keys, inverse.ravel()
    present = np.bincount(values, minlength=bound) > 0
    rank = np.cumsum(present) - 1
    return np.flatnonzero(present), rank[values]


def plan_groups(products: Table, observations: Table) -> tuple[list[tuple[str, str, str]], np.ndarray]:
    """The (collection, instrument, product type) groups of :func:`plan_breakdown`, and each
    product row's group (an index into them; two groups may bear one name)."""
    instrument = dict(zip(decoded_column(observations["obsid"]), decoded_column(observations["instrument_name"]))) \
        if "instrument_name" in observations.colnames else {}
    kind = next((c for c in ("productSubGroupDescription", "file_suffix", "productType") if c in products.colnames),
                None)  # file_suffix: a mission search's product lists
    # Each column's distinct values are decoded once; rows are grouped by their codes (numpy),
    # not one dict look-up per product (seconds at a million).
    owners, owner_codes = unique_by_runs(np.asarray(products["parent_obsid"] if "parent_obsid" in products.colnames
                                                    else products["obsID"]))
    names = [instrument.get(owner, "?") for owner in decoded_column(owners)]
    instruments, instrument_of_owner = np.unique(np.array(names, dtype=str), return_inverse=True)
    collections, collection_codes = unique_by_runs(np.asarray(products["obs_collection"]))
    if kind:
        kinds, kind_codes = unique_by_runs(np.asarray(products[kind]))
        kind_names = [text or "?" for text in decoded_column(kinds)]
    else:
        kind_names, kind_codes = ["?"], np.zeros(len(products), dtype=np.int64)
    # one integer per (collection, instrument, kind): counting integers, not sorting a stack of
    # columns; built in place, each code array let go once used (ten million rows: ~80 MB each)
    n_instruments, n_kinds = len(instruments), len(kind_names)
    combined = collection_codes.astype(np.int64)
    del collection_codes
    combined *= n_instruments
    combined += instrument_of_owner.ravel()[owner_codes]
    del owner_codes
    combined *= n_kinds
    combined += kind_codes
    del kind_codes
    keys, group_codes = _ranked(combined, len(collections) * n_instruments * n_kinds)
    collection_names, instrument_names = decoded_column(collections), [str(name) for name in instruments]
    groups = [(collection_names[c], instrument_names[i], kind_names[k]) for c, i, k in
              zip((keys // (n_instruments * n_kinds)).tolist(), (keys // n_kinds % n_instruments).tolist(),
                  (keys % n_kinds).tolist())]
    return groups, group_codes.ravel()


def grouped_totals(groups: list[tuple[str, str, str]], codes: np.ndarray,
                   sizes: np.ndarray) -> list[tuple[str, str, str, int, int]]:
    """:func:`plan_breakdown`'s rows for files of group ``codes`` (into ``groups``) and ``sizes``."""
    counts = np.bincount(codes, minlength=len(groups)).tolist()
    nbytes = np.zeros(len(groups), dtype=np.int64)
    np.add.at(nbytes, codes, sizes)
    totals: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for group, n, b in zip(groups, counts, nbytes.tolist()):
        if n:
            entry = totals[group]
            entry[0] += n
            entry[1] += int(b)
    return sorted(((c, i, k, n, b) for (c, i, k), (n, b) in totals.items()), key=lambda r: (-r[4], r[:3]))


# --------------------------------------------------------------------------------------------
# Run reports: what a run did and what changed since the previous one

#: Lists in a report (new observations, new files ...) are cut at this length; counts are exact.
MAX_LISTED = 1000


@dataclass
class Snapshot:
    """What a state directory held before a run, to say afterwards what changed."""

    obsids: set[str] | None  # None: no previous query checkpoint (first run)
    products: Versions | None  # the products kept by filter, by dataURI


@dataclass(frozen=True)
class Versions:
    """The products of a filter table by dataURI, with what makes each one's version: its size
    and, where the list has it, prvversion (MAST reprocesses files under the same name,
    sometimes to the same size).

    Held as arrays sorted by dataURI (UTF-8 bytes, whose order is the text's), so that two runs
    of a million products are compared with array arithmetic: as Python objects, building and
    comparing them was seconds of every run.
    """

    uris: np.ndarray
    sizes: np.ndarray
    prvversions: np.ndarray | None

    @classmethod
    def of(cls, table: Table) -> Versions:
        """A table's products; where a dataURI is listed twice, its last row counts."""
        if "dataURI" not in table.colnames:
            return cls(np.array([], dtype="S1"), np.array([], dtype=np.int64), None)
        uris = encoded_column(table["dataURI"])
        values = np.asarray(table["size"])
        sizes = values.astype(np.int64) if values.dtype.kind in "iuf" else np.array([int(s) for s in values],
                                                                                      dtype=np.int64)
        prvversions = encoded_column(table["prvversion"]) if "prvversion" in table.colnames else None
        if len(uris) < 2 or bool((uris[1:] > uris[:-1]).all()):  # already in order, once each: no copy
            return cls(uris, sizes, prvversions)
        order = np.argsort(uris, kind="stable")
        uris = uris[order]
        last = np.append(uris[1:] != uris[:-1], True)
        keep = order[last]
        return cls(uris if last.all() else uris[last], sizes[keep], prvversions[keep] if prvversions is not None else None)

    def found_in(self, other: Versions) -> tuple[np.ndarray, np.ndarray]:
        """For each of these products, whether ``other`` has it, and where (valid where found)."""
        where = np.searchsorted(other.uris, self.uris)
        clipped = np.minimum(where, max(len(other.uris) - 1, 0))
        found = (where < len(other.uris)) & (other.uris[clipped] == self.uris) if len(other.uris) else \
            np.zeros(len(self.uris), dtype=bool)
        return found, clipped


def snapshot(previous: Mapping[str, Table | None]) -> Snapshot:
    """The parts of the previous query and filter results that :func:`changes` compares
    (``previous`` is :attr:`RunResult.previous` of a run that remembered them)."""
    query = previous.get("query")
    filtered = previous.get("filter")
    obsids = set(decoded_column(query["obsid"])) if query is not None and "obsid" in query.colnames else None
    return Snapshot(obsids, Versions.of(filtered) if filtered is not None else None)


_NO_VERSIONS = Versions(np.array([], dtype="S1"), np.array([], dtype=np.int64), None)


def _listed(values: set[str] | list[str]) -> dict[str, Any]:
    """The first MAX_LISTED values in order, and how many there are (not all a million sorted)."""
    items = heapq.nsmallest(MAX_LISTED, values)
    return {"count": len(values), "items": items, "truncated": len(values) > MAX_LISTED}


def _listed_sorted(uris: np.ndarray, which: np.ndarray) -> dict[str, Any]:
    """:func:`_listed` of the sorted UTF-8 dataURIs ``uris[which]`` (a mask): only the first
    MAX_LISTED are copied and decoded."""
    count = int(np.count_nonzero(which))
    first = np.flatnonzero(which)[:MAX_LISTED]
    return {"count": count, "items": decoded_column(uris[first]), "truncated": count > MAX_LISTED}


def _product_changes(before: Versions, after: Versions) -> dict[str, Any]:
    found, where = after.found_in(before)
    if len(after.uris) and (before.prvversions is None) != (after.prvversions is None):
        differs = np.ones(len(after.uris), dtype=bool)  # one list has prvversion, the other not
    else:
        differs = before.sizes[where] != after.sizes if len(before.uris) else np.zeros(len(after.uris), dtype=bool)
        if before.prvversions is not None and after.prvversions is not None and len(before.uris):
            differs |= before.prvversions[where] != after.prvversions
    kept, _ = before.found_in(after)
    return {"new": _listed_sorted(after.uris, ~found), "changed": _listed_sorted(after.uris, found & differs),
            "dropped": _listed_sorted(before.uris, ~kept)}


def _all_new(table: Table) -> dict[str, Any]:
    """:func:`_product_changes` with no earlier products (a first run): every product is new.

    Distinct dataURIs are counted by :func:`~mastpipe.stages.unique.first_rows` (a sort of
    integers) and only the first MAX_LISTED of them in order are sorted: sorting the column
    itself (``Versions.of``) was 0.3 s per million products, and copied every dataURI, 700 MB at
    ten million, when the run's memory peaked.
    """
    from mastpipe.stages.unique import first_rows

    def none() -> dict[str, Any]:
        return {"count": 0, "items": [], "truncated": False}

    if "dataURI" not in table.colnames or not len(table):
        return {"new": none(), "changed": none(), "dropped": none()}
    uris = encoded_column(table["dataURI"])
    rows = first_rows(uris)
    distinct = uris if len(rows) == len(uris) else uris[rows]
    if len(distinct) > MAX_LISTED:
        distinct = distinct[np.argpartition(distinct, MAX_LISTED - 1)[:MAX_LISTED]]
    new = {"count": len(rows), "items": decoded_column(np.sort(distinct)), "truncated": len(rows) > MAX_LISTED}
    return {"new": new, "changed": none(), "dropped": none()}


def changes(before: Snapshot, result: RunResult) -> dict[str, Any]:
    """New or withdrawn observations, new, changed or dropped products, files fetched.

    ``downloaded`` is a deprecated copy of ``fetched`` (the word the rest of the report uses),
    kept for one release so that scripts reading it keep working.
    """
    after_obs = set(decoded_column(result.tables["query"]["obsid"])) if "query" in result.tables and \
        "obsid" in result.tables["query"].colnames else None
    filtered = result.tables.get("filter")
    report: dict[str, Any] = {"first_run": before.obsids is None}
    if after_obs is not None:
        previous = before.obsids or set()
        report["observations"] = {"new": _listed(after_obs - previous), "withdrawn": _listed(previous - after_obs)}
    if filtered is not None:
        report["products"] = _all_new(filtered) if before.products is None else \
            _product_changes(before.products, Versions.of(filtered))
    retrieved = result.retrieve
    if retrieved is not None and retrieved.mode == "download":
        report["fetched"] = _listed([r.key for r in retrieved.results if r.status == "fetched"])
        report["downloaded"] = report["fetched"]  # deprecated: remove in the release after next
        status = {r.key: r for r in retrieved.results}
        items = [{"dataURI": key, "why": why, "status": status[key].status if key in status else "not retrieved",
                  **({"error": status[key].error} if key in status and status[key].error else {})}
                 for key, why in sorted(retrieved.reprocessed.items())]
        report["reprocessed"] = {"count": len(items), "items": items[:MAX_LISTED], "truncated": len(items) > MAX_LISTED}
    return report


def failure_reason(key: str, error: str | None) -> str:
    """A file's error without the product name it starts with, for lines that name it first."""
    error = error or "unknown error"
    return error[len(key) + 2:] if error.startswith(f"{key}: ") else error


def nothing_new(change: dict[str, Any]) -> bool:
    """True when a rerun found no new observation, product or file."""
    if change.get("first_run") or change.get("not_compared"):
        return False
    counts = [change.get("observations", {}).get(k, {}).get("count", 0) for k in ("new", "withdrawn")]
    counts += [change.get("products", {}).get(k, {}).get("count", 0) for k in ("new", "changed", "dropped")]
    counts.append(change.get("fetched", change.get("downloaded", {})).get("count", 0))
    counts.append(change.get("reprocessed", {}).get("count", 0))
    return not any(counts)


def build_report(result: RunResult, before: Snapshot, *, run_id: str, started: float, finished: float,
                 exit_code: int, recipe_path: str, recipe_fingerprint: str) -> dict[str, Any]:
    """The JSON run report (schema documented in README, "Run reports")."""
    from mastpipe import __version__

    report: dict[str, Any] = {
        "mastpipe": __version__, "run_id": run_id, "recipe": {"path": recipe_path, "fingerprint": recipe_fingerprint},
        "mast_url": result.mast_url, "insecure": result.insecure, "started": iso_time(started), "finished": iso_time(finished),
        "seconds": round(finished - started, 3), "exit_code": exit_code,
        "stages": [{"stage": s.stage, "action": s.action, "reasons": s.reasons, "rows_in": s.rows_in,
                    "rows_out": s.rows_out, "seconds": round(s.seconds, 3)} for s in result.stages],
        "changes": changes(before, result),
        "expectations": {"checked": result.expectations,
                         "failed": [check for check in result.expectations if not check["ok"]]},
        "empty": result.explanations,
    }
    if report["expectations"]["failed"]:
        # the run stopped early: comparing its partial tables with the last run would call
        # every product dropped
        report["changes"] = {"first_run": before.obsids is None, "not_compared": "the run stopped at a failed expectation"}
    retrieved = result.retrieve
    if retrieved is not None:
        report["retrieve"] = {
            "mode": retrieved.mode,
            "fetched": {"files": retrieved.count("fetched"), "bytes": retrieved.bytes_fetched,
                        # where they came from: MAST's download service or its S3 copies
                        "by_source": {source: sum(1 for r in retrieved.results
                                                  if r.status == "fetched" and r.source == source)
                                      for source in ("mast", "s3")}},
            "skipped": {"files": retrieved.count("skipped")},
            # the files whose FITS CHECKSUM/DATASUM were verified against their bytes
            "checksum_verified": _listed([r.key for r in retrieved.results if r.checksum == "verified"]),
            "failed": {"files": len(retrieved.failed),
                       "items": [{"dataURI": r.key, "error": r.error} for r in retrieved.failed[:MAX_LISTED]]},
            "manifest": str(retrieved.manifest) if retrieved.manifest else None,
            "script": str(retrieved.script) if retrieved.script else None,
        }
    report["reprocessed"] = report["changes"].get("reprocessed")
    report["nothing_new"] = nothing_new(report["changes"])
    return report


def iso_time(moment: float) -> str:
    """UTC ISO 8601 time of a report or history entry."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def render_markdown(report: dict[str, Any], recipe_name: str) -> str:
    """A short Markdown summary of a run report, for people and CI step summaries."""
    lines = [f"## mastpipe: {recipe_name}", ""]
    status = {0: "succeeded", 1: "finished with failed files",
              5: "stopped before retrieve: an expectation failed (exit 5)"}.get(
        report["exit_code"], f"failed (exit {report['exit_code']})")
    lines.append(f"Run `{report['run_id']}` against {report['mast_url']} {status} in {report['seconds']:.1f} s.")
    lines.append("")
    if report.get("insecure"):
        lines += ["**Warning:** TLS certificates were not checked (`--insecure`): what was downloaded "
                  "could have been altered in transit.", ""]
    from mastpipe.expectations import describe

    for check in (report.get("expectations") or {}).get("failed", []):
        lines.append(f"**Expectation failed:** {describe(check)}.")
    for entry in report.get("empty") or []:
        lines.append(f"**Empty:** {entry['message']}")
    if lines[-1] != "":
        lines.append("")
    if report.get("nothing_new") and report["exit_code"] == 0:
        lines += ["Nothing new since the previous run.", ""]
    lines += ["| stage | action | rows | seconds | why |", "|---|---|---:|---:|---|"]
    for stage in report["stages"]:
        rows = "" if stage["rows_out"] is None else str(stage["rows_out"])
        lines.append(f"| {stage['stage']} | {stage['action']} | {rows} | {stage['seconds']:.1f} | {'; '.join(stage['reasons'])} |")
    retrieve = report.get("retrieve")
    if retrieve:
        lines += ["", f"**Files:** {retrieve['fetched']['files']} fetched ({human_bytes(retrieve['fetched']['bytes'])}), "
                      f"{retrieve['skipped']['files']} already present, {retrieve['failed']['files']} failed; "
                      f"{(retrieve.get('checksum_verified') or {}).get('count', 0)} with their FITS checksums verified."]
        for item in retrieve["failed"]["items"][:20]:
            lines.append(f"- failed `{item['dataURI']}`: {failure_reason(item['dataURI'], item['error'])}")
    change = report["changes"]
    if not change.get("first_run") and not change.get("not_compared"):
        lines += ["", "**Since the previous run:**", ""]
        for label, entry in (("new observations", change.get("observations", {}).get("new")),
                             ("withdrawn observations", change.get("observations", {}).get("withdrawn")),
                             ("new products", change.get("products", {}).get("new")),
                             ("changed products", change.get("products", {}).get("changed")),
                             ("dropped products", change.get("products", {}).get("dropped")),
                             ("files fetched", change.get("fetched")),
                             ("reprocessed by MAST", change.get("reprocessed"))):
            if entry is None:
                continue
            shown = ", ".join(f"`{item['dataURI']}` ({item['why']}; {item['status']})" if isinstance(item, dict)
                              else f"`{item}`" for item in entry["items"][:10])
            more = f" and {entry['count'] - 10} more" if entry["count"] > 10 else ""
            lines.append(f"- {label}: {entry['count']}" + (f" ({shown}{more})" if entry["count"] else ""))
    return "\n".join(lines) + "\n"


def append_history(state_dir: Path, entry: dict[str, Any]) -> None:
    """Add one run to ``history.jsonl`` in the state directory (one JSON object per line)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(StateDir(state_dir).history, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_history(state_dir: Path) -> list[dict[str, Any]]:
    """Every run recorded in the state directory, oldest first; unreadable lines are skipped."""
    path = StateDir(state_dir).history
    if not path.exists():
        return []
    runs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            runs.append(json.loads(line))
        except ValueError:  # a line cut short by a crash
            continue
    return runs


def history_entry(report: dict[str, Any]) -> dict[str, Any]:
    retrieve = report.get("retrieve") or {}
    stages = {s["stage"]: s["rows_out"] for s in report["stages"]}
    return {
        "run_id": report["run_id"], "started": report["started"], "finished": report["finished"],
        "recipe_fingerprint": report["recipe"]["fingerprint"], "exit_code": report["exit_code"],
        "observations": stages.get("query"), "products_kept": stages.get("filter"),
        "fetched": (retrieve.get("fetched") or {}).get("files"), "failed": (retrieve.get("failed") or {}).get("files"),
        "nothing_new": report.get("nothing_new"),
    }
