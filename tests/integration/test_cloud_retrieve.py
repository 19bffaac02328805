"""retrieve.source cloud / auto: MAST's public S3 copies, fetched with boto3 from the sandbox's
real S3 server, with MAST as the fallback. The request logs show which file came from where.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("moto", reason="the sandbox's S3 bucket needs moto (pip install 'mastpipe[test]')")
pytest.importorskip("boto3", reason="source cloud/auto needs boto3 (pip install 'mastpipe[cloud]')")

from _examples import JWST_1073, example_recipe
from _transfer_support import FAST, JWST_1073_OBSID

import mastpipe
from mastpipe.sandbox import Faults
from mastpipe.stages.retrieve.engine import FileTask, Transfer, part_path
from mastpipe.stages.retrieve.ledger import Ledger
from mastpipe.stages.retrieve.s3 import S3_ENDPOINT_ENV, S3Client
from mastpipe.stages.retrieve.temporaries import size_of

TOKEN = "good-token"


def _env(sb) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if k != "MAST_API_TOKEN"}
    env[S3_ENDPOINT_ENV] = sb.s3.endpoint
    return env


def _recipe(tmp_path: Path, name: str = JWST_1073, query: dict | None = None, **retrieve: object) -> Path:
    """The tutorial's example with ``retrieve`` changed, in a folder of its own under ``tmp_path``."""
    folder = tmp_path / f"r{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    return example_recipe(folder, filename=name, query=query or {}, retrieve=retrieve)


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*.fits")}


def test_tutorial_with_source_auto_fetches_the_same_bytes_as_mast(sb, tmp_path: Path) -> None:
    mast_recipe = _recipe(tmp_path)
    auto_recipe = _recipe(tmp_path, source="auto")
    by_mast = mastpipe.run(mast_recipe, mast_url=sb.url, environ=_env(sb))
    assert by_mast.exit_code == 0
    assert not [r for r in sb.log.records() if r.endpoint in ("s3", "path_lookup")]
    sb.log.clear()

    by_auto = mastpipe.run(auto_recipe, mast_url=sb.url, environ=_env(sb))
    assert by_auto.exit_code == 0
    ours, theirs = _files(auto_recipe.parent / "data"), _files(mast_recipe.parent / "data")
    assert ours == theirs and len(ours) >= 10

    keys = [str(k) for k in by_auto.tables["filter"]["dataURI"]]
    in_bucket = {k for k in keys if sb.s3.key_of(k)}
    assert in_bucket and set(keys) - in_bucket, "the seed leaves some tutorial files out of the bucket"
    records = sb.log.records()
    from_s3 = {r.uri for r in records if r.endpoint == "s3" and r.method == "GET" and r.status in (200, 206)}
    from_mast = {r.uri for r in records if r.endpoint == "download" and r.method == "GET" and r.status in (200, 206)}
    assert from_s3 == in_bucket
    assert from_mast == set(keys) - in_bucket
    lookups = [r for r in records if r.endpoint == "path_lookup"]
    assert lookups and all(len(r.uris) <= 50 for r in lookups)

    manifest = json.loads((auto_recipe.parent / "data/jwst-1073/manifest.json").read_text())
    for row in manifest:
        assert row["source"] == ("s3" if row["dataURI"] in in_bucket else "mast")
        assert row["url"].startswith(sb.url + "/api/v0.1/Download/file?uri=")
        assert bool(row["s3_uri"]) == (row["dataURI"] in in_bucket)
        if row["s3_uri"]:
            assert row["s3_uri"].startswith("s3://stpubdata/jwst/public/")
            assert row["s3_url"] == f"{sb.s3.endpoint}/stpubdata/" + row["s3_uri"][len("s3://stpubdata/"):]
    with sqlite3.connect(auto_recipe.parent / ".mastpipe/jwst-1073-nircam-uncal/ledger.sqlite") as db:
        ledger = {k: (s, e) for k, s, e in db.execute("SELECT key, source, etag FROM files")}
    assert {k for k, (s, _) in ledger.items() if s == "s3"} == in_bucket
    assert all(e for _, e in ledger.values())  # S3's ETag, or MAST's

    sb.log.clear()  # a rerun asks nobody anything: not MAST, not path_lookup, not S3
    again = mastpipe.run(auto_recipe, mast_url=sb.url, environ=_env(sb))
    assert again.exit_code == 0
    assert not [r for r in sb.log.records() if r.endpoint in ("s3", "path_lookup", "download")]


