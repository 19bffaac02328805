"""The download mode's outlook remembered (``files.npz`` in the state directory) and re-checked
against the disk, so that ``status`` and ``plan`` need not read the checkpoints and the ledger
again: at a million products that was a minute.

What :func:`~mastpipe.stages.retrieve.outlook.retrieve_outlook` found is kept as three sets:

- files **plainly present** (recorded as done at their path, their size on disk): each is
  stat-ed again on every call, so a file deleted, cut short or grown behind the ledger's back
  is noticed as before (then everything is judged afresh);
- files with **no ledger row and nothing on disk**: still so while every directory the files
  go into has the change time it had (creating, removing or renaming an entry changes it) and
  resolves where it did;
- the **others** (a temporary to resume, a failed row, another file in the way ...): judged one
  by one again by :func:`~mastpipe.stages.retrieve.decide.decide`, from their remembered task
  and ledger row and the disk as it is now.

Reused only for the same filter checkpoint (digest, and size, change time and inode of its
files), recipe ``retrieve`` section, server, mastpipe version and ledger (size, change time
and inode of ``ledger.sqlite`` and its ``-wal``). A change in the same clock tick as an earlier
one leaves the time as it was, so what changed in the two seconds before the judging is not
trusted by its time: a directory is kept with its names as well (listed again by each call
until its time has settled; then remembered again without them); a ledger is reason not to
remember, except at a download run's end under the run lock (every run forgets ``files.npz``
before it opens the ledger: :func:`forget`). A run that wrote nothing to the ledger and changed
nothing on disk puts back what it forgot (:func:`put_back`), re-checked as ``status`` would:
a nightly rerun with nothing new does not judge every file again at its end.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mastpipe.atomic import atomic_path
from mastpipe.errors import MastpipeError
from mastpipe.stages.retrieve.stamps import (RACY_NS, by_directory, directories_hold, directory_stamps,
                                             sizes_hold)

if TYPE_CHECKING:
    from astropy.table import Table

    from mastpipe.recipe.models import Retrieve
    from mastpipe.stages.retrieve.ledger import LedgerRow
    from mastpipe.stages.retrieve.outlook import RetrieveOutlook
    from mastpipe.stages.retrieve.tableplan import TablePlan
    from mastpipe.state import StateDir

__all__ = ["Found", "Groups", "Remaining", "download_key", "download_outlook", "forget", "pending_breakdown", "put_back",
           "recheck", "remember_found", "started", "untouched"]

#: Each product row's group in a plan's breakdown: the groups, each row's, the bytes of them all.
Groups = tuple[list[tuple[str, str, str]], np.ndarray, int]

log = logging.getLogger(__name__)


@dataclass
class Found:
    """How :func:`retrieve_outlook` judged each file in download mode: the files with no ledger
    row and nothing on disk (``absent``), those plainly present (``done``: recorded as done at
    their path, their size on disk), and the others, judged one by one (``tasks``, with the
    ledger's ``rows`` for them)."""

    plan: TablePlan | None = None
    absent: list[int] = field(default_factory=list)
    done: list[int] = field(default_factory=list)
    #: the files judged one by one (their ``tasks``)
    judged: list[int] = field(default_factory=list)
    #: the size the ledger records for each file of ``done`` (on disk when judged)
    done_sizes: list[int] = field(default_factory=list)
    tasks: list[Any] = field(default_factory=list)
    rows: dict[str, LedgerRow] = field(default_factory=dict)
    refused: int = 0
    #: nothing on disk yet (:func:`untouched`): the files' table rows, keys, sizes, directories
    untouched: tuple[np.ndarray, np.ndarray, np.ndarray, list[str]] | None = None
    #: the names (folded) seen in each directory listed to find the ``absent`` files
    listings: dict[str, set[str] | None] = field(default_factory=dict)

    def fill(self, plan: TablePlan, absent: list[int], done: list[int], judged: list[int], tasks: list[Any],
             rows: dict[str, LedgerRow], listings: dict[str, set[str] | None]) -> None:
        self.plan, self.absent, self.done, self.judged, self.tasks = plan, absent, done, judged, tasks
        self.listings = listings
        self.refused = len(plan.refused)
        sizes = plan.sizes.tolist()  # a file plainly present has its expected size, when one is listed
        self.done_sizes = [sizes[i] if sizes[i] >= 0 else int(rows[plan.keys[i]].size or 0) for i in done]
        self.rows = {task.key: rows[task.key] for task in tasks if task.key in rows}


class Remaining(MutableMapping[str, int]):
    """``dataURI`` -> bytes still to fetch, the files with nothing anywhere held as two arrays
    (keys as UTF-8 bytes, sizes) until a key is asked for: ``status`` asks none, and a million
    Python strings were most of its time."""

    def __init__(self, keys: np.ndarray, sizes: np.ndarray) -> None:
        self._arrays: tuple[np.ndarray, np.ndarray] | None = (keys, sizes)
        self._known: dict[str, int] = {}  # set before the arrays were turned into a dict
        #: The breakdown's groups, the bytes of every file, and each file's group and bytes to
        #: fetch (:func:`pending_breakdown`); None when not remembered.
        self.breakdown: tuple[list[tuple[str, ...]], int, np.ndarray, np.ndarray] | None = None

    @property
    def known(self) -> dict[str, int]:
        """The files judged one by one (set on this mapping) while the arrays are kept."""
        return self._known if self._arrays is not None else {}

    def _all(self) -> dict[str, int]:
        if self._arrays is not None:
            from mastpipe.state import decoded_column

            keys, sizes = self._arrays
            self._known = {**dict(zip(decoded_column(keys), sizes.tolist())), **self._known}
            self._arrays = None
        return self._known

    def __getitem__(self, key: str) -> int:
        return self._all()[key]

    def __setitem__(self, key: str, value: int) -> None:
        self._known[key] = value  # the arrays' keys are files judged apart: never the same key

    def __delitem__(self, key: str) -> None:
        del self._all()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._known) + (len(self._arrays[0]) if self._arrays is not None else 0)


