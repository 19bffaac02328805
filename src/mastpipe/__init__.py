"""mastpipe: declarative, resumable, verified data pipelines for MAST.

The public Python API, re-exported lazily so that ``import mastpipe`` (and the command line's
``--help`` and ``validate``) stay fast: astropy and astroquery load only when a stage needs them.

>>> import mastpipe
>>> recipe = mastpipe.load_recipe("pipelines/jwst-1073-nircam-uncal.yaml")   # doctest: +SKIP
>>> outcome = mastpipe.run("pipelines/jwst-1073-nircam-uncal.yaml")          # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_recipe", "run", "plan", "status", "Pipeline", "Recipe", "RunOutcome", "PlanReport",
           "StatusReport", "read_manifest", "iter_files", "RetrievedFile", "MastpipeError"]

_LAZY = {
    "load_recipe": "mastpipe.recipe.models", "Recipe": "mastpipe.recipe.models", "run": "mastpipe.api",
    "RunOutcome": "mastpipe.api", "plan": "mastpipe.api", "status": "mastpipe.api", "PlanReport": "mastpipe.api",
    "StatusReport": "mastpipe.api", "read_manifest": "mastpipe.stages.retrieve.stage",
    "iter_files": "mastpipe.api", "RetrievedFile": "mastpipe.api", "Pipeline": "mastpipe.runner", "MastpipeError": "mastpipe.errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mastpipe' has no attribute {name!r}")
