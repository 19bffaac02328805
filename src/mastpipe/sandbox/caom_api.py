"""The CAOM services of the sandbox's HTTP server: ``POST /api/v0/invoke`` (Mast.Caom.Filtered
[.Position], Cone, Products, All, Name.Lookup, ``COUNT_BIG(*)`` and ``MIN``/``MAX`` columns) and the
portal's ``columnsconfig``."""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

from mastpipe.sandbox import columns
from mastpipe.sandbox.query import QueryError, angular_distance_arcsec, compile_filters, parse_position
from mastpipe.sandbox.respond import Responder

__all__ = ["CaomApi"]

_DEFAULT_PAGESIZE = 50_000


class CaomApi(Responder):
    """``invoke`` and ``columnsconfig`` (a mixin of :class:`~.server.Handler`)."""

    # ------------------------------------------------------------------ columnsconfig
    def _columnsconfig(self) -> None:
        ep = "columnsconfig"
        form = self._form()
        cid = (form.get("colConfigId") or self._query.get("colConfigId") or [""])[0]
        key = cid
        attempt = self._faults.next_attempt(ep, key)
        if self._status_faults(ep, key, attempt):
            return
        body = json.dumps(columns.column_config(cid)).encode()
        self._send_body(ep, key, attempt, 200, [("Content-Type", "application/json")],
                        len(body), [body])

    # ------------------------------------------------------------------ invoke
    def _invoke(self) -> None:
        form = self._form()
        raw = (form.get("request") or [""])[0]
        try:
            req = json.loads(raw)
            if not isinstance(req, dict):
                raise ValueError
        except ValueError:
            self._rec["endpoint"] = "query"
            self._send_simple(400, b'{"status": "ERROR", "msg": "Bad request: no JSON request"}')
            return
        service = str(req.get("service", ""))
        self._rec["service"] = service
        self._rec["columns"] = str((req.get("params") or {}).get("columns")) if isinstance(req.get("params"), dict) else None
        params = req.get("params") or {}
        svc = service.lower()
        is_products = svc == "mast.caom.products"
        ep = "products" if is_products else "query"
        self._rec["endpoint"] = ep
        try:
            page = int(req.get("page", 1) or 1)
            pagesize = int(req.get("pagesize", _DEFAULT_PAGESIZE) or _DEFAULT_PAGESIZE)
        except (TypeError, ValueError):
            page, pagesize = 1, _DEFAULT_PAGESIZE
        obsids: list[str] = []
        if is_products:
            obsids = [o.strip() for o in str(params.get("obsid", "")).split(",") if o.strip()]
            self._rec["obsids"] = obsids
            key = ",".join(obsids) + f"#p{page}"
        else:
            # Retries of the same query (new cacheBreaker) count as later attempts of one key.
            key = json.dumps({"s": service, "p": params, "page": page}, sort_keys=True)
        f = self._faults
        attempt = f.next_attempt(ep, key)
        if self._status_faults(ep, key, attempt):
            return
        if is_products:
            k = f.value(ep, "max_obsids")
            if k is not None and len(obsids) > k:
                time.sleep(f.value(ep, "timeout_delay"))
                self._send_error_status(504)
                return
        executing = f.value(ep, "executing")
        if executing:
            poll_key = f"{req.get('cacheBreaker')}#{page}#{key}"
            if f.next_attempt(ep + ".executing", poll_key) <= executing:
                body = json.dumps({"status": "EXECUTING", "msg": "", "data": [], "fields": []}).encode()
                self._send_body(ep, key, attempt, 200, [("Content-Type", "application/json")],
                                len(body), [body])
                return
        try:
            result = self._run_service(svc, params, page, pagesize, req.get("format", "json"),
                                       obsids, ep)
        except QueryError as exc:
            result = {"status": "ERROR", "msg": str(exc)}
        data = result.get("data")
        if isinstance(data, _Rendered):
            self._rows = data.rows
            body = json.dumps({**result, "data": []}).replace('"data": []', f'"data": [{data.text}]', 1).encode()
        else:
            if isinstance(data, list):
                self._rows = len(data)
            body = json.dumps(result).encode()
        self._send_body(ep, key, attempt, 200, [("Content-Type", "application/json")],
                        len(body), [body])

    @staticmethod
    def _envelope(fields, rows, page: int, pagesize: int, total: int) -> dict:
        pages = math.ceil(total / pagesize) if pagesize > 0 else 1
        names = [n for n, _ in fields]
        data = [{n: r.get(n) for n in names} for r in rows]
        return {"status": "COMPLETE", "msg": "",
                "fields": [{"name": n, "type": t} for n, t in fields], "data": data,
                "paging": {"page": page, "pageSize": pagesize, "pagesFiltered": pages,
                           "rows": len(data), "rowsFiltered": total, "rowsTotal": total}}

    def _run_service(self, svc: str, params: dict, page: int, pagesize: int, fmt: str,
                     obsids: list[str], ep: str) -> dict:
        cat = self.server.sandbox.catalog
        if pagesize <= 0:
            pagesize = _DEFAULT_PAGESIZE
        page = max(page, 1)
        lo, hi = (page - 1) * pagesize, page * pagesize
        cap = self._row_cap(ep)
        if svc == "mast.caom.products":
            counts = [cat.product_count(o) for o in obsids]
            total = min(sum(counts), cap)
            hi = min(hi, total)
            if lo == 0 and hi == sum(counts):  # whole observations: their rows rendered once
                names = tuple(n for n, _ in columns.PRODUCT_FIELDS)
                rendered = [text for text in (cat.products_json(o, names) for o in obsids) if text]
                envelope = self._envelope(columns.PRODUCT_FIELDS, [], page, pagesize, total)
                envelope["paging"]["rows"] = hi
                return {**envelope, "data": _Rendered(", ".join(rendered), hi)}
            rows, pos = [], 0
            for o, n in zip(obsids, counts):
                if pos >= hi:
                    break
                if pos + n > lo:
                    rows.extend(cat.iter_products(o, max(lo - pos, 0), min(hi - pos, n)))
                pos += n
            return self._envelope(columns.PRODUCT_FIELDS, rows, page, pagesize, total)
        if svc == "mast.caom.all":
            return self._missions(cat)
        if svc == "mast.name.lookup":
            # MAST's own name resolver, as the API answers it: no fields/data envelope
            found = cat.resolve(str(params.get("input", "")))
            return {"resolvedCoordinate": [found] if found else [], "status": ""}
        if svc in ("mast.caom.filtered", "mast.caom.filtered.position", "mast.caom.cone"):
            if svc == "mast.caom.cone":
                try:
                    ra, dec, radius = (float(params[k]) for k in ("ra", "dec", "radius"))
                except (KeyError, TypeError, ValueError):
                    raise QueryError("Mast.Caom.Cone needs numeric ra, dec and radius") from None
                pred, fields = (lambda r: True), columns.OBS_FIELDS_CONE
                position = (ra, dec, radius)
            else:
                pred = compile_filters(params.get("filters"))
                position = parse_position(params["position"]) if params.get("position") else None
                fields = columns.OBS_FIELDS_POSITION if position else columns.OBS_FIELDS_FILTERED
            matched = []
            for row in cat.iter_obs():
                if position:
                    d = angular_distance_arcsec(position[0], position[1], row["s_ra"], row["s_dec"])
                    if d > position[2] * 3600.0:
                        continue
                    if not pred(row):
                        continue
                    row = dict(row, distance=d)
                elif not pred(row):
                    continue
                matched.append(row)
            if position:
                matched.sort(key=lambda r: r["distance"])
            wanted = str(params.get("columns", "*")).strip()
            if wanted.upper().startswith("COUNT_BIG"):
                # The count is the truth: the row cap does not apply to it.
                return self._envelope([("Column1", "string")], [{"Column1": len(matched)}],
                                      1, pagesize, 1)
            if wanted != "*":
                aggregates = _aggregates(wanted, fields, matched)
                if aggregates is not None:
                    return aggregates
                fields = _select(wanted, fields)
            matched = matched[:cap]
            return self._envelope(fields, matched[lo:hi], page, pagesize, len(matched))
        raise QueryError(f"Unknown service: {svc}")

    @staticmethod
    def _missions(cat) -> dict:
        counts: dict[str, int] = {}
        for row in cat.iter_obs():
            counts[row["obs_collection"]] = counts.get(row["obs_collection"], 0) + 1
        hist = {"hist": [{"count": c, "key": k} for k, c in counts.items()]}
        hist.update({k: {"count": c, "key": k} for k, c in counts.items()})
        paging = {"page": 0, "pageSize": 0, "pagesFiltered": 0, "rows": 0, "rowsFiltered": 0, "rowsTotal": 0}
        column = {"text": "obs_collection", "dataIndex": "obs_collection",
                  "ExtendedProperties": {"histObj": hist, "vot.datatype": "char"}}
        return {"status": "COMPLETE", "msg": "",
                "data": {"name": "NewDataSet",
                         "Tables": [{"name": "Table", "ExtendedProperties": {"Paging": paging},
                                     "Columns": [column], "Fields": [], "Rows": []}],
                         "ExtendedProperties": {}}}


