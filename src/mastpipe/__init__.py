"""mastpipe: declarative, resumable, verified data pipelines for MAST.

The public Python API is re-exported lazily so that ``import mastpipe`` (and the command line's
``--help`` and ``validate``) stay fast: astropy and astroquery load only when a stage needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
