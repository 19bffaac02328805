"""Who is asking: the MAST token a request carries (cookie ``mast_token`` or ``Authorization:
Bearer``) and ``GET /whoami``."""

from __future__ import annotations

import json
import re
from http.cookies import CookieError, SimpleCookie

from mastpipe.sandbox.respond import Responder

__all__ = ["AuthApi"]


class AuthApi(Responder):
    """Tokens and ``whoami`` (a mixin of :class:`~.server.Handler`)."""

    def _token(self) -> "str | None":
        """The display name of a valid token sent with the request, or None.

        Also records in ``self._presented`` whether any token (valid or not) came along, which is
        what the request log's ``has_token`` reports (tests check where tokens travel).
        """
        tokens = self.server.sandbox.tokens
        candidates = []
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            candidates.append(auth[7:].strip())
        for header in self.headers.get_all("Cookie") or []:
            try:
                jar = SimpleCookie()
                jar.load(header)
            except CookieError:
                continue
            if "mast_token" in jar:
                candidates.append(jar["mast_token"].value)
        self._presented = bool(candidates)
        for c in candidates:
            if c in tokens:
                return tokens[c]
        return None

    # ------------------------------------------------------------------ whoami
    def _whoami(self) -> None:
        ep = "whoami"
        attempt = self._faults.next_attempt(ep, "whoami")
        if self._status_faults(ep, "whoami", attempt):
            return
        name = self._token_name
        if name is None:
            info = {"eppn": "", "ezid": "anonymous", "attrib": {}, "anon": True, "scopes": [],
                    "session": None, "token": None}
        else:
            first, _, last = name.partition(" ")
            ezid = re.sub(r"[^a-z0-9]", "", name.lower()) or "user"
            info = {"eppn": f"{ezid}@stsci.edu", "ezid": ezid,
                    "attrib": {"uuid": "00000000-0000-4000-8000-000000000000", "first_name": first,
                               "last_name": last, "display_name": name, "internal": "0",
                               "email": f"{ezid}@example.org", "Jwstcalengdataaccess": "false"},
                    "anon": False, "scopes": ["mast:user:info", "mast:exclusive_access"],
                    "session": None, "token": "<redacted>"}
        body = json.dumps(info).encode()
        self._send_body(ep, "whoami", attempt, 200, [("Content-Type", "application/json")],
                        len(body), [body])
