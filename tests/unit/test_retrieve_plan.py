"""The retrieve stage's pure part: product rows to checked file tasks, and the manifest it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from astropy.table import MaskedColumn, Table

from mastpipe.errors import TransferError
from mastpipe.stages.retrieve.stage import plan_files, write_manifest

MAST = "https://mast.stsci.edu"


def _products(names: list[str], sizes: list[int | None], obs_ids: list[str] | None = None) -> Table:
    n = len(names)
    return Table({
        "dataURI": [f"mast:JWST/product/{i}_{name.replace('/', '_')}" for i, name in enumerate(names)],
        "productFilename": names,
        "obs_id": obs_ids or ["jw01"] * n,
        "obs_collection": ["JWST"] * n,
        "dataRights": ["PUBLIC"] * n,
        "size": MaskedColumn([s or 0 for s in sizes], mask=[s is None for s in sizes], dtype="i8"),
    })


def test_unsafe_rows_are_refused_one_by_one(tmp_path: Path) -> None:
    table = _products(["a_uncal.fits", "../../x_uncal.fits", "b_uncal.fits", "c\x00_uncal.fits"],
                      [10, 20, 30, 40], ["jw01", "jw01", "jw01", "jw01"])
    tasks, refused = plan_files(table, tmp_path, "astroquery", MAST)
    assert [t.dest.name for t in tasks] == ["a_uncal.fits", "b_uncal.fits"]
    assert [r.size for r in refused] == [20, 40]
    assert all(r.reason.startswith("refused: ") and r.url.startswith(MAST) for r in refused)
    assert all(tmp_path in t.dest.parents for t in tasks)


def test_a_hostile_obs_id_is_refused_too(tmp_path: Path) -> None:
    table = _products(["a_uncal.fits", "b_uncal.fits"], [10, 20], ["jw01", "../.."])
    tasks, refused = plan_files(table, tmp_path, "astroquery", MAST)
    assert len(tasks) == 1 and len(refused) == 1 and "obs_id" in refused[0].reason


def test_a_missing_size_means_unknown_not_a_crash(tmp_path: Path) -> None:
    tasks, refused = plan_files(_products(["a_uncal.fits", "b_uncal.fits"], [None, 5]), tmp_path,
                                "astroquery", MAST)
    assert [t.size for t in tasks] == [None, 5] and refused == []


def test_collisions_still_stop_everything(tmp_path: Path) -> None:
    with pytest.raises(TransferError):
        plan_files(_products(["same.fits", "same.fits"], [1, 2]), tmp_path, "flat", MAST)


@pytest.mark.parametrize("name", ["manifest.ecsv", "files.json", "list"])
def test_the_json_copy_never_overwrites_the_ecsv(tmp_path: Path, name: str) -> None:
    table = _products(["a_uncal.fits", "../x_uncal.fits"], [10, 20])
    tasks, refused = plan_files(table, tmp_path / "data", "astroquery", MAST)
    path = write_manifest(tmp_path / name, tasks, None, refused)
    ecsv = Table.read(path, format="ascii.ecsv")
    assert sorted(ecsv["status"]) == ["failed", "listed"]
    twins = [p for p in tmp_path.iterdir() if p != path and p.is_file()]
    assert len(twins) == 1 and twins[0].name.endswith(".json")
    assert {row["status"] for row in json.loads(twins[0].read_text())} == {"failed", "listed"}


AWKWARD = ["", " ", "a b", 'say "hi"', "#not a comment", "ünïcödé", "tab\there", "comma, then", "'single'",
           "trailing ", " leading", '"', '""', '}, {"dataURI": "x"}']


@pytest.mark.parametrize("absolute", [False, True])
def test_the_manifest_reads_back_as_written_whatever_its_text(tmp_path: Path, absolute: bool) -> None:
    """The manifest's rows (written by the C csv writer under astropy's header) read back by
    astropy as the same table astropy's own ECSV writer makes of them, text of every shape."""
    from mastpipe.stages.retrieve.files import FileResult, FileTask
    from mastpipe.stages.retrieve.manifest import MANIFEST_COLUMNS, read_manifest

    tasks, results = [], {}
    for i, text in enumerate(AWKWARD):
        key = f"mast:JWST/product/{i}{text}"
        dest = tmp_path / "data" / f"dir {i % 3}" / f"f{i}{text.replace('/', '')}.fits"
        tasks.append(FileTask(key=key, url=f"{MAST}/x?uri={key}", dest=dest, size=i or None))
        if i % 2:
            results[key] = FileResult(key=key, dest=dest, status="failed", error=f"why: {text}", source=text)
    refused = plan_files(_products(["r_uncal.fits"], [7], ["../.."]), tmp_path / "data", "astroquery", MAST)[1]
    path = write_manifest(tmp_path / "manifest.ecsv", tasks, results, refused, absolute=absolute,
                          meta={"recipe": "awkward: yes"})
    got = Table.read(path, format="ascii.ecsv")
    twin = json.loads((tmp_path / "manifest.json").read_text())
    assert got.colnames == list(MANIFEST_COLUMNS) and len(got) == len(tasks) + 1 == len(twin)
    astropys = tmp_path / "astropy.ecsv"
    Table(rows=[[row[name] for name in MANIFEST_COLUMNS] for row in twin], names=MANIFEST_COLUMNS,
          dtype=[str, str, int, *[str] * 8]).write(astropys, format="ascii.ecsv")
    expected = Table.read(astropys, format="ascii.ecsv")
    for name in MANIFEST_COLUMNS:  # (astropy's ECSV reading strips spaces around text, either way)
        assert got[name].tolist() == expected[name].tolist(), name
    assert got.meta["recipe"] == "awkward: yes"
    assert [row["dataURI"] for row in twin[1:]] == [t.key for t in tasks]
    assert [row["message"] for row in twin[1:]] == [f"why: {text}" if i % 2 else "" for i, text in enumerate(AWKWARD)]
    assert [str(p) for p in read_manifest(path)["path"][1:]] == [str(t.dest) for t in tasks]
