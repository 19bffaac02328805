"""Security scenarios: exclusive access, token confinement to its host, token never in any output."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import pytest
from _transfer_support import (
    EXCLUSIVE_OBSID,
    FAST,
    assert_complete,
    downloads,
    public_rows,
    task_for,
)

from mastpipe.auth import RedactingFilter, check_token
from mastpipe.errors import AuthError
from mastpipe.stages.retrieve.ledger import Ledger
from mastpipe.sandbox import Faults
from mastpipe.stages.retrieve.engine import Transfer

TOKEN = "tok-" + secrets.token_hex(16)


def host_of(url: str) -> str:
    return url.split("//", 1)[1]


def exclusive_rows(sb, n: int) -> list[dict]:
    rows = [r for r in sb.catalog.products(EXCLUSIVE_OBSID) if r["dataRights"] == "EXCLUSIVE_ACCESS"]
    assert len(rows) >= n
    return rows[:n]


def assert_clean(*texts: object, root: Path | None = None) -> None:
    """The token appears in none of the texts, and in no file under ``root``."""
    for text in texts:
        assert TOKEN not in str(text)
    if root is not None:
        for path in root.rglob("*"):
            if path.is_file():
                assert TOKEN.encode() not in path.read_bytes(), path


def test_exclusive_without_token_fail_after_one_request(sandbox, tmp_path: Path) -> None:
    public, secret = public_rows(sandbox, 3), exclusive_rows(sandbox, 2)
    tasks = [task_for(sandbox, r, tmp_path) for r in public + secret]
    results = Transfer(policy=FAST).run(tasks)
    assert [r.status for r in results] == ["fetched"] * 3 + ["failed"] * 2
    for result in results[3:]:
        assert "401" in result.error and "no MAST token" in result.error
        assert result.http_requests == 1
        assert len(downloads(sandbox, result.key)) == 1


def test_token_goes_to_its_host_only_and_never_leaks(sandbox_factory, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # urllib3 and mastpipe debug output included
    sb = sandbox_factory(tokens={TOKEN: "A. User"})
    rows = public_rows(sb, 2) + exclusive_rows(sb, 2)
    tasks = [task_for(sb, r, tmp_path / "dest") for r in rows]
    ledger = Ledger(tmp_path / "state")
    results = Transfer(policy=FAST, token=TOKEN, token_hosts={host_of(sb.url)}, ledger=ledger).run(tasks)
    assert all(r.status == "fetched" for r in results), [r.error for r in results]
    for task in tasks:
        assert_complete(sb, task)
    assert all(r.has_token for r in downloads(sb))
    ledger.close()
    assert_clean(results, caplog.text, *[r.getMessage() for r in caplog.records], root=tmp_path)


def test_token_not_sent_to_other_hosts(sandbox_factory, tmp_path: Path) -> None:
    sb = sandbox_factory(tokens={TOKEN: "A. User"})
    rows = public_rows(sb, 1) + exclusive_rows(sb, 1)
    # the token is configured for mast.stsci.edu (the default), not for this sandbox
    results = Transfer(policy=FAST, token=TOKEN).run([task_for(sb, r, tmp_path) for r in rows])
    assert [r.status for r in results] == ["fetched", "failed"]
    assert "401" in results[1].error and "does not grant" in results[1].error
    assert not any(r.has_token for r in sb.log.records())
    assert_clean(results)


def test_token_dropped_after_redirect_to_another_host(sandbox_factory, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    other = sandbox_factory(tokens={TOKEN: "A. User"}, host="localhost")
    port = other.url.rsplit(":", 1)[1]
    first = sandbox_factory(tokens={TOKEN: "A. User"},
                            faults=f"download.redirect=http://localhost:{port}")
    rows = public_rows(first, 2) + exclusive_rows(first, 1)
    tasks = [task_for(first, r, tmp_path) for r in rows]
    results = Transfer(policy=FAST, token=TOKEN, token_hosts={host_of(first.url)}).run(tasks)
    # the first hop carried the token; the hop to localhost did not
    assert [r.status for r in downloads(first)] == [302] * 3
    assert all(r.has_token for r in downloads(first))
    served = downloads(other)
    assert len(served) == 3 and not any(r.has_token for r in served)
    assert [r.status for r in results] == ["fetched", "fetched", "failed"]
    assert results[0].http_requests == 2  # redirect hop counted
    assert "401" in results[2].error
    for task in tasks[:2]:
        assert task.dest.read_bytes() == first.catalog.body(task.key)
    assert_clean(results, caplog.text, root=tmp_path)


def test_token_dropped_when_port_changes_even_if_trusted(sandbox_factory, tmp_path: Path) -> None:
    sb = sandbox_factory(tokens={TOKEN: "A. User"})
    # The redirect knob cannot point a sandbox at itself (it would loop), so: two trusted hosts.
    front = sandbox_factory(tokens={TOKEN: "A. User"}, faults=f"download.redirect={sb.url}")
    [row] = exclusive_rows(front, 1)
    results = Transfer(policy=FAST, token=TOKEN,
                       token_hosts={host_of(front.url), host_of(sb.url)}).run(
        [task_for(front, row, tmp_path)])
    # different host:port, so the token is dropped even though both are trusted
    assert results[0].status == "failed"
    assert not any(r.has_token for r in downloads(sb))


def test_check_token_against_whoami(sandbox_factory) -> None:
    sb = sandbox_factory(tokens={TOKEN: "A. User"})
    info = check_token(sb.url, TOKEN)
    assert info["attrib"]["display_name"] == "A. User" and "token" not in info
    with pytest.raises(AuthError) as bad:
        check_token(sb.url, TOKEN + "-wrong")
    assert TOKEN not in str(bad.value) and "not accepted" in str(bad.value)
    sb.faults = Faults.parse("whoami.fail_first=5:500")
    with pytest.raises(AuthError) as broken:
        check_token(sb.url, TOKEN)
    assert TOKEN not in str(broken.value)


def test_redacting_filter_on_transfer_logs(sandbox_factory, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    # Belt and braces: even a record that somehow carried the token would be cleaned.
    caplog.handler.addFilter(RedactingFilter(TOKEN))
    try:
        logging.getLogger("mastpipe.stages.retrieve.engine").warning("leak %s", TOKEN)
    finally:
        caplog.handler.filters.clear()
    assert TOKEN not in caplog.text


def test_repr_hides_token() -> None:
    assert TOKEN not in repr(Transfer(token=TOKEN)) and "***" in repr(Transfer(token=TOKEN))


def test_planted_symlinks_at_temporary_names_are_not_followed(sandbox, tmp_path: Path) -> None:
    import os

    from mastpipe.stages.retrieve.engine import meta_path, part_path
    row = public_rows(sandbox, 1)[0]
    task = task_for(sandbox, row, tmp_path / "dest")
    task.dest.parent.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    os.symlink(victim, part_path(task.dest))
    os.symlink(victim, meta_path(task.dest).with_name(meta_path(task.dest).name + ".tmp"))
    [result] = Transfer(policy=FAST).run([task])
    assert victim.read_bytes() == b"keep me"  # never written through a link
    assert result.status == "fetched", result.error
    assert task.dest.read_bytes() == sandbox.catalog.body(task.key) and not task.dest.is_symlink()


@pytest.mark.parametrize("bad", ["zq9 x7", "zq9\nX-Evil: 1", "zq9;other=1", "zq9ö"])
def test_token_that_cannot_be_a_cookie_is_refused_without_echo(bad: str) -> None:
    with pytest.raises(AuthError) as info:
        Transfer(token=bad)
    assert "zq9" not in str(info.value)
