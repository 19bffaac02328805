"""The one atomic-write helper and the state directory's names (mastpipe.atomic, StateDir)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mastpipe.atomic import atomic_path, atomic_write_bytes, owner_of, sweep, temporary_for
from mastpipe.state import StateDir
from mastpipe.stages.retrieve.temporaries import stale_temporaries


def test_temporary_beside_target_names_pid_and_random(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    first, second = temporary_for(target), temporary_for(target)
    assert first.parent == tmp_path and first != second
    assert first.name.startswith(f".report.json.{os.getpid()}.") and first.name.endswith(".tmp")
    assert owner_of(first.name) == "report.json"
    assert owner_of("report.json") is None and owner_of(".report.json.tmp") is None


def test_write_replaces_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "x.txt"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new", mode=0o755)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert [p.name for p in target.parent.iterdir()] == ["x.txt"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path: Path) -> None:
    target = tmp_path / "x.txt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full, say")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_a_planted_symlink_is_not_written_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    planted = tmp_path / ".x.txt.1.abcdef.tmp"
    planted.symlink_to(victim)
    monkeypatch.setattr("mastpipe.atomic.temporary_for", lambda target: planted)
    with pytest.raises(FileExistsError):
        atomic_write_bytes(tmp_path / "x.txt", b"attack")
    assert victim.read_bytes() == b"precious"


def test_sweep_removes_temporaries_of_dead_processes_only(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    left = tmp_path / f".query.fits.{dead_pid}.0a0b0c.tmp"
    mine = temporary_for(tmp_path / "query.json")
    old_mine = temporary_for(tmp_path / "filter.json")
    other = tmp_path / ".notes.tmp"  # not ours: never touched
    for path in (left, mine, old_mine, other):
        path.write_bytes(b"")
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(old_mine, (day_ago, day_ago))
    removed = sweep(tmp_path)
    assert set(removed) == {left, old_mine}
    assert mine.exists() and other.exists() and not left.exists()


def test_state_dir_names_every_file(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    assert state.lock == tmp_path / "lock"
    assert state.sections == tmp_path / "sections.json"
    assert (state.table("query"), state.sidecar("query")) == (tmp_path / "query.fits", tmp_path / "query.json")
    assert state.parts_for("0123456789abcdef0123") == tmp_path / "products.parts" / "0123456789abcdef"
    assert state.ledger == tmp_path / "ledger.sqlite"
    assert state.report("r1") == tmp_path / "reports" / "r1.json"
    assert state.last_report == tmp_path / "last-report.json"
    assert state.history == tmp_path / "history.jsonl"
    assert os.fspath(state) == os.fspath(tmp_path)


def test_state_dir_docstring_lists_every_name() -> None:
    import mastpipe.state

    layout = mastpipe.state.__doc__ or ""
    for name in (StateDir.LOCK, StateDir.SECTIONS, StateDir.PARTS, StateDir.LEDGER, StateDir.REPORTS,
                 StateDir.LAST_REPORT, StateDir.HISTORY, "query.fits", "filter.json"):
        assert name in layout, name


def test_state_dir_sweep_covers_reports(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.reports.mkdir()
    left = state.reports / ".r1.json.999999999.abcdef.tmp"  # no such pid
    left.write_bytes(b"{")
    assert state.sweep() == [left]


def test_the_download_sweep_knows_the_metadata_temporary(tmp_path: Path) -> None:
    wanted, unwanted = tmp_path / "a.fits", tmp_path / "b.fits"
    for dest in (wanted, unwanted):
        temporary_for(dest.with_name(f".{dest.name}.part.json")).write_bytes(b"{}")
    stale = stale_temporaries([tmp_path], keep=[wanted])
    assert len(stale) == 1 and stale[0].name.startswith("..b.fits.part.json.")


def test_state_dir_keeps_only_the_current_batches(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    old = state.parts_for("a" * 64)
    old.mkdir(parents=True)
    (old / "batch-0.fits").write_bytes(b"")
    (state.parts / "stray").write_bytes(b"")
    here = state.keep_parts("b" * 64)
    assert here == state.parts / ("b" * 16) and not old.exists() and not (state.parts / "stray").exists()
    here.mkdir()
    assert state.keep_parts("b" * 64) == here and here.is_dir()
    state.clear_parts()
    assert not state.parts.exists()
