"""Large files in ranged segments over several connections (issue #15, target 6).

Against the sandbox with a per-connection ``download.bandwidth`` cap, as a slow link is: the
bytes and sha256 are exact, the requests cover the file once, the segments count in the
in-flight bound (the sandbox's ``peak_open``), a ``kill -9`` mid-file resumes without asking
again for the segments recorded complete (the sandbox's log of ``Range`` headers), a server that
ignores ``Range`` gets one stream, and cut connections resume inside their segment.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from _transfer_support import FAST, JWST_1073_OBSID, assert_complete, downloads

from mastpipe.sandbox import Faults
from mastpipe.stages.retrieve.engine import FileTask, Segmenting, Transfer, meta_path, part_path
from mastpipe.stages.retrieve.ledger import Ledger
from mastpipe.stages.retrieve.segments import plan

SEGMENT = 1 << 20
SPLIT = Segmenting(min_size=2 * SEGMENT, size=SEGMENT)


def _big(sandbox, name: str, size: int, root: Path) -> FileTask:
    row = sandbox.catalog.add_product(JWST_1073_OBSID, productFilename=name, size=size)
    return FileTask(row["dataURI"], sandbox.download_url(row["dataURI"]), root / name, size)


def _ranges(records) -> list[tuple[int, int]]:
    """``[start, end)`` of each ranged request, in the order they arrived."""
    spans = []
    for record in records:
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", record.range or "")
        assert match, f"a segment request without a closed Range: {record.range!r}"
        start, end = int(match.group(1)), match.group(2)
        spans.append((start, int(end) + 1 if end else -1))
    return spans


def test_segments_exact_bytes_and_in_flight_bound(sandbox, tmp_path: Path) -> None:
    big = _big(sandbox, "seg_big_cal.fits", 12 * SEGMENT + 12345, tmp_path)
    small = [_big(sandbox, f"seg_small_{i}_cal.fits", 200_000, tmp_path) for i in range(4)]
    sandbox.faults = Faults.parse("download.bandwidth=3000000")  # 3 MB/s per connection
    results = Transfer(workers=3, policy=FAST, segments=SPLIT).run([big, *small])
    assert [r.status for r in results] == ["fetched"] * 5, [r.error for r in results]

    for task in (big, *small):
        assert_complete(sandbox, task)  # exact bytes, no temporary, no .part.json
    body = sandbox.catalog.body(big.key)
    assert results[0].sha256 == hashlib.sha256(body).hexdigest() == sandbox.catalog.sha256(big.key)
    sandbox.log.wait_quiet()
    assert sandbox.log.peak_open <= 3, "segments exceeded the in-flight bound"

    gets = downloads(sandbox, big.key)
    assert all(g.status == 206 for g in gets)
    spans = sorted(_ranges(gets))
    segment = SPLIT.segment_size(big.size, 3)  # 1 MiB at most, 8 per connection at least
    assert segment < SEGMENT
    segments = plan(big.size, segment)
    assert spans == [(s.start, s.end) for s in segments]  # one request per segment, none twice
    # the extra connections did run alongside the first. With one big file alone (no other file
    # holding the spare slots), the spare connections join together after the probe: two segment
    # requests start closer together than one segment can take at the capped rate, so one had not
    # finished when the other began. (The server's peak of open requests is no measure here: it
    # stops counting a request as its last chunk goes out, which is most of a short segment.)
    alone = _big(sandbox, "seg_alone_cal.fits", 8 * SEGMENT, tmp_path)
    sandbox.log.clear()
    assert Transfer(workers=3, policy=FAST, segments=SPLIT).run([alone])[0].status == "fetched"
    alone_segment = SPLIT.segment_size(alone.size, 3)
    starts = sorted(g.time for g in downloads(sandbox, alone.key))
    assert len(starts) > 1
    assert min(b - a for a, b in itertools.pairwise(starts)) < alone_segment / 3_000_000


def test_server_ignoring_range_gets_one_stream(sandbox, tmp_path: Path) -> None:
    big = _big(sandbox, "norange_cal.fits", 4 * SEGMENT + 7, tmp_path)
    sandbox.faults = Faults.parse("download.ignore_range=1")
    [result] = Transfer(workers=4, policy=FAST, segments=SPLIT).run([big])
    assert result.status == "fetched", result.error
    assert_complete(sandbox, big)
    [get] = downloads(sandbox, big.key)  # the first segment's request, answered 200 in full
    assert get.range == f"bytes=0-{SPLIT.segment_size(big.size, 4) - 1}" and get.status == 200
    assert get.bytes_sent == big.size


def test_cut_connections_resume_inside_their_segment(sandbox, tmp_path: Path) -> None:
    big = _big(sandbox, "seg_drops_cal.fits", 6 * SEGMENT, tmp_path)
    sandbox.faults = Faults.parse("download.drop_rate=0.4,download.drop_at=0.5,seed=7")
    [result] = Transfer(workers=3, policy=FAST, segments=SPLIT).run([big])
    assert result.status == "fetched", result.error
    assert_complete(sandbox, big)
    gets = downloads(sandbox, big.key)
    assert any(g.bytes_sent < (end - start) for g, (start, end) in zip(gets, _ranges(gets))), \
        "no connection was cut: the fault did not apply"
    # a cut request is followed by one for the rest of its segment, not the whole segment again
    segment = SPLIT.segment_size(big.size, 3)
    resumed = [start for start, _ in _ranges(gets) if start % segment]
    assert resumed


def test_changed_remote_never_mixes_versions(sandbox, tmp_path: Path) -> None:
    big = _big(sandbox, "seg_changes_cal.fits", 6 * SEGMENT, tmp_path)
    sandbox.faults = Faults.parse("download.bandwidth=4000000")
    touched = {"done": False}

    def change_once(event) -> None:  # the archive reprocesses the file mid-download
        if event.kind == "bytes" and not touched["done"]:
            touched["done"] = True
            sandbox.catalog.touch(big.key)  # new ETag, and 2880 bytes longer

    [result] = Transfer(workers=3, policy=FAST, segments=SPLIT, on_event=change_once).run([big])
    # the product list's size no longer matches the archive's: nothing is kept, nothing renamed
    assert result.status == "failed" and "size mismatch" in result.error
    assert not big.dest.exists() and not part_path(big.dest).exists()
    later = [g for g in downloads(sandbox, big.key)][1:]
    assert any(g.status == 200 and g.if_range for g in later), "no segment asked with If-Range"


DRIVER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from mastpipe.retry import RetryPolicy
    from mastpipe.stages.retrieve.engine import FileTask, Segmenting, Transfer
    from mastpipe.stages.retrieve.ledger import Ledger
    spec = json.loads(Path(sys.argv[1]).read_text())
    task = FileTask(spec["key"], spec["url"], Path(spec["dest"]), spec["size"])
    Transfer(workers=3, ledger=Ledger(spec["state"]), policy=RetryPolicy(base_delay=0.01),
             segments=Segmenting(min_size=1, size=spec["segment"])).run([task])
""")


