"""Every fault knob, seen by a plain HTTP client exactly as documented in the contract."""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urlsplit

import pytest
import requests

from mastpipe.sandbox import Faults

UNCAL = "mast:JWST/product/jw01073001001_02101_00001_nrcalong_uncal.fits"
CAL = "mast:JWST/product/jw01073001001_02101_00001_nrcalong_cal.fits"


def invoke(sb, service, params, page=1, pagesize=50_000, cache="cb-1", session=None):
    req = {"service": service, "params": params, "format": "json", "pagesize": pagesize,
           "page": page, "cacheBreaker": cache}
    return (session or requests).post(
        sb.url + "/api/v0/invoke", data="request=" + quote(json.dumps(req)),
        headers={"Content-type": "application/x-www-form-urlencoded", "Accept": "text/plain"})


def jwst_query(sb, cache="cb-1", **kw):
    return invoke(sb, "Mast.Caom.Filtered",
                  {"columns": "*", "filters": [{"paramName": "obs_collection", "values": ["JWST"]}]},
                  cache=cache, **kw)


def raw_get(sb, uri, headers=None, method="GET"):
    """GET with http.client, returning (response, body or IncompleteRead partial, complete?)."""
    parts = urlsplit(sb.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, f"/api/v0.1/Download/file?uri={uri}", headers=headers or {})
        resp = conn.getresponse()
        try:
            return resp, resp.read(), True
        except http.client.IncompleteRead as exc:
            return resp, exc.partial, False
    finally:
        conn.close()


# ---------------------------------------------------------------------------- timing knobs
def test_latency_delays_first_byte_only_on_its_endpoint(sandbox):
    sandbox.faults = Faults.parse("download.latency=1.0")
    t0 = time.monotonic()
    assert requests.get(sandbox.download_url(UNCAL)).status_code == 200
    assert time.monotonic() - t0 >= 1.0
    t0 = time.monotonic()
    assert jwst_query(sandbox).status_code == 200
    assert time.monotonic() - t0 < 0.9  # a query takes milliseconds: it was not delayed


def test_bandwidth_caps_body_rate(sandbox):
    size = sandbox.catalog.file_size(UNCAL)
    sandbox.faults = Faults.parse(f"download.bandwidth={size * 2}")  # about half a second
    t0 = time.monotonic()
    r = requests.get(sandbox.download_url(UNCAL))
    elapsed = time.monotonic() - t0
    assert r.content == sandbox.catalog.body(UNCAL)
    assert 0.4 <= elapsed < 3


# ---------------------------------------------------------------------------- status knobs
def test_error_rate_one_with_codes(sandbox):
    sandbox.faults = Faults.parse("download.error_rate=1:502")
    assert requests.get(sandbox.download_url(UNCAL)).status_code == 502
    assert requests.head(sandbox.download_url(UNCAL)).status_code == 502


def test_error_rate_is_deterministic_per_seed_and_uses_default_codes(sandbox):
    uris = [p["dataURI"] for o in sandbox.catalog.observations()[:8]
            for p in sandbox.catalog.products(o["obsid"])]

    def outcome(spec):
        sandbox.faults = Faults.parse(spec)
        with requests.Session() as s:
            return [s.head(sandbox.download_url(u)).status_code for u in uris]

    first = outcome("download.error_rate=0.5,seed=1")
    assert first == outcome("download.error_rate=0.5,seed=1")
    assert first != outcome("download.error_rate=0.5,seed=2")
    failed = [c for c in first if c != 200]
    assert 0.2 * len(uris) < len(failed) < 0.8 * len(uris)
    assert set(failed) <= {500, 502, 503, 504}


def test_error_decisions_do_not_depend_on_thread_interleaving(sandbox):
    uris = [p["dataURI"] for o in sandbox.catalog.observations()[:10]
            for p in sandbox.catalog.products(o["obsid"])]
    sandbox.faults = Faults.parse("download.error_rate=0.4,seed=5")
    sequential = {u: requests.head(sandbox.download_url(u)).status_code for u in uris}
    sandbox.faults = Faults.parse("download.error_rate=0.4,seed=5")
    with ThreadPoolExecutor(16) as pool:
        parallel = dict(zip(uris, pool.map(
            lambda u: requests.head(sandbox.download_url(u)).status_code, uris)))
    assert parallel == sequential


