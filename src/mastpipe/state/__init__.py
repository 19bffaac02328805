"""The state directory: what it holds (:class:`StateDir`), stage checkpoints, the run lock.

Layout of a state directory (by default ``.mastpipe/<recipe name>`` beside the recipe; every
name below is chosen by :class:`StateDir` and nowhere else)::

    lock                         held (flock) by the running process; names its pid and host
    sections.json                the recipe sections each stage last ran with (and their servers)
    query.fits    query.json     each table stage's checkpoint and its sidecar, for the stages
                  products.json  query, products, unique and filter; products' table is its parts
    unique.fits   unique.json    unique's and filter's as rows of products' table (a ``_row``
    filter.fits   filter.json    column and the columns the stage adds; see Checkpoints.save_rows)
    products.parts/<fp>/         the product-list batches as they arrived, under the first 16
                                 digits of the products stage's fingerprint: finished ones let a
                                 killed run resume; once all are, they are the checkpoint
                                 (products.json lists them; Checkpoints.save_parts)
    ledger.sqlite                the retrieve stage's file ledger (with SQLite's -wal/-shm;
                                 ledger.sqlite.corrupt-<time> when one was set aside)
    outlook.json                 the files' outlook ``status`` remembers (manifest, curl modes)
    plan.json                    the answer ``plan`` remembers (manifest, curl modes)
    reports/<run id>.json        the JSON report of every run
    last-report.json             a copy of the latest one
    history.jsonl                one line per run, failed runs included
    names.json                   position.object names MAST's look-up resolved (asked once)
    .<name>.<pid>.<random>.tmp   a file being written (mastpipe.atomic); swept when its
                                 process is gone

A checkpoint is written to a temporary file beside its target, fsynced and renamed, table first
and sidecar last: a sidecar therefore always describes a complete table, and a crash leaves at
worst a stray temporary that the next run sweeps. Tables are FITS binary tables (dtypes kept,
read back by astropy); text columns are stored as bytes, which is what makes a checkpoint of a
million product rows fast to write and read. The products table is not written a second time:
its checkpoint is the batches written as they arrived. The stages after products keep rows of its
table and add a few columns, so their checkpoints hold only those. :meth:`Checkpoints.load` is the
one function that turns either back into its table.

The package: :mod:`~mastpipe.state.layout` (:class:`StateDir`), :mod:`~mastpipe.state.tables`
(tables as FITS, digests, fingerprints), :mod:`~mastpipe.state.checkpoints` (:class:`Checkpoints`,
sidecars, rows checkpoints), :mod:`~mastpipe.state.lock` (:class:`RunLock`, who holds it, whether
a directory can be written). Everything is importable from ``mastpipe.state``.
"""

from mastpipe.atomic import atomic_write_bytes, fsync_dir
from mastpipe.state.checkpoints import CHECKPOINT_SCHEMA, ROW, Checkpoints, Sidecar, take_rows
from mastpipe.state.layout import StateDir
from mastpipe.state.lock import LockHolder, RunLock, lock_holder, writable_problem
from mastpipe.state.tables import (as_stored, decoded, decoded_column, encoded_column, fingerprint, read_table, stacked,
                                   table_digest, write_table)

__all__ = ["CHECKPOINT_SCHEMA", "ROW", "Checkpoints", "LockHolder", "RunLock", "Sidecar", "StateDir", "as_stored",
           "atomic_write_bytes", "decoded", "decoded_column", "encoded_column", "fingerprint", "fsync_dir", "lock_holder", "read_table", "stacked", "table_digest",
           "take_rows", "writable_problem", "write_table"]
