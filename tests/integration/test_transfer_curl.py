"""The curl script, run with the real ``curl`` against the sandbox."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from _transfer_support import FAST, EXCLUSIVE_OBSID, assert_complete, downloads, public_rows, task_for

from mastpipe.stages.retrieve.curl import render_curl_script, write_curl_script
from mastpipe.sandbox import Faults
from mastpipe.stages.retrieve.temporaries import meta_path, part_path
from mastpipe.stages.retrieve.engine import FileTask, Transfer

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
TOKEN = "tok-" + secrets.token_hex(16)


def run(script: Path, token: str | None = None, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAST_API_TOKEN", "MASTPIPE_CURL"))}
    env["MASTPIPE_CURL_RETRY_DELAY"] = "0"  # the tests exercise the retry logic, not the clock
    env.update(env_extra)
    if token:
        env["MAST_API_TOKEN"] = token
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=60)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gets(sb, task: FileTask) -> list[tuple[str | None, int]]:
    """(Range header, status) of each GET the sandbox saw for ``task``."""
    return [(r.range, r.status) for r in downloads(sb, task.key)]


def one_file(sb, tmp_path: Path) -> tuple[FileTask, bytes, Path]:
    """A public file's task, its true bytes, and a script that fetches it."""
    task = task_for(sb, public_rows(sb, 1)[0], tmp_path)
    return task, sb.catalog.body(task.key), write_curl_script([task], tmp_path / "fetch.sh")


def first_attempt_only(uri: str, spec: str) -> Faults:
    """``spec`` (rate knobs at 0.5) under a fault seed that fires them on the first request for
    ``uri`` and not on the second: exact, not probabilistic."""
    for seed in range(1000):
        faults = Faults.parse(f"{spec},seed={seed}")
        knobs = [item.split("=")[0].split(".")[1] for item in spec.split(",") if "_rate" in item]
        if all(faults.hit("download", uri, 1, k) and not faults.hit("download", uri, 2, k) for k in knobs):
            return faults
    raise AssertionError("no suitable fault seed")


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
        assert_complete(sb, task)  # and no temporary left beside it
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
    body = sandbox.catalog.body(tasks[0].key)
    # file 0: a temporary left by an earlier run (with download-mode metadata), resumed
    part = part_path(tasks[0].dest)
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:1000])
    meta_path(tasks[0].dest).write_text('{"size": %d, "etag": null, "last_modified": null}' % len(body))
    # file 1: a wrong-size file under the final name, replaced from zero (not appended to)
    tasks[1].dest.parent.mkdir(parents=True, exist_ok=True)
    tasks[1].dest.write_bytes(b"not the file")
    script = write_curl_script(tasks, tmp_path / "fetch.sh")
    proc = run(script)  # no token: the exclusive file fails
    assert proc.returncode == 1
    assert "3 downloaded, 0 already complete, 1 failed" in proc.stderr
    assert secret[0]["productFilename"] in proc.stderr and "HTTP 401" in proc.stderr
    assert len(downloads(sandbox, tasks[3].key)) == 1  # 401 is not retried
    assert not tasks[3].dest.exists()
    assert gets(sandbox, tasks[0]) == [("bytes=1000-", 206)]
    assert gets(sandbox, tasks[1]) == [(None, 200)]
    for task in tasks[:3]:
        assert_complete(sandbox, task)  # the metadata went too: it no longer vouched for the bytes


def test_ignored_range_restarts_from_zero(sandbox, tmp_path: Path) -> None:
    task, body, script = one_file(sandbox, tmp_path)
    part = part_path(task.dest)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 1000)  # if appended to, the result could never be right
    sandbox.faults = Faults.parse("download.ignore_range=1")
    proc = run(script)
    assert proc.returncode == 0, proc.stderr
    assert "curl exit 33" in proc.stderr
    assert gets(sandbox, task) == [("bytes=1000-", 200), (None, 200)]  # refused, then from zero
    assert_complete(sandbox, task)
    assert task.dest.read_bytes() == body


def test_body_cut_mid_way_is_resumed_in_the_same_run(sandbox, tmp_path: Path) -> None:
    task, body, script = one_file(sandbox, tmp_path)
    sandbox.faults = first_attempt_only(task.key, "download.drop_rate=0.5,download.drop_at=0.5")
    proc = run(script)
    assert proc.returncode == 0, proc.stderr
    assert "curl exit 18" in proc.stderr and "1 downloaded" in proc.stderr
    half = int(len(body) * 0.5)
    assert gets(sandbox, task) == [(None, 200), (f"bytes={half}-", 206)]
    assert_complete(sandbox, task)


