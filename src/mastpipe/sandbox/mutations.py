"""How tests change the sandbox catalogue, as MAST's holdings change: new observations and
products, files reprocessed under the same name, products and observations withdrawn."""

from __future__ import annotations

from mastpipe.sandbox.content import FITS_BLOCK
from mastpipe.sandbox.lookup import Lookup
from mastpipe.sandbox.rows import FileInfo, ListFamily

__all__ = ["Mutations"]


class Mutations(Lookup):
    """The catalogue's write side (a mixin of :class:`~.catalog.Catalog`)."""

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
        return dict(self._add_obs(row, [ListFamily(rows)]))

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
            self.version += 1
            owner = self._obs.get(obsid)
            if owner is None:
                raise KeyError(f"no observation with obsid {obsid!r}")
            plan = self._plans[obsid]
            extra = plan[-1] if plan and getattr(plan[-1], "_extra", False) else None
            if extra is None:
                extra = ListFamily([])
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
            self.version += 1
            info = self._info(uri)
            self._override[uri] = (info.size if same_size else info.size + FITS_BLOCK, info.version + 1)
            if not silent:
                self._listed[uri] = info.version + 1
            return self._info(uri)

    def withdraw_product(self, uri: str) -> None:
        """MAST stops listing ``uri`` (in every observation) and serves it no more (404)."""
        with self._lock:
            self.version += 1
            for obsid in self._plans:
                if any(row["dataURI"] == uri for row in self._iter_raw(obsid)):
                    self._withdrawn.setdefault(obsid, set()).add(uri)
            self._gone.add(uri)

    def withdraw_observation(self, obsid: str) -> None:
        """MAST no longer finds observation ``obsid`` (its products stay downloadable)."""
        with self._lock:
            self.version += 1
            self._obs.pop(str(obsid), None)
