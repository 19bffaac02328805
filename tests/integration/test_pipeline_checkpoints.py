"""Checkpoints against the sandbox: reuse, change detection, status, damaged checkpoints, refresh."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from _examples import edit, example_text

from mastpipe.runner import Pipeline

# The tutorial's example (pipelines/), run to `filter` only, in small batches, UNCAL files only.
RECIPE = example_text(name="ckpt", description=None, mast={"timeout": 5, "retries": 2}, products={"batch_size": 2},
                      filter={"contains": ["_uncal.fits"], "guide_stars": "omit"}, retrieve=None)

# The same recipe with sections and keys reordered, comments and blank lines added.
REORDERED = """\
# the same recipe, written differently
name: ckpt   # a comment
version: 1

filter:
  columns: {productSubGroupDescription: UNCAL}
  guide_stars: omit
  contains:
    - _uncal.fits     # the seed's prodList
query:
  nircam:
    criteria:
      filters: F277W
      instrument_name: "NIRCAM*"
      proposal_id: "1073"
      obs_collection: JWST
unique: {key: productFilename}
products:
  batch_size: 2
mast:
  retries: 2
  timeout: 5
"""

STAGES = ("query", "products", "unique", "filter")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def _invokes(sb) -> list:
    return [r for r in sb.log.records() if r.endpoint in ("query", "products")]


def _actions(result) -> dict[str, str]:
    return {s.stage: s.action for s in result.stages}


def _reasons(result) -> dict[str, list[str]]:
    return {s.stage: s.reasons for s in result.stages}


def _names(table) -> list[str]:
    return sorted(v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(table["productFilename"]))


@pytest.fixture
def first_run(sandbox, tmp_path):
    """A complete run to `filter`; returns (pipeline factory, first result)."""
    state = tmp_path / "state"

    def pipeline(text: str = RECIPE, **kwargs) -> Pipeline:
        return Pipeline(_write(tmp_path, text), mast_url=sandbox.url, state_dir=state, environ={}, **kwargs)

    result = pipeline().run(until="filter")
    assert _actions(result) == dict.fromkeys(STAGES, "computed")
    assert len(result.tables["filter"]) > 0
    sandbox.log.clear()
    return pipeline, result


def test_rerun_reuses_every_checkpoint_without_requests(sandbox, first_run):
    pipeline, first = first_run
    again = pipeline().run(until="filter")
    assert _actions(again) == dict.fromkeys(STAGES, "reused")
    assert _invokes(sandbox) == []
    assert _names(again.tables["filter"]) == _names(first.tables["filter"])
    assert [s.state for s in pipeline().status()] == ["current"] * 4


def test_reordered_keys_and_comments_rerun_nothing(sandbox, first_run):
    pipeline, _ = first_run
    assert [s.state for s in pipeline(REORDERED).status()] == ["current"] * 4
    again = pipeline(REORDERED).run(until="filter")
    assert _actions(again) == dict.fromkeys(STAGES, "reused")
    assert _invokes(sandbox) == []


def test_execution_knobs_rerun_nothing(sandbox, first_run):
    pipeline, _ = first_run
    text = edit(RECIPE, products={"batch_size": 7}, mast={"timeout": 9})
    again = pipeline(text).run(until="filter")
    assert _actions(again) == dict.fromkeys(STAGES, "reused")
    assert _invokes(sandbox) == []


def test_changing_filter_reruns_filter_only(sandbox, first_run):
    pipeline, first = first_run
    text = edit(RECIPE, filter={"contains": ["_uncal.fits", "_cal.fits"],
                               "columns": {"productSubGroupDescription": ["UNCAL", "CAL"]}})
    (status,) = [s for s in pipeline(text).status() if s.stage == "filter"]
    assert status.state == "stale" and status.reasons == ["recipe section `filter` changed"]
    assert [s.state for s in pipeline(text).status()][:3] == ["current"] * 3
    again = pipeline(text).run(until="filter")
    assert _actions(again) == {"query": "reused", "products": "reused", "unique": "reused", "filter": "computed"}
    assert _reasons(again)["filter"] == ["recipe section `filter` changed"]
    assert _invokes(sandbox) == []
    assert len(again.tables["filter"]) > len(first.tables["filter"])
    # and back again: the first selection, again from the checkpoints only
    back = pipeline().run(until="filter")
    assert _actions(back)["filter"] == "computed" and _names(back.tables["filter"]) == _names(first.tables["filter"])
    assert _invokes(sandbox) == []


def test_remember_hands_back_each_checkpoint_as_it_was_before_the_run(sandbox, first_run):
    pipeline, first = first_run
    text = edit(RECIPE, filter={"contains": ["_uncal.fits", "_cal.fits"],
                               "columns": {"productSubGroupDescription": ["UNCAL", "CAL"]}})
    again = pipeline(text).run(until="filter", remember=("query", "filter"))
    assert set(again.previous) == {"query", "filter"}
    # filter was recomputed: what it held before, not what this run wrote over it
    assert _names(again.previous["filter"]) == _names(first.tables["filter"])
    assert len(again.tables["filter"]) > len(again.previous["filter"])
    # query was reused: the table this run loaded is the previous one, read once
    assert again.previous["query"] is again.tables["query"]
    assert pipeline(text).run(until="filter").previous == {}


def test_remember_on_a_fresh_state_has_nothing_to_hand_back(sandbox, tmp_path):
    result = Pipeline(_write(tmp_path, RECIPE), mast_url=sandbox.url, state_dir=tmp_path / "s",
                      environ={}).run(until="filter", remember=("query", "filter"))
    assert result.previous == {}


def test_changing_unique_reruns_unique_and_filter(sandbox, first_run):
    pipeline, _ = first_run
    text = edit(RECIPE, unique={"key": "dataURI"})
    statuses = {s.stage: s for s in pipeline(text).status()}
    assert statuses["unique"].state == "stale" and statuses["unique"].reasons == ["recipe section `unique` changed"]
    assert statuses["filter"].state == "stale" and statuses["filter"].reasons == ["an earlier stage will rerun"]
    again = pipeline(text).run(until="filter")
    # In the sandbox every file name has one dataURI, so unique's result is the same table:
    # filter's input did not change and its checkpoint stands.
    assert _actions(again) == {"query": "reused", "products": "reused", "unique": "computed", "filter": "reused"}
    assert _invokes(sandbox) == []
    # a --from run makes filter rerun whatever its input
    forced = pipeline(text).run(until="filter", from_stage="unique")
    assert _actions(forced) == {"query": "reused", "products": "reused", "unique": "computed", "filter": "computed"}


def test_changing_unique_with_a_different_result_reruns_filter(sandbox, first_run, tmp_path):
    pipeline, first = first_run
    obsid = str(np.asarray(first.tables["query"]["obsid"]).astype(str)[0])
    # one file name under two dataURIs: deduplicating on dataURI keeps both rows
    name = str(np.asarray(first.tables["filter"]["productFilename"]).astype(str)[0])
    sandbox.catalog.add_product(obsid, productFilename=name, dataURI="mast:JWST/product/elsewhere/" + name,
                                productSubGroupDescription="UNCAL")
    refreshed = pipeline(refresh=True).run(until="filter")
    assert _actions(refreshed)["unique"] == "computed"
    assert len(refreshed.tables["filter"]) == len(first.tables["filter"])  # deduplicated on the name
    again = pipeline(edit(RECIPE, unique={"key": "dataURI"})).run(until="filter")
    assert _actions(again) == {"query": "reused", "products": "reused", "unique": "computed", "filter": "computed"}
    assert _reasons(again)["filter"] == ["input changed"]
    assert len(again.tables["filter"]) == len(first.tables["filter"]) + 1


def test_from_unique_reruns_unique_and_filter(sandbox, first_run):
    pipeline, first = first_run
    again = pipeline().run(until="filter", from_stage="unique")
    assert _actions(again) == {"query": "reused", "products": "reused", "unique": "computed", "filter": "computed"}
    assert "--from unique" in _reasons(again)["unique"] and "--from unique" in _reasons(again)["filter"]
    assert _invokes(sandbox) == []
    assert _names(again.tables["filter"]) == _names(first.tables["filter"])


def test_query_change_with_the_same_result_reruns_only_the_query(sandbox, first_run):
    pipeline, _ = first_run
    # every NIRCam observation of program 1073 in the sandbox is NIRCAM/IMAGE: same rows found
    text = edit(RECIPE, query={"nircam": {"criteria": {"instrument_name": "NIRCAM/IMAGE"}}})
    assert [s.state for s in pipeline(text).status()][0] == "stale"
    again = pipeline(text).run(until="filter")
    assert _actions(again) == {"query": "computed", "products": "reused", "unique": "reused", "filter": "reused"}
    assert _reasons(again)["query"] == ["recipe section `query` changed"]
    assert {r.endpoint for r in _invokes(sandbox)} == {"query"}


def test_query_change_with_a_different_result_reruns_products_on_changed_input(sandbox, first_run):
    pipeline, first = first_run
    text = edit(RECIPE, query={"nircam": {"criteria": {"filters": ["F277W", "F090W"]}}})
    again = pipeline(text).run(until="filter")
    assert _actions(again) == dict.fromkeys(STAGES, "computed")
    assert _reasons(again)["products"] == ["input changed"]
    assert len(again.tables["query"]) > len(first.tables["query"])


def test_status_on_a_fresh_state_says_missing(sandbox, tmp_path):
    pipeline = Pipeline(_write(tmp_path, RECIPE), mast_url=sandbox.url, state_dir=tmp_path / "fresh", environ={})
    assert [(s.state, s.reasons) for s in pipeline.status()] == [("missing", ["no checkpoint"])] * 4
    assert sandbox.log.records() == []  # status contacts no server


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 3])
    elif how == "garbage":
        path.write_bytes(b"this is not a checkpoint\n" * 40)
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize("target,how", [
    ("query.fits", "truncate"), ("query.fits", "garbage"),
    ("products.parts", "truncate"), ("products.parts", "empty"),
    ("unique.fits", "garbage"), ("filter.fits", "truncate"),
    ("query.json", "garbage"), ("products.json", "truncate"), ("filter.json", "empty"),
])
def test_damaged_checkpoint_is_named_and_recomputed(sandbox, first_run, tmp_path, caplog, target, how):
    pipeline, first = first_run
    path = tmp_path / "state" / target
    if target == "products.parts":  # the products checkpoint is the batch files its stage wrote
        path = tmp_path / "state" / json.loads((tmp_path / "state" / "products.json").read_text())["parts"][0]
    _damage(path, how)
    stage = target.split(".")[0]
    with caplog.at_level(logging.WARNING):
        again = pipeline().run(until="filter")
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(str(path) in m for m in warned), warned
    actions = _actions(again)
    assert actions[stage] == "computed"
    # the earlier stages are reused; a recomputed stage with the same result leaves later ones alone
    assert all(actions[s] == "reused" for s in STAGES[: STAGES.index(stage)])
    assert all(actions[s] == "reused" for s in STAGES[STAGES.index(stage) + 1:])
    assert _names(again.tables["filter"]) == _names(first.tables["filter"])
    # the next run is clean
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _actions(pipeline().run(until="filter")) == dict.fromkeys(STAGES, "reused")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_products_checkpoint_is_its_batches_and_a_damaged_one_costs_one_request(sandbox, first_run, tmp_path):
    """The products table is not written a second time: its checkpoint lists the batch files its
    stage wrote (FITS, each readable by astropy), and they stacked are its table. A damaged batch
    is fetched again alone; the stages after it are reused."""
    from astropy.table import Table, vstack

    pipeline, first = first_run
    state = tmp_path / "state"
    sidecar = json.loads((state / "products.json").read_text())
    assert not (state / "products.fits").exists() and len(sidecar["parts"]) > 1
    parts = [Table.read(state / part, format="fits", character_as_bytes=True) for part in sidecar["parts"]]
    assert _names(vstack([p for p in parts if len(p)])) == _names(first.tables["products"])
    assert sum(len(p) for p in parts) == sidecar["rows"] == len(first.tables["products"])
    _damage(state / sidecar["parts"][-1], "garbage")
    again = pipeline().run(until="filter")
    assert _actions(again) == {"query": "reused", "products": "computed", "unique": "reused", "filter": "reused"}
    assert len([r for r in _invokes(sandbox) if r.endpoint == "products"]) == 1
    assert _names(again.tables["filter"]) == _names(first.tables["filter"])


def test_from_products_asks_mast_again_for_every_batch(sandbox, first_run, tmp_path):
    """``--from products`` recomputes the stage from MAST, not from the batches its checkpoint is."""
    pipeline, first = first_run
    again = pipeline().run(until="filter", from_stage="products")
    assert _actions(again) == {"query": "reused", "products": "computed", "unique": "computed", "filter": "computed"}
    parts = json.loads((tmp_path / "state" / "products.json").read_text())["parts"]
    assert len([r for r in _invokes(sandbox) if r.endpoint == "products"]) == len(parts)
    assert _names(again.tables["filter"]) == _names(first.tables["filter"])


def test_refresh_asks_mast_again_and_sees_new_products(sandbox, first_run):
    pipeline, first = first_run
    obsid = sorted(str(o) for o in np.asarray(first.tables["query"]["obsid"]).astype(str))[0]
    added = sandbox.catalog.add_product(obsid, productFilename="jw01073999001_02101_00001_nrcalong_uncal.fits",
                                        productSubGroupDescription="UNCAL")
    # without --refresh the checkpoints stand (MAST is not asked)
    assert _actions(pipeline().run(until="filter")) == dict.fromkeys(STAGES, "reused")
    assert _invokes(sandbox) == []
    refreshed = pipeline(refresh=True).run(until="filter")
    assert _actions(refreshed) == dict.fromkeys(STAGES, "computed")
    assert "--refresh" in _reasons(refreshed)["query"] and "--refresh" in _reasons(refreshed)["products"]
    assert {r.endpoint for r in _invokes(sandbox)} == {"query", "products"}
    assert _names(refreshed.tables["filter"]) == sorted(_names(first.tables["filter"]) + [added["productFilename"]])


def test_refresh_with_nothing_new_recomputes_only_query_and_products(sandbox, first_run):
    pipeline, _ = first_run
    refreshed = pipeline(refresh=True).run(until="filter")
    assert _actions(refreshed) == {"query": "computed", "products": "computed", "unique": "reused", "filter": "reused"}
    products = [r for r in _invokes(sandbox) if r.endpoint == "products"]
    assert products  # product lists were really fetched again, not taken from products.parts


def test_query_max_age_requeries(sandbox, first_run):
    pipeline, _ = first_run
    text = edit(RECIPE, state={"query_max_age": "1s"})
    time.sleep(1.1)
    (query,) = [s for s in pipeline(text).status() if s.stage == "query"]
    assert query.state == "stale" and "query_max_age" in query.reasons[0]
    again = pipeline(text).run(until="filter")
    assert _actions(again)["query"] == "computed" and _actions(again)["products"] == "reused"


def test_reason_survives_a_partial_run(sandbox, first_run):
    pipeline, _ = first_run
    text = edit(RECIPE, filter={"contains": ["_cal.fits"]})
    pipeline(text).run(until="query")
    (status,) = [s for s in pipeline(text).status() if s.stage == "filter"]
    assert status.reasons == ["recipe section `filter` changed"]


def test_batches_from_another_server_are_not_reused(sandbox_factory, sandbox, tmp_path):
    from mastpipe.stages.products import batch_id, batches
    from mastpipe.state import write_table

    state = tmp_path / "state"
    path = _write(tmp_path, RECIPE)
    first = Pipeline(path, mast_url=sandbox.url, state_dir=state, environ={}).run(until="products")
    batch = batches(np.asarray(first.tables["query"]["obsid"]), 2)[0]
    # an interrupted run against this server left one batch behind ...
    (state / "products.json").unlink()
    stale = first.tables["products"][:1]
    stale["productFilename"] = [b"from-the-other-server_uncal.fits"]
    write_table(state / "products.parts" / f"{batch_id(batch)}.fits", stale)
    # ... and the next run goes to another server
    other = sandbox_factory(seed=0)
    result = Pipeline(path, mast_url=other.url, state_dir=state, environ={}).run(until="products")
    assert b"from-the-other-server_uncal.fits" not in set(np.asarray(result.tables["products"]["productFilename"]))
