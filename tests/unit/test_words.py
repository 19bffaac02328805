"""One word per concept (issue #12): the vocabularies in mastpipe.typing agree with each other."""

from __future__ import annotations

from typing import get_args

from mastpipe.stages.retrieve.ledger import DONE
from mastpipe.typing import EventKind, FileStatus, StageState


def test_a_files_last_event_is_named_by_its_status() -> None:
    # "fetched" is the status, the event and the report's retrieve.fetched: one word
    assert set(get_args(FileStatus)) <= set(get_args(EventKind))


def test_done_means_only_a_complete_ledger_row() -> None:
    assert DONE == "done"
    assert "done" not in get_args(EventKind), "a file just fetched is 'fetched'"
    assert "done" not in get_args(StageState), "a checkpoint a run would reuse is 'current'"
    assert get_args(StageState) == ("current", "stale", "missing")
