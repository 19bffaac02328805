"""The ``mastpipe`` command line: a thin layer over the library.

Each command is one function whose docstring is its ``--help``, with an example. Heavy modules
(astropy, astroquery, the pipeline) are imported inside the commands that need them, so that
``mastpipe --help`` and ``mastpipe validate`` start fast enough for pre-commit hooks.

The modules: :mod:`~mastpipe.cli.output` (errors, interruptions, logging),
:mod:`~mastpipe.cli.pipeline` (shared options, building the Pipeline), and the commands by
group: :mod:`~mastpipe.cli.authoring` (validate, schema, init), :mod:`~mastpipe.cli.running`
(run, history), :mod:`~mastpipe.cli.inspecting` (plan, status), :mod:`~mastpipe.cli.environment`
(login, sandbox).
"""

from __future__ import annotations

import os

import click

from mastpipe import __version__
from mastpipe.cli.authoring import init_command, schema, validate
from mastpipe.cli.environment import login, sandbox
from mastpipe.cli.inspecting import plan, status
from mastpipe.cli.output import FLAGS
from mastpipe.cli.running import history, run


__all__ = ["FLAGS", "main"]


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
    # No command does linear algebra, and numpy is not loaded yet: without this, numpy's
    # OpenBLAS starts a thread per core whose spinning costs ~0.1 s of CPU in every process.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


for _command in (validate, schema, run, history, plan, status, login, init_command, sandbox):
    main.add_command(_command)
