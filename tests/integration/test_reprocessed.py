"""MAST reprocesses a file under the same name: a rerun notices it from the product list (a new
prvversion, even at the same size) or, with --revalidate, from the server's validators, and
fetches the new version while the old one stays until the new one is verified."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from _examples import JWST_1073, example_recipe

import mastpipe
from mastpipe.stages.retrieve.ledger import Ledger


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    return example_recipe(tmp_path, filename=JWST_1073)


def _gets(sandbox) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.uri for r in sandbox.log.records() if r.endpoint == "download" and r.method == "GET"]


def _heads(sandbox) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.uri for r in sandbox.log.records() if r.endpoint == "download" and r.method == "HEAD"]


def _path(outcome, uri: str) -> Path:  # type: ignore[no-untyped-def]
    (result,) = [r for r in outcome.result.retrieve.results if r.key == uri]
    return Path(result.dest)


def test_same_size_reprocessing_is_fetched_again_and_reported(sandbox, recipe: Path) -> None:
    first = mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    assert first.exit_code == 0
    uri = min(r.key for r in first.result.retrieve.results if "_gs-" not in r.key)
    old = _path(first, uri).read_bytes()
    info = sandbox.catalog.reprocess(uri, same_size=True)
    assert info.size == len(old)
    sandbox.log.clear()

    second = mastpipe.run(recipe, mast_url=sandbox.url, refresh=True, environ={})
    assert second.exit_code == 0
    assert _gets(sandbox) == [uri], "only the reprocessed file is fetched again"
    new = _path(second, uri).read_bytes()
    assert len(new) == len(old) and new != old
    assert hashlib.sha256(new).hexdigest() == sandbox.catalog.sha256(uri)
    (item,) = second.report["reprocessed"]["items"]
    assert item["dataURI"] == uri and item["status"] == "fetched" and "MAST reprocessed it (prvversion=" in item["why"]
    assert second.report["changes"]["products"]["changed"]["items"] == [uri]
    assert "reprocessed by MAST: 1" in second.summary
    with Ledger(recipe.parent / ".mastpipe" / "jwst-1073-nircam-uncal" / "ledger.sqlite") as ledger:
        assert ledger.get(uri).version.endswith("+r1")

    sandbox.log.clear()
    third = mastpipe.run(recipe, mast_url=sandbox.url, refresh=True, environ={})
    assert third.exit_code == 0 and _gets(sandbox) == [] and third.report["reprocessed"]["count"] == 0


def test_the_old_version_stays_until_the_new_one_is_verified(sandbox, recipe: Path) -> None:
    from mastpipe.sandbox import Faults

    first = mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    uri = min(r.key for r in first.result.retrieve.results if "_gs-" not in r.key)
    old = _path(first, uri).read_bytes()
    sandbox.catalog.reprocess(uri, same_size=True)
    sandbox.faults = Faults.parse("download.corrupt_rate=1")  # every body arrives damaged
    example_recipe(recipe.parent, filename=recipe.name, mast={"retries": 0})
    failed = mastpipe.run(recipe, mast_url=sandbox.url, refresh=True, environ={})
    assert failed.exit_code == 1 and failed.report["reprocessed"]["items"][0]["status"] == "failed"
    assert _path(first, uri).read_bytes() == old, "the old version is kept while the new one cannot be verified"
    sandbox.faults = Faults.parse("")
    fixed = mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    assert fixed.exit_code == 0
    assert hashlib.sha256(_path(fixed, uri).read_bytes()).hexdigest() == sandbox.catalog.sha256(uri)


def test_overwrite_never_keeps_the_old_version_and_says_so(sandbox, recipe: Path) -> None:
    example_recipe(recipe.parent, filename=recipe.name, retrieve={"overwrite": "never"})
    first = mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    uri = min(r.key for r in first.result.retrieve.results)
    old = _path(first, uri).read_bytes()
    sandbox.catalog.touch(uri)  # new version, new size
    sandbox.log.clear()
    second = mastpipe.run(recipe, mast_url=sandbox.url, refresh=True, environ={})
    assert second.exit_code == 1 and _gets(sandbox) == []
    assert _path(second, uri).read_bytes() == old
    (item,) = second.report["reprocessed"]["items"]
    assert item["status"] == "failed" and "overwrite is 'never'" in item["error"]


def test_silent_reprocessing_needs_revalidate(sandbox, recipe: Path) -> None:
    first = mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    files = len(first.result.retrieve.results)
    uri = max(r.key for r in first.result.retrieve.results)
    sandbox.catalog.reprocess(uri, same_size=True, silent=True)
    sandbox.log.clear()
    plain = mastpipe.run(recipe, mast_url=sandbox.url, refresh=True, environ={})
    assert plain.report["reprocessed"]["count"] == 0 and _gets(sandbox) == [] and _heads(sandbox) == []

    sandbox.log.clear()
    checked = mastpipe.run(recipe, mast_url=sandbox.url, revalidate=True, environ={})
    assert sorted(_heads(sandbox)) == sorted(r.key for r in first.result.retrieve.results)
    assert len(_heads(sandbox)) == files and _gets(sandbox) == [uri]
    assert sandbox.log.peak_open <= 4 + 1, "HEAD requests stay within retrieve.in_flight"
    (item,) = checked.report["reprocessed"]["items"]
    assert "the server's copy changed (ETag" in item["why"] and item["status"] == "fetched"
    assert hashlib.sha256(_path(checked, uri).read_bytes()).hexdigest() == sandbox.catalog.sha256(uri)


def test_an_old_ledger_gains_the_version_column(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE files (key TEXT PRIMARY KEY, dest TEXT NOT NULL, status TEXT NOT NULL, size INTEGER, "
               "sha256 TEXT, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, etag TEXT, last_modified TEXT, "
               "started REAL, finished REAL)")
    db.execute("INSERT INTO files (key, dest, status, size) VALUES ('mast:a', '/x/a', 'done', 5)")
    db.commit()
    db.close()
    with Ledger(path) as ledger:
        assert ledger.get("mast:a").version is None and ledger.get("mast:a").size == 5
        ledger.set_versions({"mast:a": "prvversion=1"})
        assert ledger.get("mast:a").version == "prvversion=1"
    with Ledger(path) as ledger:  # a second open does not add it twice
        assert ledger.rows()["mast:a"].version == "prvversion=1"
