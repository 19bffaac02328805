"""Scheduled reruns: three runs while the catalogue grows, and what their reports say.

Run 1 fetches everything; between runs 1 and 2 MAST gains an observation (with an UNCAL
product) and an existing observation gains a product; run 2 (``refresh=True``, as a schedule
would) must report exactly those and download only the new files; run 3 finds nothing new.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _examples import example_recipe

import mastpipe
from mastpipe.errors import ArchiveError

REPO = Path(__file__).resolve().parents[2]
SEED = "jwst-1073-nircam-uncal.yaml"


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    shutil.copy(REPO / "pipelines" / SEED, tmp_path / SEED)
    return tmp_path / SEED


def _downloads(sandbox) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.uri for r in sandbox.log.records() if r.endpoint == "download" and r.method == "GET"]


def test_three_runs_report_exactly_what_changed(sandbox, recipe: Path, tmp_path: Path) -> None:
    summary = tmp_path / "step-summary.md"
    env = {"GITHUB_STEP_SUMMARY": str(summary)}

    first = mastpipe.run(recipe, mast_url=sandbox.url, environ=env)
    assert first.exit_code == 0
    assert first.report["changes"]["first_run"] is True
    fetched_first = first.report["retrieve"]["fetched"]["files"]
    assert fetched_first == len(first.tables["filter"]) > 0

    existing = sorted({p.decode() if isinstance(p, bytes) else str(p) for p in first.tables["query"]["obsid"]})[0]
    new_obs = sandbox.catalog.add_observation(n_products=2)
    new_product = sandbox.catalog.add_product(existing, productFilename="jw01073999001_02101_00001_nrca1_uncal.fits",
                                             productSubGroupDescription="UNCAL", productType="SCIENCE", size=2880 * 4)
    new_obs_uncal = [p["dataURI"] for p in sandbox.catalog.products(new_obs["obsid"])
                     if p["productFilename"].endswith("_uncal.fits")]
    sandbox.log.clear()

    second = mastpipe.run(recipe, mast_url=sandbox.url, refresh=True, environ=env)
    assert second.exit_code == 0
    changes = second.report["changes"]
    assert changes["observations"]["new"]["items"] == [str(new_obs["obsid"])]
    assert changes["observations"]["withdrawn"]["count"] == 0
    expected_new = sorted(new_obs_uncal + [new_product["dataURI"]])
    assert changes["products"]["new"]["items"] == expected_new
    assert changes["products"]["changed"]["count"] == 0 and changes["products"]["dropped"]["count"] == 0
    assert changes["fetched"]["items"] == expected_new
    assert changes["downloaded"] == changes["fetched"]  # the deprecated name, kept for one release
    assert sorted(_downloads(sandbox)) == expected_new, "the second run downloads only the new files"
    reasons = {s["stage"]: s["reasons"] for s in second.report["stages"]}
    assert "--refresh" in reasons["query"] and "input changed" in reasons["unique"]

    sandbox.log.clear()
    third = mastpipe.run(recipe, mast_url=sandbox.url, environ=env)
    assert third.exit_code == 0 and third.report["nothing_new"] is True
    assert [s["action"] for s in third.report["stages"][:4]] == ["reused"] * 4
    assert sandbox.log.records() == [], "nothing new: not a single request to MAST"

    text = summary.read_text()
    assert text.count("## mastpipe: jwst-1073-nircam-uncal") == 3
    assert f"**Files:** {fetched_first} fetched" in text
    assert f"- new observations: 1 (`{new_obs['obsid']}`)" in text
    assert f"- new products: {len(expected_new)} (" in text
    assert "Nothing new since the previous run." in text

    history = [json.loads(line) for line in (recipe.parent / ".mastpipe" / "jwst-1073-nircam-uncal" / "history.jsonl").read_text().splitlines()]
    assert [h["exit_code"] for h in history] == [0, 0, 0]
    assert [h["nothing_new"] for h in history] == [False, False, True]
    assert history[1]["fetched"] == len(expected_new)


def test_a_failed_run_is_recorded_in_the_history(recipe: Path) -> None:
    example_recipe(recipe.parent, SEED, filename=SEED, mast={"retries": 0, "timeout": 5})
    with pytest.raises(ArchiveError):
        mastpipe.run(recipe, mast_url="http://127.0.0.1:9")
    history = (recipe.parent / ".mastpipe" / "jwst-1073-nircam-uncal" / "history.jsonl").read_text().splitlines()
    entry = json.loads(history[-1])
    assert entry["exit_code"] == 3 and "127.0.0.1:9" in entry["error"]


def test_a_plan_before_the_first_run_does_not_make_it_a_rerun(sandbox, recipe: Path) -> None:
    mastpipe.Pipeline(recipe, mast_url=sandbox.url).run(until="filter")  # what `mastpipe plan` does
    first = mastpipe.run(recipe, mast_url=sandbox.url)
    assert first.report["changes"]["first_run"] is True and first.report["nothing_new"] is False
    assert "Since the previous run" not in first.summary
    second = mastpipe.run(recipe, mast_url=sandbox.url)
    assert second.report["changes"]["first_run"] is False and second.report["nothing_new"] is True
