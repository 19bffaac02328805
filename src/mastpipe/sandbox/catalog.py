"""The sandbox catalogue: observations and products, generated deterministically from a seed.

Observations are few (a few dozen plus the optional scale program) and held as dicts.  Products
are never all materialised: each observation has a *plan*, a list of product families, and a
family produces its rows by index on demand.  Families can be shared between observations (guide
star products of a visit, the exposures of a level-3 mosaic), which is how the same ``dataURI``
shows up under several ``parent_obsid`` values, as on MAST.

File sizes are derived from (seed, uri); bodies come from :class:`~.content.BodyMaker`.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

from mastpipe.sandbox.content import FITS_BLOCK, BodyMaker

__all__ = ["Catalog", "FileInfo", "MRP"]

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


class _Family:
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


class _ListFamily(_Family):
    """A family backed by an explicit list (small, fixed sets of products)."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows
        super().__init__(len(rows), rows.__getitem__)

    def append(self, row: dict) -> None:
        self.rows.append(row)
        self.count = len(self.rows)


class Catalog:
    """Deterministic MAST-like catalogue.

    Parameters
    ----------
    seed : int
        Seed for sizes, times, coordinates jitter and file contents.
    scale : tuple of (int, int), optional
        Add program ``9999`` (JWST) of N observations x M products each, generated lazily.
    """

    def __init__(self, seed: int = 0, scale: "tuple[int, int] | None" = None) -> None:
        self.seed = int(seed)
        self.bodies = BodyMaker(self.seed)
        self._lock = threading.RLock()
        self._obs: dict[str, dict] = {}          # obsid -> observation row (insertion ordered)
        self._plans: dict[str, list[_Family]] = {}
        self._files: dict[str, dict] = {}        # uri -> product row, for list families
        self._lazy: list[_Family] = []           # pattern families, searched by regex
        self._override: dict[str, tuple[int, int]] = {}  # uri -> (size, version) after touch()
        self._listed: dict[str, int] = {}  # uri -> the version its product row (prvversion) shows
        self._withdrawn: dict[str, set[str]] = {}  # obsid -> dataURIs MAST no longer lists
        self._gone: set[str] = set()  # dataURIs withdrawn: no longer served
        self._next_obsid = 90_000_000
        self._build_jwst_1073()
        self._build_exclusive()
        self._build_msa()
        self._build_hst()
        self._build_tess()
        if scale:
            self._build_scale(*scale)

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

    def _add_obs(self, row: dict, plan: list[_Family]) -> dict:
        with self._lock:
            self._obs[row["obsid"]] = row
            self._plans[row["obsid"]] = plan
            for fam in plan:
                self._register(fam)
        return row

    def _register(self, fam: _Family) -> None:
        if isinstance(fam, _ListFamily):
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

    # ================================================================== JWST
    def _jwst_exposure_products(self, obs: dict) -> list[dict]:
        base = obs["obs_id"]
        return [
            self._product(obs, f"{base}_uncal.fits", "UNCAL", level=1, lo=20, hi=40,
                          description="Uncalibrated exposure (raw ramps)"),
            self._product(obs, f"{base}_rate.fits", "RATE", level=2, lo=10, hi=20,
                          description="Countrate image"),
            self._product(obs, f"{base}_rateints.fits", "RATEINTS", level=2, lo=10, hi=20,
                          description="Countrate per integration"),
            self._product(obs, f"{base}_cal.fits", "CAL", level=2, mrp=True, lo=12, hi=24,
                          description="Calibrated exposure"),
        ]

    def _guide_star_family(self, owner: dict, visit: str, doy: int) -> _ListFamily:
        rows = []
        stamp = f"2023{doy:03d}{(doy * 7) % 24:02d}0000"
        for gs in ("gs-id", "gs-acq1", "gs-acq2", "gs-track", "gs-fg"):
            for suffix, sub, level in (("uncal", "UNCAL", 1), ("cal", "CAL", 2)):
                rows.append(self._product(owner, f"{visit}_{gs}_{stamp}_{suffix}.fits", sub,
                                          ptype="AUXILIARY", level=level, lo=3, hi=8,
                                          description=f"Guide star {gs[3:]} {sub.lower()} data"))
        return _ListFamily(rows)

    def _build_jwst_1073(self) -> None:
        """Program 1073 NIRCam imaging: 3 visits, short+long channel, 2 exposures each."""
        common = dict(obs_collection="JWST", provenance_name="CALJWST", project="JWST",
                      proposal_id="1073", proposal_pi="Hodapp, Klaus W.", proposal_type="GTO",
                      target_name="NGC-104", target_classification="STAR;GLOBULAR CLUSTER",
                      obs_title="NIRCam Cross-Instrument Calibration", wavelength_region="INFRARED",
                      dataproduct_type="image", dataRights="PUBLIC")
        # (observation number, short-channel filter, long-channel filter)
        plan = [(1, "F090W", "F277W"), (2, "F150W", "F277W"), (3, "F200W", "F444W")]
        obsid = 87_600_000
        for o, short, long in plan:
            visit = f"jw01073{o:03d}001"
            ra = 6.0236 + 0.01 * o + 0.001 * self._rand("ra", visit)
            dec = -72.0812 + 0.005 * o
            t0 = 59_800.0 + 3 * o + self._rand("t", visit)
            chans = {"short": (short, "nrca1", 0.8, 2.3), "long": (long, "nrcalong", 2.4, 5.0)}
            exposures: dict[str, list[_ListFamily]] = {"short": [], "long": []}
            plans: dict[str, list[list[_Family]]] = {"short": [], "long": []}
            gs_family = None
            for e in (1, 2):
                for chan, (filt, det, em_min, em_max) in chans.items():
                    obsid += 1
                    ep = f"{visit}_02101_{e:05d}_{det}"
                    row = self._obs_row(obsid, **common, instrument_name="NIRCAM/IMAGE",
                                        filters=f"{filt};CLEAR" if chan == "short" else f"CLEAR;{filt}",
                                        obs_id=ep, calib_level=2, s_ra=ra, s_dec=dec,
                                        t_min=t0 + 0.01 * e, t_max=t0 + 0.01 * e + 0.005,
                                        t_exptime=429.5, em_min=em_min * 1000, em_max=em_max * 1000,
                                        t_obs_release=t0 + 0.5, sequence_number=None)
                    if gs_family is None:  # guide star files are owned by the visit's first exposure
                        gs_family = self._guide_star_family(row, visit, 10 + o)
                    own = _ListFamily(self._jwst_exposure_products(row))
                    exposures[chan].append(own)
                    plans[chan].append([own, gs_family])
                    self._add_obs(row, plans[chan][-1])
            for k, (chan, (filt, _det, em_min, em_max)) in enumerate(chans.items(), start=1):
                obsid += 1
                l3 = f"jw01073-o{o:03d}_t001_nircam_clear-{filt.lower()}"
                row = self._obs_row(obsid, **common, instrument_name="NIRCAM/IMAGE",
                                    filters=f"{filt};CLEAR" if chan == "short" else f"CLEAR;{filt}",
                                    obs_id=l3, calib_level=3, s_ra=ra, s_dec=dec, t_min=t0,
                                    t_max=t0 + 0.03, t_exptime=859.0, em_min=em_min * 1000,
                                    em_max=em_max * 1000, t_obs_release=t0 + 0.5)
                own = _ListFamily([
                    self._product(row, f"{l3}_i2d.fits", "I2D", level=3, mrp=True, composite=True,
                                  lo=100, hi=300, description="Resampled mosaic"),
                    self._product(row, f"{l3}_segm.fits", "SEGM", level=3, composite=True,
                                  lo=30, hi=60, description="Segmentation map"),
                    self._product(row, f"{l3}_cat.ecsv", "CAT", level=3, mrp=True, composite=True,
                                  lo=20, hi=80, description="Source catalog"),
                    self._product(row, f"jw01073-o{o:03d}_20230101t000000_image3_{k:05d}_asn.json",
                                  "ASN", ptype="INFO", level=3, lo=2, hi=4, composite=True,
                                  description="Level-3 association"),
                ])
                # A level-3 observation lists its members' products too, and each member lists
                # the level-3 products it went into: the same dataURI under several parent_obsids.
                self._add_obs(row, [*exposures[chan], gs_family, own])
                for plan in plans[chan]:
                    plan.append(own)

    def _build_exclusive(self) -> None:
        """Program 4242: exclusive-access NIRCam observations (their products too)."""
        for i in (1, 2):
            obsid = 87_700_000 + i
            ep = f"jw04242{i:03d}001_02101_00001_nrcb1"
            row = self._obs_row(obsid, obs_collection="JWST", project="JWST", proposal_id="4242",
                                proposal_pi="Secret, A.", proposal_type="GO", instrument_name="NIRCAM/IMAGE",
                                filters="F200W;CLEAR", target_name="HIDDEN-FIELD", obs_id=ep,
                                calib_level=2, s_ra=150.1 + 0.01 * i, s_dec=2.2, t_min=61_300.0 + i,
                                t_max=61_300.1 + i, t_exptime=300.0, em_min=1755.0, em_max=2226.0,
                                t_obs_release=62_000.0, dataRights="EXCLUSIVE_ACCESS",
                                obs_title="Exclusive access test field")
            self._add_obs(row, [_ListFamily(self._jwst_exposure_products(row))])

    def _build_msa(self) -> None:
        """One NIRSpec MSA observation with 10,400 products (2 per source), generated lazily."""
        row = self._obs_row(87_800_001, obs_collection="JWST", project="JWST", proposal_id="2736",
                            proposal_pi="Pontoppidan, Klaus", proposal_type="ERO",
                            instrument_name="NIRSPEC/MSA", filters="F170LP;G235M",
                            target_name="SMACS0723", obs_id="jw02736-o007_t001_nirspec_f170lp-g235m",
                            dataproduct_type="spectrum", calib_level=3, s_ra=110.8375, s_dec=-73.4391,
                            t_min=59_752.0, t_max=59_752.4, t_exptime=8_841.0, em_min=1660.0,
                            em_max=3070.0, t_obs_release=59_770.0, obs_title="Webb ERO: SMACS 0723")
        n_sources = 5_200
        kinds = (("s2d", "S2D", False), ("x1d", "X1D", True))
        prefix = "jw02736-o007_s"
        suffix = "_nirspec_f170lp-g235m_"

        def make(i: int) -> dict:
            src, (kind, sub, mrp) = divmod(i, 2)[0] + 1, kinds[i % 2]
            return self._product(row, f"{prefix}{src:05d}{suffix}{kind}.fits", sub, level=3,
                                 mrp=mrp, composite=True, lo=2, hi=5,
                                 description=f"MSA source {src} {kind}")

        pattern = re.compile(re.escape(f"mast:JWST/product/{prefix}") + r"(\d{5})"
                             + re.escape(suffix) + r"(s2d|x1d)\.fits")
        fam = _Family(2 * n_sources, make, pattern,
                      lambda m: (int(m.group(1)) - 1) * 2 + (m.group(2) == "x1d"))
        self._add_obs(row, [fam])

    # ================================================================== HST and TESS
    def _build_hst(self) -> None:
        """WFC3/ACS/WFPC2 observations: four around the Crab (83.63308, 22.0145), two near M31."""
        crab, m31 = (83.63308, 22.0145), (10.6847, 41.2690)
        plan = [
            ("IB5E01010", "WFC3/UVIS", "F502N", crab, "12345"),
            ("IB5E02010", "WFC3/IR", "F160W", crab, "12345"),
            ("JB1F01010", "ACS/WFC", "F550M", crab, "13926"),
            ("JB1F02010", "ACS/WFC", "F658N", crab, "13926"),
            ("IC8Q03010", "WFC3/UVIS", "F275W", m31, "14072"),
            ("U2AB0101T", "WFPC2", "F555W", m31, "5371"),
        ]
        for k, (obs_id, inst, filt, (ra0, dec0), prop) in enumerate(plan):
            ra = ra0 + 0.02 * (self._rand("hra", obs_id) - 0.5)
            dec = dec0 + 0.02 * (self._rand("hdec", obs_id) - 0.5)
            row = self._obs_row(2_003_600_000 + k, obs_collection="HST", provenance_name="CALWF3"
                                if inst.startswith("WFC3") else "CALACS" if inst.startswith("ACS") else "CALWP2",
                                project="HST", proposal_id=prop, proposal_pi="Hester, J.",
                                proposal_type="GO", instrument_name=inst, filters=filt,
                                wavelength_region="OPTICAL" if "IR" not in inst else "INFRARED",
                                target_name="CRAB" if (ra0, dec0) == crab else "M31",
                                target_classification="SUPERNOVA REMNANT" if (ra0, dec0) == crab else "GALAXY",
                                obs_id=obs_id, calib_level=3, s_ra=ra, s_dec=dec,
                                t_min=57_000.0 + k, t_max=57_000.05 + k, t_exptime=1_200.0,
                                em_min=400.0, em_max=700.0, t_obs_release=57_365.0 + k,
                                obs_title="Crab nebula monitoring" if (ra0, dec0) == crab else "PHAT",
                                jpegURL=f"https://archive.stsci.edu/hst/previews/{obs_id[:4]}/{obs_id}.jpg")
            low = obs_id.lower()
            rows = []
            uvis = inst in ("WFC3/UVIS", "ACS/WFC")
            if inst == "WFPC2":
                rows.append(self._product(row, f"{low}_raw.fits", "RAW", level=1, lo=60, hi=90))
                rows.append(self._product(row, f"{low}_flt.fits", "FLT", level=2, mrp=True, lo=60, hi=90))
                rows.append(self._product(row, f"{low}_drz.fits", "DRZ", level=3, mrp=True, lo=90, hi=150))
            else:
                for m in ("q", "r"):
                    member = f"{low[:6]}a{m}q"
                    rows.append(self._product(row, f"{member}_raw.fits", "RAW", level=1, lo=40, hi=80))
                    rows.append(self._product(row, f"{member}_flt.fits", "FLT", level=2, mrp=True, lo=40, hi=80))
                    if uvis:
                        rows.append(self._product(row, f"{member}_flc.fits", "FLC", level=2, lo=40, hi=80))
                rows.append(self._product(row, f"{low}_asn.fits", "ASN", ptype="AUXILIARY", level=1, lo=2, hi=3))
                rows.append(self._product(row, f"{low}_drz.fits", "DRZ", level=3, mrp=True,
                                          composite=True, lo=90, hi=150))
                if uvis:
                    rows.append(self._product(row, f"{low}_drc.fits", "DRC", level=3, mrp=True,
                                              composite=True, lo=90, hi=150))
            self._add_obs(row, [_ListFamily(rows)])

    def _build_tess(self) -> None:
        """Eight TESS SPOC 2-minute light curves from sector 14."""
        for k in range(8):
            tic = 25_155_310 + 1_000 * k
            obs_id = f"tess2019198215352-s0014-{tic:016d}-0150-s"
            row = self._obs_row(60_000_000 + k, obs_collection="TESS", provenance_name="SPOC",
                                project="TESS", proposal_id="G022071", proposal_pi="Ricker, George",
                                proposal_type="GI", instrument_name="Photometer", filters="TESS",
                                wavelength_region="OPTICAL", target_name=str(tic), obs_id=obs_id,
                                dataproduct_type="timeseries", calib_level=3, sequence_number=14,
                                s_ra=280.0 + k, s_dec=60.0 + 0.5 * k, t_min=58_682.86, t_max=58_709.86,
                                t_exptime=120.0, em_min=600.0, em_max=1_000.0, t_obs_release=58_740.0,
                                obs_title=None)
            rows = [
                self._product(row, f"{obs_id}_lc.fits", "LC", level=3, mrp=True, lo=8, hi=16,
                              description="Light curves"),
                self._product(row, f"{obs_id}_tp.fits", "TP", level=3, lo=20, hi=40,
                              description="Target pixel files"),
            ]
            self._add_obs(row, [_ListFamily(rows)])

    # ================================================================== scale
    def _build_scale(self, n_obs: int, n_products: int) -> None:
        """Program 9999: N observations x M products, rows made on demand."""
        prefix = "mast:JWST/product/jw09999"
        pattern = re.compile(re.escape(prefix) + r"(\d{3,})001_02101_(\d{5,})_nrca1_cal\.fits")
        for o in range(1, n_obs + 1):
            row = self._obs_row(88_000_000 + o, obs_collection="JWST", project="JWST",
                                proposal_id="9999", proposal_pi="Scale, Test", proposal_type="GO",
                                instrument_name="NIRCAM/IMAGE", filters="F150W;CLEAR",
                                target_name="SCALE-FIELD", obs_id=f"jw09999{o:03d}001_02101_scale",
                                calib_level=2, s_ra=200.0 + o * 1e-3, s_dec=-30.0, t_min=60_100.0 + o,
                                t_max=60_100.1 + o, t_exptime=100.0, em_min=1331.0, em_max=1668.0,
                                t_obs_release=60_200.0)

            def make(i: int, row=row, o=o) -> dict:
                return self._product(row, f"jw09999{o:03d}001_02101_{i + 1:05d}_nrca1_cal.fits",
                                     "CAL", level=2, mrp=True, lo=2, hi=6)

            def index_of(m: re.Match, o=o) -> int:
                return int(m.group(2)) - 1 if int(m.group(1)) == o else -1

            self._add_obs(row, [_Family(n_products, make, pattern, index_of)])

    # ================================================================== public API
    def observations(self) -> list[dict]:
        """All observation rows (copies), MAST field names."""
        with self._lock:
            return [dict(r) for r in self._obs.values()]

    def observation(self, obsid: str) -> "dict | None":
        """One observation row (a copy) or None."""
        row = self._obs.get(str(obsid).strip())
        return dict(row) if row else None

    def iter_obs(self) -> list[dict]:
        """The live observation rows (no copies; callers must not modify them)."""
        with self._lock:
            return list(self._obs.values())

    def product_count(self, obsid: str) -> int:
        """Number of product rows of ``obsid`` (0 if unknown) without generating them."""
        obsid = str(obsid).strip()
        return sum(f.count for f in self._plans.get(obsid, ())) - len(self._withdrawn.get(obsid, ()))

    def iter_products(self, obsid: str, start: int = 0, stop: int | None = None) -> Iterator[dict]:
        """Yield product rows ``start:stop`` of ``obsid``, generated on demand."""
        obsid = str(obsid).strip()
        withdrawn = self._withdrawn.get(obsid)
        if withdrawn:  # the rows after a withdrawn one move up, as in a list MAST made anew
            visible = [row for row in self._iter_raw(obsid) if row["dataURI"] not in withdrawn]
            yield from visible[start:stop]
            return
        yield from self._iter_raw(obsid, start, stop)

    def _iter_raw(self, obsid: str, start: int = 0, stop: int | None = None) -> Iterator[dict]:
        obsid = str(obsid).strip()
        plan = self._plans.get(obsid, ())
        stop = sum(f.count for f in plan) if stop is None else stop
        pos = 0
        for fam in list(plan):
            lo, hi = max(start - pos, 0), min(stop - pos, fam.count)
            for i in range(lo, hi):
                row = dict(fam.row(i))
                over = self._override.get(row["dataURI"])
                if over:
                    row["size"] = over[0]
                if self._listed.get(row["dataURI"]):
                    row["prvversion"] = f"{row.get('prvversion') or '1.0'}+r{self._listed[row['dataURI']]}"
                row["parent_obsid"] = obsid
                yield row
            pos += fam.count
            if pos >= stop:
                break

    def products(self, obsid: str) -> list[dict]:
        """All product rows of ``obsid`` (``parent_obsid`` set to it)."""
        return list(self.iter_products(obsid))

    def _row_for(self, uri: str) -> "dict | None":
        row = self._files.get(uri)
        if row is None:
            for fam in self._lazy:
                row = fam.lookup(uri)
                if row is not None:
                    break
        return row

    def file_info(self, uri: str) -> "FileInfo | None":
        """Size, version, rights and location of ``uri``, or None if the catalogue lacks it."""
        if uri in self._gone:
            return None
        row = self._row_for(uri)
        if row is None:
            return None
        size, version = self._override.get(uri, (row["size"], 0))
        return FileInfo(uri, size, version, row["dataRights"] or "PUBLIC", row["obs_collection"],
                        row["obs_id"], row["productFilename"])

    def _info(self, uri: str) -> FileInfo:
        info = self.file_info(uri)
        if info is None:
            raise KeyError(f"no product with dataURI {uri!r} in the sandbox catalogue")
        return info

    def file_size(self, uri: str) -> int:
        """Size in bytes of ``uri``'s body (KeyError if unknown)."""
        return self._info(uri).size

    def body(self, uri: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of ``uri``'s body (end exclusive, None = to the end)."""
        info = self._info(uri)
        return self.bodies.body(uri, info.size, info.version, start, end)

    def iter_body(self, uri: str, start: int = 0, end: int | None = None,
                  chunk: int = 1 << 20) -> Iterator[memoryview | bytes]:
        """Stream bytes ``[start, end)`` of ``uri`` in pieces of at most ``chunk`` bytes."""
        info = self._info(uri)
        return self.bodies.iter_body(uri, info.size, info.version, start, end, chunk)

    def sha256(self, uri: str) -> str:
        """Hex sha256 of ``uri``'s whole body."""
        info = self._info(uri)
        return self.bodies.sha256(uri, info.size, info.version)

    def add_observation(self, n_products: int = 2, **overrides) -> dict:
        """Add a new observation (JWST program 1073 by default) with ``n_products`` products.

        Parameters
        ----------
        n_products : int
            How many ``_cal.fits``-style products it gets (an ``_uncal`` first, then ``_cal``...).
        **overrides
            Observation fields to set (``obs_collection``, ``proposal_id``, ``filters``,
            ``dataRights`` ...).

        Returns
        -------
        dict
            The new observation row.
        """
        obsid = overrides.pop("obsid", None) or self._new_obsid()
        fields = dict(obs_collection="JWST", project="JWST", proposal_id="1073",
                      proposal_pi="Hodapp, Klaus W.", proposal_type="GTO",
                      instrument_name="NIRCAM/IMAGE", filters="CLEAR;F277W", target_name="NGC-104",
                      obs_id=f"jw01073{int(obsid) % 1000:03d}001_02101_00001_nrcblong",
                      calib_level=2, s_ra=6.03, s_dec=-72.08, t_min=61_000.0, t_max=61_000.1,
                      t_exptime=300.0, em_min=2400.0, em_max=5000.0, t_obs_release=61_001.0)
        fields.update(overrides)
        row = self._obs_row(obsid, **fields)
        subs = ["UNCAL"] + ["CAL"] * max(n_products - 1, 0)
        rows = []
        for j, sub in enumerate(subs[:n_products]):
            name = f"{row['obs_id'].lower()}_{sub.lower()}{'' if j < 2 else j}.fits"
            rows.append(self._product(row, name, sub, level=1 if sub == "UNCAL" else 2,
                                      mrp=sub == "CAL", lo=4, hi=10))
        return dict(self._add_obs(row, [_ListFamily(rows)]))

    def add_product(self, obsid: str, **overrides) -> dict:
        """Add one product to observation ``obsid``.

        Parameters
        ----------
        obsid : str
            Owning (and parent) observation.
        **overrides
            Product fields (``productFilename``, ``dataURI``, ``size``, ``dataRights``,
            ``productSubGroupDescription`` ...). ``dataURI`` defaults to
            ``mast:<collection>/product/<productFilename>``.

        Returns
        -------
        dict
            The new product row (with ``parent_obsid``).
        """
        obsid = str(obsid)
        with self._lock:
            owner = self._obs.get(obsid)
            if owner is None:
                raise KeyError(f"no observation with obsid {obsid!r}")
            plan = self._plans[obsid]
            extra = plan[-1] if plan and getattr(plan[-1], "_extra", False) else None
            if extra is None:
                extra = _ListFamily([])
                extra._extra = True  # marks the family add_product appends to
                plan.append(extra)
            n = self.product_count(obsid) + 1
            filename = overrides.get("productFilename") or f"{owner['obs_id'].lower()}_extra{n:03d}_cal.fits"
            row = self._product(owner, filename, overrides.get("productSubGroupDescription", "CAL"),
                                size=overrides.get("size"))
            row.update(overrides)
            if "dataURI" not in overrides:
                row["dataURI"] = f"mast:{row['obs_collection']}/product/{filename}"
            extra.append(row)
            self._files[row["dataURI"]] = row
            self._override.pop(row["dataURI"], None)
        return dict(row, parent_obsid=obsid)

    # ================================================================== names
    #: Other names of the catalogue's targets (canonical name, as MAST's look-up spells it).
    _ALIASES = {"m1": "CRAB", "crab nebula": "CRAB", "ngc 1952": "CRAB", "47 tuc": "NGC-104", "ngc 104": "NGC-104",
                "47 tucanae": "NGC-104", "andromeda": "M31", "messier 31": "M31", "ngc 224": "M31",
                "smacs 0723": "SMACS0723", "smacs j0723.3-7327": "SMACS0723"}

    def resolve(self, name: str) -> "dict[str, object] | None":
        """What ``Mast.Name.Lookup`` answers for ``name``: the catalogue's targets by their
        ``target_name`` (spaces, hyphens and case ignored), a few common aliases (``M1``,
        ``47 Tuc`` ...) and ``TIC <id>`` for TESS targets; None for any other name."""
        def key(text: str) -> str:
            return re.sub(r"[\s_-]+", "", text).casefold()

        wanted = str(name).strip()
        canonical = self._ALIASES.get(re.sub(r"\s+", " ", wanted).casefold())
        if canonical is None and wanted.casefold().startswith("tic "):
            canonical = wanted[4:].strip()
        target = key(canonical or wanted)
        with self._lock:
            rows = [r for r in self._obs.values() if key(str(r.get("target_name") or "")) == target]
        if not rows:
            return None
        ra = sum(r["s_ra"] for r in rows) / len(rows)
        dec = sum(r["s_dec"] for r in rows) / len(rows)
        return {"searchString": wanted.casefold(), "canonicalName": canonical or rows[0]["target_name"],
                "resolver": "SANDBOX", "ra": ra, "decl": dec, "radius": 0.0, "objectType": "",
                "cached": False, "resolverTime": 1}

    def touch(self, uri: str) -> FileInfo:
        """MAST reprocesses ``uri``: new content, size + 2880, new ETag and Last-Modified, and a
        new ``prvversion`` in its product rows."""
        return self.reprocess(uri, same_size=False)

    def reprocess(self, uri: str, *, same_size: bool = True, silent: bool = False) -> FileInfo:
        """MAST reprocesses ``uri`` under the same name: new content, new ETag and Last-Modified.

        Parameters
        ----------
        same_size : bool
            Keep the size (the case a size check cannot see); otherwise it grows by 2880 bytes.
        silent : bool
            Leave the product rows as they were (same ``prvversion``): only the server's
            validators tell, which is what ``mastpipe run --revalidate`` asks.
        """
        with self._lock:
            info = self._info(uri)
            self._override[uri] = (info.size if same_size else info.size + FITS_BLOCK, info.version + 1)
            if not silent:
                self._listed[uri] = info.version + 1
            return self._info(uri)

    def withdraw_product(self, uri: str) -> None:
        """MAST stops listing ``uri`` (in every observation) and serves it no more (404)."""
        with self._lock:
            for obsid in self._plans:
                if any(row["dataURI"] == uri for row in self._iter_raw(obsid)):
                    self._withdrawn.setdefault(obsid, set()).add(uri)
            self._gone.add(uri)

    def withdraw_observation(self, obsid: str) -> None:
        """MAST no longer finds observation ``obsid`` (its products stay downloadable)."""
        with self._lock:
            self._obs.pop(str(obsid), None)
