"""Commands for writing recipes: ``validate``, ``schema`` and ``init``."""

from __future__ import annotations

import sys
from typing import Any

import click

from mastpipe.cli.output import fail
from mastpipe.cli.pipeline import SANDBOX_SERVER_ID
from mastpipe.errors import EXIT_INVALID, MastpipeError, RecipeError


__all__ = ["init_command", "schema", "validate"]


@click.command()
@click.argument("recipes", nargs=-1, required=True, metavar="RECIPE...")
@click.option("-q", "--quiet", is_flag=True, help="Print only problems, not one line per valid file.")
@click.option("--online", is_flag=True, help=(
    "Also ask MAST for the column lists of the missions the recipes search, check conditions and "
    "select_cols against them, and cache them for later offline checks."))
@click.option("--mast-url", default=None, help="The server whose column lists to use (default as for run).")
@click.option("--sandbox", is_flag=True, help="Use the column lists of mastpipe's local MAST stand-in (started with --online).")
def validate(recipes: tuple[str, ...], quiet: bool, online: bool, mast_url: str | None, sandbox: bool) -> None:
    """Check recipes without contacting MAST (unless --online).

    Every problem is one line FILE:LINE:COL: field.path: message, followed by a hint. Exit code 0
    when every recipe is valid, 2 otherwise. Takes many files at once, for pre-commit hooks.

    A mission search's conditions name columns only MAST knows: --online fetches each mission's
    column list (and caches it), and names that are not columns fail with a did-you-mean. Offline,
    the cached lists are used when there are any (a run caches them too).

    Example:

    \b
        mastpipe validate pipelines/*.yaml
        mastpipe validate --online pipelines/jwst-1073-nircam-uncal-missions.yaml
    """
    from contextlib import ExitStack

    from mastpipe.recipe.columns import checked_columns
    from mastpipe.recipe.models import effective_mast_url, parse_recipe, warning_problems
    from mastpipe.recipe.yamlload import load_yaml

    if sandbox and mast_url:
        raise click.UsageError("--sandbox and --mast-url exclude each other")
    failed = False
    archives: dict[str, Any] = {}
    with ExitStack() as stack:
        if sandbox and online:
            from mastpipe.sandbox import Sandbox

            mast_url = stack.enter_context(Sandbox()).url
        for path in recipes:
            try:
                located = load_yaml(path)
                recipe = parse_recipe(located)
                if recipe.mission is not None:
                    url = effective_mast_url(recipe, mast_url)
                    server = SANDBOX_SERVER_ID if sandbox else url

                    def fetch(mission: str, url: str = url) -> list[dict[str, Any]]:
                        if url not in archives:
                            from mastpipe.archive import Archive

                            archives[url] = Archive(url, timeout=60.0)
                        return archives[url].mission_columns(mission)  # type: ignore[no-any-return]

                    problems = checked_columns(recipe, located, server, fetch, online=online)
                    if problems:
                        raise RecipeError(problems)
            except RecipeError as error:
                failed = True
                for problem in error.problems:
                    click.echo(str(problem), err=True)
                continue
            except MastpipeError as error:  # --online and MAST failed: not the recipe's fault
                fail(error)
            for warning in warning_problems(recipe, located):
                click.echo(str(warning), err=True)
            if not quiet:
                searches = f"{len(recipe.query)} {'query' if len(recipe.query) == 1 else 'queries'}"
                click.echo(f"{path}: valid ({searches}, retrieve mode {recipe.retrieve.mode})")
    sys.exit(EXIT_INVALID if failed else 0)


@click.command()
@click.option("--markdown", is_flag=True, help="Print the recipe reference (docs/recipe.md) instead.")
def schema(markdown: bool) -> None:
    """Print the JSON Schema of recipes, generated from mastpipe's models.

    schemas/recipe.schema.json in the repository is this output. Point your editor at it for
    completion and hover help, e.g. with a first line in the recipe:

        # yaml-language-server: $schema=../schemas/recipe.schema.json

    With --markdown, print the recipe reference instead: every section and field with its type,
    default, allowed values and description, and the filter's semantics (docs/recipe.md).

    Example:

    \b
        mastpipe schema > recipe.schema.json
        mastpipe schema --markdown > docs/recipe.md
    """
    from mastpipe.recipe.schema import recipe_reference_markdown, recipe_schema_text

    click.echo(recipe_reference_markdown() if markdown else recipe_schema_text(), nl=False)


@click.command("init")
@click.option("--collection", help="MAST collection (obs_collection) for a CAOM search: JWST, HST, TESS ...")
@click.option("--mission", type=click.Choice(["jwst", "hst"], case_sensitive=False),
              help="Search this mission's own catalogue (MAST's mission search API) instead of CAOM.")
@click.option("--program", "--proposal", "programs", multiple=True, metavar="ID",
              help="Program (proposal) id; repeatable or comma-separated, any of them matches.")
@click.option("--instrument", "instruments", multiple=True,
              help="Instrument, e.g. NIRCAM (all its modes), NIRCAM/IMAGE, WFC3/UVIS; repeatable.")
@click.option("--filters", "filters", multiple=True, metavar="FILTER",
              help="Optical element, e.g. F277W; repeatable or comma-separated.")
@click.option("--product", "products", multiple=True, metavar="KIND",
              help="Product kind to keep, e.g. uncal, cal, i2d (JWST), flt, drz (HST), lc (TESS); repeatable.")
@click.option("--mode", type=click.Choice(["download", "curl", "manifest"]), default="download", show_default=True,
              help="What retrieve does: fetch the files, write a curl script, or only list them.")
@click.option("--name", help="Recipe name (default: made from the options, e.g. jwst-1073-nircam-uncal).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              help="File to write (default: standard output).")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
def init_command(collection: str | None, mission: str | None, programs: tuple[str, ...], instruments: tuple[str, ...],
                 filters: tuple[str, ...], products: tuple[str, ...], mode: str, name: str | None, output: str,
                 force: bool) -> None:
    """Write a starting recipe, with comments, from a few choices.

    Product kinds become filter.endswith suffixes (_uncal.fits) and productSubGroupDescription
    values (UNCAL). The recipe's first line points editors at schemas/recipe.schema.json. An
    existing file is never overwritten without --force. `mastpipe validate` accepts the result.

    With --mission (jwst or hst) instead of --collection, the recipe searches the mission's own
    catalogue: the choices become conditions over its columns and product kinds file_suffix values.

    Example:

    \b
        mastpipe init --collection JWST --program 1073 --instrument NIRCam --filters F277W \\
            --product uncal --output pipelines/jwst-1073.yaml
        mastpipe init --mission jwst --program 1073 --instrument NIRCam --filters F277W --product uncal
    """
    import os

    from mastpipe.recipe.starter import schema_path_for, starting_recipe, write_new_recipe

    to_stdout = output == "-"
    try:
        text = starting_recipe(collection=collection, mission=mission, programs=programs, instruments=instruments,
                               filters=filters, products=products, mode=mode, name=name,
                               schema_path=schema_path_for(None if to_stdout else output))
        if to_stdout:
            click.echo(text, nl=False)
            return
        written = write_new_recipe(output, text, force=force)
    except MastpipeError as error:
        fail(error)
    click.echo(f"wrote {written}; next: mastpipe validate {written} && mastpipe run {written} --sandbox", err=True)
    schema_file = written.parent / schema_path_for(written)
    if not schema_file.is_file():
        click.echo(f"note: for editor completion, write the schema its first line names: "
                   f"mastpipe schema > {os.path.normpath(schema_file)}", err=True)
