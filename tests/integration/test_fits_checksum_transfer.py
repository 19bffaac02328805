"""Same-length corruption in flight, caught by the FITS files' own CHECKSUM/DATASUM.

The sandbox writes correct CHECKSUM/DATASUM into every FITS body (as MAST's files carry) and,
with ``download.corrupt_rate``, flips one byte of a body in flight: the size, Content-Length and
headers stay right, so only a content check can see it, and mastpipe knows no sha256 for MAST's
files. The FITS checksum sees it on the first download.
"""

from __future__ import annotations

import io
import warnings

import pytest
from _transfer_support import FAST, downloads, public_rows, task_for
from astropy.io import fits

from mastpipe.retry import RetryPolicy
from mastpipe.sandbox import Faults
from mastpipe.stages.retrieve.engine import Transfer
from mastpipe.stages.retrieve.ledger import Ledger


@pytest.mark.parametrize("size", [2880, 2880 * 5, 300_001, 3 * 2**20 + 7])
def test_every_fits_body_the_sandbox_makes_passes_astropys_checksum_check(sandbox, size: int) -> None:
    row = sandbox.catalog.add_product("87600001", productFilename=f"sum_{size}_cal.fits", size=size)
    for _version in range(2):
        body = sandbox.catalog.body(row["dataURI"])
        body += b"\0" * (-len(body) % 2880)  # the sandbox sends no final fill
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # astropy only warns on a bad checksum
            with fits.open(io.BytesIO(body), checksum=True) as hdus:
                assert hdus[0]._checksum_valid == 1 and hdus[0]._datasum_valid == 1
        sandbox.catalog.touch(row["dataURI"])


def _first_attempt_corrupt_only(sandbox, keys: list[str]) -> Faults:
    """A corrupt_rate and seed whose draws flip a byte of every key's first download only."""
    for seed in range(1, 500):
        faults = Faults.parse(f"download.corrupt_rate=0.5,seed={seed}")
        if all(faults.hit("download", k, 1, "corrupt_rate") and not faults.hit("download", k, 2, "corrupt_rate")
               for k in keys):
            return faults
    raise AssertionError("no seed found")


def test_a_byte_flipped_in_flight_is_caught_on_the_first_run_and_refetched(sandbox, tmp_path) -> None:
    rows = [sandbox.catalog.add_product("87600001", productFilename=f"flip_{i}_cal.fits", size=200_000 + i)
            for i in range(3)]
    tasks = [task_for(sandbox, row, tmp_path) for row in rows]
    sandbox.faults = _first_attempt_corrupt_only(sandbox, [t.key for t in tasks])
    with Ledger(tmp_path / "state") as ledger:
        results = Transfer(policy=FAST, ledger=ledger).run(tasks)
        rows_after = ledger.rows()
    for task, result in zip(tasks, results):
        assert result.status == "fetched" and result.checksum == "verified", result.error
        assert result.attempts == 2 and len(downloads(sandbox, task.key)) == 2
        assert task.dest.read_bytes() == sandbox.catalog.body(task.key)
        assert rows_after[task.key].checksum == "verified"


def test_corruption_on_every_attempt_fails_the_file_clearly_and_publishes_nothing(sandbox, tmp_path) -> None:
    row = public_rows(sandbox, 1)[0]
    assert row["productFilename"].endswith(".fits")
    task = task_for(sandbox, row, tmp_path)
    sandbox.faults = Faults.parse("download.corrupt_rate=1")
    policy = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.005)
    [result] = Transfer(policy=policy).run([task])
    assert result.status == "failed"
    assert "FITS checksum mismatch: HDU 1" in result.error and "corrupt transfer" in result.error
    assert "gave up after 3 attempts" in result.error
    assert not task.dest.exists() and not task.dest.parent.exists()  # not even its directory


def test_a_non_fits_file_is_not_checksum_verified(sandbox, tmp_path) -> None:
    row = sandbox.catalog.add_product("87600001", productFilename="notes_asn.json", size=5_000)
    [result] = Transfer(policy=FAST).run([task_for(sandbox, row, tmp_path)])
    assert result.status == "fetched" and result.checksum is None


def test_the_manifest_and_report_say_which_files_were_checksum_verified(sandbox, tmp_path) -> None:
    import shutil
    from pathlib import Path

    from astropy.table import Table

    import mastpipe

    recipe = tmp_path / "r.yaml"
    shutil.copy(Path(__file__).resolve().parents[2] / "pipelines" / "jwst-1073-nircam-uncal.yaml", recipe)
    outcome = mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    assert outcome.exit_code == 0
    retrieve = outcome.report["retrieve"]
    manifest = Table.read(retrieve["manifest"], format="ascii.ecsv")
    fits_rows = [r for r in manifest if str(r["path"]).endswith(".fits")]
    assert fits_rows and all(r["checksum"] == "verified" for r in fits_rows)
    assert retrieve["checksum_verified"]["count"] == len(fits_rows) == retrieve["fetched"]["files"]
    # a rerun skips the files and still says so, from the ledger
    again = mastpipe.run(recipe, mast_url=sandbox.url, environ={})
    assert again.report["retrieve"]["checksum_verified"]["count"] == len(fits_rows)
