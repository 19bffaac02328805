"""What `status` and `plan` say after real runs against the sandbox: stale reasons that name
what changed, files already present, and the state of the retrieve stage."""

from __future__ import annotations

from pathlib import Path

from _examples import edit, example_text

from mastpipe.runner import Pipeline

# The tutorial's example (pipelines/) without the guide-star files, downloading flat into data/.
RECIPE = example_text(name="status-plan", description=None, mast={"timeout": 5, "retries": 1},
                      filter={"guide_stars": "omit"}, retrieve={"destination": "data", "layout": None})

SANDBOX_ID = "mastpipe-sandbox:seed=0"  # what the CLI's --sandbox passes as server_id
TABLE_STAGES = ("query", "products", "unique", "filter")


def _recipe(tmp_path: Path, text: str = RECIPE) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def _pipeline(tmp_path: Path, url: str, text: str = RECIPE, **kwargs) -> Pipeline:
    return Pipeline(_recipe(tmp_path, text), mast_url=url, state_dir=tmp_path / "state", environ={}, **kwargs)


def _statuses(pipeline: Pipeline) -> dict[str, tuple[str, list[str]]]:
    return {s.stage: (s.state, s.reasons) for s in pipeline.status()}


def _actions(result) -> dict[str, tuple[str, list[str]]]:
    return {s.stage: (s.action, s.reasons) for s in result.stages}


# -- M1: a changed server is named as such, not as a changed recipe ------------------------------


def test_status_names_a_changed_server_not_the_recipe(sandbox, tmp_path):
    _pipeline(tmp_path, sandbox.url).run(until="filter")
    server_changed = f"MAST server changed ({sandbox.url} → https://mast.stsci.edu)"
    statuses = _statuses(_pipeline(tmp_path, "https://mast.stsci.edu"))
    assert statuses == {
        "query": ("stale", [server_changed]),
        "products": ("stale", [server_changed]),
        "unique": ("stale", ["an earlier stage will rerun"]),
        "filter": ("stale", ["an earlier stage will rerun"]),
    }
    # the same server again: nothing stale
    assert {state for state, _ in _statuses(_pipeline(tmp_path, sandbox.url)).values()} == {"current"}


def test_a_run_against_another_server_gives_the_server_as_its_reason(sandbox_factory, tmp_path):
    first, second = sandbox_factory(seed=0), sandbox_factory(seed=0)
    _pipeline(tmp_path, first.url).run(until="filter")
    again = _pipeline(tmp_path, second.url).run(until="filter")
    server_changed = f"MAST server changed ({first.url} → {second.url})"
    assert _actions(again) == {
        "query": ("computed", [server_changed]),
        "products": ("computed", [server_changed]),
        # the same catalogue: the same products, so the later checkpoints stand
        "unique": ("reused", []),
        "filter": ("reused", []),
    }
    # and now the checkpoints belong to the second server
    assert {state for state, _ in _statuses(_pipeline(tmp_path, second.url)).values()} == {"current"}
    back = _statuses(_pipeline(tmp_path, first.url))
    assert back["query"] == ("stale", [f"MAST server changed ({second.url} → {first.url})"])


def test_a_changed_server_and_a_changed_query_are_both_named(sandbox, tmp_path):
    _pipeline(tmp_path, sandbox.url).run(until="filter")
    edited = edit(RECIPE, query={"nircam": {"criteria": {"filters": ["F277W", "F090W"]}}})
    statuses = _statuses(_pipeline(tmp_path, "https://mast.stsci.edu", edited))
    assert statuses["query"] == ("stale", [f"MAST server changed ({sandbox.url} → https://mast.stsci.edu)",
                                           "recipe section `query` changed"])


