"""HTTP protocol details of the sandbox: downloads, ranges, auth, paging, routing, bundle."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import requests
from astropy.io import fits

UNCAL = "mast:JWST/product/jw01073001001_02101_00001_nrcalong_uncal.fits"
CAL = "mast:JWST/product/jw01073001001_02101_00001_nrcalong_cal.fits"


def invoke(sb, service, params, page=1, pagesize=50_000, cache="cb-1"):
    req = {"service": service, "params": params, "format": "json", "pagesize": pagesize,
           "page": page, "cacheBreaker": cache}
    return requests.post(sb.url + "/api/v0/invoke", data="request=" + quote(json.dumps(req)),
                         headers={"Content-type": "application/x-www-form-urlencoded"})


def jwst_query(sb, **kw):
    return invoke(sb, "Mast.Caom.Filtered",
                  {"columns": "*", "filters": [{"paramName": "obs_collection", "values": ["JWST"]}]}, **kw)


def fixture_dir() -> Path:
    import astroquery.mast

    return Path(astroquery.mast.__file__).parent / "tests" / "data"


def exclusive_uri(sb) -> str:
    obs = next(o for o in sb.catalog.observations() if o["dataRights"] == "EXCLUSIVE_ACCESS")
    return sb.catalog.products(obs["obsid"])[0]["dataURI"]


# ---------------------------------------------------------------------------- downloads
def test_head_and_get_agree_and_body_matches_catalogue(sandbox):
    url = sandbox.download_url(UNCAL)
    head = requests.head(url)
    get = requests.get(url, headers={"Accept-Encoding": "gzip, deflate"})
    size = sandbox.catalog.file_size(UNCAL)
    for r in (head, get):
        assert r.status_code == 200
        assert int(r.headers["Content-Length"]) == size
        assert r.headers["Accept-Ranges"] == "bytes"
        assert "Content-Encoding" not in r.headers
    assert head.headers["ETag"] == get.headers["ETag"]
    assert head.headers["Last-Modified"] == get.headers["Last-Modified"]
    assert get.content == sandbox.catalog.body(UNCAL)
    import hashlib

    assert hashlib.sha256(get.content).hexdigest() == sandbox.catalog.sha256(UNCAL)


def test_fits_bodies_open_with_astropy(sandbox):
    for uri in (UNCAL, CAL):
        body = sandbox.catalog.body(uri)
        assert len(body) % 2880 == 0
        with fits.open(io.BytesIO(body)) as hdul:
            assert hdul[0].header["FILENAME"] == uri.rsplit("/", 1)[1]
            assert hdul[0].data.size == len(body) - 2880


@pytest.mark.parametrize("spec, start, end", [
    ("bytes=0-0", 0, 1), ("bytes=100-2979", 100, 2980), ("bytes=5000-", 5000, None),
    ("bytes=-10", -10, None), ("bytes=2880-999999999", 2880, None),
])
def test_range_gives_exact_206_slices(sandbox, spec, start, end):
    size = sandbox.catalog.file_size(UNCAL)
    start = size + start if start < 0 else start
    end = size if end is None else end
    r = requests.get(sandbox.download_url(UNCAL), headers={"Range": spec})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}"
    assert int(r.headers["Content-Length"]) == end - start
    assert r.content == sandbox.catalog.body(UNCAL, start, end)


def test_unsatisfiable_range_is_416(sandbox):
    size = sandbox.catalog.file_size(UNCAL)
    r = requests.get(sandbox.download_url(UNCAL), headers={"Range": f"bytes={size}-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{size}"


def test_if_range_match_gives_206_mismatch_gives_200(sandbox):
    url = sandbox.download_url(UNCAL)
    head = requests.head(url).headers
    for validator in (head["ETag"], head["Last-Modified"]):
        r = requests.get(url, headers={"Range": "bytes=10-", "If-Range": validator})
        assert r.status_code == 206
    r = requests.get(url, headers={"Range": "bytes=10-", "If-Range": '"stale-etag"'})
    assert r.status_code == 200 and r.content == sandbox.catalog.body(UNCAL)


def test_touch_changes_size_etag_last_modified(sandbox):
    url = sandbox.download_url(UNCAL)
    before = requests.head(url).headers
    old_body = sandbox.catalog.body(UNCAL)
    sandbox.catalog.touch(UNCAL)
    after = requests.head(url).headers
    assert int(after["Content-Length"]) == int(before["Content-Length"]) + 2880
    assert after["ETag"] != before["ETag"] and after["Last-Modified"] != before["Last-Modified"]
    r = requests.get(url, headers={"Range": "bytes=10-", "If-Range": before["ETag"]})
    assert r.status_code == 200 and r.content == sandbox.catalog.body(UNCAL) != old_body
    sizes = {p["dataURI"]: p["size"] for o in sandbox.catalog.observations()
             for p in sandbox.catalog.products(o["obsid"])}
    assert sizes[UNCAL] == int(after["Content-Length"])  # product lists show the new size


def test_exclusive_access_needs_token_for_head_and_get(sandbox):
    uri = exclusive_uri(sandbox)
    url = sandbox.download_url(uri)
    assert requests.head(url).status_code == 401
    assert requests.get(url).status_code == 401
    assert requests.get(url, cookies={"mast_token": "bad"}).status_code == 401
    assert requests.head(url, cookies={"mast_token": "good-token"}).status_code == 200
    r = requests.get(url, cookies={"mast_token": "good-token"})
    assert r.status_code == 200 and r.content == sandbox.catalog.body(uri)
    r = requests.get(url, headers={"Authorization": "Bearer good-token"})
    assert r.status_code == 200
    recs = [x for x in sandbox.log.records() if x.endpoint == "download"]
    assert [x.has_token for x in recs] == [False, False, True, True, True, True]  # any token
    assert [x.status for x in recs] == [401, 401, 401, 200, 200, 200]


def test_exclusive_products_are_marked(sandbox):
    obs = [o for o in sandbox.catalog.observations() if o["dataRights"] == "EXCLUSIVE_ACCESS"]
    assert obs
    for o in obs:
        assert {p["dataRights"] for p in sandbox.catalog.products(o["obsid"])} == {"EXCLUSIVE_ACCESS"}


def test_whoami(sandbox):
    anon = requests.get(sandbox.url + "/whoami", cookies={"mast_token": "nope"}).json()
    assert anon["anon"] is True
    me = requests.get(sandbox.url + "/whoami", cookies={"mast_token": "good-token"}).json()
    assert me["anon"] is False and me["attrib"]["display_name"] == "A. User"
    assert "good-token" not in json.dumps(me)


def test_many_concurrent_connections(sandbox):
    uris = [p["dataURI"] for o in sandbox.catalog.observations()[:6]
            for p in sandbox.catalog.products(o["obsid"])][:32]
    barrier = threading.Barrier(16)

    def fetch(uri):
        with requests.Session() as s:
            barrier.wait(timeout=10)  # all 16 connections are open at the same time
            return s.get(sandbox.download_url(uri)).content == sandbox.catalog.body(uri)

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(fetch, uris[:16]))


def test_keep_alive_serves_many_requests_on_one_connection(sandbox):
    parts = urlsplit(sandbox.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        for uri in (UNCAL, CAL, UNCAL):
            conn.request("GET", f"/api/v0.1/Download/file?uri={uri}")
            resp = conn.getresponse()
            assert resp.read() == sandbox.catalog.body(uri)
            assert not resp.will_close
        conn.request("HEAD", f"/api/v0.1/Download/file?uri={UNCAL}")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    finally:
        conn.close()


def test_client_disconnect_mid_body_is_harmless(sandbox, capsys):
    big = sandbox.catalog.add_product(sandbox.catalog.observations()[0]["obsid"],
                                      productFilename="big_raw.fits", size=64 * 2880 * 100)
    parts = urlsplit(sandbox.url)
    for _ in range(3):
        sock = socket.create_connection((parts.hostname, parts.port))
        sock.sendall(f"GET /api/v0.1/Download/file?uri={big['dataURI']} HTTP/1.1\r\n"
                     f"Host: x\r\n\r\n".encode())
        sock.recv(1000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # RST mid-body
    assert requests.get(sandbox.download_url(UNCAL)).status_code == 200
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err


# ---------------------------------------------------------------------------- routing
def test_double_slashes_and_absolute_form_targets_are_routed(sandbox):
    parts = urlsplit(sandbox.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", f"{sandbox.url}//api/v0.1/Download/file?uri={UNCAL}")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == sandbox.catalog.body(UNCAL)
    finally:
        conn.close()
    assert requests.get(sandbox.url + "//whoami").json()["anon"] is True
    assert requests.get(sandbox.url + "/nothing/here").status_code == 404


def test_columnsconfig(sandbox):
    def cfg(cid):
        return requests.post(sandbox.url + "/portal/Mashup/Mashup.asmx/columnsconfig",
                             data=f"colConfigId={cid}",
                             headers={"Content-type": "application/x-www-form-urlencoded"}).json()

    cone = cfg("Mast.Caom.Cone")
    for col in ("obs_collection", "filters", "s_ra", "obsid", "provenance_name", "proposal_type",
                "sequence_number", "dataRights", "mtFlag", "calib_level", "instrument_name"):
        assert col in cone
    assert cone["filters"]["separator"] == ";" and cone["s_ra"]["vot.datatype"] == "double"
    assert cfg("Mast.Caom.Products") == {} and cfg("Something.Else") == {}
    assert cfg("Mast.Caom.Filtered") in ({}, cone)
    fixture = json.loads((fixture_dir() / "columnsconfig.json").read_text())
    assert set(fixture) <= set(cone)


# ---------------------------------------------------------------------------- invoke
def test_paging_echoes_page_and_counts_pages(sandbox):
    n = sum(o["obs_collection"] == "JWST" for o in sandbox.catalog.observations())
    seen = []
    for page in range(1, 5):
        d = jwst_query(sandbox, page=page, pagesize=7).json()
        assert d["paging"]["page"] == page
        assert d["paging"]["pagesFiltered"] == -(-n // 7)
        assert isinstance(d["paging"]["pagesFiltered"], int)
        seen += [r["obsid"] for r in d["data"]]
    assert len(seen) == len(set(seen)) == min(n, 28)


def test_products_paging_without_materialising(sandbox):
    msa = next(o for o in sandbox.catalog.observations() if o["instrument_name"] == "NIRSPEC/MSA")
    assert sandbox.catalog.product_count(msa["obsid"]) > 10_000
    d = invoke(sandbox, "Mast.Caom.Products", {"obsid": msa["obsid"]}, page=3, pagesize=4000).json()
    assert d["paging"]["pagesFiltered"] == 3 and d["paging"]["page"] == 3
    assert len(d["data"]) == sandbox.catalog.product_count(msa["obsid"]) - 8000
    first = d["data"][0]
    assert first == sandbox.catalog.products(msa["obsid"])[8000]
    info = sandbox.catalog.file_info(first["dataURI"])
    assert info.size == first["size"]


def test_products_of_several_obsids_with_whitespace(sandbox):
    ids = [o["obsid"] for o in sandbox.catalog.observations()[:3]]
    d = invoke(sandbox, "Mast.Caom.Products", {"obsid": " , ".join(ids) + ", 999"}).json()
    expected = [p for i in ids for p in sandbox.catalog.products(i)]
    assert d["data"] == expected
    assert sandbox.log.records()[-1].obsids == ids + ["999"]


def test_unknown_service_and_bad_filter_are_errors(sandbox):
    assert invoke(sandbox, "Mast.No.Such", {}).json()["status"] == "ERROR"
    d = invoke(sandbox, "Mast.Caom.Filtered",
               {"columns": "*", "filters": [{"paramName": "obs_colection", "values": ["x"]}]}).json()
    assert d["status"] == "ERROR" and "obs_colection" in d["msg"]
    r = requests.post(sandbox.url + "/api/v0/invoke", data="request=not-json")
    assert r.status_code == 400


def test_mast_caom_all_extjs(sandbox):
    d = invoke(sandbox, "Mast.Caom.All", {}).json()
    col = d["data"]["Tables"][0]["Columns"][0]
    assert col["text"] == "obs_collection"
    assert {"JWST", "HST", "TESS"} <= set(col["ExtendedProperties"]["histObj"]) - {"hist"}


# ---------------------------------------------------------------------------- bundle
def test_bundle_script_shape(sandbox):
    r = requests.post(sandbox.url + "/api/v0.1/Download/bundle.sh",
                      data=[("uri", UNCAL), ("uri", exclusive_uri(sandbox))],
                      cookies={"mast_token": "good-token"})
    assert r.status_code == 200 and "Accept-Ranges" not in r.headers
    text = r.text
    assert text.startswith("#!/bin/bash")
    assert text.count("curl --globoff --location-trusted -f") == 2
    assert "--create-dirs" in text and "-C -" in text and "MAST_API_TOKEN" in text
    assert f"{sandbox.url}/api/v0.1/Download/file?bundle_name=" in text
    assert "good-token" not in text


def test_request_log_records_fields(sandbox, tmp_path, sandbox_factory):
    log_file = tmp_path / "log.jsonl"
    sb = sandbox_factory(log_path=log_file)
    requests.get(sb.download_url(UNCAL), headers={"Range": "bytes=0-9", "If-Range": "x"},
                 cookies={"mast_token": "good-token"})
    (rec,) = sb.log.records()
    assert (rec.method, rec.path, rec.endpoint, rec.uri, rec.range, rec.if_range, rec.has_token) == (
        "GET", "/api/v0.1/Download/file", "download", UNCAL, "bytes=0-9", "x", True)
    assert rec.status == 200 and rec.bytes_sent == sb.catalog.file_size(UNCAL)  # If-Range mismatch
    assert sb.log.wait_quiet()
    assert json.loads(log_file.read_text().splitlines()[0])["uri"] == UNCAL
    sb.log.clear()
    assert sb.log.records() == []


def test_bundle_script_cannot_be_broken_out_of(sandbox, tmp_path):
    """Hostile URIs/names stay data: no command runs, nothing is written outside the folder."""
    import subprocess

    evil = "mast:JWST/product/x.fits\nEOT\ntouch PWNED\ncat <<'EOT'"
    obsid = sandbox.catalog.observations()[0]["obsid"]
    p = sandbox.catalog.add_product(obsid, productFilename="../../escape'$(touch PWNED2).fits",
                                    dataURI="mast:JWST/product/evil'$(touch PWNED3).fits")
    r = requests.post(sandbox.url + "/api/v0.1/Download/bundle.sh",
                      data=[("uri", evil), ("uri", p["dataURI"])])
    script = tmp_path / "run" / "b.sh"
    script.parent.mkdir()
    script.write_text(r.text)
    subprocess.run(["bash", str(script)], cwd=script.parent, capture_output=True, timeout=60)
    assert not list(tmp_path.rglob("PWNED*"))  # no command substitution ran
    made = [x.relative_to(tmp_path) for x in tmp_path.rglob("*") if x.is_file()]
    assert all(m.parts[0] == "run" for m in made)  # nothing escaped the script's folder
    fetched = [m for m in made if m.name.endswith(".fits")]
    assert len(fetched) == 1 and (tmp_path / fetched[0]).read_bytes() == sandbox.catalog.body(p["dataURI"])


def test_bundle_script_passes_tokens_with_quotes_and_backslashes(sandbox_factory, tmp_path):
    import os
    import subprocess

    token = 'we"ird\\tok en'
    sb = sandbox_factory(tokens={token: "Q. User"})
    uri = exclusive_uri(sb)
    script = requests.post(sb.url + "/api/v0.1/Download/bundle.sh", data=[("uri", uri)]).text
    (tmp_path / "b.sh").write_text(script)
    env = {**os.environ, "MAST_API_TOKEN": token}
    proc = subprocess.run(["bash", "b.sh"], cwd=tmp_path, env=env, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (got,) = tmp_path.rglob(sb.catalog.file_info(uri).filename)
    assert got.read_bytes() == sb.catalog.body(uri)


def test_stop_hangs_up_idle_keep_alive_connections(sandbox_factory):
    sb = sandbox_factory()
    with requests.Session() as s:
        url = sb.download_url(UNCAL)
        assert s.get(url).status_code == 200  # the connection is now pooled
        sb.stop()
        with pytest.raises(requests.exceptions.ConnectionError):
            s.get(url)


def test_internal_error_answers_500_instead_of_hanging(sandbox, monkeypatch, capsys):
    def broken(uri):
        raise RuntimeError("catalogue bug")

    monkeypatch.setattr(sandbox.catalog, "file_info", broken)
    r = requests.get(sandbox.download_url(UNCAL), timeout=10)
    assert r.status_code == 500 and "catalogue bug" in r.json()["msg"]
    assert sandbox.log.records()[-1].status == 500
    import time

    err = ""
    for _ in range(50):  # the traceback is printed just after the response went out
        err += capsys.readouterr().err
        if "catalogue bug" in err:
            break
        time.sleep(0.05)
    assert "RuntimeError: catalogue bug" in err  # bugs stay loud


def test_product_lists_rendered_once_are_the_same_bytes(sandbox):
    """Whole observations' rows are rendered once and kept; the answer is byte for byte the
    one rendered row by row, and a change to the catalogue is seen at once."""
    from mastpipe.sandbox import columns

    cat = sandbox.catalog
    obsids = [row["obsid"] for row in cat.observations()[:3]]
    names = [n for n, _ in columns.PRODUCT_FIELDS]

    def expected(ids):
        rows = [{n: r.get(n) for n in names} for o in ids for r in cat.iter_products(o)]
        return {"status": "COMPLETE", "msg": "", "fields": [{"name": n, "type": t} for n, t in columns.PRODUCT_FIELDS],
                "data": rows, "paging": {"page": 1, "pageSize": 50_000, "pagesFiltered": 1, "rows": len(rows),
                                         "rowsFiltered": len(rows), "rowsTotal": len(rows)}}

    for attempt in range(2):  # rendered, then from what was kept
        body = invoke(sandbox, "Mast.Caom.Products", {"obsid": ",".join(obsids)}, cache=f"cb-{attempt}").content
        assert body == json.dumps(expected(obsids)).encode()
    before = {row["dataURI"]: row for row in json.loads(body)["data"]}
    uri = next(iter(before))
    cat.touch(uri)  # a new prvversion and size in its row
    cat.add_product(obsids[1])
    body = invoke(sandbox, "Mast.Caom.Products", {"obsid": ",".join(obsids)}, cache="cb-3").content
    assert body == json.dumps(expected(obsids)).encode()
    after = {row["dataURI"]: row for row in json.loads(body)["data"]}
    assert after[uri]["prvversion"] != before[uri]["prvversion"] and len(after) == len(before) + 1
