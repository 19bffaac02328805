"""The sandbox's cloud side: path_lookup, and MAST's public bucket on a real S3 server (moto)
behind a fault-injecting proxy. Clients are real: boto3, unmodified astroquery, curl.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import ssl
import subprocess
import time

import pytest
import requests

pytest.importorskip("moto", reason="the sandbox's S3 bucket needs moto (pip install 'mastpipe[test]')")
pytest.importorskip("boto3", reason="the S3 tests need boto3 (pip install 'mastpipe[test]')")

from _cloud_support import ConnectProxy, bucket_rows, s3_client
from botocore.exceptions import ClientError

from mastpipe.sandbox import Faults, Sandbox
from mastpipe.sandbox.s3 import BUCKET

TOKEN = "good-token"


def test_public_products_are_in_the_bucket_with_the_bytes_of_the_https_download(sb) -> None:
    client = s3_client(sb.s3.endpoint)
    rows = [r for r in bucket_rows(sb) if r["productFilename"].endswith("_uncal.fits")]
    held = [r for r in rows if sb.s3.key_of(r["dataURI"])]
    missing = [r for r in rows if not sb.s3.key_of(r["dataURI"])]
    assert held and missing, "the seed must leave some public products out of the bucket"
    for row in held[:4]:
        key = sb.s3.key_of(row["dataURI"])
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        web = requests.get(sb.download_url(row["dataURI"]), timeout=30).content
        assert body == web == sb.catalog.body(row["dataURI"])
        head = client.head_object(Bucket=BUCKET, Key=key)
        assert head["ContentLength"] == row["size"] and head["ETag"].strip('"')
        part = client.get_object(Bucket=BUCKET, Key=key, Range="bytes=100-199")
        assert part["Body"].read() == body[100:200] and part["ContentRange"] == f"bytes 100-199/{len(body)}"
    for row in missing:
        path = requests.get(f"{sb.url}/api/v0.1/path_lookup/", params={"uri": row["dataURI"]},
                            timeout=30).json()[row["dataURI"]]["path"]
        with pytest.raises(ClientError) as info:
            client.head_object(Bucket=BUCKET, Key=path.lstrip("/"))
        assert info.value.response["Error"]["Code"] == "404"
    records = [r for r in sb.log.records() if r.endpoint == "s3"]
    assert records and not any(r.has_token for r in records)


def test_ranged_gets_answer_as_s3_does(sb) -> None:
    # the sandbox's moto reads only the range asked (mastpipe.sandbox.s3._LAUNCH): what it answers
    # must stay S3's answer, for every form of Range
    client = s3_client(sb.s3.endpoint)
    row = next(r for r in bucket_rows(sb) if sb.s3.key_of(r["dataURI"]))
    key, body = sb.s3.key_of(row["dataURI"]), sb.catalog.body(row["dataURI"])
    n = len(body)
    for asked, want in ((f"bytes=0-{n - 1}", body), (f"bytes={n - 7}-", body[-7:]), ("bytes=-7", body[-7:]),
                        (f"bytes=10-{n + 99}", body[10:])):
        answer = client.get_object(Bucket=BUCKET, Key=key, Range=asked)
        assert answer["Body"].read() == want, asked
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 206, asked
    whole = client.get_object(Bucket=BUCKET, Key=key, Range="bytes=0-1,5-6")  # several: S3 sends all
    assert whole["Body"].read() == body
    with pytest.raises(ClientError) as info:
        client.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={n + 5}-")
    assert info.value.response["Error"]["Code"] == "InvalidRange"


def test_exclusive_access_products_are_never_in_the_bucket(sb) -> None:
    client = s3_client(sb.s3.endpoint)
    rows = bucket_rows(sb, "4242")
    assert rows and all(r["dataRights"] == "EXCLUSIVE_ACCESS" for r in rows)
    answer = requests.get(f"{sb.url}/api/v0.1/path_lookup/", params={"uri": [r["dataURI"] for r in rows]},
                          timeout=30).json()
    for row in rows:
        assert sb.s3.key_of(row["dataURI"]) is None
        with pytest.raises(ClientError):
            client.head_object(Bucket=BUCKET, Key=answer[row["dataURI"]]["path"].lstrip("/"))


def test_path_lookup_answers_per_uri_and_refuses_more_than_fifty(sb) -> None:
    rows = bucket_rows(sb)
    uris = [r["dataURI"] for r in rows][:49] + ["mast:JWST/product/no_such_file.fits"]
    answer = requests.get(f"{sb.url}/api/v0.1/path_lookup/", params={"uri": uris}, timeout=30)
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == set(uris)
    assert body["mast:JWST/product/no_such_file.fits"] == {"status_code": 404, "path": None}
    assert body[uris[0]]["status_code"] == 200 and body[uris[0]]["path"].startswith("/jwst/public/")
    too_many = requests.get(f"{sb.url}/api/v0.1/path_lookup/", params={"uri": uris + ["mast:x/y"]}, timeout=30)
    assert too_many.status_code == 414
    logged = [r for r in sb.log.records() if r.endpoint == "path_lookup"]
    assert [len(r.uris) for r in logged] == [50, 51]


def test_s3_faults_slowdown_drop_and_latency(sb) -> None:
    client = s3_client(sb.s3.endpoint)
    row = next(r for r in bucket_rows(sb) if sb.s3.key_of(r["dataURI"]))
    key = sb.s3.key_of(row["dataURI"])
    sb.faults = Faults.parse("s3.fail_first=1:503")
    with pytest.raises(ClientError) as info:
        client.get_object(Bucket=BUCKET, Key=key)
    assert info.value.response["Error"]["Code"] == "SlowDown"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == sb.catalog.body(row["dataURI"])

    sb.faults = Faults.parse("s3.drop_rate=1,s3.drop_at=0.5")
    answer = requests.get(f"{sb.s3.endpoint}/{BUCKET}/{key}", stream=True, timeout=30)
    got = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for chunk in answer.iter_content(4096):
            got += chunk
    assert 0 < len(got) < row["size"]

    sb.faults = Faults.parse("s3.latency=0.3")
    started = time.monotonic()
    client.head_object(Bucket=BUCKET, Key=key)
    assert time.monotonic() - started >= 0.3
    statuses = [r.status for r in sb.log.records() if r.endpoint == "s3"]
    assert statuses[0] == 503 and 200 in statuses


def test_serve_s3_prints_the_endpoint_second(tmp_path, cli_spawn) -> None:
    proc = cli_spawn("sandbox", "serve", "--s3", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        endpoint = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and endpoint.startswith("http://127.0.0.1:")
        uri = "mast:JWST/product/jw01073001001_02101_00001_nrca1_uncal.fits"
        path = requests.get(f"{url}/api/v0.1/path_lookup/", params={"uri": uri}, timeout=30).json()[uri]["path"]
        answer = requests.head(f"{endpoint}/{BUCKET}{path}", timeout=30)
        assert answer.status_code in (200, 404)  # served by S3 (whether this one is held or not)
        if answer.status_code == 200:
            assert answer.headers["ETag"] and int(answer.headers["Content-Length"]) > 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---------------------------------------------------------------------------------------------
# Fidelity: unmodified astroquery finds the same cloud copies as mastpipe


@pytest.fixture
def mast_host_sandbox(tmp_path):  # type: ignore[no-untyped-def]
    """The sandbox over HTTPS as ``mast.stsci.edu`` (through a CONNECT proxy), with its bucket."""
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("mast.stsci.edu", "127.0.0.1").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    with Sandbox(seed=0, ssl_context=context, s3=True) as sandbox:
        host, port = sandbox.url.rsplit("//", 1)[1].rsplit(":", 1)
        proxy = ConnectProxy((host, int(port)))
        try:
            yield sandbox, proxy, bundle
        finally:
            proxy.close()


def test_astroquery_get_cloud_uris_matches_mastpipe(mast_host_sandbox, run_astroquery, monkeypatch) -> None:
    from mastpipe.archive import Archive
    from mastpipe.stages.retrieve.s3 import Locations, S3Client, locate

    sandbox, proxy, bundle = mast_host_sandbox
    rows = bucket_rows(sandbox) + bucket_rows(sandbox, "4242")
    hst = [p for o in sandbox.catalog.observations() if o["obs_collection"] in ("HST", "TESS")
           for p in sandbox.catalog.products(o["obsid"])]
    uris = sorted({r["dataURI"] for r in rows + hst})
    assert len(uris) > 50  # more than one path_lookup batch
    proc = run_astroquery(sandbox.url, f"""
        import json, warnings
        from astroquery.mast import Observations
        warnings.simplefilter("ignore")
        Observations.enable_cloud_dataset()
        found = Observations.get_cloud_uris({uris!r}, return_uri_map=True)
        print("REPORT " + json.dumps(found))
    """, env_extra={"HTTPS_PROXY": proxy.url, "https_proxy": proxy.url, "REQUESTS_CA_BUNDLE": str(bundle),
                    "AWS_ENDPOINT_URL_S3": sandbox.s3.endpoint, "AWS_DEFAULT_REGION": "us-east-1"})
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")][-1]
    theirs = json.loads(line[len("REPORT "):])
    assert "mast.stsci.edu:443" in proxy.tunnels  # astroquery asked "MAST" itself: the sandbox
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    sandbox.log.clear()
    import tempfile

    with tempfile.TemporaryDirectory() as state:
        copies = locate(uris, Archive(sandbox.url), S3Client(sandbox.s3.endpoint), Locations(state, "t", None))
    ours = {uri: (copy.s3_uri if copy else None) for uri, copy in copies.items()}
    assert ours == theirs
    assert any(v for v in ours.values()) and any(v is None for v in ours.values())
    lookups = [r for r in sandbox.log.records() if r.endpoint == "path_lookup"]
    assert lookups and all(len(r.uris) <= 50 for r in lookups)


def test_curl_fetches_the_https_form_of_a_key(sb, tmp_path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    row = next(r for r in bucket_rows(sb) if sb.s3.key_of(r["dataURI"]))
    out = tmp_path / "f.fits"
    subprocess.run([curl, "-fsS", "-o", str(out), sb.s3.https_url(sb.s3.key_of(row["dataURI"]))], check=True,
                   timeout=60)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == sb.catalog.sha256(row["dataURI"])
