"""The ``mastpipe`` command line: a thin layer over the library.

Each command is one function whose docstring is its ``--help``, with an example. Heavy modules
(astropy, astroquery, the pipeline) are imported inside the commands that need them, so that
``mastpipe --help`` and ``mastpipe validate`` start fast enough for pre-commit hooks.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from . import __version__
from .errors import EXIT_INVALID, MastpipeError, RecipeError


def _fail(error: MastpipeError) -> NoReturn:
    click.echo(f"mastpipe: error: {error}", err=True)
    sys.exit(error.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="mastpipe")
def main() -> None:
    """Declarative, resumable, verified data pipelines for MAST.

    A recipe (YAML) says which observations to search for, which of their products to keep and
    where they go; mastpipe runs the stages query -> products -> unique -> filter -> retrieve
    with a checkpoint after each.

    Example:

        mastpipe validate pipelines/*.yaml
    """


@main.command()
@click.argument("recipes", nargs=-1, required=True, metavar="RECIPE...")
@click.option("-q", "--quiet", is_flag=True, help="Print only problems, not one line per valid file.")
def validate(recipes: tuple[str, ...], quiet: bool) -> None:
    """Check recipes without contacting MAST.

    Every problem is one line FILE:LINE:COL: field.path: message, followed by a hint. Exit code 0
    when every recipe is valid, 2 otherwise. Takes many files at once, for pre-commit hooks.

    Example:

        mastpipe validate pipelines/*.yaml
    """
    from .recipe import parse_recipe, warning_problems
    from .yamlload import load_yaml

    failed = False
    for path in recipes:
        try:
            located = load_yaml(path)
            recipe = parse_recipe(located)
        except RecipeError as error:
            failed = True
            for problem in error.problems:
                click.echo(str(problem), err=True)
            continue
        for warning in warning_problems(recipe, located):
            click.echo(str(warning), err=True)
        if not quiet:
            searches = f"{len(recipe.query)} {'query' if len(recipe.query) == 1 else 'queries'}"
            click.echo(f"{path}: valid ({searches}, retrieve mode {recipe.retrieve.mode})")
    sys.exit(EXIT_INVALID if failed else 0)


@main.command()
def schema() -> None:
    """Print the JSON Schema of recipes, generated from mastpipe's models.

    schemas/recipe.schema.json in the repository is this output. Point your editor at it for
    completion and hover help, e.g. with a first line in the recipe:

        # yaml-language-server: $schema=../schemas/recipe.schema.json

    Example:

        mastpipe schema > recipe.schema.json
    """
    from .schema import recipe_schema_text

    click.echo(recipe_schema_text(), nl=False)


if __name__ == "__main__":  # pragma: no cover
    main()
