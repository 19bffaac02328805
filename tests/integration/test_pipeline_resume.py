"""The run lock, and `kill -9` during `products` followed by a rerun that asks only for the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mastpipe.errors import LockError
from mastpipe.runner import Pipeline
from mastpipe.sandbox import Faults
from mastpipe.stages.products import batch_id
from mastpipe.state import RunLock

RECIPE = """\
version: 1
name: resume
mast: {timeout: 10, retries: 2, max_in_flight: 4}
query:
  all1073:
    criteria: {obs_collection: JWST, proposal_id: "1073"}
products:
  batch_size: 1
  in_flight: 1
filter:
  contains: [_uncal.fits]
"""


def _text(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values)]


def _rows(table) -> list[tuple]:
    names = sorted(table.colnames)
    return sorted(zip(*(_text(table[n]) for n in names)))


def _recipe(tmp_path: Path, text: str = RECIPE) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy")}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    return env


RUNNER = """\
import logging, sys
logging.basicConfig(level=logging.INFO)
from mastpipe.runner import Pipeline
from mastpipe.sandbox import Faults
Pipeline(sys.argv[1], mast_url=sys.argv[2], state_dir=sys.argv[3], environ={}).run(until=sys.argv[4])
print("DONE", flush=True)
"""


def _spawn(tmp_path: Path, recipe: Path, url: str, state: Path, until: str = "products") -> subprocess.Popen:
    script = tmp_path / "run_pipeline.py"
    script.write_text(RUNNER)
    return subprocess.Popen([sys.executable, str(script), str(recipe), url, str(state), until],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def test_second_run_on_a_locked_state_fails_fast(sandbox, tmp_path):
    state = tmp_path / "state"
    pipeline = Pipeline(_recipe(tmp_path), mast_url=sandbox.url, state_dir=state, environ={})
    with RunLock(state):
        started = time.monotonic()
        with pytest.raises(LockError, match=f"another run holds the lock on {state}") as info:
            pipeline.run(until="filter")
        assert time.monotonic() - started < 1
        assert str(os.getpid()) in str(info.value)
    assert sandbox.log.records() == []  # nothing was asked of MAST
    assert pipeline.run(until="filter").tables["filter"] is not None  # released: runs


def test_second_run_while_a_run_is_in_progress(sandbox_factory, tmp_path):
    sb = sandbox_factory(seed=0, faults="products.latency=0.1")
    state = tmp_path / "state"
    first = Pipeline(_recipe(tmp_path), mast_url=sb.url, state_dir=state, environ={})
    errors: list[BaseException] = []

    def run() -> None:
        try:
            first.run(until="products")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not any(r.endpoint == "products" for r in sb.log.records()):
            assert time.monotonic() < deadline, "the first run never reached products"
            time.sleep(0.02)
        second = Pipeline(_recipe(tmp_path), mast_url=sb.url, state_dir=state, environ={})
        with pytest.raises(LockError, match="another run holds the lock"):
            second.run(until="filter")
        assert thread.is_alive()  # it failed while the first was still running
    finally:
        thread.join(60)
    assert not errors


def test_lock_left_by_a_killed_process_is_no_obstacle(sandbox, tmp_path):
    state = tmp_path / "state"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
        import time
        from pathlib import Path
        from mastpipe.state import RunLock
        RunLock(Path({str(state)!r})).acquire()
        print("held", flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
    finally:
        holder.kill()
    assert f"pid {holder.pid}" in (state / "lock").read_text()  # the file is still there
    result = Pipeline(_recipe(tmp_path), mast_url=sandbox.url, state_dir=state, environ={}).run(until="filter")
    assert len(result.tables["filter"]) > 0


def test_kill_9_during_products_then_rerun_asks_only_for_the_rest(sandbox_factory, tmp_path):
    sb = sandbox_factory(seed=0, faults="products.latency=0.3")
    recipe = _recipe(tmp_path)
    state = tmp_path / "state"
    parts = state / "products.parts"

    proc = _spawn(tmp_path, recipe, sb.url, state)
    try:
        deadline = time.monotonic() + 30
        while len(list(parts.glob("*/*.fits"))) < 3:
            assert proc.poll() is None, f"the run ended early:\n{proc.stderr.read() if proc.stderr else ''}"
            assert time.monotonic() < deadline, "no batches were finished in time"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.4)  # let the sandbox finish (and log) a request the dead run had in flight

    obsids = sorted(_text(Pipeline(recipe, mast_url=sb.url, state_dir=tmp_path / "probe", environ={})
                          .run(until="query").tables["query"]["obsid"]))
    done = {o for o in obsids if list(parts.glob(f"*/{batch_id((o,))}.fits"))}
    assert 3 <= len(done) < len(obsids), "kill the run mid-stage: some batches done, some not"
    assert not (state / "products.json").exists()
    first_asked = [r.obsids for r in sb.log.records() if r.endpoint == "products"]
    assert all(len(o) == 1 for o in first_asked)
    sb.log.clear()

    resumed = Pipeline(recipe, mast_url=sb.url, state_dir=state, environ={}).run(until="filter")
    actions = {s.stage: s.action for s in resumed.stages}
    assert actions["query"] == "reused" and actions["products"] == "computed"
    asked = [o for r in sb.log.records() if r.endpoint == "products" for o in r.obsids]
    assert sorted(asked) == sorted(set(obsids) - done)  # each missing batch once, none done before
    assert not [r for r in sb.log.records() if r.endpoint == "query"]
    # the batches are the stage's checkpoint: the resumed ones and the new ones, in batch order
    listed = json.loads((state / "products.json").read_text())["parts"]
    assert sorted(listed) == sorted(path.relative_to(state).as_posix() for path in parts.glob("*/*.fits"))
    assert {batch_id((o,)) for o in obsids} == {Path(part).stem for part in listed}

    sb.faults = Faults.parse("")
    sb.log.clear()
    uninterrupted = Pipeline(recipe, mast_url=sb.url, state_dir=tmp_path / "clean", environ={}).run(until="filter")
    for stage in ("products", "unique", "filter"):
        assert _rows(resumed.tables[stage]) == _rows(uninterrupted.tables[stage]), stage
    # same answers, same checkpoint: order too
    assert _text(resumed.tables["products"]["productFilename"]) == _text(uninterrupted.tables["products"]["productFilename"])


def test_a_batch_file_cut_short_is_fetched_again(sandbox, tmp_path, caplog):
    recipe = _recipe(tmp_path)
    state = tmp_path / "state"
    clean = Pipeline(recipe, mast_url=sandbox.url, state_dir=tmp_path / "clean", environ={}).run(until="products")
    obsids = sorted(_text(clean.tables["query"]["obsid"]))
    # a crash left a finished batch and a garbled one
    from mastpipe.state import write_table

    clean_batches = Pipeline(recipe, mast_url=sandbox.url, state_dir=tmp_path / "clean", environ={}).batch_dir()
    parts = state / "products.parts" / clean_batches.name  # same server and query: same batch directory
    good = clean.tables["products"][np.asarray(clean.tables["products"]["parent_obsid"]).astype(str) == obsids[0]]
    write_table(parts / f"{batch_id((obsids[0],))}.fits", good)
    (parts / f"{batch_id((obsids[1],))}.fits").write_bytes(b"SIMPLE  =                    T" + b"\0" * 100)
    sandbox.log.clear()
    with caplog.at_level("WARNING", logger="mastpipe"):
        result = Pipeline(recipe, mast_url=sandbox.url, state_dir=state, environ={}).run(until="products")
    assert any(batch_id((obsids[1],)) in r.getMessage() for r in caplog.records)
    asked = sorted(o for r in sandbox.log.records() if r.endpoint == "products" for o in r.obsids)
    assert asked == obsids[1:]
    assert _rows(result.tables["products"]) == _rows(clean.tables["products"])
