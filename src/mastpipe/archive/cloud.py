"""Where MAST's cloud copies lie (protocol map: ``mast-cloud.md``): which missions the public
bucket mirrors (:func:`cloud_mission`), how many URIs one ``path_lookup`` request may name
(:data:`PATH_LOOKUP_BATCH`; :meth:`Archive.path_lookup <mastpipe.archive.Archive.path_lookup>`
asks), how its answer reads (:func:`path_keys`), and astroquery's rules from a path to a bucket
key (:func:`bucket_key`)."""

from __future__ import annotations

from typing import Any

__all__ = ["BUCKET", "BUCKET_REGION", "CLOUD_PREFIXES", "PATH_LOOKUP_BATCH", "bucket_key", "cloud_mission",
           "path_keys"]

#: The public bucket holding MAST's cloud copies, and its region.
BUCKET, BUCKET_REGION = "stpubdata", "us-east-1"
#: dataURI prefixes (lower case) of the missions the bucket mirrors; others are never looked up.
CLOUD_PREFIXES = ("mast:hst/product", "mast:tess/product", "mast:kepler", "mast:galex", "mast:ps1",
                  "mast:jwst/product")
#: Most URIs per path_lookup request: MAST answers 414 beyond it.
PATH_LOOKUP_BATCH = 50


def cloud_mission(uri: str) -> bool:
    """Whether ``uri`` belongs to a mission the public bucket mirrors (case-insensitive)."""
    return uri.lower().startswith(CLOUD_PREFIXES)


def bucket_key(path: str) -> str:
    """The bucket key for a path from ``path_lookup``, by astroquery's rules (``mast_relative_path``).

    GALEX paths lose their leading ``/mast/`` *characters* (astroquery strips a character set,
    and keys must match what it asks S3 for), PS1 paths move under ``panstarrs/ps1/public/``,
    HLSP paths under ``mast/``; any other path loses its leading ``/``.
    """
    if "galex" in path:
        return path.lstrip("/mast/")  # noqa: B005 - a character-set strip, exactly as astroquery does
    if "/ps1/" in path:
        return path.replace("/ps1/", "panstarrs/ps1/public/")
    if "hlsp" in path:
        return path.replace("/hlsp_local/public/", "mast/")
    return path.lstrip("/")


def path_keys(answer: Any, batch: list[str]) -> dict[str, str | None]:
    """One ``path_lookup`` answer read: each of ``batch``'s URIs -> its bucket key, or None when
    MAST knows no path for it."""
    found: dict[str, str | None] = {}
    for uri in batch:
        entry = answer.get(uri) if isinstance(answer, dict) else None
        path = entry.get("path") if isinstance(entry, dict) else None
        found[uri] = bucket_key(path) if path else None
    return found