def _stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def download_key(key: dict[str, Any], section: Retrieve, ledger: Path) -> dict[str, Any]:
    """``key`` (what a remembered outlook is valid for, see
    :func:`mastpipe.stages.retrieve.outlook.status_outlook`) with the whole ``retrieve`` section
    (``overwrite`` and ``verify`` change decisions) and the ledger's files as they are now."""
    return {**key, "section": section.model_dump(mode="json"),
            "ledger": [_stamp(os.fspath(ledger)), _stamp(os.fspath(ledger) + "-wal")]}


def remember_found(path: Path, key: dict[str, Any], found: Found, outlook: RetrieveOutlook, started_ns: int,
                   groups: Callable[[], Groups | None] = lambda: None, *, locked: bool = False) -> None:
    """Keep what :func:`retrieve_outlook` ``found`` (judging since ``started_ns``) for ``key``;
    ``groups`` gives each product row's group in a plan's breakdown and the bytes of them all
    (:func:`mastpipe.report.plan_groups`), kept for the files to fetch so that ``plan`` needs
    no table either (None: ``plan`` reads the tables).

    ``locked``: the run lock is held (a download run at its end). Only a run writes the ledger,
    and it forgets ``files.npz`` first (:func:`forget`), so a ledger changed just before is no
    reason not to remember; directories changed just before are kept with their names."""
    try:
        if found.untouched is not None:  # nothing on disk yet: every file to fetch, as arrays
            rows, absent, sizes, parents = found.untouched
            present, present_sizes, judged_rows = by_directory([]), np.zeros(0, np.int64), rows[:0]
        elif found.plan is not None:
            plan = found.plan
            split = ([dest.rpartition("/") for dest in plan.dests] if os.sep == "/" and not os.altsep  # twice as fast
                     else [(head, os.sep, tail) for head, tail in map(os.path.split, plan.dests)])
            parents = list({parent for parent, _, _ in split})
            present = by_directory([split[i] for i in found.done])
            present_sizes = np.asarray(found.done_sizes, dtype=np.int64)
            absent = np.array([plan.keys[i].encode("utf-8", "surrogateescape") for i in found.absent], dtype=bytes)
            sizes = plan.sizes[np.asarray(found.absent, dtype=np.int64)]
            rows = plan.rows[np.asarray(found.absent, dtype=np.int64)]
            judged_rows = plan.rows[np.asarray(found.judged, dtype=np.int64)]
        else:
            return
        ledger_times = [stamp[1] for stamp in key["ledger"] if stamp is not None]
        recent = started_ns - RACY_NS
        if not locked and any(t >= recent for t in ledger_times):
            return  # changed while (or just before) it was judged: judged afresh next time
        directories = directory_stamps(parents, found.listings, recent)
        if directories is None:
            return
        present_dirs, present_at, present_names = present
        meta = {"key": key, "directories": directories, "files": outlook.files, "ledger": outlook.ledger,
                "present_dirs": present_dirs,
                "refused": found.refused,
                "judged": [[{**asdict(task), "dest": os.fspath(task.dest)},
                            asdict(found.rows[task.key]) if task.key in found.rows else None] for task in found.tasks]}
        grouping = groups()
        arrays: dict[str, np.ndarray] = {}
        if grouping is not None:
            names, codes, total = grouping
            meta |= {"groups": names, "total": total, "judged_groups": codes[judged_rows].tolist()}
            arrays["absent_groups"] = codes[rows]
        arrays |= {"meta": np.array(json.dumps(meta)), "present_at": present_at, "present": present_names,
                   "present_sizes": present_sizes,
                   "absent": absent, "absent_sizes": np.maximum(sizes, 0)}
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy types allow_pickle as a key
    except (OSError, ValueError, TypeError) as exc:  # a read-only state directory: status still answers
        log.debug("could not remember the files' outlook in %s: %s", path, exc)


