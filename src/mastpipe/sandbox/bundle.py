"""The bash curl script that ``/api/v0.1/Download/bundle.sh`` returns, in MAST's style.

The token never appears in the script or on curl's command line: when ``MAST_API_TOKEN`` is set,
the bash builtin ``printf`` writes an ``Authorization`` header line to curl's stdin, and curl reads
it with ``-K -`` (a config file on stdin).  Builtins do not show up in process lists.
"""

from __future__ import annotations

import re
import time
from typing import Iterable
from urllib.parse import quote

__all__ = ["bundle_script", "bundle_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def bundle_name(now: float | None = None) -> str:
    """MAST-style bundle name, e.g. ``MAST_2024-05-02T1059``."""
    return time.strftime("MAST_%Y-%m-%dT%H%M%S", time.gmtime(now))


def _sq(text: str) -> str:
    """Quote ``text`` for bash single quotes."""
    return "'" + text.replace("'", "'\\''") + "'"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _printable(text: str) -> str:
    # Shown inside a here-document: a newline could end it early and smuggle in commands.
    return _CONTROL.sub("?", text)


def _safe_part(text: str) -> str:
    # Names come from the catalogue (which tests can fill with hostile names): keep each path
    # component a plain file name so the script cannot write outside its folder.
    part = _UNSAFE.sub("_", text).lstrip(".")
    return part or "_"


def bundle_script(base_url: str, entries: Iterable[tuple[str, str, str, str]], name: str) -> str:
    """Build the script.

    Parameters
    ----------
    base_url : str
        ``http://host:port`` the script's URLs point at (from the request's Host header).
    entries : iterable of (uri, obs_collection, obs_id, filename)
        One download per entry, in order.
    name : str
        The bundle name (also the download folder).
    """
    lines = [
        "#!/bin/bash",
        "#",
        "# Requires bash version >= 4",
        "#",
        "# This script uses curl to download data products from the MAST Download service",
        f"# (here: the mastpipe sandbox at {base_url}). Public products need nothing else;",
        "# exclusive-access products need a token in the environment variable MAST_API_TOKEN.",
        "# The token is handed to curl on stdin, never on its command line.",
        "#",
        'type -P curl >&/dev/null || { echo "This script requires curl. Exiting." >&2; exit 1; }',
        "",
        f"DOWNLOAD_FOLDER={_sq(name)}",
        'mkdir -p "${DOWNLOAD_FOLDER}"',
        "",
        "mast_auth() {",
        '    if [ -n "${MAST_API_TOKEN:-}" ]; then',
        '        local t="${MAST_API_TOKEN//\\\\/\\\\\\\\}"',
        '        t="${t//\\"/\\\\\\"}"',
        "        printf 'header = \"Authorization: Bearer %s\"\\n' \"$t\"",
        "    fi",
        "}",
        "",
        "STATUS=0",
        "# Download Product Files:",
    ]
    for uri, coll, obs_id, filename in entries:
        rel = "/".join(_safe_part(p) for p in (coll or "unknown", obs_id or "unknown", filename))
        url = f"{base_url}/api/v0.1/Download/file?bundle_name={quote(name)}.sh&uri={quote(uri, safe=':/')}"
        lines += [
            "",
            "cat <<'EOT'",
            f"<<< Downloading File: {_printable(uri)}",
            f"                  To: {name}/{rel}",
            "EOT",
            "mast_auth | curl --globoff --location-trusted -f --progress-bar --create-dirs -C - -K - \\",
            f'     --output "./${{DOWNLOAD_FOLDER}}/"{_sq(rel)} \\',
            f"     {_sq(url)} || STATUS=1",
        ]
    lines += ["", "exit $STATUS", ""]
    return "\n".join(lines)
