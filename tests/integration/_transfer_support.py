"""Helpers shared by the transfer integration tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

from mastpipe.retry import RetryPolicy
from mastpipe.sandbox import Sandbox
from mastpipe.stages.retrieve.engine import FileTask

#: Retries without real waiting: tests exercise the logic, not the clock.
FAST = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.005, retry_after_cap=30)

JWST_1073_OBSID = "87600001"  # first observation of the seed-0 catalogue (public)
EXCLUSIVE_OBSID = "87700001"  # program 4242, EXCLUSIVE_ACCESS


def public_rows(sb: Sandbox, n: int) -> list[dict]:
    """``n`` distinct public product rows of the seed catalogue."""
    rows: dict[str, dict] = {}
    for obs in sb.catalog.observations():
        if obs["dataRights"] != "PUBLIC" or obs["obs_collection"] != "JWST":
            continue
        for row in sb.catalog.products(obs["obsid"]):
            rows.setdefault(row["dataURI"], row)
            if len(rows) == n:
                return list(rows.values())
    raise AssertionError(f"catalogue has fewer than {n} public products")


def task_for(sb: Sandbox, row: dict, root: Path, **overrides: object) -> FileTask:
    """The FileTask the retrieve stage would build for ``row`` (astroquery layout)."""
    fields = dict(
        key=row["dataURI"],
        url=sb.download_url(row["dataURI"]),
        dest=root / "mastDownload" / row["obs_collection"] / row["obs_id"] / row["productFilename"],
        size=row["size"],
        protected=row.get("dataRights") == "EXCLUSIVE_ACCESS",
    )
    fields.update(overrides)
    return FileTask(**fields)  # type: ignore[arg-type]


def downloads(sb: Sandbox, uri: str | None = None, method: str = "GET") -> list:
    """Download-endpoint records of ``method`` (for ``uri`` when given), oldest first."""
    return [r for r in sb.log.records()
            if r.endpoint == "download" and r.method == method and (uri is None or r.uri == uri)]


def assert_complete(sb: Sandbox, task: FileTask) -> None:
    """The final file exists with the catalogue's exact bytes and no temporary beside it."""
    assert task.dest.read_bytes() == sb.catalog.body(task.key)
    leftovers = [p.name for p in task.dest.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []
