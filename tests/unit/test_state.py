"""state: fingerprints, table digests, atomic FITS checkpoints with sidecars, the run lock."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from astropy.table import MaskedColumn, Table

from mastpipe.errors import LockError
from mastpipe.state import (CHECKPOINT_SCHEMA, Checkpoints, RunLock, as_stored, fingerprint, read_table,
                            table_digest, write_table)


def _products(n: int = 5) -> Table:
    return Table({
        "productFilename": [f"jw{i:05d}_uncal.fits" for i in range(n)],
        "obsID": np.array([str(1000 + i) for i in range(n)]),
        "size": np.arange(n, dtype=np.int64) * 1000,
        "calib_level": np.array([1, 2, 3, 2, 1][:n] + [2] * max(0, n - 5), dtype=np.int16),
        "t_exptime": np.linspace(0.5, 2.5, n),
        "productGroupDescription": MaskedColumn(["Minimum Recommended Products", "", "x", "", ""][:n] + [""] * max(0, n - 5),
                                                mask=[False, True, False, True, True][:n] + [True] * max(0, n - 5)),
        "sequence_number": MaskedColumn(np.arange(n, dtype=np.int32), mask=[i % 2 == 0 for i in range(n)]),
    })


def test_fingerprint_ignores_key_order():
    a = fingerprint("filter", {"contains": ["_uncal"], "columns": {"a": 1, "b": [2, 3]}}, "digest")
    b = fingerprint("filter", {"columns": {"b": [2, 3], "a": 1}, "contains": ["_uncal"]}, "digest")
    assert a == b
    assert a != fingerprint("filter", {"contains": ["_cal"], "columns": {"a": 1, "b": [2, 3]}}, "digest")
    assert a != fingerprint("filter", {"contains": ["_uncal"], "columns": {"a": 1, "b": [2, 3]}}, "other")
    assert a != fingerprint("filter", {"contains": ["_uncal"], "columns": {"a": 1, "b": [3, 2]}}, "digest")


def test_round_trip_keeps_dtypes_values_and_digest(tmp_path):
    table = _products()
    path = tmp_path / "products.fits"
    write_table(path, table)
    back = read_table(path)
    stored = as_stored(table)
    assert back.colnames == table.colnames
    assert back["productFilename"].dtype.kind == "S"
    for name in ("size", "calib_level", "t_exptime", "sequence_number"):
        assert back[name].dtype.kind == table[name].dtype.kind and back[name].dtype.itemsize == table[name].dtype.itemsize
        filled = lambda c: np.asarray(c.filled(0) if hasattr(c, "filled") else c)  # noqa: E731
        assert np.array_equal(filled(back[name]), filled(stored[name]))
    assert list(back["sequence_number"].mask) == [True, False, True, False, True]
    assert [v.decode() for v in np.asarray(back["productFilename"])] == list(table["productFilename"])
    assert table_digest(back) == table_digest(stored)
    assert back.meta == {}
    # nothing left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["products.fits"]


def test_digest_sees_content_changes():
    table = as_stored(_products())
    changed = table.copy()
    changed["size"][2] += 1
    assert table_digest(table) != table_digest(changed)
    renamed = table.copy()
    renamed.rename_column("size", "bytes")
    assert table_digest(table) != table_digest(renamed)
    remasked = table.copy()
    remasked["sequence_number"].mask[1] = True
    assert table_digest(table) != table_digest(remasked)


def test_empty_tables_round_trip(tmp_path):
    write_table(tmp_path / "a.fits", Table())
    assert len(read_table(tmp_path / "a.fits").colnames) == 0
    empty = _products()[:0]
    write_table(tmp_path / "b.fits", empty)
    back = read_table(tmp_path / "b.fits")
    assert len(back) == 0 and back.colnames == empty.colnames


def test_checkpoint_save_then_load(tmp_path):
    cp = Checkpoints(tmp_path)
    stored = cp.save("products", _products(), "fp1", time.time() - 1, ("no checkpoint",))
    sidecar = cp.sidecar("products")
    assert sidecar is not None
    assert (sidecar.stage, sidecar.fingerprint, sidecar.rows, sidecar.schema) == ("products", "fp1", 5, CHECKPOINT_SCHEMA)
    assert sidecar.reasons == ("no checkpoint",) and sidecar.finished >= sidecar.started
    loaded = cp.load("products", sidecar)
    assert loaded is not None and table_digest(loaded) == sidecar.digest == table_digest(stored)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "other-table", "delete"])
def test_damaged_checkpoint_table_is_named_and_refused(tmp_path, caplog, damage):
    cp = Checkpoints(tmp_path)
    cp.save("query", _products(), "fp", time.time())
    path = cp.table_path("query")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 500)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "other-table":
        write_table(path, _products(4))
    else:
        path.unlink()
    with caplog.at_level(logging.WARNING, logger="mastpipe"):
        assert cp.load("query", cp.sidecar("query")) is None
    assert any(str(path) in r.getMessage() and "query" in r.getMessage() for r in caplog.records)


def test_flipped_byte_in_table_data_is_caught(tmp_path, caplog):
    cp = Checkpoints(tmp_path)
    cp.save("products", _products(), "fp", time.time())
    path = cp.table_path("products")
    data = bytearray(path.read_bytes())
    at = data.index(b"jw00003_uncal")
    data[at + 2] ^= 0x01
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="mastpipe"):
        assert cp.load("products", cp.sidecar("products")) is None
    assert any(str(path) in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"stage": "query"}', b"[1, 2]",
                                     json.dumps({"stage": "query", "fingerprint": "x", "rows": 1, "digest": "d",
                                                 "started": 0, "finished": 0, "schema": 99}).encode()])
def test_bad_sidecar_is_named_and_ignored(tmp_path, caplog, content):
    cp = Checkpoints(tmp_path)
    cp.save("query", _products(), "fp", time.time())
    cp.sidecar_path("query").write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="mastpipe"):
        assert cp.sidecar("query") is None
    assert any(str(cp.sidecar_path("query")) in r.getMessage() for r in caplog.records)


def test_missing_sidecar_is_silent(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="mastpipe"):
        assert Checkpoints(tmp_path).sidecar("query") is None
    assert not caplog.records


def test_lock_excludes_a_second_holder_and_is_released(tmp_path):
    with RunLock(tmp_path):
        assert str(os.getpid()) in (tmp_path / "lock").read_text()
        with pytest.raises(LockError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):  # released: can be taken again
        pass


def test_lock_held_by_another_process_fails_fast(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from mastpipe.state import RunLock\n"
        f"lock = RunLock(Path({str(tmp_path)!r})); lock.acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(LockError, match=f"pid {holder.pid}"):
            RunLock(tmp_path).acquire()
        assert time.monotonic() - started < 1
        holder.kill()  # kill -9: the kernel releases the flock, the file stays
        holder.wait()
        assert (tmp_path / "lock").read_text().strip()
        with RunLock(tmp_path):
            assert str(os.getpid()) in (tmp_path / "lock").read_text()
    finally:
        holder.kill()
        holder.wait()


def _variety(n: int) -> Table:
    rng = np.random.default_rng(n)
    return Table({
        "text": np.array([f"name_{i}" * (i % 4) for i in range(n)]),
        "i8": rng.integers(-5, 5, n), "i2": rng.integers(-5, 5, n).astype(np.int16),
        "i4": rng.integers(-5, 5, n).astype(np.int32), "u1": rng.integers(0, 255, n).astype(np.uint8),
        "f8": rng.normal(size=n), "f4": rng.normal(size=n).astype(np.float32),
        "flag": rng.integers(0, 2, n).astype(bool),
        "m_i8": MaskedColumn(rng.integers(0, 9, n), mask=rng.integers(0, 2, n).astype(bool)),
        "m_f8": MaskedColumn(rng.normal(size=n), mask=rng.integers(0, 2, n).astype(bool)),
        "m_text": MaskedColumn([f"t{i}" for i in range(n)], mask=rng.integers(0, 2, n).astype(bool)),
        "m_none": MaskedColumn(np.arange(n), mask=np.zeros(n, dtype=bool)),
    })


@pytest.mark.parametrize("n", [0, 1, 7, 1000])
def test_fast_writer_writes_what_astropy_writes(tmp_path, n):
    """write_table packs rows itself; the file must be byte for byte astropy's."""
    table = _variety(n)
    write_table(tmp_path / "fast.fits", table)
    as_stored(table).write(tmp_path / "astropy.fits", format="fits")
    assert (tmp_path / "fast.fits").read_bytes() == (tmp_path / "astropy.fits").read_bytes()
    back = read_table(tmp_path / "fast.fits")
    assert table_digest(back) == table_digest(read_table(tmp_path / "astropy.fits"))


@pytest.mark.parametrize("chunk", [1, 500, 4096])
def test_rows_written_a_slice_at_a_time_are_the_same_bytes(tmp_path, monkeypatch, chunk):
    """A million rows are packed a slice at a time (state.tables._WRITE_CHUNK bytes); the slices'
    bounds must not show in the file."""
    from mastpipe.state import tables

    monkeypatch.setattr(tables, "_WRITE_CHUNK", chunk)
    table = _variety(1000)
    write_table(tmp_path / "fast.fits", table)
    as_stored(table).write(tmp_path / "astropy.fits", format="fits")
    assert (tmp_path / "fast.fits").read_bytes() == (tmp_path / "astropy.fits").read_bytes()


def test_text_ending_in_spaces_reads_back_as_written(tmp_path):
    """A value ending in a space is kept (astropy would strip it), so the checkpoint's digest
    still matches what was saved and the stage is not recomputed for it."""
    table = Table({"productFilename": ["a.fits ", "b.fits"], "size": [1, 2]})
    write_table(tmp_path / "t.fits", table)
    back = read_table(tmp_path / "t.fits")
    assert np.asarray(back["productFilename"]).tolist() == [b"a.fits ", b"b.fits"]
    assert table_digest(back) == table_digest(as_stored(table))  # with the space stripped it was not


