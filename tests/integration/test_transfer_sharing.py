"""Two runs with their own state directories but one destination, and leftovers beside done files.

Two recipes in one folder both default to ``destination: data``; a scheduled run may overlap a
manual one. Each file's temporaries are guarded by a lock (``.<name>.part.lock``), so neither
run sweeps away, or writes into, a temporary the other is filling.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from _examples import example_recipe
from _transfer_support import FAST, assert_complete, downloads, public_rows, task_for

from mastpipe.stages.retrieve.ledger import Ledger
from mastpipe.sandbox import Faults
from mastpipe.stages.retrieve.engine import FileResult, FileTask, Transfer, meta_path, part_path


def _fetch_in_background(task: FileTask, state: Path) -> tuple[threading.Thread, dict[str, FileResult]]:
    """Start run A on ``task`` and return once its temporary holds some bytes."""
    out: dict[str, FileResult] = {}

    def run() -> None:
        with Ledger(state) as ledger:
            out["a"] = Transfer(policy=FAST, ledger=ledger).run([task])[0]

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while not (part_path(task.dest).exists() and part_path(task.dest).stat().st_size > 0):
        assert time.monotonic() < deadline and thread.is_alive(), "run A never started writing"
        time.sleep(0.01)
    return thread, out


def test_a_second_run_does_not_sweep_away_a_temporary_being_written(sandbox, tmp_path: Path) -> None:
    rows = [sandbox.catalog.add_product("87600001", productFilename=f"shared_{i}_cal.fits", size=300_000)
            for i in range(2)]
    a, b = (task_for(sandbox, r, tmp_path) for r in rows)
    assert a.dest.parent == b.dest.parent  # one obs_id directory, two recipes
    sandbox.faults = Faults.parse("download.bandwidth=300000")  # about a second per file
    thread, out = _fetch_in_background(a, tmp_path / "stateA")
    with Ledger(tmp_path / "stateB") as ledger:
        [other] = Transfer(policy=FAST, ledger=ledger).run([b])  # plans (and sweeps) b's directory
    thread.join()
    assert (out["a"].status, other.status) == ("fetched", "fetched"), (out["a"].error, other.error)
    assert_complete(sandbox, a)
    assert_complete(sandbox, b)


def test_one_file_wanted_by_two_runs_at_once_is_written_by_one(sandbox, tmp_path: Path) -> None:
    row = sandbox.catalog.add_product("87600001", productFilename="both_cal.fits", size=300_000)
    task = task_for(sandbox, row, tmp_path)
    # About three seconds, so run B surely asks while run A still writes, even on a slow machine.
    sandbox.faults = Faults.parse("download.bandwidth=100000")
    thread, out = _fetch_in_background(task, tmp_path / "stateA")
    with Ledger(tmp_path / "stateB") as ledger:
        [second] = Transfer(policy=FAST, ledger=ledger).run([task])  # waits for A, then adopts
        thread.join()
        assert second.status == "skipped", second.error
        assert second.http_requests == 0
        assert out["a"].status == "fetched"
        assert len(downloads(sandbox, task.key)) == 1
        assert_complete(sandbox, task)
        sandbox.log.clear()
        # Run B again, once A is done: the file is there and verified, not fetched again.
        [again] = Transfer(policy=FAST, ledger=ledger).run([task])
    assert again.status == "skipped" and downloads(sandbox) == []
    assert again.sha256 == out["a"].sha256


def test_leftovers_beside_a_done_file_are_removed(sandbox, tmp_path: Path) -> None:
    row = public_rows(sandbox, 1)[0]
    task = task_for(sandbox, row, tmp_path)
    with Ledger(tmp_path / "state") as ledger:
        assert Transfer(policy=FAST, ledger=ledger).run([task])[0].status == "fetched"
        # What a kill between the rename and the metadata's removal leaves, a torn metadata
        # write, and a lock file of a holder that died.
        meta_path(task.dest).write_text(json.dumps({"size": row["size"], "etag": None, "last_modified": None}))
        Path(f"{meta_path(task.dest)}.tmp").write_text("{")
        task.dest.with_name(f".{task.dest.name}.part.lock").write_text("")
        sandbox.log.clear()
        [again] = Transfer(policy=FAST, ledger=ledger).run([task])
    assert again.status == "skipped" and sandbox.log.records() == []
    assert_complete(sandbox, task)


def test_a_changed_layout_moves_files_instead_of_fetching_them(sandbox, tmp_path: Path) -> None:
    rows = public_rows(sandbox, 3)
    nested = [task_for(sandbox, r, tmp_path) for r in rows]
    flat = [task_for(sandbox, r, tmp_path, dest=tmp_path / "flat" / r["productFilename"]) for r in rows]
    with Ledger(tmp_path / "state") as ledger:
        assert {r.status for r in Transfer(policy=FAST, ledger=ledger).run(nested)} == {"fetched"}
        nested[2].dest.write_bytes(b"edited by hand")  # no longer what the ledger recorded
        sandbox.log.clear()
        results = Transfer(policy=FAST, ledger=ledger).run(flat)
        recorded = ledger.rows()
    assert [r.status for r in results] == ["skipped", "skipped", "fetched"]
    assert [g.uri for g in downloads(sandbox)] == [rows[2]["dataURI"]]
    for old, new in zip(nested[:2], flat[:2]):
        assert not old.dest.exists()
        assert_complete(sandbox, new)
        assert recorded[new.key].dest == str(new.dest)
    assert nested[2].dest.read_bytes() == b"edited by hand"  # not ours to move or delete
    assert_complete(sandbox, flat[2])


def test_two_whole_runs_sharing_a_destination_both_succeed_and_fetch_each_file_once(sandbox, tmp_path: Path) -> None:
    import shutil
    from collections import Counter

    import mastpipe

    shared = tmp_path / "shared"
    recipes = []
    for name in ("a", "b"):  # two recipes, two state directories, one destination
        (tmp_path / name).mkdir()
        recipes.append(example_recipe(tmp_path / name, retrieve={"destination": str(shared)}))
    sandbox.faults = Faults.parse("download.bandwidth=60000")  # the runs overlap for seconds
    outcomes: dict[str, object] = {}

    def run(name: str, recipe: Path) -> None:
        outcomes[name] = mastpipe.run(recipe, mast_url=sandbox.url, state_dir=tmp_path / name / "state",
                                      environ={})

    threads = [threading.Thread(target=run, args=(n, r)) for n, r in zip("ab", recipes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert {n: o.exit_code for n, o in outcomes.items()} == {"a": 0, "b": 0}  # type: ignore[attr-defined]
    gets = Counter(r.uri for r in downloads(sandbox))
    assert gets and set(gets.values()) == {1}, f"a file fetched twice: {gets}"
    files = sorted(p for p in shared.rglob("*.fits"))
    assert len(files) == len(gets)
    for path in files:
        uri = next(u for u in gets if u.endswith("/" + path.name))
        assert path.read_bytes() == sandbox.catalog.body(uri)
    shutil.rmtree(shared)
