"""Mission searches' column names, checked against MAST's own list of each mission's columns.

A mission search's ``conditions`` and ``select_cols`` name columns of that mission's catalogue,
which only MAST knows (its ``column_list`` service; hundreds for JWST, and they change). The list
is fetched by ``mastpipe validate --online`` and by the first run whose query stage computes, and
kept in the user's cache (``$XDG_CACHE_HOME/mastpipe/columns/<server>/<mission>.json``, or
``~/.cache/...``; ``MASTPIPE_CACHE_DIR`` overrides the root), so later offline ``validate`` calls
check against it too. Without a cached list, offline ``validate`` checks everything else and
says nothing about the names. A name the cache lacks is looked up once more at MAST before a run
fails for it (a new column).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mastpipe.errors import Problem
from mastpipe.recipe.fields import suggest

__all__ = ["cache_dir", "cached_columns", "save_columns", "column_problems", "checked_columns", "Columns"]

#: A mission's columns: name -> queryable (MAST's "queryable" field is "yes" or "no").
Columns = dict[str, bool]


def cache_dir(server: str, environ: dict[str, str] | None = None) -> Path:
    """Where the column lists of ``server`` (a URL, or the sandbox's identity) are kept.

    The cache belongs to the user, not to a recipe: the process environment decides where it is
    unless ``environ`` is given and names ``MASTPIPE_CACHE_DIR`` or ``XDG_CACHE_HOME`` itself.
    """
    env = environ if environ and ({"MASTPIPE_CACHE_DIR", "XDG_CACHE_HOME"} & set(environ)) else os.environ
    root = env.get("MASTPIPE_CACHE_DIR") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "mastpipe")
    readable = re.sub(r"[^A-Za-z0-9.-]+", "_", server)[:60].strip("_") or "server"
    digest = hashlib.sha256(server.encode()).hexdigest()[:10]
    return Path(root) / "columns" / f"{readable}-{digest}"


def _columns(answer: Iterable[dict[str, Any]]) -> Columns:
    return {str(c["column_name"]): str(c.get("queryable", "yes")).lower() != "no" for c in answer}


def cached_columns(server: str, mission: str, environ: dict[str, str] | None = None) -> Columns | None:
    """The cached column list of ``mission`` at ``server``, or None (none yet, or unreadable)."""
    try:
        return _columns(json.loads((cache_dir(server, environ) / f"{mission}.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save_columns(server: str, mission: str, answer: list[dict[str, Any]],
                 environ: dict[str, str] | None = None) -> Columns:
    """Keep MAST's column list answer in the cache (atomically; a cache that cannot be written
    is skipped: the list is only a convenience) and return it as :data:`Columns`."""
    from mastpipe.state import atomic_write_bytes

    try:
        directory = cache_dir(server, environ)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / f"{mission}.json", json.dumps(answer, indent=1).encode())
    except OSError:
        pass
    return _columns(answer)


def column_problems(recipe: Any, located: Any, columns: Callable[[str], Columns | None]) -> list[Problem]:
    """Every condition and ``select_cols`` entry of the recipe's mission searches that names no
    column of its mission, located where it is written, with a did-you-mean.

    ``columns(mission)`` gives the mission's columns, or None when they are not known (then
    nothing is said about that mission's names).
    """
    problems = []
    for name, query in recipe.query.items():
        if query.mission is None:
            continue
        known = columns(query.mission)
        if known is None:
            continue
        queryable = [c for c, q in known.items() if q]
        for column in query.conditions:
            if column in known and known[column]:
                continue
            message = (f"{column!r} is a {query.mission} column MAST does not search on" if column in known
                       else f"unknown {query.mission} column {column!r}")
            hint = suggest(column, queryable) or f"{query.mission} columns MAST searches on include {describe(known)}"
            problems.append(located.problem(("query", name, "conditions", column), message, hint, key=True))
        for i, column in enumerate(query.select_cols):
            if column not in known:
                problems.append(located.problem(("query", name, "select_cols", i),
                                                f"unknown {query.mission} column {column!r}",
                                                suggest(column, list(known)) or "remove it, or check its spelling"))
    return problems


def describe(columns: Columns, limit: int = 12) -> str:
    """A few of the searchable column names, for messages."""
    names = sorted(c for c, q in columns.items() if q)
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")


def _named(recipe: Any, mission: str) -> set[str]:
    return {c for q in recipe.query.values() if q.mission == mission for c in (*q.conditions, *q.select_cols)}


def checked_columns(recipe: Any, located: Any, server: str, fetch: Callable[[str], list[dict[str, Any]]], *,
                    online: bool = True, refresh: bool = False,
                    environ: dict[str, str] | None = None) -> list[Problem]:
    """:func:`column_problems` with the column lists from the cache, fetched from MAST
    (``fetch(mission)``, then cached) when ``online`` and the cache has none, or lacks a name the
    recipe uses (MAST may have added it), or ``refresh`` is set."""
    def columns(mission: str) -> Columns | None:
        known = None if refresh else cached_columns(server, mission, environ)
        if online and (known is None or not _named(recipe, mission) <= set(known)):
            known = save_columns(server, mission, fetch(mission), environ)
        return known

    return column_problems(recipe, located, columns)
