"""The example recipes of pipelines/, for tests that need a real recipe with a few changes.

Tests import it as ``from _examples import example_recipe`` (tests/ is on sys.path through
tests/conftest.py), so the JWST 1073 recipe lives in one place, pipelines/, not pasted per file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def example_recipe(example: str = "jwst-1073-nircam-uncal", **changes: Any) -> str:
    """The text of ``pipelines/<example>.yaml`` with top-level keys changed.

    A mapping merges into the section of that name (``mast={"timeout": 5}`` keeps the other
    ``mast`` keys), any other value replaces the key, and None removes it.
    """
    data = yaml.safe_load((PIPELINES / f"{example}.yaml").read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        elif isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return yaml.safe_dump(data, sort_keys=False)
