"""The source-agnostic half of segmented downloads: plan, map, decide, temporary, slots, ramp."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
from pathlib import Path

import pytest

from mastpipe.stages.retrieve.decide import Kind, LocalState, PartMeta, RemoteFacts, decide
from mastpipe.stages.retrieve.segments import (
    Ramp,
    SegmentedTemporary,
    Segmenting,
    SegmentMap,
    Slots,
    fetch_segments,
    plan,
)
from mastpipe.stages.retrieve.temporaries import meta_path, read_meta, write_meta


def test_segment_size_keeps_the_last_round_short() -> None:
    settings = Segmenting(min_size=100 << 20, size=32 << 20)
    assert settings.segment_size(2 << 30, 4) == 32 << 20  # 64 segments: 16 per connection
    assert settings.segment_size(300 << 20, 4) == (300 << 20) // 32  # 8 per connection
    assert settings.segment_size(1 << 20, 16) == 1 << 16  # never below 64 KiB
    assert settings.applies(100 << 20, 2) and not settings.applies(100 << 20, 1)
    assert not settings.applies((100 << 20) - 1, 4) and not settings.applies(None, 4)
    assert not Segmenting(min_size=None).applies(1 << 40, 4)


def test_plan_covers_the_file_once() -> None:
    segments = plan(10, 4)
    assert [(s.index, s.start, s.end) for s in segments] == [(0, 0, 4), (1, 4, 8), (2, 8, 10)]
    assert plan(8, 4)[-1].length == 4 and plan(0, 4) == []
    with pytest.raises(ValueError):
        plan(10, 0)


def test_segment_map_round_trips_and_refuses_garbage(tmp_path: Path) -> None:
    dest = tmp_path / "f.fits"
    meta = PartMeta(size=10, etag='"e"', segments=SegmentMap(4, frozenset({0, 2})))
    write_meta(dest, meta)
    assert read_meta(dest) == meta
    assert json.loads(meta_path(dest).read_text())["segments"] == {"size": 4, "done": [0, 2]}
    for bad in ({"size": 0, "done": []}, {"size": 4, "done": [-1]}, {"size": 4}, [1, 2],
                {"size": True, "done": []}, {"size": 4, "done": ["0"]}):
        meta_path(dest).write_text(json.dumps({"size": 10, "segments": bad}))
        assert read_meta(dest) is None, bad  # an unreadable map: the temporary restarts


def _local(part: int | None, segments: SegmentMap | None, size: int | None = 10) -> LocalState:
    return LocalState(part_size=part, part_meta=PartMeta(size=size, etag='"e"', segments=segments))


def test_decide_judges_a_segmented_temporary_by_its_map() -> None:
    remote = RemoteFacts(10)
    # preallocated to full length, but only segments 0 and 2 are done: resume, not finish
    action = decide(_local(10, SegmentMap(4, frozenset({0, 2}))), remote)
    assert action.kind is Kind.RESUME and action.offset == 6
    assert decide(_local(10, SegmentMap(4, frozenset({0, 1, 2}))), remote).kind is Kind.FINISH_VERIFY
    assert decide(_local(10, SegmentMap(4)), remote).kind is Kind.RESUME  # nothing done yet
    assert decide(_local(0, SegmentMap(4)), remote).kind is Kind.RESUME  # killed before preallocation
    for bad in (_local(10, SegmentMap(4, frozenset({3}))),  # no such segment
                _local(12, SegmentMap(4)),  # longer than the file
                _local(5, SegmentMap(4, frozenset({0})))):  # shorter, yet a segment is done
        assert decide(bad, remote).kind is Kind.RESTART
    assert decide(_local(10, SegmentMap(4), size=12), remote).kind is Kind.RESTART  # remote changed
    # without a map, a full-length temporary is complete as before
    assert decide(_local(10, None), remote).kind is Kind.FINISH_VERIFY


def test_temporary_hashes_in_order_whatever_order_segments_arrive(tmp_path: Path) -> None:
    data = os.urandom(10_000)
    persisted: list[SegmentMap] = []
    temp = SegmentedTemporary(tmp_path / ".f.part", len(data), SegmentMap(3000), persisted.append, chunk=1024)
    try:
        assert os.path.getsize(tmp_path / ".f.part") == len(data)
        for segment in reversed(temp.segments):
            temp.write(segment, memoryview(data[segment.start:segment.end]))
            temp.finish_segment(segment)
        assert temp.sha256() == hashlib.sha256(data).hexdigest()
    finally:
        temp.close()
    # recorded in batches, each a superset of the one before, all four in the end
    assert all(a.done < b.done for a, b in itertools.pairwise(persisted))
    assert persisted[-1].done == {0, 1, 2, 3}
    assert (tmp_path / ".f.part").read_bytes() == data


def test_temporary_refuses_bytes_past_a_segment_and_unfinished_segments(tmp_path: Path) -> None:
    temp = SegmentedTemporary(tmp_path / ".f.part", 10, SegmentMap(4), lambda m: None)
    try:
        first = temp.segments[0]
        with pytest.raises(ValueError):
            temp.write(first, memoryview(b"12345"))
        temp.write(first, memoryview(b"12"))
        assert temp.position(first) == 2
        with pytest.raises(ValueError):
            temp.finish_segment(first)
    finally:
        temp.close()  # an unfinished hash does not hang the close


def test_fetch_segments_resumes_kept_segments_and_reraises(tmp_path: Path) -> None:
    data = os.urandom(9000)
    asked: list[tuple[int, int]] = []

    def fetch(segment, sink) -> None:
        asked.append((sink.position, segment.end))
        if segment.index == 1 and sink.position == segment.start:
            sink.write(memoryview(data[sink.position:sink.position + 500]))  # cut after 500 bytes
            return
        sink.write(memoryview(data[sink.position:segment.end]))

    with open(tmp_path / ".f.part", "wb") as handle:
        handle.write(data[:2000])  # segment 0 from an earlier run
    temp = SegmentedTemporary(tmp_path / ".f.part", len(data), SegmentMap(2000, frozenset({0})), lambda m: None)
    try:
        fetch_segments(temp, fetch, None)
        assert temp.sha256() == hashlib.sha256(data).hexdigest()
    finally:
        temp.close()
    assert (2000, 4000) in asked and (2500, 4000) in asked  # the rest of the cut segment only
    assert all(start >= 2000 for start, _ in asked)

    def broken(segment, sink) -> None:
        raise ConnectionResetError("gone")

    temp = SegmentedTemporary(tmp_path / ".g.part", 100, SegmentMap(10), lambda m: None)
    try:
        with pytest.raises(ConnectionResetError):
            fetch_segments(temp, broken, Slots(4))
    finally:
        temp.close()


def test_a_fixed_ramp_runs_every_slot_from_the_start_and_keeps_them(tmp_path: Path) -> None:
    data = os.urandom(8 * 1000)
    lock = threading.Lock()
    running, peak, threads = [0], [0], set()
    three = threading.Barrier(3, timeout=10)  # only passable when three connections run at once

    def fetch(segment, sink) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            threads.add(threading.get_ident())
        try:
            if segment.index < 3:
                three.wait()
            sink.write(memoryview(data[sink.position:segment.end]))
        finally:
            with lock:
                running[0] -= 1

    slots = Slots(3)
    slots.acquire()  # the caller's own connection
    temp = SegmentedTemporary(tmp_path / ".f.parts", len(data), SegmentMap(1000), lambda m: None)
    try:
        fetch_segments(temp, fetch, slots, ramp=Ramp.fixed())
        assert temp.sha256() == hashlib.sha256(data).hexdigest()
    finally:
        temp.close()
        slots.release()
    assert peak[0] == 3 and len(threads) == 3  # no probe alone, never more than the slots


def test_slots_keep_spare_ones_for_waiting_files() -> None:
    slots = Slots(2)
    slots.acquire()
    assert slots.try_acquire() and not slots.try_acquire()  # bound reached
    slots.release()
    waiter = threading.Thread(target=slots.acquire)
    slots.acquire()  # both taken again
    waiter.start()
    while not slots.contended:
        pass
    slots.release()
    waiter.join(5)
    assert not waiter.is_alive()
    assert not slots.try_acquire()  # the waiting file got it, not an extra segment


def test_ramp_keeps_extra_connections_only_when_they_help() -> None:
    now = [0.0]
    for together, verdict in ((300, True), (110, False)):
        now[0] = 0.0
        ramp = Ramp(probe=1.0, benefit=1.3, clock=lambda: now[0])
        assert ramp.add(100) is None
        now[0] = 1.0
        assert ramp.add(0) == "join"  # 100 B/s alone
        now[0] = 1.5
        assert ramp.add(10) is None  # the new connections are still starting: not measured
        now[0] = 2.0
        assert ramp.add(0) is None and ramp.verdict is None  # the measured second begins
        now[0] = 3.0
        assert ramp.add(together) == (None if verdict else "leave")
        assert ramp.verdict is verdict  # 300 B/s: they stay; 110 B/s: one connection fills the link


def test_a_failing_connection_stops_the_others_between_blocks(tmp_path: Path) -> None:
    slots = Slots(2)
    slots.acquire()  # the caller's own connection
    failed = threading.Event()
    written = {"first": 0}

    def fetch(segment, sink) -> None:
        if segment.index == 0:  # the caller's connection: a slow stream of small blocks
            while sink.remaining:
                sink.write(memoryview(b"x" * 10))
                written["first"] += 10
                if written["first"] == 100:
                    ramp_now[0] = 10.0  # let the second connection join
                if written["first"] > 100:
                    failed.wait(5)
            return
        failed.set()
        raise ConnectionResetError("gone")

    ramp_now = [0.0]
    ramp = Ramp(probe=1.0, clock=lambda: ramp_now[0])
    temp = SegmentedTemporary(tmp_path / ".f.part", 20_000, SegmentMap(10_000), lambda m: None)
    try:
        with pytest.raises(ConnectionResetError):
            fetch_segments(temp, fetch, slots, ramp=ramp)
    finally:
        temp.close()
    assert written["first"] < 10_000  # stopped mid-segment, not after finishing it
    assert slots.try_acquire()  # the joined connection gave its slot back
