"""`status` in download mode remembers what it found of each file (files.npz) and re-checks it
against the disk on every call: whatever changed behind the ledger's back shows exactly as a
fresh judgement shows it, and the remembered answer is used only while it still holds."""

from __future__ import annotations

import os
import time
from pathlib import Path

from _examples import example_text

import mastpipe
from mastpipe.runner import Pipeline

RECIPE = example_text(name="status-recheck", description=None, mast={"timeout": 5, "retries": 1},
                      filter={"guide_stars": "omit"}, retrieve={"destination": "data", "layout": None})
COUNTS = ("mode", "files", "present", "to_fetch", "bytes_to_fetch", "partial", "failed", "blocked", "ledger")


def _recipe(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    return path


def _age(tmp_path: Path) -> None:
    """Move the change times of the destination's directories and of the ledger a minute back,
    as if the run had ended a minute ago: a directory changed in the two seconds before status
    judged it is not trusted to have been seen whole, so nothing would be remembered."""
    paths = [tmp_path / "state" / name for name in ("ledger.sqlite", "ledger.sqlite-wal")]
    paths += [Path(root) for root, _, _ in os.walk(tmp_path / "data")]
    past = time.time_ns() - 60 * 10**9
    for path in paths:
        if path.exists():
            os.utime(path, ns=(past, past))


def _status(tmp_path: Path, url: str):
    return mastpipe.status(_recipe(tmp_path), mast_url=url, state_dir=tmp_path / "state").retrieve


def _fresh(tmp_path: Path, url: str):
    """What the files' outlook is, judged afresh from the filter checkpoint, the ledger and the disk."""
    pipeline = Pipeline(_recipe(tmp_path), mast_url=url, state_dir=tmp_path / "state", environ={})
    table = pipeline.checkpoints.load("filter", pipeline.checkpoints.sidecar("filter"))
    return pipeline.retrieve_outlook(table)


def _same(found, fresh) -> None:
    assert {name: getattr(found, name) for name in COUNTS} == {name: getattr(fresh, name) for name in COUNTS}
    assert dict(found.remaining) == dict(fresh.remaining)


def test_a_remembered_download_outlook_still_sees_every_change_on_disk(sandbox, tmp_path):
    outcome = mastpipe.run(_recipe(tmp_path), mast_url=sandbox.url, state_dir=tmp_path / "state")
    assert outcome.exit_code == 0
    remembered = tmp_path / "state" / "files.npz"
    _age(tmp_path)
    first = _status(tmp_path, sandbox.url)
    assert remembered.is_file() and first.to_fetch == 0 and first.present == first.files >= 4
    written = remembered.stat().st_ino
    again = _status(tmp_path, sandbox.url)
    assert remembered.stat().st_ino == written  # answered from what was remembered
    _same(again, _fresh(tmp_path, sandbox.url))

    paths = sorted((tmp_path / "data").rglob("*.fits"))
    paths[0].write_bytes(paths[0].read_bytes()[:100])  # cut short in place: no directory changes
    cut = _status(tmp_path, sandbox.url)
    assert (cut.present, cut.to_fetch) == (first.files - 1, 1)
    _same(cut, _fresh(tmp_path, sandbox.url))
    _same(_status(tmp_path, sandbox.url), _fresh(tmp_path, sandbox.url))  # judged one by one since

    paths[1].unlink()  # gone
    (paths[2].parent / f".{paths[2].name}.part").write_bytes(b"x")  # a temporary beside a done file
    paths[3].write_bytes(b"not the product")  # another file under a done file's name
    changed = _status(tmp_path, sandbox.url)
    assert changed.to_fetch == 3
    _same(changed, _fresh(tmp_path, sandbox.url))
    _age(tmp_path)
    _same(_status(tmp_path, sandbox.url), _fresh(tmp_path, sandbox.url))
    _same(_status(tmp_path, sandbox.url), _fresh(tmp_path, sandbox.url))
    _plan_as_afresh(tmp_path, sandbox.url)

    # the next run fetches what status said, and writes the ledger: status judges afresh
    sandbox.log.clear()
    rerun = mastpipe.run(_recipe(tmp_path), mast_url=sandbox.url, state_dir=tmp_path / "state")
    assert sorted(r.key for r in rerun.result.retrieve.results if r.status == "fetched") == sorted(changed.remaining)
    done = _status(tmp_path, sandbox.url)
    assert (done.present, done.to_fetch) == (done.files, 0)
    plan = mastpipe.plan(_recipe(tmp_path), mast_url=sandbox.url, state_dir=tmp_path / "state")
    assert plan.to_fetch == 0


def test_nothing_downloaded_yet_is_remembered_until_a_file_appears(sandbox, tmp_path):
    mastpipe.run(_recipe(tmp_path), mast_url=sandbox.url, state_dir=tmp_path / "state", until="filter")
    remembered = tmp_path / "state" / "files.npz"
    left = remembered.stat().st_ino  # the run left it: nothing on disk, every file found by columns
    first = _status(tmp_path, sandbox.url)
    assert remembered.stat().st_ino == left
    assert not first.ledger and first.present == 0 and first.to_fetch == first.files > 0
    _same(first, _fresh(tmp_path, sandbox.url))
    remembered.unlink()
    again = _status(tmp_path, sandbox.url)
    assert remembered.is_file()
    _same(again, first)
    plan = _plan_as_afresh(tmp_path, sandbox.url)
    assert plan.to_fetch == first.files and plan.bytes_to_fetch == first.bytes_to_fetch

    # one product's file put in place by hand: adopted by a run, so present now
    from mastpipe.stages.retrieve.stage import plan_files

    pipeline = Pipeline(_recipe(tmp_path), mast_url=sandbox.url, state_dir=tmp_path / "state", environ={})
    table = pipeline.checkpoints.load("filter", pipeline.checkpoints.sidecar("filter"))
    task = plan_files(table, tmp_path / "data", pipeline.recipe.retrieve.layout, sandbox.url)[0][0]
    task.dest.parent.mkdir(parents=True)
    task.dest.write_bytes(sandbox.catalog.body(task.key))
    found = _status(tmp_path, sandbox.url)
    _same(found, _fresh(tmp_path, sandbox.url))
    assert (found.present, found.to_fetch) == (1, first.files - 1)


def _plan_as_afresh(tmp_path: Path, url: str):
    """plan answered from what status remembered (no table read, files.npz left as it was) is
    the plan judged afresh from the tables; the former."""
    remembered = tmp_path / "state" / "files.npz"
    written = remembered.stat().st_ino
    quick = mastpipe.plan(_recipe(tmp_path), mast_url=url, state_dir=tmp_path / "state")
    assert remembered.stat().st_ino == written
    remembered.unlink()
    fresh = mastpipe.plan(_recipe(tmp_path), mast_url=url, state_dir=tmp_path / "state")
    assert quick.to_dict() | {"stages": None} == fresh.to_dict() | {"stages": None}
    assert [(s.stage, s.action, s.rows_out) for s in quick.stages] == [(s.stage, s.action, s.rows_out)
                                                                       for s in fresh.stages]
    assert fresh.breakdown and quick.outlook.remaining == fresh.outlook.remaining
    return quick


def test_a_download_run_leaves_its_files_judged_even_in_directories_it_just_changed(sandbox, tmp_path):
    import sqlite3

    from mastpipe.state import RunLock

    assert mastpipe.run(_recipe(tmp_path), mast_url=sandbox.url, state_dir=tmp_path / "state").exit_code == 0
    remembered = tmp_path / "state" / "files.npz"
    assert remembered.is_file()  # judged at the run's end, in directories changed a moment ago
    first = _status(tmp_path, sandbox.url)
    _same(first, _fresh(tmp_path, sandbox.url))
    assert first.present == first.files >= 4

    # two files and their ledger rows gone: nothing anywhere for them, in directories just changed
    paths = sorted((tmp_path / "data").rglob("*.fits"))
    bodies = {path: path.read_bytes() for path in paths[:2]}
    for path in bodies:
        path.unlink()
    with sqlite3.connect(tmp_path / "state" / "ledger.sqlite") as db:
        db.executemany("DELETE FROM files WHERE dest = ?", [(str(path),) for path in bodies])
    db.close()
    pipeline = Pipeline(_recipe(tmp_path), mast_url=sandbox.url, state_dir=tmp_path / "state", environ={})
    with RunLock(pipeline.state):  # as a download run's end
        pipeline.retrieve_status(locked=True)
    left = remembered.stat().st_ino
    found = _status(tmp_path, sandbox.url)
    assert remembered.stat().st_ino == left  # answered from what was remembered
    _same(found, _fresh(tmp_path, sandbox.url))
    assert (found.present, found.to_fetch) == (first.files - 2, 2)

    # a file put back in the same clock tick as the change before: its directory's time unchanged
    parent = paths[0].parent
    before = parent.stat()
    paths[0].write_bytes(bodies[paths[0]])
    os.utime(parent, ns=(before.st_atime_ns, before.st_mtime_ns))
    back = _status(tmp_path, sandbox.url)
    _same(back, _fresh(tmp_path, sandbox.url))
    assert (back.present, back.to_fetch) == (first.files - 1, 1)

    # once the directories have settled, their change times alone tell: remembered without names
    with RunLock(pipeline.state):
        pipeline.retrieve_status(locked=True)
    time.sleep(2.2)
    settled = _status(tmp_path, sandbox.url)
    rewritten = remembered.stat().st_ino
    _same(settled, _fresh(tmp_path, sandbox.url))
    _same(_status(tmp_path, sandbox.url), settled)
    assert remembered.stat().st_ino == rewritten


def test_a_rerun_that_changes_nothing_puts_back_what_status_found_and_any_other_judges_afresh(sandbox, tmp_path):
    def run():
        outcome = mastpipe.run(_recipe(tmp_path), mast_url=sandbox.url, state_dir=tmp_path / "state")
        assert outcome.exit_code == 0
        return outcome.report["retrieve"]["fetched"]["files"]

    assert run() >= 4
    _age(tmp_path)  # as a nightly rerun finds the state: the last run's writes long settled
    first = _status(tmp_path, sandbox.url)
    remembered, aside = tmp_path / "state" / "files.npz", tmp_path / "state" / "files-before-run.npz"
    left = remembered.stat().st_ino

    assert run() == 0
    assert remembered.stat().st_ino == left and not aside.exists()  # put back: not judged again
    _same(_status(tmp_path, sandbox.url), _fresh(tmp_path, sandbox.url))

    # cut short behind the ledger's back: the rerun fetches it again, so its end judges afresh
    path = sorted((tmp_path / "data").rglob("*.fits"))[0]
    path.write_bytes(path.read_bytes()[:100])
    assert run() == 1
    assert remembered.is_file() and remembered.stat().st_ino != left and not aside.exists()
    again = _status(tmp_path, sandbox.url)
    _same(again, _fresh(tmp_path, sandbox.url))
    assert again.present == again.files == first.files

    # a run killed after setting it aside leaves it: the next run discards it, never puts it back
    _age(tmp_path)
    _status(tmp_path, sandbox.url)
    remembered.rename(aside)
    stale = aside.stat().st_ino
    assert run() == 0
    assert not aside.exists() and remembered.stat().st_ino != stale
    _same(_status(tmp_path, sandbox.url), _fresh(tmp_path, sandbox.url))
