"""The state directory: what it holds (:class:`StateDir`), stage checkpoints, the run lock.

Layout of a state directory (by default ``.mastpipe/<recipe name>`` beside the recipe; every
name below is chosen by :class:`StateDir` and nowhere else)::

    lock                         held (flock) by the running process; names its pid and host
    sections.json                the recipe sections each stage last ran with (and their servers)
    query.fits    query.json     each table stage's checkpoint and its sidecar, for the stages
    products.fits products.json  query, products, unique and filter
    unique.fits   unique.json    unique's and filter's as rows of products.fits (a ``_row`` column
    filter.fits   filter.json    and the columns the stage adds; see Checkpoints.save_rows)
    products.parts/<fp>/         product-list batches finished so far (resume mid-stage), under
                                 the first 16 digits of the products stage's fingerprint
    ledger.sqlite                the retrieve stage's file ledger (with SQLite's -wal/-shm;
                                 ledger.sqlite.corrupt-<time> when one was set aside)
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
million product rows fast to write and read. The stages after products keep rows of its table
and add a few columns, so their checkpoints hold only those: :meth:`Checkpoints.load` is the one
function that turns one back into its table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from mastpipe.atomic import atomic_path, atomic_write_bytes, fsync_dir, sweep
from mastpipe.errors import LockError, NotWritableError, StateError, literal
from mastpipe.locking import HAVE_FLOCK, PidLock, flock, unflock

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["CHECKPOINT_SCHEMA", "Checkpoints", "LockHolder", "RunLock", "Sidecar", "StateDir", "as_stored",
           "atomic_write_bytes", "decoded", "fingerprint", "fsync_dir", "lock_holder", "read_table", "table_digest",
           "writable_problem", "write_table"]

log = logging.getLogger(__name__)

CHECKPOINT_SCHEMA = 1


class StateDir:
    """The files and folders of one state directory, named once (the layout is in the module
    docstring).

    Parameters
    ----------
    path : path-like
        The state directory; nothing is created until something is written.
    """

    LOCK = "lock"
    SECTIONS = "sections.json"
    PARTS = "products.parts"
    LEDGER = "ledger.sqlite"
    REPORTS = "reports"
    LAST_REPORT = "last-report.json"
    HISTORY = "history.jsonl"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"StateDir({os.fspath(self.path)!r})"

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    @property
    def lock(self) -> Path:
        return self.path / self.LOCK

    @property
    def sections(self) -> Path:
        return self.path / self.SECTIONS

    def table(self, stage: str) -> Path:
        """A table stage's checkpoint (FITS)."""
        return self.path / f"{stage}.fits"

    def sidecar(self, stage: str) -> Path:
        """What a checkpoint's table is (JSON): written after the table, so it always describes a
        complete one."""
        return self.path / f"{stage}.json"

    @property
    def parts(self) -> Path:
        return self.path / self.PARTS

    def parts_for(self, fingerprint: str) -> Path:
        """The finished product-list batches of the products stage with this fingerprint."""
        return self.parts / fingerprint[:16]

    def keep_parts(self, fingerprint: str) -> Path:
        """:meth:`parts_for` ``fingerprint``, discarding batches left under any other.

        Batches are only reusable by a run asking the same server for the same observations, so
        they live under the stage's fingerprint.
        """
        import shutil

        here = self.parts_for(fingerprint)
        if self.parts.is_dir():
            for child in self.parts.iterdir():
                if child != here:
                    shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        return here

    def clear_parts(self) -> None:
        """Drop every finished batch (the products stage completed, or starts afresh)."""
        import shutil

        shutil.rmtree(self.parts, ignore_errors=True)

    @property
    def ledger(self) -> Path:
        return self.path / self.LEDGER

    @property
    def reports(self) -> Path:
        return self.path / self.REPORTS

    def report(self, run_id: str) -> Path:
        return self.reports / f"{run_id}.json"

    @property
    def last_report(self) -> Path:
        return self.path / self.LAST_REPORT

    @property
    def history(self) -> Path:
        return self.path / self.HISTORY

    @property
    def names(self) -> Path:
        return self.path / "names.json"

    def sweep(self) -> list[Path]:
        """Remove the temporaries of writes whose process died (in the directory and
        ``reports/``); what a run does once it holds the lock."""
        removed = sweep(self.path) + sweep(self.reports)
        for path in removed:
            log.info("removed stale temporary %s", path)
        return removed


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts: key order and whitespace never change it."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def table_digest(table: Table) -> str:
    """Hash of a table's content (column names, dtypes, values), independent of metadata."""
    digest = hashlib.sha256()
    for name in sorted(table.colnames):
        column, mask = _plain(table[name])
        if mask is not None:
            digest.update(b"mask" + np.packbits(mask).tobytes())
        if column.dtype.byteorder not in ("=", "|"):  # FITS stores big-endian; content is the same
            column = column.astype(column.dtype.newbyteorder("="))
        digest.update(f"{name}:{column.dtype.str}:{len(column)}|".encode())
        digest.update(np.ascontiguousarray(column).tobytes() if column.dtype != object else
                      "\x1f".join(map(str, column)).encode())
    return digest.hexdigest()


