"""The ``mastpipe`` command line: a thin layer over the library.

Each command is one function whose docstring is its ``--help``, with an example. Heavy modules
(astropy, astroquery, the pipeline) are imported inside the commands that need them, so that
``mastpipe --help`` and ``mastpipe validate`` start fast enough for pre-commit hooks.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from mastpipe import __version__
from mastpipe.errors import EXIT_INVALID, MastpipeError, RecipeError


#: How checkpoints made with --sandbox name their server: the sandbox's port changes every time,
#: its catalogue (seed 0) does not.
SANDBOX_SERVER_ID = "mastpipe-sandbox:seed=0"


#: The command line's name for each library parameter an error may speak of: the library says
#: ``until 'x' is not a stage``, the command line ``--until 'x' is not a stage``.
FLAGS = {"until": "--until", "from_stage": "--from", "executor": "--executor", "scheduler": "--scheduler",
         "mast_url": "--mast-url", "state_dir": "--state-dir", "collection": "--collection", "mission": "--mission",
         "programs": "--program", "instruments": "--instrument", "filters": "--filters", "products": "--product",
         "mode": "--mode", "name": "--name", "path": "--output", "force": "--force"}


__all__ = ["FLAGS", "main"]


def _fail(error: MastpipeError, json_events: bool = False) -> NoReturn:
    """Print ``error`` (and its hint) as ``mastpipe: error: ...`` on stderr and exit with its code.

    The parameters it names are said as flags (:data:`FLAGS`). With ``--json`` the error is also
    one JSON event on stdout, so that a script reading only stdout learns why the run stopped.
    """
    error.name_parameters(FLAGS)
    if json_events:
        import json

        click.echo(json.dumps({"event": "error", "exit_code": error.exit_code, "error": type(error).__name__,
                               "message": error.message, "hint": error.hint}))
    click.echo(f"mastpipe: error: {error}", err=True)
    sys.exit(error.exit_code)


class _FileCount:
    """Counts, from transfer events, the files retrieve has done: what an interrupted run reports.

    Events come from the download threads, hence the lock.
    """

    def __init__(self) -> None:
        import threading

        self.total: int | None = None
        self.done = 0
        self._lock = threading.Lock()

    def __call__(self, event) -> None:  # type: ignore[no-untyped-def]
        if event.kind == "plan":
            self.total = event.total
        elif event.kind in ("done", "skipped"):
            with self._lock:
                self.done += 1


def _raise_interrupted(signum: int, frame: object) -> None:
    """SIGTERM handler: stop the way Ctrl-C stops (downloads stop between blocks and keep their
    temporaries, the lock is released, the run is recorded), instead of dying silently."""
    from mastpipe.errors import Interrupted

    raise Interrupted(signum)


def _interrupted(interrupt: KeyboardInterrupt, stage: str | None, files: _FileCount | None,
                 json_events: bool) -> NoReturn:
    """Say how far an interrupted run got, and exit 130 (Ctrl-C) or 128 + the signal."""
    from mastpipe.errors import interrupt_exit_code

    code = interrupt_exit_code(interrupt)
    if stage == "retrieve" and files is not None and files.total is not None:
        what = f"{files.done} of {files.total} files done"
    elif stage is not None:
        what = f"stopped during the {stage} stage (the stages before it are checkpointed)"
    else:
        what = "stopped"
    message = f"interrupted: {what}; rerun to resume"
    if json_events:
        import json

        click.echo(json.dumps({"event": "interrupted", "exit_code": code, "stage": stage, "message": message}))
    click.echo(f"mastpipe: {message}", err=True)
    sys.exit(code)


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
                _fail(error)
            for warning in warning_problems(recipe, located):
                click.echo(str(warning), err=True)
            if not quiet:
                searches = f"{len(recipe.query)} {'query' if len(recipe.query) == 1 else 'queries'}"
                click.echo(f"{path}: valid ({searches}, retrieve mode {recipe.retrieve.mode})")
    sys.exit(EXIT_INVALID if failed else 0)


@main.command()
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


def _setup_logging(quiet: bool, verbose: bool, json_lines: bool = False) -> None:
    import json
    import logging

    from mastpipe.auth import RedactingFilter

    class JsonLines(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            event = getattr(record, "mastpipe_event", None) or {"event": "log"}
            return json.dumps({**event, "level": record.levelname.lower(), "message": record.getMessage()})

    handler = logging.StreamHandler(sys.stdout if json_lines else sys.stderr)
    handler.setFormatter(JsonLines() if json_lines else
                         logging.Formatter("%(levelname)s %(message)s" if verbose else "%(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger("mastpipe")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


_SOURCE = click.option("--source", type=click.Choice(["mast", "cloud", "auto"]),
                       help="Where files come from, instead of the recipe's retrieve.source: MAST, its S3 copies "
                            "only, or S3 where a copy exists (cloud and auto need mastpipe[cloud]).")


def _pipeline_options(function):  # type: ignore[no-untyped-def]
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


def _with_pipeline(recipe: str, mast_url: str | None, state_dir: str | None, sandbox: bool,
                   action, refresh: bool = False, insecure: bool = False, quiet: bool = False,
                   json_events: bool = False, files: _FileCount | None = None,
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
                    signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_interrupted)}
    try:
        with context as running:
            url = running.url if running is not None else mast_url
            if running is not None and not quiet:
                click.echo(f"sandbox: serving a local MAST stand-in at {url}", err=True)
            server_id = SANDBOX_SERVER_ID if running is not None else None
            pipeline = Pipeline(recipe, mast_url=url, state_dir=state_dir, refresh=refresh, server_id=server_id,
                                insecure=insecure, source=source)
            if running is not None and pipeline.recipe.retrieve.source != "mast":
                from .stages.retrieve.s3 import S3_ENDPOINT_ENV

                endpoint = running.start_s3().endpoint  # the sandbox's bucket stands in for AWS's
                if not quiet:
                    click.echo(f"sandbox: serving its cloud bucket at {endpoint}", err=True)
                import os

                pipeline.environ = {**(pipeline.environ or os.environ), S3_ENDPOINT_ENV: endpoint}
            return action(pipeline)
    except MastpipeError as error:
        _fail(error, json_events)
    except OSError as error:
        _fail(MastpipeError(describe_os_error(error),
                            hint="check that path's permissions and the free space on its disk, then rerun"),
              json_events)
    except KeyboardInterrupt as interrupt:
        _interrupted(interrupt, pipeline.stage if pipeline is not None else None, files, json_events)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]


@main.command()
@_pipeline_options
@click.option("--until", type=click.Choice(["query", "products", "unique", "filter", "retrieve"]), default="retrieve",
              help="Last stage to run.")
@click.option("--from", "from_stage", type=click.Choice(["query", "products", "unique", "filter", "retrieve"]),
              help="Recompute this stage and the later ones, whatever the checkpoints say.")
@click.option("--refresh", is_flag=True, help="Ask MAST again for observations and product lists; keeps every file downloaded.")
@click.option("--verify", is_flag=True, help="Re-hash files already downloaded and repair any that changed.")
@click.option("--revalidate", is_flag=True,
              help="Ask the server (HEAD) whether files already downloaded were reprocessed silently; refetch those.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Also write the JSON run report here.")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False),
              help="Write a Markdown summary here (appended to $GITHUB_STEP_SUMMARY automatically when set).")
@click.option("--json", "json_events", is_flag=True, help="Print one JSON event per line on stdout, for scripts.")
@click.option("--executor", type=click.Choice(["threads", "dask"]),
              help="Where downloads run, instead of the recipe's retrieve.executor (dask needs mastpipe[dask]).")
@click.option("--scheduler", metavar="ADDRESS",
              help="Dask scheduler, e.g. tcp://host:8786, or 'local' for worker processes on this machine.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="Also write the run report as a self-contained HTML page with a picture of the selection (needs mastpipe[html]).")
@_SOURCE
def run(recipe: str, mast_url: str | None, state_dir: str | None, sandbox: bool, insecure: bool, quiet: bool,
        verbose: bool, until: str, from_stage: str | None, refresh: bool, verify: bool, report_path: str | None,
        summary_path: str | None, json_events: bool, executor: str | None = None,
        scheduler: str | None = None, html_path: str | None = None, source: str | None = None,
        revalidate: bool = False) -> None:
    """Run a recipe: query -> products -> unique -> filter -> retrieve.

    Each stage's result is checkpointed; a rerun reuses every stage whose recipe section and
    input are unchanged, and fetches only files not yet downloaded and verified. Every run writes
    a JSON report in the state directory and is listed by `mastpipe history`. Exit code 0 on
    success (also when nothing is new), 1 when some files failed (the others complete), 2 for an
    invalid recipe or usage, 3 when MAST cannot be reached, 4 when another run holds the lock,
    5 when the recipe's `expect` failed (by default: a search or a filter that keeps nothing).

    Example:

        mastpipe run pipelines/jwst-1073-nircam-uncal.yaml --sandbox
    """
    _setup_logging(quiet, verbose, json_events)

    def action(pipeline):  # type: ignore[no-untyped-def]
        import json

        from mastpipe.api import run_pipeline
        from mastpipe.stages.retrieve.progress import Progress
        from mastpipe.report import format_run

        if json_events:
            def progress(event):  # type: ignore[no-untyped-def]
                if event.kind == "plan":  # files to consider, bytes still to fetch, files already done
                    click.echo(json.dumps({"event": "file", "kind": "plan", "files": event.total,
                                           "bytes": event.nbytes, "skipped": event.skipped}))
                elif event.kind in ("done", "failed", "retry"):
                    click.echo(json.dumps({"event": "file", "kind": event.kind, "dataURI": event.key or None,
                                           "bytes": event.total, "message": event.message}))
        else:
            progress = Progress(mode="quiet" if quiet else "auto")

        def on_event(event):  # type: ignore[no-untyped-def]
            files(event)
            progress(event)

        if html_path:
            _require_html()
            if until in ("query", "products", "unique"):
                from mastpipe.errors import UsageError

                raise UsageError(f"--html draws the selection, which --until {until} stops before",
                                 hint="run up to filter at least (--until filter), or drop --html")
        try:
            outcome = run_pipeline(pipeline, until=until, from_stage=from_stage, verify=verify,
                                   on_event=on_event, report=report_path, summary=summary_path,
                                   executor=executor, scheduler=scheduler, revalidate=revalidate)
        finally:
            if not json_events:
                progress.close()
        if html_path:
            from mastpipe.picture import run_html, write_page

            written = write_page(html_path, run_html(outcome, pipeline.recipe.name))
            if not quiet and not json_events:
                click.echo(f"wrote {written}", err=True)
        if json_events:
            click.echo(json.dumps({"event": "report", "report": outcome.report}))
        elif outcome.report.get("nothing_new") and outcome.exit_code == 0 and until == "retrieve":
            # only a complete run may say "all present": --until stops before retrieve looked
            count = len(outcome.tables.get("filter", []))
            where = "all present" if pipeline.recipe.retrieve.mode == "download" else \
                f"listed in {outcome.result.retrieve.script or outcome.result.retrieve.manifest}"
            click.echo(f"{pipeline.recipe.name}: nothing new since the previous run ({count} products, {where})")
        else:
            click.echo(f"{pipeline.recipe.name}: state in {outcome.result.state_dir}")
            click.echo(format_run(outcome.result))
        sys.exit(outcome.exit_code)

    files = _FileCount()
    _with_pipeline(recipe, mast_url, state_dir, sandbox, action, refresh=refresh, insecure=insecure, quiet=quiet,
                   json_events=json_events, files=files, source=source)


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--state-dir", type=click.Path(file_okay=False), help="Where checkpoints live.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as a JSON list, for scripts.")
def history(recipe: str, state_dir: str | None, as_json: bool) -> None:
    """List the recorded runs of a recipe: when, exit code, what they fetched.

    Example:

        mastpipe history pipelines/jwst-1073-nircam-uncal.yaml --json
    """
    import json

    from mastpipe.report import read_history
    from mastpipe.runner import Pipeline

    try:
        runs = read_history(Pipeline(recipe, state_dir=state_dir).state_dir)
    except MastpipeError as error:
        _fail(error)
    if as_json:
        click.echo(json.dumps(runs, indent=2))
        return
    if not runs:
        click.echo("no runs recorded yet")
    for entry in runs:
        what = entry.get("error") or (
            "nothing new" if entry.get("nothing_new") else
            f"{entry.get('observations')} observations, {entry.get('products_kept')} products kept, "
            f"{entry.get('fetched') or 0} fetched, {entry.get('failed') or 0} failed")
        click.echo(f"{entry['run_id']}  {entry['started']}  exit {entry['exit_code']}  {what}")


@main.command()
@_pipeline_options
@click.option("--refresh", is_flag=True, help="Ask MAST again for observations and product lists (as run --refresh).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as one JSON object (fields: README, \"plan --json\").")
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="Also write a self-contained HTML page: sky map, time span, files by product type (needs mastpipe[html]).")
@_SOURCE
def plan(recipe: str, mast_url: str | None, state_dir: str | None, sandbox: bool, insecure: bool, quiet: bool,
         verbose: bool, refresh: bool, as_json: bool, html_path: str | None = None,
         source: str | None = None) -> None:
    """Show what `run` would retrieve, without downloading anything.

    Runs the stages up to filter (reusing checkpoints; --refresh asks MAST again) and prints the
    files and bytes `run` would fetch, broken down by collection, instrument and product type;
    files already downloaded (the ledger and the disk say so, as a run would judge them) are
    counted apart. --json prints the same as one JSON object on stdout. --html FILE also writes
    a picture of the selection: the footprints on the sky, when they were observed, files and
    bytes by product type, beside the plan's table (one file, viewable offline).

    Example:

    \b
        mastpipe plan pipelines/jwst-1073-nircam-uncal.yaml --mast-url http://127.0.0.1:8080
        mastpipe plan pipelines/jwst-1073-nircam-uncal.yaml --sandbox --html plan.html
    """
    _setup_logging(quiet, verbose)

    def action(pipeline):  # type: ignore[no-untyped-def]
        from mastpipe.api import plan_pipeline
        from mastpipe.report import format_plan

        if html_path:
            _require_html()
        found = plan_pipeline(pipeline)
        click.echo(_json_text(found.to_dict()) if as_json else format_plan(found))
        if pipeline.recipe.retrieve.source != "mast" and not as_json:
            from mastpipe.report import format_cloud_plan

            click.echo(format_cloud_plan(pipeline, found.tables["filter"], found.outlook))
        if html_path:
            from mastpipe.picture import write_page

            written = write_page(html_path, found.to_html())
            if not quiet:
                click.echo(f"wrote {written}", err=True)

    _with_pipeline(recipe, mast_url, state_dir, sandbox, action, refresh=refresh, insecure=insecure, quiet=quiet,
                   json_events=as_json, source=source)


def _require_html() -> None:
    """Fail before any stage runs when --html cannot be honoured (matplotlib missing)."""
    from mastpipe.picture import _require_matplotlib

    _require_matplotlib()


def _json_text(data: object) -> str:
    import json

    return json.dumps(data, indent=2)


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--mast-url", help="MAST server the checkpoints should match.")
@click.option("--sandbox", is_flag=True, help="The checkpoints were made with --sandbox.")
@click.option("--state-dir", type=click.Path(file_okay=False), help="Where checkpoints live.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object (fields: README, \"status --json\").")
def status(recipe: str, mast_url: str | None, sandbox: bool, state_dir: str | None, as_json: bool) -> None:
    """Show each stage's checkpoint: done, stale (and why) or missing. Contacts no server.

    The retrieve line counts the files of the filter checkpoint already present and still to
    fetch (from the download ledger and the disk); a last line says when a run holds the lock,
    or a killed run left it behind. Reads only. --json prints the same as one JSON object.

    Example:

        mastpipe status pipelines/jwst-1073-nircam-uncal.yaml
    """
    from mastpipe.api import status as read_status
    from mastpipe.report import format_lock, format_retrieve_status, format_status

    try:
        found = read_status(recipe, mast_url=mast_url, state_dir=state_dir,
                            server_id=SANDBOX_SERVER_ID if sandbox else None)
    except MastpipeError as error:
        _fail(error, as_json)
    if as_json:
        click.echo(_json_text(found.to_dict()))
        return
    click.echo(f"{found.recipe}: state in {found.state_dir}")
    click.echo(format_status(found.stages))
    click.echo(format_retrieve_status(found.retrieve, found.filter_stale, found.retrieve_state))
    lock = format_lock(found.lock)
    if lock:
        click.echo(lock)


@main.command()
@click.option("--mast-url", help="Server to check the token against (default: MASTPIPE_MAST_URL, else MAST).")
@click.option("--insecure", is_flag=True, help="Do not check the server's TLS certificate (dangerous).")
def login(mast_url: str | None, insecure: bool) -> None:
    """Store a MAST token in the system keyring, after checking it with MAST.

    The token is asked for at a hidden prompt (never as an argument, which process lists show)
    and kept where astroquery also looks for it. Create one at
    https://auth.mast.stsci.edu/token. Alternatively set MAST_API_TOKEN in the environment.

    Example:

        mastpipe login
    """
    import os

    from mastpipe.auth import TOKEN_PAGE, check_token, store_token
    from mastpipe.errors import UsageError
    from mastpipe.recipe.models import DEFAULT_MAST_URL, MAST_URL_ENV

    url = (mast_url or os.environ.get(MAST_URL_ENV) or DEFAULT_MAST_URL).rstrip("/")
    if insecure:
        from mastpipe.tls import warn_insecure

        _setup_logging(False, False)
        warn_insecure(url)
    click.echo(f"Create a token at {TOKEN_PAGE}", err=True)
    if sys.stdin.isatty():
        try:
            token = click.prompt("MAST token", hide_input=True, err=True, default="", show_default=False).strip()
        except (EOFError, click.Abort):
            token = ""
    else:
        # getpass would warn (GetPassWarning) that it cannot hide input; there is nothing to hide
        click.echo("reading the token from stdin (no terminal)", err=True)
        token = sys.stdin.readline().strip()
    if not token:
        _fail(UsageError("no token given", hint=f"paste the token from {TOKEN_PAGE} at the prompt, "
                                                "or pipe it: mastpipe login < token.txt"))
    try:
        info = check_token(url, token, insecure=insecure)
    except MastpipeError as error:
        # the class carries the exit code: a token MAST refuses (TokenRefusedError) is bad input,
        # like a bad recipe (exit 2); MAST that could not be asked (TokenCheckError) is exit 3, as
        # for any run
        _fail(error)
    try:
        store_token(token)
    except MastpipeError as error:  # no keyring: a setup problem on this machine, not MAST's
        _fail(UsageError(error.message, hint=error.hint))
    name = (info.get("attrib") or {}).get("display_name") or info.get("ezid") or "unknown user"
    click.echo(f"Token accepted for {name}; stored in the keyring.")


@main.command("init")
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
        _fail(error)
    click.echo(f"wrote {written}; next: mastpipe validate {written} && mastpipe run {written} --sandbox", err=True)
    schema_file = written.parent / schema_path_for(written)
    if not schema_file.is_file():
        click.echo(f"note: for editor completion, write the schema its first line names: "
                   f"mastpipe schema > {os.path.normpath(schema_file)}", err=True)


@main.group()
def sandbox() -> None:
    """mastpipe's local MAST stand-in, for trying recipes and testing offline.

    Example:

        mastpipe sandbox serve --port 8080
    """


@sandbox.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="Port; 0 picks a free one.")
@click.option("--seed", default=0, show_default=True, help="Seed of the generated catalogue.")
@click.option("--scale", help="Add a program of N observations x M products, e.g. 200x5000.")
@click.option("--faults", help="Fault injection, e.g. 'download.latency=0.05,products.error_rate=0.1'.")
@click.option("--token", "tokens", multiple=True, help="A token the sandbox accepts, as TOKEN=NAME (repeatable).")
@click.option("--log", "log_path", type=click.Path(dir_okay=False), help="Append every request to this JSON-lines file.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Serve HTTPS with this certificate (PEM; with --tls-key).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="The private key of --tls-cert (PEM).")
@click.option("--s3", is_flag=True, help="Also serve the public cloud bucket from a local S3 server; prints its endpoint second.")
def serve(host: str, port: int, seed: int, scale: str | None, faults: str | None, tokens: tuple[str, ...],
          log_path: str | None, tls_cert: str | None, tls_key: str | None, s3: bool) -> None:
    """Serve a local MAST on HOST:PORT until interrupted; prints its URL first.

    Point mastpipe at it with --mast-url or MASTPIPE_MAST_URL, or astroquery with an
    astroquery.cfg whose [mast] server is that URL. With --tls-cert and --tls-key it serves
    HTTPS, to rehearse a network with its own certificate authority (REQUESTS_CA_BUNDLE).
    With --s3 it also serves MAST's public cloud copies from a real S3 server (moto, from the
    test extra) and prints that endpoint on the second line: give it to mastpipe as
    MASTPIPE_S3_ENDPOINT, to boto3 and astroquery as AWS_ENDPOINT_URL_S3.

    Example:

        mastpipe sandbox serve --port 8080 --faults 'download.error_rate=0.2'
        mastpipe sandbox serve --s3 --faults 's3.error_rate=0.1:503'
    """
    from mastpipe.sandbox import serve_forever

    context = _server_tls(tls_cert, tls_key) if tls_cert or tls_key else None
    if log_path:
        # The sandbox opens its log before binding; an OSError there would be blamed on the address.
        try:
            open(log_path, "a", encoding="utf-8").close()
        except OSError as error:
            raise click.BadParameter(f"cannot write to {log_path}: {error.strerror or error}",
                                     param_hint="--log") from None
    try:
        serve_forever(host=host, port=port, seed=seed, scale=scale, faults=faults, tokens=list(tokens),
                      log_path=log_path, ssl_context=context, s3=s3)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"cannot serve on {host}:{port}: {error.strerror or error}") from None


def _server_tls(cert: str | None, key: str | None):  # type: ignore[no-untyped-def]
    """A server-side TLS context holding ``cert`` and ``key``, or a usage error saying why not."""
    import ssl

    if not (cert and key):
        raise click.UsageError("--tls-cert and --tls-key go together: give both, or neither for plain HTTP")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as error:
        detail = f" ({error.reason})" if error.reason else ""
        raise click.BadParameter(f"{cert} and {key} are not a PEM certificate and its private key{detail}",
                                 param_hint="--tls-cert/--tls-key") from None
    return context


if __name__ == "__main__":  # pragma: no cover
    main()