def test_kill_9_mid_segments_resumes_segment_by_segment(sandbox, tmp_path: Path) -> None:
    big = _big(sandbox, "seg_kill_cal.fits", 16 * SEGMENT + 999, tmp_path / "dest")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"key": big.key, "url": big.url, "dest": str(big.dest), "size": big.size,
                                "state": str(tmp_path / "state"), "segment": SEGMENT}))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    sandbox.faults = Faults.parse("download.bandwidth=1500000")  # ~11 s alone, ~4 s on 3 connections

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, str(driver), str(spec)], env=env)
    try:
        deadline = time.monotonic() + 60
        done: list[int] = []
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                done = json.loads(meta_path(big.dest).read_text())["segments"]["done"]
            except (OSError, ValueError, KeyError, TypeError):
                done = []
            if len(done) >= 3:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the driver never recorded three segments done")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    meta = json.loads(meta_path(big.dest).read_text())
    done = set(meta["segments"]["done"])
    segment = meta["segments"]["size"]
    assert segment == Segmenting(min_size=1, size=SEGMENT).segment_size(big.size, 3)
    assert 3 <= len(done) < len(plan(big.size, segment))
    assert part_path(big.dest).stat().st_size == big.size  # preallocated
    kept = {i: part_path(big.dest).read_bytes()[i * segment:(i + 1) * segment] for i in done}

    sandbox.faults = Faults.parse("")
    rerun_start = time.time()
    with Ledger(tmp_path / "state") as ledger:
        [result] = Transfer(workers=3, policy=FAST, ledger=ledger, segments=SPLIT).run([big])
    assert result.status == "fetched", result.error
    assert_complete(sandbox, big)
    assert result.sha256 == sandbox.catalog.sha256(big.key)
    body = sandbox.catalog.body(big.key)
    assert all(kept[i] == body[i * segment:(i + 1) * segment] for i in done)

    gets = [g for g in downloads(sandbox, big.key) if g.time >= rerun_start]
    spans = _ranges(gets)
    for start, end in spans:
        assert not any(start < (i + 1) * segment and i * segment < end for i in done), \
            f"the rerun asked again for bytes {start}-{end} of a segment recorded complete"
    fetched = sum(end - start for start, end in spans)
    assert fetched == big.size - sum(min(segment, big.size - i * segment) for i in done)


