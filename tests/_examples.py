"""The example recipes of ``pipelines/``, loaded (never pasted) and edited as data for variants.

Tests that need the MAST tutorial's recipe with a different name, destination, filter or mode
derive it from ``pipelines/jwst-1073-nircam-uncal.yaml``: the file is read with
``yaml.safe_load``, the changes are merged into the data and the result written back with
``yaml.safe_dump``, so a test never depends on the example's exact wording and an edit of the
example reaches every test that uses it.

Changes are keyword arguments named after the recipe's top-level keys. A dict merges into the
section (recursively); ``None`` removes a key; anything else replaces the value::

    example_recipe(tmp_path, name="ckpt", products={"batch_size": 2}, retrieve=None)
    example_text(filter={"guide_stars": "omit", "columns": None})
    example_recipe(tmp_path, **TYPO)
    edit(text, query={"nircam": {"criteria": {"filters": ["F277W", "F090W"]}}})

To replace a whole mapping rather than merge into it, change the data from :func:`example_data`
and write it with :func:`dump`.

Test modules are not a package; pytest puts ``tests/`` on ``sys.path`` (tests/conftest.py is
there), so ``from _examples import ...`` works from every test directory.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

__all__ = ["EXAMPLES", "JWST_1073", "TYPO", "WRONG_CASE", "dump", "edit", "example_data", "example_recipe",
           "example_text", "merge"]

#: The directory of the example recipes.
EXAMPLES = Path(__file__).resolve().parents[1] / "pipelines"
#: The MAST tutorial's example: JWST program 1073, NIRCam through F277W, raw (UNCAL) products.
JWST_1073 = "jwst-1073-nircam-uncal.yaml"
#: Changes that make :data:`JWST_1073` find no observation: a typo in one criterion (NIRCAN for NIRCAM).
TYPO: dict[str, Any] = {"query": {"nircam": {"criteria": {"instrument_name": "NIRCAN*"}}}}
#: Changes that make :data:`JWST_1073`'s filter keep no product: its value in the wrong case.
WRONG_CASE: dict[str, Any] = {"filter": {"columns": {"productSubGroupDescription": "uncal"}}}


def merge(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with ``changes`` merged in: dicts recursively, ``None`` removes a key."""
    merged = copy.deepcopy(data)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def example_data(example: str = JWST_1073, **changes: Any) -> dict[str, Any]:
    """The example recipe ``pipelines/<example>`` as data, with ``changes`` merged in."""
    data = yaml.safe_load((EXAMPLES / example).read_text())
    assert isinstance(data, dict), f"{EXAMPLES / example} is not a mapping"
    return merge(data, changes)


def dump(data: dict[str, Any]) -> str:
    """Recipe data as YAML text, keys in the order given."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def example_text(example: str = JWST_1073, **changes: Any) -> str:
    """The example recipe with ``changes`` merged in, as YAML text."""
    return dump(example_data(example, **changes))


def edit(text: str, **changes: Any) -> str:
    """Recipe ``text`` (a derived example) with ``changes`` merged in, as YAML text."""
    data = yaml.safe_load(text)
    assert isinstance(data, dict), "a recipe is a mapping"
    return dump(merge(data, changes))


def example_recipe(tmp_path: Path, example: str = JWST_1073, filename: str = "recipe.yaml",
                   **changes: Any) -> Path:
    """Write the example with ``changes`` merged in to ``tmp_path / filename``; return its path."""
    path = tmp_path / filename
    path.write_text(example_text(example, **changes))
    return path
