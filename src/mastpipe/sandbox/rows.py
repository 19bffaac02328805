"""How the sandbox catalogue keeps its rows, and makes them.

An observation is a dict; its products are a *plan*, a list of :class:`Family` objects that make
product rows by index on demand (:class:`ListFamily` for small fixed sets). :class:`Store` holds
the catalogue's state and the row makers the programs (:mod:`.programs`) and the mutations
(:mod:`.mutations`) build with; :class:`~.catalog.Catalog` is assembled from them.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from typing import Callable

from mastpipe.sandbox.content import FITS_BLOCK, BodyMaker

__all__ = ["FileInfo", "Family", "ListFamily", "MRP", "Store"]

MRP = "Minimum Recommended Products"
_EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z: base of Last-Modified times


@dataclass(frozen=True)
class FileInfo:
    """What the download endpoint needs to know about one URI."""

    uri: str
    size: int
    version: int
    rights: str
    obs_collection: str
    obs_id: str
    filename: str

    @property
    def etag(self) -> str:
        digest = hashlib.blake2b(f"{self.uri}\0{self.version}\0{self.size}".encode(), digest_size=8)
        return f'"{digest.hexdigest()}"'

    @property
    def last_modified(self) -> float:
        # Deterministic, and later for every touch() so clients can see the change.
        jitter = int.from_bytes(hashlib.blake2b(self.uri.encode(), digest_size=4).digest(), "big")
        return _EPOCH + jitter % 86_400 + self.version * 3_600


class Family:
    """A run of product rows produced by index (rows lack ``parent_obsid``)."""

    def __init__(self, count: int, make: Callable[[int], dict],
                 pattern: "re.Pattern[str] | None" = None,
                 index_of: "Callable[[re.Match], int] | None" = None) -> None:
        self.count = count
        self._make = make
        self._pattern = pattern
        self._index_of = index_of

    def row(self, i: int) -> dict:
        return self._make(i)

    def lookup(self, uri: str) -> "dict | None":
        """The row whose dataURI is ``uri`` (only for pattern families)."""
        if self._pattern is None:
            return None
        m = self._pattern.fullmatch(uri)
        if not m:
            return None
        i = self._index_of(m)
        return self._make(i) if 0 <= i < self.count else None


class ListFamily(Family):
    """A family backed by an explicit list (small, fixed sets of products)."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows
        super().__init__(len(rows), rows.__getitem__)

    def append(self, row: dict) -> None:
        self.rows.append(row)
        self.count = len(self.rows)


class Store:
    """The catalogue's state (observations, plans, changes made since) and its row makers."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.bodies = BodyMaker(self.seed)
        self._lock = threading.RLock()
        self._obs: dict[str, dict] = {}          # obsid -> observation row (insertion ordered)
        self._plans: dict[str, list[Family]] = {}
        self._files: dict[str, dict] = {}        # uri -> product row, for list families
        self._lazy: list[Family] = []            # pattern families, searched by regex
        self._override: dict[str, tuple[int, int]] = {}  # uri -> (size, version) after touch()
        self._listed: dict[str, int] = {}  # uri -> the version its product row (prvversion) shows
        self._withdrawn: dict[str, set[str]] = {}  # obsid -> dataURIs MAST no longer lists
        self._gone: set[str] = set()  # dataURIs withdrawn: no longer served
        self._next_obsid = 90_000_000
        #: Bumped by every change to what the catalogue lists: answers rendered before are stale.
        self.version = 0
        self._rendered: dict[tuple[str, tuple[str, ...]], str] = {}  # of catalogue _rendered_version
        self._rendered_bytes = self._rendered_version = 0

    # ================================================================== helpers
    def _rand(self, *parts) -> float:
        text = "\0".join(str(p) for p in (self.seed, *parts)).encode()
        return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") / 2.0**64

    def _size(self, uri: str, lo: int, hi: int) -> int:
        """A deterministic size: ``lo..hi`` FITS blocks for .fits, else ``lo..hi`` KiB-ish bytes."""
        n = lo + int(self._rand("size", uri) * (hi - lo + 1))
        if uri.lower().endswith(".fits"):
            return n * FITS_BLOCK
        return n * 1000 + int(self._rand("tail", uri) * 997)

    def _obs_row(self, obsid: int | str, **fields) -> dict:
        obsid = str(obsid)
        row = {
            "intentType": "science", "obs_collection": "JWST", "provenance_name": "CALJWST",
            "instrument_name": None, "project": None, "filters": None, "wavelength_region": "INFRARED",
            "target_name": None, "target_classification": None, "obs_id": None,
            "s_ra": 0.0, "s_dec": 0.0, "dataproduct_type": "image", "proposal_pi": None,
            "calib_level": 3, "t_min": None, "t_max": None, "t_exptime": None,
            "em_min": None, "em_max": None, "obs_title": None, "t_obs_release": None,
            "proposal_id": None, "proposal_type": None, "sequence_number": None,
            "s_region": None, "jpegURL": None, "dataURL": None, "dataRights": "PUBLIC",
            "mtFlag": False, "srcDen": None, "obsid": obsid, "objID": str(int(obsid) + 1_000_000_000),
            "objID1": None,
        }
        row.update(fields)
        if row["objID1"] is None:
            row["objID1"] = row["objID"]
        if row["s_region"] is None:
            row["s_region"] = f"CIRCLE ICRS {row['s_ra']:.8f} {row['s_dec']:.8f} 0.03"
        return row

    def _add_obs(self, row: dict, plan: list[Family]) -> dict:
        with self._lock:
            self.version += 1
            self._obs[row["obsid"]] = row
            self._plans[row["obsid"]] = plan
            for fam in plan:
                self._register(fam)
        return row

    def _register(self, fam: Family) -> None:
        if isinstance(fam, ListFamily):
            for r in fam.rows:
                self._files.setdefault(r["dataURI"], r)
        elif fam not in self._lazy:
            self._lazy.append(fam)

    def _product(self, owner: dict, filename: str, subgroup: str, *, ptype: str = "SCIENCE",
                 level: int = 2, mrp: bool = False, description: str = "", size: int | None = None,
                 composite: bool = False, lo: int = 4, hi: int = 12) -> dict:
        """One product row (without parent_obsid) owned by observation ``owner``."""
        coll = owner["obs_collection"]
        uri = f"mast:{coll}/product/{filename}"
        jwst = coll == "JWST"
        return {
            "obsID": owner["obsid"], "obs_collection": coll,
            "dataproduct_type": owner["dataproduct_type"], "obs_id": owner["obs_id"],
            "description": description or f"{subgroup} file", "type": "C" if composite else "S",
            "dataURI": uri, "productType": ptype,
            "productGroupDescription": MRP if mrp else None,
            "productSubGroupDescription": subgroup, "productDocumentationURL": None,
            "project": "CALJWST" if jwst else owner.get("project") or coll,
            "prvversion": "1.12.5" if jwst else None, "productFilename": filename,
            "size": size if size is not None else self._size(uri, lo, hi),
            "dataRights": owner["dataRights"], "calib_level": level,
            "proposal_id": owner["proposal_id"], "_selected_": None,
        }

    def _new_obsid(self) -> str:
        with self._lock:
            self._next_obsid += 1
            return str(self._next_obsid)
