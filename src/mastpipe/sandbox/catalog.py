"""The sandbox catalogue: observations and products, generated deterministically from a seed.

Observations are few (a few dozen plus the optional scale program) and held as dicts.  Products
are never all materialised: each observation has a *plan*, a list of product families, and a
family produces its rows by index on demand.  Families can be shared between observations (guide
star products of a visit, the exposures of a level-3 mosaic), which is how the same ``dataURI``
shows up under several ``parent_obsid`` values, as on MAST.

File sizes are derived from (seed, uri); bodies come from :class:`~.content.BodyMaker`.

The catalogue is assembled from mixins: :mod:`.rows` (state, row makers, product families),
:mod:`.programs` (the seed programs), :mod:`.lookup` (queries, sizes, bodies, names) and
:mod:`.mutations` (what tests change).
"""

from __future__ import annotations

from mastpipe.sandbox.mutations import Mutations
from mastpipe.sandbox.programs import Programs
from mastpipe.sandbox.rows import MRP, FileInfo

__all__ = ["Catalog", "FileInfo", "MRP"]


class Catalog(Mutations, Programs):
    """Deterministic MAST-like catalogue.

    Parameters
    ----------
    seed : int
        Seed for sizes, times, coordinates jitter and file contents.
    scale : tuple of (int, int), optional
        Add program ``9999`` (JWST) of N observations x M products each, generated lazily.
    """

    def __init__(self, seed: int = 0, scale: "tuple[int, int] | None" = None) -> None:
        super().__init__(seed)
        self._build_jwst_1073()
        self._build_exclusive()
        self._build_msa()
        self._build_hst()
        self._build_tess()
        if scale:
            self._build_scale(*scale)