def test_exclusive_access_files_come_from_mast_with_the_token_and_s3_never_sees_it(sb, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, source="auto", query={"nircam": {"criteria": {"proposal_id": ["1073", "4242"],
                                                                        "filters": ["F277W", "F200W;CLEAR"]}}})
    outcome = mastpipe.run(recipe, mast_url=sb.url, environ=_env(sb), token=TOKEN)
    assert outcome.exit_code == 0
    rights = {str(k): str(r) for k, r in zip(outcome.tables["filter"]["dataURI"], outcome.tables["filter"]["dataRights"])}
    exclusive = {k for k, r in rights.items() if r == "EXCLUSIVE_ACCESS"}
    assert exclusive and len(exclusive) < len(rights)
    records = sb.log.records()
    s3 = [r for r in records if r.endpoint == "s3"]
    assert s3 and not any(r.has_token for r in s3)
    assert not {r.uri for r in s3} & exclusive
    assert not any(set(r.uris) & exclusive for r in records if r.endpoint == "path_lookup")
    got = {r.uri for r in records if r.endpoint == "download" and r.status == 200 and r.has_token}
    assert exclusive <= got


def test_source_cloud_lists_files_without_a_copy_as_skipped_and_asks_mast_for_none(sb, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path)
    outcome = mastpipe.run(recipe, mast_url=sb.url, environ=_env(sb), source="cloud")
    assert outcome.exit_code == 0
    keys = [str(k) for k in outcome.tables["filter"]["dataURI"]]
    missing = {k for k in keys if not sb.s3.key_of(k)}
    assert missing
    assert not [r for r in sb.log.records() if r.endpoint == "download"]
    manifest = {r["dataURI"]: r for r in json.loads((recipe.parent / "data/jwst-1073/manifest.json").read_text())}
    for key in keys:
        row = manifest[key]
        if key in missing:
            assert row["status"] == "skipped" and "no copy in the cloud bucket" in row["message"]
            assert not Path(row["path"]).exists()
        else:
            assert row["status"] == "fetched" and row["source"] == "s3"


def test_manifest_and_curl_modes_name_the_cloud_copies(sb, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, name="m.yaml", source="auto", mode="manifest")
    assert mastpipe.run(recipe, mast_url=sb.url, environ=_env(sb)).exit_code == 0
    rows = json.loads((recipe.parent / "data/jwst-1073/manifest.json").read_text())
    assert {r["source"] for r in rows} == {"s3", "mast"}
    assert all(bool(r["s3_uri"]) == (r["source"] == "s3") and r["url"] for r in rows)

    curl = _recipe(tmp_path, name="c.yaml", source="auto", mode="curl")
    outcome = mastpipe.run(curl, mast_url=sb.url, environ=_env(sb))
    assert outcome.exit_code == 0
    script = (curl.parent / "data/jwst-1073/mastpipe-download.sh").read_text()
    for row in rows:
        if row["source"] == "s3":
            assert row["s3_url"] in script
        else:
            assert row["url"] in script or row["url"].replace(sb.url, "") in script
    if shutil.which("curl") and shutil.which("bash"):
        sb.log.clear()
        subprocess.run(["bash", str(curl.parent / "data/jwst-1073/mastpipe-download.sh")], check=True,
                       cwd=curl.parent, timeout=300, capture_output=True)
        fetched = _files(curl.parent / "data")
        assert len(fetched) == len(rows)
        assert {r.endpoint for r in sb.log.records() if r.status == 200} >= {"s3", "download"}


