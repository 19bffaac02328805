"""The recipe's ``expect``: a run whose result breaks it stops before retrieve with exit code 5,
and still writes its report, summary and history (against the sandbox, over the wire)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _examples import JWST_1073, TYPO, WRONG_CASE, example_recipe

import mastpipe
from mastpipe.errors import EXIT_EXPECTATION, ExpectationError


def _recipe(tmp_path: Path, **changes: object) -> Path:
    return example_recipe(tmp_path, filename=JWST_1073, **changes)


def _downloads(sandbox) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.uri for r in sandbox.log.records() if r.endpoint == "download"]


def test_an_empty_search_fails_by_default_and_is_reported(sandbox, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, **TYPO)
    summary = tmp_path / "summary.md"
    with pytest.raises(ExpectationError) as caught:
        mastpipe.run(recipe, mast_url=sandbox.url, summary=summary, environ={})
    error = caught.value
    assert error.exit_code == EXIT_EXPECTATION == 5
    assert "query 'nircam' found 0 observations, expected at least 1" in error.message
    assert _downloads(sandbox) == [], "a failed expectation stops before retrieve"
    state = tmp_path / ".mastpipe" / "jwst-1073-nircam-uncal"
    report = json.loads((state / "last-report.json").read_text())
    assert report["exit_code"] == 5
    failed = report["expectations"]["failed"]
    assert {(f["where"], f["what"], f["found"]) for f in failed} == {("recipe", "observations", 0),
                                                                      ("query 'nircam'", "observations", 0)}
    assert [s["stage"] for s in report["stages"]] == ["query"], "stopped right after the stage that showed it"
    text = summary.read_text()
    assert "stopped before retrieve: an expectation failed (exit 5)" in text
    assert "**Expectation failed:** query 'nircam' found 0 observations, expected at least 1." in text
    history = [json.loads(line) for line in (state / "history.jsonl").read_text().splitlines()]
    assert [h["exit_code"] for h in history] == [5]


def test_a_filter_that_keeps_nothing_fails_and_min_zero_accepts_it(sandbox, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, **WRONG_CASE)
    with pytest.raises(ExpectationError) as caught:
        mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    assert caught.value.failures[0]["what"] == "files" and caught.value.failures[0]["stage"] == "filter"
    assert _downloads(sandbox) == []

    accepting = _recipe(tmp_path, **WRONG_CASE, expect={"files": {"min": 0}})
    outcome = mastpipe.run(accepting, mast_url=sandbox.url, environ={})
    assert outcome.exit_code == 0 and len(outcome.tables["filter"]) == 0
    assert outcome.report["expectations"]["failed"] == []


def test_bytes_and_per_query_bounds(sandbox, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, expect={"bytes": {"max": "10 KB"}})
    with pytest.raises(ExpectationError) as caught:
        mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    (failure,) = caught.value.failures
    assert failure["what"] == "bytes" and failure["max"] == 10_000 and failure["found"] > 10_000
    assert "the recipe kept " in caught.value.message and "expected at most 10000 bytes (9.8 KiB) (expect.bytes)" in caught.value.message
    assert _downloads(sandbox) == []

    per_query = _recipe(tmp_path, query={"nircam": {"expect": {"observations": {"max": 2}, "files": {"min": 1}}}})
    with pytest.raises(ExpectationError) as caught:
        mastpipe.run(per_query, mast_url=sandbox.url, environ={})
    (failure,) = caught.value.failures
    assert failure["where"] == "query 'nircam'" and failure["what"] == "observations" and failure["found"] > 2


def test_a_run_within_its_expectations_records_the_checks(sandbox, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, expect={"observations": {"min": 1, "max": 1000}, "bytes": {"max": "2 TB"}})
    outcome = mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    assert outcome.exit_code == 0
    checked = {(c["where"], c["what"]): c for c in outcome.report["expectations"]["checked"]}
    assert checked[("recipe", "observations")]["ok"] and checked[("recipe", "bytes")]["max"] == 2 * 10**12
    assert checked[("recipe", "files")]["found"] == len(outcome.tables["filter"])
    assert checked[("query 'nircam'", "observations")]["found"] == len(outcome.tables["query"])
