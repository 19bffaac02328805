"""Validation that knows a mission's columns: `validate --online` fetches MAST's column lists (here
the sandbox's) and caches them; offline `validate` then uses the cache, and works without one (a run checks the names too:
tests/integration/test_pipeline_missions.py)."""

from __future__ import annotations

import json
from pathlib import Path

TYPOS = """\
version: 1
name: typos
query:
  q:
    mission: jwst
    conditions: {program: 1073, exp_typ: NRC_IMAGE, Filter: F277W}
    select_cols: [detectr]
"""


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith(" ")]


def test_online_validation_catches_typos_and_caches_the_columns(cli_in_process, workdir: Path, tmp_path: Path) -> None:
    cli = cli_in_process  # what validate says, and the cache it leaves on disk, are the point; not its process
    cache = tmp_path / "cache"
    env = {"MASTPIPE_CACHE_DIR": str(cache)}
    recipe = workdir / "typos.yaml"
    recipe.write_text(TYPOS)

    offline = cli("validate", "typos.yaml", cwd=workdir, env=env)
    assert offline.returncode == 0, offline.stderr  # no column list yet: nothing to say about the names

    online = cli("validate", "--online", "--sandbox", "typos.yaml", cwd=workdir, env=env)
    assert online.returncode == 2
    assert _lines(online.stderr) == [
        "typos.yaml:6:33: query.q.conditions.exp_typ: unknown jwst column 'exp_typ'",
        "typos.yaml:6:53: query.q.conditions.Filter: unknown jwst column 'Filter'",
        "typos.yaml:7:19: query.q.select_cols[0]: unknown jwst column 'detectr'",
    ]
    assert "hint: did you mean 'exp_type'?" in online.stderr and "did you mean 'detector'?" in online.stderr
    cached = list(cache.rglob("jwst.json"))
    assert len(cached) == 1 and any(c["column_name"] == "exp_type" for c in json.loads(cached[0].read_text()))

    from_cache = cli("validate", "--sandbox", "typos.yaml", cwd=workdir, env=env)  # offline, from the cache
    assert from_cache.returncode == 2 and _lines(from_cache.stderr) == _lines(online.stderr)

    examples = cli("validate", "--online", "--sandbox", "pipelines/jwst-1073-nircam-uncal-missions.yaml",
                   "pipelines/hst-crab-calibrated-missions.yaml", "pipelines/jwst-1073-nircam-uncal.yaml",
                   cwd=workdir, env=env)
    assert examples.returncode == 0, examples.stderr