RECIPE = """\
version: 1
name: segments-{name}
query:
  q: {{criteria: {{obs_collection: JWST, proposal_id: "1073", filters: F277W}}}}
filter:
  contains: [_uncal.fits]
retrieve:
  destination: {name}
  in_flight: 3
  segments: {segments}
"""


def test_recipe_setting_reaches_the_engine(sandbox, tmp_path: Path) -> None:

    import mastpipe

    for name, segments in (("split", "{min_size: 1, size: 65536}"), ("whole", "{min_size: null}")):
        recipe = tmp_path / f"{name}.yaml"
        recipe.write_text(RECIPE.format(segments=segments, name=name))
        sandbox.log.clear()
        mastpipe.run(recipe, mast_url=sandbox.url)
        manifest = mastpipe.read_manifest(tmp_path / name / "manifest.ecsv")  # paths made absolute
        assert len(manifest) and set(manifest["status"]) == {"fetched"}
        for row in manifest:
            assert Path(row["path"]).read_bytes() == sandbox.catalog.body(row["dataURI"])
        ranged = [g for g in downloads(sandbox) if g.range]
        if name == "split":
            big = [row for row in manifest if row["size"] > 65536]
            assert big and {g.uri for g in ranged} == {row["dataURI"] for row in big}
            assert sandbox.log.peak_open <= 3
        else:
            assert ranged == []


def test_segmented_fits_file_is_checksum_verified_whole(sandbox, tmp_path: Path) -> None:
    big = _big(sandbox, "seg_fits_cal.fits", 3 * SEGMENT + 2880 * 7, tmp_path)
    [result] = Transfer(workers=3, policy=FAST, segments=SPLIT).run([big])
    assert result.status == "fetched", result.error
    assert result.checksum == "verified"  # CHECKSUM/DATASUM checked from the segments, in order
    assert len(downloads(sandbox, big.key)) > 1
    assert_complete(sandbox, big)

    # a byte flipped in one segment's body: caught over the whole file, nothing published
    other = _big(sandbox, "seg_fits_flip_cal.fits", 3 * SEGMENT + 2880 * 7, tmp_path / "flip")
    sandbox.faults = Faults.parse("download.corrupt_rate=1")
    [result] = Transfer(workers=3, policy=FAST, segments=SPLIT).run([other])
    assert result.status == "failed" and "FITS checksum mismatch" in result.error
    assert not other.dest.exists() and not part_path(other.dest).exists()
