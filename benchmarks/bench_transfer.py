"""Transfer engine benchmarks, side by side in one run against the local sandbox.

1. 200 files of 1 MB with 50 ms first-byte latency: mastpipe (8 in flight) vs astroquery's
   ``Observations.download_products`` (unmodified, in a subprocess pointed at the sandbox through
   ``$XDG_CONFIG_HOME/astropy/astroquery.cfg``, since astroquery fixes its URLs at import).
   Target: >= 6x.
2. One 1 GB file: mastpipe vs ``curl -o``. Target: >= 0.8x curl's throughput.
3. A rerun over 10,000 completed files: wall time and HTTP requests. Target: < 2 s, 0 requests.

The sandbox runs in a child process (as MAST is remote: the client under test must not share its
CPU or GIL with the server) and logs requests to a JSONL file, which is how requests are counted.
For the 1 GB file, dirty pages are flushed (``os.sync``) before each timed run, and the median of
five alternating runs is kept. mastpipe hashes (sha256) and fsyncs what it writes; curl does
neither, so on a machine whose cores are busy elsewhere the hash is what separates them.

Usage::

    python benchmarks/bench_transfer.py [--files 200] [--big-mb 1000] [--rerun 10000] [--skip-astroquery]

A value of 0 skips that part.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from mastpipe.stages.retrieve.ledger import Ledger
from mastpipe.sandbox import Sandbox
from mastpipe.stages.retrieve.engine import FileTask, Transfer

ASTROQUERY = textwrap.dedent("""
    import json, sys, time
    from astropy.table import Table
    from astroquery.mast import Observations
    rows = json.load(open(sys.argv[1]))
    table = Table(rows=[[r[c] for c in ("dataURI", "obs_collection", "obs_id", "productFilename",
                                         "size")] for r in rows],
                  names=("dataURI", "obs_collection", "obs_id", "productFilename", "size"))
    start = time.perf_counter()
    manifest = Observations.download_products(table, download_dir=sys.argv[2], verbose=False)
    elapsed = time.perf_counter() - start
    ok = int((manifest["Status"] == "COMPLETE").sum())
    print(json.dumps({"seconds": elapsed, "complete": ok}))
