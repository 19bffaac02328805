"""Every branch of the pure resume logic: decide() before a request, judge() after one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mastpipe.stages.retrieve.decide import (
    Kind,
    LocalState,
    PartMeta,
    RemoteFacts,
    ResponseFacts,
    Verdict,
    decide,
    judge,
    parse_content_range,
)
from mastpipe.stages.retrieve.temporaries import FetchLock, remove_stale_temporaries
from mastpipe.stages.retrieve.engine import meta_path, part_path, stale_temporaries

META = PartMeta(size=100, etag='"v1"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT")


# -- decide: complete files --------------------------------------------------------------------

def test_done_and_size_matches_is_skipped() -> None:
    local = LocalState(final_size=100, ledger_status="done", ledger_size=100)
    assert decide(local, RemoteFacts(100)).kind is Kind.SKIP_DONE
    assert decide(local, RemoteFacts(None)).kind is Kind.SKIP_DONE


def test_done_with_verify_rehashes() -> None:
    local = LocalState(final_size=100, ledger_status="done", ledger_size=100, verify=True)
    assert decide(local, RemoteFacts(100)).kind is Kind.VERIFY_DONE


def test_done_but_size_on_disk_changed_is_refetched() -> None:
    local = LocalState(final_size=99, ledger_status="done", ledger_size=100)
    action = decide(local, RemoteFacts(100))
    assert action.kind is Kind.FETCH and "99" in action.reason


@pytest.mark.parametrize("overwrite", ["changed", "never", "always"])
def test_done_but_modified_since_is_rehashed_without_a_request(overwrite: str) -> None:
    local = LocalState(final_size=100, final_changed=True, ledger_status="done", ledger_size=100,
                       overwrite=overwrite)
    action = decide(local, RemoteFacts(100))
    assert action.kind is Kind.VERIFY_DONE and "mtime or inode changed" in action.reason


def test_done_but_modified_to_another_size_is_kept_when_overwrite_is_never() -> None:
    local = LocalState(final_size=99, final_changed=True, ledger_status="done", ledger_size=100,
                       overwrite="never")
    assert decide(local, RemoteFacts(100)).kind is Kind.KEEP_FOREIGN
    assert decide(dataclasses.replace(local, overwrite="changed"), RemoteFacts(100)).kind is Kind.FETCH


def test_done_but_product_list_size_changed_is_refetched() -> None:
    local = LocalState(final_size=100, ledger_status="done", ledger_size=100)
    assert decide(local, RemoteFacts(120)).kind is Kind.FETCH


def test_done_but_final_missing_is_fetched() -> None:
    assert decide(LocalState(ledger_status="done", ledger_size=100), RemoteFacts(100)).kind is Kind.FETCH


@pytest.mark.parametrize("status", [None, "failed", "running"])
def test_present_file_of_expected_size_is_adopted(status: str | None) -> None:
    local = LocalState(final_size=100, ledger_status=status)
    assert decide(local, RemoteFacts(100)).kind is Kind.ADOPT


def test_present_file_of_other_size_is_not_trusted() -> None:
    # lightkurve trusts any existing file, even truncated; we do not
    assert decide(LocalState(final_size=50), RemoteFacts(100)).kind is Kind.FETCH


def test_present_file_of_unknown_expected_size_is_not_adopted() -> None:
    assert decide(LocalState(final_size=50), RemoteFacts(None)).kind is Kind.FETCH


# -- decide: temporaries -----------------------------------------------------------------------

def test_nothing_local_fetches() -> None:
    action = decide(LocalState(), RemoteFacts(100))
    assert action.kind is Kind.FETCH and action.offset == 0


def test_partial_resumes_at_its_length() -> None:
    action = decide(LocalState(part_size=40, part_meta=META), RemoteFacts(100))
    assert (action.kind, action.offset) == (Kind.RESUME, 40)


def test_partial_beside_untrusted_final_still_resumes() -> None:
    action = decide(LocalState(final_size=7, part_size=40, part_meta=META), RemoteFacts(100))
    assert (action.kind, action.offset) == (Kind.RESUME, 40)


def test_partial_as_long_as_remote_is_finished_without_request() -> None:
    assert decide(LocalState(part_size=100, part_meta=META), RemoteFacts(100)).kind is Kind.FINISH_VERIFY


def test_partial_longer_than_remote_restarts() -> None:
    action = decide(LocalState(part_size=101, part_meta=META), RemoteFacts(100))
    assert action.kind is Kind.RESTART and "101" in action.reason


def test_partial_without_metadata_restarts() -> None:
    assert decide(LocalState(part_size=40), RemoteFacts(100)).kind is Kind.RESTART


def test_remote_changed_size_restarts() -> None:
    action = decide(LocalState(part_size=40, part_meta=META), RemoteFacts(120))
    assert action.kind is Kind.RESTART and "changed" in action.reason


def test_empty_partial_restarts() -> None:
    assert decide(LocalState(part_size=0, part_meta=META), RemoteFacts(100)).kind is Kind.RESTART


def test_unknown_size_uses_metadata_size() -> None:
    assert decide(LocalState(part_size=100, part_meta=META), RemoteFacts(None)).kind is Kind.FINISH_VERIFY
    action = decide(LocalState(part_size=10, part_meta=META), RemoteFacts(None))
    assert (action.kind, action.offset) == (Kind.RESUME, 10)


def test_unknown_size_with_validator_resumes_without_it_restarts() -> None:
    validator_only = PartMeta(size=None, etag='"v"')
    assert decide(LocalState(part_size=10, part_meta=validator_only), RemoteFacts(None)).kind is Kind.RESUME
    nothing = PartMeta()
    assert decide(LocalState(part_size=10, part_meta=nothing), RemoteFacts(None)).kind is Kind.RESTART


def test_validator_prefers_strong_etag() -> None:
    assert META.validator == '"v1"'
    assert PartMeta(etag='W/"weak"', last_modified="LM").validator == "LM"
    assert PartMeta().validator is None


# -- judge --------------------------------------------------------------------------------------

def facts(status: int, **kw: object) -> ResponseFacts:
    return ResponseFacts(status=status, **kw)  # type: ignore[arg-type]


def test_206_at_asked_offset_appends() -> None:
    verdict, total, _ = judge(40, META, 100, facts(206, content_range="bytes 40-99/100", etag='"v1"'))
    assert (verdict, total) == (Verdict.APPEND, 100)


def test_206_elsewhere_is_rejected() -> None:
    verdict, _, why = judge(40, META, 100, facts(206, content_range="bytes 0-99/100"))
    assert verdict is Verdict.REJECT and "40" in why


@pytest.mark.parametrize("value", [None, "", "bytes */100", "items 40-99/100", "bytes 40-/100"])
def test_206_with_unusable_content_range_is_rejected(value: str | None) -> None:
    assert judge(40, META, 100, facts(206, content_range=value))[0] is Verdict.REJECT


def test_206_with_changed_etag_is_rejected() -> None:
    verdict, _, why = judge(40, META, 100, facts(206, content_range="bytes 40-99/100", etag='"v2"'))
    assert verdict is Verdict.REJECT and "ETag" in why


def test_206_with_changed_last_modified_is_rejected() -> None:
    meta = PartMeta(size=100, last_modified="Mon, 01 Jan 2024 00:00:00 GMT")
    verdict, _, why = judge(40, meta, 100, facts(206, content_range="bytes 40-99/100",
                                                 last_modified="Tue, 02 Jan 2024 00:00:00 GMT"))
    assert verdict is Verdict.REJECT and "Last-Modified" in why


def test_206_with_changed_total_is_rejected() -> None:
    assert judge(40, META, None, facts(206, content_range="bytes 40-119/120"))[0] is Verdict.REJECT


def test_206_contradicting_product_list_is_mismatch() -> None:
    verdict, total, _ = judge(40, None, 100, facts(206, content_range="bytes 40-119/120"))
    assert (verdict, total) == (Verdict.MISMATCH, 120)


def test_206_with_unknown_total_uses_expected() -> None:
    assert judge(40, META, 100, facts(206, content_range="bytes 40-99/*")) == (Verdict.APPEND, 100, "resuming")


def test_200_to_range_request_restarts_from_zero() -> None:
    verdict, total, why = judge(40, META, 100, facts(200, content_length=100))
    assert (verdict, total) == (Verdict.FROM_ZERO, 100) and "ignored Range" in why


def test_200_plain() -> None:
    assert judge(0, None, None, facts(200, content_length=55))[:2] == (Verdict.FROM_ZERO, 55)
    assert judge(0, None, None, facts(200))[:2] == (Verdict.FROM_ZERO, None)  # no Content-Length
    assert judge(0, None, 77, facts(200))[:2] == (Verdict.FROM_ZERO, 77)


def test_200_contradicting_product_list_is_mismatch() -> None:
    assert judge(0, None, 100, facts(200, content_length=90))[0] is Verdict.MISMATCH


def test_parse_content_range() -> None:
    assert parse_content_range("bytes 10-99/100") == (10, 99, 100)
    assert parse_content_range("BYTES 0-0/*") == (0, 0, None)
    assert parse_content_range("garbage") is None


# -- temporaries on disk ----------------------------------------------------------------------

def test_temporary_names_sit_beside_target(tmp_path: Path) -> None:
    dest = tmp_path / "a" / "x.fits"
    assert part_path(dest) == tmp_path / "a" / ".x.fits.part"
    assert meta_path(dest) == tmp_path / "a" / ".x.fits.part.json"


def test_stale_temporaries(tmp_path: Path) -> None:
    keep = tmp_path / "keep.fits"
    for name in (".keep.fits.part", ".keep.fits.part.json", ".keep.fits.part.lock", ".gone.fits.part",
                 ".gone.fits.part.json", ".gone.fits.part.json.tmp", ".gone.fits.part.lock", "gone.fits",
                 ".hidden"):
        (tmp_path / name).write_bytes(b"x")
    stale = {p.name for p in stale_temporaries([tmp_path, tmp_path / "missing"], {keep})}
    assert stale == {".gone.fits.part", ".gone.fits.part.json", ".gone.fits.part.json.tmp",
                     ".gone.fits.part.lock"}


def test_stale_temporaries_of_a_locked_file_are_left_alone(tmp_path: Path) -> None:
    busy, idle = tmp_path / "busy.fits", tmp_path / "idle.fits"
    for dest in (busy, idle):
        part_path(dest).write_bytes(b"x")
        meta_path(dest).write_text("{}")
    with FetchLock(busy) as held:  # another process is writing busy.fits
        assert held
        with FetchLock(busy) as second:
            assert not second, "one holder at a time, even within one process"
        removed = {p.name for p in remove_stale_temporaries([tmp_path], keep=[])}
        assert removed == {".idle.fits.part", ".idle.fits.part.json"}
        assert part_path(busy).exists() and meta_path(busy).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".busy.fits.part", ".busy.fits.part.json"]


@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize("overwrite", ["changed", "never", "always"])
def test_a_done_file_decided_without_its_temporary_is_decided_alike(tmp_path: Path, verify: bool,
                                                                     overwrite: str) -> None:
    """``done_decides`` spares the temporary's stat only where decide's first rule answers
    alone: every combination of ledger row, file on disk, temporary and listed size and
    version is decided as with the temporary looked at."""
    import itertools
    import os

    from mastpipe.stages.retrieve.ledger import LedgerRow
    from mastpipe.stages.retrieve.temporaries import local_state, write_meta

    spared = 0
    cases = itertools.product(["done", "failed", None], [None, 10, 7], [None, 4, 10], [None, 10, 12],
                              [("v1", "v1"), ("v1", "v2"), (None, "v2")], [False, True])
    for n, (status, on_disk, part, expected, (was, now), moved) in enumerate(cases):
        dest = tmp_path / str(n) / "f.fits"
        dest.parent.mkdir()
        if on_disk is not None:
            dest.write_bytes(b"x" * on_disk)
        if part is not None:
            part_path(dest).write_bytes(b"x" * part)
            write_meta(dest, PartMeta(size=10, etag='"e"'))
        st = os.stat(dest) if on_disk is not None else None
        row = None if status is None else LedgerRow(
            "k", os.fspath(dest), status, size=10, mtime_ns=st.st_mtime_ns + moved if st else None,
            inode=st.st_ino if st else None, version=was)
        settings = {"verify": verify, "overwrite": overwrite, "version": now, "expected": expected}
        looked = local_state(dest, row, **settings)
        quick = local_state(dest, row, **settings, done_decides=True)
        assert decide(quick, RemoteFacts(expected)) == decide(looked, RemoteFacts(expected)), (status, on_disk, part,
                                                                                              expected, was, now)
        spared += quick.part_size is None and looked.part_size is not None
    assert spared  # the temporary was spared somewhere, not merely never present
