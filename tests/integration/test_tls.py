"""TLS certificates against the sandbox serving HTTPS (a test authority made by trustme).

Checked by default everywhere (astroquery's searches, downloads, the token check); a failing
certificate stops at once with the fix instead of being retried; REQUESTS_CA_BUNDLE is the way
to trust a private authority; --insecure turns checking off only when asked, and loudly.
"""

from __future__ import annotations

import logging
import shutil
import ssl
from pathlib import Path

import pytest
import requests
import trustme
import urllib3

import mastpipe
from mastpipe.auth import check_token
from mastpipe.stages.retrieve.dask import WorkerConfig, fetch_on_worker
from mastpipe.stages.retrieve.settings import DownloadSettings
from mastpipe.errors import ArchiveError, AuthError, CABundleError
from mastpipe.tls import certificate_error, warn_insecure
from mastpipe.stages.retrieve.engine import FileTask, Transfer

from _transfer_support import FAST, public_rows, task_for

REPO = Path(__file__).resolve().parents[2]
SEED = "jwst-1073-nircam-uncal.yaml"


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_sandbox(sandbox_factory, authority):  # type: ignore[no-untyped-def]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return sandbox_factory(seed=0, ssl_context=context)


@pytest.fixture
def bundle(tmp_path: Path, authority) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path / "campus-ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    shutil.copy(REPO / "pipelines" / SEED, tmp_path / SEED)
    return tmp_path / SEED


@pytest.fixture(autouse=True)
def no_ca_from_the_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)


GOOD_TOKEN = "good-token"  # the sandbox fixtures' valid token


def _tasks(sandbox, tmp_path: Path, n: int) -> list[FileTask]:  # type: ignore[no-untyped-def]
    return [task_for(sandbox, row, tmp_path / "out") for row in public_rows(sandbox, n)]


def test_sandbox_serves_https(tls_sandbox, bundle: Path) -> None:
    assert tls_sandbox.url.startswith("https://127.0.0.1:")
    assert requests.get(tls_sandbox.url + "/whoami", verify=str(bundle), timeout=10).json()["anon"] is True


def test_an_unknown_authority_stops_the_run_at_once_with_the_fix(tls_sandbox, recipe: Path, capfd) -> None:
    with pytest.raises(ArchiveError) as caught:
        mastpipe.run(recipe, mast_url=tls_sandbox.url, environ={})
    error = caught.value
    assert "TLS certificate of 127.0.0.1" in str(error) and "could not be verified" in str(error)
    assert "REQUESTS_CA_BUNDLE" in error.hint and "--insecure" in error.hint
    assert error.exit_code == 3
    # not retried: one connection, and no request ever reached the server
    assert tls_sandbox.connections == 1
    assert tls_sandbox.log.records() == []
    assert "Traceback" not in capfd.readouterr().err  # nor does the server print one


def test_a_private_authority_is_trusted_through_requests_ca_bundle(tls_sandbox, recipe: Path, bundle: Path,
                                                                  monkeypatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    outcome = mastpipe.run(recipe, mast_url=tls_sandbox.url, environ={})
    assert outcome.exit_code == 0 and outcome.report["insecure"] is False
    fetched = [r for r in outcome.result.retrieve.results if r.status == "fetched"]
    assert len(fetched) == len(outcome.tables["filter"]) > 0
    for result in fetched:
        assert result.sha256 == tls_sandbox.catalog.sha256(result.key)
    assert "not checked" not in outcome.summary


@pytest.mark.parametrize("environment", ["no bundle", "another authority's bundle"])
def test_insecure_runs_and_says_so_loudly(tls_sandbox, recipe: Path, tmp_path: Path, caplog, recwarn,
                                          monkeypatch, environment: str) -> None:
    if environment != "no bundle":  # a session's verify=False would lose to this; ours must not
        other = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(other))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
    caplog.set_level(logging.WARNING, logger="mastpipe")
    outcome = mastpipe.run(recipe, mast_url=tls_sandbox.url, environ={}, insecure=True)
    assert outcome.exit_code == 0
    assert outcome.report["retrieve"]["fetched"]["files"] == len(outcome.tables["filter"]) > 0
    warnings_said = [r.getMessage() for r in caplog.records if "TLS certificate checking is OFF" in r.getMessage()]
    assert len(warnings_said) == 1 and f"127.0.0.1:{tls_sandbox.url.rsplit(':', 1)[1]}" in warnings_said[0]
    assert outcome.report["insecure"] is True
    assert "TLS certificates were not checked" in outcome.summary
    # urllib3's warning on every request is replaced by that one line
    assert [w for w in recwarn if issubclass(w.category, urllib3.exceptions.InsecureRequestWarning)] == []