def test_aws_https_form_without_an_endpoint() -> None:
    from mastpipe.stages.retrieve.s3 import https_url

    assert https_url("jwst/public/a/b.fits") == "https://stpubdata.s3.amazonaws.com/jwst/public/a/b.fits"
    assert https_url("k", "http://127.0.0.1:9") == "http://127.0.0.1:9/stpubdata/k"


def _s3_tasks(sb, root: Path, n: int, size: int, prefix: str) -> list[FileTask]:  # type: ignore[no-untyped-def]
    tasks = []
    for i in range(n):
        row = sb.catalog.add_product(JWST_1073_OBSID, productFilename=f"{prefix}_{i}_cal.fits", size=size)
        key = sb.s3.key_of(row["dataURI"])
        if key is None:
            continue
        tasks.append(FileTask(row["dataURI"], f"s3://stpubdata/{key}", root / row["productFilename"], size))
    assert tasks
    return tasks


def test_slowdown_and_dropped_connections_are_retried_and_resumed(sb, tmp_path: Path) -> None:
    tasks = _s3_tasks(sb, tmp_path / "out", 6, 400_000, "slow")
    sb.faults = Faults.parse("s3.fail_first=2:503,s3.retry_after=0,s3.drop_rate=0.5,s3.drop_at=0.4")
    with Ledger(tmp_path / "state") as ledger:
        results = Transfer(workers=1, s3=S3Client(sb.s3.endpoint), s3_workers=3, policy=FAST,
                           ledger=ledger).run(tasks)
        rows = ledger.rows()
    assert [r.status for r in results] == ["fetched"] * len(tasks), [r.error for r in results]
    for task in tasks:
        assert task.dest.read_bytes() == sb.catalog.body(task.key)
        assert rows[task.key].source == "s3" and rows[task.key].etag
    records = [r for r in sb.log.records() if r.endpoint == "s3"]
    assert sum(r.status == 503 for r in records) == 2 * len(tasks)
    resumed = [r for r in records if r.range and r.status == 206]
    assert resumed  # a dropped body was resumed with Range, not fetched again


def _s3_then_one_mast_download(sb, keys: set[str]) -> None:  # type: ignore[no-untyped-def]
    """Each of ``keys``: S3 GETs first, then exactly one successful download from MAST."""
    records = sb.log.records()
    for key in keys:
        tries = [r for r in records if r.endpoint == "s3" and r.method == "GET" and r.uri == key]
        mast = [r for r in records if r.endpoint == "download" and r.uri == key]
        assert tries and [r.status for r in mast] == [200], (key, [(r.status, r.range) for r in mast])
        assert max(r.time for r in tries) <= mast[0].time


