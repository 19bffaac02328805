"""The temporary beside each download's target, on disk.

A file is fetched into ``.<name>.part`` beside its final path ``<name>``, with
``.<name>.part.json`` recording the expected size and the server's validator (ETag /
Last-Modified), so a run killed at any moment can resume the bytes it has, or start again when
the remote file changed. Here: their names, that metadata, hashing what is on disk, and finding
temporaries that no longer belong to any wanted file. The engine that writes them is
:mod:`mastpipe.transfer`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from mastpipe.resume import PartMeta


def part_path(dest: Path) -> Path:
    """The temporary beside ``dest``: ``.<name>.part``."""
    return dest.with_name(f".{dest.name}.part")


def meta_path(dest: Path) -> Path:
    """The temporary's metadata beside ``dest``: ``.<name>.part.json``."""
    return dest.with_name(f".{dest.name}.part.json")


def size_of(path: Path | str) -> int | None:
    """Size of ``path`` in bytes, or None when it does not exist."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def read_meta(dest: Path) -> PartMeta | None:
    """The metadata of the temporary of ``dest``, or None when absent or unreadable."""
    try:
        data = json.loads(meta_path(dest).read_text())
        return PartMeta(size=data.get("size"), etag=data.get("etag"),
                        last_modified=data.get("last_modified"))
    except (OSError, ValueError, AttributeError):
        return None  # absent or torn by a kill: the temporary is then restarted


def write_meta(dest: Path, meta: PartMeta) -> None:
    """Record what the temporary of ``dest`` is a prefix of (size, ETag, Last-Modified)."""
    # Written (atomically) before the first body byte, so a kill never leaves bytes without it.
    target = meta_path(dest)
    tmp = target.with_name(target.name + ".tmp")
    data = json.dumps({"size": meta.size, "etag": meta.etag, "last_modified": meta.last_modified})
    try:
        tmp.unlink()  # whatever is there (a leftover, a planted symlink) is not written through
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(data)
    os.replace(tmp, target)


def discard(dest: Path) -> None:
    """Remove the temporary of ``dest`` and its metadata, if any."""
    for path in (part_path(dest), meta_path(dest)):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def hash_file(path: Path, chunk: int, limit: int | None = None) -> tuple[hashlib._Hash, int]:
    """sha256 of the first ``limit`` bytes (all when None), read ``chunk`` bytes at a time, and
    how many were read."""
    digest, count = hashlib.sha256(), 0
    with open(path, "rb", buffering=0) as handle:
        while limit is None or count < limit:
            want = chunk if limit is None else min(chunk, limit - count)
            block = handle.read(want)
            if not block:
                break
            digest.update(block)
            count += len(block)
    return digest, count


def stale_temporaries(directories: Iterable[Path | str], keep: Iterable[Path | str]) -> list[Path]:
    """mastpipe temporaries in ``directories`` that belong to no file in ``keep``.

    Parameters
    ----------
    directories : iterable of path-like
        Directories to scan (not recursively).
    keep : iterable of path-like
        Final paths whose temporaries are still wanted.

    Returns
    -------
    list of Path
        ``.<name>.part``, ``.<name>.part.json`` and ``.<name>.part.json.tmp`` files to remove.
    """
    # Plain strings, not pathlib: this runs over every destination on every rerun.
    wanted = {os.fspath(dest) for dest in keep}
    found = []
    for directory in directories:
        directory = os.fspath(directory)
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if not name.startswith("."):
                continue
            for suffix in (".part", ".part.json", ".part.json.tmp"):
                if name.endswith(suffix) and len(name) > len(suffix) + 1:
                    owner = os.path.join(directory, name[1:-len(suffix)])
                    if owner not in wanted:
                        found.append(Path(directory, name))
                    break
    return found
