"""A scheduled rerun's story, as CI lives it: three `mastpipe run --refresh` against the sandbox.

Between runs 1 and 2 MAST gains an observation, reprocesses a product to the same size and
withdraws another; between runs 2 and 3 someone commits a typo in the recipe, fixed before run 4.
Each run's exit code, JSON report and Markdown summary must say what happened; the typo must
turn the job red (exit 5) without touching what was downloaded, and the fix green again with
nothing new.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from _examples import JWST_1073, TYPO, example_recipe

from mastpipe.sandbox import Sandbox


Cli = Callable[..., subprocess.CompletedProcess[str]]


def _run(cli: Cli, recipe: Path, url: str, n: int) -> tuple[subprocess.CompletedProcess[str], dict, str]:
    reports = recipe.parent / "reports"
    reports.mkdir(exist_ok=True)
    done = cli("run", str(recipe), "--refresh", "-q", "--mast-url", url, "--report", str(reports / f"{n}.json"),
               "--summary", str(reports / f"{n}.md"), cwd=recipe.parent, drop=("GITHUB_STEP_SUMMARY",), timeout=600)
    assert "Traceback" not in done.stderr, done.stderr
    return done, json.loads((reports / f"{n}.json").read_text()), (reports / f"{n}.md").read_text()


def _gets(sandbox: Sandbox) -> list[str]:
    return sorted(r.uri for r in sandbox.log.records() if r.endpoint == "download" and r.method == "GET")


def test_three_scheduled_reruns(cli_in_process: Cli, tmp_path: Path) -> None:
    cli = cli_in_process  # the story is in the files each run leaves, not in its process
    recipe = example_recipe(tmp_path, filename=JWST_1073)
    data = tmp_path / "data" / "jwst-1073"
    with Sandbox(seed=0) as sb:
        cat = sb.catalog
        # run 1: everything is new
        first, report, summary = _run(cli, recipe, sb.url, 1)
        assert first.returncode == 0, first.stderr
        assert report["changes"]["first_run"] and report["exit_code"] == 0
        fetched = report["retrieve"]["fetched"]["files"]
        assert fetched > 2 and "succeeded" in summary

        # MAST moves on: a new observation, a product reprocessed to the same size, one withdrawn
        uris = sorted(u for u in _gets(sb) if "_gs-" not in u)
        reprocessed, withdrawn = uris[0], uris[1]
        new_obs = cat.add_observation(n_products=2)
        new_uncal = [p["dataURI"] for p in cat.products(new_obs["obsid"]) if p["productSubGroupDescription"] == "UNCAL"]
        cat.reprocess(reprocessed, same_size=True)
        cat.withdraw_product(withdrawn)
        sb.log.clear()

        # run 2: exactly those changes, and only the new and reprocessed files fetched
        second, report, summary = _run(cli, recipe, sb.url, 2)
        assert second.returncode == 0, second.stderr
        changes = report["changes"]
        assert changes["observations"]["new"]["items"] == [str(new_obs["obsid"])]
        assert changes["products"]["new"]["items"] == new_uncal
        assert changes["products"]["dropped"]["items"] == [withdrawn]
        assert changes["products"]["changed"]["items"] == [reprocessed]
        assert _gets(sb) == sorted(new_uncal + [reprocessed])
        (item,) = report["reprocessed"]["items"]
        assert item["dataURI"] == reprocessed and item["status"] == "fetched"
        assert f"- new observations: 1 (`{new_obs['obsid']}`)" in summary
        assert "- dropped products: 1" in summary and "- reprocessed by MAST: 1" in summary
        assert not report["nothing_new"]
        on_disk = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in data.rglob("*.fits")}
        assert any(p.name == reprocessed.rsplit("/", 1)[-1] and d == cat.sha256(reprocessed) for p, d in on_disk.items())

        # someone commits a typo: the nightly job goes red and says why, nothing is touched
        example_recipe(tmp_path, filename=JWST_1073, **TYPO)
        sb.log.clear()
        third, report, summary = _run(cli, recipe, sb.url, 3)
        assert third.returncode == 5, third.stderr
        assert "instrument_name: 'NIRCAN*' matches nothing" in third.stderr and "NIRCAM/IMAGE" in third.stderr
        assert report["exit_code"] == 5 and report["expectations"]["failed"]
        assert report["empty"][0]["culprits"][0]["near"][0]["value"] == "NIRCAM/IMAGE"
        assert "retrieve" not in report and _gets(sb) == []
        assert "stopped before retrieve: an expectation failed (exit 5)" in summary
        assert "**Expectation failed:** query 'nircam' found 0 observations, expected at least 1." in summary
        assert "**Empty:** query 'nircam' matches no observation" in summary
        assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in data.rglob("*.fits")} == on_disk
        # the typo is fixed: the job is green again, and nothing is new since the last good run
        # (the failed run replaced no checkpoint)
        example_recipe(tmp_path, filename=JWST_1073)
        fourth, report, summary = _run(cli, recipe, sb.url, 4)
        assert fourth.returncode == 0, fourth.stderr
        assert report["nothing_new"] and _gets(sb) == [] and "Nothing new since the previous run." in summary
        history = cli("history", str(recipe), "--json", cwd=tmp_path)
        assert [entry["exit_code"] for entry in json.loads(history.stdout)] == [0, 0, 5, 0]