def test_sandbox_checkpoints_survive_the_sandbox_port_changing(sandbox_factory, tmp_path):
    """The built-in sandbox (``--sandbox``) gets a new port every run but serves the same
    catalogue: its checkpoints are identified by its seed, so a second run reuses them all."""
    first, second = sandbox_factory(seed=0), sandbox_factory(seed=0)
    assert first.url != second.url
    _pipeline(tmp_path, first.url, server_id=SANDBOX_ID).run(until="filter")
    again = _pipeline(tmp_path, second.url, server_id=SANDBOX_ID).run(until="filter")
    assert _actions(again) == dict.fromkeys(TABLE_STAGES, ("reused", []))
    assert [r for r in second.log.records() if r.endpoint in ("query", "products")] == []
    # what `status` without --sandbox says: the real MAST is another server, the sandbox named
    # by its identity and the URL its checkpoints came from
    statuses = _statuses(_pipeline(tmp_path, "https://mast.stsci.edu"))
    assert statuses["query"] == ("stale", [f"MAST server changed ({SANDBOX_ID} at {first.url} → "
                                           "https://mast.stsci.edu)"])
    # `status --sandbox`: no server runs, the default URL is not what the checkpoints match
    assert {state for state, _ in _statuses(Pipeline(_recipe(tmp_path), state_dir=tmp_path / "state", environ={},
                                                     server_id=SANDBOX_ID)).values()} == {"current"}


# -- M2: plan counts what a run would fetch, not what the recipe selects -------------------------


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime, to show that nothing changed."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _downloads(sb) -> list:
    return [r for r in sb.log.records() if r.endpoint == "download"]


def test_outlook_after_a_complete_run_has_nothing_to_fetch_and_touches_nothing(sandbox, tmp_path):
    import mastpipe

    outcome = mastpipe.run(_recipe(tmp_path), mast_url=sandbox.url, state_dir=tmp_path / "state")
    files = len(outcome.tables["filter"])
    assert files > 0 and outcome.exit_code == 0
    # a temporary no product wants: Transfer.plan would sweep it, the outlook must not
    orphan = next((tmp_path / "data").rglob("*.fits")).parent / ".orphan_uncal.fits.part"
    orphan.write_bytes(b"left by some earlier run")
    pipeline = _pipeline(tmp_path, sandbox.url)
    table = pipeline.run(until="filter").tables["filter"]  # writes its lock and sections.json
    before, requests = _tree(tmp_path), len(sandbox.log.records())
    outlook = pipeline.retrieve_outlook(table)
    assert (outlook.files, outlook.present, outlook.to_fetch, outlook.bytes_to_fetch) == (files, files, 0, 0)
    assert outlook.ledger and outlook.remaining == {}
    assert _tree(tmp_path) == before  # ledger, files and temporaries as they were
    assert len(sandbox.log.records()) == requests


def test_outlook_counts_exactly_what_the_next_run_fetches(sandbox, tmp_path):
    import mastpipe

    outcome = mastpipe.run(_recipe(tmp_path), mast_url=sandbox.url, state_dir=tmp_path / "state")
    paths = sorted((tmp_path / "data").rglob("*_uncal.fits"))
    gone, cut = paths[0], paths[1]
    gone.unlink()
    cut.write_bytes(cut.read_bytes()[:100])  # recorded as done, but no longer its size: refetched
    pipeline = _pipeline(tmp_path, sandbox.url)
    outlook = pipeline.retrieve_outlook(pipeline.run(until="filter").tables["filter"])
    files = len(outcome.tables["filter"])
    assert (outlook.present, outlook.to_fetch) == (files - 2, 2)
    assert outlook.remaining == {uri: sandbox.catalog.file_size(uri) for uri in outlook.remaining}
    sandbox.log.clear()
    again = mastpipe.run(_recipe(tmp_path), mast_url=sandbox.url, state_dir=tmp_path / "state")
    fetched = {r.key: r.size for r in again.result.retrieve.results if r.status == "fetched"}
    assert fetched == outlook.remaining and outlook.bytes_to_fetch == sum(fetched.values())
    assert {r.uri for r in _downloads(sandbox)} == set(fetched)


