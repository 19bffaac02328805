"""The seed tutorial's astroquery code, as written there, runs unchanged against the sandbox.

astroquery runs in a subprocess whose XDG config points ``[mast] server`` at the sandbox
(astroquery fixes its URLs at import).  Nothing is mocked or patched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mastpipe.sandbox.tutorial import PRODUCT_FILTER, QUERY_AND_PRODUCTS

# The tutorial's code blocks, verbatim, with the imports it takes for granted (numpy, json) and
# a report printed at the end.  ONE line differs: the tutorial's ``if (matched_obs > 0):`` raises
# ``TypeError: '>' not supported between instances of 'Table' and 'int'`` with astropy >= 6
# (astropy itself, before any HTTP; test_tutorial_original_guard_fails_in_astropy pins that), so
# it reads ``if (len(matched_obs) > 0):``, the evident intent.
TUTORIAL = QUERY_AND_PRODUCTS + PRODUCT_FILTER + r'''
selected = files[product_filter(files, ['_uncal', '_i2d'])]

manifest_direct = Observations.download_products(
           files,
           productSubGroupDescription='UNCAL'
           )

manifest = Observations.download_products(
           files, 
           productSubGroupDescription='UNCAL',
           curl_flag=True
           )

print("REPORT " + json.dumps({
    "matched_obsids": [str(x) for x in matched_obs["obsid"]],
    "n_rows_vstack": int(sum(len(x) for x in t)),
    "files": [str(x) for x in files["productFilename"]],
    "selected": [str(x) for x in selected["productFilename"]],
    "direct": [[str(r["Local Path"]), str(r["Status"])] for r in manifest_direct],
    "curl": [[str(r["Local Path"]), str(r["Status"])] for r in manifest],
}))
'''


def _report(stdout: str) -> dict:
    line = [ln for ln in stdout.splitlines() if ln.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT "):])


def _expected_obs(catalog) -> list[dict]:
    """What the seed query should match, computed from the catalogue directly."""
    return [o for o in catalog.observations()
            if o["obs_collection"] == "JWST" and o["proposal_id"] == "1073"
            and o["instrument_name"].upper().split("/")[0] == "NIRCAM"
            and "F277W" in o["filters"].split(";")]


@pytest.fixture
def tutorial_run(sandbox, run_astroquery, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    proc = run_astroquery(sandbox.url, TUTORIAL, cwd=work)
    return sandbox, work, _report(proc.stdout)


def test_tutorial_query_and_product_list_match_catalogue(tutorial_run):
    sb, _, rep = tutorial_run
    expected = _expected_obs(sb.catalog)
    assert len(expected) >= 4
    assert sorted(rep["matched_obsids"]) == sorted(o["obsid"] for o in expected)
    all_rows = [p for o in expected for p in sb.catalog.products(o["obsid"])]
    unique_names = sorted({p["productFilename"] for p in all_rows})
    assert rep["n_rows_vstack"] == len(all_rows)
    assert sorted(rep["files"]) == unique_names
    # Level-3 and guide-star products are listed under several observations: dedup matters.
    assert len(all_rows) > len(unique_names)
    # product_filter keeps uncal/i2d files and drops guide-star ones.
    assert rep["selected"] and all("_gs-" not in n for n in rep["selected"])
    assert sorted(rep["selected"]) == sorted(
        n for n in unique_names if ("_uncal" in n or "_i2d" in n) and "_gs-" not in n)


def test_tutorial_direct_download_writes_catalogue_bytes(tutorial_run):
    sb, work, rep = tutorial_run
    expected = _expected_obs(sb.catalog)
    uncal = {p["dataURI"]: p for o in expected for p in sb.catalog.products(o["obsid"])
             if p["productSubGroupDescription"] == "UNCAL"}
    assert len(rep["direct"]) == len(uncal)
    assert all(status == "COMPLETE" for _, status in rep["direct"])
    for uri, p in uncal.items():
        local = work / "mastDownload" / "JWST" / p["obs_id"] / p["productFilename"]
        assert local.read_bytes() == sb.catalog.body(uri), uri
    # Exactly one HEAD and one GET per file, no gzip surprises.
    gets = [r for r in sb.log.records() if r.endpoint == "download" and r.method == "GET"]
    heads = [r for r in sb.log.records() if r.endpoint == "download" and r.method == "HEAD"]
    assert sorted(r.uri for r in gets) == sorted(uncal)
    # The curl_flag call HEADs nothing; the direct call HEADs each file once.
    assert sorted(r.uri for r in heads) == sorted(uncal)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_tutorial_curl_script_runs_with_real_curl(tutorial_run, tmp_path):
    sb, work, rep = tutorial_run
    (script_path, status), = rep["curl"]
    assert status == "COMPLETE"
    script = Path(script_path if os.path.isabs(script_path) else work / script_path)
    assert re.fullmatch(r"mastDownload_\d{14}\.sh", script.name)
    text = script.read_text()
    assert sb.url in text and "-C -" in text and "--location-trusted" in text
    run_dir = tmp_path / "curl-run"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MAST_API_TOKEN"}
    proc = subprocess.run(["bash", str(script)], cwd=run_dir, capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    expected = _expected_obs(sb.catalog)
    uncal = {p["dataURI"]: p for o in expected for p in sb.catalog.products(o["obsid"])
             if p["productSubGroupDescription"] == "UNCAL"}
    (folder,) = [p for p in run_dir.iterdir() if p.is_dir()]
    got = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert got == {f"JWST/{p['obs_id']}/{p['productFilename']}" for p in uncal.values()}
    for uri, p in uncal.items():
        assert (folder / "JWST" / p["obs_id"] / p["productFilename"]).read_bytes() == sb.catalog.body(uri)


def test_tutorial_original_guard_fails_in_astropy():
    """Why the tutorial needs its one-line fix: astropy Tables do not compare with ints."""
    from astropy.table import Table

    with pytest.raises(TypeError):
        if Table({"obsid": ["1"]}) > 0:  # the tutorial's original guard
            pass


def test_mastpipe_run_of_the_seed_recipe_downloads_exactly_what_the_tutorial_does(tutorial_run, tmp_path):
    """Issue 5's bar: the seed's recipe fetches the same files, byte for byte, as the seed's code."""
    import mastpipe

    sb, work, _ = tutorial_run
    repo = Path(__file__).resolve().parents[2]
    recipe = tmp_path / "mastpipe" / "seed.yaml"
    recipe.parent.mkdir()
    recipe.write_text((repo / "pipelines" / "jwst-1073-nircam-uncal.yaml").read_text())
    outcome = mastpipe.run(recipe, mast_url=sb.url)
    assert outcome.exit_code == 0

    def tree(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in (root / "mastDownload").rglob("*") if p.is_file()}

    ours, seeds = tree(recipe.parent / "data" / "jwst-1073"), tree(work)
    assert sorted(ours) == sorted(seeds)
    assert ours == seeds
    assert outcome.report["retrieve"]["fetched"]["files"] == len(seeds) > 0
