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
_ERRORS = ("MastpipeError", "RecipeError", "Problem", "UsageError", "NotWritableError", "CABundleError", "ArchiveError",
           "TruncatedResultError", "AuthError", "TokenRefusedError", "TokenCheckError", "LockError", "StateError",
           "LedgerError", "TransferError", "IntegrityError", "UnsafePathError", "Interrupted", "ExpectationError",
           "NameNotFoundError")
_LAZY = {
    "load_recipe": "mastpipe.recipe.models", "Recipe": "mastpipe.recipe.models", "run": "mastpipe.api",
    "RunOutcome": "mastpipe.api", "Pipeline": "mastpipe.runner", "StateDir": "mastpipe.state",
    "DownloadSettings": "mastpipe.stages.retrieve.settings",
    "plan": "mastpipe.api", "status": "mastpipe.api", "iter_files": "mastpipe.api", "PlanReport": "mastpipe.api",
    "StatusReport": "mastpipe.api", "RetrievedFile": "mastpipe.api", "read_manifest": "mastpipe.stages.retrieve.manifest",
    # every public exception (the tree is drawn in mastpipe.errors), so `except mastpipe.RecipeError` works
    **dict.fromkeys(_ERRORS, "mastpipe.errors"),
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mastpipe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
