"""The MAST astroquery tutorial's code, verbatim: the workflow mastpipe automates.

Tests and benchmarks compare mastpipe with it, and show that unmodified astroquery runs it
against the sandbox; keeping the one copy here means they all compare with the same code. Source:
the MAST tutorial "Using the astroquery.mast API" (``seed-mast-astroquery-tutorial.txt``).

One line differs from the tutorial: its guard ``if (matched_obs > 0):`` raises ``TypeError`` with
astropy >= 6 before any request is sent, so :data:`QUERY_AND_PRODUCTS` reads
``if (len(matched_obs) > 0):``, the evident intent.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PRODUCT_FILTER", "QUERY_AND_PRODUCTS"]

#: The tutorial's query and product-list code (imports, query_criteria, get_product_list per
#: observation, unique(vstack(...))). Defines ``matched_obs``, ``t`` and ``files``.
QUERY_AND_PRODUCTS = r'''
import json
import numpy as np
from astroquery.mast import Observations
from astropy.table import unique, vstack, Table

matched_obs = Observations.query_criteria(
        obs_collection = 'JWST'
        , proposal_id = '1073'
        , instrument_name = 'Nircam'
        , filters = 'F277W'
        )

if (len(matched_obs) > 0):
    t = [Observations.get_product_list(obs) for obs in matched_obs]
    files = unique(vstack(t), keys='productFilename')
'''

#: The tutorial's ``product_filter``, as text (to run in a subprocess after
#: :data:`QUERY_AND_PRODUCTS`); :func:`product_filter` is this very text, executed.
PRODUCT_FILTER = r'''
def product_filter(table, prodList, gs_omit=True):
    mask = np.full(len(table), False)
    gs_text = '_gs-'
    for r in table:
        mk = False
        fileName = r['productFilename']
        for p in prodList:
            if p in fileName:
                mk = mk | True
                if gs_text in fileName:
                    mk = not gs_omit
    
        mask[r.index] = mk
    return mask
'''

_namespace: dict[str, object] = {"np": np}
exec(PRODUCT_FILTER, _namespace)  # noqa: S102 - our own constant: one source for text and function
product_filter = _namespace["product_filter"]
product_filter.__doc__ = "The tutorial's per-row filter, verbatim (see :data:`PRODUCT_FILTER`)."
