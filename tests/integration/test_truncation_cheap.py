"""MAST's silent row cap found cheaply: counts first, the search split on the real time range of
its observations, and only intervals whose count fits fetched (no table thrown away)."""

from __future__ import annotations

from pathlib import Path

from mastpipe.runner import Pipeline

RECIPE = """version: 1
name: big
mast: {{url: {url}, row_cap: {cap}}}
query:
  big:
    criteria: {{obs_collection: JWST, proposal_id: "9999"}}
retrieve: {{mode: manifest, destination: out}}
"""


def _run(sandbox, tmp_path: Path, cap: int):  # type: ignore[no-untyped-def]
    recipe = tmp_path / "big.yaml"
    recipe.write_text(RECIPE.format(url=sandbox.url, cap=cap))
    sandbox.log.clear()
    return Pipeline(recipe, state_dir=tmp_path / "state").run(until="query")


def test_a_big_search_costs_a_few_requests_per_cap_and_throws_nothing_away(sandbox_factory, tmp_path: Path) -> None:
    sb = sandbox_factory(seed=0, scale=(3000, 1), faults="query.row_cap=500")
    result = _run(sb, tmp_path, cap=500)
    assert len(result.tables["query"]) == 3000
    assert len(set(map(str, result.tables["query"]["obsid"]))) == 3000
    invokes = [r for r in sb.log.records() if r.endpoint == "query" and r.service.startswith("Mast.Caom.Filtered")]
    tables = [r for r in invokes if r.columns == "*"]
    assert sum(r.rows for r in tables) == 3000, "no table fetched to be thrown away"
    assert all(r.rows <= 500 for r in tables)
    # 1 count, 1 time range, then counts and tables of the intervals: a few per 500 rows
    assert len(invokes) <= 4 * (3000 // 500) + 2, [(r.columns, r.rows) for r in invokes]


def test_a_server_cutting_below_the_recipe_cap_costs_one_table(sandbox_factory, tmp_path: Path) -> None:
    sb = sandbox_factory(seed=0, scale=(1200, 1), faults="query.row_cap=300")
    result = _run(sb, tmp_path, cap=50_000)  # mastpipe does not know this server cuts at 300
    assert len(result.tables["query"]) == 1200
    tables = [r for r in sb.log.records() if r.endpoint == "query" and r.columns == "*"]
    assert sum(r.rows for r in tables) <= 1200 + 300, "at most the one table that taught the real cap"
    assert len([r for r in sb.log.records() if r.endpoint == "query"]) <= 4 * (1200 // 300) + 4
