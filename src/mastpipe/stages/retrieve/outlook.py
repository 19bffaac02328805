"""The outlook of the retrieve stage: what a run would do with the files, judged without doing it.

What ``mastpipe plan`` and ``mastpipe status`` show for the retrieve stage, whose state is the
ledger and the disk rather than a checkpoint. Reads only; contacts no server.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mastpipe.atomic import atomic_write_bytes
from mastpipe.stages.retrieve.stamps import folded

from collections.abc import MutableMapping

if TYPE_CHECKING:
    from collections.abc import Callable

    from astropy.table import Table

    from mastpipe.recipe.models import Retrieve
    from mastpipe.stages.retrieve.ledger import LedgerRow
    from mastpipe.stages.retrieve.recheck import Found
    from mastpipe.stages.retrieve.tableplan import TablePlan

__all__ = ["RetrieveOutlook", "judge_tasks", "outlook_transfer", "remember_outlook", "retrieve_outlook", "status_outlook"]

log = logging.getLogger(__name__)


@dataclass
class RetrieveOutlook:
    """What the retrieve stage would do with the files of a filter result, judged from the
    ledger and the disk alone (see :func:`retrieve_outlook`).

    Attributes
    ----------
    mode : str
        The recipe's ``retrieve.mode``; only ``download`` keeps a ledger, so for the other modes
        every count but ``files`` is 0.
    files : int
        Files the filter result names.
    present : int
        Files needing no download: recorded as done with their size on disk, or complete on disk
        (adopted, or a finished temporary) and only to be hashed.
    to_fetch : int
        Files a run would request.
    bytes_to_fetch : int
        Bytes those requests would bring, when sizes are known (a resumed file counts only what
        it lacks).
    partial : int
        Of ``to_fetch``, files a run resumes from a temporary an earlier run left.
    failed : int
        Of ``to_fetch``, files the ledger records as failed.
    blocked : int
        Files a run would fail without a request: another file is in the way and
        ``retrieve.overwrite`` is ``never``, or the product's name or ids are unsafe.
    remaining : mapping
        ``dataURI`` -> bytes still to fetch, for each file in ``to_fetch`` (a dict, or a
        :class:`~mastpipe.stages.retrieve.recheck.Remaining` when answered from what was
        remembered).
    ledger : bool
        Whether a ledger exists (False: no download has started yet in this state directory).
    """

    mode: str
    files: int
    present: int = 0
    to_fetch: int = 0
    bytes_to_fetch: int = 0
    partial: int = 0
    failed: int = 0
    blocked: int = 0
    remaining: MutableMapping[str, int] = field(default_factory=dict)
    ledger: bool = False


def retrieve_outlook(table: Table, section: Retrieve, *, base: Path, state_dir: Path,
                     mast_url: str, resolved: dict[str, str] | None = None,
                     found: Found | None = None) -> RetrieveOutlook:
    """What the retrieve stage would do with ``table`` (a filter result), without doing it.

    Each file is judged by :func:`mastpipe.stages.retrieve.decide.decide` from the ledger row and the disk,
    exactly as :meth:`mastpipe.stages.retrieve.engine.Transfer.plan` judges it at the start of a run, but
    nothing is touched: no request, no sweep of stale temporaries, no ledger written (the
    ledger is only opened when it exists, and only read). Contacts no server.

    Parameters
    ----------
    table : astropy.table.Table
        The products to retrieve, normally the filter stage's result.
    section : Retrieve
        The recipe's ``retrieve`` section.
    base : Path
        Directory the recipe's relative paths are relative to.
    state_dir : Path
        The state directory whose ledger is read.
    mast_url : str
        The server the download URLs point at.
    resolved : dict, optional
        Filled with each directory the files' paths went through and where it resolved.
    found : Found, optional
        Filled with how each file was judged (download mode), for
        :mod:`mastpipe.stages.retrieve.recheck` to remember.

    Returns
    -------
    RetrieveOutlook

    Raises
    ------
    TransferError
        As the retrieve stage, when two products map to one path.
    StateError
        When the ledger cannot be read.
    """
    from mastpipe.errors import LedgerError
    from mastpipe.stages.retrieve.ledger import Ledger
    from mastpipe.stages.retrieve.tablecount import count_table
    from mastpipe.stages.retrieve.tableplan import plan_table
    from mastpipe.state import StateDir

    destination = (base / section.destination).resolve()
    if section.mode != "download":  # counts only: no string per key and path
        files, refused = count_table(table, destination, section.layout, mast_url, resolved)
        return RetrieveOutlook(section.mode, files + len(refused), blocked=len(refused))
    plan = plan_table(table, destination, section.layout, mast_url)
    if resolved is not None:
        resolved.update(plan.resolved)
    last = dict(zip(plan.keys, range(len(plan.keys))))  # a key listed twice: its last file, as a run keeps it
    outlook = RetrieveOutlook(section.mode, len(last) + len(plan.refused), blocked=len(plan.refused))
    path = StateDir(state_dir).ledger
    outlook.ledger = path.is_file()
    rows: dict[str, LedgerRow] = {}
    present: list[int] = []
    if outlook.ledger:  # Ledger() would create a missing one
        try:
            with Ledger(path, recover=False, journal=None) as ledger:  # status and plan only read
                present, rows = _signed_present(ledger, plan, table, last)
        except LedgerError as error:
            log.warning("%s; the next run sets it aside and adopts the files on disk by size",
                        error.message)
            found, present, rows = None, [], {}  # an unreadable ledger is not an answer to remember
    listings: dict[str, set[str] | None] = {}
    last = {key: i for key, i in last.items() if i not in plain} if (plain := set(present)) else last
    absent, judged = _nothing_there(plan.dests, last, rows, listings)
    done, judged = _plainly_done(plan, table, judged, rows)
    done = sorted(done + present)
    outlook.present += len(done)
    sizes = plan.sizes.tolist()
    for i in absent:  # what decide() says of a file with no ledger row and nothing on disk: FETCH
        remaining = max(sizes[i], 0)
        outlook.to_fetch += 1
        outlook.remaining[plan.keys[i]] = remaining
        outlook.bytes_to_fetch += remaining
    tasks = plan.tasks(table, mast_url, judged)
    if found is not None:
        found.fill(plan, absent, done, judged, tasks, rows, listings)
    judge_tasks(outlook, outlook_transfer(section), tasks, rows)
    return outlook


def outlook_transfer(section: Retrieve) -> Any:
    """A :class:`~mastpipe.stages.retrieve.engine.Transfer` with the settings a run's gets from
    the recipe (``run --verify`` is not known here), to ask its decisions."""
    from mastpipe.stages.retrieve.engine import Transfer
    from mastpipe.stages.retrieve.settings import DownloadSettings

    return Transfer(DownloadSettings(verify=section.verify == "sha256", overwrite=section.overwrite,
                                     check_space=False))


def judge_tasks(outlook: RetrieveOutlook, transfer: Any, tasks: list[Any], rows: dict[str, LedgerRow]) -> None:
    """Count into ``outlook`` what ``transfer`` decides for each of ``tasks`` (files judged one
    by one: a ledger row, or something on disk under their name)."""
    from mastpipe.stages.retrieve.decide import ActionKind
    from mastpipe.stages.retrieve.ledger import FAILED

    for task, row, action in transfer.decisions(tasks, rows):
        if action.kind is ActionKind.KEEP_FOREIGN:
            outlook.blocked += 1
        elif action.kind in (ActionKind.FETCH, ActionKind.RESTART, ActionKind.RESUME):
            outlook.to_fetch += 1
            remaining = max((task.size or 0) - action.offset, 0)
            outlook.remaining[task.key] = remaining
            outlook.bytes_to_fetch += remaining
            outlook.partial += action.kind is ActionKind.RESUME
            outlook.failed += row is not None and row.status == FAILED
        else:  # SKIP_DONE, VERIFY_DONE, ADOPT, FINISH_VERIFY: on disk, no request
            outlook.present += 1


def _versions(plan: TablePlan, table: Table, which: list[int]) -> list[str | None]:
    """The version (:func:`~mastpipe.stages.retrieve.ledger.product_version`) of the files at ``which``."""
    from mastpipe.stages.retrieve.ledger import VERSION_COLUMNS, product_versions

    picked = plan.rows[np.asarray(which, dtype=np.int64)]
    columns: dict[str, list[Any]] = {}
    for name in VERSION_COLUMNS:
        if name in table.colnames:
            column = table[name]
            values = np.asarray(column)[picked]
            plain = (np.strings.decode(values, "utf-8") if values.dtype.kind == "S" else values).tolist()
            mask = np.asarray(getattr(column, "mask", np.zeros(len(column), bool)))[picked].tolist()
            columns[name] = [None if m else v for v, m in zip(plain, mask)]
    return product_versions(columns, len(which))


def _signed_present(ledger: Any, plan: TablePlan, table: Table,
                    last: dict[str, int]) -> tuple[list[int], dict[str, LedgerRow]]:
    """The files plainly present (:func:`_plainly_done`), their key, path, size and version found
    among the ledger's done rows at once (:meth:`Ledger.signatures`; 1M :class:`LedgerRow` took
    5.7 s), one stat each; and the ledger rows of the other files."""
    from mastpipe.stages.retrieve.ledger import signature, signed_key
    from mastpipe.stages.retrieve.stamps import sizes_match

    signed, others = ledger.signatures()
    done = None  # the done rows' keys, taken from their signatures when needed (1M: ~0.3 s)
    if len(signed) < len(last) // 2:  # most files not done: sign only those the ledger has
        done = {signed_key(text) for text in signed}
        which = sorted(i for key, i in last.items() if key in done)
    else:
        which = sorted(last.values())
    if plan.by_row:  # planned one at a time: judged one at a time
        which = [i for i in which if int(plan.rows[i]) not in plan.by_row]
    keys, dests, sizes = plan.keys, plan.dests, plan.sizes.tolist()
    signed_here = [i for i, version in zip(which, _versions(plan, table, which)) if sizes[i] >= 0
                   and signature(keys[i], dests[i], sizes[i], version) in signed and "\0" not in keys[i]]
    there = sizes_match([dests[i] for i in signed_here], [sizes[i] for i in signed_here])
    present = [i for i, ok in zip(signed_here, there) if ok]
    plain = set(present)
    wanted = [key for key, i in last.items() if i not in plain]
    if wanted:
        known = (done if done is not None else {signed_key(text) for text in signed}).union(others)
        wanted = [key for key in wanted if key in known]
    return present, ledger.rows(wanted) if wanted else {}


def _plainly_done(plan: TablePlan, table: Table, judged: list[int],
                  rows: dict[str, LedgerRow]) -> tuple[list[int], list[int]]:
    """Of the files at ``judged``, those plainly present (recorded as done at this very
    path, of this version, with the recorded and expected size on disk: what :func:`decide`
    answers ``SKIP_DONE`` or ``VERIFY_DONE`` for, both of which fetch nothing), found with one
    stat each and no :class:`FileTask`; and the others, which are judged one by one."""
    from mastpipe.stages.retrieve.ledger import DONE

    if not judged:
        return [], judged
    versions = _versions(plan, table, judged)
    sizes = plan.sizes.tolist()
    done: list[int] = []
    rest: list[int] = []
    for j, i in enumerate(judged):
        row = rows.get(plan.keys[i])
        if (row is None or row.status != DONE or row.dest != plan.dests[i] or row.size is None
                or (row.version is not None and versions[j] is not None and row.version != versions[j])
                or (sizes[i] >= 0 and sizes[i] != row.size) or plan.rows[i] in plan.by_row):
            rest.append(i)
            continue
        try:
            on_disk = os.stat(plan.dests[i]).st_size
        except OSError:
            on_disk = None
        if on_disk == row.size:
            done.append(i)
        else:
            rest.append(i)
    return done, rest


def _nothing_there(dests: list[str], last: dict[str, int], rows: dict[str, LedgerRow],
                   listings: dict[str, set[str] | None]) -> tuple[list[int], list[int]]:
    """Split the files (``last``: key -> its index) into those with no ledger row and nothing on
    disk under their name or their temporary's, found by listing each directory once, and the
    others, which :meth:`Transfer.decisions` judges one by one. ``listings`` is filled with the
    names (folded) seen in each directory listed.

    A file done under another path (a layout changed) may be moved there rather than fetched,
    and whether it may depends on every file's path: then every file is judged one by one.
    """
    from mastpipe.stages.retrieve.ledger import DONE

    if any(row.status == DONE and row.dest != dests[i] for key, i in last.items()
           if (row := rows.get(key)) is not None):
        return [], sorted(last.values())
    absent, judged = [], []
    for key, i in last.items():
        if key in rows:
            judged.append(i)
            continue
        directory, name = os.path.split(dests[i])
        if directory not in listings:
            try:
                with os.scandir(directory) as entries:
                    listings[directory] = {folded(entry.name) for entry in entries}
            except (FileNotFoundError, NotADirectoryError):
                listings[directory] = set()
            except OSError:
                listings[directory] = None  # unreadable: let the one-by-one path find out
        names = listings[directory]
        if names is not None and folded(name) not in names and folded(f".{name}.part") not in names:
            absent.append(i)
        else:
            judged.append(i)
    return absent, sorted(judged)


def status_outlook(load: Callable[[], Table | None], section: Retrieve, *, base: Path, state_dir: Path,
                   mast_url: str, checkpoint: tuple[str, list[Path]],
                   observations: Callable[[], Table | None] = lambda: None,
                   judge: bool = True, locked: bool = False) -> RetrieveOutlook | None:
    """:func:`retrieve_outlook` of the filter checkpoint (``load`` reads it; None: there is
    none usable), remembered in the state directory for the modes that keep no ledger.

    In those modes the outlook depends only on the checkpoint's table, the recipe's
    ``retrieve`` section, the server, and where the files' directories resolve (a symlink
    could lead a path out of the destination). ``checkpoint`` is the checkpoint's digest and
    the files it is read from (known by size, change time and inode); the answer is reused
    while they, the section and every directory's resolution are unchanged and no directory
    holds a symlink, so at a million products ``status`` need not read the table again. A run
    in those modes leaves its outlook behind (:func:`remember_outlook`), so even the first
    ``status`` after it reads no table. ``download`` depends on the ledger and every file on
    disk: what was found is remembered too (``files.npz``), and re-checked against the disk on
    every call (:mod:`mastpipe.stages.retrieve.recheck`), with each file's group in a plan's
    breakdown (``observations`` reads the query checkpoint, for the instruments). Not
    ``judge``: in download mode, answer (and remember) only what needs no judging one by one.
    ``locked``: called by a download run at its end, the run lock held (files judged afresh and
    remembered, see :func:`mastpipe.stages.retrieve.recheck.remember_found`).
    """
    from mastpipe.stages.retrieve import recheck
    from mastpipe.state import StateDir

    started = recheck.started()
    key = _outlook_key(section, base=base, mast_url=mast_url, checkpoint=checkpoint)
    state = StateDir(state_dir)
    if section.mode == "download":
        return recheck.download_outlook(load, section, base=base, state=state, mast_url=mast_url, key=key,
                                        started=started, observations=observations, judge=judge, locked=locked)
    if key is not None:
        known = _remembered(state.outlook, key)
        if known is not None:
            return known
    table = load()
    if table is None:
        return None
    resolved: dict[str, str] = {}
    outlook = retrieve_outlook(table, section, base=base, state_dir=state_dir, mast_url=mast_url, resolved=resolved)
    if key is not None:
        _remember(state.outlook, key, resolved, outlook)
    return outlook


def remember_outlook(outlook: RetrieveOutlook, resolved: dict[str, str], section: Retrieve, *, base: Path,
                     state_dir: Path, mast_url: str, checkpoint: tuple[str, list[Path]]) -> None:
    """Leave ``outlook`` (what a run in a mode without a ledger found for the filter
    checkpoint ``checkpoint``; ``resolved``: where its directories resolved) where
    :func:`status_outlook` finds it, as if ``status`` had judged it."""
    from mastpipe.state import StateDir

    key = _outlook_key(section, base=base, mast_url=mast_url, checkpoint=checkpoint)
    if key is not None:
        _remember(StateDir(state_dir).outlook, key, resolved, outlook)


def _outlook_key(section: Retrieve, *, base: Path, mast_url: str,
                 checkpoint: tuple[str, list[Path]]) -> dict[str, Any] | None:
    """What a remembered outlook is valid for (None: a checkpoint file is missing)."""
    import mastpipe

    digest, files = checkpoint
    try:
        stamps = [[st.st_size, st.st_mtime_ns, st.st_ino] for st in map(os.stat, files)]
    except OSError:  # load() says what is missing
        return None
    return {"version": mastpipe.__version__, "checkpoint": [digest, stamps], "mast_url": mast_url,
            "base": os.fspath(base), "retrieve": [section.mode, os.fspath(section.destination), section.layout]}


def _remember(path: Path, key: dict[str, Any], resolved: dict[str, str], outlook: RetrieveOutlook) -> None:
    if outlook.mode == "download" or _changed(resolved):
        return
    try:
        atomic_write_bytes(path, json.dumps({"key": key, "directories": resolved, "outlook": {
            "mode": outlook.mode, "files": outlook.files, "blocked": outlook.blocked}}).encode())
    except OSError as exc:  # a read-only state directory: status still answers
        log.debug("could not remember the outlook in %s: %s", path, exc)


def _remembered(path: Path, key: dict[str, Any]) -> RetrieveOutlook | None:
    try:
        data = json.loads(path.read_text())
        if data["key"] != key or _changed(data["directories"]):
            return None
        counts = data["outlook"]
        return RetrieveOutlook(str(counts["mode"]), int(counts["files"]), blocked=int(counts["blocked"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _changed(resolved: dict[str, str]) -> bool:
    """Whether a directory no longer resolves where it did, or holds a symlink (then a
    product's file name may lead elsewhere: the outlook is not to be remembered or reused)."""
    for directory, real in resolved.items():
        if os.path.realpath(directory) != real:
            return True
        try:
            with os.scandir(directory) as entries:
                if any(entry.is_symlink() for entry in entries):
                    return True
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return True
    return False