def test_fail_first_fails_first_n_attempts_per_key(sandbox):
    sandbox.faults = Faults.parse("download.fail_first=2,download.retry_after=3")
    codes = [requests.get(sandbox.download_url(UNCAL)) for _ in range(3)]
    assert [r.status_code for r in codes] == [503, 503, 200]
    assert codes[0].headers["Retry-After"] == "3"
    # Another key has its own count.
    assert requests.get(sandbox.download_url(CAL)).status_code == 503


def test_fail_first_with_code_on_products_and_query(sandbox):
    sandbox.faults = Faults.parse("products.fail_first=1:500,query.fail_first=1")
    obsid = sandbox.catalog.observations()[0]["obsid"]
    assert invoke(sandbox, "Mast.Caom.Products", {"obsid": obsid}).status_code == 500
    assert invoke(sandbox, "Mast.Caom.Products", {"obsid": obsid}).status_code == 200
    # A retried query with a new cacheBreaker counts as the next attempt of the same query.
    assert jwst_query(sandbox, cache="a").status_code == 503
    assert jwst_query(sandbox, cache="b").status_code == 200


def test_throttle_rate_gives_429_with_retry_after_seconds_or_date(sandbox):
    sandbox.faults = Faults.parse("download.throttle_rate=1,download.retry_after=7")
    r = requests.get(sandbox.download_url(UNCAL))
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    sandbox.faults = Faults.parse("download.throttle_rate=1,download.retry_after=date:120")
    r = requests.get(sandbox.download_url(UNCAL))
    assert r.status_code == 429
    ahead = parsedate_to_datetime(r.headers["Retry-After"]).timestamp() - time.time()
    assert 100 < ahead <= 121


def test_missing_glob_gives_404(sandbox):
    sandbox.faults = Faults.parse("download.missing=*_uncal.fits")
    assert requests.head(sandbox.download_url(UNCAL)).status_code == 404
    assert requests.get(sandbox.download_url(UNCAL)).status_code == 404
    assert requests.get(sandbox.download_url(CAL)).status_code == 200


def test_unknown_uri_is_404(sandbox):
    assert requests.get(sandbox.download_url("mast:JWST/product/nope.fits")).status_code == 404


def test_redirect_sends_302_to_same_path_on_other_base(sandbox, sandbox_factory):
    other = sandbox_factory(seed=0)
    sandbox.faults = Faults.parse(f"download.redirect={other.url}")
    r = requests.get(sandbox.download_url(UNCAL), allow_redirects=False)
    assert r.status_code == 302
    assert r.headers["Location"] == other.download_url(UNCAL)
    r = requests.get(sandbox.download_url(UNCAL))
    assert r.status_code == 200 and r.content == sandbox.catalog.body(UNCAL)
    assert [x.uri for x in other.log.records()] == [UNCAL]


# ---------------------------------------------------------------------------- body knobs
def test_drop_rate_closes_connection_at_drop_at(sandbox):
    size = sandbox.catalog.file_size(UNCAL)
    sandbox.faults = Faults.parse("download.drop_rate=1,download.drop_at=0.25")
    resp, body, complete = raw_get(sandbox, UNCAL)
    assert resp.status == 200 and int(resp.getheader("Content-Length")) == size
    assert not complete and len(body) == int(size * 0.25)
    assert body == sandbox.catalog.body(UNCAL, 0, len(body))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(sandbox.download_url(UNCAL))


def test_drop_at_defaults_to_half(sandbox):
    size = sandbox.catalog.file_size(UNCAL)
    sandbox.faults = Faults.parse("download.drop_rate=1")
    _, body, complete = raw_get(sandbox, UNCAL)
    assert not complete and len(body) == size // 2


def test_bad_length_claims_more_than_sent(sandbox):
    size = sandbox.catalog.file_size(UNCAL)
    sandbox.faults = Faults.parse("download.bad_length_rate=1")
    resp, body, complete = raw_get(sandbox, UNCAL)
    assert int(resp.getheader("Content-Length")) > size
    assert not complete and body == sandbox.catalog.body(UNCAL)


def test_ignore_range_answers_200_with_whole_body(sandbox):
    sandbox.faults = Faults.parse("download.ignore_range=1")
    r = requests.get(sandbox.download_url(UNCAL), headers={"Range": "bytes=100-"})
    assert r.status_code == 200 and "Content-Range" not in r.headers
    assert r.content == sandbox.catalog.body(UNCAL)


