"""The recipe's JSON Schema, generated from the models (``schemas/recipe.schema.json``)."""

from __future__ import annotations

import json
from typing import Any

from .recipe import Recipe

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def recipe_schema() -> dict[str, Any]:
    """The JSON Schema of a recipe, for editors (hover text, completion) and other tools."""
    schema = Recipe.model_json_schema(mode="validation")
    return {"$schema": SCHEMA_DIALECT, **schema}


def recipe_schema_text() -> str:
    """:func:`recipe_schema` as the exact text committed in ``schemas/recipe.schema.json``."""
    return json.dumps(recipe_schema(), indent=2, ensure_ascii=False) + "\n"
