"""The recipe's ``retrieve.overwrite`` policy, as the pure decide() applies it."""

from __future__ import annotations

import pytest

from mastpipe.stages.retrieve.decide import Kind, LocalState, RemoteFacts, decide


@pytest.mark.parametrize(("overwrite", "on_disk", "expected"), [
    ("changed", 100, Kind.ADOPT),          # complete file from a manual download: keep it
    ("changed", 60, Kind.FETCH),           # a different file: replace it (atomically)
    ("never", 100, Kind.ADOPT),
    ("never", 60, Kind.KEEP_FOREIGN),      # never clobber what mastpipe did not write
    ("always", 100, Kind.FETCH),           # trust nothing mastpipe did not record
    ("always", 60, Kind.FETCH),
])
def test_foreign_file_under_the_final_name(overwrite: str, on_disk: int, expected: Kind) -> None:
    action = decide(LocalState(final_size=on_disk, overwrite=overwrite), RemoteFacts(size=100))
    assert action.kind is expected
    if expected is Kind.KEEP_FOREIGN:
        assert "60 bytes" in action.reason and "100" in action.reason


@pytest.mark.parametrize("overwrite", ["changed", "never", "always"])
def test_files_recorded_as_done_are_never_refetched_whatever_the_policy(overwrite: str) -> None:
    local = LocalState(final_size=100, ledger_status="done", ledger_size=100, overwrite=overwrite)
    assert decide(local, RemoteFacts(size=100)).kind is Kind.SKIP_DONE
