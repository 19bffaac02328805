"""The options every pipeline command shares, and the one place a command builds a Pipeline.

:func:`with_pipeline` starts the sandbox when asked, installs the signal handlers, and turns
every way a run can end early into one line and an exit code.
"""

from __future__ import annotations

import click

from mastpipe.cli.output import FileCount, fail, interrupted
from mastpipe.errors import MastpipeError


#: How checkpoints made with --sandbox name their server: the sandbox's port changes every time,
#: its catalogue (seed 0) does not.
SANDBOX_SERVER_ID = "mastpipe-sandbox:seed=0"


__all__ = ["SANDBOX_SERVER_ID", "SOURCE", "pipeline_options", "raise_interrupted", "require_html", "with_pipeline"]


def raise_interrupted(signum: int, frame: object) -> None:
    """SIGTERM handler: stop the way Ctrl-C stops (downloads stop between blocks and keep their
    temporaries, the lock is released, the run is recorded), instead of dying silently."""
    from mastpipe.errors import Interrupted

    raise Interrupted(signum)


SOURCE = click.option("--source", type=click.Choice(["mast", "cloud", "auto"]),
                      help="Where files come from, instead of the recipe's retrieve.source: MAST, its S3 copies "
                           "only, or S3 where a copy exists (cloud and auto need mastpipe[cloud]).")


def pipeline_options(function):  # type: ignore[no-untyped-def]
    options = [
        click.argument("recipe", type=click.Path(dir_okay=False)),
        click.option("--mast-url", envvar=None, help="MAST server to use (overrides MASTPIPE_MAST_URL and the recipe)."),
        click.option("--state-dir", type=click.Path(file_okay=False), help="Where checkpoints live (default .mastpipe/<name> beside the recipe)."),
        click.option("--sandbox", is_flag=True, help="Start mastpipe's local MAST stand-in and run against it (tries a recipe offline)."),
        click.option("--insecure", is_flag=True,
                     help="Do not check TLS certificates (dangerous; for a private certificate authority set REQUESTS_CA_BUNDLE instead)."),
        click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors."),
        click.option("-v", "--verbose", is_flag=True, help="Debug output."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def with_pipeline(recipe: str, mast_url: str | None, state_dir: str | None, sandbox: bool,
                   action, refresh: bool = False, insecure: bool = False, quiet: bool = False,
                   json_events: bool = False, files: FileCount | None = None,
                   source: str | None = None):  # type: ignore[no-untyped-def]
    """Build the Pipeline (inside a sandbox when asked) and run ``action(pipeline)``.

    Every way the run can end early becomes one line, never a traceback: a
    :class:`MastpipeError` (its exit code), an :class:`OSError` that escaped (exit 1, naming
    the path), Ctrl-C or SIGTERM (exit 130 / 143, saying how far the run got; ``files`` counts
    the files done).
    """
    import signal
    import threading
    from contextlib import nullcontext

    from mastpipe.api import describe_os_error
    from mastpipe.runner import Pipeline

    if sandbox and mast_url:
        raise click.UsageError("--sandbox and --mast-url exclude each other")
    context = nullcontext(None)
    if sandbox:
        from mastpipe.sandbox import Sandbox

        context = Sandbox(seed=0)
    pipeline: Pipeline | None = None
    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        # SIGINT too, as `sandbox serve` does: a run started in the background by a
        # non-interactive shell inherits SIGINT ignored, and `kill -INT` would then do nothing.
        previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
                    signal.SIGTERM: signal.signal(signal.SIGTERM, raise_interrupted)}
    try:
        with context as running:
            url = running.url if running is not None else mast_url
            if running is not None and not quiet:
                click.echo(f"sandbox: serving a local MAST stand-in at {url}", err=True)
            server_id = SANDBOX_SERVER_ID if running is not None else None
            pipeline = Pipeline(recipe, mast_url=url, state_dir=state_dir, refresh=refresh, server_id=server_id,
                                insecure=insecure, source=source)
            if running is not None and pipeline.recipe.retrieve.source != "mast":
                from mastpipe.stages.retrieve.s3 import S3_ENDPOINT_ENV

                endpoint = running.start_s3().endpoint  # the sandbox's bucket stands in for AWS's
                if not quiet:
                    click.echo(f"sandbox: serving its cloud bucket at {endpoint}", err=True)
                import os

                pipeline.environ = {**(pipeline.environ or os.environ), S3_ENDPOINT_ENV: endpoint}
            return action(pipeline)
    except MastpipeError as error:
        fail(error, json_events)
    except OSError as error:
        fail(MastpipeError(describe_os_error(error),
                            hint="check that path's permissions and the free space on its disk, then rerun"),
              json_events)
    except KeyboardInterrupt as interrupt:
        interrupted(interrupt, pipeline.stage if pipeline is not None else None, files, json_events)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]


def require_html() -> None:
    """Fail before any stage runs when --html cannot be honoured (matplotlib missing)."""
    from mastpipe.picture import _require_matplotlib

    _require_matplotlib()
