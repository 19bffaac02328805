"""Planning a whole product table by columns gives exactly what planning it row by row gives.

The reference is the per-row path alone (:func:`plan_row` on every row, then the collision
check): :func:`plan_table` must agree with it on every task and every refusal, in order, for
tables full of hostile, odd and ordinary values, as bytes (checkpoints) and as str (astroquery).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
from astropy.table import MaskedColumn, Table

from mastpipe.errors import TransferError, UsageError
from mastpipe.stages.retrieve.files import FileTask
from mastpipe.stages.retrieve.paths import check_collisions
from mastpipe.stages.retrieve.tablecount import count_table
from mastpipe.stages.retrieve.tableplan import Refused, plan_row, plan_table, table_rows

MAST = "https://mast.stsci.edu"

ODD = ["..", ".", "", " ", "a/b", "a\\b", "C:x", "c:", "x\x00y", "tab\there", "nel\x85x", "é.fits", "ü",
       "\x7f", "a" * 300, "ok", ":a", "a:", "  pad  ", "\x1c", "x.fits", "-", "A:b:c"]


def reference(table: Table, destination: Path, layout: str) -> tuple[list[FileTask], list[Refused]]:
    """The per-row planning alone, as plan_files did it before the columns."""
    tasks, refused = [], []
    resolved: dict[str, str] = {}
    for values in table_rows(table):
        planned = plan_row(values, destination, layout, MAST, resolved)
        (refused if isinstance(planned, Refused) else tasks).append(planned)
    check_collisions([(task.key, task.dest) for task in tasks])
    return tasks, refused  # type: ignore[return-value]


def columns(table: Table, destination: Path, layout: str) -> tuple[list[FileTask], list[Refused]]:
    plan = plan_table(table, destination, layout, MAST)
    return plan.tasks(table, MAST), plan.refused


def hostile(seed: int, n: int, as_bytes: bool) -> Table:
    rng = random.Random(seed)

    def pick(ordinary: str) -> str:
        return rng.choice(ODD) if rng.random() < 0.15 else ordinary

    rows = []
    for i in range(n):
        rows.append({
            "dataURI": pick(f"mast:JWST/product/f{i}_cal.fits") if rng.random() < 0.9 else "",
            "productFilename": pick(f"f{i}_cal.fits"),
            "obs_id": pick(f"jw{i % 7:05d}"),
            "obs_collection": pick("JWST"),
            "dataRights": rng.choice(["PUBLIC", "EXCLUSIVE_ACCESS", ""]),
            "prvversion": rng.choice(["1.12.5", "", "2"]),
            "mission": rng.choice(["", "", "", " ", "jwst"]),
            "malformed": rng.choice(["", "", "", "", "", "", "", "", "a null size"]),
            "parent_obsid": str(100 + i % 7),
        })
    table = Table(masked=True)
    for name in rows[0]:
        values = [row[name] for row in rows]
        mask = [rng.random() < 0.03 for _ in values]
        data = np.array([v.encode("utf-8") for v in values]) if as_bytes else np.array(values)
        table[name] = MaskedColumn(data, mask=mask)
    sizes = [rng.choice([rng.randrange(10**6), -1, 0]) for _ in range(n)]
    table["size"] = MaskedColumn(np.array(sizes, dtype=np.int64), mask=[rng.random() < 0.05 for _ in range(n)])
    return table


@pytest.mark.parametrize("layout", ["astroquery", "flat", "{obs_collection}:{obs_id}/x/{productFilename}",
                                    "{obs_collection}/{obs_id}{productFilename}"])
@pytest.mark.parametrize("as_bytes", [True, False])
def test_columns_agree_with_rows_on_hostile_tables(tmp_path: Path, layout: str, as_bytes: bool) -> None:
    for seed in range(4):
        table = hostile(seed, 300, as_bytes)
        destination = tmp_path / f"out{seed}"
        try:
            expected = reference(table, destination, layout)
        except TransferError:  # flat: random names collide; then both must refuse alike
            with pytest.raises(TransferError):
                columns(table, destination, layout)
            with pytest.raises(TransferError):
                count_table(table, destination, layout, MAST)
            continue
        plan = plan_table(table, destination, layout, MAST)
        assert plan.tasks(table, MAST) == expected[0]
        assert plan.refused == expected[1]
        assert len(plan.keys) - len(plan.by_row) > 20  # the column path planned many of the files
        assert count_table(table, destination, layout, MAST) == (len({t.key for t in expected[0]}), expected[1])


def test_symlinks_inside_the_destination_are_judged_as_rows_are(tmp_path: Path) -> None:
    table = hostile(7, 200, True)
    destination = tmp_path / "out"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (destination / "mastDownload" / "JWST" / "jw00001").mkdir(parents=True)
    os.symlink(outside, destination / "mastDownload" / "JWST" / "jw00002")  # a directory leading out
    os.symlink(outside / "f3_cal.fits", destination / "mastDownload" / "JWST" / "jw00001" / "f1_cal.fits")
    os.symlink(destination / "mastDownload", destination / "mastDownload" / "JWST" / "jw00001" / "f8_cal.fits")
    expected = reference(table, destination, "astroquery")
    assert any("a symlink leads out" in r.reason for r in expected[1])
    got = columns(table, destination, "astroquery")
    assert got == expected


def test_collisions_and_missing_columns_fail_alike(tmp_path: Path) -> None:
    table = Table({"dataURI": ["mast:a/1", "mast:a/2"], "productFilename": ["same.fits", "same.fits"],
                   "obs_id": ["o", "o"], "obs_collection": ["JWST", "JWST"], "size": [1, 2]})
    with pytest.raises(TransferError) as theirs:
        reference(table, tmp_path, "flat")
    with pytest.raises(TransferError) as ours:
        columns(table, tmp_path, "flat")
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(UsageError):
        columns(table, tmp_path, "{proposal_id}/{productFilename}")


def test_float_sizes_and_a_table_with_no_size(tmp_path: Path) -> None:
    table = Table({"dataURI": ["mast:a/1", "mast:a/2", "mast:a/3"], "productFilename": ["1.f", "2.f", "3.f"],
                   "obs_id": ["o", "o", "o"], "obs_collection": ["JWST"] * 3, "size": [1.0, 2.5, np.nan]})
    assert columns(table, tmp_path, "astroquery") == reference(table, tmp_path, "astroquery")
    table.remove_column("size")
    assert columns(table, tmp_path, "astroquery") == reference(table, tmp_path, "astroquery")


def test_untouched_files_are_the_plan_s_files_while_no_directory_exists(tmp_path: Path) -> None:
    from mastpipe.stages.retrieve.tablecount import untouched_files

    n = 50
    table = Table({"dataURI": np.array([f"mast:JWST/product/f{i:03d}_cal.fits".encode() for i in range(n)]),
                   "productFilename": np.array([f"f{i:03d}_cal.fits".encode() for i in range(n)]),
                   "obs_collection": np.array([b"JWST"] * n), "obs_id": np.array([f"o{i // 10}".encode() for i in range(n)]),
                   "size": np.arange(n, dtype=np.int64) * 7})
    destination = tmp_path / "out"
    plan = plan_table(table, destination, "astroquery", MAST)
    found = untouched_files(table, destination, "astroquery", MAST)
    assert found is not None
    rows, keys, sizes, directories, refused = found
    assert rows.tolist() == plan.rows.tolist() and [k.decode() for k in keys.tolist()] == plan.keys
    assert sizes.tolist() == plan.sizes.tolist() and refused == plan.refused == []
    assert sorted(directories) == sorted({os.path.dirname(dest) for dest in plan.dests})
    Path(directories[0]).mkdir(parents=True)  # something may be on disk now: judged file by file
    assert untouched_files(table, destination, "astroquery", MAST) is None
    table["productFilename"][1] = table["productFilename"][0]  # two products, one path: refused alike
    with pytest.raises(TransferError):
        untouched_files(table, tmp_path / "other", "astroquery", MAST)
