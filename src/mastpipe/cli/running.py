"""Commands that run a recipe and list its runs: ``run`` and ``history``."""

from __future__ import annotations

import sys

import click

from mastpipe.cli.output import FileCount, fail, setup_logging
from mastpipe.cli.pipeline import SOURCE, pipeline_options, require_html, with_pipeline
from mastpipe.errors import MastpipeError


__all__ = ["history", "run"]


@click.command()
@pipeline_options
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
@SOURCE
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
    setup_logging(quiet, verbose, json_events)

    def action(pipeline):  # type: ignore[no-untyped-def]
        import json

        from mastpipe.api import run_pipeline
        from mastpipe.stages.retrieve.progress import Progress
        from mastpipe.cli.text import format_run

        if json_events:
            def progress(event):  # type: ignore[no-untyped-def]
                if event.kind == "plan":  # files to consider, bytes still to fetch, files already done
                    click.echo(json.dumps({"event": "file", "kind": "plan", "files": event.total,
                                           "bytes": event.nbytes, "skipped": event.skipped}))
                elif event.kind in ("fetched", "failed", "retry"):
                    click.echo(json.dumps({"event": "file", "kind": event.kind, "dataURI": event.key or None,
                                           "bytes": event.total, "message": event.message}))
        else:
            progress = Progress(mode="quiet" if quiet else "auto")

        def on_event(event):  # type: ignore[no-untyped-def]
            files(event)
            progress(event)

        if html_path:
            require_html()
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

    files = FileCount()
    with_pipeline(recipe, mast_url, state_dir, sandbox, action, refresh=refresh, insecure=insecure, quiet=quiet,
                   json_events=json_events, files=files, source=source)


@click.command()
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
        fail(error)
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