def test_each_download_fails_after_one_connection_with_an_unchecked_certificate(tls_sandbox, tmp_path: Path) -> None:
    tasks = _tasks(tls_sandbox, tmp_path, 3)
    results = Transfer(workers=2, policy=FAST).run(tasks)
    assert [r.status for r in results] == ["failed"] * 3
    for result in results:
        assert result.attempts == 1 and "could not be verified" in result.error
        assert "REQUESTS_CA_BUNDLE" in result.error
    assert tls_sandbox.connections == 3
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_transfer_and_a_dask_worker_download_when_insecure(tls_sandbox, tmp_path: Path) -> None:
    first, second = _tasks(tls_sandbox, tmp_path, 2)
    [result] = Transfer(workers=1, insecure=True).run([first])
    assert result.status == "fetched" and result.sha256 == tls_sandbox.catalog.sha256(first.key)
    facts = fetch_on_worker(second, None, WorkerConfig(DownloadSettings(insecure=True)), retry_budget=0)
    assert facts.result.status == "fetched" and facts.result.sha256 == tls_sandbox.catalog.sha256(second.key)
    refused = fetch_on_worker(FileTask(second.key, second.url, tmp_path / "again.fits", second.size),
                              None, WorkerConfig(), retry_budget=0)
    assert refused.result.status == "failed" and "could not be verified" in refused.result.error


def test_the_token_check_names_the_certificate_and_never_the_token(tls_sandbox, recwarn) -> None:
    with pytest.raises(AuthError) as caught:
        check_token(tls_sandbox.url, GOOD_TOKEN)
    assert "could not be verified" in str(caught.value) and "REQUESTS_CA_BUNDLE" in caught.value.hint
    assert GOOD_TOKEN not in str(caught.value) + caught.value.hint
    assert check_token(tls_sandbox.url, GOOD_TOKEN, insecure=True)["anon"] is False
    assert [w for w in recwarn if issubclass(w.category, urllib3.exceptions.InsecureRequestWarning)] == []


def test_certificate_error_finds_the_cause_only_for_certificates(tls_sandbox, sandbox) -> None:
    with pytest.raises(requests.exceptions.SSLError) as bad:
        requests.get(tls_sandbox.url + "/whoami", timeout=10)
    assert isinstance(certificate_error(bad.value), ssl.SSLCertVerificationError)
    with pytest.raises(requests.exceptions.SSLError) as wrong_protocol:  # TLS spoken to plain HTTP
        requests.get(sandbox.url.replace("http://", "https://") + "/whoami", timeout=10)
    assert certificate_error(wrong_protocol.value) is None


def test_insecure_on_plain_http_says_it_changes_nothing(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="mastpipe")
    warn_insecure("http://127.0.0.1:8080")
    assert "no effect" in caplog.text and "plain HTTP" in caplog.text


def test_downloads_blame_a_missing_ca_bundle_on_the_configuration(tls_sandbox, tmp_path: Path,
                                                                  monkeypatch) -> None:
    tasks = _tasks(tls_sandbox, tmp_path, 2)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "nowhere.pem"))
    with pytest.raises(CABundleError) as caught:
        Transfer(policy=FAST).run(tasks)
    assert caught.value.exit_code == 2 and "REQUESTS_CA_BUNDLE" in caught.value.message
    assert tls_sandbox.connections == 0, "no request was tried with it"
    assert Transfer(policy=FAST, insecure=True).run(tasks)[0].status == "fetched"  # not read then
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
