"""Transfer engine benchmarks, side by side in one run against the local sandbox.

1. 200 files of 1 MB with 50 ms first-byte latency: mastpipe (8 in flight) vs astroquery's
   ``Observations.download_products`` (unmodified, in a subprocess pointed at the sandbox through
   ``$XDG_CONFIG_HOME/astropy/astroquery.cfg``, since astroquery fixes its URLs at import).
   Target: >= 6x.
2. One 1 GB file: mastpipe vs ``curl -o`` and vs ``curl`` followed by ``fsync`` (the durability
   mastpipe gives). Target: >= 0.8x curl and >= 1.0x curl + fsync, every run reported, with
   each side's CPU time (user + system), which load on the machine disturbs less than the wall.
3. A rerun over 10,000 completed files: wall time and HTTP requests. Target: < 2 s, 0 requests.
4. One 2 GB file over a link capped at 100 MB/s per connection (the sandbox's
   ``download.bandwidth``): mastpipe with ``retrieve``'s defaults (4 in flight, segments) vs
   ``curl -o`` on its one connection. Target: >= 3x curl.

The sandbox runs in a child process (as MAST is remote: the client under test must not share its
CPU or GIL with the server) and logs requests to a JSONL file, which is how requests are counted.
For the 1 GB file, dirty pages are flushed (``os.sync``) before each timed run, and the median of
five alternating runs is kept. mastpipe hashes (sha256) and fsyncs what it writes; curl does
neither, so on a machine whose cores are busy elsewhere the hash is what separates them.

Usage::

    python benchmarks/bench_transfer.py [--files 200] [--big-mb 1000] [--rounds 5] [--rerun 10000]
        [--capped-mb 2000] [--cap-mbps 100] [--skip-astroquery]

A value of 0 skips that part.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from mastpipe.sandbox import Sandbox
from mastpipe.stages.retrieve.engine import FileTask, Segmenting, Transfer
from mastpipe.stages.retrieve.ledger import Ledger
from mastpipe.stages.retrieve.segments import MIN_SIZE

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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _curl(url: str, out: Path, size: int) -> tuple[float, float, float]:
    """curl -o once: (seconds, seconds including an fsync of the file, curl's CPU seconds)."""
    cpu = _children_cpu()
    start = time.perf_counter()
    subprocess.run(["curl", "-s", "-f", "-o", str(out), url], check=True)
    elapsed = time.perf_counter() - start
    cpu = _children_cpu() - cpu
    # the same durability mastpipe gives (data on disk before the file counts as done)
    fd = os.open(out, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    synced = time.perf_counter() - start
    assert out.stat().st_size == size
    out.unlink()
    return elapsed, synced, cpu


def _mastpipe(task: FileTask, **settings: object) -> tuple[float, float]:
    """Transfer.run on one file: (seconds, CPU seconds of this process, every thread)."""
    before = os.times()
    start = time.perf_counter()
    [result] = Transfer(**settings).run([task])  # type: ignore[arg-type]
    elapsed = time.perf_counter() - start
    after = os.times()
    assert result.status == "fetched", result.error
    task.dest.unlink()
    return elapsed, (after.user - before.user) + (after.system - before.system)


def bench_big(work: Path, megabytes: int, rounds: int = 5) -> dict:
    size = megabytes * 1_000_000
    server = Server(work, "big", "", [("bench_big_cal.fits", size)])
    out: dict = {"bytes": size, "rounds": rounds}
    try:
        [row] = server.rows
        url = tasks_for(server.url, [row], work)[0].url
        curl_times, curl_synced, curl_cpu, mp_times, mp_cpu = [], [], [], [], []
        for round_ in range(rounds):  # alternate; report every run and the median of each
            # Start each run with no dirty pages: curl does not fsync, and its gigabyte written
            # back during the next run would otherwise be charged to that run.
            os.sync()
            elapsed, synced, cpu = _curl(url, work / "curl_big.fits", size)
            curl_times.append(elapsed)
            curl_synced.append(synced)
            curl_cpu.append(cpu)
            os.sync()
            elapsed, cpu = _mastpipe(FileTask(row["dataURI"], url, work / f"mp_big_{round_}.fits", size),
                                     workers=1)
            mp_times.append(elapsed)
            mp_cpu.append(cpu)
    finally:
        server.close()
    curl_s, mp_s = statistics.median(curl_times), statistics.median(mp_times)
    synced_s = statistics.median(curl_synced)
    out.update(curl_s=curl_times, curl_then_fsync_s=curl_synced, mastpipe_s=mp_times,
               curl_cpu_s=curl_cpu, mastpipe_cpu_s=mp_cpu,
               curl_MBps=size / curl_s / 1e6, curl_then_fsync_MBps=size / synced_s / 1e6,
               mastpipe_MBps=size / mp_s / 1e6, ratio=curl_s / mp_s,
               ratio_vs_curl_then_fsync=synced_s / mp_s,
               ratios=[c / m for c, m in zip(curl_times, mp_times)],
               ratios_vs_curl_then_fsync=[c / m for c, m in zip(curl_synced, mp_times)])
    return out


def bench_capped(work: Path, megabytes: int, cap_mbps: float, rounds: int = 1) -> dict:
    """One file over a link capped per connection: curl's one connection vs mastpipe's segments."""
    size = megabytes * 1_000_000
    cap = int(cap_mbps * 1e6)
    server = Server(work, "capped", f"download.bandwidth={cap}", [("bench_capped_cal.fits", size)])
    out: dict = {"bytes": size, "cap_bytes_per_s": cap, "rounds": rounds}
    # retrieve's defaults (in_flight 4, segments of 32 MiB from 256 MB); a file below the
    # default threshold (a quick run at a smaller size) is segmented all the same
    segments = Segmenting(min_size=min(MIN_SIZE, size))
    try:
        [row] = server.rows
        url = tasks_for(server.url, [row], work)[0].url
        curl_times, mp_times, mp_cpu = [], [], []
        for round_ in range(rounds):
            os.sync()
            curl_times.append(_curl(url, work / "curl_capped.fits", size)[0])
            os.sync()
            before = server.requests()
            elapsed, cpu = _mastpipe(FileTask(row["dataURI"], url, work / f"mp_capped_{round_}.fits", size),
                                     workers=4, segments=segments)
            mp_times.append(elapsed)
            mp_cpu.append(cpu)
            out["mastpipe_requests"] = server.requests() - before
    finally:
        server.close()
    curl_s, mp_s = statistics.median(curl_times), statistics.median(mp_times)
    out.update(curl_s=curl_times, mastpipe_s=mp_times, mastpipe_cpu_s=mp_cpu,
               curl_MBps=size / curl_s / 1e6, mastpipe_MBps=size / mp_s / 1e6, ratio=curl_s / mp_s)
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
    parser.add_argument("--rounds", type=int, default=5, help="runs of the 1 GB comparison")
    parser.add_argument("--rerun", type=int, default=10_000)
    parser.add_argument("--capped-mb", type=int, default=2000)
    parser.add_argument("--cap-mbps", type=float, default=100.0, help="per-connection cap, MB/s")
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
            "one_big": bench_big(work, args.big_mb, args.rounds) if args.big_mb else None,
            "rerun": bench_rerun(work, args.rerun) if args.rerun else None,
            "capped": bench_capped(work, args.capped_mb, args.cap_mbps) if args.capped_mb else None,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))
    many, big, rerun, capped = report["many_small"], report["one_big"], report["rerun"], report["capped"]
    if many:
        print(f"\n{many['files']} x 1 MB, 50 ms latency: mastpipe {many['mastpipe_s']:.2f} s "
              f"({many['mastpipe_requests']} requests)"
              + (f", astroquery {many['astroquery_s']:.2f} s ({many['astroquery_requests']} requests)"
                 f" -> {many['speedup']:.1f}x (target >= 6x)" if "speedup" in many else ""))
    if big:
        print(f"1 file of {big['bytes'] / 1e9:.1f} GB: mastpipe {big['mastpipe_MBps']:.0f} MB/s, "
              f"curl {big['curl_MBps']:.0f} MB/s -> {big['ratio']:.2f}x curl (target >= 0.8x); "
              f"curl + fsync {big['curl_then_fsync_MBps']:.0f} MB/s -> "
              f"{big['ratio_vs_curl_then_fsync']:.2f}x (target >= 1.0x)")
        for i, (c, f, m, cc, mc) in enumerate(zip(big["curl_s"], big["curl_then_fsync_s"], big["mastpipe_s"],
                                                  big["curl_cpu_s"], big["mastpipe_cpu_s"]), 1):
            print(f"  run {i}: curl {c:.2f} s (cpu {cc:.2f}), curl + fsync {f:.2f} s, mastpipe {m:.2f} s "
                  f"(cpu {mc:.2f}) -> {c / m:.2f}x curl, {f / m:.2f}x curl + fsync")
    if rerun:
        print(f"rerun over {rerun['files']} completed files: {rerun['rerun_s']:.2f} s, "
              f"{rerun['rerun_requests']} HTTP requests (target < 2 s, 0); first adoption "
              f"{rerun['adopt_s']:.2f} s, {rerun['adopt_requests']} requests")
    if capped:
        print(f"1 file of {capped['bytes'] / 1e9:.1f} GB, {capped['cap_bytes_per_s'] / 1e6:.0f} MB/s per "
              f"connection: mastpipe {capped['mastpipe_MBps']:.0f} MB/s ({capped['mastpipe_requests']} "
              f"requests), curl {capped['curl_MBps']:.0f} MB/s -> {capped['ratio']:.2f}x curl (target >= 3x)")


if __name__ == "__main__":
    main()