def untouched(table: Any, section: Retrieve, *, base: Path, mast_url: str, ledger: Path,
              found: Found) -> RetrieveOutlook | None:
    """The outlook when there is no ledger and no directory the files go into exists (after
    ``run --until filter``): every file to fetch, found a column at a time (``found`` filled);
    None otherwise, or when some row needs judging one by one."""
    from mastpipe.stages.retrieve.outlook import RetrieveOutlook
    from mastpipe.stages.retrieve.tablecount import untouched_files

    if os.path.lexists(ledger):
        return None
    files = untouched_files(table, (base / section.destination).resolve(), section.layout, mast_url)
    if files is None:
        return None
    rows, keys, sizes, directories, refused = files
    found.untouched, found.refused = (rows, keys, sizes, directories), len(refused)
    outlook = RetrieveOutlook("download", len(keys) + len(refused), to_fetch=len(keys), blocked=len(refused))
    outlook.remaining = Remaining(keys, np.maximum(sizes, 0))
    outlook.bytes_to_fetch = int(np.maximum(sizes, 0).sum())
    return outlook


def download_outlook(load: Callable[[], Table | None], section: Retrieve, *, base: Path, state: StateDir,
                     mast_url: str, key: dict[str, Any] | None, started: int,
                     observations: Callable[[], Table | None], judge: bool = True,
                     locked: bool = False) -> RetrieveOutlook | None:
    """:func:`~mastpipe.stages.retrieve.outlook.status_outlook` in download mode: what was found
    last time re-checked against the disk (:func:`recheck`; at a run's end, what the run set
    aside: :func:`put_back`), else judged afresh and remembered (not ``judge``: only when
    nothing is on disk yet, found a column at a time; else None; ``locked``: see
    :func:`remember_found`)."""
    from mastpipe.stages.retrieve.outlook import retrieve_outlook

    full = download_key(key, section, state.ledger) if key is not None else None
    if full is None:
        if locked:  # nothing could be remembered
            return None
    else:
        known = put_back(state, full, section) if locked else recheck(state.files, full, section)
        if known is not None:
            return known
    table = load()
    if table is None:
        return None
    found = Found()
    outlook = untouched(table, section, base=base, mast_url=mast_url, ledger=state.ledger, found=found)
    if outlook is None and not judge:
        return None
    try:
        if outlook is None:
            outlook = retrieve_outlook(table, section, base=base, state_dir=state.path, mast_url=mast_url, found=found)
    except MastpipeError as error:  # a run's end judges only to remember: the run has said all there is
        if not locked:
            raise
        log.debug("the files were not judged at the run's end: %s", error)
        return None
    if full is not None:
        remember_found(state.files, full, found, outlook, started, lambda: _groups(table, observations()),
                       locked=locked)
    return outlook


def _groups(products: Table, observations: Table | None) -> Groups | None:
    """Each product row's group in a plan's breakdown, and the bytes of all (None: the tables
    lack what a plan needs, and ``plan`` says so itself)."""
    from mastpipe.report import plan_groups

    if observations is None or not len(products) or "size" not in products.colnames:
        return None
    try:
        groups, codes = plan_groups(products, observations)
    except (KeyError, ValueError):
        return None
    total = int(np.maximum(np.ma.filled(products["size"], 0).astype(np.int64), 0).sum())
    return groups, codes, total


def forget(state: StateDir) -> None:
    """Forget what was remembered (a run is about to write the ledger): what
    :func:`remember_found` keeps under the run lock relies on it. It is set aside, out of
    ``status``'s sight, for :func:`put_back` at the run's end; one left by a run killed before
    its end is removed (that run may have written the ledger since)."""
    try:
        os.replace(state.files, state.files_before_run)
    except FileNotFoundError:
        _discard(state.files_before_run)
    except OSError as exc:
        log.debug("could not set %s aside: %s", state.files, exc)
        _discard(state.files)
        _discard(state.files_before_run)


def _discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.debug("could not forget %s: %s", path, exc)


