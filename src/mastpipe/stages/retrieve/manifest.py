"""The manifest: one row per product the retrieve stage considered, as ECSV (astropy reads it)
and JSON, written atomically; paths relative to its directory unless asked otherwise, its
provenance (recipe, run, server, mastpipe version) in the ECSV header."""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from mastpipe.atomic import atomic_path, open_new, sweep
from mastpipe.memory import no_cycle_collection
from mastpipe.stages.retrieve.files import FileResult, FileTask

if TYPE_CHECKING:
    from astropy.table import Table

    from mastpipe.recipe.models import Recipe
    from mastpipe.stages.retrieve.s3 import CloudCopy
    from mastpipe.stages.retrieve.stage import Refused

__all__ = ["MANIFEST_COLUMNS", "NOT_IN_CLOUD", "CloudChoice", "json_twin", "manifest_meta", "read_manifest",
           "write_manifest"]

log = logging.getLogger(__name__)
MANIFEST_COLUMNS = ("dataURI", "path", "size", "sha256", "checksum", "status", "message", "url", "source",
                    "s3_uri", "s3_url")
NOT_IN_CLOUD = "no copy in the cloud bucket (retrieve.source: cloud skips it; auto would fetch it from MAST)"


@dataclass
class CloudChoice:
    """Where each product comes from under ``retrieve.source``: its cloud copy (when located) and
    the endpoint, for the manifest and curl URLs."""

    source: str = "mast"
    copies: dict[str, CloudCopy | None] = field(default_factory=dict)
    endpoint: str | None = None

    def copy(self, key: str) -> CloudCopy | None:
        return self.copies.get(key) if self.source != "mast" else None

    def skips(self, task: FileTask) -> bool:
        """``source: cloud`` and no copy: listed as skipped (exclusive-access files excepted)."""
        return self.source == "cloud" and not task.protected and self.copies.get(task.key) is None

    def https(self, key: str) -> str:
        from mastpipe.stages.retrieve.s3 import https_url

        copy = self.copies.get(key)
        return https_url(copy.key, self.endpoint) if copy else ""


def write_manifest(path: Path, tasks: list[FileTask], results: dict[str, FileResult] | None,
                   refused: Sequence[Refused] = (), cloud: CloudChoice | None = None, *,
                   meta: Mapping[str, Any] | None = None, absolute: bool = False) -> Path:
    """Write the manifest as ECSV (``path``) and JSON (same name, ``.json``), atomically.

    Refused rows are listed too (status ``failed``, no path), so nothing the filter kept
    goes unmentioned. ``tasks`` carry MAST's URLs (the ``url`` column); ``cloud`` adds each
    product's cloud copy (``s3_uri``, ``s3_url``) and the ``source`` it came (or would come) from.

    Parameters
    ----------
    meta : mapping, optional
        Provenance for the ECSV header (recipe, run id, server, source, mastpipe version: see
        :func:`manifest_meta`); ``paths`` is added, saying how paths
        are written.
    absolute : bool
        Write absolute paths. By default each path is relative to the manifest's directory, so
        a destination restored elsewhere (a CI cache, a copy to another machine) keeps a
        manifest that is right; :func:`read_manifest` makes them absolute again.
    """
    cloud = cloud or CloudChoice()
    where = str if absolute else _relative_to(path.parent.resolve())
    rows = [[r.key, "", r.size if r.size is not None else -1, "", "", "failed", r.reason, r.url, "", "", ""]
            for r in refused]
    with no_cycle_collection():
        for task in tasks:
            result = (results or {}).get(task.key)
            copy = cloud.copies.get(task.key)
            if result is None:  # manifest and curl modes: what a download would do
                skip = cloud.skips(task)
                status, message = ("skipped", NOT_IN_CLOUD) if skip else ("listed", "")
                source = "" if skip else "s3" if cloud.copy(task.key) is not None and not task.protected else "mast"
            else:
                status, message, source = result.status, result.error or "", result.source or ""
            rows.append([
                task.key, where(task.dest),
                (result.size if result and result.size is not None else task.size) or -1,
                (result.sha256 if result else None) or "",
                # verified: the FITS file's own CHECKSUM/DATASUM matched its bytes; none: it has none
                (result.checksum if result else None) or "",
                status, message, task.url, source,
                copy.s3_uri if copy else "",
                cloud.https(task.key) if copy else "",
            ])
    meta = {**(meta or {}), "paths": "absolute" if absolute else "relative to this manifest's directory"}
    for stale in sweep(path.parent) + _old_temporaries(path):  # left by a run killed while writing
        log.info("removed %s, a manifest temporary a killed run left", stale)
    with atomic_path(path) as tmp:
        _write_ecsv(tmp, rows, meta)
    with atomic_path(json_twin(path)) as tmp, open_new(tmp, "w", encoding="ascii") as handle:
        _write_json_lines(handle, rows)
    return path


