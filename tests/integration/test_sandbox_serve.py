"""``serve_forever``: URL on the first stdout line, quiet stderr, clean exit on SIGTERM/Ctrl-C."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import requests

UNCAL = "mast:JWST/product/jw01073001001_02101_00001_nrcalong_uncal.fits"


def start(tmp_path, **kwargs):
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    code = f"from mastpipe.sandbox import serve_forever; serve_forever({args})"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    url = proc.stdout.readline().strip()
    return proc, url


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_forever_prints_url_serves_and_stops(tmp_path, sig):
    log = tmp_path / "requests.jsonl"
    proc, url = start(tmp_path, port=0, seed=0, scale="2x3", faults="download.latency=0",
                      tokens=["tok=A. User"], log_path=str(log))
    try:
        assert url.startswith("http://127.0.0.1:")
        r = requests.get(f"{url}/api/v0.1/Download/file?uri={UNCAL}")
        assert r.status_code == 200 and len(r.content) > 0
        assert requests.get(url + "/whoami", cookies={"mast_token": "tok"}).json()["anon"] is False
        # A client that hangs up mid-body must not produce a traceback.
        parts = urlsplit(url)
        for _ in range(3):
            s = socket.create_connection((parts.hostname, parts.port))
            s.sendall(f"GET /api/v0.1/Download/file?uri={UNCAL} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            s.recv(100)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        assert requests.head(f"{url}/api/v0.1/Download/file?uri={UNCAL}").status_code == 200
    finally:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert err == "", err  # no per-request lines, no tracebacks
    assert out == ""
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert lines[0]["endpoint"] == "download" and lines[0]["status"] == 200
    assert any(x["has_token"] for x in lines)


def test_serve_forever_rejects_bad_arguments_before_binding(tmp_path):
    proc, url = start(tmp_path, faults="download.nope=1")
    out, err = proc.communicate(timeout=10)
    assert proc.returncode != 0 and url == ""
    assert "unknown fault knob 'nope'" in err and "valid knobs" in err


def test_cli_sandbox_serve_as_a_user_starts_it(tmp_path, mastpipe_argv):
    proc = subprocess.Popen([*mastpipe_argv, "sandbox", "serve", "--port", "0", "--seed", "0",
                             "--faults", "download.fail_first=1", "--token", "tok=A. User"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        target = f"{url}/api/v0.1/Download/file?uri={UNCAL}"
        assert [requests.get(target).status_code for _ in range(2)] == [503, 200]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and err == ""


def test_cli_sandbox_serve_bad_faults_is_a_clear_error(tmp_path, mastpipe_argv):
    proc = subprocess.run([*mastpipe_argv, "sandbox", "serve", "--faults", "download.latncy=1"],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode != 0
    assert "latncy" in proc.stderr and "valid knobs" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_sandbox_serve_https_with_a_certificate_and_its_key(tmp_path, mastpipe_argv):
    import trustme

    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1")
    cert, key, bundle = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    authority.cert_pem.write_to_path(str(bundle))
    proc = subprocess.Popen([*mastpipe_argv, "sandbox", "serve", "--port", "0", "--tls-cert", str(cert), "--tls-key", str(key)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("https://127.0.0.1:"), proc.stderr.read() if not url else url
        assert requests.get(url + "/whoami", verify=str(bundle), timeout=10).json()["anon"] is True
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url + "/whoami", timeout=10)  # not trusted without the authority
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in err


@pytest.mark.parametrize("given, expected", [
    (("--tls-cert", "cert.pem"), "--tls-cert and --tls-key go together"),
    (("--tls-cert", "missing.pem", "--tls-key", "missing.pem"), "'missing.pem' does not exist"),
    (("--tls-cert", "junk.pem", "--tls-key", "junk.pem"), "are not a PEM certificate and its private key"),
])
def test_cli_sandbox_serve_bad_tls_files_are_clear_errors(tmp_path, given, expected, mastpipe_argv):
    (tmp_path / "cert.pem").write_text("x")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    proc = subprocess.run([*mastpipe_argv, "sandbox", "serve", "--port", "0", *given],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert expected in proc.stderr and "Traceback" not in proc.stderr
