"""The command line blames a broken CA bundle variable on the configuration, not on MAST.

The sandbox serves HTTPS with a certificate from a test authority (trustme). A
REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE that names a missing file or a file with no PEM certificate
is found before any request: exit 2 (a usage problem), the variable and the path named, a hint
to unset it or fix it -- never "MAST answered an error" or a retried network fault (exit 3).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
import trustme

from mastpipe.sandbox import Sandbox

CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_sandbox(authority):  # type: ignore[no-untyped-def]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    with Sandbox(seed=0, ssl_context=context) as sb:
        yield sb


@pytest.fixture
def recipe(workdir: Path) -> Path:
    return workdir / "pipelines" / "jwst-1073-nircam-uncal.yaml"


def _run(cli, recipe: Path, url: str, **variables: str):  # type: ignore[no-untyped-def]
    # cli() starts from os.environ: drop any CA variable this machine sets, then set ours
    saved = {name: os.environ.pop(name) for name in CA_VARIABLES if name in os.environ}
    try:
        return cli("run", str(recipe), "--mast-url", url, cwd=recipe.parent, env=dict(variables))
    finally:
        os.environ.update(saved)


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_a_missing_bundle_is_named_exit_2_before_any_request(tls_sandbox, recipe: Path, cli, variable: str) -> None:
    result = _run(cli, recipe, tls_sandbox.url, **{variable: "/nonexistent.pem"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"mastpipe: error: {variable} points to /nonexistent.pem, which does not exist" in result.stderr
    assert f"hint: unset {variable}" in result.stderr and "PEM" in result.stderr
    assert "MAST answered an error" not in result.stderr and "criteria" not in result.stderr
    assert "Traceback" not in result.stderr
    assert tls_sandbox.connections == 0 and tls_sandbox.log.records() == []


def test_a_file_that_is_no_pem_bundle_is_named_exit_2_not_retried(tls_sandbox, recipe: Path, cli,
                                                                  tmp_path: Path) -> None:
    der = tmp_path / "campus-ca.cer"  # a real certificate, but binary (DER), as Windows exports it
    der.write_bytes(ssl.PEM_cert_to_DER_cert(trustme.CA().cert_pem.bytes().decode()))
    result = _run(cli, recipe, tls_sandbox.url, REQUESTS_CA_BUNDLE=str(der))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"REQUESTS_CA_BUNDLE points to {der}, which holds no certificate in PEM format" in result.stderr
    assert "BEGIN CERTIFICATE" in result.stderr and "openssl x509 -inform der" in result.stderr
    assert "retrying" not in result.stderr and "may be down" not in result.stderr
    assert tls_sandbox.connections == 0


def test_a_good_bundle_still_works_and_plain_http_never_reads_the_variable(tls_sandbox, recipe: Path, cli,
                                                                         authority, tmp_path: Path) -> None:
    pem = tmp_path / "campus-ca.pem"
    authority.cert_pem.write_to_path(str(pem))
    result = _run(cli, recipe, tls_sandbox.url, REQUESTS_CA_BUNDLE=str(pem))
    assert result.returncode == 0, result.stdout + result.stderr
    with Sandbox(seed=0) as plain:  # requests ignores the bundle over HTTP, and so does the check
        result = _run(cli, recipe, plain.url, REQUESTS_CA_BUNDLE="/nonexistent.pem")
    assert result.returncode == 0, result.stdout + result.stderr


def test_login_blames_the_bundle_and_tells_refused_from_unreachable_by_type(tls_sandbox, login) -> None:
    bundle = login(tls_sandbox.url, "some-token\n", REQUESTS_CA_BUNDLE="/nonexistent.pem")
    assert bundle.returncode == 2, bundle.stderr
    assert "REQUESTS_CA_BUNDLE points to /nonexistent.pem, which does not exist" in bundle.stderr
    assert "could not check" not in bundle.stderr and tls_sandbox.connections == 0
    malformed = login(tls_sandbox.url, "two words\n")
    assert malformed.returncode == 2 and "cannot carry" in malformed.stderr
    assert "two words" not in malformed.stderr
    untrusted = login(tls_sandbox.url, "some-token\n")  # certifi does not know the test authority
    assert untrusted.returncode == 3 and "could not be verified" in untrusted.stderr


def test_a_rerun_over_a_corrupt_ledger_warns_and_downloads_nothing_again(workdir: Path, cli) -> None:
    recipe = workdir / "pipelines" / "jwst-1073-nircam-uncal.yaml"
    with Sandbox(seed=0) as sb:
        first = cli("run", str(recipe), "--mast-url", sb.url, cwd=workdir)
        assert first.returncode == 0, first.stdout + first.stderr
        (ledger,) = workdir.rglob("ledger.sqlite")
        ledger.write_bytes(b"garbage" * 500)
        sb.log.clear()
        again = cli("run", str(recipe), "--mast-url", sb.url, cwd=workdir)
        downloads = [r for r in sb.log.records() if r.endpoint == "download"]
    assert again.returncode == 0, again.stdout + again.stderr
    assert downloads == []
    assert "was corrupt (file is not a database)" in again.stderr and "ledger.sqlite.corrupt-" in again.stderr
    assert "mastpipe: error" not in again.stderr
