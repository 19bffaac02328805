"""The query and products stages survive what MAST does (errors, 429s, timeouts, slow queries),
fail cleanly on what retrying cannot fix, and never pass a cut result off as complete."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from _examples import dump, example_data

from mastpipe.errors import ArchiveError, TruncatedResultError
from mastpipe.runner import Pipeline
from mastpipe.sandbox import Faults


def recipe(batch_size: int = 1, timeout: float = 5, retries: int = 4, criteria: dict[str, str] | None = None,
           in_flight: int = 4, **mast: object) -> str:
    """The tutorial's example (pipelines/) up to `filter`, its UNCAL files, with these MAST settings;
    ``criteria`` replaces the example's search."""
    data = example_data(name="faults", description=None, unique=None, retrieve=None,
                        mast={"timeout": timeout, "retries": retries, "retry_after_cap": 5, "max_in_flight": in_flight,
                              **mast},
                        products={"batch_size": batch_size},
                        filter={"contains": ["_uncal.fits"], "guide_stars": None, "columns": None})
    if criteria is not None:
        data["query"]["nircam"]["criteria"] = criteria
    return dump(data)


def _pipeline(sb, tmp_path: Path, text: str, state: str = "state") -> Pipeline:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return Pipeline(path, mast_url=sb.url, state_dir=tmp_path / state, environ={})


def _text(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values)]


def _rows(table) -> list[tuple]:
    """A table's content as sorted tuples of text (order-free comparison)."""
    names = sorted(table.colnames)
    return sorted(zip(*(_text(table[n]) for n in names)))


def _product_requests(sb) -> list:
    return [r for r in sb.log.records() if r.endpoint == "products"]


@pytest.fixture
def expected(sandbox_factory, tmp_path):
    """The tables of a run against a sandbox without faults."""
    clean = sandbox_factory(seed=0)
    result = _pipeline(clean, tmp_path, recipe(), state="clean-state").run(until="filter")
    return result.tables


def test_products_error_rate_is_survived(sandbox_factory, tmp_path, expected):
    sb = sandbox_factory(seed=0, faults="products.error_rate=0.4,seed=3")
    result = _pipeline(sb, tmp_path, recipe(retries=8)).run(until="filter")
    requests = _product_requests(sb)
    failed = [r for r in requests if r.status >= 500]
    assert failed, "the fault never fired: the test proves nothing"
    assert len(requests) == len(failed) + len(expected["query"])  # one success per observation
    for stage in ("products", "unique", "filter"):
        assert _rows(result.tables[stage]) == _rows(expected[stage]), stage


def test_products_fail_first_503_is_retried(sandbox_factory, tmp_path, expected):
    sb = sandbox_factory(seed=0, faults="products.fail_first=2:503")
    result = _pipeline(sb, tmp_path, recipe(batch_size=3)).run(until="filter")
    by_batch: dict[tuple, list[int]] = {}
    for r in _product_requests(sb):
        by_batch.setdefault(tuple(r.obsids), []).append(r.status)
    assert len(by_batch) == 2 and all(statuses == [503, 503, 200] for statuses in by_batch.values())
    assert _rows(result.tables["filter"]) == _rows(expected["filter"])


def test_throttling_with_retry_after_is_honoured(sandbox_factory, tmp_path, expected):
    sb = sandbox_factory(seed=0, faults="products.throttle_rate=0.5,products.retry_after=0.3,seed=1")
    result = _pipeline(sb, tmp_path, recipe(retries=10)).run(until="filter")
    requests = _product_requests(sb)
    throttled = [r for r in requests if r.status == 429]
    assert throttled
    # after a 429 the same batch is not asked again before Retry-After has passed
    for r in throttled:
        later = [x for x in requests if x.obsids == r.obsids and x.time > r.time]
        assert later and min(x.time for x in later) - r.time >= 0.3 - 0.05
    assert _rows(result.tables["filter"]) == _rows(expected["filter"])


def test_retry_after_beyond_the_cap_fails_fast(sandbox_factory, tmp_path):
    sb = sandbox_factory(seed=0, faults="products.throttle_rate=1,products.retry_after=3600")
    started = time.monotonic()
    with pytest.raises(ArchiveError, match="3600"):
        _pipeline(sb, tmp_path, recipe()).run(until="filter")
    assert time.monotonic() - started < 5
    assert not (tmp_path / "state" / "products.json").exists()


