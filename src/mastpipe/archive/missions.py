"""MAST's mission search API (``/search/<mission>/api/v0.1/...``, astroquery's ``MastMissions``;
see ``mast-missions.md``), spoken with ``requests`` directly: astroquery's ``MastMissions`` turns
an answer into a table and drops ``totalResults``, the only way to tell a complete result from a
cut one, and checks column names against a column list fetched from the server it was imported
for. This module writes the requests (:func:`search_request`) and reads the answers; the
:class:`~mastpipe.archive.Archive` methods ``mission_search``, ``mission_products`` and
``mission_columns`` send them, politely and retried. Answers are translated into the pipeline's
vocabulary here (see :func:`mission_products_table`), so the stages after ``query`` and
``products`` treat a mission's datasets and files as they treat CAOM's observations and products.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from mastpipe.errors import ArchiveError
from mastpipe.recipe.fields import DATASET_COLUMN

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["SHARED_PRODUCT_COLUMNS", "column_list", "listed_products", "mission_download_url", "mission_json",
           "mission_products_table", "search_page", "search_request"]


def mission_json(session: requests.Session, url: str, method: str, path: str, **kwargs: Any) -> Any:
    """The JSON answer of the mission search API at ``url`` to one request; MAST's word on a bad
    search (HTTP 400) as an :class:`ArchiveError` that says it."""
    response = session.request(method, f"{url}{path}", **kwargs)
    if response.status_code == 400:  # MAST's word on a bad search: say it, do not retry
        try:
            detail = response.json().get("detail") or response.text
        except ValueError:
            detail = response.text
        raise ArchiveError(f"MAST refused the search: {str(detail)[:300]}",
                           hint="check the query's conditions and select_cols; `mastpipe validate --online` "
                                "checks them against the mission's columns")
    response.raise_for_status()
    return response.json()


def search_request(mission: str, conditions: dict[str, Any], position: tuple[float, float, float] | None,
                   select_cols: list[str], offset: int, limit: int) -> dict[str, Any]:
    """The body of one page's search request, rows sorted on the dataset column (so pages of the
    same search do not overlap)."""
    key = DATASET_COLUMN[mission]
    body: dict[str, Any] = {
        "conditions": [{name: _condition_text(value)} for name, value in conditions.items()],
        "limit": limit, "offset": offset, "sort_by": [key], "sort_desc": [False],
        "select_cols": (list(select_cols) + [key]) if select_cols else None,
    }
    if position is not None:
        ra, dec, radius = position
        body.update(target=[f"{ra} {dec}"], radius=radius * 3600.0, radius_units="arcseconds")
    return body


def search_page(answer: Any, mission: str, url: str) -> tuple[Table, int]:
    """A search answer's rows (see :func:`_results_table`) and MAST's count of all the search's
    rows (``totalResults``)."""
    try:
        return _results_table(answer, mission), int(answer["totalResults"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ArchiveError(f"{mission} search: MAST's answer lacks {exc} (not a mission search answer?)",
                           hint=f"is {url} MAST or a server speaking its mission search API?") from None


def listed_products(answer: Any) -> list[dict[str, Any]]:
    """The product rows of a ``post_list_products`` answer."""
    products: list[dict[str, Any]] = answer.get("products", []) if isinstance(answer, dict) else []
    if products and isinstance(products[0], list):  # MAST sometimes nests the list (astroquery flattens it)
        products = [p for inner in products for p in inner]
    return products


def column_list(answer: Any, mission: str, url: str) -> list[dict[str, Any]]:
    """A ``column_list`` answer, checked to be a list of columns."""
    if not isinstance(answer, list) or not all(isinstance(c, dict) and "column_name" in c for c in answer):
        raise ArchiveError(f"{mission} column list: MAST's answer is not a list of columns",
                           hint=f"is {url} MAST or a server speaking its mission search API?")
    return answer


def mission_download_url(mast_url: str, mission: str, uri: str) -> str:
    """The mission's download URL for a product's ``uri`` (``retrieve_product``, as astroquery's
    ``MastMissions.download_file`` builds it, the uri fully quoted)."""
    return f"{mast_url}/search/{mission}/api/v0.1/retrieve_product?product_name={quote(uri, safe='')}"


def _condition_text(value: Any) -> str:
    """A recipe condition as MAST reads it: a list is its values joined by commas (any of them)."""
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


_INFO_DTYPES = {"VARCHAR": "text", "DATETIME": "text", "CHAR": "text", "STRING": "text", "FLOAT": "float",
                "DOUBLE": "float", "DECIMAL": "float", "INTEGER": "int", "INT": "int", "LONG": "int",
                "BOOLEAN": "int"}


def _results_table(answer: dict[str, Any], mission: str) -> Table:
    """A search answer's rows as a table, typed by its ``info``, plus the pipeline's ``obsid``
    (the dataset), ``obs_collection`` and ``instrument_name`` columns."""
    import numpy as np
    from astropy.table import MaskedColumn, Table

    rows = answer["results"]
    kinds = {str(i["name"]): _INFO_DTYPES.get(str(i.get("type", "")).upper(), "text") for i in answer["info"]}
    for row in rows[:1]:
        for name, value in row.items():
            kinds.setdefault(name, "float" if isinstance(value, float) else "text")
    table = Table()
    for name, kind in kinds.items():
        values = [row.get(name) for row in rows]
        missing = np.array([v is None for v in values], dtype=bool)
        if kind == "text":
            data = np.array(["" if v is None else str(v) for v in values], dtype=str)
        else:
            dtype = np.int64 if kind == "int" and all(v is None or float(v).is_integer() for v in values) else np.float64
            data = np.array([0 if v is None else v for v in values], dtype=dtype)
        table[name] = MaskedColumn(data, mask=missing, name=name)
    key = DATASET_COLUMN[mission]
    if len(rows) and key not in table.colnames:
        raise KeyError(key)
    table["obsid"] = np.array([str(row.get(key, "")) for row in rows], dtype=str)
    table["obs_collection"] = np.full(len(rows), mission.upper(), dtype=f"U{len(mission)}")
    instrument = {"jwst": "instrume", "hst": "sci_instrume"}.get(mission)
    if instrument in table.colnames and "instrument_name" not in table.colnames:
        table["instrument_name"] = np.array([str(v).strip() for v in table[instrument].filled("")], dtype=str)
    return table


#: Columns a mission product list gains so the later stages read it as they read CAOM's:
#: pipeline column <- mission column (``mission`` itself marks the row as a mission product).
SHARED_PRODUCT_COLUMNS = {"productFilename": "filename", "dataURI": "uri", "dataRights": "access",
                          "obs_id": "dataset", "obsID": "dataset", "parent_obsid": "dataset"}


def mission_products_table(products: list[dict[str, Any]], mission: str) -> Table:
    """Mission product rows as a table: MAST's columns (``file_suffix``, ``category`` ...) as
    they are, plus :data:`SHARED_PRODUCT_COLUMNS`, ``obs_collection`` (``JWST``) and ``mission``
    (``jwst``), which is what makes retrieve use the mission's download URL and astroquery's
    ``mastDownload/<mission>/<dataset>/<file>`` layout."""
    import numpy as np
    from astropy.table import MaskedColumn, Table

    table = Table()
    if not products:
        return table
    names = list(dict.fromkeys(name for row in products for name in row))
    for name in names:
        values = [row.get(name) for row in products]
        missing = np.array([v is None for v in values], dtype=bool)
        if name == "size" or all(isinstance(v, int) and not isinstance(v, bool) for v in values if v is not None) \
                and any(v is not None for v in values):
            data = np.array([-1 if v is None else int(v) for v in values], dtype=np.int64)
        else:
            data = np.array(["" if v is None else str(v) for v in values], dtype=str)
        table[name] = MaskedColumn(data, mask=missing, name=name) if missing.any() else data
    for shared, own in SHARED_PRODUCT_COLUMNS.items():
        if own in table.colnames and shared not in table.colnames:
            table[shared] = np.array(table[own], copy=True)
    table["obs_collection"] = np.full(len(table), mission.upper(), dtype=f"U{len(mission)}")
    table["mission"] = np.full(len(table), mission, dtype=f"U{len(mission)}")
    return table

