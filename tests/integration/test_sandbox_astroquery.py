"""Unmodified astroquery (in a subprocess, pointed at the sandbox by its config file) sees MAST.

Each test runs one short script and prints a JSON report; nothing in astroquery is patched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from mastpipe.sandbox import Faults


def report(proc) -> dict:
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT "):])


def test_queries_counts_positions_paging_and_metadata(sandbox, run_astroquery):
    proc = run_astroquery(sandbox.url, """
        import json, warnings
        from astropy.coordinates import SkyCoord
        from astroquery.mast import Observations
        warnings.simplefilter("ignore")
        out = {}
        out["paged"] = sorted(str(x) for x in Observations.query_criteria(obs_collection="JWST", proposal_id="1073",
                                                          pagesize=2)["obsid"])
        out["all1073"] = sorted(str(x) for x in Observations.query_criteria(obs_collection="JWST", proposal_id="1073")["obsid"])
        out["count"] = Observations.query_criteria_count(obs_collection="JWST", proposal_id="1073")
        crab = SkyCoord(83.63308, 22.0145, unit="deg")
        region = Observations.query_region(crab, radius="0.1 deg")
        out["region"] = sorted(region["obs_id"])
        out["region_dist"] = [float(x) for x in region["distance"]]
        out["region_count"] = Observations.query_region_count(crab, radius="0.1 deg")
        pos = Observations.query_criteria(coordinates=crab, radius="0.1 deg", instrument_name="ACS*")
        out["pos"] = sorted(pos["obs_id"])
        out["ranges"] = sorted(Observations.query_criteria(obs_collection="TESS",
                                                           s_dec=[60.0, 61.0])["obs_id"])
        out["calib"] = sorted(set(Observations.query_criteria(proposal_id="1073", calib_level=[3])["calib_level"].tolist()))
        out["msa"] = len(Observations.query_criteria(filters="F170LP;G235M"))
        out["missions"] = Observations.list_missions()
        out["meta"] = len(Observations.get_metadata("observations"))
        print("REPORT " + json.dumps(out, default=lambda x: x.item() if hasattr(x, "item") else str(x)))
    """)
    rep = report(proc)
    cat = sandbox.catalog
    ids1073 = sorted(o["obsid"] for o in cat.observations() if o["proposal_id"] == "1073")
    assert rep["paged"] == rep["all1073"] == ids1073
    assert rep["count"] == len(ids1073)
    crab = {"IB5E01010", "IB5E02010", "JB1F01010", "JB1F02010"}
    assert set(rep["region"]) == crab and rep["region_count"] == 4
    assert all(0 <= d <= 360 for d in rep["region_dist"])
    assert rep["pos"] == ["JB1F01010", "JB1F02010"]
    assert len(rep["ranges"]) == 3  # TESS targets at dec 60, 60.5, 61
    assert rep["calib"] == [3]
    assert rep["msa"] == 1
    assert {"HST", "JWST", "TESS"} <= set(rep["missions"])
    assert rep["meta"] > 30


def test_small_pages_are_all_fetched(sandbox, run_astroquery):
    proc = run_astroquery(sandbox.url, """
        import json
        from astroquery.mast import Observations
        rows = Observations.query_criteria(obs_collection="JWST", proposal_id="1073", pagesize=5)
        print("REPORT " + json.dumps(sorted(str(x) for x in rows["obsid"])))
    """)
    ids1073 = sorted(o["obsid"] for o in sandbox.catalog.observations() if o["proposal_id"] == "1073")
    assert report(proc) == ids1073
    pages = [r for r in sandbox.log.records() if r.endpoint == "query"]
    assert len(pages) == -(-len(ids1073) // 5)  # one POST per page, no spinning


def test_row_cap_truncates_silently_for_astroquery(sandbox_factory, run_astroquery):
    sb = sandbox_factory(row_cap=5)
    proc = run_astroquery(sb.url, """
        import json, warnings
        from astroquery.mast import Observations
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rows = Observations.query_criteria(obs_collection="JWST")
        count = Observations.query_criteria_count(obs_collection="JWST")
        print("REPORT " + json.dumps({"rows": len(rows), "count": int(count),
                                      "warnings": [str(w.message) for w in caught]}))
    """)
    rep = report(proc)
    assert rep["rows"] == 5
    assert rep["count"] == sum(o["obs_collection"] == "JWST" for o in sb.catalog.observations()) > 5


def test_executing_polls_then_succeeds(sandbox_factory, run_astroquery):
    sb = sandbox_factory(faults=Faults.parse("query.executing=2,products.executing=1"))
    proc = run_astroquery(sb.url, """
        import json
        from astroquery.mast import Observations
        obs = Observations.query_criteria(obs_collection="TESS")
        prods = Observations.get_product_list(obs[:2])
        print("REPORT " + json.dumps({"obs": len(obs), "prods": len(prods)}))
    """)
    assert report(proc) == {"obs": 8, "prods": 4}
    queries = [r for r in sb.log.records() if r.endpoint == "query"]
    assert len(queries) == 3  # two EXECUTING answers, then COMPLETE
    assert len([r for r in sb.log.records() if r.endpoint == "products"]) == 2


def test_http_faults_surface_as_httperror(sandbox_factory, run_astroquery):
    sb = sandbox_factory(faults="products.fail_first=1:503,products.max_obsids=3,products.timeout_delay=0.1")
    proc = run_astroquery(sb.url, """
        import json
        from astroquery.mast import Observations
        out = []
        obs = Observations.query_criteria(obs_collection="TESS")
        for chunk in (obs[:2], obs[:2], obs[:5], obs[:5]):
            try:
                out.append(len(Observations.get_product_list(chunk)))
            except Exception as exc:
                out.append(type(exc).__name__ + ": " + str(exc)[:40])
        print("REPORT " + json.dumps(out, default=lambda x: x.item() if hasattr(x, "item") else str(x)))
    """)
    first, second, third, fourth = report(proc)
    assert first.startswith("HTTPError: 503")  # fail_first counts per obsid list
    assert second == 4
    assert third.startswith("HTTPError: 503")
    assert fourth.startswith("HTTPError: 504")  # more than max_obsids: MAST-like timeout


def test_login_and_exclusive_download(sandbox, run_astroquery, tmp_path):
    obs = next(o for o in sandbox.catalog.observations() if o["dataRights"] == "EXCLUSIVE_ACCESS")
    uri = sandbox.catalog.products(obs["obsid"])[0]["dataURI"]
    proc = run_astroquery(sandbox.url, f"""
        import json
        from astroquery.mast import Observations
        from astroquery.exceptions import LoginError
        out = {{}}
        try:
            Observations.login(token="bad-token")
            out["bad"] = "accepted"
        except LoginError:
            out["bad"] = "LoginError"
        Observations.logout()
        m = Observations.download_file("{uri}", local_path="anon.fits")
        out["anon"] = list(m)
        Observations.login(token="good-token")
        out["info"] = Observations.session_info(verbose=False)["attrib"]["display_name"]
        out["auth"] = list(Observations.download_file("{uri}", local_path="auth.fits"))
        print("REPORT " + json.dumps(out, default=lambda x: x.item() if hasattr(x, "item") else str(x)))
    """, cwd=tmp_path)
    rep = report(proc)
    assert rep["bad"] == "LoginError"
    assert rep["anon"][0] == "ERROR" and "401" in rep["anon"][1]
    assert rep["info"] == "A. User"
    assert rep["auth"][0] == "COMPLETE"
    assert (tmp_path / "auth.fits").read_bytes() == sandbox.catalog.body(uri)
    assert not (tmp_path / "anon.fits").exists()


def test_download_cache_check_uses_exact_length(sandbox, run_astroquery, tmp_path):
    """A second download_products HEADs each file and finds it cached (Content-Length exact)."""
    proc = run_astroquery(sandbox.url, """
        import json
        from astroquery.mast import Observations
        obs = Observations.query_criteria(obs_collection="TESS", target_name="25155310")
        prods = Observations.get_product_list(obs)
        m1 = Observations.download_products(prods, mrp_only=True)
        m2 = Observations.download_products(prods, mrp_only=True)
        print("REPORT " + json.dumps([list(m1["Status"]), list(m2["Status"])]))
    """, cwd=tmp_path)
    assert report(proc) == [["COMPLETE"], ["COMPLETE"]]
    downloads = [(r.method, r.status) for r in sandbox.log.records() if r.endpoint == "download"]
    assert downloads == [("HEAD", 200), ("GET", 200), ("HEAD", 200)]


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_bundle_script_with_token_from_environment(sandbox, tmp_path):
    import requests

    obs = next(o for o in sandbox.catalog.observations() if o["dataRights"] == "EXCLUSIVE_ACCESS")
    prods = sandbox.catalog.products(obs["obsid"])[:2]
    public = "mast:JWST/product/jw01073001001_02101_00001_nrcalong_cal.fits"
    uris = [p["dataURI"] for p in prods] + [public]
    script = requests.post(sandbox.url + "/api/v0.1/Download/bundle.sh",
                           data=[("uri", u) for u in uris]).text
    assert "good-token" not in script
    path = tmp_path / "bundle.sh"
    path.write_text(script)
    env = {k: v for k, v in os.environ.items() if k != "MAST_API_TOKEN"}

    # Without a token the exclusive files fail (curl -f), the public one arrives, exit status 1.
    no_tok = tmp_path / "no-token"
    no_tok.mkdir()
    proc = subprocess.run(["bash", str(path)], cwd=no_tok, env=env, capture_output=True, timeout=60)
    assert proc.returncode == 1
    got = [p.name for p in no_tok.rglob("*") if p.is_file()]
    assert got == [public.rsplit("/", 1)[1]]

    with_tok = tmp_path / "with-token"
    with_tok.mkdir()
    proc = subprocess.run(["bash", str(path)], cwd=with_tok, env={**env, "MAST_API_TOKEN": "good-token"},
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for uri in uris:
        info = sandbox.catalog.file_info(uri)
        (hit,) = list(with_tok.rglob(info.filename))
        assert hit.read_bytes() == sandbox.catalog.body(uri)
        assert hit.parent.name == info.obs_id and hit.parent.parent.name == "JWST"
    # The token travelled in a header, never in a URL.
    assert all("good-token" not in (r.uri or "") for r in sandbox.log.records())
    assert any(r.has_token for r in sandbox.log.records() if r.endpoint == "download")

    # Re-running asks each complete file for "bytes=<size>-": the sandbox answers 416 as an
    # RFC 9110 server does, and curl -f (7.88) reports that as error 22 without touching the file.
    sandbox.log.clear()
    proc = subprocess.run(["bash", str(path)], cwd=with_tok, env={**env, "MAST_API_TOKEN": "good-token"},
                          capture_output=True, timeout=60)
    assert {r.status for r in sandbox.log.records()} == {416}
    for uri in uris:
        info = sandbox.catalog.file_info(uri)
        (hit,) = list(with_tok.rglob(info.filename))
        assert hit.read_bytes() == sandbox.catalog.body(uri)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_bundle_script_resumes_partial_file(sandbox, tmp_path):
    import requests

    uri = "mast:JWST/product/jw01073001001_02101_00001_nrcalong_uncal.fits"
    info = sandbox.catalog.file_info(uri)
    script = requests.post(sandbox.url + "/api/v0.1/Download/bundle.sh", data=[("uri", uri)]).text
    (tmp_path / "b.sh").write_text(script)
    folder = script.split("DOWNLOAD_FOLDER='", 1)[1].split("'", 1)[0]
    partial = tmp_path / folder / "JWST" / info.obs_id / info.filename
    partial.parent.mkdir(parents=True)
    partial.write_bytes(sandbox.catalog.body(uri, 0, 1000))
    sandbox.log.clear()
    proc = subprocess.run(["bash", "b.sh"], cwd=tmp_path, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert partial.read_bytes() == sandbox.catalog.body(uri)
    (rec,) = sandbox.log.records()
    assert rec.range == "bytes=1000-" and rec.status == 206