def test_outlook_on_a_fresh_state_creates_no_ledger(sandbox, tmp_path):
    pipeline = _pipeline(tmp_path, sandbox.url)
    table = pipeline.run(until="filter").tables["filter"]
    outlook = pipeline.retrieve_outlook(table)
    assert not outlook.ledger and not (tmp_path / "state" / "ledger.sqlite").exists()
    assert (outlook.present, outlook.to_fetch) == (0, len(table))
    assert outlook.bytes_to_fetch == sum(int(s) for s in table["size"])
    assert not (tmp_path / "data").exists() and _downloads(sandbox) == []


def test_plan_without_a_ledger_counts_what_the_first_run_then_does(sandbox, tmp_path):
    """Files with no ledger row and nothing on disk are counted from one listing per directory
    (tableplan, outlook); the rest one by one. Both must agree with the run that follows."""
    import shutil

    import mastpipe

    mastpipe.run(_recipe(tmp_path), mast_url=sandbox.url, state_dir=tmp_path / "first")
    shutil.rmtree(tmp_path / "first")  # no ledger: every file is judged from the disk alone
    paths = sorted((tmp_path / "data").rglob("*_uncal.fits"))
    assert len(paths) >= 4
    paths[0].unlink()  # nothing there: fetched
    cut = paths[1].with_name(f".{paths[1].name}.part")
    cut.write_bytes(paths[1].read_bytes()[:50])  # a temporary without its metadata: restarted
    paths[1].unlink()
    paths[2].write_bytes(b"not the product")  # another file under its name: replaced (overwrite: changed)
    plan = mastpipe.plan(_recipe(tmp_path), mast_url=sandbox.url, state_dir=tmp_path / "state")
    assert (plan.to_fetch, plan.present, plan.blocked) == (3, plan.files - 3, 0)
    sandbox.log.clear()
    outcome = mastpipe.run(_recipe(tmp_path), mast_url=sandbox.url, state_dir=tmp_path / "state")
    fetched = {r.key: r.size for r in outcome.result.retrieve.results if r.status == "fetched"}
    skipped = [r for r in outcome.result.retrieve.results if r.status == "skipped"]
    assert fetched == plan.outlook.remaining and plan.bytes_to_fetch == sum(fetched.values())
    assert len(skipped) == plan.present and {r.uri for r in _downloads(sandbox)} == set(fetched)


def test_status_remembers_the_files_of_a_manifest_until_the_disk_says_otherwise(sandbox, tmp_path):
    """In the modes that keep no ledger, status keeps its outlook (outlook.json) and reuses it
    only while the checkpoint and where every directory resolves are as they were."""
    import os

    import mastpipe

    text = edit(RECIPE, retrieve={"mode": "manifest"})
    mastpipe.run(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=tmp_path / "state", until="filter")
    first = mastpipe.status(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=tmp_path / "state").retrieve
    assert (tmp_path / "state" / "outlook.json").is_file()
    assert first.files > 0 and first.blocked == 0
    again = mastpipe.status(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=tmp_path / "state").retrieve
    assert (again.mode, again.files, again.blocked) == (first.mode, first.files, 0)
    # a symlink planted under one product's name leads out of the destination: refused now
    dest = _plant_symlink(tmp_path, sandbox.url, text)
    planted = mastpipe.status(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=tmp_path / "state").retrieve
    assert (planted.files, planted.blocked) == (first.files, 1)
    # the filter checkpoint rewritten behind mastpipe's back: not trusted, as a run would not
    os.unlink(dest)
    (tmp_path / "state" / "filter.fits").write_bytes(b"garbled")
    assert mastpipe.status(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=tmp_path / "state").retrieve is None


