"""The mission search API of the sandbox's HTTP server (``mast-missions.md``; the data side is
:mod:`.missions`): ``POST /search/{mission}/api/v0.1/search`` and ``.../post_list_products``,
``HEAD|GET .../retrieve_product`` (a download, see :mod:`.files_api`) and
``GET /search/util/api/v0.1/column_list``."""

from __future__ import annotations

import json
import time

from mastpipe.sandbox import missions
from mastpipe.sandbox.files_api import FilesApi
from mastpipe.sandbox.query import QueryError

__all__ = ["MissionApi"]


class MissionApi(FilesApi):
    """The mission search endpoints (a mixin of :class:`~.server.Handler`)."""

    def _column_list(self) -> None:
        ep = "columnsconfig"
        mission = (self._query.get("mission") or [""])[0].lower()
        attempt = self._faults.next_attempt(ep, "column_list:" + mission)
        if self._status_faults(ep, "column_list:" + mission, attempt):
            return
        if mission not in missions.MISSIONS:
            self._send_json({"detail": f"Unknown mission {mission!r}"}, 400)
            return
        body = json.dumps(missions.column_list(mission)).encode()
        self._send_body(ep, "column_list:" + mission, attempt, 200, [("Content-Type", "application/json")],
                        len(body), [body])

    def _mission(self, mission: str, service: str) -> None:
        if service == "retrieve_product":
            self._rec["endpoint"] = "download"
            name = (self._query.get("product_name") or [""])[0]
            if mission not in missions.MISSIONS or not name:
                self._send_error_status(404)
                return
            self._download(missions.MissionView(self.server.sandbox.catalog, mission).data_uri(name))
            return
        ep = "query" if service == "search" else "products"
        self._rec["endpoint"] = ep
        self._rec["service"] = f"{mission}.{service}"
        if self.command != "POST":
            self._send_error_status(405, [("Allow", "POST")])
            return
        try:
            params = json.loads(self._body or b"{}")
            if not isinstance(params, dict):
                raise ValueError
        except ValueError:
            self._send_json({"detail": "the body is not a JSON object"}, 400)
            return
        if service == "post_list_products":
            ids = params.get("dataset_ids") or []
            ids = [ids] if isinstance(ids, str) else [str(i) for i in ids]
            self._rec["obsids"] = ids
            key = f"{mission}:" + ",".join(ids)
        else:
            key = f"{mission}:" + json.dumps(params, sort_keys=True)
        attempt = self._faults.next_attempt(ep, key)
        if self._status_faults(ep, key, attempt):
            return
        if ep == "products":
            k = self._faults.value(ep, "max_obsids")
            if k is not None and len(ids) > k:
                time.sleep(self._faults.value(ep, "timeout_delay"))
                self._send_error_status(504)
                return
        try:
            view = missions.MissionView(self.server.sandbox.catalog, mission)
            if ep == "products":
                result: dict = {"products": view.products(ids)[: self._row_cap(ep)]}
            else:
                result = missions.search_answer(view, params, self._row_cap(ep))
        except QueryError as exc:
            self._send_json({"detail": str(exc)}, 400)
            return
        body = json.dumps(result).encode()
        self._send_body(ep, key, attempt, 200, [("Content-Type", "application/json")], len(body), [body])
