"""``mastpipe.plan`` and ``mastpipe.status``: the library returns data, and ``--json`` prints
exactly that data (the CLI only formats)."""

from __future__ import annotations

import json
from pathlib import Path

from _examples import example_recipe

import mastpipe


def _recipe(tmp_path: Path) -> Path:
    return example_recipe(tmp_path, name="plan-status-api", mast={"timeout": 5, "retries": 1},
                          filter={"guide_stars": "omit"}, retrieve={"destination": "data"})


def test_plan_returns_what_the_run_then_fetches(sandbox, tmp_path):
    recipe = _recipe(tmp_path)
    found = mastpipe.plan(recipe, mast_url=sandbox.url, environ={})
    assert isinstance(found, mastpipe.PlanReport)
    assert found.files > 0 and found.to_fetch == found.files and found.present == 0
    assert found.bytes_to_fetch == found.bytes == sum(group.bytes for group in found.breakdown)
    assert sum(group.files for group in found.breakdown) == found.files
    assert {(g.collection, g.product) for g in found.breakdown} == {("JWST", "UNCAL")}
    assert [stage.action for stage in found.stages] == ["computed"] * 4
    assert len(found.tables["filter"]) == found.files
    assert not (tmp_path / "data").exists()  # nothing downloaded

    outcome = mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    fetched = outcome.report["retrieve"]["fetched"]
    assert (fetched["files"], fetched["bytes"]) == (found.to_fetch, found.bytes_to_fetch)
    again = mastpipe.plan(recipe, mast_url=sandbox.url, environ={})
    assert (again.to_fetch, again.bytes_to_fetch, again.present, again.breakdown) == (0, 0, found.files, [])
    assert [stage.action for stage in again.stages] == ["reused"] * 4

    data = again.to_dict()
    json.dumps(data)  # JSON-able as it is
    assert data["kind"] == "plan" and data["mastpipe"] == mastpipe.__version__
    assert (data["recipe"], data["files"], data["to_fetch"], data["present"]) == (
        "plan-status-api", found.files, 0, found.files)
    assert [s["stage"] for s in data["stages"]] == ["query", "products", "unique", "filter"]


def test_plan_refresh_asks_mast_again(sandbox, tmp_path):
    recipe = _recipe(tmp_path)
    mastpipe.plan(recipe, mast_url=sandbox.url, environ={})
    sandbox.log.clear()
    reused = mastpipe.plan(recipe, mast_url=sandbox.url, environ={})
    assert [r for r in sandbox.log.records() if r.endpoint in ("query", "products")] == []
    assert {s.action for s in reused.stages} == {"reused"}
    refreshed = mastpipe.plan(recipe, mast_url=sandbox.url, environ={}, refresh=True)
    assert [s.reasons for s in refreshed.stages[:2]] == [["--refresh"], ["--refresh"]]
    assert {r.endpoint for r in sandbox.log.records()} >= {"query", "products"}


def test_status_reports_stages_retrieve_and_lock_as_data(sandbox, tmp_path):
    recipe = _recipe(tmp_path)
    empty = mastpipe.status(recipe, mast_url=sandbox.url, environ={})
    assert [s.state for s in empty.stages] == ["missing"] * 4
    assert empty.retrieve is None and empty.retrieve_state == "missing" and empty.lock is None
    assert empty.to_dict()["retrieve"]["files"] is None

    outcome = mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    files = len(outcome.tables["filter"])
    gone = sorted((tmp_path / "data").rglob("*_uncal.fits"))[0]
    gone.unlink()
    found = mastpipe.status(recipe, mast_url=sandbox.url, environ={})
    data = found.to_dict()
    json.dumps(data)
    assert data["kind"] == "status" and [s["state"] for s in data["stages"]] == ["current"] * 4
    assert all(s["finished"].endswith("Z") for s in data["stages"])
    assert data["retrieve"] == {"state": "partial", "mode": "download", "files": files, "present": files - 1,
                                "to_fetch": 1, "bytes_to_fetch": sandbox.catalog.file_size(
                                    next(iter(found.retrieve.remaining))),
                                "partial": 0, "failed": 0, "blocked": 0, "filter_stale": False}
    assert data["lock"] is None
