"""Download throughput of the mastpipe sandbox over loopback.

Run with ``python benchmarks/bench_sandbox.py [--size-mb 1024] [--small 500] [--small-kb 100]``.
Not part of pytest.  It measures what later benchmarks must not be limited by:

1. one large file (default 1 GiB) fetched with ``curl`` (written to /dev/null),
2. the same file with ``requests`` streaming (1 MiB chunks, discarded),
3. many small files (default 500 x 100 KB) over one keep-alive ``requests.Session``,
4. the same small files in one ``curl`` process (one keep-alive connection),
5. the same small files with 16 threads (one session each), to show the server is not the limit.

The sandbox runs in a child process (as ``mastpipe sandbox serve`` would), so the client and the
server do not share one GIL.  Prints a table of MB/s (1 MB = 10**6 bytes).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import requests

MB = 10**6

# Runs in the child: a sandbox with one big and many small files; prints {url, big, small}
# as one JSON line and serves until its stdin closes.
_SERVER = """
import json, sys
from mastpipe.sandbox import Sandbox
size_mb, n_small, small_kb = map(int, sys.argv[1:4])
with Sandbox(seed=0) as sb:
    obsid = sb.catalog.observations()[0]["obsid"]
    big = sb.catalog.add_product(obsid, productFilename="bench_big_raw.fits", size=size_mb * 2**20)
    small = [sb.catalog.add_product(obsid, productFilename=f"bench_small_{i:05d}.fits",
                                    size=small_kb * 1000)["dataURI"] for i in range(n_small)]
    print(json.dumps({"url": sb.url, "big": big["dataURI"], "small": small}), flush=True)
    sys.stdin.read()
"""


class _Remote:
    """Just enough of Sandbox for the benchmarks: a URL builder."""

    def __init__(self, url: str) -> None:
        self.url = url

    def download_url(self, uri: str) -> str:
        return f"{self.url}/api/v0.1/Download/file?uri={uri}"


def bench_curl(url: str) -> "tuple[float, int] | None":
    if shutil.which("curl") is None:
        return None
    t0 = time.perf_counter()
    out = subprocess.run(["curl", "-s", "-f", "-o", "/dev/null", "-w", "%{size_download}", url],
                         check=True, capture_output=True, text=True)
    return time.perf_counter() - t0, int(out.stdout)


def bench_curl_many(urls: list[str]) -> "tuple[float, int] | None":
    """All URLs in one curl process: one keep-alive connection, no Python client overhead."""
    if shutil.which("curl") is None:
        return None
    cmd = ["curl", "-s", "-f", "-w", "%{size_download}\\n"]
    for url in urls:
        cmd += ["-o", "/dev/null", url]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0, sum(int(x) for x in out.stdout.split())


def bench_requests(url: str) -> tuple[float, int]:
    n = 0
    t0 = time.perf_counter()
    with requests.Session() as s, s.get(url, stream=True) as r:
        r.raise_for_status()
        for chunk in r.iter_content(1 << 20):
            n += len(chunk)
    return time.perf_counter() - t0, n


def bench_small(sb: _Remote, uris: list[str]) -> tuple[float, int]:
    n = 0
    t0 = time.perf_counter()
    with requests.Session() as s:
        for uri in uris:
            r = s.get(sb.download_url(uri))
            r.raise_for_status()
            n += len(r.content)
    return time.perf_counter() - t0, n


def bench_small_parallel(sb: _Remote, uris: list[str], workers: int = 16) -> tuple[float, int]:
    parts = [uris[i::workers] for i in range(workers)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        n = sum(pool.map(lambda part: bench_small(sb, part)[1], parts))
    return time.perf_counter() - t0, n


def main(argv: "list[str] | None" = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="large file size in MiB")
    ap.add_argument("--small", type=int, default=500, help="number of small files")
    ap.add_argument("--small-kb", type=int, default=100, help="small file size in KB")
    args = ap.parse_args(argv)

    child = subprocess.Popen([sys.executable, "-c", _SERVER, str(args.size_mb), str(args.small),
                              str(args.small_kb)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        info = json.loads(child.stdout.readline())
        sb, big, small = _Remote(info["url"]), info["big"], info["small"]
        rows = []
        res = bench_curl(sb.download_url(big))
        if res:
            rows.append((f"1 x {args.size_mb} MiB, curl", *res))
        rows.append((f"1 x {args.size_mb} MiB, requests stream", *bench_requests(sb.download_url(big))))
        rows.append((f"{args.small} x {args.small_kb} KB, 1 keep-alive session",
                     *bench_small(sb, small)))
        res = bench_curl_many([sb.download_url(u) for u in small])
        if res:
            rows.append((f"{args.small} x {args.small_kb} KB, curl (1 process)", *res))
        rows.append((f"{args.small} x {args.small_kb} KB, 16 threads",
                     *bench_small_parallel(sb, small)))
    finally:
        child.stdin.close()
        child.wait(timeout=30)

    import os

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, sandbox in a child process")
    print(f"{'case':<40} {'seconds':>8} {'MB':>9} {'MB/s':>9} {'files/s':>9}")
    for name, secs, nbytes in rows:
        files = args.small if "KB" in name else 1
        print(f"{name:<40} {secs:>8.2f} {nbytes / MB:>9.1f} {nbytes / MB / secs:>9.1f} "
              f"{files / secs:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
