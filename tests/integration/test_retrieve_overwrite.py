"""overwrite: never / changed / always against files already at the destination."""

from __future__ import annotations

from pathlib import Path

import pytest
from astropy.table import Table

import mastpipe

RECIPE = """\
version: 1
name: overwrite
query:
  q: {{criteria: {{obs_collection: JWST, proposal_id: "1073", filters: F277W}}}}
filter:
  contains: [_uncal.fits]
retrieve:
  destination: data
  overwrite: {overwrite}
"""


def _first_product(sandbox, tmp_path: Path) -> tuple[dict, Path]:  # type: ignore[no-untyped-def]
    plan = mastpipe.run(_recipe(tmp_path, "changed", "plan"), mast_url=sandbox.url, until="filter")
    row = {name: _text(value) for name, value in zip(plan.tables["filter"].colnames, plan.tables["filter"][0])}
    path = tmp_path / "data" / "mastDownload" / row["obs_collection"] / row["obs_id"] / row["productFilename"]
    return {"uri": row["dataURI"], "size": int(row["size"])}, path


def _text(value):  # type: ignore[no-untyped-def]
    return value.decode() if isinstance(value, bytes) else value


def _recipe(tmp_path: Path, overwrite: str, name: str = "recipe") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(RECIPE.format(overwrite=overwrite))
    return path


@pytest.mark.parametrize(("overwrite", "foreign_size", "kept", "status"), [
    ("never", 2880, True, "failed"),
    ("changed", 2880, False, "fetched"),
    ("always", None, False, "fetched"),   # same size as the product, but not recorded: replaced
    ("changed", None, True, "skipped"),   # same size: adopted as an earlier manual download
])
def test_policy(sandbox, tmp_path: Path, overwrite: str, foreign_size: int | None, kept: bool, status: str) -> None:  # type: ignore[no-untyped-def]
    product, path = _first_product(sandbox, tmp_path)
    foreign = b"x" * (foreign_size if foreign_size is not None else product["size"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(foreign)
    outcome = mastpipe.run(_recipe(tmp_path, overwrite), mast_url=sandbox.url)
    manifest = Table.read(tmp_path / "data" / "manifest.ecsv")
    row = manifest[list(manifest["dataURI"]).index(product["uri"])]
    assert row["status"] == status
    assert (path.read_bytes() == foreign) is kept
    if not kept:
        assert row["sha256"] == sandbox.catalog.sha256(product["uri"])
    if status == "failed":
        assert "overwrite is 'never'" in row["message"] and outcome.exit_code == 1