def test_a_manifest_run_leaves_the_outlook_status_would_find(sandbox, tmp_path):
    """A run in a mode without a ledger remembers its outlook, so the first status after it reads
    no table; what it remembered is what status judges afresh, and a disk that changed since
    (a symlink planted under a product's name) is not answered from it."""

    import mastpipe

    text = edit(RECIPE, retrieve={"mode": "manifest"})
    mastpipe.run(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=tmp_path / "state")
    remembered = tmp_path / "state" / "outlook.json"
    written = remembered.stat().st_ino
    after_run = mastpipe.status(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=tmp_path / "state").retrieve
    assert remembered.stat().st_ino == written  # reused, not judged again and rewritten
    remembered.unlink()
    fresh = mastpipe.status(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=tmp_path / "state").retrieve
    assert (after_run.mode, after_run.files, after_run.blocked) == (fresh.mode, fresh.files, fresh.blocked)
    assert fresh.files > 0
    mastpipe.run(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=tmp_path / "state")
    _plant_symlink(tmp_path, sandbox.url, text)
    planted = mastpipe.status(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=tmp_path / "state").retrieve
    assert (planted.files, planted.blocked) == (fresh.files, 1)


def test_run_until_filter_leaves_what_the_first_status_and_plan_would_judge(sandbox, tmp_path):
    """``run --until filter`` in a mode without a ledger remembers the outlook and the plan from
    the tables it holds: the first status and plan after it read no checkpoint, and say what
    they say when judging afresh. In download mode it leaves neither."""
    import mastpipe

    text = edit(RECIPE, retrieve={"mode": "manifest"})
    state = tmp_path / "state"
    mastpipe.run(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=state, until="filter")
    outlook, plan = state / "outlook.json", state / "plan.json"
    written = (outlook.stat().st_ino, plan.stat().st_ino)
    status = mastpipe.status(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=state)
    planned = mastpipe.plan(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=state)
    assert (outlook.stat().st_ino, plan.stat().st_ino) == written  # reused, not judged again
    outlook.unlink()
    plan.unlink()
    fresh = mastpipe.status(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=state)
    fresh_plan = mastpipe.plan(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=state)
    assert status.to_dict() | {"lock": None} == fresh.to_dict() | {"lock": None}
    assert planned.to_dict() | {"stages": None} == fresh_plan.to_dict() | {"stages": None}
    assert fresh.retrieve.files > 0 and planned.files == fresh.retrieve.files
    downloading = tmp_path / "download"
    mastpipe.run(_recipe(tmp_path), mast_url=sandbox.url, state_dir=downloading, until="filter")
    assert not (downloading / "outlook.json").exists() and not (downloading / "plan.json").exists()


def test_plan_remembers_its_answer_only_while_checkpoints_and_recipe_are_unchanged(sandbox, tmp_path):
    """In a mode without a ledger, the plan a run leaves and a second plan give the answer plan
    judges afresh without reading a table (plan.json reused, tables read only when asked for);
    a checkpoint rewritten behind
    mastpipe's back or a changed recipe makes plan judge afresh."""
    import json
    import os

    import mastpipe

    text = edit(RECIPE, retrieve={"mode": "manifest"})
    mastpipe.run(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=tmp_path / "state")
    remembered = tmp_path / "state" / "plan.json"
    left = remembered.stat().st_ino  # the run left its answer: the first plan reads no table
    after_run = mastpipe.plan(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=tmp_path / "state")
    assert remembered.stat().st_ino == left
    remembered.unlink()
    first = mastpipe.plan(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=tmp_path / "state")
    assert after_run.to_dict() | {"stages": None} == first.to_dict() | {"stages": None}
    written = remembered.stat().st_ino
    again = mastpipe.plan(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=tmp_path / "state")
    assert remembered.stat().st_ino == written
    assert again.to_dict() | {"stages": None} == first.to_dict() | {"stages": None}
    assert [(s.stage, s.action, s.rows_out) for s in again.stages] == [(s.stage, s.action, s.rows_out)
                                                                          for s in first.stages]
    assert first.files > 0 and len(again.tables["filter"]) == first.files
    # a checkpoint touched (as if rewritten): the remembered answer is not trusted
    state = tmp_path / "state"
    products = state / json.loads((state / "products.json").read_text())["parts"][0]  # a batch of products
    os.utime(products, ns=(products.stat().st_atime_ns, products.stat().st_mtime_ns + 1_000_000_000))
    touched = mastpipe.plan(_recipe(tmp_path, text), mast_url=sandbox.url, state_dir=tmp_path / "state")
    assert remembered.stat().st_ino != written
    assert touched.to_dict() | {"stages": None} == first.to_dict() | {"stages": None}
    # a changed filter: filter reruns, and plan counts what the new recipe keeps
    narrower = edit(text, filter={"guide_stars": "keep"})  # the guide-star files too
    changed = mastpipe.plan(_recipe(tmp_path, narrower), mast_url=sandbox.url, state_dir=tmp_path / "state")
    fresh = tmp_path / "fresh"
    (fresh / "recipe.yaml").parent.mkdir()
    expected = mastpipe.plan(_recipe(fresh, narrower), mast_url=sandbox.url, state_dir=fresh / "state")
    assert (changed.files, changed.bytes, changed.breakdown) == (expected.files, expected.bytes, expected.breakdown)
    assert changed.files != first.files


