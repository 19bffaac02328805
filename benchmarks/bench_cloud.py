"""Cloud-copy benchmarks, side by side in one run against the sandbox's loopback S3 bucket.

1. N files of 1 MB (default 200) from the bucket, the whole job in a cold process each:
   mastpipe (path_lookup per 50, HeadObject, then ``retrieve.s3_in_flight`` = 16 GetObjects at
   a time through the engine: temporaries, sha256, fsync, rename, ledger) vs astroquery 0.4.11
   unmodified (``enable_cloud_dataset()`` + ``download_products(..., cloud_only=True)``: per
   file one path_lookup, two HeadObjects and s3transfer's ``download_file``). astroquery asks
   ``https://mast.stsci.edu`` for path_lookup whatever its configuration, so it reaches the
   sandbox through a CONNECT proxy and a throwaway certificate authority (trustme), as the
   fidelity test does. Target: mastpipe >= 5x faster.
2. One large object (default 1000 MB): mastpipe's engine, as parallel ranged parts
   (``s3_parts`` = 8 of 16 MiB, the default) and as one stream (``s3_parts`` = 1), both hashed
   and fsynced, vs boto3's ``download_file`` with its default ``TransferConfig`` (8 MB parts, 10
   threads, no hash, no fsync), alternating, median of ``--rounds``; with ``--per-connection``
   MB/s, each S3 connection is capped (as S3's are, ~50-100 MB/s), which is where parallel parts
   pay. Target: >= 1.0x.

The sandbox (MAST's API and the S3 side: moto in its own process behind the sandbox's proxy)
runs in a child process, as the archive is remote; objects are uploaded before timing starts
(straight to moto's port, in 64 MB parts: ~30 s for 1 GB). Both clients fetch through the same
endpoint (the sandbox's proxy). moto as released reads a whole object to answer each ranged GET,
which made the 1 GB case take minutes per client and penalised whichever sent more ranges; the
sandbox's moto reads just the range (``mastpipe.sandbox.s3._LAUNCH``), as S3 does.

Usage::

    python benchmarks/bench_cloud.py [--files 200] [--big-mb 1000] [--rounds 3] [--latency 0.02]

A value of 0 skips that part.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

MASTPIPE = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    spec = json.load(open(sys.argv[1]))
    from mastpipe.archive import Archive
    from mastpipe.stages.retrieve.engine import FileTask, Transfer
    from mastpipe.stages.retrieve.ledger import Ledger
    from mastpipe.stages.retrieve.s3 import Locations, S3Client, locate
    rows, out = spec["rows"], Path(sys.argv[2])
    client = S3Client(spec["endpoint"], pool=16)
    copies = locate([r["dataURI"] for r in rows], Archive(spec["url"]), client, Locations(out / "state", "b", None))
    tasks = [FileTask(r["dataURI"], copies[r["dataURI"]].s3_uri,
                      out / "mastDownload" / r["obs_collection"] / r["obs_id"] / r["productFilename"], r["size"])
             for r in rows]
    results = Transfer(workers=4, s3=client, s3_workers=16, ledger=Ledger(out / "state")).run(tasks)
    print(json.dumps({"complete": sum(r.status == "fetched" for r in results)}))
""")

ASTROQUERY = textwrap.dedent("""
    import json, sys, warnings
    from astropy.table import Table
    from astroquery.mast import Observations
    warnings.simplefilter("ignore")
    rows = json.load(open(sys.argv[1]))["rows"]
    names = ("dataURI", "obs_collection", "obs_id", "productFilename", "size", "dataRights")
    table = Table(rows=[[r[c] for c in names] for r in rows], names=names)
    Observations.enable_cloud_dataset(verbose=False)
    manifest = Observations.download_products(table, download_dir=sys.argv[2], cloud_only=True, verbose=False)
    print(json.dumps({"complete": int((manifest["Status"] == "COMPLETE").sum())}))
""")


