"""The whole job as a user meets it: cold processes, mastpipe beside the tutorial's code, one run.

    python benchmarks/bench_whole_job.py --scale 200x5000 --rounds 3   # 1,000,000 product rows
    python benchmarks/bench_whole_job.py --scale 40x5000 --rounds 2    # quick check
    python benchmarks/bench_whole_job.py --scale 2000x5000 --rounds 1 --no-tutorial --job-only   # 10M rows

The sandbox serves ``--scale N x M`` (N observations of M products) in a process of its own,
its product lists rendered once before the rounds (see ``warm_sandbox``; ``--cold-sandbox``
measures without).
Each round runs, each in a fresh process, alternating:

1. **the tutorial's code** (the seed notebook): ``Observations.query_criteria``,
   ``get_product_list`` per observation, ``unique(vstack(...), keys='productFilename')`` and its
   per-row ``product_filter`` -- unmodified astroquery configured by ``astroquery.cfg``;
2. **mastpipe** ``mastpipe run recipe.yaml --until filter`` (manifest mode) with an empty state
   directory.

For each: wall time, client CPU (user + system of that process alone, from ``wait4``) and peak
RSS (``ru_maxrss`` of that process). Then, on the state directory of the last mastpipe round:

3. **unique + filter in a fresh process on the products stage's own output**: a new process
   reads the products checkpoint (not timed) and times mastpipe's unique and filter; another
   new process gets the same rows as astroquery gives them (one masked ``str`` table per
   observation, not timed) and times the tutorial's ``unique(vstack)`` + ``product_filter``.
4. **checkpoints**: in that fresh process, writing and reading the products checkpoint (whole)
   and unique's and filter's (rows of products), per million rows.
5. **plan and status** from those checkpoints, each a cold ``mastpipe`` process, at least twice
   (``run --until filter`` leaves the outlook and the plan; later calls reuse them); then again
   after a whole run (manifest mode), whose retrieve stage leaves the outlook behind.
6. **plan and status in download mode** (``--download 0,0.1,1``): for each fraction, the same
   checkpoints with ``mode: download``, a ledger recording that fraction of the files as done and
   those files on disk (sparse, of their listed size: written as a run records them, without
   1M requests), then what a download run does at its end (the files judged and remembered in
   ``files.npz``, the run lock held; its time is printed); fraction 0: no ledger, then
   ``run --until filter``. Then ``status`` and ``plan``, cold processes, every run listed, each
   re-checking every file against the disk (the first right after the state was written, the
   directories changed in the 2 s before listed again).

Every round is printed; medians are given with min-max. Targets (issue 15): 1 -- CPU >= 8x less,
wall >= 5x less, peak RSS <= 1 GB at 1M rows; 3 -- >= 50x; 4 -- <= 0.3 s per stage per million
rows; 7 -- plan and status < 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mastpipe.sandbox import tutorial  # noqa: E402

RECIPE = """\
version: 1
name: whole-job
mast: {timeout: 600, retries: 2}
query:
  scale:
    criteria: {obs_collection: JWST, proposal_id: "9999"}
products:
  batch_size: 5
filter:
  contains: [_cal.fits]
  columns:
    calib_level: 2
retrieve:
  mode: manifest
  destination: out
"""

TUTORIAL = textwrap.dedent("""\
    import json, time
    import numpy as np
    from astroquery.mast import Observations
    from astropy.table import unique, vstack
    {product_filter}
    matched_obs = Observations.query_criteria(obs_collection='JWST', proposal_id='9999')
    t = [Observations.get_product_list(obs) for obs in matched_obs]
    files = unique(vstack(t), keys='productFilename')
    mask = product_filter(files, ['_cal.fits'])
    print(json.dumps({{"rows": sum(len(x) for x in t), "unique": len(files), "kept": int(np.sum(mask))}}))
    """).format(product_filter=tutorial.PRODUCT_FILTER)

FRESH_MASTPIPE = """\
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
from mastpipe.state import Checkpoints, write_table
from mastpipe.recipe.models import Filter
from mastpipe.stages.unique import unique_rows
from mastpipe.stages.filter import keep_mask
given = Checkpoints(Path(sys.argv[1]))
products = given.load("products", given.sidecar("products"))
loaded = time.perf_counter() - t0
rules = Filter(contains=["_cal.fits"], guide_stars="omit")
t0 = time.perf_counter()
uniq, _, urows = unique_rows(products, "productFilename")
t1 = time.perf_counter()
mask = keep_mask(uniq, rules)
kept = uniq.copy(copy_data=False) if mask.all() else uniq[mask]
t2 = time.perf_counter()
out = {"load": loaded, "unique": t1 - t0, "filter": t2 - t1, "rows": len(products), "unique_rows": len(uniq),
       "kept": len(kept)}