_AGGREGATE = re.compile(r"^(MIN|MAX)\(\s*(\w+)\s*\)$", re.IGNORECASE)


class _Rendered:
    """A product list's ``data`` already rendered as JSON (see ``Lookup.products_json``)."""

    def __init__(self, text: str, rows: int) -> None:
        self.text, self.rows = text, rows


def _select(wanted: str, fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The fields named by a ``columns`` list (``"obs_id, t_min"``), as MAST's SQL select."""
    known = {name.lower(): (name, kind) for name, kind in fields}
    chosen = []
    for part in (p.strip() for p in wanted.split(",")):
        if part.lower() not in known:
            raise QueryError(f"Invalid column name: {part}")
        chosen.append(known[part.lower()])
    return chosen


def _aggregates(wanted: str, fields: list[tuple[str, str]], matched: list[dict[str, Any]]) -> "dict[str, Any] | None":
    """``MIN(col),MAX(col)`` over the rows matched (uncapped, as SQL computes it), one row of
    ``Column1``, ``Column2``...; None when ``wanted`` holds no aggregate."""
    parts = [p.strip() for p in wanted.split(",")]
    found = [_AGGREGATE.match(p) for p in parts]
    if not any(found):
        return None
    matches = [m for m in found if m is not None]
    if len(matches) != len(found):
        raise QueryError(f"Column list mixes aggregates and columns: {wanted}")
    known = {name.lower(): name for name, _ in fields}
    row: dict[str, Any] = {}
    out_fields: list[tuple[str, str]] = []
    for i, match in enumerate(matches, 1):
        func, column = match.group(1).upper(), known.get(match.group(2).lower())
        if column is None:
            raise QueryError(f"Invalid column name: {match.group(2)}")
        values = [r.get(column) for r in matched if isinstance(r.get(column), (int, float))]
        row[f"Column{i}"] = (min(values) if func == "MIN" else max(values)) if values else None
        out_fields.append((f"Column{i}", "float"))
    return CaomApi._envelope(out_fields, [row], 1, 1, 1)
