"""Recipes: what a team writes, and everything that reads it before MAST is asked anything.

========================  =====================================================================
module                    what it holds
========================  =====================================================================
:mod:`.models`            the recipe as a frozen pydantic model; :func:`load_recipe`; every
                          name below, importable from here as before
:mod:`.sections`          one model per section (mast, query, products ... state)
:mod:`.base`              what the models share (immutability, no boolean for text), ``Range``
:mod:`.checks`            checks of criteria, filter columns and layouts, as located problems
:mod:`.problems`          located problems (``FILE:LINE:COL: field: message``) and their wording
:mod:`.yamlload`          safe YAML loading that remembers where each value was written
:mod:`.fields`            what MAST's observation and product tables contain
:mod:`.quantities`        angles, coordinates, dates and durations as recipes write them
:mod:`.schema`            the JSON Schema and the Markdown recipe reference, from the models
:mod:`.starter`           ``mastpipe init``: a commented starting recipe
========================  =====================================================================

The names below load lazily: ``mastpipe validate`` runs in pre-commit hooks and the sandbox
imports :mod:`.fields` alone, so importing this package must not pull in pydantic.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Recipe", "load_recipe", "parse_recipe"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mastpipe.recipe import models

        return getattr(models, name)
    raise AttributeError(f"module 'mastpipe.recipe' has no attribute {name!r}")