def test_bad_range_answers_206_starting_elsewhere(sandbox):
    size = sandbox.catalog.file_size(UNCAL)
    sandbox.faults = Faults.parse("download.bad_range_rate=1")
    r = requests.get(sandbox.download_url(UNCAL), headers={"Range": "bytes=1000-"})
    assert r.status_code == 206
    start = int(r.headers["Content-Range"].split()[1].split("-")[0])
    assert start != 1000
    # Consistent with its own (wrong) Content-Range, so only a careful client notices.
    assert r.headers["Content-Range"] == f"bytes {start}-{size - 1}/{size}"
    assert r.content == sandbox.catalog.body(UNCAL, start)


def test_no_length_delimits_body_by_close(sandbox):
    sandbox.faults = Faults.parse("download.no_length=1")
    resp, body, complete = raw_get(sandbox, UNCAL)
    assert resp.getheader("Content-Length") is None
    assert complete and body == sandbox.catalog.body(UNCAL)


# ---------------------------------------------------------------------------- invoke knobs
def test_max_obsids_times_out_with_504_after_delay(sandbox):
    sandbox.faults = Faults.parse("products.max_obsids=2,products.timeout_delay=0.3")
    ids = [o["obsid"] for o in sandbox.catalog.observations()[:3]]
    t0 = time.monotonic()
    r = invoke(sandbox, "Mast.Caom.Products", {"obsid": ",".join(ids)})
    assert r.status_code == 504 and time.monotonic() - t0 >= 0.3
    assert invoke(sandbox, "Mast.Caom.Products", {"obsid": ",".join(ids[:2])}).status_code == 200


def test_executing_first_n_polls(sandbox):
    sandbox.faults = Faults.parse("query.executing=2")
    statuses = [jwst_query(sandbox, cache="q1").json()["status"] for _ in range(3)]
    assert statuses == ["EXECUTING", "EXECUTING", "COMPLETE"]
    assert jwst_query(sandbox, cache="q2").json()["status"] == "EXECUTING"  # a new query


def test_row_cap_truncates_silently_but_count_is_true(sandbox):
    sandbox.faults = Faults.parse("query.row_cap=5")
    data = jwst_query(sandbox).json()
    assert len(data["data"]) == 5
    assert data["paging"]["pagesFiltered"] == 1 and data["paging"]["rowsTotal"] == 5
    count = invoke(sandbox, "Mast.Caom.Filtered",
                   {"columns": "COUNT_BIG(*)",
                    "filters": [{"paramName": "obs_collection", "values": ["JWST"]}]}).json()
    n_jwst = sum(o["obs_collection"] == "JWST" for o in sandbox.catalog.observations())
    assert count["data"] == [{"Column1": n_jwst}] and n_jwst > 5


def test_row_cap_applies_to_products(sandbox):
    sandbox.faults = Faults.parse("products.row_cap=3")
    obsid = sandbox.catalog.observations()[0]["obsid"]
    assert len(invoke(sandbox, "Mast.Caom.Products", {"obsid": obsid}).json()["data"]) == 3


def test_all_endpoint_applies_everywhere_and_specific_wins(sandbox):
    sandbox.faults = Faults.parse("all.error_rate=1:500,download.error_rate=0")
    assert requests.get(sandbox.url + "/whoami").status_code == 500
    assert requests.post(sandbox.url + "/portal/Mashup/Mashup.asmx/columnsconfig",
                         data="colConfigId=Mast.Caom.Cone").status_code == 500
    assert jwst_query(sandbox).status_code == 500
    assert requests.get(sandbox.download_url(UNCAL)).status_code == 200


def test_bundle_endpoint_faults(sandbox):
    sandbox.faults = Faults.parse("bundle.fail_first=1:503")
    r = requests.post(sandbox.url + "/api/v0.1/Download/bundle.sh", data=[("uri", UNCAL)])
    assert r.status_code == 503 and "Retry-After" in r.headers
    r = requests.post(sandbox.url + "/api/v0.1/Download/bundle.sh", data=[("uri", UNCAL)])
    assert r.status_code == 200 and r.text.startswith("#!/bin/bash")


def test_faults_can_be_replaced_at_runtime(sandbox):
    sandbox.faults = Faults.parse("download.error_rate=1")
    assert requests.get(sandbox.download_url(UNCAL)).status_code >= 500
    sandbox.faults = Faults.parse("")
    assert requests.get(sandbox.download_url(UNCAL)).status_code == 200
