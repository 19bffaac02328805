"""Throughput of the Dask executor with 1, 2 and 4 worker processes, against the sandbox.

200 files of 1 MB with 50 ms first-byte latency (``download.latency=0.05``), served by a sandbox
in its own process (``bench_transfer.Server``, as MAST is remote). Each row is one retrieve into an
empty directory with its own ledger; ``retrieve.in_flight`` equals the number of workers, one
download per worker process (``threads_per_worker=1``). The threads engine with the same
``in_flight`` is the baseline: the question is what the cluster costs per file, since on one
machine it cannot add network capacity. Cluster start-up is timed separately (a real cluster is
already running when mastpipe connects to it).

Usage::

    python benchmarks/bench_dask.py [--files 200] [--size 1000000] [--latency 0.05] [--workers 1 2 4]

Prints a Markdown table (the figures in ``benchmarks/README.md`` come from it).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_transfer import Server, tasks_for  # noqa: E402

from mastpipe.stages.retrieve.ledger import Ledger  # noqa: E402
from mastpipe.stages.retrieve.engine import Transfer  # noqa: E402


def one_run(engine_factory, tasks, state: Path) -> tuple[float, int]:
    with Ledger(state) as ledger:
        engine = engine_factory(ledger)
        start = time.perf_counter()
        results = engine.run(tasks)
        seconds = time.perf_counter() - start
    fetched = sum(r.status == "fetched" for r in results)
    return seconds, fetched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--size", type=int, default=1_000_000, help="bytes per file")
    parser.add_argument("--latency", type=float, default=0.05, help="first-byte latency, seconds")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from mastpipe.stages.retrieve.dask import DaskTransfer

    work = Path(tempfile.mkdtemp(prefix="mastpipe-bench-dask-"))
    server = Server(work, "dask", f"download.latency={args.latency}",
                    [(f"bench_{i:04d}_cal.fits", args.size) for i in range(args.files)])
    total_mb = args.files * args.size / 1e6
    rows = []
    try:
        for n in args.workers:
            before = server.requests()
            seconds, fetched = one_run(lambda ledger, n=n: Transfer(workers=n, ledger=ledger),
                                       tasks_for(server.url, server.rows, work / f"threads-{n}"),
                                       work / f"state-threads-{n}")
            rows.append(("threads", n, n, None, seconds, fetched, server.requests() - before))
            started = time.perf_counter()
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, \
                    Client(cluster, set_as_default=False) as client:
                startup = time.perf_counter() - started
                before = server.requests()
                seconds, fetched = one_run(
                    lambda ledger, n=n: DaskTransfer(client=client, in_flight=n, ledger=ledger),
                    tasks_for(server.url, server.rows, work / f"dask-{n}"), work / f"state-dask-{n}")
                rows.append(("dask", n, n, startup, seconds, fetched, server.requests() - before))
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)

    print(f"{args.files} files x {args.size / 1e6:g} MB, download.latency={args.latency}\n")
    print("| executor | worker processes | in_flight | cluster start (s) | retrieve (s) | files/s | MB/s "
          "| fetched | requests |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, workers, in_flight, startup, seconds, fetched, requests in rows:
        shown_workers = workers if kind == "dask" else "1 (threads)"
        start_text = f"{startup:.2f}" if startup is not None else "—"
        print(f"| {kind} | {shown_workers} | {in_flight} | {start_text} | {seconds:.2f} | "
              f"{args.files / seconds:.1f} | {total_mb / seconds:.1f} | {fetched} | {requests} |")


if __name__ == "__main__":
    main()
