"""Recipes over MAST's mission search API, end to end against the sandbox: the JWST mission recipe
fetches the CAOM tutorial recipe's files byte for byte; mastpipe and unmodified astroquery
``MastMissions`` agree; paging, truncation, retries, exclusive access, reruns and reports."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import mastpipe
from mastpipe.errors import ArchiveError, RecipeError, TruncatedResultError
from mastpipe.runner import Pipeline

REPO = Path(__file__).resolve().parents[2]
CAOM = "jwst-1073-nircam-uncal.yaml"
MISSION = "jwst-1073-nircam-uncal-missions.yaml"


def _text(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values)]


def _copy(name: str, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "pipelines" / name, directory / name)
    return directory / name


def _write(directory: Path, text: str, name: str = "recipe.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory / name


def _files(root: Path) -> dict[str, str]:
    """File name -> sha256 of every downloaded file under ``root`` (manifests aside)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*")
            if p.is_file() and not p.name.startswith("manifest.")}


def test_the_jwst_mission_recipe_fetches_the_caom_recipes_files_byte_for_byte(sandbox, tmp_path):
    caom = mastpipe.run(_copy(CAOM, tmp_path / "caom"), mast_url=sandbox.url, environ={})
    mission = mastpipe.run(_copy(MISSION, tmp_path / "mission"), mast_url=sandbox.url, environ={})
    assert caom.exit_code == mission.exit_code == 0
    caom_files = _files(tmp_path / "caom" / "data" / "jwst-1073")
    mission_files = _files(tmp_path / "mission" / "data" / "jwst-1073-missions")
    assert len(caom_files) == 14 and mission_files == caom_files
    # and the mission's files came through the mission's download service, laid out as MastMissions does
    downloads = [r for r in sandbox.log.records() if r.endpoint == "download" and r.method == "GET"]
    assert sum("/search/jwst/api/v0.1/retrieve_product" in r.path for r in downloads) == 14
    assert all(p.parts[-4:-2] == ("mastDownload", "jwst")
               for p in (tmp_path / "mission" / "data" / "jwst-1073-missions").rglob("*.fits"))
    report = mission.report
    assert report["changes"]["first_run"] is True and report["retrieve"]["fetched"]["files"] == 14


def test_mastpipe_and_astroquery_mastmissions_agree(sandbox, run_astroquery, tmp_path):
    proc = run_astroquery(sandbox.url, """
        import json, warnings
        from astroquery.mast import MastMissions
        warnings.simplefilter("ignore")
        out = {}
        jwst = MastMissions(mission="jwst")
        nircam = jwst.query_criteria(program=1073, exp_type="NRC_IMAGE", filter="F277W")
        guide = jwst.query_criteria(program=1073, observtn=[1, 2], exp_type="FGS_*")
        out["datasets"] = sorted(list(nircam["fileSetName"]) + list(guide["fileSetName"]))
        products = jwst.get_product_list(list(nircam["fileSetName"]) + list(guide["fileSetName"]))
        out["products"] = sorted([str(p["uri"]), int(p["size"]), str(p["file_suffix"])] for p in products)
        hst = MastMissions(mission="hst")
        crab = hst.query_region("05h34m31.94s +22d00m52.2s", radius="5 arcmin", sci_instrume="WFC3,ACS", sci_aec="S")
        out["hst"] = sorted(crab["sci_data_set_name"])
        print("REPORT " + json.dumps(out))
    """)
    theirs = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")][-1][7:])
    jwst = Pipeline(_copy(MISSION, tmp_path / "j"), mast_url=sandbox.url, environ={}).run(until="products")
    assert sorted(_text(jwst.tables["query"]["obsid"])) == theirs["datasets"]
    products = jwst.tables["products"]
    ours = sorted([u, int(s), f] for u, s, f in zip(_text(products["uri"]), products["size"], _text(products["file_suffix"])))
    assert ours == [list(p) for p in theirs["products"]]
    hst = Pipeline(_copy("hst-crab-calibrated-missions.yaml", tmp_path / "h"), mast_url=sandbox.url,
                   environ={}).run(until="query")
    assert sorted(_text(hst.tables["query"]["obsid"])) == theirs["hst"] and theirs["hst"]


PAGED = """\
version: 1
name: paged
mast: {page_size: 7, retries: 2}
query:
  scale:
    mission: jwst
    conditions: {program: 9999}
    select_cols: [program, exposure]
products: {batch_size: 4}
filter:
  columns: {file_suffix: _cal}
retrieve: {mode: manifest}
"""