def test_source_auto_fetches_a_cloud_copy_that_fails_for_good_from_mast(sb, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    # The copies are located (HEAD answers), but every GET drops before its first byte.
    recipe = example_recipe(tmp_path, retrieve={"source": "auto"}, mast={"retries": 1})
    sb.faults = Faults.parse("s3.drop_rate=1,s3.drop_at=0")
    with caplog.at_level("WARNING", logger="mastpipe"):
        outcome = mastpipe.run(recipe, mast_url=sb.url, environ=_env(sb))
    assert outcome.exit_code == 0, outcome.report["retrieve"]["failed"]
    keys = [str(k) for k in outcome.tables["filter"]["dataURI"]]
    in_bucket = {k for k in keys if sb.s3.key_of(k)}
    assert in_bucket
    _s3_then_one_mast_download(sb, in_bucket)
    manifest = {r["dataURI"]: r for r in json.loads((recipe.parent / "data/jwst-1073/manifest.json").read_text())}
    for key in keys:
        row = manifest[key]
        assert row["status"] == "fetched" and row["source"] == "mast", row
        assert (recipe.parent / "data/jwst-1073" / row["path"]).read_bytes() == sb.catalog.body(key)
    assert outcome.report["retrieve"]["fetched"]["by_source"] == {"mast": len(keys), "s3": 0}
    with sqlite3.connect(recipe.parent / ".mastpipe/jwst-1073-nircam-uncal/ledger.sqlite") as db:
        assert {s for (s,) in db.execute("SELECT source FROM files")} == {"mast"}
    said = [r.getMessage() for r in caplog.records if "fetching it from MAST instead" in r.getMessage()]
    assert len(said) == len(in_bucket) and all("body cut short" in m for m in said), said
    assert not list((recipe.parent / "data").rglob("*.part*"))


def test_source_cloud_fails_a_cloud_copy_that_fails_for_good(sb, tmp_path: Path) -> None:
    recipe = example_recipe(tmp_path, retrieve={"source": "cloud"}, mast={"retries": 1})
    sb.faults = Faults.parse("s3.drop_rate=1,s3.drop_at=0")
    outcome = mastpipe.run(recipe, mast_url=sb.url, environ=_env(sb))
    assert outcome.exit_code != 0
    in_bucket = {str(k) for k in outcome.tables["filter"]["dataURI"] if sb.s3.key_of(str(k))}
    assert {f["dataURI"] for f in outcome.report["retrieve"]["failed"]["items"]} == in_bucket
    assert not [r for r in sb.log.records() if r.endpoint == "download"]


def test_a_key_the_bucket_no_longer_has_comes_from_mast_once(sb, tmp_path: Path) -> None:
    gone, kept = _s3_tasks(sb, tmp_path / "out", 4, 200_000, "gone")[:2]
    sb.faults = Faults.parse(f"s3.missing={gone.key}")  # 404 NoSuchKey, as after a removal
    tasks = [replace(t, fallback=sb.download_url(t.key)) for t in (gone, kept)]
    with Ledger(tmp_path / "state") as ledger:
        results = Transfer(workers=1, s3=S3Client(sb.s3.endpoint), policy=FAST, ledger=ledger).run(tasks)
        rows = ledger.rows()
    assert [(r.status, r.source) for r in results] == [("fetched", "mast"), ("fetched", "s3")], results
    assert [rows[t.key].source for t in tasks] == ["mast", "s3"]
    for task in tasks:
        assert task.dest.read_bytes() == sb.catalog.body(task.key)
    _s3_then_one_mast_download(sb, {gone.key})
    assert not [r for r in sb.log.records() if r.endpoint == "download" and r.uri == kept.key]

    # no fallback (source: cloud): the same 404 fails the file, and MAST is not asked
    sb.log.clear()
    (alone,) = Transfer(workers=1, s3=S3Client(sb.s3.endpoint), policy=FAST).run(
        [replace(gone, dest=tmp_path / "cloud-only" / gone.dest.name)])
    assert alone.status == "failed" and "404" in (alone.error or ""), alone
    assert not [r for r in sb.log.records() if r.endpoint == "download"]


def test_dask_driver_queues_a_failed_cloud_copy_for_mast(sb, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed", reason="the Dask executor needs mastpipe[dask]")
    from mastpipe.stages.retrieve.dask import DaskTransfer

    tasks = [replace(t, fallback=sb.download_url(t.key))
             for t in _s3_tasks(sb, tmp_path / "out", 4, 200_000, "dask_gone")[:2]]
    sb.faults = Faults.parse("s3.drop_rate=1,s3.drop_at=0")
    sb.log.clear()
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client, Ledger(tmp_path / "state") as ledger:
        results = DaskTransfer(client=client, in_flight=1, s3=S3Client(sb.s3.endpoint), s3_workers=2,
                               policy=FAST, ledger=ledger).run(tasks)
        rows = ledger.rows()
    assert [(r.status, r.source) for r in results] == [("fetched", "mast")] * 2, results
    for task in tasks:
        assert task.dest.read_bytes() == sb.catalog.body(task.key)
        assert rows[task.key].source == "mast"
    _s3_then_one_mast_download(sb, {t.key for t in tasks})


def test_a_changed_object_restarts_instead_of_splicing(sb, tmp_path: Path) -> None:
    (task,) = _s3_tasks(sb, tmp_path / "out", 1, 300_000, "changed")[:1]
    sb.faults = Faults.parse("s3.drop_rate=1,s3.drop_at=0.5")
    client = S3Client(sb.s3.endpoint)
    Transfer(workers=1, s3=client, policy=FAST.__class__(max_attempts=1)).run([task])
    assert part_path(task.dest).exists()
    sb.faults = None
    sb.catalog.touch(task.key)  # the object changes (new bytes, new ETag) under the temporary
    task = FileTask(task.key, task.url, task.dest, sb.catalog.file_size(task.key))
    sb.log.clear()
    (result,) = Transfer(workers=1, s3=client, policy=FAST).run([task])
    assert result.status == "fetched", result.error
    assert task.dest.read_bytes() == sb.catalog.body(task.key)
    statuses = [r.status for r in sb.log.records() if r.endpoint == "s3" and r.method == "GET"]
    assert statuses[0] in (412, 200)  # IfMatch refused the stale ETag (or S3 resent it all)


DRIVER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from mastpipe.stages.retrieve.ledger import Ledger
    from mastpipe.retry import RetryPolicy
    from mastpipe.stages.retrieve.engine import FileTask, Transfer
    from mastpipe.stages.retrieve.s3 import S3Client
    spec = json.loads(Path(sys.argv[1]).read_text())
    tasks = [FileTask(t["key"], t["url"], Path(t["dest"]), t["size"]) for t in spec["tasks"]]
    Transfer(workers=1, s3=S3Client(spec["endpoint"]), s3_workers=2, ledger=Ledger(spec["state"]),
             policy=RetryPolicy(base_delay=0.01)).run(tasks)
""")


def test_kill_9_during_s3_downloads_then_rerun_resumes(sb, tmp_path: Path) -> None:
    size = 600_000
    tasks = _s3_tasks(sb, tmp_path / "out", 5, size, "kill")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"state": str(tmp_path / "state"), "endpoint": sb.s3.endpoint, "tasks": [
        {"key": t.key, "url": t.url, "dest": str(t.dest), "size": t.size} for t in tasks]}))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    sb.faults = Faults.parse("s3.bandwidth=800000")
    proc = subprocess.Popen([sys.executable, str(driver), str(spec)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            complete = [t for t in tasks if t.dest.exists()]
            # a temporary at most half done: at the capped rate it is 0.3 s from being renamed,
            # so the kill finds it still a temporary (one nearly done could finish first)
            partial = [t for t in tasks if size // 10 < (size_of(part_path(t.dest)) or 0) < size // 2]
            if complete and partial:
                break
            time.sleep(0.02)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # What counts is the disk after the kill: a temporary seen a moment earlier may have been renamed since.
    complete = [t for t in tasks if t.dest.exists()]
    kept = {t.key: n_bytes for t in tasks if (n_bytes := size_of(part_path(t.dest)))}
    assert complete and kept, "the driver should have been killed mid-way"
    sb.faults = None
    assert sb.log.wait_quiet(timeout=30)  # the killed driver's requests are logged once the proxy sees them end
    sb.log.clear()
    with Ledger(tmp_path / "state") as ledger:
        results = Transfer(workers=1, s3=S3Client(sb.s3.endpoint), ledger=ledger, policy=FAST).run(tasks)
    assert all(r.status in ("fetched", "skipped") for r in results), [r.error for r in results]
    for task in tasks:
        assert task.dest.read_bytes() == sb.catalog.body(task.key)
    gets = [r for r in sb.log.records() if r.endpoint == "s3" and r.method == "GET"]
    assert not {r.uri for r in gets} & {t.key for t in complete}  # nothing complete fetched again
    for key, offset in kept.items():
        asked = [r for r in gets if r.uri == key]
        if offset == size:  # the whole body was in the temporary: verified and renamed, no request
            assert asked == []
        else:  # resumed from the byte the temporary ended at
            assert [(r.range, r.status) for r in asked] == [(f"bytes={offset}-", 206)]


def test_dask_workers_fetch_cloud_copies_directly_with_a_window_of_their_own(sb, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed", reason="the Dask executor needs mastpipe[dask]")
    from mastpipe.stages.retrieve.dask import DaskTransfer

    cloud = _s3_tasks(sb, tmp_path / "out", 6, 300_000, "dask_s3")[:4]
    rows = [sb.catalog.add_product(JWST_1073_OBSID, productFilename=f"dask_web_{i}_cal.fits", size=300_000)
            for i in range(3)]
    web = [FileTask(r["dataURI"], sb.download_url(r["dataURI"]), tmp_path / "out" / r["productFilename"],
                    r["size"]) for r in rows]
    sb.faults = Faults.parse("s3.bandwidth=250000,download.bandwidth=250000")  # ~1.2 s each: room to overlap
    sb.log.clear()
    with distributed.LocalCluster(n_workers=3, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client, Ledger(tmp_path / "state") as ledger:
        results = DaskTransfer(client=client, in_flight=1, s3=S3Client(sb.s3.endpoint), s3_workers=2,
                               policy=FAST, ledger=ledger).run(web + cloud)
        rows_done = ledger.rows()
    assert [r.status for r in results] == ["fetched"] * 7, [r.error for r in results]
    for task in web + cloud:
        assert task.dest.read_bytes() == sb.catalog.body(task.key)
        assert rows_done[task.key].source == task.source
    records = sb.log.records()
    assert {r.uri for r in records if r.endpoint == "s3" and r.method == "GET"} == {t.key for t in cloud}
    assert {r.uri for r in records if r.endpoint == "download"} == {t.key for t in web}
    # MAST's window is 1 and S3's 2: never more than 3 at once, and S3 ran beside MAST
    assert 2 <= sb.log.peak_open <= 3


PART = 100_000  # small parts, so small objects take the multipart path


def _ranges(records, key: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.range for r in records if r.endpoint == "s3" and r.method == "GET" and r.uri == key and r.status == 206]


def test_large_objects_come_as_parallel_parts_into_one_temporary(sb, tmp_path: Path) -> None:
    tasks = _s3_tasks(sb, tmp_path / "out", 3, 1_050_000, "parts")
    sb.faults = Faults.parse("s3.drop_rate=0.15,s3.drop_at=0.5,s3.fail_first=1:503,s3.retry_after=0")
    patient = FAST.__class__(max_attempts=8, base_delay=0.001, max_delay=0.005)  # drops are random: room for runs
    with Ledger(tmp_path / "state") as ledger:
        results = Transfer(workers=1, s3=S3Client(sb.s3.endpoint), s3_workers=2, s3_parts=4, s3_part_size=PART,
                           policy=patient, ledger=ledger).run(tasks)
        rows = ledger.rows()
    assert [r.status for r in results] == ["fetched"] * len(tasks), [r.error for r in results]
    records = sb.log.records()
    for task in tasks:
        assert task.dest.read_bytes() == sb.catalog.body(task.key)
        assert rows[task.key].source == "s3" and rows[task.key].etag
        asked = set(_ranges(records, task.key))
        assert asked == {f"bytes={a}-{min(a + PART, task.size) - 1}" for a in range(0, task.size, PART)}
    assert sb.log.peak_open >= 2  # parts of one object overlap
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


PARTS_DRIVER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from mastpipe.stages.retrieve.ledger import Ledger
    from mastpipe.retry import RetryPolicy
    from mastpipe.stages.retrieve.engine import FileTask, Transfer
    from mastpipe.stages.retrieve.s3 import S3Client
    spec = json.loads(Path(sys.argv[1]).read_text())
    tasks = [FileTask(t["key"], t["url"], Path(t["dest"]), t["size"]) for t in spec["tasks"]]
    Transfer(workers=1, s3=S3Client(spec["endpoint"]), s3_parts=3, s3_part_size=spec["part"],
             ledger=Ledger(spec["state"]), policy=RetryPolicy(base_delay=0.01)).run(tasks)
""")


def test_kill_9_during_a_multipart_download_then_rerun_fetches_no_complete_part_twice(sb, tmp_path: Path) -> None:
    from mastpipe.stages.retrieve.parts import data_path, state_path

    size = 2_000_000
    (task,) = _s3_tasks(sb, tmp_path / "out", 2, size, "killparts")[:1]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"state": str(tmp_path / "state"), "endpoint": sb.s3.endpoint, "part": PART,
                                "tasks": [{"key": task.key, "url": task.url, "dest": str(task.dest), "size": size}]}))
    (tmp_path / "driver.py").write_text(PARTS_DRIVER)
    sb.faults = Faults.parse("s3.bandwidth=300000")  # per connection: 3 parts at once, ~1 part/s
    proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(spec)])
    try:
        deadline = time.monotonic() + 90
        done: list[int] = []
        while time.monotonic() < deadline:
            try:
                done = json.loads(state_path(task.dest).read_text())["done"]
            except (OSError, ValueError):
                done = []
            if len(done) >= 4:
                break
            time.sleep(0.05)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = json.loads(state_path(task.dest).read_text())["done"]
    assert 4 <= len(done) < size // PART and data_path(task.dest).exists(), done
    sb.faults = None
    assert sb.log.wait_quiet(timeout=30)  # the killed driver's requests are logged once the proxy sees them end
    sb.log.clear()
    with Ledger(tmp_path / "state") as ledger:
        (result,) = Transfer(workers=1, s3=S3Client(sb.s3.endpoint), s3_parts=3, s3_part_size=PART,
                             ledger=ledger, policy=FAST).run([task])
    assert result.status == "fetched", result.error
    assert task.dest.read_bytes() == sb.catalog.body(task.key)
    again = set(_ranges(sb.log.records(), task.key))
    complete = {f"bytes={n * PART}-{min((n + 1) * PART, size) - 1}" for n in done}
    assert not again & complete  # no complete part fetched twice
    assert again | complete == {f"bytes={a}-{min(a + PART, size) - 1}" for a in range(0, size, PART)}
    assert not state_path(task.dest).exists() and not data_path(task.dest).exists()