def test_download_mode_is_never_answered_from_what_was_remembered(sandbox, tmp_path):
    """A download run leaves no remembered outlook or plan: its answer depends on every file on
    disk and the ledger, so a file cut short after the run shows in the next status and plan."""
    import mastpipe

    outcome = mastpipe.run(_recipe(tmp_path), mast_url=sandbox.url, state_dir=tmp_path / "state")
    assert outcome.exit_code == 0
    state = tmp_path / "state"
    assert not (state / "outlook.json").exists() and not (state / "plan.json").exists()
    before = mastpipe.status(_recipe(tmp_path), mast_url=sandbox.url, state_dir=state)
    assert before.retrieve_state == "done"
    cut = sorted((tmp_path / "data").rglob("*_uncal.fits"))[0]
    cut.write_bytes(cut.read_bytes()[:100])
    after = mastpipe.status(_recipe(tmp_path), mast_url=sandbox.url, state_dir=state)
    assert (after.retrieve_state, after.retrieve.to_fetch) == ("partial", 1)
    plan = mastpipe.plan(_recipe(tmp_path), mast_url=sandbox.url, state_dir=state)
    assert plan.to_fetch == 1 and not (state / "plan.json").exists()


def test_plan_counts_a_reprocessed_file_of_the_same_size_as_the_next_run_fetches_it(sandbox, tmp_path):
    """Files recorded as done with their size on disk are counted present a column at a time;
    one whose product list now names a new version (same size) is still to fetch."""
    import mastpipe

    first = mastpipe.run(_recipe(tmp_path), mast_url=sandbox.url, state_dir=tmp_path / "state")
    uri = min(r.key for r in first.result.retrieve.results if "_gs-" not in r.key)
    sandbox.catalog.reprocess(uri, same_size=True)
    plan = mastpipe.plan(_recipe(tmp_path), mast_url=sandbox.url, state_dir=tmp_path / "state", refresh=True)
    assert (plan.to_fetch, plan.present) == (1, plan.files - 1) and set(plan.outlook.remaining) == {uri}
    sandbox.log.clear()
    again = mastpipe.run(_recipe(tmp_path), mast_url=sandbox.url, state_dir=tmp_path / "state")
    assert [r.key for r in again.result.retrieve.results if r.status == "fetched"] == [uri]


def _plant_symlink(tmp_path, url: str, text: str):
    """Put a symlink leading out of the destination under the first product's name; its path."""
    import os

    from mastpipe.stages.retrieve.stage import plan_files

    pipeline = _pipeline(tmp_path, url, text)
    table = pipeline.run(until="filter").tables["filter"]
    dest = plan_files(table, tmp_path / "data", pipeline.recipe.retrieve.layout, url)[0][0].dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(tmp_path / "elsewhere", dest)
    return dest
