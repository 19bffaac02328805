"""Manifests that travel: paths relative to the manifest's directory (absolute on request), and
an ECSV header naming the recipe, run, server, source and mastpipe version."""

from __future__ import annotations

import shutil
from pathlib import Path

from _examples import example_recipe
from astropy.table import Table

import mastpipe


def _recipe(folder: Path, **retrieve: str) -> Path:
    """The tutorial's example without the guide-star files, into ``folder/data``."""
    return example_recipe(folder, name="manifest-travels", mast={"timeout": 5, "retries": 1},
                          filter={"guide_stars": "omit"}, retrieve={"destination": "data", **retrieve})


def test_a_manifest_restored_elsewhere_still_names_its_files(sandbox, tmp_path):
    (tmp_path / "here").mkdir()
    recipe = _recipe(tmp_path / "here")
    outcome = mastpipe.run(recipe, mast_url=sandbox.url, environ={}, progress=False)
    manifest_path = tmp_path / "here" / "data" / "manifest.ecsv"
    raw = Table.read(manifest_path, format="ascii.ecsv")
    assert len(raw) > 0 and not any(Path(p).is_absolute() for p in raw["path"])
    assert all(p.startswith("mastDownload/JWST/") for p in raw["path"])
    meta = raw.meta
    assert meta["recipe"] == "manifest-travels" and meta["run_id"] == outcome.report["run_id"]
    assert meta["server"] == sandbox.url and meta["source"] == "mast"
    assert meta["download_url"].startswith(sandbox.url + "/api/")
    assert meta["mastpipe"] == mastpipe.__version__ and meta["paths"].startswith("relative")
    assert meta["recipe_fingerprint"] == outcome.report["recipe"]["fingerprint"]

    # a CI cache restored under another directory: the manifest still leads to every file
    moved = tmp_path / "restored"
    shutil.copytree(tmp_path / "here" / "data", moved)
    shutil.rmtree(tmp_path / "here" / "data")
    table = mastpipe.read_manifest(moved / "manifest.ecsv")
    for row in table:
        path = Path(row["path"])
        assert path.is_absolute() and path.is_relative_to(moved)
        assert path.stat().st_size == sandbox.catalog.file_size(row["dataURI"])
    assert table.meta["run_id"] == outcome.report["run_id"]


def test_absolute_paths_on_request(sandbox, tmp_path):
    recipe = _recipe(tmp_path, manifest_paths="absolute")
    mastpipe.run(recipe, mast_url=sandbox.url, environ={}, progress=False)
    raw = Table.read(tmp_path / "data" / "manifest.ecsv", format="ascii.ecsv")
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in raw["path"])
    assert raw.meta["paths"] == "absolute"
    assert list(mastpipe.read_manifest(tmp_path / "data" / "manifest.ecsv")["path"]) == list(raw["path"])


def test_manifest_mode_writes_relative_paths_and_provenance(sandbox, tmp_path):
    recipe = _recipe(tmp_path, mode="manifest", manifest="lists/files.ecsv")
    mastpipe.run(recipe, mast_url=sandbox.url, environ={}, progress=False)
    raw = Table.read(tmp_path / "lists" / "files.ecsv", format="ascii.ecsv")
    assert all(p.startswith("../data/mastDownload/") for p in raw["path"])
    assert raw.meta["recipe"] == "manifest-travels" and set(raw["status"]) == {"listed"}
    resolved = mastpipe.read_manifest(tmp_path / "lists" / "files.ecsv")
    assert all(Path(p).is_relative_to(tmp_path / "data") for p in resolved["path"])