def test_incomplete_file_never_stands_under_its_final_name(sandbox, tmp_path: Path) -> None:
    task, body, script = one_file(sandbox, tmp_path)
    sandbox.faults = Faults.parse("download.drop_rate=1,download.drop_at=0.5")
    proc = run(script, MASTPIPE_CURL_ATTEMPTS="3")
    assert proc.returncode == 1
    assert "after 3 attempt(s)" in proc.stderr and "0 downloaded, 0 already complete, 1 failed" in proc.stderr
    assert not task.dest.exists()
    part = part_path(task.dest).read_bytes()
    assert 0 < len(part) < len(body) and body.startswith(part)  # every attempt resumed, none appended twice
    ranges = [r for r, _ in gets(sandbox, task)]
    assert len(ranges) == 3 and ranges[0] is None and all(r.startswith("bytes=") for r in ranges[1:])

    sandbox.faults = Faults.parse("")  # the next run finishes the temporary
    sandbox.log.clear()
    proc = run(script)
    assert proc.returncode == 0, proc.stderr
    assert gets(sandbox, task) == [(f"bytes={len(part)}-", 206)]
    assert_complete(sandbox, task)


@pytest.mark.parametrize(("spec", "requests", "ok"), [
    ("download.missing=*", 1, False),  # permanent: asking again cannot help
    ("download.fail_first=2:503", 3, True),  # transient: retried
    ("download.fail_first=1:429", 2, True),
])
def test_http_errors_retried_only_when_transient(sandbox, tmp_path: Path, spec, requests, ok) -> None:
    task, _, script = one_file(sandbox, tmp_path)
    sandbox.faults = Faults.parse(spec)
    proc = run(script)
    assert (proc.returncode == 0) is ok, proc.stderr
    assert len(gets(sandbox, task)) == requests
    if ok:
        assert_complete(sandbox, task)
    else:
        assert "HTTP 404" in proc.stderr and "after 1 attempt(s)" in proc.stderr
        assert not task.dest.exists() and not part_path(task.dest).exists()


def test_overlong_temporary_restarts(sandbox, tmp_path: Path) -> None:
    task, body, script = one_file(sandbox, tmp_path)
    part = part_path(task.dest)
    part.parent.mkdir(parents=True)
    part.write_bytes(body + b"trailing junk")
    proc = run(script)
    assert proc.returncode == 0, proc.stderr
    assert gets(sandbox, task) == [(None, 200)]  # deleted first, never resumed past its end
    assert_complete(sandbox, task)


def test_complete_temporary_is_renamed_without_a_request(sandbox, tmp_path: Path) -> None:
    task, body, script = one_file(sandbox, tmp_path)
    part = part_path(task.dest)
    part.parent.mkdir(parents=True)
    part.write_bytes(body)  # a run stopped between the last byte and the rename
    proc = run(script)
    assert proc.returncode == 0 and "1 downloaded" in proc.stderr, proc.stderr
    assert gets(sandbox, task) == []
    assert_complete(sandbox, task)


def test_download_mode_restarts_a_curl_temporary(sandbox, tmp_path: Path) -> None:
    # Both modes use .NAME.part: a curl-made one (no metadata) must never be trusted blindly.
    task, body, _ = one_file(sandbox, tmp_path)
    part = part_path(task.dest)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 1000)
    [result] = Transfer(policy=FAST).run([task])
    assert result.status == "fetched", result.error
    assert gets(sandbox, task) == [(None, 200)]
    assert_complete(sandbox, task)


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
    # run it: curl fails to connect (retried, then given up), nothing is executed from the names
    script = tmp_path / "s.sh"
    script.write_text(text)
    result = run(script)
    assert result.returncode == 1 and not (tmp_path / "pwned").exists()
    assert not Path("pwned").exists()
    assert "curl exit 7" in result.stderr and not evil.exists()


@pytest.mark.parametrize("delta", [+1, -1])
def test_size_other_than_listed_never_reaches_the_final_name(sandbox, tmp_path: Path, delta) -> None:
    # curl succeeds, but the body is not the size the product list gives: not complete, not kept
    row = public_rows(sandbox, 1)[0]
    task = task_for(sandbox, row, tmp_path, size=row["size"] + delta)
    script = write_curl_script([task], tmp_path / "fetch.sh")
    proc = run(script, MASTPIPE_CURL_ATTEMPTS="2")
    assert proc.returncode == 1
    assert f"of {task.size} bytes" in proc.stderr or "server could not resume" in proc.stderr
    assert not task.dest.exists()
    assert len(gets(sandbox, task)) == 2


def test_link_planted_as_temporary_is_not_written_through(sandbox, tmp_path: Path) -> None:
    task, _, script = one_file(sandbox, tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    part_path(task.dest).parent.mkdir(parents=True)
    part_path(task.dest).symlink_to(victim)
    proc = run(script)
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "keep me"
    assert_complete(sandbox, task)