def test_unusual_columns_fall_back_to_astropy(tmp_path):
    table = Table({"vec": np.zeros((3, 2)), "u2": np.array([1, 2, 3], dtype=np.uint16),
                   "m_flag": MaskedColumn([True, False, True], mask=[0, 1, 0])})
    write_table(tmp_path / "t.fits", table)
    back = read_table(tmp_path / "t.fits")
    assert back["vec"].shape == (3, 2) and list(back["u2"]) == [1, 2, 3]


# -- rows checkpoints: unique's and filter's rows of the products table ------------------------------

def _rows_setup(tmp_path, n: int = 8):
    checkpoints = Checkpoints(tmp_path)
    products = checkpoints.save("products", _products(n), "fp-p", time.time())
    base_digest = checkpoints.sidecar("products").digest
    rows = np.array([6, 1, 3], dtype=np.int64)
    table = products[rows]
    table["n_shared"] = np.array([1, 2, 3], dtype=np.int64)
    table["shared_by"] = np.array([b"a", b"b;c", b"d;e;f"])
    saved = checkpoints.save_rows("filter", table, "products", products, base_digest, rows, "fp-f", time.time())
    return checkpoints, products, base_digest, rows, table, saved


def test_rows_checkpoint_round_trip_without_the_base_columns(tmp_path):
    checkpoints, products, base_digest, rows, table, saved = _rows_setup(tmp_path)
    # what is written: the rows and the added columns only, a FITS table astropy reads
    on_disk = Table.read(tmp_path / "filter.fits", format="fits", character_as_bytes=True)
    assert on_disk.colnames == ["_row", "n_shared", "shared_by"]
    assert on_disk["_row"].tolist() == rows.tolist()
    sidecar = checkpoints.sidecar("filter")
    assert (sidecar.base, sidecar.base_digest, sidecar.rows) == ("products", base_digest, 3)
    for loaded in (checkpoints.load("filter", sidecar, (products, base_digest)),  # base in hand
                   Checkpoints(tmp_path).load("filter", sidecar)):                # base read from disk
        assert loaded is not None
        assert loaded.colnames == table.colnames
        assert table_digest(loaded) == table_digest(as_stored(table)) == table_digest(saved)
        assert np.array_equal(np.asarray(loaded["sequence_number"].mask), np.asarray(table["sequence_number"].mask))


def test_rows_checkpoint_of_a_changed_base_is_refused(tmp_path, caplog):
    checkpoints, products, base_digest, rows, table, saved = _rows_setup(tmp_path)
    sidecar = checkpoints.sidecar("filter")
    # a base table in hand that is not the one the rows were taken from is not used
    other = products.copy()
    other["size"][6] = 1
    assert table_digest(Checkpoints(tmp_path).load("filter", sidecar, (other, "another digest"))) == \
        table_digest(saved)
    # the products checkpoint replaced: the rows mean nothing any more
    Checkpoints(tmp_path).save("products", other, "fp-p2", time.time())
    with caplog.at_level(logging.WARNING):
        assert Checkpoints(tmp_path).load("filter", sidecar) is None
    assert "has changed" in caplog.text


@pytest.mark.parametrize("damage", ["rows", "truncate"])
def test_damaged_rows_checkpoint_is_refused(tmp_path, caplog, damage):
    checkpoints, products, base_digest, rows, table, saved = _rows_setup(tmp_path)
    sidecar = checkpoints.sidecar("filter")
    path = tmp_path / "filter.fits"
    if damage == "rows":  # another row named: same size, different content
        changed = read_table(path)
        changed["_row"][0] = 0
        write_table(path, changed)
    else:
        path.write_bytes(path.read_bytes()[:3000])
    with caplog.at_level(logging.WARNING):
        assert Checkpoints(tmp_path).load("filter", sidecar, (products, base_digest)) is None
    assert "filter" in caplog.text
