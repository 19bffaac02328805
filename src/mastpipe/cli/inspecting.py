"""Commands that show a recipe's outlook without fetching anything: ``plan`` and ``status``.

They only format what :func:`mastpipe.api.plan_pipeline` and :func:`mastpipe.api.status` return.
"""

from __future__ import annotations

import click

from mastpipe.cli.output import fail, json_text, setup_logging
from mastpipe.cli.pipeline import SANDBOX_SERVER_ID, SOURCE, pipeline_options, require_html, with_pipeline
from mastpipe.errors import MastpipeError


__all__ = ["plan", "status"]


@click.command()
@pipeline_options
@click.option("--refresh", is_flag=True, help="Ask MAST again for observations and product lists (as run --refresh).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as one JSON object (fields: README, \"plan --json\").")
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="Also write a self-contained HTML page: sky map, time span, files by product type (needs mastpipe[html]).")
@SOURCE
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
    setup_logging(quiet, verbose)

    def action(pipeline):  # type: ignore[no-untyped-def]
        from mastpipe.api import plan_pipeline
        from mastpipe.cli.text import format_plan

        if html_path:
            require_html()
        found = plan_pipeline(pipeline)
        click.echo(json_text(found.to_dict()) if as_json else format_plan(found))
        if pipeline.recipe.retrieve.source != "mast" and not as_json:
            from mastpipe.cli.text import format_cloud_plan

            click.echo(format_cloud_plan(pipeline, found.tables["filter"], found.outlook))
        if html_path:
            from mastpipe.picture import write_page

            written = write_page(html_path, found.to_html())
            if not quiet:
                click.echo(f"wrote {written}", err=True)

    with_pipeline(recipe, mast_url, state_dir, sandbox, action, refresh=refresh, insecure=insecure, quiet=quiet,
                   json_events=as_json, source=source)


@click.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--mast-url", help="MAST server the checkpoints should match.")
@click.option("--sandbox", is_flag=True, help="The checkpoints were made with --sandbox.")
@click.option("--state-dir", type=click.Path(file_okay=False), help="Where checkpoints live.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object (fields: README, \"status --json\").")
def status(recipe: str, mast_url: str | None, sandbox: bool, state_dir: str | None, as_json: bool) -> None:
    """Show each stage's checkpoint: current, stale (and why) or missing. Contacts no server.

    The retrieve line counts the files of the filter checkpoint already present and still to
    fetch (from the download ledger and the disk); a last line says when a run holds the lock,
    or a killed run left it behind. Reads only. --json prints the same as one JSON object.

    Example:

        mastpipe status pipelines/jwst-1073-nircam-uncal.yaml
    """
    from mastpipe.api import status as read_status
    from mastpipe.cli.text import format_lock, format_retrieve_status, format_status

    try:
        found = read_status(recipe, mast_url=mast_url, state_dir=state_dir,
                            server_id=SANDBOX_SERVER_ID if sandbox else None)
    except MastpipeError as error:
        fail(error, as_json)
    if as_json:
        click.echo(json_text(found.to_dict()))
        return
    click.echo(f"{found.recipe}: state in {found.state_dir}")
    click.echo(format_status(found.stages))
    click.echo(format_retrieve_status(found.retrieve, found.filter_stale, found.retrieve_state))
    lock = format_lock(found.lock)
    if lock:
        click.echo(lock)
