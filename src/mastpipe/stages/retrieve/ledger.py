"""The download ledger: one SQLite row per file, so a rerun knows what is done without asking MAST.

The ledger lives in the state directory (``<state>/ledger.sqlite``), in WAL mode so a reader never
blocks the writer; on a network filesystem (NFS, where WAL is unsafe) in rollback-journal mode
instead (``state.ledger_journal``, see :class:`Ledger`). Worker threads write through one
connection guarded by a lock: each write is a single small statement, far cheaper than the HTTP request it records, so the lock is never
contended enough to matter and there is no per-thread connection bookkeeping.

A rerun reads every row with one ``SELECT`` (:meth:`Ledger.rows`) and then only stats files: that
is what keeps a rerun over 10,000 completed files well under a second.

The ledger only records what was downloaded; the files themselves are the truth. So a ledger that
SQLite finds corrupt (``file is not a database``, ``database disk image is malformed``) is moved
aside to ``ledger.sqlite.corrupt-<time>`` with a warning and replaced by an empty one: files
already on disk are then adopted by their size (and re-hashed with ``--verify``), nothing is
downloaded again and nothing is lost.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mastpipe.errors import LedgerError, StateError
from mastpipe.state import StateDir

__all__ = ["DONE", "FAILED", "RUNNING", "Ledger", "LedgerRow", "product_version", "product_versions", "signature",
           "signed_key"]

RUNNING, DONE, FAILED = "running", "done", "failed"
FILENAME = StateDir.LEDGER
log = logging.getLogger(__name__)
#: SQLite's primary result codes for a file that is not, or no longer, a sound database.
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    key           TEXT PRIMARY KEY,   -- the product's dataURI
    dest          TEXT NOT NULL,
    status        TEXT NOT NULL,      -- running | done | failed
    size          INTEGER,
    sha256        TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    etag          TEXT,
    last_modified TEXT,
    started       REAL,
    finished      REAL
)
"""
#: Columns added since the first ledgers, with their types: added to an older ledger when it
#: is opened (``ALTER TABLE ... ADD COLUMN``, never a rebuild), so ledgers of every version open.
#: Add new columns here, at the end.
_ADDED = (
    ("checksum", "TEXT"),      # FITS CHECKSUM/DATASUM: verified | none (NULL: not looked at)
    ("mtime_ns", "INTEGER"),   # the done file's stat when recorded: a rerun finding another
    ("inode", "INTEGER"),      # size, mtime or inode re-hashes the file without a request
    ("source", "TEXT"),        # where the done file came from: mast | s3 (MAST's cloud copy)
    ("version", "TEXT"),       # the product-list fields naming the file's version (product_version)
)
_COLUMNS = ("key", "dest", "status", "size", "sha256", "attempts", "last_error", "etag",
            "last_modified", "started", "finished") + tuple(name for name, _ in _ADDED)
#: Product-list columns that name a version of a file besides its size: MAST keeps a file's
#: name when it reprocesses it, and says so in the calibration software version.
VERSION_COLUMNS = ("prvversion",)


def product_version(row: dict[str, Any]) -> str | None:
    """``prvversion=1.12.5`` from a product-list row (its :data:`VERSION_COLUMNS` that are set),
    or None when the row names no version: then the size alone tells versions apart."""
    parts = [part for name in VERSION_COLUMNS if (part := _version_part(name, row.get(name))) is not None]
    return ";".join(parts) or None


def product_versions(columns: dict[str, list[Any]], count: int) -> list[str | None]:
    """:func:`product_version` of ``count`` rows at once, from the values of their
    :data:`VERSION_COLUMNS` (a column absent: not set in any row): a call per file was 1 s at a
    million files."""
    parts = [[_version_part(name, value) for value in columns[name]] for name in VERSION_COLUMNS if name in columns]
    if not parts:
        return [None] * count
    if len(parts) == 1:
        return parts[0]
    return [";".join(part for part in row if part is not None) or None for row in zip(*parts)]


def _version_part(name: str, value: Any) -> str | None:
    return None if value in (None, "") else f"{name}={value}"  # the one spelling of a version


def signature(key: str, dest: str, size: int, version: str | None) -> str:
    """A done file as :meth:`Ledger.signatures` gives its rows (the same text its query builds)."""
    return f"{key}\0{dest}\0{size}\0{version or ''}"