def test_timed_out_batches_are_split(sandbox_factory, tmp_path, expected):
    # more than 2 obsids per request: the sandbox hangs past our timeout (MAST's behaviour)
    sb = sandbox_factory(seed=0, faults="products.max_obsids=2,products.timeout_delay=1.5")
    started = time.monotonic()
    result = _pipeline(sb, tmp_path, recipe(batch_size=6, timeout=0.4, retries=2)).run(until="filter")
    time.sleep(1.6)  # the sandbox logs a request when it answers: let the abandoned ones finish
    sizes = Counter(len(r.obsids) for r in _product_requests(sb))
    # asked once for 6 (no retry at the same size: split at once), then halves, then pairs
    assert sizes == {6: 1, 3: 2, 2: 2, 1: 2}, sizes
    answered = [r for r in _product_requests(sb) if r.status == 200]
    assert all(len(r.obsids) <= 2 for r in answered)
    assert sorted(o for r in answered for o in r.obsids) == sorted(_text(expected["query"]["obsid"]))
    assert _rows(result.tables["filter"]) == _rows(expected["filter"])
    assert time.monotonic() - started < 10


def test_timeouts_of_one_observation_are_retried_then_fail(sandbox_factory, tmp_path):
    sb = sandbox_factory(seed=0, faults="products.max_obsids=0,products.timeout_delay=0.5")
    with pytest.raises(ArchiveError, match="timed out|504"):
        _pipeline(sb, tmp_path, recipe(batch_size=2, timeout=0.2, retries=1, in_flight=1)).run(until="filter")
    time.sleep(0.6)  # the sandbox logs a request when it answers: let the abandoned ones finish
    per_key = Counter(tuple(r.obsids) for r in _product_requests(sb))
    assert per_key[max(per_key, key=len)] == 1  # the pair: asked once, then split
    assert any(len(k) == 1 and n == 2 for k, n in per_key.items())  # a single: retried once
    assert not (tmp_path / "state" / "products.json").exists()


def test_slow_queries_that_answer_executing_are_polled(sandbox_factory, tmp_path, expected):
    sb = sandbox_factory(seed=0, faults="query.executing=2")
    result = _pipeline(sb, tmp_path, recipe()).run(until="filter")
    assert _rows(result.tables["query"]) == _rows(expected["query"])
    assert _rows(result.tables["filter"]) == _rows(expected["filter"])


@pytest.mark.parametrize("endpoint,code", [("products", 400), ("query", 400), ("products", 403)])
def test_permanent_error_fails_without_retry_or_checkpoint(sandbox_factory, tmp_path, endpoint, code):
    sb = sandbox_factory(seed=0, faults=f"{endpoint}.fail_first=1000:{code}")
    with pytest.raises(ArchiveError, match=str(code)):
        _pipeline(sb, tmp_path, recipe(batch_size=2, in_flight=1)).run(until="filter")
    records = [r for r in sb.log.records() if r.endpoint == endpoint]
    assert [r.status for r in records] == [code]  # exactly one request: 4xx are not retried
    state = tmp_path / "state"
    assert not (state / f"{endpoint}.json").exists() and not (state / f"{endpoint}.fits").exists()
    assert not (state / "filter.json").exists()
    # the fault gone, a rerun completes and reuses what was done
    sb.faults = Faults.parse("")
    result = _pipeline(sb, tmp_path, recipe(batch_size=2, in_flight=1)).run(until="filter")
    assert len(result.tables["filter"]) > 0
    assert {s.stage: s.action for s in result.stages}["query"] == ("reused" if endpoint == "products" else "computed")


def test_persistent_503_fails_after_retries_without_checkpoint(sandbox_factory, tmp_path):
    """Scenario 10: a product-list POST answered 503 is retried; the failed stage writes nothing."""
    sb = sandbox_factory(seed=0, faults="products.error_rate=1:503")
    with pytest.raises(ArchiveError, match="503"):
        _pipeline(sb, tmp_path, recipe(batch_size=6, retries=2, in_flight=1)).run(until="filter")
    assert [r.status for r in _product_requests(sb)] == [503, 503, 503]
    assert (tmp_path / "state" / "query.json").exists()
    assert not (tmp_path / "state" / "products.json").exists()
    assert not list((tmp_path / "state").glob("products.parts/**/*.fits"))