def _write_json_lines(handle: IO[str], rows: list[list[Any]], chunk: int = 1 << 16) -> None:
    """The rows as a JSON list of objects, one per line.

    json's C encoder, called once per ``chunk`` rows (with an indent it uses the Python one:
    ~15 s at a million rows; a call per row: ~10 s), then a line break put between the
    objects: ``}, {"`` cannot occur inside a JSON string (its quote would be escaped) and
    ``}`` outside one only ends a row, so the break goes exactly between rows.
    """
    first = '{"' + MANIFEST_COLUMNS[0] + '": '
    handle.write("[")
    for start in range(0, len(rows), chunk):
        with no_cycle_collection():
            text = json.dumps([dict(zip(MANIFEST_COLUMNS, row)) for row in rows[start:start + chunk]])
        handle.write(("," if start else "") + "\n" + text[1:-1].replace("}, " + first, "},\n" + first))
    handle.write("\n]\n")


_DTYPES = [str, str, np.int64, str, str, str, str, str, str, str, str]


def _relative_to(base: Path) -> Callable[[Path], str]:
    """A file's path relative to ``base`` (``os.path.relpath``), worked out once per directory:
    a million files share a few thousand."""
    done: dict[str, str] = {}

    def relative(dest: Path) -> str:
        directory, name = os.path.split(dest)
        rel = done.get(directory)
        if rel is None:
            rel = done[directory] = os.path.relpath(directory, base)
        return name if rel == os.curdir else os.path.join(rel, name)

    return relative


def _write_ecsv(path: Path, rows: list[list[Any]], meta: Mapping[str, Any]) -> None:
    """The rows as ECSV: astropy's header (written for no rows), then the rows by Python's C
    ``csv`` writer; astropy's writer formats each cell in Python (~10 s at a million rows).
    Every text cell is quoted, which ECSV reads as astropy's own quoting."""
    import csv

    from astropy.table import Table

    header = Table(names=MANIFEST_COLUMNS, dtype=_DTYPES)
    header.meta.update(meta)
    header.write(path, format="ascii.ecsv", overwrite=True)
    with open(path, "a", newline="", encoding="utf-8") as handle:
        csv.writer(handle, delimiter=" ", quotechar='"', quoting=csv.QUOTE_NONNUMERIC,
                   lineterminator="\n").writerows(rows)


def read_manifest(path: str | os.PathLike[str]) -> Table:
    """Read a manifest (ECSV) with every ``path`` absolute, wherever the manifest now lives.

    Relative paths (the default) are resolved against the manifest's directory; empty paths
    (refused products) stay empty. The header's provenance is in ``table.meta``.

    Examples
    --------
    >>> manifest = mastpipe.read_manifest("data/jwst-1073/manifest.ecsv")   # doctest: +SKIP
    >>> manifest.meta["run_id"], manifest["path"][0]                          # doctest: +SKIP
    """
    from astropy.table import Table

    path = Path(path)
    table = Table.read(path, format="ascii.ecsv")
    base = path.resolve().parent
    table["path"] = [os.path.normpath(base / p) if p and not os.path.isabs(p) else str(p) for p in table["path"]]
    return table


def _old_temporaries(path: Path) -> list[Path]:
    """Remove ``.<manifest>.<pid>.tmp`` files (the name earlier versions wrote the manifest
    under) whose process is gone; return them."""
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = candidate.name[len(path.name) + 2:-len(".tmp")]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # that process still runs: perhaps writing it now
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        try:
            candidate.unlink()
            removed.append(candidate)
        except OSError:
            pass
    return removed


def json_twin(path: Path) -> Path:
    """Where the JSON copy of the manifest ``path`` goes: ``.json`` in place of its suffix, or
    ``.json`` added when the manifest's own name already ends so (never the same file)."""
    return path.with_name(path.name + ".json") if path.suffix == ".json" else path.with_suffix(".json")


def manifest_meta(recipe: Recipe, recipe_path: Path, mast_url: str, run_id: str) -> dict[str, str]:
    """The provenance a manifest's ECSV header carries, so a manifest found on its own
    (in a CI artifact, beside restored files) says where it came from.

    Keys: ``recipe`` (name), ``recipe_path``, ``recipe_fingerprint``, ``run_id``, ``server``
    (the MAST URL asked), ``source`` (``retrieve.source``: mast, cloud or auto),
    ``download_url`` (MAST's download endpoint) and ``mastpipe`` (version); :func:`write_manifest`
    adds ``paths``.
    """
    from mastpipe import __version__
    from mastpipe.stages.retrieve.stage import download_url
    from mastpipe.state import fingerprint

    return {"recipe": recipe.name, "recipe_path": str(recipe_path.resolve()),
            "recipe_fingerprint": fingerprint(recipe.model_dump(mode="json")), "run_id": run_id,
            "server": mast_url, "source": recipe.retrieve.source,
            "download_url": download_url(mast_url, ""),
            "mastpipe": __version__}
