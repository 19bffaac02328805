"""Empty results explained, and object names resolved by the configured server (the sandbox)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _examples import JWST_1073, TYPO, WRONG_CASE, example_recipe

import mastpipe
from mastpipe.errors import ExpectationError, NameNotFoundError


def _recipe(tmp_path: Path, **changes: object) -> Path:
    return example_recipe(tmp_path, filename=JWST_1073, **changes)


def _services(sandbox) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.service for r in sandbox.log.records() if r.endpoint == "query"]


def test_a_typo_in_criteria_is_found_and_shown_with_near_values(sandbox, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, **TYPO)
    with pytest.raises(ExpectationError) as caught:
        mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    (entry,) = caught.value.explanations
    assert entry["where"] == "query 'nircam'"
    assert entry["count_without"]["instrument_name"] > 0
    assert all(entry["count_without"][f] == 0 for f in ("obs_collection", "proposal_id", "filters"))
    (culprit,) = entry["culprits"]
    assert culprit["field"] == "instrument_name"
    assert culprit["near"][0]["value"] == "NIRCAM/IMAGE"
    assert "instrument_name: 'NIRCAN*' matches nothing" in entry["message"]
    assert "NIRCAM/IMAGE (" in entry["message"]
    # one count without each of the 4 criteria, one page of one column: bounded, whatever the catalogue
    queries = [r for r in sandbox.log.records() if r.endpoint == "query" and r.service == "Mast.Caom.Filtered"]
    assert len(queries) <= 2 + 4 + 1
    report = json.loads((tmp_path / ".mastpipe" / "jwst-1073-nircam-uncal" / "last-report.json").read_text())
    assert report["empty"][0]["culprits"][0]["field"] == "instrument_name"


def test_a_filter_rule_that_keeps_nothing_shows_the_values_present(sandbox, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, **WRONG_CASE)
    with pytest.raises(ExpectationError) as caught:
        mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    (entry,) = caught.value.explanations
    assert entry["where"] == "filter.columns.productSubGroupDescription"
    assert entry["values_present"][0]["value"] == "UNCAL"
    assert entry["message"].startswith("filter.columns.productSubGroupDescription keeps 0 of the ")


def test_the_cli_explains_on_stderr_even_with_quiet(cli_in_process, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, **TYPO)
    result = cli_in_process("run", str(recipe), "--sandbox", "-q", cwd=tmp_path)
    assert result.returncode == 5, result.stderr
    assert "Traceback" not in result.stderr
    assert "query 'nircam' matches no observation: instrument_name: 'NIRCAN*' matches nothing" in result.stderr
    assert "NIRCAM/IMAGE" in result.stderr
    assert "mastpipe: error: expectation failed: " in result.stderr
    assert "query 'nircam' found 0 observations, expected at least 1" in result.stderr


CONE = """version: 1
name: crab
query:
  crab:
    criteria: {obs_collection: HST}
    position: {object: NAME, radius: 0.1 deg}
retrieve: {mode: manifest, destination: out}
"""


def test_object_names_are_resolved_by_the_configured_server_and_cached(sandbox, tmp_path: Path) -> None:
    recipe = tmp_path / "crab.yaml"
    recipe.write_text(CONE.replace("NAME", "M1"))
    first = mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    assert first.exit_code == 0 and len(first.tables["query"]) > 0
    assert set(map(str, first.tables["query"]["target_name"])) == {"CRAB"}
    assert "Mast.Name.Lookup" in _services(sandbox)
    cached = json.loads((tmp_path / ".mastpipe" / "crab" / "names.json").read_text())
    assert cached["m1"]["canonical_name"] == "CRAB"
    sandbox.log.clear()
    second = mastpipe.run(recipe, mast_url=sandbox.url, refresh=True, environ={})
    assert second.exit_code == 0
    assert "Mast.Name.Lookup" not in _services(sandbox), "a rerun does not ask for the name again"


def test_an_unknown_name_says_so_without_blaming_the_server(sandbox, tmp_path: Path) -> None:
    recipe = tmp_path / "crab.yaml"
    recipe.write_text(CONE.replace("NAME", "Mx 1234567"))
    with pytest.raises(NameNotFoundError) as caught:
        mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    assert caught.value.exit_code == 2
    assert "does not know this name" in caught.value.message and "'Mx 1234567'" in caught.value.message
    assert "down" not in str(caught.value)
    lookups = [r for r in sandbox.log.records() if r.service == "Mast.Name.Lookup"]
    assert len(lookups) == 1, "a name MAST does not know is not retried"
