"""docs/architecture.md matches the tree: every module it names exists, every module is named."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "mastpipe"
DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def _modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "sandbox" not in p.parts and p.name != "__init__.py"]


def test_every_module_of_the_library_is_named() -> None:
    unnamed = [str(p.relative_to(PACKAGE)) for p in _modules()
               if not re.search(rf"(?<![\w.]){re.escape(p.stem)}(\.py)?\b", DOC)]
    assert not unnamed, f"docs/architecture.md does not name {unnamed}"


def test_every_path_it_names_exists() -> None:
    for path in re.findall(r"`((?:stages|recipe|archive|picture)/[\w/]+\.py|\w+\.py)`", DOC):
        candidates = [PACKAGE / path] + [p for p in _modules() if p.name == path]
        assert any(c.exists() for c in candidates), f"docs/architecture.md names {path}, which is not in the tree"