def test_a_paged_search_is_complete_and_a_cut_one_fails(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(seed=0, scale="30x3")
    path = _write(tmp_path / "a", PAGED)
    result = Pipeline(path, mast_url=sandbox.url, environ={}).run(until="products")
    assert len(result.tables["query"]) == 30 and len(set(_text(result.tables["query"]["obsid"]))) == 30
    searches = [r for r in sandbox.log.records() if r.endpoint == "query"]
    assert len(searches) == 5  # 7 + 7 + 7 + 7 + 2 rows
    assert len(result.tables["products"]) == 90
    assert sum(r.endpoint == "products" for r in sandbox.log.records()) == 8  # ceil(30 / 4) batches

    sandbox.faults = "query.row_cap=20"
    with pytest.raises(TruncatedResultError, match="counts 30 jwst datasets but served 20"):
        Pipeline(_write(tmp_path / "b", PAGED), mast_url=sandbox.url, environ={}).run(until="query")


def test_failing_product_lists_are_retried_and_a_refused_search_says_why(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(seed=0, scale="30x3", faults="products.fail_first=2:503,query.fail_first=1:500")
    result = Pipeline(_write(tmp_path / "a", PAGED), mast_url=sandbox.url, environ={}).run(until="products")
    assert len(result.tables["products"]) == 90
    statuses = [r.status for r in sandbox.log.records() if r.endpoint == "products"]
    assert statuses.count(503) == 2 * 8 and statuses.count(200) == 8
    typo = PAGED.replace("program: 9999", "progam: 9999")
    with pytest.raises(RecipeError, match="did you mean 'program'"):  # caught before MAST is searched
        Pipeline(_write(tmp_path / "b", typo), mast_url=sandbox.url, environ={}).run(until="query")
    refused = PAGED.replace("program: 9999", "program: nine")  # a good name, a value MAST refuses
    with pytest.raises(ArchiveError, match="MAST refused the search: .*program is numeric") as caught:
        Pipeline(_write(tmp_path / "c", refused), mast_url=sandbox.url, environ={}).run(until="query")
    assert caught.value.hint and "conditions" in caught.value.hint


EXCLUSIVE = """\
version: 1
name: exclusive
query:
  hidden:
    mission: jwst
    conditions: {program: 4242}
filter:
  columns: {file_suffix: _cal}
retrieve: {destination: data}
"""


def test_exclusive_access_files_need_the_token(sandbox, tmp_path):
    path = _write(tmp_path / "a", EXCLUSIVE)
    without = mastpipe.run(path, mast_url=sandbox.url, environ={}, token=None)
    assert without.exit_code != 0 or without.report["retrieve"]["fetched"]["files"] == 0
    with_token = mastpipe.run(path, mast_url=sandbox.url, environ={}, token="good-token")
    assert with_token.exit_code == 0 and with_token.report["retrieve"]["fetched"]["files"] == 2
    for name, digest in _files(tmp_path / "a" / "data").items():
        assert digest == sandbox.catalog.sha256(f"mast:JWST/product/{name}")


def test_a_rerun_reports_the_new_dataset_and_fetches_only_its_files(sandbox, tmp_path):
    path = _copy(MISSION, tmp_path / "m")
    first = mastpipe.run(path, mast_url=sandbox.url, environ={})
    assert first.exit_code == 0
    new = sandbox.catalog.add_observation(n_products=2)  # a NIRCam F277W exposure of program 1073
    sandbox.log.clear()
    second = mastpipe.run(path, mast_url=sandbox.url, environ={}, refresh=True)
    changes = second.report["changes"]
    assert changes["observations"]["new"]["items"] == [new["obs_id"]]
    uri = f"{new['obs_id']}/{new['obs_id'].lower()}_uncal.fits"
    assert changes["products"]["new"]["items"] == [uri]  # of the products the filter keeps
    assert changes["fetched"]["items"] == [uri]
    gets = [r for r in sandbox.log.records() if r.endpoint == "download" and r.method == "GET"]
    assert len(gets) == 1
    third = mastpipe.run(path, mast_url=sandbox.url, environ={}, refresh=True)
    assert third.report["retrieve"]["fetched"]["files"] == 0


TYPOS = """\
version: 1
name: typos
query:
  q:
    mission: jwst
    conditions: {program: 1073, exp_typ: NRC_IMAGE, Filter: F277W}
    select_cols: [detectr]
"""


def test_a_run_checks_the_names_before_it_searches(sandbox, tmp_path: Path) -> None:
    recipe = tmp_path / "typos.yaml"
    recipe.write_text(TYPOS)
    with pytest.raises(RecipeError) as caught:
        Pipeline(recipe, mast_url=sandbox.url, environ={}).run(until="query")
    assert [p.field for p in caught.value.problems] == ["query.q.conditions.exp_typ", "query.q.conditions.Filter",
                                                        "query.q.select_cols[0]"]
    assert [r.endpoint for r in sandbox.log.records()] == ["columnsconfig"]  # the column list, no search
    # a fixed recipe runs, and asks for no column list again: the cache has them all
    recipe.write_text(TYPOS.replace("exp_typ", "exp_type").replace("Filter", "filter").replace("detectr", "detector"))
    sandbox.log.clear()
    result = Pipeline(recipe, mast_url=sandbox.url, environ={}).run(until="query")
    assert len(result.tables["query"]) == 4
    assert [r.endpoint for r in sandbox.log.records()] == ["query"]


RESUMABLE = """\
version: 1
name: resumable
mast: {timeout: 10, retries: 2}
query:
  all1073:
    mission: jwst
    conditions: {program: 1073}
products: {batch_size: 1, in_flight: 1}
filter:
  columns: {file_suffix: _uncal}
"""

RUNNER = """\
import sys
from mastpipe.runner import Pipeline
Pipeline(sys.argv[1], mast_url=sys.argv[2], state_dir=sys.argv[3], environ={}).run(until="products")
"""


def test_kill_9_during_mission_product_lists_then_rerun_asks_only_for_the_rest(sandbox_factory, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from mastpipe.stages.products import batch_id

    sb = sandbox_factory(seed=0, faults="products.latency=0.3")
    recipe = _write(tmp_path, RESUMABLE)
    state, parts = tmp_path / "state", tmp_path / "state" / "products.parts"
    (tmp_path / "runner.py").write_text(RUNNER)
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "runner.py"), str(recipe), sb.url, str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while len(list(parts.glob("*/*.fits"))) < 3:
            assert proc.poll() is None, f"the run ended early:\n{proc.stderr.read() if proc.stderr else ''}"
            assert time.monotonic() < deadline, "no batches were finished in time"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.communicate()
    time.sleep(0.4)  # let the sandbox finish (and log) a request the dead run had in flight
    datasets = sorted({o for r in sb.log.records() if r.endpoint == "products" for o in r.obsids})
    done = {d for d in datasets if list(parts.glob(f"*/{batch_id((d,))}.fits"))}
    assert len(done) >= 3
    sb.log.clear()
    resumed = Pipeline(recipe, mast_url=sb.url, state_dir=state, environ={}).run(until="filter")
    assert {s.stage: s.action for s in resumed.stages}["query"] == "reused"
    asked = [o for r in sb.log.records() if r.endpoint == "products" for o in r.obsids]
    everything = set(_text(resumed.tables["query"]["obsid"]))
    assert sorted(asked) == sorted(everything - done)  # each missing dataset once, none done before
    assert len(resumed.tables["filter"]) == 12  # 1073's exposures (guide-star files are omitted by default)


def test_plan_breaks_a_mission_search_down_by_file_suffix(sandbox, tmp_path):
    from mastpipe.report import plan_breakdown

    path = _copy("hst-crab-calibrated-missions.yaml", tmp_path)
    result = Pipeline(path, mast_url=sandbox.url, environ={}).run(until="filter")
    rows = plan_breakdown(result.tables["filter"], result.tables["query"])
    assert {(c, i, k) for c, i, k, _, _ in rows} == {("HST", "WFC3", "FLT"), ("HST", "WFC3", "DRZ"),
                                                     ("HST", "ACS", "FLT"), ("HST", "ACS", "DRZ")}
    assert sum(n for *_, n, _ in rows) == len(result.tables["filter"])


@pytest.mark.parametrize("mission, options, expected", [
    ("jwst", dict(programs=["1073"], instruments=["NIRCam"], filters=["F277W"], products=["uncal"]), 4),
    ("hst", dict(programs=["12345"], instruments=["WFC3"], products=["flt"]), 4),
])
def test_init_mission_recipes_run_against_the_sandbox(sandbox, tmp_path, mission, options, expected):
    from mastpipe.recipe.starter import starting_recipe

    path = _write(tmp_path, starting_recipe(mission=mission, **options))
    result = Pipeline(path, mast_url=sandbox.url, environ={}).run(until="filter")
    kept = _text(result.tables["filter"]["productFilename"])
    suffix = "_" + options["products"][0] + ".fits"
    assert len(kept) == expected and all(name.endswith(suffix) for name in kept)
