"""The programs the sandbox catalogue starts with: JWST 1073 (NIRCam imaging, shared guide star
and level-3 products), 4242 (exclusive access), 2736 (a NIRSpec MSA observation of 10,400 products),
HST around the Crab and M31, TESS light curves, and the optional scale program 9999."""

from __future__ import annotations

import re

from mastpipe.sandbox.rows import Family, ListFamily, Store

__all__ = ["Programs"]


class Programs(Store):
    """Builds the seed programs into the store (a mixin of :class:`~.catalog.Catalog`)."""

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

    def _guide_star_family(self, owner: dict, visit: str, doy: int) -> ListFamily:
        rows = []
        stamp = f"2023{doy:03d}{(doy * 7) % 24:02d}0000"
        for gs in ("gs-id", "gs-acq1", "gs-acq2", "gs-track", "gs-fg"):
            for suffix, sub, level in (("uncal", "UNCAL", 1), ("cal", "CAL", 2)):
                rows.append(self._product(owner, f"{visit}_{gs}_{stamp}_{suffix}.fits", sub,
                                          ptype="AUXILIARY", level=level, lo=3, hi=8,
                                          description=f"Guide star {gs[3:]} {sub.lower()} data"))
        return ListFamily(rows)

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
            exposures: dict[str, list[ListFamily]] = {"short": [], "long": []}
            plans: dict[str, list[list[Family]]] = {"short": [], "long": []}
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
                    own = ListFamily(self._jwst_exposure_products(row))
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
                own = ListFamily([
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
            self._add_obs(row, [ListFamily(self._jwst_exposure_products(row))])

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
        fam = Family(2 * n_sources, make, pattern,
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
            self._add_obs(row, [ListFamily(rows)])

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
            self._add_obs(row, [ListFamily(rows)])

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

            self._add_obs(row, [Family(n_products, make, pattern, index_of)])