def test_an_object_changed_between_its_parts_starts_again_instead_of_splicing(sb, tmp_path: Path) -> None:
    from mastpipe.stages.retrieve.parts import data_path, state_path

    (task,) = _s3_tasks(sb, tmp_path / "out", 1, 1_050_000, "changedparts")[:1]
    sb.faults = Faults.parse("s3.drop_rate=1,s3.drop_at=0.5")
    client = S3Client(sb.s3.endpoint)
    (failed,) = Transfer(workers=1, s3=client, s3_parts=3, s3_part_size=PART,
                         policy=FAST.__class__(max_attempts=1)).run([task])
    assert failed.status == "failed" and data_path(task.dest).exists() and state_path(task.dest).exists()
    assert json.loads(state_path(task.dest).read_text())["etag"]  # what every part must match
    sb.faults = None
    sb.catalog.reprocess(task.key)  # same size, new bytes and ETag under the parts
    sb.log.clear()
    events: list[str] = []
    (result,) = Transfer(workers=1, s3=client, s3_parts=3, s3_part_size=PART, policy=FAST,
                         on_event=lambda e: events.append(e.kind)).run([task])
    assert result.status == "fetched", result.error
    assert task.dest.read_bytes() == sb.catalog.body(task.key)
    statuses = [r.status for r in sb.log.records() if r.endpoint == "s3" and r.method == "GET"]
    assert 412 in statuses and "restart" in events  # IfMatch refused the parts' old ETag
    assert not state_path(task.dest).exists() and not data_path(task.dest).exists()
