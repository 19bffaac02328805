"""Settings every test shares."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_column_cache(tmp_path_factory, monkeypatch):
    """Mission column lists are cached in the user's cache directory (mastpipe.recipe.columns):
    each test gets its own, so none reads another's and none writes to the real one."""
    monkeypatch.setenv("MASTPIPE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
