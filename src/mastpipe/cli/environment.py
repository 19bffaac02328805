"""Commands for what surrounds a run: ``login`` (the MAST token) and ``sandbox serve`` (a local MAST)."""

from __future__ import annotations

import sys

import click

from mastpipe.cli.output import fail, setup_logging
from mastpipe.errors import MastpipeError


__all__ = ["login", "sandbox"]


@click.command()
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

        setup_logging(False, False)
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
        fail(UsageError("no token given", hint=f"paste the token from {TOKEN_PAGE} at the prompt, "
                                                "or pipe it: mastpipe login < token.txt"))
    try:
        info = check_token(url, token, insecure=insecure)
    except MastpipeError as error:
        # the class carries the exit code: a token MAST refuses (TokenRefusedError) is bad input,
        # like a bad recipe (exit 2); MAST that could not be asked (TokenCheckError) is exit 3, as
        # for any run
        fail(error)
    try:
        store_token(token)
    except MastpipeError as error:  # no keyring: a setup problem on this machine, not MAST's
        fail(UsageError(error.message, hint=error.hint))
    name = (info.get("attrib") or {}).get("display_name") or info.get("ezid") or "unknown user"
    click.echo(f"Token accepted for {name}; stored in the keyring.")


@click.group()
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
