"""File services of the sandbox's HTTP server: ``HEAD|GET /api/v0.1/Download/file`` (Range,
If-Range, ETag, Last-Modified), ``POST /api/v0.1/Download/bundle.sh`` (a bash curl script) and
``GET /api/v0.1/path_lookup/`` (where each product lies in the cloud bucket)."""

from __future__ import annotations

import json
import re
from email.utils import formatdate

from mastpipe.sandbox.bucket import mast_path
from mastpipe.sandbox.bundle import bundle_name, bundle_script
from mastpipe.sandbox.respond import CHUNK, Responder

__all__ = ["FilesApi"]

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
_PATH_LOOKUP_MAX = 50  # MAST answers 414 Request-URI Too Large past this


class FilesApi(Responder):
    """``download``, ``bundle`` and ``path_lookup`` (a mixin of :class:`~.server.Handler`)."""

    def _download(self, mapped: "str | None" = None) -> None:
        ep = "download"
        uri = mapped or (self._query.get("uri") or [""])[0]
        self._rec["uri"] = uri
        f, cat = self._faults, self.server.sandbox.catalog
        attempt = f.next_attempt(ep, uri)
        if self.command not in ("GET", "HEAD"):
            self._send_error_status(405, [("Allow", "GET, HEAD")])
            return
        if f.value(ep, "redirect"):
            self._status_faults(ep, uri, attempt)
            return
        info = cat.file_info(uri) if uri else None
        if info is None or f.is_missing(uri):
            self._sleep_latency(ep)
            self._send_error_status(404)
            return
        if info.rights == "EXCLUSIVE_ACCESS" and self._token_name is None:
            self._sleep_latency(ep)
            self._send_error_status(401)
            return
        if self._status_faults(ep, uri, attempt):
            return
        size = info.size
        last_modified = formatdate(info.last_modified, usegmt=True)
        headers = [("Content-Type", "application/octet-stream"), ("Accept-Ranges", "bytes"),
                   ("ETag", info.etag), ("Last-Modified", last_modified),
                   ("Content-Disposition", f'attachment; filename="{info.filename}"')]
        start, end = 0, size  # end exclusive
        status = 200
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if rng and self.command == "GET":
            if if_range and if_range.strip() not in (info.etag, last_modified):
                rng = None  # the client's copy is stale: send the whole new body
            elif f.hit(ep, uri, attempt, "ignore_range"):
                rng = None
        if rng and self.command == "GET":
            m = _RANGE.match(rng)
            if m and (m.group(1) or m.group(2)):
                a, b = m.group(1), m.group(2)
                if a:
                    start, end = int(a), (min(int(b) + 1, size) if b else size)
                else:  # suffix range: the last N bytes
                    start, end = max(size - int(b), 0), size
                if start >= size or start >= end:
                    self._sleep_latency(ep)
                    self._send_simple(416, b"", "text/plain",
                                      [("Content-Range", f"bytes */{size}"), ("Accept-Ranges", "bytes")])
                    return
                if f.hit(ep, uri, attempt, "bad_range_rate"):
                    # A well-formed 206 for the wrong place: starts elsewhere than asked.
                    start = start // 2 if start > 0 else min(1, end - 1)
                status = 206
                headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
        length = end - start
        pieces = cat.bodies.iter_body(uri, size, info.version, start, end, CHUNK)
        self._send_body(ep, uri, attempt, status, headers, length, pieces)

    # ------------------------------------------------------------------ bundle
    def _bundle(self) -> None:
        ep = "bundle"
        form = self._form()
        uris = form.get("uri") or self._query.get("uri") or []
        key = "\n".join(uris)
        attempt = self._faults.next_attempt(ep, key)
        if self._status_faults(ep, key, attempt):
            return
        host = self.headers.get("Host") or "%s:%d" % self.server.server_address[:2]
        base = f"http://{host}"
        cat = self.server.sandbox.catalog
        entries = []
        for uri in uris:
            info = cat.file_info(uri)
            if info is not None:
                entries.append((uri, info.obs_collection, info.obs_id, info.filename))
            else:
                entries.append((uri, "unknown", "unknown", uri.rsplit("/", 1)[-1]))
        script = bundle_script(base, entries, bundle_name()).encode()
        # No Accept-Ranges here: astroquery would try to resume onto an older script.
        self._send_body(ep, key, attempt, 200, [("Content-Type", "text/x-sh")], len(script), [script])

    # ------------------------------------------------------------------ path_lookup
    def _path_lookup(self) -> None:
        ep = "path_lookup"
        uris = self._query.get("uri") or self._form().get("uri") or []
        self._rec["uris"] = list(uris)
        key = "\n".join(uris)
        attempt = self._faults.next_attempt(ep, key)
        if self._status_faults(ep, key, attempt):
            return
        if len(uris) > _PATH_LOOKUP_MAX:
            self._sleep_latency(ep)
            self._send_error_status(414)
            return
        cat = self.server.sandbox.catalog
        answer = {}
        for uri in uris:
            info = cat.file_info(uri)
            answer[uri] = ({"status_code": 200, "path": mast_path(info)} if info is not None
                           else {"status_code": 404, "path": None})
        body = json.dumps(answer).encode()
        self._send_body(ep, key, attempt, 200, [("Content-Type", "application/json")], len(body), [body])
