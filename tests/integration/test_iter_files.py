"""``mastpipe.iter_files``: each verified file as it lands, with a run's guarantees when the
consumer stops early (nothing fetched twice, no stray temporary or lock)."""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import closing
from pathlib import Path

import pytest
from _examples import example_recipe

import mastpipe
from mastpipe.sandbox import Faults
from mastpipe.state import lock_holder


def _recipe(tmp_path: Path, **retrieve: object) -> Path:
    return example_recipe(tmp_path, name="iter-files", mast={"timeout": 10, "retries": 1},
                          retrieve={"destination": "data", "in_flight": 3, **retrieve})


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.name.endswith((".part", ".part.json", ".part.lock"))]


def _downloads(sandbox) -> list:
    return [r for r in sandbox.log.records() if r.endpoint == "download"]


def _check(sandbox, path: Path, product) -> None:
    uri = product["dataURI"]
    assert isinstance(uri, str) and path.is_absolute() and path.name == product["productFilename"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sandbox.catalog.sha256(uri)


def test_break_after_the_first_file_then_a_rerun_finishes_without_fetching_anything_twice(sandbox, tmp_path):
    recipe = _recipe(tmp_path)
    state = tmp_path / "state"
    sandbox.faults = Faults.parse("download.bandwidth=60000")  # ~0.5 s a file: others are in flight
    with closing(mastpipe.iter_files(recipe, mast_url=sandbox.url, state_dir=state, environ={},
                                     progress=False)) as files:
        for path, product in files:
            _check(sandbox, path, product)
            first = product["dataURI"]
            break
    # the consumer stopped: the run stopped too, released its locks, and says so in the history
    assert lock_holder(state) is None
    assert not [p for p in _leftovers(tmp_path / "data") if p.name.endswith(".lock")]
    history = [json.loads(line) for line in (state / "history.jsonl").read_text().splitlines()]
    assert history[-1]["exit_code"] == 130 and "interrupted during retrieve" in history[-1]["error"]
    complete = {p.name for p in (tmp_path / "data").rglob("*_uncal.fits")}
    assert 1 <= len(complete) < 14, "stopped well before the end"
    parts = {p.name[1:-len(".part")]: p.stat().st_size for p in _leftovers(tmp_path / "data")
             if p.name.endswith(".part")}
    partial = {name for name, size in parts.items() if size > 0}

    sandbox.faults = Faults.parse("")
    rerun_started = time.time()  # requests the first run had in flight are logged when they end
    landed = {}
    for path, product in mastpipe.iter_files(recipe, mast_url=sandbox.url, state_dir=state, environ={},
                                             progress=False):
        _check(sandbox, path, product)
        landed[product["dataURI"]] = path
    assert len(landed) == 14 and first in landed
    rerun = [r for r in _downloads(sandbox) if r.time >= rerun_started]
    by_name = {Path(r.uri).name: r for r in rerun}
    assert len(by_name) == len(rerun), [(Path(r.uri).name, r.range, r.status, r.bytes_sent) for r in rerun]
    assert not set(by_name) & complete, "files finished before the stop are not fetched again"
    unfinished = {Path(uri).name: uri for uri in landed if Path(uri).name not in complete}
    assert set(by_name) <= set(unfinished)
    for name in set(unfinished) - set(by_name):  # all its bytes had arrived: only hashed and renamed
        assert parts[name] == sandbox.catalog.file_size(unfinished[name])
    assert partial, "files in flight at the stop keep their temporaries"
    for name in partial & set(by_name):  # what the first run had of a file is kept: the rerun asks for the rest
        assert by_name[name].range and not by_name[name].range.startswith("bytes=0-"), by_name[name]
    assert _leftovers(tmp_path / "data") == [] and lock_holder(state) is None


def test_files_already_present_come_first_and_a_full_iteration_reports_like_run(sandbox, tmp_path):
    recipe = _recipe(tmp_path)
    outcome = mastpipe.run(recipe, mast_url=sandbox.url, environ={}, progress=False)
    sandbox.log.clear()
    again = list(mastpipe.iter_files(recipe, mast_url=sandbox.url, environ={}, progress=False))
    assert {product["dataURI"] for _, product in again} == {r.key for r in outcome.result.retrieve.results}
    assert _downloads(sandbox) == []
    assert all(path.is_file() for path, _ in again)


def test_a_mode_other_than_download_is_refused(sandbox, tmp_path):
    recipe = _recipe(tmp_path, mode="manifest")
    with pytest.raises(mastpipe.MastpipeError, match="iter_files needs retrieve.mode download"):
        next(mastpipe.iter_files(recipe, mast_url=sandbox.url, environ={}))
