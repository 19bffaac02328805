"""``mastpipe init`` as a user runs it: the files it writes pass ``mastpipe validate`` (a real
process), it never overwrites without --force, and bad options exit 2 without a traceback."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

# Option sets a user might type, one file each; all are validated by one `mastpipe validate` run.
TABLE = [
    "--collection JWST --program 1073 --instrument NIRCam --filters F277W --product uncal",
    "--collection JWST --program 1073 --program 1345 --instrument NIRCAM/IMAGE --product cal --product i2d",
    "--collection JWST --proposal 2736 --instrument NIRSPEC* --product s2d,x1d --mode manifest",
    "--collection jwst --program 1073 --filters F090W,F150W --product cat --product asn --mode curl",
    "--collection JWST --instrument MIRI --instrument NIRISS --product rate",
    "--collection HST --instrument WFC3/UVIS --instrument ACS/WFC --filters F502N --product flt --product drz",
    "--collection HST --program 12345 --instrument wfc3 --product flc --mode curl",
    "--collection TESS --product lc --name tess-lightcurves",
    "--collection TESS --program G022071 --product lc,tp --mode manifest",
    "--collection K2 --product llc",
    "--collection GALEX",
    "--collection JWST --filters 'CLEAR;F277W' --instrument 'NIRCAM/IMAGE' --name x.y_z-1",
]


def test_every_table_entry_writes_a_recipe_that_validate_accepts(workdir: Path, cli, cli_in_process) -> None:
    written = []
    for i, options in enumerate(TABLE):  # in this process: 12 interpreters would import the same modules 12 times
        output = f"pipelines/init-{i:02d}.yaml"
        result = cli_in_process("init", *shlex.split(options), "--output", output, cwd=workdir)
        assert result.returncode == 0, f"{options}: {result.stderr}"
        assert "Traceback" not in result.stderr
        assert f"wrote {output}" in result.stderr
        first = (workdir / output).read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=../schemas/recipe.schema.json"
        written.append(output)
    result = cli("validate", *written, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # not even a warning
    assert result.stdout.count(": valid (1 query, retrieve mode ") == len(TABLE)


def test_stdout_by_default_and_the_output_is_the_same_recipe(workdir: Path, cli) -> None:
    options = ["--collection", "JWST", "--program", "1073", "--product", "uncal"]
    printed = cli("init", *options, cwd=workdir)
    assert printed.returncode == 0 and printed.stderr == ""
    assert cli("init", *options, "-o", "pipelines/a.yaml", cwd=workdir).returncode == 0
    assert (workdir / "pipelines/a.yaml").read_text() == printed.stdout


def test_never_overwrites_without_force(workdir: Path, cli) -> None:
    target = workdir / "pipelines" / "jwst-1073-nircam-uncal.yaml"
    before = target.read_bytes()
    result = cli("init", "--collection", "HST", "--output", str(target), cwd=workdir)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "already exists" in result.stderr and "--force" in result.stderr
    assert target.read_bytes() == before
    result = cli("init", "--collection", "HST", "--output", str(target), "--force", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "obs_collection: HST" in target.read_text()


def test_the_schema_line_points_at_the_repository_schema_from_anywhere_below(workdir: Path, cli) -> None:
    result = cli("init", "--collection", "TESS", "-o", "team/recipes/tess.yaml", cwd=workdir)
    assert result.returncode == 0, result.stderr
    recipe = workdir / "team/recipes/tess.yaml"
    line = recipe.read_text().splitlines()[0]
    relative = line.split("$schema=", 1)[1]
    assert (recipe.parent / relative).resolve() == (workdir / "schemas/recipe.schema.json").resolve()


@pytest.mark.parametrize("options, message", [
    (["--program", "1073"], "give --collection (a CAOM search) or --mission (a mission search)"),
    (["--collection", "JWST", "--mode", "wget"], "Invalid value for '--mode'"),
    (["--collection", "JWST", "--product", "uncl"], "--product: 'uncl' is not a JWST product kind"),
    (["--collection", "JWST", "--program", "10 73"], "--program: '10 73' is not a valid value"),
    (["--collection", "JWST", "--name", "my recipe"], "--name: 'my recipe' is not a valid recipe name"),
    (["--collection", "JWST", "--instrument", "NIRCAM#1"], "--instrument: 'NIRCAM#1' is not a valid value"),
    (["--collection", "JWST", "--output", "pipelines"], "is a directory"),
])
def test_bad_options_exit_2_with_a_clear_message(workdir: Path, cli, options: list[str], message: str) -> None:
    result = cli("init", *options, cwd=workdir)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert message in result.stderr
    assert result.stdout == ""


def test_without_a_schema_nearby_it_says_how_to_write_one(tmp_path: Path, cli) -> None:
    result = cli("init", "--collection", "TESS", "--product", "lc", "-o", "recipes/tess.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "note: for editor completion, write the schema its first line names: " \
           "mastpipe schema > schemas/recipe.schema.json" in result.stderr
    # following the note makes the first line point at a real file
    schema = cli("schema", cwd=tmp_path)
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas/recipe.schema.json").write_text(schema.stdout)
    line = (tmp_path / "recipes/tess.yaml").read_text().splitlines()[0]
    assert (tmp_path / "recipes" / line.split("$schema=", 1)[1]).resolve().is_file()
    again = cli("init", "--collection", "TESS", "-o", "recipes/other.yaml", cwd=tmp_path)
    assert again.returncode == 0 and "note:" not in again.stderr
