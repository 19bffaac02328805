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
    _large_buffers_to_the_system()


#: glibc's ``mallopt`` parameter for the size from which blocks are mapped on their own.
_M_MMAP_THRESHOLD = -3


def _large_buffers_to_the_system() -> None:
    """Map every block of 1 MiB or more on its own, so that freeing it gives it back.

    glibc raises its threshold (up to 32 MiB) as large blocks are freed; after that, the
    product lists' answers (15 MB each), their parsing buffers and the batches' columns share
    the heaps of four threads, and memory freed in between is kept: a 3M-row run peaked at
    1.5 GB with 0.7 GB of table. Fixed at 1 MiB, the batches freed as they are stacked go back
    to the system (1M rows: peak ~640 -> ~525 MB), for ~1 s more of page faults per
    million rows. Only the ``mastpipe`` process does this: the library leaves a host
    process's allocator alone. Elsewhere than glibc, nothing happens.
    """
    import os

    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    except (AttributeError, OSError, ValueError):  # not glibc, or no confstr here
        pass


for _command in (validate, schema, run, history, plan, status, login, init_command, sandbox):
    main.add_command(_command)