def _plain(column: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """A column's values with masked cells set to one fixed filler, and its mask if any is set.

    FITS round trips change what lies under a masked cell (TNULL), and may mask an all-empty
    text column; neither changes the content, so neither may change the digest.
    """
    mask = np.asarray(getattr(column, "mask", np.zeros(0, dtype=bool)))
    values = np.asarray(column)
    if mask.any():
        values = np.where(mask, values.dtype.type(b"" if values.dtype.kind == "S" else 0), values)
        if values.dtype.kind == "S":  # an empty filler must not count as a masked text cell
            return values, None
        return values, mask
    return values, None


def decoded(value: Any) -> str:
    """A text cell as ``str``, whether it comes from a checkpoint (bytes) or from astroquery."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def as_stored(table: Table) -> Table:
    """The table as checkpoints hold it: text as bytes, masked text filled with ''."""
    from astropy.table import MaskedColumn, Table

    columns: dict[str, Any] = {}
    for name in table.colnames:
        column = table[name]
        if column.dtype.kind in "UO":
            values = np.asarray(column.filled("") if isinstance(column, MaskedColumn) else column, dtype=str)
            columns[name] = _utf8(values) if len(values) else np.array([], dtype="S1")
        elif isinstance(column, MaskedColumn) and not column.mask.any():
            columns[name] = np.asarray(column)
        else:
            columns[name] = column
    return Table(columns, copy=False)


def _utf8(values: np.ndarray) -> np.ndarray:
    """str array -> UTF-8 bytes array as narrow as its longest value (so the stored width depends
    on the content only); ASCII (nearly every MAST value) in one C-level cast."""
    try:
        encoded = values.astype("S")
    except UnicodeEncodeError:
        return np.char.encode(values, "utf-8")
    width = max(int(np.strings.str_len(encoded).max()), 1)
    return encoded if width == encoded.dtype.itemsize else encoded.astype(f"S{width}")


def write_table(path: Path, table: Table) -> None:
    """Write a table atomically as FITS (see the module docstring)."""
    stored = as_stored(table)
    if not stored.colnames:
        stored["_empty"] = np.zeros(0, dtype="i1")
    with atomic_path(path) as tmp:
        if _fast_fits_ok(stored):
            _write_fits_fast(tmp, stored)
        else:
            stored.write(tmp, format="fits", overwrite=True)


_FITS_BLOCK = 2880


def _fast_fits_ok(stored: Table) -> bool:
    """Whether :func:`_write_fits_fast` handles every column (plain scalars of simple types)."""
    for name in stored.colnames:
        column = stored[name]
        kind, shape = column.dtype.kind, column.shape[1:]
        if shape or kind not in "Sifb" or (kind == "S" and column.dtype.itemsize == 0):
            return False
        if kind == "b" and np.any(getattr(column, "mask", False)):
            return False
    return True


_LAYOUTS: dict[tuple[Any, ...], tuple[bytes, np.dtype]] = {}
_LAYOUTS_LOCK = threading.Lock()


def _fits_layout(stored: Table) -> tuple[bytes, np.dtype]:
    """The primary and table headers (for 0 rows) and the on-disk row dtype astropy would use.

    Cached by schema: product-list batches all share one, and building a header with astropy
    costs more than writing a batch's rows.
    """
    from astropy.io import fits

    key = tuple((name, stored[name].dtype.str, str(stored[name].unit), stored[name].description,
                 hasattr(stored[name], "mask"), bool(np.any(getattr(stored[name], "mask", False))),
                 getattr(stored[name], "fill_value", None) if stored[name].dtype.kind in "iu" else None)
                for name in stored.colnames)
    with _LAYOUTS_LOCK:
        layout = _LAYOUTS.get(key)
    if layout is None:
        hdu = fits.table_to_hdu(stored[:0], character_as_bytes=True)
        raw = hdu.data.dtype
        on_disk = np.dtype([(name, raw.fields[name][0].newbyteorder(">") if raw.fields[name][0].kind in "iuf"
                             else raw.fields[name][0]) for name in raw.names])
        header = (fits.PrimaryHDU().header.tostring() + hdu.header.tostring()).encode("ascii")
        if b"NAXIS2  =                    0" not in header:
            raise StateError("unexpected FITS header layout")
        layout = (header, on_disk)
        with _LAYOUTS_LOCK:
            _LAYOUTS[key] = layout
            if len(_LAYOUTS) > 64:
                _LAYOUTS.pop(next(iter(_LAYOUTS)))
    return layout


def _write_fits_fast(tmp: Path, stored: Table) -> None:
    """Write ``stored`` as the same bytes astropy writes, without astropy's per-cell work.

    astropy builds the header (column formats, TNULL of masked integer columns), so the file is
    exactly what ``Table.write(format="fits")`` produces (the tests compare both byte for byte);
    the rows are packed into one big-endian record array with masked cells filled as astropy
    fills them (integers with the column's fill value, floats with NaN, text with ''), and
    written in one call. Writing a million product rows takes under a second instead of ~5 s.
    """
    header, on_disk = _fits_layout(stored)
    rows = np.empty(len(stored), dtype=on_disk)
    for name in stored.colnames:
        column = stored[name]
        values = np.asarray(column)
        mask = getattr(column, "mask", None)
        if mask is not None and np.any(mask):
            kind = values.dtype.kind
            fill = np.nan if kind == "f" else (b"" if kind == "S" else column.fill_value)
            values = np.where(mask, values.dtype.type(fill), values)
        if values.dtype.kind == "b":
            values = np.where(values, ord("T"), ord("F")).astype("i1")
        rows[name] = values
    with open(tmp, "wb") as handle:
        handle.write(header.replace(b"NAXIS2  =                    0", b"NAXIS2  = %20d" % len(stored), 1))
        handle.write(memoryview(rows).cast("B"))  # type: ignore[arg-type]  # numpy's stubs lack Buffer
        handle.write(b"\0" * (-rows.nbytes % _FITS_BLOCK))


def read_table(path: Path) -> Table:
    """Read a table written by :func:`write_table`."""
    from astropy.table import Table

    table = Table.read(path, format="fits", character_as_bytes=True)
    if "_empty" in table.colnames:
        table.remove_column("_empty")
    table.meta.clear()
    return table


@dataclass(frozen=True)
class Sidecar:
    """What a checkpoint's ``.json`` records about its table."""

    stage: str
    fingerprint: str
    rows: int
    digest: str
    started: float
    finished: float
    schema: int = CHECKPOINT_SCHEMA
    reasons: tuple[str, ...] = ()
    #: For a checkpoint of rows of another stage's table (see :meth:`Checkpoints.save_rows`):
    #: that stage, and the digest its table had.
    base: str | None = None
    base_digest: str | None = None


#: The column of a rows checkpoint naming, for each of its rows, the row of the base table.
ROW = "_row"


def _rows_digest(base_digest: str, stored: Table) -> str:
    """The digest of a rows checkpoint: its base's content, and which rows and added columns."""
    return hashlib.sha256(f"rows of {base_digest}:{table_digest(stored)}".encode()).hexdigest()


def _stamp(path: Path) -> tuple[int, int, int]:
    """What tells a file rewritten since it was read (size, change time, inode)."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def take_rows(base: Table, rows: np.ndarray, added: Table) -> Table:
    """``base``'s rows ``rows`` (in that order) with ``added``'s columns after its own.

    What a rows checkpoint stands for; every row kept in order shares ``base``'s data.
    """
    if len(rows) == len(base) and (len(rows) == 0 or (rows == np.arange(len(rows))).all()):
        table = base.copy(copy_data=False)
    else:
        table = base[rows]
    for name in added.colnames:
        table[name] = added[name]
    return table


class Checkpoints:
    """Stage checkpoints in a state directory.

    A stage's checkpoint is either a whole table (``<stage>.fits``), or, for the stages that
    keep some rows of the products table and add columns (``unique``, ``filter``), only which
    rows and the added columns (:meth:`save_rows`): for a million product rows that is ~10 MB
    written instead of ~250 MB at each stage. Both are FITS tables astropy reads; the one
    function that turns a rows checkpoint back into its table is :meth:`load` (with the base
    stage's table), i.e. :func:`take_rows` on the ``_row`` column.
    """

    def __init__(self, directory: Path | StateDir) -> None:
        self.state = directory if isinstance(directory, StateDir) else StateDir(directory)
        self.directory = self.state.path
        #: stage -> rows of its base table, for the rows checkpoints loaded or saved here
        self.rows: dict[str, np.ndarray] = {}
        # whole tables read here, by stage: (digest, file stamp, table), so that a base read for
        # one rows checkpoint is not read again for the next
        self._loaded: dict[str, tuple[str, tuple[int, int, int], Table]] = {}

    def table_path(self, stage: str) -> Path:
        return self.state.table(stage)

    def sidecar_path(self, stage: str) -> Path:
        return self.state.sidecar(stage)

    def sidecar(self, stage: str) -> Sidecar | None:
        """The stage's sidecar, or None when missing or unreadable (then named in a warning)."""
        path = self.sidecar_path(stage)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, found {type(data).__name__}")
            data["reasons"] = tuple(data.get("reasons", ()))
            sidecar = Sidecar(**data)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("checkpoint %s is corrupt (%s); the %s stage will be recomputed", path, exc, stage)
            return None
        if sidecar.schema != CHECKPOINT_SCHEMA:
            log.warning("checkpoint %s has schema %s, not %s; recomputing", path, sidecar.schema, CHECKPOINT_SCHEMA)
            return None
        return sidecar

    def load(self, stage: str, sidecar: Sidecar, base: tuple[Table, str] | None = None) -> Table | None:
        """The stage's table, or None (with a warning) when it is missing, cut short or altered.

        A rows checkpoint needs its base stage's table: ``base`` (a table and its digest) when
        it is the one the checkpoint was made from, else that stage's checkpoint, read here.
        """
        path = self.table_path(stage)
        if sidecar.base is not None:
            return self._load_rows(stage, sidecar, base)
        self.rows.pop(stage, None)
        cached = self._loaded.get(stage)
        if cached is not None and cached[0] == sidecar.digest and cached[1] == _stamp(path):
            return cached[2].copy(copy_data=False)
        try:
            table = read_table(path)
        except FileNotFoundError:
            log.warning("checkpoint table %s is missing; the %s stage will be recomputed", path, stage)
            return None
        except Exception as exc:  # astropy raises many kinds for a truncated or garbled FITS file
            log.warning("checkpoint %s is corrupt (%s); the %s stage will be recomputed", path, exc, stage)
            return None
        if len(table) != sidecar.rows or table_digest(table) != sidecar.digest:
            log.warning("checkpoint %s does not match its sidecar (rows or content changed); "
                        "the %s stage will be recomputed", path, stage)
            return None
        self._loaded[stage] = (sidecar.digest, _stamp(path), table)
        return table.copy(copy_data=False)

    def save(self, stage: str, table: Table, fp: str, started: float, reasons: tuple[str, ...] = ()) -> Table:
        """Write the stage's table then its sidecar; returns the table as stored."""
        self.rows.pop(stage, None)
        stored = as_stored(table)
        write_table(self.table_path(stage), stored)
        sidecar = Sidecar(stage, fp, len(stored), table_digest(stored), started, time.time(), reasons=reasons)
        atomic_write_bytes(self.sidecar_path(stage), json.dumps(asdict(sidecar), indent=2).encode())
        return stored

    def save_rows(self, stage: str, table: Table, base_stage: str, base: Table, base_digest: str,
                  rows: np.ndarray, fp: str, started: float, reasons: tuple[str, ...] = ()) -> Table:
        """Checkpoint ``table``, which is ``base``'s rows ``rows`` plus columns of its own, as
        those rows and columns only; returns the table as :meth:`load` will give it back."""
        from astropy.table import Table

        added = as_stored(Table([table[name] for name in table.colnames if name not in base.colnames], copy=False))
        stored = Table({ROW: np.asarray(rows, dtype=np.int64)}, copy=False)
        for name in added.colnames:
            stored[name] = added[name]
        write_table(self.table_path(stage), stored)
        sidecar = Sidecar(stage, fp, len(stored), _rows_digest(base_digest, stored), started, time.time(),
                          reasons=reasons, base=base_stage, base_digest=base_digest)
        atomic_write_bytes(self.sidecar_path(stage), json.dumps(asdict(sidecar), indent=2).encode())
        self.rows[stage] = np.asarray(stored[ROW])
        return take_rows(base, self.rows[stage], added)

    def _load_rows(self, stage: str, sidecar: Sidecar, given: tuple[Table, str] | None) -> Table | None:
        path = self.table_path(stage)
        assert sidecar.base is not None
        base = given[0] if given is not None and given[1] == sidecar.base_digest else None
        if base is None:
            base_sidecar = self.sidecar(sidecar.base)
            if base_sidecar is None or base_sidecar.digest != sidecar.base_digest:
                log.warning("checkpoint %s holds rows of a %s table that has changed; the %s stage will be "
                            "recomputed", path, sidecar.base, stage)
                return None
            base = self.load(sidecar.base, base_sidecar)
            if base is None:
                return None
        try:
            stored = read_table(path)
        except FileNotFoundError:
            log.warning("checkpoint table %s is missing; the %s stage will be recomputed", path, stage)
            return None
        except Exception as exc:  # astropy raises many kinds for a truncated or garbled FITS file
            log.warning("checkpoint %s is corrupt (%s); the %s stage will be recomputed", path, exc, stage)
            return None
        if len(stored) != sidecar.rows or ROW not in stored.colnames or \
                _rows_digest(str(sidecar.base_digest), stored) != sidecar.digest:
            log.warning("checkpoint %s does not match its sidecar (rows or content changed); "
                        "the %s stage will be recomputed", path, stage)
            return None
        rows = np.asarray(stored[ROW])
        if len(rows) and (rows.min() < 0 or rows.max() >= len(base)):
            log.warning("checkpoint %s names rows its %s table does not have; the %s stage will be recomputed",
                        path, sidecar.base, stage)
            return None
        stored.remove_column(ROW)
        self.rows[stage] = rows
        return take_rows(base, rows, stored)

    def invalidate(self, stage: str) -> None:
        self.sidecar_path(stage).unlink(missing_ok=True)


def _reason(exc: OSError, target: Path) -> str:
    """``exc``'s reason, naming the path it concerns when that is not ``target`` itself
    (``mkdir -p`` fails on the first component that is a file, not on the directory asked for)."""
    reason = exc.strerror or str(exc)
    if exc.filename is not None and Path(exc.filename) != target:
        reason += f" ({exc.filename})"
    return reason


def writable_problem(directory: Path) -> str | None:
    """Why ``directory`` could not be created or written to, or None when it could.

    Creates nothing: the nearest existing ancestor must be a directory this process may write
    to (and enter), or ``directory`` itself when it exists. Checked before a run asks MAST
    anything, so that an unwritable destination fails at once rather than after every download.

    Parameters
    ----------
    directory : Path
        An absolute path.

    Returns
    -------
    str or None
        A reason such as ``"/data is not a directory"`` or ``"permission denied on /data"``.
    """
    existing = directory
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        if existing == directory:
            return "it exists and is not a directory"
        return f"{existing} is a file, not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return "permission denied" if existing == directory else f"permission denied on {existing}"
    return None


class RunLock:
    """An exclusive lock on a state directory, released by the kernel if the holder dies.

    ``flock`` is tied to the open file, so a lock left by a killed run (``kill -9``) is released
    with it: the next run sees a stale lock file, not a held lock, and proceeds. Where there is
    no ``flock`` (Windows), ``lock.pid`` beside it is a :class:`~mastpipe.locking.PidLock`,
    taken over when the process it names is gone.
    """

    def __init__(self, directory: Path | StateDir) -> None:
        self.path = (directory if isinstance(directory, StateDir) else StateDir(directory)).lock
        self._handle: IO[str] | None = None
        self._fallback = PidLock(self.path.with_name(self.path.name + ".pid"))

    def acquire(self) -> None:
        """Take the lock, creating the state directory if needed.

        Raises
        ------
        NotWritableError
            The state directory cannot be created, or the lock file in it cannot be written.
        LockError
            Another run holds the lock.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")
        except OSError as exc:
            # writable_problem names the component at fault (a file where a directory should be)
            reason = writable_problem(self.path.parent) or _reason(exc, self.path.parent)
            raise NotWritableError(
                f"cannot write to the state directory {literal(self.path.parent)}: {literal(reason)}",
                hint="choose a directory you can write to with {state_dir} (or state.directory in the recipe)",
                parameters=["state_dir"],
            ) from None
        try:
            taken = flock(handle.fileno()) if HAVE_FLOCK else self._fallback.acquire()
        except OSError as exc:
            handle.close()
            raise StateError(f"cannot lock {literal(self.path)}: {literal(exc.strerror)}") from None
        if not taken:
            handle.seek(0)
            holder = handle.read().strip() or (self._fallback.holder() if not HAVE_FLOCK else "") \
                or "another process"
            handle.close()
            hint = "wait for it to finish, or use another {state_dir}"
            if not HAVE_FLOCK:
                hint += (" (without flock, a run on another host is judged alive: once it is over, remove "
                         f"{literal(self._fallback.path)})")
            raise LockError(f"another run holds the lock on {literal(self.path.parent)} ({literal(holder)})",
                            hint=hint, parameters=["state_dir"]) from None
        handle.seek(0)
        previous = handle.read().strip()
        if previous:
            log.info("previous run did not release its lock cleanly (%s); it is no longer running", previous)
        handle.seek(0)
        handle.truncate()
        try:
            handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            handle.flush()
        except OSError as exc:  # a full disk: say which directory, not just "No space left"
            try:
                handle.close()  # flushes again, and fails again (the descriptor is closed all the same)
            except OSError:
                pass
            raise NotWritableError(
                f"cannot write to the state directory {self.path.parent}: {_reason(exc, self.path.parent)}",
                hint="free some space on its filesystem, or choose another directory with --state-dir "
                     "(or state.directory in the recipe)") from None
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()
            if HAVE_FLOCK:
                unflock(self._handle.fileno())
            else:
                self._fallback.release()
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True)
class LockHolder:
    """Who a state directory's lock file names, as :func:`lock_holder` finds it.

    Attributes
    ----------
    text : str
        The lock file's line (``pid N on HOST since TIME``).
    state : {"held", "stale", "unknown"}
        ``held``: that process still runs on this host; ``stale``: it does not (killed, say with
        ``kill -9``: the kernel released its lock, the next run proceeds); ``unknown``: another
        host, or a line that names no pid.
    """

    text: str
    state: str


def lock_holder(directory: Path | StateDir) -> LockHolder | None:
    """Who holds, or last failed to release, the run lock of ``directory``; None when nobody.

    A run writes its pid into the lock file and empties it when it releases the lock, so a
    non-empty file is a run in progress or one that died. Which of the two is told by whether
    the pid still lives, not by trying the lock: even a shared ``flock`` held for an instant
    would make a run starting at that instant fail as locked. Creates nothing.
    """
    try:
        text = StateDir(directory).lock.read_text().strip()
    except OSError:  # no lock file: no run ever took the lock here
        return None
    if not text:
        return None
    words = text.split()
    if len(words) < 4 or words[0] != "pid" or not words[1].isdigit() or words[2] != "on":
        return LockHolder(text, "unknown")
    if words[3] != socket.gethostname():
        return LockHolder(text, "unknown")
    try:
        os.kill(int(words[1]), 0)
    except ProcessLookupError:
        return LockHolder(text, "stale")
    except PermissionError:  # alive, but another user's
        return LockHolder(text, "held")
    return LockHolder(text, "held")