# checkpoints: products as the stage leaves it (its batches, 25,000 rows each here, then the
# sidecar listing them), unique and filter as rows of it; written, then read back
import numpy as np
cp = Checkpoints(Path(sys.argv[2]))
t0 = time.perf_counter()
parts = []
for start in range(0, len(products), 25_000):
    parts.append(cp.state.parts_for("fp") / f"{start}.fits")
    parts[-1].parent.mkdir(parents=True, exist_ok=True)
    write_table(parts[-1], products[start:start + 25_000])
stored = cp.save_parts("products", products, parts, "fp", 0.0); t1 = time.perf_counter()
digest = cp.sidecar("products").digest
cp.save_rows("unique", uniq, "products", stored, digest, urows, "fp-u", 0.0); t2 = time.perf_counter()
cp.save_rows("filter", kept, "products", stored, digest, urows[np.flatnonzero(mask)], "fp-f", 0.0)
t3 = time.perf_counter()
fresh = Checkpoints(Path(sys.argv[2]))
t4 = time.perf_counter(); base = fresh.load("products", fresh.sidecar("products")); t5 = time.perf_counter()
fresh.load("unique", fresh.sidecar("unique"), (base, digest)); t6 = time.perf_counter()
fresh.load("filter", fresh.sidecar("filter"), (base, digest)); t7 = time.perf_counter()
out["checkpoints"] = {"products": [t1 - t0, t5 - t4], "unique": [t2 - t1, t6 - t5], "filter": [t3 - t2, t7 - t6]}
print(json.dumps(out))
"""

FRESH_TUTORIAL = """\
import json, sys, time
import numpy as np
from pathlib import Path
from astropy.table import MaskedColumn, Table, unique, vstack
{product_filter}
from mastpipe.state import Checkpoints  # the products stage's output, untimed
given = Checkpoints(Path(sys.argv[1]))
stored = given.load("products", given.sidecar("products"))
# the same rows as astroquery gives them: str columns, masked, one table per observation
table = Table(masked=True)
for name in stored.colnames:
    column = np.asarray(stored[name])
    values = column.astype(str) if column.dtype.kind == "S" else column
    table[name] = MaskedColumn(values, mask=(values == "") if values.dtype.kind == "U" else False)
owners = np.asarray(table["parent_obsid"])
bounds = np.flatnonzero(np.append(True, owners[1:] != owners[:-1]))
per_obs = [table[a:b] for a, b in zip(bounds, np.append(bounds[1:], len(table)))]
t0 = time.perf_counter()
files = unique(vstack(per_obs), keys="productFilename")
t1 = time.perf_counter()
mask = product_filter(files, ["_cal.fits"])
t2 = time.perf_counter()
print(json.dumps({{"vstack+unique": t1 - t0, "product_filter": t2 - t1, "unique": len(files), "kept": int(mask.sum())}}))
""".format(product_filter=tutorial.PRODUCT_FILTER)


DOWNLOAD_STATE = """\
import os, shutil, sys, time
from pathlib import Path
from mastpipe.runner import Pipeline
from mastpipe.stages.retrieve.ledger import Ledger
from mastpipe.stages.retrieve.tableplan import plan_table
recipe, state, url, fraction = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
pipeline = Pipeline(recipe, mast_url=url, state_dir=state)
table = pipeline.checkpoints.load("filter", pipeline.checkpoints.sidecar("filter"))
dest = (recipe.resolve().parent / pipeline.recipe.retrieve.destination).resolve()
plan = plan_table(table, dest, pipeline.recipe.retrieve.layout, url)
tasks = plan.tasks(table, url)
n = int(len(tasks) * fraction)
if n:
    with Ledger(state) as ledger:
        for task in tasks[:n]:
            task.dest.parent.mkdir(parents=True, exist_ok=True)
            with open(task.dest, "wb") as handle:
                handle.truncate(task.size or 0)
            ledger.mark_done(task.key, task.dest, task.size or 0, "0" * 64, 1, stat=os.stat(task.dest),
                             source="mast", version=task.version)
    # what a download run does at its end, the run lock held: judge the files and remember them
    from mastpipe.state import RunLock
    started = time.perf_counter()
    with RunLock(pipeline.state):
        pipeline.retrieve_status(table, locked=True)
    print(f"(the run's end: files judged and remembered in {time.perf_counter() - started:.1f} s)")