def put_back(state: StateDir, key: dict[str, Any], section: Retrieve) -> RetrieveOutlook | None:
    """At a download run's end (the run lock held): what :func:`forget` set aside, put back as
    ``files.npz`` and its outlook returned, when it still holds for ``key`` (the ledger's files
    as they are now) and the disk (:func:`recheck`); None otherwise, and it is discarded.

    The run wrote nothing to the ledger only if the ledger's files are as remembered and were
    last changed more than a clock tick (:data:`RACY_NS`) before the setting aside: a write
    since would show in their change time. (A filesystem whose rename leaves the change time
    of what is renamed as it was only makes that test stricter.)"""
    aside = state.files_before_run
    try:
        set_aside_ns = os.stat(aside).st_ctime_ns
    except OSError:
        return None
    try:
        if any(stamp is not None and stamp[1] >= set_aside_ns - RACY_NS for stamp in key["ledger"]):
            return None
        outlook = recheck(aside, key, section)
        if outlook is not None:
            os.replace(aside, state.files)
        return outlook
    except OSError as exc:
        log.debug("could not put %s back: %s", aside, exc)
        return None
    finally:
        _discard(aside)


def recheck(path: Path, key: dict[str, Any], section: Retrieve) -> RetrieveOutlook | None:
    """The outlook remembered in ``path`` for ``key``, checked against the disk as it is now
    (see the module docstring); None when there is none, or anything differs."""
    from mastpipe.stages.retrieve.files import FileTask
    from mastpipe.stages.retrieve.ledger import LedgerRow
    from mastpipe.stages.retrieve.outlook import RetrieveOutlook, judge_tasks, outlook_transfer

    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta["key"] != key:
                return None
            arrays = {name: data[name] for name in data.files}
        present_at, present, present_sizes = arrays["present_at"], arrays["present"], arrays["present_sizes"]
        absent, absent_sizes = arrays["absent"], arrays["absent_sizes"]
        grouped = arrays["absent_groups"] if "groups" in meta else None
        settled = directories_hold(meta["directories"])
        if settled is None:
            return None
        if not sizes_hold(meta["present_dirs"], present_at, present, present_sizes):
            return None
        tasks = [FileTask(**{**task, "dest": Path(task["dest"])}) for task, _ in meta["judged"]]
        rows = {task["key"]: LedgerRow(**row) for task, row in meta["judged"] if row is not None}
        outlook = RetrieveOutlook("download", int(meta["files"]), present=len(present), blocked=int(meta["refused"]),
                                  ledger=bool(meta["ledger"]))
    except FileNotFoundError:  # no outlook remembered, or a present file is gone
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.debug("remembered outlook %s not used: %s", path, exc)
        return None
    if settled and all(stamp is None or stamp[1] < time.time_ns() - RACY_NS for stamp in key["ledger"]):
        _settle(path, meta, arrays)  # (a ledger as recent as a run's end: a run may start and write it)
    remaining = outlook.remaining = Remaining(absent, absent_sizes)
    outlook.to_fetch, outlook.bytes_to_fetch = len(absent), int(absent_sizes.sum())
    if tasks:
        judge_tasks(outlook, outlook_transfer(section), tasks, rows)
    if grouped is not None:
        judged = dict(zip((task.key for task in tasks), meta["judged_groups"]))
        extra = [(judged[key], size) for key, size in remaining.known.items()]
        remaining.breakdown = ([tuple(group) for group in meta["groups"]], int(meta["total"]),
                               np.concatenate([grouped, np.array([g for g, _ in extra], dtype=np.int64)]),
                               np.concatenate([absent_sizes, np.array([b for _, b in extra], dtype=np.int64)]))
    return outlook


def _settle(path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Remember again without the directories' names, found settled by
    :func:`~mastpipe.stages.retrieve.stamps.directories_hold` (so later calls list no directory)."""
    meta = {**meta, "directories": {directory: stamp[:2] for directory, stamp in meta["directories"].items()}}
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **{**arrays, "meta": np.array(json.dumps(meta))})  # type: ignore[arg-type]
    except OSError as exc:
        log.debug("could not remember the files' outlook in %s again: %s", path, exc)


def started() -> int:
    """The time judging starts (ns), for :func:`remember_found`."""
    return time.time_ns()


def pending_breakdown(outlook: RetrieveOutlook) -> tuple[int, list[tuple[str, str, str, int, int]]] | None:
    """A download-mode plan's total bytes and breakdown of the files to fetch, from what
    :func:`recheck` found (None: not remembered; ``plan`` then reads the tables)."""
    from mastpipe.report import grouped_totals

    remaining = outlook.remaining
    if not isinstance(remaining, Remaining) or remaining.breakdown is None:
        return None
    groups, total, codes, sizes = remaining.breakdown
    return total, grouped_totals([(str(c), str(i), str(k)) for c, i, k in groups], codes, sizes)
