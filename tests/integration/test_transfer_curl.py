"""The curl script, run with the real ``curl`` against the sandbox."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from _transfer_support import EXCLUSIVE_OBSID, downloads, public_rows, task_for

from mastpipe.curlscript import render_curl_script, write_curl_script
from mastpipe.transfer import FileTask

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
TOKEN = "tok-" + secrets.token_hex(16)


def run(script: Path, token: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MAST_API_TOKEN"}
    if token:
        env["MAST_API_TOKEN"] = token
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=60)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_curl_script_yields_same_bytes(sandbox_factory, tmp_path: Path) -> None:
    sb = sandbox_factory(tokens={TOKEN: "A. User"})
    secret = [r for r in sb.catalog.products(EXCLUSIVE_OBSID)][:1]
    rows = public_rows(sb, 4) + secret
    tasks = [task_for(sb, r, tmp_path) for r in rows]
    script = write_curl_script(tasks, tmp_path / "fetch.sh")
    text = script.read_text()
    assert TOKEN not in text and "mastDownload/" in text
    assert os.access(script, os.X_OK)

    proc = run(script, TOKEN)
    assert proc.returncode == 0, proc.stderr
    assert "5 downloaded, 0 already complete, 0 failed" in proc.stderr
    for task in tasks:
        assert sha(task.dest) == sb.catalog.sha256(task.key)
    assert [r.has_token for r in downloads(sb)] == [False] * 4 + [True]  # only where needed
    assert TOKEN not in proc.stdout + proc.stderr

    sb.log.clear()  # a rerun skips complete files without a request
    proc = run(script, TOKEN)
    assert proc.returncode == 0 and "0 downloaded, 5 already complete" in proc.stderr
    assert downloads(sb) == []


def test_curl_script_resumes_and_reports_failures(sandbox, tmp_path: Path) -> None:
    rows = public_rows(sandbox, 3)
    secret = list(sandbox.catalog.products(EXCLUSIVE_OBSID))[:1]
    tasks = [task_for(sandbox, r, tmp_path) for r in rows + secret]
    half = tasks[0].dest
    half.parent.mkdir(parents=True)
    half.write_bytes(sandbox.catalog.body(tasks[0].key)[:1000])
    script = write_curl_script(tasks, tmp_path / "fetch.sh")
    proc = run(script)  # no token: the exclusive file fails
    assert proc.returncode == 1
    assert "3 downloaded, 0 already complete, 1 failed" in proc.stderr
    assert secret[0]["productFilename"] in proc.stderr
    assert sha(half) == sandbox.catalog.sha256(tasks[0].key)
    assert downloads(sandbox, tasks[0].key)[0].range == "bytes=1000-"


def test_curl_does_not_carry_token_across_hosts(sandbox_factory, tmp_path: Path) -> None:
    other = sandbox_factory(tokens={TOKEN: "A. User"})
    front = sandbox_factory(tokens={TOKEN: "A. User"}, faults=f"download.redirect={other.url}")
    secret = list(front.catalog.products(EXCLUSIVE_OBSID))[:1]
    script = write_curl_script([task_for(front, secret[0], tmp_path)], tmp_path / "fetch.sh")
    proc = run(script, TOKEN)
    assert proc.returncode == 1  # 401 at the other host: the cookie was not forwarded
    assert downloads(front)[0].has_token and not any(r.has_token for r in downloads(other))


def test_hostile_looking_paths_are_quoted(tmp_path: Path) -> None:
    evil = tmp_path / "d" / "$(touch pwned) `x` 'q'; rm -rf ~.fits"
    task = FileTask("mast:X/product/x", "http://127.0.0.1:9/x?uri=a&b=$(id)", evil, 3)
    text = render_curl_script([task], tmp_path)
    line = [ln for ln in text.splitlines() if ln.startswith("fetch ")][0]
    assert line.startswith("fetch 'd/$(touch pwned)")
    proc = subprocess.run(["bash", "-n", "-c", text], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # run it: curl fails to connect, nothing is executed from the names
    script = tmp_path / "s.sh"
    script.write_text(text)
    result = run(script)
    assert result.returncode == 1 and not (tmp_path / "pwned").exists()
    assert not Path("pwned").exists()