print(f"{n} of {len(tasks)} files done")
"""


def _env(extra: dict | None = None) -> dict:
    # PYTHONDONTWRITEBYTECODE (set on the development machine) would make every cold mastpipe
    # process compile its own modules again, which an installed copy never does.
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT / "src"))
    env.update(extra or {})
    return env


def measured(argv: list[str], env: dict, cwd: Path) -> dict:
    """Run ``argv``; its wall time, its own CPU (user + system) and peak RSS, and its stdout."""
    out = cwd / f".out-{time.monotonic_ns()}"
    with open(out, "w") as handle:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out.read_text()
    out.unlink()
    if proc.returncode:
        raise RuntimeError(f"{argv[:3]} failed ({proc.returncode}):\n{text[-3000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024, "out": text}


def warm_sandbox(url: str) -> None:
    """Ask the sandbox once for every observation's product list, untimed, so that it keeps
    them rendered (``Lookup.products_json``) and answers the rounds from memory.

    Rendering a million rows as JSON is ~18 s of the sandbox's CPU; on a 2-core machine that
    shares the cores with the client under test and sets the wall time of the faster client.
    MAST's servers are not the client's cores: with the answers rendered, both clients' wall
    times are their own. ``--cold-sandbox`` measures without this.
    """
    import requests
    from urllib.parse import quote

    def invoke(service: str, params: dict) -> dict:
        request = {"service": service, "params": params, "format": "json", "pagesize": 50_000, "page": 1}
        answer = requests.post(url + "/api/v0/invoke", data="request=" + quote(json.dumps(request)),
                               headers={"Content-type": "application/x-www-form-urlencoded"}, timeout=600)
        answer.raise_for_status()
        return answer.json()

    started = time.perf_counter()
    found = invoke("Mast.Caom.Filtered", {"columns": "obsid", "filters": [
        {"paramName": "obs_collection", "values": ["JWST"]}, {"paramName": "proposal_id", "values": ["9999"]}]})
    obsids = [str(row["obsid"]) for row in found["data"]]
    for obsid in obsids:
        invoke("Mast.Caom.Products", {"obsid": obsid})
    print(f"  sandbox warmed: {len(obsids)} product lists rendered in {time.perf_counter() - started:.1f} s "
          "(untimed; --cold-sandbox to measure without)", flush=True)


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    median = statistics.median(values)
    if len(values) == 1:
        return fmt.format(median)
    return f"{fmt.format(median)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="200x5000", help="sandbox scale NxM (default 200x5000: 1M rows)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-tutorial", action="store_true", help="mastpipe only (for sizes the tutorial cannot hold)")
    parser.add_argument("--job-only", action="store_true",
                        help="stop after the whole-job rounds (for 3M and 10M rows: the rest takes long)")
    parser.add_argument("--cold-sandbox", action="store_true",
                        help="do not ask for every product list once before the rounds (see warm_sandbox)")
    parser.add_argument("--download", default="", help="fractions of files done for the download-mode status and "
                        "plan (e.g. 0,0.1,1; default: none)")
    parser.add_argument("--only-status", action="store_true",
                        help="skip the tutorial's side, unique + filter and checkpoint timings (one mastpipe run)")
    args = parser.parse_args()
    n_obs, per_obs = (int(x) for x in args.scale.split("x"))
    print(f"whole job to filter, {n_obs * per_obs:,} product rows ({args.scale}); Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
          flush=True)
    code = f"from mastpipe.sandbox import serve_forever; serve_forever(scale={args.scale!r})"
    sandbox = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        url = sandbox.stdout.readline().strip()
        if not args.cold_sandbox:
            warm_sandbox(url)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "recipe.yaml").write_text(RECIPE)
            (root / "tutorial.py").write_text(TUTORIAL)
            aq = root / "aq"
            (aq / "xdg" / "astropy").mkdir(parents=True)
            (aq / "xdg" / "astropy" / "astroquery.cfg").write_text(f"[mast]\nserver = {url}\n")
            (aq / "cache" / "astropy").mkdir(parents=True)
            aq_env = _env({"XDG_CONFIG_HOME": str(aq / "xdg"), "XDG_CACHE_HOME": str(aq / "cache")})
            runs: dict[str, list[dict]] = {"tutorial": [], "mastpipe": []}
            state = root / "state"
            for round_ in range(1, args.rounds + 1):
                if not args.no_tutorial and not args.only_status:
                    r = measured([sys.executable, str(root / "tutorial.py")], aq_env, root)
                    runs["tutorial"].append(r)
                    print(f"  round {round_} tutorial: wall {r['wall']:.1f} s, CPU {r['cpu']:.1f} s, "
                          f"peak RSS {r['rss_mb']:,.0f} MB; {r['out'].strip().splitlines()[-1]}", flush=True)
                subprocess.run(["rm", "-rf", str(state), str(root / "out")], check=True)
                r = measured([sys.executable, "-m", "mastpipe.cli", "run", "recipe.yaml", "--mast-url", url,
                              "--state-dir", str(state), "--until", "filter", "-q"], _env(), root)
                runs["mastpipe"].append(r)
                print(f"  round {round_} mastpipe: wall {r['wall']:.1f} s, CPU {r['cpu']:.1f} s, "
                      f"peak RSS {r['rss_mb']:,.0f} MB", flush=True)
            print("\n| whole job to filter | wall s | client CPU s | peak RSS MB |\n|---|---:|---:|---:|")
            for who, rs in runs.items():
                if rs:
                    print(f"| {who} | {spread([r['wall'] for r in rs])} | {spread([r['cpu'] for r in rs])} | "
                          f"{spread([r['rss_mb'] for r in rs], '{:,.0f}')} |")
            if runs["tutorial"]:
                wall = statistics.median(r["wall"] for r in runs["tutorial"]) / statistics.median(r["wall"] for r in runs["mastpipe"])
                cpu = statistics.median(r["cpu"] for r in runs["tutorial"]) / statistics.median(r["cpu"] for r in runs["mastpipe"])
                print(f"| ratio | {wall:.1f}x (target >= 5x) | {cpu:.1f}x (target >= 8x) | "
                      f"target <= 1,024 MB at 1M rows |")

            if args.only_status:
                status_benchmarks(args, root, state, url)
                return
            if args.job_only:
                return
            print("\nunique + filter, fresh processes, on the products stage's own output", flush=True)
            fresh = [json.loads(measured([sys.executable, "-c", FRESH_MASTPIPE, str(state), str(root / "cp")],
                                         _env(), root)["out"].strip().splitlines()[-1]) for _ in range(args.rounds)]
            ours = [f["unique"] + f["filter"] for f in fresh]
            print(f"  mastpipe unique + filter: {spread(ours, '{:.2f}')} s (unique {spread([f['unique'] for f in fresh], '{:.2f}')}, "
                  f"filter {spread([f['filter'] for f in fresh], '{:.2f}')}); {fresh[0]['rows']:,} -> {fresh[0]['unique_rows']:,} -> "
                  f"{fresh[0]['kept']:,} rows")
            if not args.no_tutorial:
                seed = [json.loads(measured([sys.executable, "-c", FRESH_TUTORIAL, str(state)], _env(), root)["out"]
                                   .strip().splitlines()[-1]) for _ in range(args.rounds)]
                theirs = [s["vstack+unique"] + s["product_filter"] for s in seed]
                assert seed[0]["kept"] == fresh[0]["kept"], (seed[0], fresh[0])
                print(f"  tutorial unique(vstack) + product_filter: {spread(theirs, '{:.2f}')} s; same selection")
                print(f"  ratio {statistics.median(theirs) / statistics.median(ours):.0f}x (target >= 50x)")
            millions = fresh[0]["rows"] / 1e6
            print("\ncheckpoints, per million rows (write + read), fresh process")
            for stage in ("products", "unique", "filter"):
                totals = [sum(f["checkpoints"][stage]) / millions for f in fresh]
                print(f"  {stage}: {spread(totals, '{:.2f}')} s/M rows (write {fresh[0]['checkpoints'][stage][0]:.2f} s, "
                      f"read {fresh[0]['checkpoints'][stage][1]:.2f} s) target <= 0.3")

            print("\nplan and status from the checkpoints, cold processes (every run listed; the first status "
                  "reads the filter checkpoint and remembers its outlook, the first plan remembers its answer, "
                  "later ones reuse them)")
            for after in ("run --until filter", "a whole run (its manifest written)"):
                if after.startswith("a whole"):  # the retrieve stage leaves the outlook status would find
                    subprocess.run(["rm", "-f", str(state / "outlook.json"), str(state / "plan.json")], check=True)
                    r = measured([sys.executable, "-m", "mastpipe.cli", "run", "recipe.yaml", "--mast-url", url,
                                  "--state-dir", str(state), "-q"], _env(), root)
                    print(f"  (whole run, manifest mode: wall {r['wall']:.1f} s, CPU {r['cpu']:.1f} s)")
                print(f"  after {after}:")
                for command in ("status", "plan"):
                    rs = [measured([sys.executable, "-m", "mastpipe.cli", command, "recipe.yaml", "--state-dir",
                                    str(state), "--mast-url", url], _env(), root) for _ in range(max(args.rounds, 2))]
                    runs_text = ", ".join(f"{r['wall']:.2f} s ({r['cpu']:.2f} s CPU, {r['rss_mb']:,.0f} MB)" for r in rs)
                    print(f"    mastpipe {command}: {runs_text} (target < 2 s)")
            download_benchmarks(args, root, state, url)
    finally:
        sandbox.terminate()
        sandbox.wait(10)


def _cold(command: str, recipe: str, state: Path, url: str, root: Path, times: int) -> str:
    rs = [measured([sys.executable, "-m", "mastpipe.cli", command, recipe, "--state-dir", str(state), "--mast-url", url],
                   _env(), root) for _ in range(times)]
    return ", ".join(f"{r['wall']:.2f} s ({r['cpu']:.2f} s CPU, {r['rss_mb']:,.0f} MB)" for r in rs)


def status_benchmarks(args: argparse.Namespace, root: Path, state: Path, url: str) -> None:
    """Step 5 without a whole run (``--only-status``), then step 6."""
    print("\nafter run --until filter (manifest mode), cold processes:")
    for command in ("status", "plan"):
        print(f"    mastpipe {command}: {_cold(command, 'recipe.yaml', state, url, root, max(args.rounds, 2))} "
              "(target < 2 s)", flush=True)
    download_benchmarks(args, root, state, url)


def download_benchmarks(args: argparse.Namespace, root: Path, state: Path, url: str) -> None:
    """Step 6: status and plan in download mode, for each fraction of files done."""
    import shutil

    for fraction in [float(f) for f in args.download.split(",") if f]:
        recipe = root / "download.yaml"
        recipe.write_text(RECIPE.replace("mode: manifest", "mode: download").replace("destination: out",
                                                                                      "destination: downloaded"))
        there = root / "download-state"
        shutil.rmtree(there, ignore_errors=True)
        shutil.rmtree(root / "downloaded", ignore_errors=True)
        shutil.copytree(state, there, ignore=shutil.ignore_patterns("outlook.json", "plan.json", "ledger.sqlite*"))
        started = time.perf_counter()
        made = measured([sys.executable, "-c", DOWNLOAD_STATE, str(recipe), str(there), url, str(fraction)], _env(), root)
        print(f"\ndownload mode, {made['out'].strip().splitlines()[-1]} (state built in "
              f"{time.perf_counter() - started:.0f} s); cold processes, every run:", flush=True)
        for line in made["out"].strip().splitlines()[:-1]:
            print(f"  {line}", flush=True)
        if not fraction:  # as a user gets there: run --until filter in download mode (stages reused)
            r = measured([sys.executable, "-m", "mastpipe.cli", "run", "download.yaml", "--mast-url", url,
                          "--state-dir", str(there), "--until", "filter", "-q"], _env(), root)
            print(f"  (run --until filter, download mode, stages reused: wall {r['wall']:.1f} s, CPU {r['cpu']:.1f} s)")
        # no pause: what a run changed in the 2 s before its end (recheck.RACY_NS) is listed again
        for command in ("status", "plan"):
            print(f"    mastpipe {command}: {_cold(command, 'download.yaml', there, url, root, max(args.rounds, 3))} "
                  "(target < 2 s)", flush=True)


if __name__ == "__main__":
    main()