class Server:
    """The sandbox with its bucket, in a child process (``bench_cloud.py --serve SPEC``)."""

    def __init__(self, work: Path, spec: dict) -> None:
        path = work / f"server-{len(list(work.iterdir()))}.json"
        path.write_text(json.dumps(spec))
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        answer = json.loads(self.proc.stdout.readline())
        self.url, self.endpoint, self.rows = answer["url"], answer["endpoint"], answer["rows"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def serve(spec_path: str) -> None:
    from mastpipe.sandbox import Sandbox

    spec = json.loads(Path(spec_path).read_text())
    context = None
    if spec.get("cert"):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(spec["cert"], spec["key"])
    with Sandbox(seed=0, faults=spec["faults"], s3=True, ssl_context=context) as sb:
        obs = sb.catalog.add_observation(n_products=1, obs_id="bench_obs")
        rows = []
        for name, size in spec["products"]:
            for extra in range(50):  # the ~15 % the bucket leaves out are not what is measured here
                row = sb.catalog.add_product(obs["obsid"], productFilename=name.replace("@", f"{extra:02d}"),
                                             size=size)
                if sb.s3.key_of(row["dataURI"]):
                    rows.append(row)
                    break
        assert sb.s3 is not None and sb.s3.preload([r["dataURI"] for r in rows]) == len(rows)
        print(json.dumps({"url": sb.url, "endpoint": sb.s3.endpoint, "rows": rows}), flush=True)
        sys.stdin.read()


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{command[1]} failed:\n{proc.stderr[-3000:]}")
    return elapsed, json.loads(proc.stdout.strip().splitlines()[-1])


def bench_many(work: Path, n: int, latency: float, rounds: int) -> dict:
    import trustme

    authority = trustme.CA()
    cert = authority.issue_cert("mast.stsci.edu", "127.0.0.1")
    cert.private_key_pem.write_to_path(str(work / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(work / "cert.pem"))
    authority.cert_pem.write_to_path(str(work / "ca.pem"))
    server = Server(work, {"faults": f"s3.latency={latency}", "cert": str(work / "cert.pem"),
                           "key": str(work / "key.pem"),
                           "products": [(f"cloud_{i:04d}_@_cal.fits", 1_000_000) for i in range(n)]})
    host, port = server.url.rsplit("//", 1)[1].rsplit(":", 1)
    from mastpipe.sandbox.connect import ConnectProxy

    proxy = ConnectProxy((host, int(port)))
    (work / "xdg" / "astropy").mkdir(parents=True, exist_ok=True)
    (work / "xdg" / "astropy" / "astroquery.cfg").write_text(f"[mast]\nserver = {server.url}\n")
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
    env.update(XDG_CONFIG_HOME=str(work / "xdg"), XDG_CACHE_HOME=str(work / "cache"), REQUESTS_CA_BUNDLE=str(work / "ca.pem"),
               HTTPS_PROXY=proxy.url, NO_PROXY="127.0.0.1,localhost", AWS_ENDPOINT_URL_S3=server.endpoint,
               AWS_DEFAULT_REGION="us-east-1")
    spec = work / "rows.json"
    spec.write_text(json.dumps({"rows": server.rows, "url": server.url, "endpoint": server.endpoint}))
    (work / "mp.py").write_text(MASTPIPE)
    (work / "aq.py").write_text(ASTROQUERY)
    out: dict = {"files": len(server.rows), "bytes_each": 1_000_000, "s3_latency_s": latency,
                 "mastpipe_s": [], "astroquery_s": []}
    try:
        for round_ in range(rounds):
            seconds, report = _timed([sys.executable, str(work / "mp.py"), str(spec), str(work / f"mp{round_}")], env)
            assert report["complete"] == len(server.rows), report
            out["mastpipe_s"].append(seconds)
            seconds, report = _timed([sys.executable, str(work / "aq.py"), str(spec), str(work / f"aq{round_}")], env)
            assert report["complete"] == len(server.rows), report
            out["astroquery_s"].append(seconds)
    finally:
        server.close()
    out["speedup"] = statistics.median(out["astroquery_s"]) / statistics.median(out["mastpipe_s"])
    return out


def bench_big(work: Path, megabytes: int, rounds: int, per_connection: float = 0) -> dict:
    import boto3
    import botocore
    from botocore.config import Config

    from mastpipe.stages.retrieve.engine import FileTask, Transfer
    from mastpipe.stages.retrieve.s3 import S3Client

    size = megabytes * 1_000_000
    faults = f"s3.bandwidth={int(per_connection * 1e6)}" if per_connection else ""
    server = Server(work, {"faults": faults, "products": [("cloud_big_@_cal.fits", size)]})
    [row] = server.rows
    s3 = S3Client(server.endpoint)
    [copy] = [c for c in [s3.head(k) for k in [_key(server, row)]] if c]
    out: dict = {"bytes": size, "rounds": rounds, "per_connection_MBps": per_connection or None,
                 "mastpipe_s": [], "mastpipe_one_stream_s": [], "boto3_download_file_s": []}
    client = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                          config=Config(signature_version=botocore.UNSIGNED))
    try:
        for round_ in range(rounds):
            os.sync()
            start = time.perf_counter()
            client.download_file("stpubdata", copy.key, str(work / "boto3.fits"))
            out["boto3_download_file_s"].append(time.perf_counter() - start)
            assert (work / "boto3.fits").stat().st_size == size
            (work / "boto3.fits").unlink()
            for name, parts in (("mastpipe_s", 8), ("mastpipe_one_stream_s", 1)):
                os.sync()
                task = FileTask(row["dataURI"], copy.s3_uri, work / f"mp_big_{round_}.fits", size)
                start = time.perf_counter()
                [result] = Transfer(workers=1, s3=s3, s3_parts=parts).run([task])
                out[name].append(time.perf_counter() - start)
                assert result.status == "fetched", result.error
                task.dest.unlink()
    finally:
        server.close()
    mp, b3 = statistics.median(out["mastpipe_s"]), statistics.median(out["boto3_download_file_s"])
    one = statistics.median(out["mastpipe_one_stream_s"])
    out.update(mastpipe_MBps=size / mp / 1e6, mastpipe_one_stream_MBps=size / one / 1e6,
               boto3_MBps=size / b3 / 1e6, ratio=b3 / mp, ratio_one_stream=b3 / one)
    return out


def _key(server: Server, row: dict) -> str:
    import requests

    path = requests.get(f"{server.url}/api/v0.1/path_lookup/", params={"uri": row["dataURI"]},
                        timeout=60).json()[row["dataURI"]]["path"]
    return path.lstrip("/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve")
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--big-mb", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--per-connection", type=float, default=0, help="MB/s cap per S3 connection (0: none)")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="mastpipe-bench-cloud-") as tmp:
        work = Path(tmp)
        if args.files:
            (work / "many").mkdir()
            results["many"] = bench_many(work / "many", args.files, args.latency, args.rounds)
            print(json.dumps({"many": results["many"]}), flush=True)
        if args.big_mb:
            (work / "big").mkdir()
            results["big"] = bench_big(work / "big", args.big_mb, args.rounds, args.per_connection)
            print(json.dumps({"big": results["big"]}), flush=True)


if __name__ == "__main__":
    main()
