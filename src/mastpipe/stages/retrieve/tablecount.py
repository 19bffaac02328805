"""A product table's files counted a column at a time, without a Python string per file: how
many files and which rows are refused (``status`` in the modes without a ledger), and every
file as arrays when nothing is on disk yet (``status`` in download mode after
``run --until filter``). Both stand on :func:`mastpipe.stages.retrieve.tableplan.judge_table`
and answer as :func:`~mastpipe.stages.retrieve.tableplan.plan_table` would.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mastpipe.stages.retrieve.tablecheck import all_distinct, unique_by_runs
from mastpipe.stages.retrieve.tableplan import Refused, judge_table, plan_table
from mastpipe.state import decoded_column

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["count_table", "untouched_files"]


def count_table(table: Table, destination: Path, layout: str, mast_url: str,
                resolved: dict[str, str] | None = None) -> tuple[int, list[Refused]]:
    """How many files ``table``'s products make (one per distinct ``dataURI``) and the rows
    refused: :func:`plan_table`'s answer without making a Python string per key and path
    (what ``status`` needs in the modes without a ledger). Raises as :func:`plan_table`;
    ``resolved`` is filled as :attr:`TablePlan.resolved`."""
    judged = judge_table(table, destination, layout, mast_url)
    rows = np.flatnonzero(judged.eligible)
    slow = judged.by_row.values()
    uris = _at(judged.uris, rows) if judged.uris is not None else np.array([], dtype="S1")
    if not slow and all_distinct(uris):  # the usual answer, without a Python object per key
        files = len(uris)
    else:
        keys = set(uris.tolist()) | {task.key.encode("utf-8", "surrogateescape") for task in slow}
        files = len(keys)
    # Distinct file names make distinct paths: only a repeated one needs the whole paths.
    if slow or (judged.names is not None and not all_distinct(_at(judged.names, rows))):
        paths = set(judged.relative(rows).tolist()) if judged.names is not None else set()
        paths |= {os.fsencode(os.fspath(task.dest)[len(judged.prefix):]) for task in slow}
        if len(paths) < len(rows) + len(slow):  # some path is shared: plan_table names them
            plan_table(table, destination, layout, mast_url)
    if resolved is not None:
        resolved.update(judged.resolved)
    return files, judged.refused


def _at(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values[rows]``, without the copy when ``rows`` is every row (the usual case): at
    millions of rows each copy of a text column was a step up in the run's peak memory."""
    return values if len(rows) == len(values) else values[rows]


def untouched_files(table: Table, destination: Path, layout: str,
                    mast_url: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[Refused]] | None:
    """The files of ``table`` as arrays, when no directory they go into exists yet: the table
    rows they come from, their keys (UTF-8 bytes), their sizes (-1: unknown), the directories
    (absolute) and the rows refused. None when some row needs planning one by one, a key is
    listed twice, or a directory exists: then :func:`plan_table` is asked. What ``status`` needs
    to say "every file to fetch" after ``run --until filter``, without a Python string per file.
    Raises as :func:`plan_table` when two products map to one path."""
    judged = judge_table(table, destination, layout, mast_url)
    if judged.by_row or judged.uris is None or judged.parents is None:
        return None
    rows = np.flatnonzero(judged.eligible)
    parents, _ = unique_by_runs(judged.parents[rows])
    directories = [judged.prefix + parent for parent in decoded_column(parents)]
    if any(os.path.lexists(directory) for directory in directories) or not all_distinct(_at(judged.uris, rows)):
        return None
    if judged.names is not None and not all_distinct(_at(judged.names, rows)):
        plan_table(table, destination, layout, mast_url)  # names the products sharing a path, or says none do
        return None
    return rows, judged.uris[rows], judged.sizes[rows], directories, judged.refused
