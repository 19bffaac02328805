"""What MAST's public S3 bucket ``stpubdata`` holds, and under which key (``mast-cloud.md``).

:func:`mast_path` gives the path MAST's ``path_lookup`` answers for a product (the HTTP server
serves it), and :func:`in_bucket` says whether the bucket holds a copy: public products of HST,
JWST and TESS, except a deterministic ~15 % that are "not in the cloud" (as on AWS, where not every
product is mirrored). Exclusive-access products never are.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from mastpipe.sandbox.catalog import FileInfo

__all__ = ["BUCKET", "MISSING_FRACTION", "in_bucket", "mast_path", "uri_for_key"]

BUCKET = "stpubdata"
#: Share of public products of a cloud mission that the bucket lacks (decided per URI).
MISSING_FRACTION = 0.15
_CLOUD = ("mast:hst/product", "mast:tess/product", "mast:kepler", "mast:galex", "mast:ps1",
          "mast:jwst/product")


def mast_path(info: FileInfo) -> str:
    """The path MAST's ``path_lookup`` gives for a product (``/jwst/public/...``)."""
    name = info.filename
    coll = info.obs_collection.lower()
    if coll == "jwst":
        return f"/jwst/public/{name[:7]}/{info.obs_id}/{name}"
    if coll == "hst":
        return f"/hst/public/{name[:4]}/{name[:9]}/{name}"
    return f"/{coll}/public/{info.obs_id}/{name}"


def uri_for_key(key: str) -> str:
    """The ``dataURI`` a bucket key of :func:`mast_path`'s shape belongs to (checked by callers)."""
    parts = key.split("/")
    return f"mast:{parts[0].upper()}/product/{parts[-1]}"


def in_bucket(info: FileInfo, seed: int = 0) -> bool:
    """Whether the bucket holds a copy of this product (public, cloud mission, not left out)."""
    if info.rights != "PUBLIC" or not info.uri.lower().startswith(_CLOUD):
        return False
    text = f"{seed}\0s3\0{info.uri}".encode()
    draw = int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") / 2.0**64
    return draw >= MISSING_FRACTION