""")


def astroquery_env(url: str, root: Path) -> dict:
    (root / "xdg" / "astropy").mkdir(parents=True, exist_ok=True)
    (root / "xdg" / "astropy" / "astroquery.cfg").write_text(f"[mast]\nserver = {url}\n")
    (root / "cache" / "astropy").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, XDG_CONFIG_HOME=str(root / "xdg"), XDG_CACHE_HOME=str(root / "cache"),
               NO_PROXY="127.0.0.1,localhost")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "MAST_API_TOKEN"):
        env.pop(var, None)
    return env


def tasks_for(url: str, rows: list[dict], root: Path) -> list[FileTask]:
    return [FileTask(r["dataURI"], f"{url}/api/v0.1/Download/file?uri={r['dataURI']}",
                     root / "mastDownload" / r["obs_collection"] / r["obs_id"] / r["productFilename"],
                     r["size"]) for r in rows]


class Server:
    """A sandbox in its own process, as MAST is: the client under test does not share its CPU
    time or GIL with the server (curl never does). Its request log goes to a JSONL file."""

    def __init__(self, work: Path, name: str, faults: str, products: list[tuple[str, int]],
                 write_to: Path | None = None) -> None:
        self.log = work / f"{name}.jsonl"
        spec = work / f"{name}.json"
        spec.write_text(json.dumps({"faults": faults, "products": products, "log": str(self.log),
                                    "write_to": str(write_to) if write_to else None}))
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        answer = json.loads(self.proc.stdout.readline())
        self.url, self.rows = answer["url"], answer["rows"]

    def requests(self) -> int:
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def serve(spec_path: str) -> None:
    """The server side of :class:`Server` (run as ``bench_transfer.py --serve SPEC``)."""
    spec = json.loads(Path(spec_path).read_text())
    with Sandbox(seed=0, faults=spec["faults"], log_path=spec["log"]) as sb:
        obs = sb.catalog.add_observation(n_products=1, obs_id="bench_obs")
        rows = [sb.catalog.add_product(obs["obsid"], productFilename=name, size=size)
                for name, size in spec["products"]]
        for row in rows:
            row["sha256"] = sb.catalog.sha256(row["dataURI"]) if row["size"] <= 10**7 else None
            if spec["write_to"]:  # as a previous download left them
                dest = (Path(spec["write_to"]) / "mastDownload" / row["obs_collection"]
                        / row["obs_id"] / row["productFilename"])
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(sb.catalog.body(row["dataURI"]))
        print(json.dumps({"url": sb.url, "rows": rows}), flush=True)
        sys.stdin.read()


def bench_many(work: Path, n: int, skip_astroquery: bool) -> dict:
    server = Server(work, "many", "download.latency=0.05",
                    [(f"bench_{i:04d}_cal.fits", 1_000_000) for i in range(n)])
    out: dict = {"files": n, "bytes_each": 1_000_000, "latency_s": 0.05}
    try:
        tasks = tasks_for(server.url, server.rows, work / "mastpipe")
        start = time.perf_counter()
        results = Transfer(workers=8, ledger=Ledger(work / "state-many")).run(tasks)
        out["mastpipe_s"] = time.perf_counter() - start
        out["mastpipe_fetched"] = sum(r.status == "fetched" for r in results)
        out["mastpipe_requests"] = server.requests()
        assert [r.sha256 for r in results] == [row["sha256"] for row in server.rows]
        if not skip_astroquery:
            spec = work / "aq_rows.json"
            spec.write_text(json.dumps(server.rows))
            script = work / "aq.py"
            script.write_text(ASTROQUERY)
            before = server.requests()
            proc = subprocess.run([sys.executable, str(script), str(spec), str(work / "astroquery")],
                                  env=astroquery_env(server.url, work), capture_output=True,
                                  text=True, check=True)
            report = json.loads(proc.stdout.strip().splitlines()[-1])
            out["astroquery_s"] = report["seconds"]
            out["astroquery_complete"] = report["complete"]
            out["astroquery_requests"] = server.requests() - before
            out["speedup"] = out["astroquery_s"] / out["mastpipe_s"]
    finally:
        server.close()
    return out


def bench_big(work: Path, megabytes: int, rounds: int = 5) -> dict:
    size = megabytes * 1_000_000
    server = Server(work, "big", "", [("bench_big_cal.fits", size)])
    out: dict = {"bytes": size, "rounds": rounds}
    try:
        [row] = server.rows
        url = tasks_for(server.url, [row], work)[0].url
        curl_out = work / "curl_big.fits"
        curl_times, curl_synced, mp_times = [], [], []
        for round_ in range(rounds):  # alternate; report the median of each
            # Start each run with no dirty pages: curl does not fsync, and its gigabyte written
            # back during the next run would otherwise be charged to that run.
            os.sync()
            start = time.perf_counter()
            subprocess.run(["curl", "-s", "-f", "-o", str(curl_out), url], check=True)
            curl_times.append(time.perf_counter() - start)
            # the same durability mastpipe gives (data on disk before the file counts as done)
            fd = os.open(curl_out, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
            curl_synced.append(time.perf_counter() - start)
            assert curl_out.stat().st_size == size
            curl_out.unlink()

            task = FileTask(row["dataURI"], url, work / f"mp_big_{round_}.fits", size)
            os.sync()
            start = time.perf_counter()
            [result] = Transfer(workers=1).run([task])
            mp_times.append(time.perf_counter() - start)
            assert result.status == "fetched", result.error
            task.dest.unlink()
    finally:
        server.close()
    curl_s, mp_s = statistics.median(curl_times), statistics.median(mp_times)
    synced_s = statistics.median(curl_synced)
    out.update(curl_s=curl_times, curl_then_fsync_s=curl_synced, mastpipe_s=mp_times,
               curl_MBps=size / curl_s / 1e6, curl_then_fsync_MBps=size / synced_s / 1e6,
               mastpipe_MBps=size / mp_s / 1e6, ratio=curl_s / mp_s,
               ratio_vs_curl_then_fsync=synced_s / mp_s)
    return out


def bench_rerun(work: Path, n: int) -> dict:
    root = work / "rerun"
    server = Server(work, "rerun", "", [(f"r{i:05d}_cal.fits", 2880) for i in range(n)],
                    write_to=root)
    out: dict = {"files": n}
    try:
        tasks = tasks_for(server.url, server.rows, root)
        with Ledger(work / "state-rerun") as ledger:
            start = time.perf_counter()
            first = Transfer(workers=8, ledger=ledger).run(tasks)
            out["adopt_s"] = time.perf_counter() - start
            out["adopt_requests"] = server.requests()
            assert all(r.status == "skipped" for r in first)
            start = time.perf_counter()
            second = Transfer(workers=8, ledger=ledger).run(tasks)
            out["rerun_s"] = time.perf_counter() - start
            out["rerun_requests"] = server.requests()
            assert all(r.status == "skipped" for r in second)
    finally:
        server.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--big-mb", type=int, default=1000)
    parser.add_argument("--rerun", type=int, default=10_000)
    parser.add_argument("--skip-astroquery", action="store_true")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    work = Path(tempfile.mkdtemp(prefix="mastpipe-bench-"))
    try:
        report = {
            "many_small": bench_many(work, args.files, args.skip_astroquery) if args.files else None,
            "one_big": bench_big(work, args.big_mb) if args.big_mb else None,
            "rerun": bench_rerun(work, args.rerun) if args.rerun else None,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))
    many, big, rerun = report["many_small"], report["one_big"], report["rerun"]
    if many:
        print(f"\n{many['files']} x 1 MB, 50 ms latency: mastpipe {many['mastpipe_s']:.2f} s "
              f"({many['mastpipe_requests']} requests)"
              + (f", astroquery {many['astroquery_s']:.2f} s ({many['astroquery_requests']} requests)"
                 f" -> {many['speedup']:.1f}x (target >= 6x)" if "speedup" in many else ""))
    if big:
        print(f"1 file of {big['bytes'] / 1e9:.1f} GB: mastpipe {big['mastpipe_MBps']:.0f} MB/s, "
              f"curl {big['curl_MBps']:.0f} MB/s -> {big['ratio']:.2f}x curl (target >= 0.8x); "
              f"curl + fsync {big['curl_then_fsync_MBps']:.0f} MB/s -> "
              f"{big['ratio_vs_curl_then_fsync']:.2f}x")
    if rerun:
        print(f"rerun over {rerun['files']} completed files: {rerun['rerun_s']:.2f} s, "
              f"{rerun['rerun_requests']} HTTP requests (target < 2 s, 0); first adoption "
              f"{rerun['adopt_s']:.2f} s, {rerun['adopt_requests']} requests")


if __name__ == "__main__":
    main()