def test_truncated_query_is_split_and_complete(sandbox_factory, tmp_path, expected):
    sb = sandbox_factory(seed=0, faults="query.row_cap=4")
    result = _pipeline(sb, tmp_path, recipe()).run(until="filter")
    assert len(expected["query"]) > 4
    assert _rows(result.tables["query"]) == _rows(expected["query"])
    assert _rows(result.tables["filter"]) == _rows(expected["filter"])
    assert len([r for r in sb.log.records() if r.endpoint == "query"]) > 2  # it did split


def test_truncated_query_with_a_larger_scale_program(sandbox_factory, tmp_path):
    sb = sandbox_factory(seed=0, scale=(60, 3), faults="query.row_cap=25")
    text = recipe(criteria={"obs_collection": "JWST", "proposal_id": "9999"})
    result = _pipeline(sb, tmp_path, text).run(until="query")
    expected = sorted(o["obsid"] for o in sb.catalog.observations() if o["proposal_id"] == "9999")
    assert len(expected) == 60
    assert sorted(_text(result.tables["query"]["obsid"])) == expected


def test_truncated_query_that_cannot_be_split_fails_loudly(sandbox_factory, tmp_path):
    sb = sandbox_factory(seed=0, faults="query.row_cap=1")
    for _ in range(2):  # two observations at the same instant: no t_min split separates them
        sb.catalog.add_observation(proposal_id="7777", t_min=61_000.0, t_max=61_000.1)
    text = recipe(criteria={"obs_collection": "JWST", "proposal_id": "7777"})
    with pytest.raises(TruncatedResultError, match="1 of 2"):
        _pipeline(sb, tmp_path, text).run(until="filter")
    assert not (tmp_path / "state" / "query.json").exists()


def test_query_paging(sandbox_factory, tmp_path, expected):
    sb = sandbox_factory(seed=0)
    result = _pipeline(sb, tmp_path, recipe(page_size=2)).run(until="filter")
    assert _rows(result.tables["query"]) == _rows(expected["query"])
    assert _rows(result.tables["filter"]) == _rows(expected["filter"])


def _scale_observations(archive):
    return archive.query({"obs_collection": "JWST", "proposal_id": "9999"})


def test_product_lists_cut_at_the_row_cap_are_split(sandbox_factory, tmp_path):
    from mastpipe.archive import Archive
    from mastpipe.stages import products
    from mastpipe.state import read_table, write_table

    sb = sandbox_factory(seed=0, scale=(6, 20), faults="products.row_cap=30")
    archive = Archive(sb.url, timeout=5)
    observations = _scale_observations(archive)
    store = products.BatchStore(tmp_path / "parts", write_table, read_table)
    table = products.run(observations, archive, 4, 2, store, row_cap=30)
    assert len(table) == 6 * 20
    expected = sorted(p["productFilename"] for o in observations["obsid"] for p in sb.catalog.products(str(o)))
    assert sorted(_text(table["productFilename"])) == expected
    sizes = sorted(len(r.obsids) for r in _product_requests(sb))
    # 4 (80 rows, cut to 30) -> 2+2 (40 each, cut) -> 1+1+1+1; the batch of 2 -> 1+1
    assert sizes == [1] * 6 + [2, 2, 2, 4]


def test_one_observation_at_the_row_cap_fails_loudly(sandbox_factory, tmp_path):
    from mastpipe.archive import Archive
    from mastpipe.stages import products
    from mastpipe.state import read_table, write_table

    sb = sandbox_factory(seed=0, scale=(2, 40), faults="products.row_cap=30")
    archive = Archive(sb.url, timeout=5)
    store = products.BatchStore(tmp_path / "parts", write_table, read_table)
    with pytest.raises(TruncatedResultError, match="30 products"):
        products.run(_scale_observations(archive), archive, 1, 1, store, row_cap=30)


def test_truncated_query_with_rows_that_have_no_t_min_fails_loudly(sandbox_factory, tmp_path):
    sb = sandbox_factory(seed=0, faults="query.row_cap=2")
    for i in range(3):
        sb.catalog.add_observation(proposal_id="7778", t_min=61_000.0 + i, t_max=61_000.1 + i)
    sb.catalog.add_observation(proposal_id="7778", t_min=None, t_max=None)
    text = recipe(criteria={"obs_collection": "JWST", "proposal_id": "7778"})
    with pytest.raises(TruncatedResultError, match="no t_min"):
        _pipeline(sb, tmp_path, text).run(until="query")
    assert not (tmp_path / "state" / "query.json").exists()