def signed_key(text: str) -> str:
    """The key a :func:`signature` begins with."""
    return text[:text.index("\0")]


@dataclass(frozen=True)
class LedgerRow:
    """What the ledger knows about one file (see the schema above for the fields)."""

    key: str
    dest: str
    status: str
    size: int | None = None
    sha256: str | None = None
    attempts: int = 0
    last_error: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    started: float | None = None
    finished: float | None = None
    checksum: str | None = None
    mtime_ns: int | None = None
    inode: int | None = None
    source: str | None = None
    version: str | None = None


def _row(values: tuple[Any, ...], _new: Any = object.__new__) -> LedgerRow:
    """A :class:`LedgerRow` of one ``SELECT`` row's values, in ``_COLUMNS`` order.

    The same object ``LedgerRow(*values)`` makes, without a frozen dataclass's ``__init__``
    (one ``object.__setattr__`` per field): for a million rows that was 4.5 of the 6.7 s
    ``rows()`` took, what a first ``status`` in download mode waits for.
    """
    row: LedgerRow = _new(LedgerRow)
    row.__dict__.update(zip(_COLUMNS, values))
    return row


class Ledger:
    """The SQLite ledger of one state directory; safe to share between threads.

    Parameters
    ----------
    path : path-like
        The database file, or a directory (then ``<dir>/ledger.sqlite``). Parent directories
        are created.
    journal : {"auto", "wal", "delete"} or None
        SQLite journal mode (the recipe's ``state.ledger_journal``). ``auto``: WAL, unless the
        ledger lives on a network filesystem (NFS, SMB, Lustre ...: :func:`journal_for`) or
        SQLite refuses WAL there, then ``delete`` (a rollback journal, safe on NFS where WAL's
        shared memory is not). None leaves the database's mode as it is (readers).
    recover : bool
        When SQLite finds the file corrupt, move it aside (``ledger.sqlite.corrupt-<time>``,
        with its ``-wal`` and ``-shm`` files) with a warning and start an empty ledger, instead
        of raising. Also applies to the first :meth:`rows`, where damage inside a sound header
        shows. Nothing is lost: files on disk are adopted again by size.

    Raises
    ------
    LedgerError
        (a :class:`StateError`, exit 2) When the database cannot be opened or is not a ledger
        and was not (or could not be) set aside.
    """

    def __init__(self, path: Path | str, *, recover: bool = True, journal: str | None = "auto") -> None:
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / FILENAME
        self.path = path
        self.recover = recover
        self.journal = journal  # what was asked; journal_mode is what SQLite uses
        self.journal_mode: str | None = None
        self._lock = threading.Lock()
        try:
            self._db = self._connect()
        except sqlite3.Error as exc:
            if not (recover and _is_corrupt(exc)):
                raise self._error("cannot open", exc) from None
            self._db = self._set_aside(exc)
        except OSError as exc:  # the state directory cannot be created
            raise self._error("cannot open", exc) from None

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
        try:
            self.journal_mode = self._set_journal(db)
            db.execute(_SCHEMA)
            _migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    def _set_journal(self, db: sqlite3.Connection) -> str | None:
        """Put ``db`` in the journal mode asked for (see the class docstring); return the mode."""
        if self.journal is None:
            return None
        wanted = journal_for(self.path) if self.journal == "auto" else self.journal
        try:
            got = str(db.execute(f"PRAGMA journal_mode={wanted.upper()}").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:  # e.g. no shared memory for WAL's -shm file
            if self.journal != "auto" or wanted != "wal":
                raise
            log.info("SQLite cannot use WAL for %s (%s); using a rollback journal", self.path, exc)
            got = ""
        if got != wanted and self.journal == "auto" and wanted == "wal":
            got = str(db.execute("PRAGMA journal_mode=DELETE").fetchone()[0]).lower()
        # WAL + NORMAL: a power cut may lose the last rows but never corrupts the database (a
        # lost "done" row only means the file is hashed and adopted again). A rollback journal
        # needs FULL for the same promise.
        db.execute("PRAGMA synchronous=NORMAL" if got == "wal" else "PRAGMA synchronous=FULL")
        return got

    def _error(self, doing: str, exc: BaseException) -> LedgerError:
        return LedgerError(
            f"{doing} the download ledger {self.path}: {exc}",
            hint=f"the ledger only records what was downloaded: if {self.path.parent} is writable, move "
                 f"{self.path.name} aside and rerun; files already on disk are adopted by their size "
                 "(add --verify to re-hash them)")

    def _set_aside(self, exc: sqlite3.Error) -> sqlite3.Connection:
        """Move the corrupt database (and its WAL files; its connection is closed) aside and
        return a connection to a new, empty one."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        try:
            # the -wal file too: SQLite would replay it into the new, empty database
            for suffix in ("-wal", "-shm", ""):
                old = self.path.with_name(self.path.name + suffix)
                if old.exists():
                    old.rename(aside.with_name(aside.name + suffix))
            db = self._connect()
        except (OSError, sqlite3.Error) as again:
            raise self._error("cannot set aside the corrupt", again) from None
        log.warning("the download ledger %s was corrupt (%s); moved it to %s and started an empty one: "
                    "files already on disk are adopted by their size, nothing is downloaded again",
                    self.path, exc, aside.name)
        return db

    # -- reading -------------------------------------------------------------------------------

    def rows(self, keys: Iterable[str] | None = None) -> dict[str, LedgerRow]:
        """Every row (or those for ``keys``), read with a single query.

        Parameters
        ----------
        keys : iterable of str, optional
            Restrict the answer to these keys: up to 20,000 are looked up (500 a statement),
            more are read with the whole table in one statement.

        Returns
        -------
        dict
            key -> :class:`LedgerRow`.
        """
        wanted = None if keys is None else list(keys)
        if wanted is not None and len(wanted) <= 20_000:  # a few: looked up, 500 a statement
            picked = [wanted[i:i + 500] for i in range(0, len(wanted), 500)]
            return {r[0]: _row(r) for chunk in picked for r in self._select(
                f"SELECT {', '.join(_COLUMNS)} FROM files WHERE key IN ({', '.join('?' * len(chunk))})", chunk)}
        found = {r[0]: _row(r) for r in self._select(f"SELECT {', '.join(_COLUMNS)} FROM files")}
        return found if wanted is None else {k: found[k] for k in wanted if k in found}

    def signatures(self) -> tuple[set[str], list[str]]:
        """Each done row as :func:`signature` writes it (``key NUL dest NUL size NUL version``,
        built by the query below: keep the two alike), and the keys of the others: a million
        files compared with the ledger at once, with no :class:`LedgerRow` each (5.7 s at 1M;
        this ~1 s)."""
        done = self._select("SELECT key || char(0) || dest || char(0) || size || char(0) || ifnull(version, '') "
                            "FROM files WHERE status = ? AND size IS NOT NULL", (DONE,))
        return {r[0] for r in done}, [r[0] for r in self._select(
            "SELECT key FROM files WHERE status != ? OR size IS NULL", (DONE,))]

    def _select(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                if not (self.recover and _is_corrupt(exc)):
                    raise self._error("cannot read", exc) from None
                self._db.close()  # damage past a sound header shows only here
                self._db = self._set_aside(exc)
                return []

    def get(self, key: str) -> LedgerRow | None:
        """The row for ``key``, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM files WHERE key = ?", (key,)
            ).fetchone()
        return LedgerRow(*row) if row else None

    # -- writing -------------------------------------------------------------------------------

    def _write(self, sql: str, params: tuple[object, ...]) -> None:
        with self._lock:
            try:
                self._db.execute(sql, params)
            except sqlite3.Error as exc:
                raise StateError(f"cannot write the download ledger {self.path}: {exc}") from None

    def mark_running(self, key: str, dest: Path | str, size: int | None) -> None:
        """Record that a transfer of ``key`` has started (attempt counts are kept)."""
        self._write(
            "INSERT INTO files (key, dest, status, size, started) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET dest=excluded.dest, status=excluded.status, "
            "size=excluded.size, started=excluded.started, finished=NULL",
            (key, str(dest), RUNNING, size, time.time()),
        )

    def mark_done(self, key: str, dest: Path | str, size: int, sha256: str, attempts: int,
                  etag: str | None = None, last_modified: str | None = None,
                  checksum: str | None = None, stat: os.stat_result | None = None,
                  source: str | None = None, version: str | None = None) -> None:
        """Record a complete, verified file (``attempts`` is added to the running total).

        ``checksum`` says whether its FITS checksums were verified; ``stat`` (of the file under
        its final name, taken after the rename) lets a rerun notice a file changed behind the
        ledger's back. ``source`` says where its bytes came from (``mast`` or ``s3``); None keeps
        what an earlier row said (a file adopted or moved was not fetched now). ``version`` is what the product list named the version it was fetched
        as (:func:`product_version`), so a rerun notices MAST reprocessed it.
        """
        now = time.time()
        self._write(
            "INSERT INTO files (key, dest, status, size, sha256, attempts, last_error, etag, "
            "last_modified, started, finished, checksum, mtime_ns, inode, source, version) "
            "VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET dest=excluded.dest, status=excluded.status, "
            "size=excluded.size, sha256=excluded.sha256, attempts=files.attempts + "
            "excluded.attempts, last_error=NULL, etag=excluded.etag, "
            "last_modified=excluded.last_modified, finished=excluded.finished, "
            "checksum=excluded.checksum, mtime_ns=excluded.mtime_ns, inode=excluded.inode, "
            "source=COALESCE(excluded.source, files.source), version=excluded.version",
            (key, str(dest), DONE, size, sha256, attempts, etag, last_modified, now, now, checksum,
             stat.st_mtime_ns if stat else None, stat.st_ino if stat else None, source, version),
        )

    def set_versions(self, versions: dict[str, str]) -> None:
        """Record the version of files done before the ledger kept versions (one transaction)."""
        if not versions:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN")
                self._db.executemany("UPDATE files SET version = ? WHERE key = ? AND version IS NULL",
                                     [(v, k) for k, v in versions.items()])
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StateError(f"cannot write the download ledger {self.path}: {exc}") from None

    def mark_failed(self, key: str, dest: Path | str, error: str, attempts: int) -> None:
        """Record that ``key`` failed this run with ``error`` (already free of secrets)."""
        now = time.time()
        self._write(
            "INSERT INTO files (key, dest, status, attempts, last_error, started, finished) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET dest=excluded.dest, status=excluded.status, "
            "size=NULL, sha256=NULL, checksum=NULL, mtime_ns=NULL, inode=NULL, "
            # what an earlier success recorded no longer describes it
            "attempts=files.attempts + excluded.attempts, last_error=excluded.last_error, "
            "finished=excluded.finished",
            (key, str(dest), FAILED, attempts, error, now, now),
        )

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Filesystem types (as /proc/mounts names them) where SQLite's WAL is unsafe: its shared-memory
#: index does not work across machines (https://www.sqlite.org/wal.html, "Disadvantages").
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "lustre", "gpfs",
                                 "ceph", "glusterfs", "fuse.glusterfs", "fuse.sshfs", "beegfs", "fuse.s3fs",
                                 "fuse.gcsfuse", "panfs", "orangefs", "fuse.cephfs"})


def filesystem_type(path: Path, mounts: str | None = None) -> str | None:
    """The type of the filesystem holding ``path`` (``ext4``, ``nfs4`` ...), from ``/proc/mounts``
    (``mounts``: its text, for a test); None where that cannot be told (not Linux)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None
    target = Path(path).resolve()  # symlinks followed as far as they exist
    best, kind = -1, None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (str(target) == point or str(target).startswith(point.rstrip("/") + "/")) and len(point) > best:
            best, kind = len(point), fields[2]
    return kind


def journal_for(path: Path, mounts: str | None = None) -> str:
    """The journal mode ``auto`` means for a ledger at ``path``: ``delete`` on a network
    filesystem (:data:`NETWORK_FILESYSTEMS`), ``wal`` elsewhere."""
    return "delete" if filesystem_type(path.parent, mounts) in NETWORK_FILESYSTEMS else "wal"


def _migrate(db: sqlite3.Connection) -> None:
    """Add the columns of :data:`_ADDED` a ledger written by an older mastpipe lacks."""
    have = {row[1] for row in db.execute("PRAGMA table_info(files)")}
    for name, kind in _ADDED:
        if name not in have:
            try:
                db.execute(f"ALTER TABLE files ADD COLUMN {name} {kind}")
            except sqlite3.OperationalError as exc:  # another process added it a moment ago
                if "duplicate column" not in str(exc):
                    raise


def _is_corrupt(exc: sqlite3.Error) -> bool:
    """Whether SQLite says the file is not, or no longer, a sound database (not: locked, read
    only, cannot be opened, disk full -- which moving the file aside would not fix)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return "file is not a database" in text or "malformed" in text
